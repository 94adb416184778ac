"""FastAPI wiring shared by every function: settings check at start-up, error mapping, the
store dependency, health and metrics endpoints, and the run wrapper for stage invocations."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from mangum import Mangum
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from shared import metrics as stage_metrics
from shared.config_doc import closest_setting, unknown_variables
from shared.errors import AuthError, ConfigurationError, PowerSenseError, StoreError, http_status
from shared.logs import configure_logging, current_function, log_event
from shared.runs import Run, RunResult, count_unstarted_failure, failed_run_id, stage_run
from shared.settings import Settings, get_settings
from shared.store import Store, get_store
from shared.tokens import bearer_matches, token_bytes

log = logging.getLogger(__name__)


def store_dep(request: Request) -> Store:
    """FastAPI dependency: the process-wide store (override in tests).

    A stage invocation (``POST /``) whose store cannot be opened is counted as a failed run of the function
    (:func:`shared.runs.count_unstarted_failure`) before the error mapping answers 503: it never reaches the run
    wrapper, so nothing else would count it."""
    try:
        return get_store()
    except Exception as exc:
        route = request.scope.get("route")
        if request.method == "POST" and getattr(route, "path", None) == "/":
            count_unstarted_failure(request.app.state.function, exc, get_settings().pushgateway_url)
        raise


def settings_dep() -> Settings:
    """FastAPI dependency: the validated settings."""
    return get_settings()


def trigger_of(request: Request) -> str:
    """'cron' when the cron-connector (or our embedded copy of it) invoked us, else 'http'."""
    if request.headers.get("x-connector", "").startswith("cron-connector"):
        return "cron"
    return "http"


class ScheduledRunFailed(RuntimeError):
    """A scheduled (cron) invocation on AWS Lambda answered an error: raised so that Lambda counts it."""


def scheduled_run_failed(status: int) -> bool:
    """Whether a scheduled invocation's HTTP status is a failed run: a server error, or a request the stage refuses
    (400, 401, 404, 422: the schedule's own input is wrong, and every tick is refused alike). 409 is not: a resource
    another invocation holds (another weather writer, the history bootstrap still pending) — this tick skipped and
    the next one runs, as a busy stage's tick answers 200 ``skipped``."""
    return status >= 500 or (400 <= status < 500 and status != 409)


class LambdaHandler(Mangum):
    """Mangum, except that a scheduled invocation answering an error raises :class:`ScheduledRunFailed`
    (:func:`scheduled_run_failed`).

    Mangum returns the app's 500 as a successful Lambda invocation, so a failing stage never reached Lambda's
    ``Errors`` metric (nor an alarm on it) when no Pushgateway is configured. An EventBridge Scheduler event
    (``x-connector: cron-connector/…``, template.yaml) that fails now fails the invocation (the run is already
    recorded as failed in ``pipeline_runs``; ``EventInvokeConfig`` retries nothing); HTTP API calls are unchanged.
    A refused request (a schedule whose input the stage rejects) counted as a success until 2026-12-06.
    """

    def __call__(self, event: Any, context: Any) -> Any:  # noqa: D102 - Mangum's
        response = super().__call__(event, context)
        headers = {str(k).lower(): str(v) for k, v in ((event or {}).get("headers") or {}).items()}
        status = int(response.get("statusCode", 200)) if isinstance(response, dict) else 200
        if headers.get("x-connector", "").startswith("cron-connector") and scheduled_run_failed(status):
            raise ScheduledRunFailed(f"scheduled run answered {status}: {str(response.get('body', ''))[:500]}")
        return response


M = TypeVar("M", bound=BaseModel)


def require_admin(request: Request) -> None:
    """AuthError unless the request carries ``Authorization: Bearer <admin_token>`` (shared.tokens).

    OpenFaaS leaves ``/function/*`` open (its gateway authenticates ``/system/*`` only), so without this anyone who
    reached the gateway could train models back to back (``force_train``), re-run the history bootstrap, or hold a
    stage's only slot with long backfills while the scheduler's ticks got 429."""
    token = get_settings().admin_token
    if not token_bytes(token):
        raise AuthError("request options need the admin token, and none is configured (POWERSENSE_ADMIN_TOKEN, "
                        "secret admin-token); the scheduled run, an empty body, needs none")
    if not bearer_matches(request.headers.get("authorization"), token):
        raise AuthError("request options need Authorization: Bearer <admin token> (secret admin-token)")


class StageRequest(BaseModel):
    """Base of a stage's request options: a key the stage does not know is refused (422). A misspelled option
    (``{"strat": …}`` for a backfill) ran the scheduled default without a word, and without asking for the
    admin token, since no option was set."""

    model_config = ConfigDict(extra="forbid")


def stage_options(request: Request, body: M | None, default: type[M]) -> M:
    """A stage's request options: the defaults for an empty body (the scheduler's call, open); any option set in
    the body needs the admin token (:func:`require_admin`)."""
    if body is None or not body.model_fields_set:
        return body if body is not None else default()
    require_admin(request)
    return body


def call_id(request: Request) -> str | None:
    """OpenFaaS sets X-Call-Id per invocation; reuse it as run id so gateway logs line up."""
    value = request.headers.get("x-call-id")
    return value if value and len(value) <= 64 and value.replace("-", "").isalnum() else None


# The stage result contract, defined once in shared/runs.py; handlers declare it as their response model.
RunResponse = RunResult


# Pydantic error types that mean "the request does not fit the interface" (422); every other
# validation error is a value the API refuses (400): malformed, not one of the choices, out of range.
SHAPE_ERRORS = frozenset({"extra_forbidden", "missing"})
DOCS_ASSETS = "docs-static"  # Swagger UI's JS/CSS, served by the function itself (no CDN)


def validation_status(errors: list[dict[str, Any]]) -> int:
    """422 for unknown or missing parameters, 400 for refused values (README "Query API")."""
    return 422 if any(e.get("type") in SHAPE_ERRORS for e in errors) else 400


def openapi_servers(request: Request, root_path: str) -> list[dict[str, str]]:
    """The prefix callers reach this function under, for Swagger UI's "Try it out".

    The OpenFaaS gateway strips ``/function/<name>`` and sends no prefix header; it does set
    X-Forwarded-Host (faas: gateway/handlers/forwarding_proxy.go, buildUpstreamRequest). So: the ASGI
    root_path when a server sets it (the embedded gateway, ``uvicorn --root-path``), else a proxy's
    X-Forwarded-Prefix, else the configured prefix when the request was forwarded, else none
    (served directly at /)."""
    prefix = request.scope.get("root_path", "") or request.headers.get("x-forwarded-prefix", "")
    if not prefix and request.headers.get("x-forwarded-host"):
        prefix = root_path
    prefix = prefix.rstrip("/")
    return [{"url": prefix}] if prefix else []


def watchdog_lock() -> Path | None:
    """The lock file that tells of-watchdog (and so Kubernetes, Docker and faasd) this function can serve, when
    the app is the one to write it: ``suppress_lock=true`` in the environment (template/powersense-python).

    of-watchdog otherwise writes ``os.TempDir()/.lock`` as soon as its own server starts, before uvicorn has
    imported the handler and bound its port (of-watchdog 0.11.6 pkg/watchdog.go listenUntilShutdown), and
    faas-netes' readiness probe is exactly that file (``cat /tmp/.lock``, or ``/_/health``, which checks it:
    faas-netes pkg/k8s/probes.go). A rolling update then retired the old pod for one that answered 500
    ("connection refused" upstream) for its first seconds. The watchdog still removes the file on SIGTERM.
    ``tempfile.gettempdir()`` honours ``TMPDIR`` as Go's ``os.TempDir()`` does."""
    # of-watchdog reads the lower-case name, as "true" or "1" (config/config.go getBool)
    if os.environ.get("suppress_lock") not in ("true", "1"):  # noqa: SIM112
        return None
    return Path(tempfile.gettempdir()) / ".lock"


@asynccontextmanager
async def _lock_while_serving(app: FastAPI) -> AsyncIterator[None]:
    """Lifespan: write :func:`watchdog_lock` once the app has started, remove it when it stops. uvicorn binds its
    socket right after the lifespan's start-up (milliseconds), against seconds of imports before it."""
    lock = watchdog_lock()
    if lock is not None:
        lock.touch()
    try:
        yield
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)


