"""FastAPI wiring shared by every function: settings check at start-up, error mapping, the
store dependency, health and metrics endpoints, and the run wrapper for stage invocations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from shared import metrics as stage_metrics
from shared.errors import PowerSenseError, http_status
from shared.logs import configure_logging, log_event
from shared.runs import Run, stage_run
from shared.settings import Settings, get_settings
from shared.store import Store, get_store

log = logging.getLogger(__name__)


def store_dep() -> Store:
    """FastAPI dependency: the process-wide store (override in tests)."""
    return get_store()


def settings_dep() -> Settings:
    """FastAPI dependency: the validated settings."""
    return get_settings()


def trigger_of(request: Request) -> str:
    """'cron' when the cron-connector (or our embedded copy of it) invoked us, else 'http'."""
    if request.headers.get("x-connector", "").startswith("cron-connector"):
        return "cron"
    return "http"


def call_id(request: Request) -> str | None:
    """OpenFaaS sets X-Call-Id per invocation; reuse it as run id so gateway logs line up."""
    value = request.headers.get("x-call-id")
    return value if value and len(value) <= 64 and value.replace("-", "").isalnum() else None


class RunResponse(BaseModel):
    """What a stage invocation returns: the pipeline_runs row plus stage figures."""

    function: str
    run_id: str
    trigger: str
    status: str = Field(description="success | skipped | failed")
    started_at: str
    finished_at: str | None
    duration_s: float | None
    rows_in: int
    rows_out: int
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def create_app(
    function: str, *, title: str | None = None, description: str = "", health: bool = True, metrics: bool = True
) -> FastAPI:
    """Build a function's FastAPI app. Settings are validated here, so a misconfigured function
    fails at start-up (import time) with a message naming the bad variable."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_file)
    app = FastAPI(title=title or f"PowerSense {function}", description=description, version="0.1.0")
    app.state.function = function

    @app.exception_handler(PowerSenseError)
    async def _typed_error(request: Request, exc: PowerSenseError) -> JSONResponse:
        status = http_status(exc)
        log_event(log, "request_failed", logging.WARNING if status < 500 else logging.ERROR,
                  error_type=type(exc).__name__, error=str(exc), status=status, path=request.url.path)
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a typed failure: log the traceback, answer JSON (run already recorded as failed).
        log.exception("unhandled_error", extra={"event": "unhandled_error", "path": request.url.path})
        return JSONResponse({"error": "InternalError", "detail": type(exc).__name__}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"error": "BadRequestError", "detail": errors}, status_code=422)

    if health:

        @app.get("/health", tags=["ops"])
        def _health() -> dict[str, Any]:
            ok = get_store().ping()
            if not ok:
                return JSONResponse({"status": "unavailable", "store": False}, status_code=503)  # type: ignore[return-value]
            return {"status": "ok", "store": True, "function": function}

    if metrics:

        @app.get("/metrics", tags=["ops"])
        def _metrics() -> Response:
            return Response(generate_latest(stage_metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def invoke_stage(
    request: Request, store: Store, function: str, body: Callable[[Run], None]
) -> dict[str, Any]:
    """Run ``body`` inside the run wrapper and return the run summary.

    Failures are recorded in pipeline_runs and re-raised so the error mapping answers the caller.
    """
    settings = get_settings()
    with stage_run(store, function, trigger_of(request), call_id(request), settings.pushgateway_url) as run:
        body(run)
    return run.as_dict()
