"""Typed exceptions; ``HTTP_STATUS`` maps each to one HTTP status in one place."""

from __future__ import annotations


class PowerSenseError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigurationError(PowerSenseError):
    """Settings are missing or invalid (raised at start-up)."""


class BadRequestError(PowerSenseError):
    """The caller sent something invalid."""


class NotFoundError(PowerSenseError):
    """The requested object does not exist (yet)."""


class AuthError(PowerSenseError):
    """Missing or invalid credentials."""


class ConflictError(PowerSenseError):
    """Another invocation holds the resource (e.g. single-flight stage already running)."""


class SourceError(PowerSenseError):
    """The upstream data source failed after retries."""


class StoreError(PowerSenseError):
    """ClickHouse is unreachable or rejected a statement."""


class SchemaError(StoreError):
    """The database lacks tables of the DDL (ch/init): a read-only user on a server no writer has initialised."""


class ArtifactError(PowerSenseError):
    """The artifact store (S3/MinIO/local) failed."""


class ModelError(PowerSenseError):
    """Training or prediction failed."""


HTTP_STATUS: dict[type[PowerSenseError], int] = {
    BadRequestError: 400,
    AuthError: 401,
    NotFoundError: 404,
    ConflictError: 409,
    ConfigurationError: 500,
    SourceError: 502,
    StoreError: 503,
    ArtifactError: 503,
    ModelError: 500,
}


def http_status(exc: PowerSenseError) -> int:
    """HTTP status for an exception, walking its class hierarchy."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]  # type: ignore[index]
    return 500