class FunctionLogContext:
    """ASGI middleware: the function's name in the log context (``shared.logs.current_function``) for the whole
    request; a stage's run (``stage_run``) sets the same name inside it."""

    def __init__(self, app: ASGIApp, function: str) -> None:
        self.app = app
        self.function = function

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = current_function.set(self.function)
        try:
            await self.app(scope, receive, send)
        finally:
            current_function.reset(token)


def _run_of(exc: BaseException) -> dict[str, str]:
    """``run_id`` of the stage run ``exc`` failed, for the error handler's log line: they run after the run's
    logging context is reset, and logged "-" where pipeline_runs and the alerts show the run's id."""
    run_id = failed_run_id(exc)
    return {"run_id": run_id} if run_id else {}


def startup_settings(function: str, checks: Sequence[Callable[[Settings], object]] = ()) -> Settings:
    """The validated settings, read at a function's start-up, with logging configured from them and the function's
    own ``checks`` run (each raises :class:`shared.errors.ConfigurationError` on a setting only this function uses,
    e.g. a file it reads). A misconfiguration is logged first as one JSON line (event ``configuration_invalid``,
    with ``function`` and the message naming the variables) and then raised: the traceback the server prints after
    it is not JSON, so a Loki query by function and level would otherwise miss why the function never started."""
    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_file)
        for check in checks:
            check(settings)
        return settings
    except ConfigurationError as exc:
        configure_logging()  # once per process: a no-op when the settings had configured it
        log_event(log, "configuration_invalid", logging.CRITICAL, function=function, error=str(exc))
        raise


