"""Typed exceptions; ``HTTP_STATUS`` maps each to one HTTP status in one place."""

from __future__ import annotations

import sys
from collections.abc import Callable


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


# What a command-line tool reports as a bad input (one line on stderr, exit status 2) instead of a traceback; an
# invalid POWERSENSE_* setting is one (ConfigurationError names the variable), like a bad option.
CLI_INPUT_ERRORS: tuple[type[Exception], ...] = (BadRequestError, ConfigurationError, ModelError, OSError, ValueError)
# every error a command line reports in one line: the input errors (exit 2) and the product's own (exit 1)
_REPORTED: tuple[type[Exception], ...] = (*CLI_INPUT_ERRORS, PowerSenseError)


def run_cli(prog: str, command: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """Run ``command(argv)``; a bad input (:data:`CLI_INPUT_ERRORS`) ends with ``PROG: error: …`` on stderr and 2,
    any other error the product raises on purpose (the store unreachable, the source failing after its retries, a
    command run before the one it needs) with that line and 1. A traceback is left for bugs."""
    try:
        return command(argv)
    except _REPORTED as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, CLI_INPUT_ERRORS) else 1
