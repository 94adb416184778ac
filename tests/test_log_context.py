"""Every line a function logs while serving names it: Alloy turns ``function`` into the Loki label the Logs
dashboard and the alerts' "see the Logs dashboard (function=…)" select on."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from shared import logs
from shared.app import create_app, invoke_stage
from shared.errors import StoreError
from shared.logs import log_event
from shared.runs import Run
from shared.store import Store


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
def client(store: Store) -> TestClient:
    app: FastAPI = create_app("detect", health=False, metrics=False)
    log = logging.getLogger("tests.log_context")

    @app.post("/run-typed")
    def _run_typed(request: Request) -> dict[str, object]:
        def body(run: Run) -> None:
            raise StoreError("store down mid-run")
        return invoke_stage(request, store, "detect", body)

    @app.post("/run-bug")
    def _run_bug(request: Request) -> dict[str, object]:
        def body(run: Run) -> None:
            raise KeyError("level_3")
        return invoke_stage(request, store, "detect", body)

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


def _failed_run_id(store: Store) -> str:
    [(run_id,)] = store.query_rows("select run_id from {db:Identifier}.pipeline_runs final where status = 'failed'")
    return str(run_id)


def test_a_typed_failure_of_a_run_carries_the_runs_id(client: TestClient, store: Store,
                                                       records: list[logging.LogRecord]) -> None:
    assert client.post("/run-typed").status_code == 503
    [line] = [r for r in records if getattr(r, "event", "") == "request_failed"]
    assert line.run_id == _failed_run_id(store) != "-"  # type: ignore[attr-defined]


def test_the_traceback_of_a_failed_run_carries_the_runs_id(client: TestClient, store: Store,
                                                           records: list[logging.LogRecord]) -> None:
    assert client.post("/run-bug").status_code == 500
    [line] = [r for r in records if getattr(r, "event", "") == "unhandled_error"]
    assert line.exc_info is not None and line.error_type == "KeyError"  # type: ignore[attr-defined]
    assert line.run_id == _failed_run_id(store) != "-"  # type: ignore[attr-defined]


def test_a_line_of_another_library_gets_a_bounded_event(records: list[logging.LogRecord]) -> None:
    # Alloy makes `event` a Loki label: a free-text message (uvicorn's "Started server process [28438]") as the
    # event made a new stream per process
    # (a logger of its own: uvicorn's may have been configured not to propagate by an earlier test's server)
    logging.getLogger("a_library.server").warning("Started server process [%d]", 28438)
    logging.getLogger("tests.log_context").warning("something_happened")
    assert [r.event for r in records[-2:]] == ["a_library.server", "something_happened"]  # type: ignore[attr-defined]
