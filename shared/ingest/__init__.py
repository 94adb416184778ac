"""Ingestion: the ODRÉ source, landing, parsing, versioning and bootstrap from shipped history."""
