"""Prometheus gauges of the query function, computed from ClickHouse at scrape time.

Exposed on the query function's ``/metrics`` next to the shared stage metrics:

* ``powersense_data_freshness_seconds{source,metric}``: now − latest measurement timestamp
* ``powersense_data_freshness_threshold_seconds{level}``: the ages past which data is ``late``, ``stale``
  (``POWERSENSE_QUERY_MAX_DATA_AGE_S``) and ``too_old`` (``POWERSENSE_FORECAST_MAX_STALENESS_HOURS``):
  ``Settings.freshness_levels``. The data-stale alerts compare with these, so they follow the settings (they
  were written as 3 h and 6 h, and stayed there when an operator changed a setting)
* ``powersense_forecast_age_seconds{source,metric}``: now − issue time of the latest forecast run
* ``powersense_forecast_mape_ratio{source,metric,horizon_day}``: rolling MAPE (ratio) of every forecast
  step whose target lies in the 7 days before the latest actual, per horizon day
* ``powersense_anomalies_open{source,metric,severity}``: anomalous points detect still holds open, over the span
  it re-examines (``POWERSENSE_DETECT_OVERLAP_HOURS`` before now)
* ``powersense_anomaly_events_open{source,metric,kind,severity}``: the same open points as events (runs of one kind,
  ``shared.detection.events``), by their highest severity: what ``PowerSenseAnomaliesOpen`` counts
* ``powersense_last_run_status{function,status}`` (1 for the latest run's status) and
  ``powersense_last_run_timestamp_seconds{function}``
* ``powersense_query_cache_requests_total{result}``: response cache hits and misses
* ``powersense_query_responses_total{code}``: responses by status class (``2xx`` … ``5xx``), counted by the
  app itself — the plain compose topology has no gateway whose ``gateway_function_invocation_total`` the
  query-errors alert could read (observability/prometheus/rules/powersense.alerts.yml, PowerSenseQueryErrors)

A block that fails (store down, database not initialised) is logged and skipped, never an error: a
scrape always answers.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pandas as pd
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import clock
from shared.detection.events import DETECT_RESOLUTION_MIN, events
from shared.errors import PowerSenseError
from shared.logs import log_event
from shared.query.service import latest_runs
from shared.series import ACTUALS_CTE, data_age_s, latest_valid_ts
from shared.settings import Settings, get_settings
from shared.store import Store
from shared.timeutil import utc_datetime as utc

log = logging.getLogger(__name__)

QUERY_REGISTRY = CollectorRegistry(auto_describe=False)
CACHE_REQUESTS = Counter(
    "powersense_query_cache_requests_total", "Query API response cache lookups", ["result"], registry=QUERY_REGISTRY
)

RESPONSES = Counter(
    "powersense_query_responses_total", "Query API responses by status class", ["code"], registry=QUERY_REGISTRY
)
# every class exported from the start (a rate over a series born at 1 sees nothing), bound once: the middleware
# runs on every request, fast-path hits included, and labels() takes a lock for each lookup
_RESPONSES_BY_CLASS = {c: RESPONSES.labels(f"{c}xx") for c in (2, 3, 4, 5)}


class CountResponses:
    """Pure ASGI middleware counting each HTTP response by status class (outermost: fast-path hits count too).

    An exception that escapes the app (no response started) counts as ``5xx``: the server answers 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            k = (status[0] if status else 500) // 100
            (_RESPONSES_BY_CLASS.get(k) or RESPONSES.labels(f"{k}xx")).inc()


def count_responses(app: Starlette) -> None:
    """Install :class:`CountResponses` as the app's outermost middleware (add it after every other)."""
    app.add_middleware(CountResponses)


ROLLING_MAPE_SQL = f"""
with {ACTUALS_CTE}
select f.horizon_day, avg(abs(f.yhat - a.actual) / abs(a.actual)) as mape, count() as n
from {{db:Identifier}}.forecasts as f
inner join actuals as a on a.ts = f.ts
where a.actual is not null and a.actual != 0
  and f.source = {{source:String}} and f.metric = {{metric:String}}
  and f.ts >= {{start:DateTime64(3, 'UTC')}} and f.ts < {{end:DateTime64(3, 'UTC')}}
  and f.issued_at >= {{start:DateTime64(3, 'UTC')}} - interval 40 day and f.issued_at < {{end:DateTime64(3, 'UTC')}}
group by f.horizon_day
order by f.horizon_day
"""


