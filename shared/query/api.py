"""HTTP routes of the query function.

``public`` (no token): ``/health`` and ``/metrics`` (and, from ``shared.app``, ``/docs`` and
``/openapi.json``). ``protected`` (bearer token): everything else. Data endpoints are served through
:func:`_serve`: parameters validated by their model (unknown or missing ones → 422,
refused values → 400), response looked up in the watermark-keyed cache, computed in a worker thread on
a miss, serialised once (JSON by the response model, or CSV).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from shared import clock, metrics
from shared.errors import PowerSenseError, SchemaError
from shared.logs import log_event
from shared.query import service
from shared.query.auth import require_token
from shared.query.cache import CachedResponse, QueryCache, StoreState
from shared.query.fastpath import FastPathIndex, FastPathMiddleware, wants_csv
from shared.query.metrics import CACHE_REQUESTS, QUERY_REGISTRY, register_store_collector
from shared.query.models import (
    AnomaliesParams,
    AnomaliesResponse,
    Anomaly,
    DataQualityParams,
    DataQualityResponse,
    EmptyParams,
    ErrorResponse,
    ForecastParams,
    ForecastRunResponse,
    ForecastRunsParams,
    ForecastRunsResponse,
    HealthResponse,
    MeasurementsParams,
    MeasurementsResponse,
    ModelMetricsParams,
    ModelMetricsResponse,
    ModelsParams,
    ModelsResponse,
    RunsParams,
    RunsResponse,
    VsActualParams,
    VsActualResponse,
)
from shared.series import data_age_s, freshness_status, latest_valid_ts
from shared.settings import Settings, get_settings
from shared.store import Store, existing_store, get_store

log = logging.getLogger(__name__)

JSON = "application/json"
CSV = "text/csv; charset=utf-8"
_CACHE = QueryCache(ttl_s=1.0)
_INFLIGHT: dict[Hashable, asyncio.Future[CachedResponse]] = {}
_FAST = FastPathIndex()

_ERR = {"model": ErrorResponse}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_ERR, "description": "refused parameter value (malformed, not a choice, over a maximum such as limit; "
                                 "start after end, unknown metric, range over the maximum, bad cursor)"},
    401: {**_ERR, "description": "missing or invalid bearer token"},
    422: {**_ERR, "description": "unknown or missing parameter"},
    503: {**_ERR, "description": "store unavailable, or its database not initialised (the missing tables named)"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {**_ERR, "description": "no such run, or no data yet"}}
CSV_ALT: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}

public = APIRouter()
protected = APIRouter(dependencies=[Depends(require_token)], responses=ERRORS)


def cache() -> QueryCache:
    """The process-wide response cache, sized from the settings."""
    s = get_settings()
    _CACHE.ttl_s, _CACHE.max_entries = s.query_cache_ttl_s, s.query_cache_entries
    _FAST.max_entries = s.query_cache_entries
    return _CACHE


def _current_database() -> str | None:
    """The store's database when the store exists: the fast path runs on the event loop, where building one
    (a connection, the schema check) blocked every request, open ones included, while ClickHouse was slow."""
    store = existing_store()
    return store.database if store is not None else None


def install_fast_path(app: FastAPI) -> None:
    """Serve repeated authorised GETs from the cache before FastAPI routing (see shared.query.fastpath)."""
    app.add_middleware(FastPathMiddleware, index=_FAST, cache=_CACHE, database=_current_database,
                       on_hit=CACHE_REQUESTS.labels("fast_hit").inc)


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


async def _state(store: Store) -> StoreState:
    c = cache()
    state = c.fresh_state(store)
    return state if state is not None else await run_in_threadpool(c.refresh_state, store)


Builder = Callable[[Store, StoreState, bool], CachedResponse]


async def _serve(
    request: Request, endpoint: str, params: BaseModel, build: Builder, extra: Hashable = None
) -> Response:
    """Answer from the cache, or build the response in a worker thread and cache it."""
    store = get_store()
    state = await _state(store)
    service.check_schema(state.tables, store.database)  # 503 naming missing tables; no round trip
    as_csv = _wants_csv(request, getattr(params, "format", None))
    key = (store.database, endpoint, params.model_dump_json(), as_csv, state.token, extra)
    hit: CachedResponse | None = _CACHE.get(key)
    if hit is not None:
        CACHE_REQUESTS.labels("hit").inc()
    elif key in _INFLIGHT:
        # Single flight: identical concurrent misses (e.g. every dashboard right after new data
        # lands) wait for the one computation instead of queueing N copies on the store.
        CACHE_REQUESTS.labels("coalesced").inc()
        leader = _INFLIGHT[key]
        try:
            hit = await asyncio.shield(leader)
        except asyncio.CancelledError:
            if not leader.cancelled():
                raise  # this request itself was cancelled
            hit = await run_in_threadpool(build, store, state, as_csv)  # the leader's client went away
    else:
        CACHE_REQUESTS.labels("miss").inc()
        future: asyncio.Future[CachedResponse] = asyncio.get_running_loop().create_future()
        _INFLIGHT[key] = future
        try:
            hit = await run_in_threadpool(build, store, state, as_csv)
            future.set_result(hit)
            _CACHE.put(key, hit, len(hit.body))
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must log it
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del _INFLIGHT[key]
    if extra is None:  # responses that depend on the clock are not exact-request cacheable
        scope = request.scope
        _FAST.put((store.database, scope["path"], scope.get("query_string", b""), wants_csv(scope["headers"])),
                  state.token, hit)
    return Response(hit.body, media_type=hit.media_type, headers=hit.headers)


def _latest_fn(store: Store, state: StoreState) -> service.LatestFn:
    """latest_ts memoised on the watermark (exact: it changes with any insert)."""
    return lambda source, metric: _CACHE.memo((store.database, "latest_ts", source, metric, state.token),
                                              lambda: service.latest_ts(store, source, metric))


def _latest_valid(store: Store, state: StoreState, settings: Settings) -> datetime | None:
    """The forecast series' newest valid instant (shared.series.latest_valid_ts), memoised on the watermark."""
    source, metric = settings.series_source, settings.series_metric
    return _CACHE.memo((store.database, "latest_valid", source, metric, state.token),
                       lambda: latest_valid_ts(store, source, metric))