def create_app(
    function: str, *, title: str | None = None, description: str = "", health: bool = True, metrics: bool = True,
    root_path: str | None = None, checks: Sequence[Callable[[Settings], object]] = (),
) -> FastAPI:
    """Build a function's FastAPI app. Settings are validated here, so a misconfigured function
    fails at start-up (import time) with a message naming the bad variable.

    Contract shared by every function: errors are always ``{"error", "detail"}`` (404/405 of unknown
    routes too), no trailing-slash redirects (a 307 would drop the gateway prefix and echo the Host
    header), and ``/docs`` + ``/openapi.json`` are open and work behind the gateway prefix: the page
    references the document and Swagger UI's assets by relative URLs. ``root_path`` is the gateway
    prefix (default ``/function/<function>``). ``checks``: the function's own start-up checks
    (:func:`startup_settings`)."""
    startup_settings(function, checks)
    # pydantic ignores a POWERSENSE_* variable that names no setting: a misspelled one would leave its default in
    # effect without a word (python -m shared config warns the same way)
    for name in unknown_variables(os.environ):
        log_event(log, "unknown_setting", logging.WARNING, function=function, variable=name,
                  closest_setting=closest_setting(name))
    prefix = root_path if root_path is not None else f"/function/{function}"
    app = FastAPI(title=title or f"PowerSense {function}", description=description, version="0.1.0",
                  redirect_slashes=False, openapi_url=None, docs_url=None, redoc_url=None,
                  lifespan=_lock_while_serving)
    app.state.function = function
    # every line logged while serving names the function (Alloy makes it the `function` label): the query
    # function's lines, and a stage's lines outside its run (request_failed, unhandled_error), said "-"
    app.add_middleware(FunctionLogContext, function=function)

    @app.exception_handler(PowerSenseError)
    async def _typed_error(request: Request, exc: PowerSenseError) -> JSONResponse:
        status = http_status(exc)
        log_event(log, "request_failed", logging.WARNING if status < 500 else logging.ERROR,
                  error_type=type(exc).__name__, error=str(exc), status=status, path=request.url.path,
                  **_run_of(exc))
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a typed failure: log the traceback, answer JSON (run already recorded as failed). Starlette
        # runs this handler in its outermost middleware, outside FunctionLogContext: the function is passed.
        log.exception("unhandled_error", extra={"event": "unhandled_error", "path": request.url.path,
                                                "function": function, "error_type": type(exc).__name__,
                                                **_run_of(exc)})
        return JSONResponse({"error": "InternalError", "detail": type(exc).__name__}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in raw]
        return JSONResponse({"error": "BadRequestError", "detail": errors}, status_code=validation_status(raw))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing errors (unknown route 404, wrong method 405 with its Allow header) in the product's shape.
        name = {404: "NotFoundError", 405: "MethodNotAllowed"}.get(exc.status_code) or HTTPStatus(
            exc.status_code).phrase.replace(" ", "")
        detail = exc.detail
        if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
            detail = f"no route {request.scope.get('path', '')}"
        elif exc.status_code == 405 and detail == HTTPStatus.METHOD_NOT_ALLOWED.phrase:
            detail = f"{request.method} not allowed on {request.scope.get('path', '')}"
        return JSONResponse({"error": name, "detail": detail}, status_code=exc.status_code, headers=exc.headers)

    # --- OpenAPI and Swagger UI (open: they describe the API, never its data) ---------------------
    @app.get("/openapi.json", include_in_schema=False)
    def _openapi(request: Request) -> JSONResponse:
        return JSONResponse({**app.openapi(), "servers": openapi_servers(request, prefix)})

    @app.get("/docs", include_in_schema=False)
    def _docs() -> HTMLResponse:
        # Relative URLs: /function/query/docs loads /function/query/openapi.json and its assets
        # whatever prefix the gateway serves the function under.
        return get_swagger_ui_html(
            openapi_url="openapi.json", title=f"{app.title} (Swagger UI)",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    app.router.routes.append(Mount(f"/{DOCS_ASSETS}", app=StaticFiles(directory=str(swagger_ui_path)),
                                   name="docs-static"))

    if health:

        @app.get("/health", tags=["ops"])
        def _health() -> dict[str, Any]:
            try:
                ok = get_store().ping()
            except StoreError as exc:  # a store never opened: the open endpoint does not echo the driver's error
                log_event(log, "health_store_unavailable", logging.WARNING, error=str(exc))
                ok = False
            if not ok:
                return JSONResponse({"status": "unavailable", "store": False}, status_code=503)  # type: ignore[return-value]
            return {"status": "ok", "store": True, "function": function}

    if metrics:

        @app.get("/metrics", tags=["ops"])
        def _metrics() -> Response:
            return Response(generate_latest(stage_metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def invoke_stage(
    request: Request, store: Store, function: str, body: Callable[[Run], Run | None]
) -> dict[str, Any]:
    """Run ``body`` (a ``run_<stage>`` filling the run) inside the run wrapper and return the run summary.

    Failures are recorded in pipeline_runs and re-raised so the error mapping answers the caller.
    """
    settings = get_settings()
    with stage_run(store, function, trigger_of(request), call_id(request), settings.pushgateway_url) as run:
        body(run)
    return run.as_dict()