class StoreCollector(Collector):
    """Reads the gauges from the store on every scrape (cheap aggregate queries)."""

    def __init__(self, store_getter: Callable[[], Store]) -> None:
        self._store_getter = store_getter

    def collect(self) -> Iterator[Metric]:
        """Yield every gauge; a failing block is logged and skipped."""
        yield freshness_thresholds(get_settings())  # the settings' own, with or without a store
        try:
            store = self._store_getter()
        except PowerSenseError as exc:
            log_event(log, "metrics_store_unavailable", logging.WARNING, error=str(exc))
            return
        if not store.ping():  # one warning per scrape rather than one per block
            log_event(log, "metrics_store_unavailable", logging.WARNING, error="store does not answer")
            return
        now = clock.now()
        for block in (self._freshness_and_mape, self._forecast_age, self._anomalies, self._last_runs):
            try:
                yield from block(store, now)
            except PowerSenseError as exc:
                log_event(log, "metrics_block_failed", logging.WARNING, block=block.__name__, error=str(exc))

    def _freshness_and_mape(self, store: Store, now: datetime) -> Iterator[Metric]:
        """Freshness per series, then the MAPE gauge, which starts from the same newest timestamps."""
        latest = _latest(store, "measurements", "ts", now)
        # the forecast series: its newest valid value, as /health reads it (a feed stuck on an implausible 0 MW,
        # or withdrawn values, is not fresh data)
        settings = get_settings()
        series = (settings.series_source, settings.series_metric)
        if series in latest:
            valid = latest_valid_ts(store, *series)
            if valid is None:
                del latest[series]  # no valid value in the lookback: absent, as for a series never stored
            else:
                latest[series] = valid
        yield _age_gauge(now, "powersense_data_freshness_seconds",
                         "Seconds since the latest measurement timestamp (the forecast series: its latest valid "
                         "value)", latest)
        yield from self._mape(store, latest)

    def _forecast_age(self, store: Store, now: datetime) -> Iterator[Metric]:
        yield _age_gauge(now, "powersense_forecast_age_seconds", "Seconds since the latest forecast run was issued",
                         _latest(store, "forecasts", "issued_at", now))

    def _mape(self, store: Store, latest: dict[tuple[str, str], datetime]) -> Iterator[Metric]:
        settings = get_settings()
        source, metric = settings.series_source, settings.series_metric
        last = latest.get((source, metric))
        if last is None:
            return
        end = last + timedelta(seconds=1)
        # the window detect's drift check scores (drift_window_days): one definition of "recent accuracy"
        window = timedelta(days=settings.drift_window_days)
        rows = store.query_rows(ROLLING_MAPE_SQL, {"source": source, "metric": metric, "start": end - window,
                                                   "end": end})
        g = GaugeMetricFamily("powersense_forecast_mape_ratio",
                              "Rolling MAPE (ratio) over the drift window (POWERSENSE_DRIFT_WINDOW_DAYS) before the "
                              "latest actual, per horizon day",
                              labels=["source", "metric", "horizon_day"])
        for horizon_day, mape, _n in rows:
            g.add_metric([source, metric, str(horizon_day)], float(mape))
        yield g

    def _anomalies(self, store: Store, now: datetime) -> Iterator[Metric]:
        # only the span detect still re-examines (POWERSENSE_DETECT_OVERLAP_HOURS before now): an anomaly stays
        # open for good once detect has moved past it (nothing acknowledges one), so counting every open
        # anomaly ever kept PowerSenseAnomaliesOpen firing from the first spike on (185 open after one October)
        g = GaugeMetricFamily("powersense_anomalies_open", "Anomalous points detect still holds open, in the span "
                              "it re-examines (POWERSENSE_DETECT_OVERLAP_HOURS before now)",
                              labels=["source", "metric", "severity"])
        since = now - timedelta(hours=get_settings().detect_overlap_hours)
        points = store.query_df(
            "select source, metric, kind, ts, severity from {db:Identifier}.anomalies final "
            "where status = 'open' and ts >= {since:DateTime64(3, 'UTC')}",
            {"since": since},
        )
        points = points if len(points) else pd.DataFrame(columns=["source", "metric", "kind", "ts", "severity"])
        for (source, metric, severity), n in points.groupby(["source", "metric", "severity"]).size().items():
            g.add_metric([str(source), str(metric), str(severity)], float(n))
        yield g
        # what the alert counts: events, not points (a two-hour level shift is one anomaly, not eight; counting
        # points, the alert fired for 44 % of the hours of a real month, anomaly triage review D8)
        ev = GaugeMetricFamily("powersense_anomaly_events_open", "Open anomaly events (runs of consecutive points of "
                               "one kind) in the span detect re-examines, by kind and highest severity",
                               labels=["source", "metric", "kind", "severity"])
        step = pd.Timedelta(minutes=DETECT_RESOLUTION_MIN)
        for (source, metric), grp in points.groupby(["source", "metric"]):
            for (kind, severity), n in events(grp, step).groupby(["kind", "severity"]).size().items():
                ev.add_metric([str(source), str(metric), str(kind), str(severity)], float(n))
        yield ev

    def _last_runs(self, store: Store, now: datetime) -> Iterator[Metric]:
        status_g = GaugeMetricFamily("powersense_last_run_status", "1 for the status of each function's latest run",
                                     labels=["function", "status"])
        ts_g = GaugeMetricFamily("powersense_last_run_timestamp_seconds", "Start time of each function's latest run",
                                 labels=["function"])
        # the runs /runs/latest answers with (one definition of "a function's latest run")
        for run in latest_runs(store).runs:
            status_g.add_metric([run.function, run.status], 1.0)
            ts_g.add_metric([run.function], run.started_at.timestamp())
        yield status_g
        yield ts_g