def _json(model: BaseModel, headers: dict[str, str] | None = None) -> CachedResponse:
    return CachedResponse(model.model_dump_json().encode(), JSON, headers or {})


# --- public -------------------------------------------------------------------------------------------
def _public_detail(exc: PowerSenseError) -> str:
    """What an open route says of a failure: the missing tables of an uninitialised store (what an operator acts
    on), otherwise only that the store is unavailable, never the driver's message (ClickHouse's user, version
    and address)."""
    if isinstance(exc, SchemaError):
        return str(exc)
    return "the store is unavailable (details in the query function's log)"


@public.get("/health", tags=["ops"], response_model=HealthResponse,
            responses={503: {"model": HealthResponse}, 422: {**_ERR, "description": "unknown parameter"}})
async def health(_: Annotated[EmptyParams, Query()]) -> Response:
    """Store reachable and data fresh (open, no token). 503 only when the store is unreachable; stale data
    answers 200 with ``status: degraded`` so that orchestrators do not restart a healthy function."""

    def check() -> tuple[int, HealthResponse]:
        settings = get_settings()
        try:
            store = get_store()
            state = cache().fresh_state(store) or cache().refresh_state(store)
            service.check_schema(state.tables, store.database)  # 503 naming missing tables; no round trip
            last = _latest_valid(store, state, settings)
        except PowerSenseError as exc:
            # open route: the reason goes to the log, not to whoever asks (it named the ClickHouse user, its
            # version and internal address)
            log_event(log, "health_unavailable", logging.WARNING, error_type=type(exc).__name__, error=str(exc))
            return 503, HealthResponse(status="unavailable", store=isinstance(exc, SchemaError), data_fresh=False,
                                       latest_ts=None, data_age_s=None, max_data_age_s=settings.query_max_data_age_s,
                                       detail=_public_detail(exc))
        age = data_age_s(last, clock.now()) if last is not None else None
        fresh = age is not None and freshness_status(age, settings) in ("ok", "late")
        return 200, HealthResponse(status="ok" if fresh else "degraded", store=True, data_fresh=fresh, latest_ts=last,
                                   data_age_s=round(age, 3) if age is not None else None,
                                   max_data_age_s=settings.query_max_data_age_s)

    status, body = await run_in_threadpool(check)
    return Response(body.model_dump_json().encode(), status_code=status, media_type=JSON)


