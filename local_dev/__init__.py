"""The embedded runtime: every function in one process behind an OpenFaaS-compatible gateway."""