# whitelist: the only table/column pairs _latest puts into SQL
_AGE_SOURCES = {("measurements", "ts"), ("forecasts", "issued_at")}


# A scrape reads the newest value of each series from the last RECENT_DAYS only; the whole table (every series,
# however old its newest value) is read at most every WHOLE_TABLE_EVERY_S. Each scrape read both tables whole:
# 20 M rows and 2-3 s every 10 s at three years of simulated history. A value newer than the window's start is
# seen at once; one written further back (a backfill of old data) within the hour.
RECENT_DAYS = 40
WHOLE_TABLE_EVERY_S = 3600.0
_whole: weakref.WeakKeyDictionary[Store, dict[str, tuple[float, dict[tuple[str, str], datetime]]]] = (
    weakref.WeakKeyDictionary())
_whole_lock = threading.Lock()


def _latest(store: Store, table: str, column: str, now: datetime | None = None) -> dict[tuple[str, str], datetime]:
    """The newest ``column`` of ``table`` per (source, metric)."""
    if (table, column) not in _AGE_SOURCES:
        raise ValueError(f"not an age source: {table}.{column}")
    sql = f"select source, metric, max({column}) from {{db:Identifier}}.{table} where {{all:Bool}} or " \
          f"{column} >= {{since:DateTime64(3, 'UTC')}} group by source, metric"
    since = (now or clock.now()) - timedelta(days=RECENT_DAYS)
    key = f"{store.database}.{table}"
    with _whole_lock:
        cached = _whole.get(store, {}).get(key)
    if cached is None or time.monotonic() - cached[0] > WHOLE_TABLE_EVERY_S:
        whole = {(str(s), str(m)): utc(t) for s, m, t in store.query_rows(sql, {"all": True, "since": since})}
        with _whole_lock:
            _whole.setdefault(store, {})[key] = (time.monotonic(), whole)
        return dict(whole)
    latest = dict(cached[1])
    for s, m, t in store.query_rows(sql, {"all": False, "since": since}):
        latest[(str(s), str(m))] = max(utc(t), latest.get((str(s), str(m)), utc(t)))
    return latest


def freshness_thresholds(settings: Settings) -> GaugeMetricFamily:
    """``powersense_data_freshness_threshold_seconds{level}``: ``Settings.freshness_levels``."""
    g = GaugeMetricFamily("powersense_data_freshness_threshold_seconds",
                          "Data older than this is late (POWERSENSE_DQ_FRESHNESS_MAX_MIN), stale "
                          "(POWERSENSE_QUERY_MAX_DATA_AGE_S) or too old for the model "
                          "(POWERSENSE_FORECAST_MAX_STALENESS_HOURS): the data-stale alerts' thresholds",
                          labels=["level"])
    for level, seconds in settings.freshness_levels().items():
        g.add_metric([level], seconds)
    return g


def _age_gauge(now: datetime, name: str, help_: str, latest: dict[tuple[str, str], datetime]) -> GaugeMetricFamily:
    """Seconds since each series' newest timestamp."""
    g = GaugeMetricFamily(name, help_, labels=["source", "metric"])
    for (source, metric), last in latest.items():
        g.add_metric([source, metric], data_age_s(last, now))
    return g


_registered = False


def register_store_collector(store_getter: Callable[[], Store]) -> None:
    """Register the scrape-time collector once per process."""
    global _registered
    if not _registered:
        QUERY_REGISTRY.register(StoreCollector(store_getter))
        _registered = True