@public.get("/metrics", tags=["ops"], response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                       422: {**_ERR, "description": "unknown parameter"}})
def prometheus_metrics(_: Annotated[EmptyParams, Query()]) -> Response:
    """Prometheus exposition: stage metrics plus gauges read from ClickHouse at scrape time (open, like
    /health; rendered at most every 10 s so that scrapes cannot load the store)."""
    register_store_collector(get_store)
    try:
        store = get_store()
    except PowerSenseError as exc:
        log_event(log, "metrics_unavailable", logging.WARNING, error_type=type(exc).__name__, error=str(exc))
        return JSONResponse({"error": type(exc).__name__, "detail": _public_detail(exc)}, status_code=503)
    key = (store.database, "metrics", int(time.monotonic() // 10))
    body = cache().memo(key, lambda: generate_latest(metrics.REGISTRY) + generate_latest(QUERY_REGISTRY))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _known(store: Store, state: StoreState) -> service.KnownSeries:
    """The stored series, memoised on the store's watermark (one scan per change of the data)."""
    return _CACHE.memo((store.database, "known", state.token), lambda: service.known_series(store))


# --- measurements ---------------------------------------------------------------------------------------
@protected.get("/measurements", tags=["measurements"], response_model=MeasurementsResponse, responses=CSV_ALT)
async def get_measurements(request: Request, p: Annotated[MeasurementsParams, Query()]) -> Response:
    """Measurements of one metric over [start, end): the latest value per timestamp (best nature: définitives >
    consolidées > temps réel), or every stored revision (``version=all``); optionally resampled to 15min/30min/
    1h UTC buckets or 1d Europe/Paris days (mean/min/max); ``as_of`` = as known at that insertion time. Pages of at most
    ``limit`` rows; follow ``next_cursor`` (CSV: header ``X-Next-Cursor``)."""

    def build(store: Store, state: StoreState, as_csv: bool) -> CachedResponse:
        resp = service.measurements(store, p, _known(store, state), _latest_fn(store, state))
        headers = {"X-Next-Cursor": resp.next_cursor} if resp.next_cursor else {}
        if not as_csv:
            return _json(resp)
        if resp.interval == "raw":
            rows: list[tuple[Any, ...]] = [(x.ts, x.value, x.nature, x.version, x.inserted_at, x.raw_value, x.flag)
                                           for x in resp.points]
            header = ["ts", "value", "nature", "version", "inserted_at", "raw_value", "flag"]
        else:
            rows, header = [(x.ts, x.value, x.n) for x in resp.points], ["ts", "value", "n"]
        return CachedResponse(service.to_csv(header, rows), CSV, headers)

    return await _serve(request, "measurements", p, build)


# --- forecasts ------------------------------------------------------------------------------------------
@protected.get("/forecasts", tags=["forecasts"], response_model=ForecastRunResponse, responses={**CSV_ALT, **NOT_FOUND})
async def get_forecast(request: Request, p: Annotated[ForecastParams, Query()]) -> Response:
    """The latest forecast run (or ``run_id``) with its prediction intervals; ``horizon_day`` keeps the D+k steps,
    ``max_horizon_steps`` the first N. 404 until the forecast stage has issued a run."""

    def build(store: Store, state: StoreState, as_csv: bool) -> CachedResponse:
        service.check_series(_known(store, state), p.source, p.metric)
        run = service.forecast_run(store, p)
        if not as_csv:
            return _json(run)
        headers = {"X-Run-Id": run.run_id, "X-Model-Version": run.model_version,
                   "X-Issued-At": service.iso_utc(run.issued_at), "X-Interval-Level": str(run.interval_level),
                   "X-Weather-Status": run.weather_status}
        rows = [(x.ts, x.horizon_steps, x.horizon_day, x.yhat, x.lower, x.upper, x.yhat_source, x.model_weight)
                for x in run.points]
        body = service.to_csv(["ts", "horizon_steps", "horizon_day", "yhat", "lower", "upper", "yhat_source",
                               "model_weight"], rows)
        return CachedResponse(body, CSV, headers)

    return await _serve(request, "forecast", p, build)


@protected.get("/forecasts/runs", tags=["forecasts"], response_model=ForecastRunsResponse)
async def get_forecast_runs(request: Request, p: Annotated[ForecastRunsParams, Query()]) -> Response:
    """The most recent forecast runs (headers only), newest first; empty until the forecast stage has run."""
    def build(store: Store, state: StoreState, as_csv: bool) -> CachedResponse:
        service.check_series(_known(store, state), p.source, p.metric)
        return _json(service.forecast_runs(store, p))

    return await _serve(request, "forecast_runs", p, build)


@protected.get("/forecasts/vs-actual", tags=["forecasts"], response_model=VsActualResponse,
               responses={**CSV_ALT, **NOT_FOUND})
async def get_vs_actual(request: Request, p: Annotated[VsActualParams, Query()]) -> Response:
    """Forecast against actuals over [start, end) (max 92 days): for each target step the latest forecast issued
    before it (or the steps of ``run_id``; ``horizon_day`` keeps D+k forecasts only), with MAE, RMSE, MAPE, bias
    and interval coverage over the steps that have an actual."""

    def build(store: Store, state: StoreState, as_csv: bool) -> CachedResponse:
        service.check_series(_known(store, state), p.source, p.metric)
        resp = service.forecast_vs_actual(store, p, _latest_fn(store, state))
        if not as_csv:
            return _json(resp)
        header = ["ts", "actual", "yhat", "lower", "upper", "error", "run_id", "issued_at", "horizon_steps",
                  "horizon_day"]
        rows = [(x.ts, x.actual, x.yhat, x.lower, x.upper, x.error, x.run_id, x.issued_at, x.horizon_steps,
                 x.horizon_day) for x in resp.points]
        return CachedResponse(service.to_csv(header, rows), CSV, {})

    return await _serve(request, "vs_actual", p, build)


# --- anomalies, data quality, runs, models ------------------------------------------------------------------
@protected.get("/anomalies", tags=["anomalies"], response_model=AnomaliesResponse, responses=CSV_ALT)
async def get_anomalies(request: Request, p: Annotated[AnomaliesParams, Query()]) -> Response:
    """Anomalies flagged by detect (latest state of each point) with ts in [start, end) (default: the last 30 days),
    filtered by kind, severity, detector and status, newest first. Pages of at most ``limit`` rows; follow
    ``next_cursor`` (CSV: header ``X-Next-Cursor``). Empty until detect has run."""
    minute = int(clock.now().timestamp() // 60)  # the default window moves with the clock

    def build(store: Store, state: StoreState, as_csv: bool) -> CachedResponse:
        service.check_series(_known(store, state), p.source, p.metric)
        resp = service.anomalies(store, p, clock.now())
        if not as_csv:
            return _json(resp)
        header = list(Anomaly.model_fields)
        rows = [tuple(getattr(a, f) for f in header) for a in resp.items]
        headers = {"X-Next-Cursor": resp.next_cursor} if resp.next_cursor else {}
        return CachedResponse(service.to_csv(header, rows), CSV, headers)

    return await _serve(request, "anomalies", p, build, extra=minute if p.end is None else None)


@protected.get("/data-quality", tags=["data quality"], response_model=DataQualityResponse, responses=NOT_FOUND)
async def get_data_quality(request: Request, p: Annotated[DataQualityParams, Query()]) -> Response:
    """The data-quality checks of the latest detect run (or ``run_id``): completeness per local day, freshness,
    duplicates, dead letters, out-of-range values, revisions; ``status_counts`` over the whole run. 404 for a
    ``run_id`` with no checks."""
    return await _serve(request, "data_quality", p,
                        lambda store, _state, _csv: _json(service.data_quality(store, p)))


@protected.get("/runs", tags=["pipeline runs"], response_model=RunsResponse)
async def get_runs(request: Request, p: Annotated[RunsParams, Query()]) -> Response:
    """pipeline_runs history (final state of each invocation), newest first."""
    return await _serve(request, "runs", p, lambda store, _state, _csv: _json(service.runs(store, p)))


@protected.get("/runs/latest", tags=["pipeline runs"], response_model=RunsResponse)
async def get_latest_runs(request: Request, p: Annotated[EmptyParams, Query()]) -> Response:
    """The most recent run of every function."""
    return await _serve(request, "runs_latest", p, lambda store, _state, _csv: _json(service.latest_runs(store)))


@protected.get("/models/metrics", tags=["models"], response_model=ModelMetricsResponse)
async def get_model_metrics(request: Request, p: Annotated[ModelMetricsParams, Query()]) -> Response:
    """Latest accuracy (MAPE/MAE/bias per horizon day), interval coverage, PSI and retrain requests computed by
    detect. Empty until detect has run."""
    return await _serve(request, "model_metrics", p,
                        lambda store, _state, _csv: _json(service.model_metrics(store, p)))


@protected.get("/models", tags=["models"], response_model=ModelsResponse)
def get_models(p: Annotated[ModelsParams, Query()]) -> JSONResponse:
    """The model registry of a series from the artifact store: versions (trained_at, training window, backtest
    metrics) and the current pointer. ``available: false`` until a model exists."""
    settings = get_settings()
    series = p.series or (f"{settings.series_source}.{settings.series_metric}.{settings.forecast_resolution_min}min")
    resp = service.model_registry(settings, series)
    return JSONResponse(resp.model_dump(mode="json"))
