"""Every line a function logs while serving names it: Alloy turns ``function`` into the Loki label the Logs
dashboard and the alerts' "see the Logs dashboard (function=…)" select on."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared import logs
from shared.app import create_app
from shared.errors import StoreError
from shared.logs import log_event


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """The records the product's JSON handler would write, with its context filter applied."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    handler.addFilter(logs._ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield seen
    finally:
        root.removeHandler(handler)


@pytest.fixture
def client() -> TestClient:
    app: FastAPI = create_app("detect", health=False, metrics=False)
    log = logging.getLogger("tests.log_context")

    @app.get("/event")
    def _event() -> dict[str, str]:
        log_event(log, "something_happened")  # as the query function logs: no stage run around it
        return {}

    @app.get("/typed")
    def _typed() -> None:
        raise StoreError("store down")

    @app.get("/bug")
    def _bug() -> None:
        raise RuntimeError("a bug")

    return TestClient(app, raise_server_exceptions=False)


def _function_of(records: list[logging.LogRecord], event: str) -> str:
    return str(next(r for r in records if getattr(r, "event", "") == event).function)  # type: ignore[attr-defined]


def test_a_line_logged_by_an_endpoint_names_the_function(client: TestClient,
                                                         records: list[logging.LogRecord]) -> None:
    client.get("/event")
    assert _function_of(records, "something_happened") == "detect"


def test_a_typed_failure_names_the_function(client: TestClient, records: list[logging.LogRecord]) -> None:
    assert client.get("/typed").status_code == 503
    assert _function_of(records, "request_failed") == "detect"


def test_the_traceback_of_a_bug_names_the_function(client: TestClient, records: list[logging.LogRecord]) -> None:
    assert client.get("/bug").status_code == 500
    assert _function_of(records, "unhandled_error") == "detect"
