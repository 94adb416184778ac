"""Read-only query functions over the store.

Every function takes the store and validated parameters and returns a response model. All user
values reach ClickHouse as server-side parameters (``{name:Type}``); the only SQL fragments chosen in
Python come from fixed whitelists (aggregate function, table names).

The tables are the repository's DDL (``ch/init``), applied by every writer before first use, so the
functions query them unconditionally: a stage that has not run yet leaves its table empty, which
answers an empty result (or 404 for "the latest run"). The one case where they can be absent — the
read-only user on a server no writer has initialised — is :func:`check_schema`'s (the API runs it on
every request against the table set its watermark query already read).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from shared.artifacts import get_artifact_store
from shared.calendar import TZ, local_day_bounds
from shared.errors import ArtifactError, BadRequestError, NotFoundError, PowerSenseError, SchemaError
from shared.query.models import (
    DEFAULT_WINDOW_DAYS,
    INTERVAL_MINUTES,
    MAX_RANGE_DAYS,
    MAX_RANGE_DAYS_DAILY,
    MAX_VS_ACTUAL_DAYS,
    AccuracySummary,
    AnomaliesParams,
    AnomaliesResponse,
    Anomaly,
    DataQualityParams,
    DataQualityResponse,
    ForecastParams,
    ForecastPoint,
    ForecastRunResponse,
    ForecastRunsParams,
    ForecastRunsResponse,
    ForecastRunSummary,
    MeasurementPoint,
    MeasurementsParams,
    MeasurementsResponse,
    ModelMetric,
    ModelMetricsParams,
    ModelMetricsResponse,
    ModelsResponse,
    QualityCheck,
    RunRow,
    RunsParams,
    RunsResponse,
    VsActualParams,
    VsActualPoint,
    VsActualResponse,
)
from shared.series import ACTUALS_CTE, SERIES_SQL, VERDICTS_SQL
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import utc_datetime as utc

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)
RAW_STEP = timedelta(minutes=15)  # finest resolution of the source
_AGG_SQL = {"mean": "avg", "min": "min", "max": "max"}  # whitelist: the only SQL chosen from user input


def _num(value: Any) -> float | None:
    """Float or None (NULL, NaN)."""
    if value is None:
        return None
    f = float(value)
    return None if math.isnan(f) else f


# What the query API reads (tables and the ``series`` view of ch/init). A read-only user cannot create them.
REQUIRED_TABLES = frozenset({"measurements", "measurement_flags", "series", "forecasts", "anomalies", "data_quality",
                             "model_metrics", "pipeline_runs"})


# --- store introspection ----------------------------------------------------------------------------
def check_schema(tables: Iterable[str], database: str) -> None:
    """Raise :class:`SchemaError` (503) naming the tables of :data:`REQUIRED_TABLES` the database lacks.

    Why: the query function connects as a read-only user, which applies no DDL; on a server that no
    writer stage has initialised yet its queries would fail table by table. One check answers instead.
    """
    missing = sorted(REQUIRED_TABLES - set(tables))
    if missing:
        raise SchemaError(
            f"database {database!r} is not initialised: missing {', '.join(missing)}; "
            "run a writer stage once (it applies ch/init) or apply ch/init as an admin"
        )


KnownSeries = dict[tuple[str, str], frozenset[str]]


def known_series(store: Store) -> KnownSeries:
    """(source, metric) pairs present in measurements → the natures stored for each (one scan, which the API
    memoises on the watermark: a request naming a nature does not read the table again to check it)."""
    rows = store.query_rows(
        "select source, metric, groupUniqArray(nature) from {db:Identifier}.measurements group by source, metric"
    )
    return {(str(s), str(m)): frozenset(map(str, natures)) for s, m, natures in rows}


def check_series(known: KnownSeries, source: str, metric: str) -> None:
    """BadRequestError naming what is unknown, when (source, metric) is no stored series. Every endpoint that takes
    a series checks it: /forecasts/vs-actual, /forecasts/runs and /anomalies answered a misspelt metric with 200 and
    nothing, which a dashboard tile shows as an empty chart. A store holding no measurement yet checks nothing (a
    new install answers "no forecast run yet", not "unknown source")."""
    if not known or (source, metric) in known:
        return
    names = sorted(m for s, m in known if s == source)
    if not names:  # the source is what is unknown: it was reported as an unknown metric
        raise BadRequestError(f"unknown source {source!r}; known sources: {sorted({s for s, _ in known})}")
    raise BadRequestError(f"unknown metric {metric!r}; known metrics for {source}: {names}")


def latest_ts(store: Store, source: str, metric: str) -> datetime | None:
    """Most recent measurement timestamp of a series (any nature, any version)."""
    value = store.scalar(
        """
        select max(ts) from {db:Identifier}.measurements
        where source = {source:String} and metric = {metric:String}
        having count() > 0
        """,
        {"source": source, "metric": metric},
    )
    return utc(value) if value is not None else None


# --- cursors ----------------------------------------------------------------------------------------
def encode_cursor(payload: dict[str, Any]) -> str:
    """Opaque, URL-safe page cursor."""
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """Inverse of :func:`encode_cursor`; a tampered cursor is a 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or not isinstance(payload.get("ts"), str):
            raise ValueError("no ts")
        ts = datetime.fromisoformat(payload["ts"])
        payload["ts"] = utc(ts)
        payload["nature"] = str(payload.get("nature", ""))
        payload["version"] = int(payload.get("version", 0))
        if not 0 <= payload["version"] < 2**63 or not EPOCH <= payload["ts"] < FAR_FUTURE:
            raise ValueError("out of range")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, OverflowError) as exc:
        raise BadRequestError("invalid cursor: pass next_cursor from the previous page unchanged") from exc
    return payload


# --- measurements -----------------------------------------------------------------------------------
def _window(
    start: datetime | None, end: datetime | None, default_end: datetime | None, days: int, max_days: int
) -> tuple[datetime, datetime]:
    """Resolve an optional [start, end) window and enforce its documented maximum."""
    if end is None:
        if default_end is None:
            raise NotFoundError("no data stored yet for this series")
        end = default_end
    if start is None:
        start = end - timedelta(days=days)
    if start >= end:
        raise BadRequestError(f"start ({iso_utc(start)}) must be before end ({iso_utc(end)})")
    if end - start > timedelta(days=max_days):
        raise BadRequestError(f"range exceeds the maximum of {max_days} days; narrow it or page through it")
    return start, end


def _floor(ts: datetime, step: timedelta) -> datetime:
    seconds = step.total_seconds()
    return datetime.fromtimestamp(math.floor(ts.timestamp() / seconds) * seconds, tz=UTC)


def _whole_buckets(
    start: datetime, end: datetime, step: timedelta, *, default_start: bool
) -> tuple[datetime, datetime]:
    """[start, end) widened to whole resampling buckets (1d: local days of the series' calendar).

    A window cut inside a bucket returned that bucket with part of its values (a "day" of 92 quarter-hours, its mean
    wrong) and, at the start, stamped before ``start``; the default 7-day window, reckoned in UTC, did so across every
    DST change. The response's start and end are the widened window. The default daily window is 7 local days."""
    if step == timedelta(days=1):
        paris = ZoneInfo(TZ)
        last_day = (end - timedelta(microseconds=1)).astimezone(paris).date()
        first_day = (last_day - timedelta(days=DEFAULT_WINDOW_DAYS - 1) if default_start
                     else start.astimezone(paris).date())
        return (local_day_bounds(first_day)[0].to_pydatetime(), local_day_bounds(last_day)[1].to_pydatetime())
    return _floor(start, step), _floor(end - timedelta(microseconds=1), step) + step


def _bucket_end(ts: datetime, step: timedelta) -> datetime:
    """The end of the resampling bucket holding ``ts``: the next local midnight for daily buckets."""
    if step == timedelta(days=1):
        return local_day_bounds(ts.astimezone(ZoneInfo(TZ)).date())[1].to_pydatetime()
    return _floor(ts, step) + step


def measurements_sql(p: MeasurementsParams) -> str:
    """The SELECT behind ``GET /measurements`` for these parameters (also timed bare by the benchmark)."""
    if p.version == "all":
        # every stored revision with the plausibility verdict known at as_of (the view measurement_verdicts,
        # as the series view reads it, ch/init/007.series.sql): value NULL when implausible, raw_value as
        # received, flag the reason
        return """
        with revisions as (
            select ts, tupleElement(argMax(tuple(value), inserted_at), 1) as raw, nature, version,
                   any(ukey) as key, max(inserted_at) as inserted_at_
            from {db:Identifier}.measurements
            where source = {source:String} and metric = {metric:String}
              and ts >= {start:DateTime64(3, 'UTC')} and ts < {end:DateTime64(3, 'UTC')}
              and inserted_at <= {as_of:DateTime64(3, 'UTC')}
              and ({nature:String} = '' or nature = {nature:String})
              and (ts, nature, version) > ({after:DateTime64(3, 'UTC')}, {after_nature:String},
                                           {after_version:UInt64})
            group by ts, nature, version
            order by ts, nature, version
            limit {limit:UInt32}
        ), verdicts as (
            select ukey as f_ukey, version as f_version, reason as f_reason
            from """ + VERDICTS_SQL + """
        )
        select ts, if(coalesce(f_reason, '') = '', raw, NULL) as value_, nature, version, inserted_at_,
               toUInt64(0) as n, raw as raw_value_, toString(coalesce(f_reason, '')) as flag_
        from revisions
        left join verdicts on f_ukey = key and f_version = version
        order by ts, nature, version
        """
    # The series (ch/init/007.series.sql): best nature, latest version known at as_of, implausible
    # values left out (value NULL); with a nature filter, the latest version of that nature.
    latest = f"""
        with latest_per_ts as (
            select ts, value as value_, nature as nature_, version as version_, inserted_at as inserted_at_,
                   raw_value as raw_value_, flag as flag_
            from {SERIES_SQL}
            where true {{cursor_filter}}
        )
    """
    if p.interval == "raw":
        return latest.replace("{cursor_filter}", "and ts > {after:DateTime64(3, 'UTC')}") + """
        select ts, value_, nature_, version_, inserted_at_, toUInt64(0) as n, raw_value_, flag_
        from latest_per_ts
        order by ts
        limit {limit:UInt32}
        """
    agg = _AGG_SQL[p.agg]
    # a day is a local day of the series' calendar (23, 24 or 25 hours), as in dbt's local_date and the
    # dashboards; shorter buckets are UTC ones, which Paris hours and half-hours share
    bucket = (f"toDateTime64(toStartOfDay(ts, '{TZ}'), 3, 'UTC')" if p.interval == "1d"
              else "toStartOfInterval(ts, toIntervalMinute({step:UInt32}))")
    return latest.replace("{cursor_filter}", "") + f"""
        , buckets as (
            select {bucket} as bucket,
                   {agg}(value_) as value, count(value_) as n
            from latest_per_ts
            group by bucket
        )
        select bucket as ts, value, '' as nature, toUInt64(0) as version, bucket as inserted_at, n,
               CAST(NULL AS Nullable(Float64)) as raw_value, '' as flag
        from buckets
        where bucket > {{after:DateTime64(3, 'UTC')}}
        order by bucket
        limit {{limit:UInt32}}
    """


LatestFn = Callable[[str, str], "datetime | None"]


def resolve_measurements(
    store: Store, p: MeasurementsParams, known: KnownSeries, latest: LatestFn | None = None
) -> tuple[str, dict[str, Any], datetime, datetime]:
    """Validate semantics and return (sql, params, start, end) for a measurements page.

    ``latest(source, metric)`` gives the latest stored timestamp (default: ask the store); the API
    passes a memoised one.
    """
    check_series(known, p.source, p.metric)
    if p.version == "all" and p.interval != "raw":
        raise BadRequestError("version=all returns every stored revision and cannot be resampled; use interval=raw")
    natures = known.get((p.source, p.metric), frozenset())  # nothing stored yet: the window below answers 404
    # an unknown nature answered 200 with no rows, as if nothing was published
    if p.nature is not None and known and p.nature not in natures:
        raise BadRequestError(f"unknown nature {p.nature!r} for {p.source}/{p.metric}; known natures: "
                              f"{sorted(natures)}")
    if p.interval == "raw" and "agg" in p.model_fields_set:  # it was dropped without a word ("agg": null)
        raise BadRequestError(f"agg={p.agg} aggregates resampled buckets; interval=raw returns every value (set "
                              "interval to 15min, 30min, 1h or 1d)")
    step = timedelta(minutes=INTERVAL_MINUTES[p.interval]) if p.interval != "raw" else RAW_STEP
    default_end = None
    if p.end is None:
        last = (latest or partial(latest_ts, store))(p.source, p.metric)
        default_end = _bucket_end(last, step) if last is not None else None
    max_days = MAX_RANGE_DAYS_DAILY if p.interval == "1d" else MAX_RANGE_DAYS
    start, end = _window(p.start, p.end, default_end, DEFAULT_WINDOW_DAYS, max_days)
    if p.interval != "raw":
        start, end = _whole_buckets(start, end, step, default_start=p.start is None)
    after: dict[str, Any] = {"ts": EPOCH, "nature": "", "version": 0}
    if p.cursor:
        after = decode_cursor(p.cursor)
    params = {
        "source": p.source,
        "metric": p.metric,
        "start": start,
        "end": end,
        "as_of": p.as_of or FAR_FUTURE,
        "nature": p.nature or "",
        "after": after["ts"],
        "after_nature": after["nature"],
        "after_version": after["version"],
        "limit": p.limit + 1,  # one extra row tells whether there is a next page
        "step": INTERVAL_MINUTES.get(p.interval, 15),
    }
    return measurements_sql(p), params, start, end


def measurements(
    store: Store, p: MeasurementsParams, known: KnownSeries, latest: LatestFn | None = None
) -> MeasurementsResponse:
    """A page of measurements: latest or all versions, optionally resampled, optionally as of a time."""
    sql, params, start, end = resolve_measurements(store, p, known, latest)
    rows = store.query_rows(sql, params)
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    resampled = p.interval != "raw"
    # model_construct: the values come typed from the store; validating 10 000 points costs more than the query
    points = [
        MeasurementPoint.model_construct(
            ts=utc(ts),
            value=_num(value),
            nature=None if resampled else str(nature),
            version=None if resampled else int(version),
            inserted_at=None if resampled else utc(inserted_at),
            n=int(n) if resampled else None,
            raw_value=None if resampled else _num(raw_value),
            flag=None if resampled else str(flag),
        )
        for ts, value, nature, version, inserted_at, n, raw_value, flag in rows
    ]
    next_cursor = None
    if more and points:
        last = points[-1]
        payload: dict[str, Any] = {"ts": last.ts.isoformat()}
        if p.version == "all":
            payload.update(nature=last.nature, version=last.version)
        next_cursor = encode_cursor(payload)
    return MeasurementsResponse(
        source=p.source,
        metric=p.metric,
        interval=p.interval,
        agg=p.agg if resampled else None,
        version=p.version,
        nature=p.nature,
        as_of=p.as_of,
        start=start,
        end=end,
        count=len(points),
        next_cursor=next_cursor,
        points=points,
    )


# --- forecasts --------------------------------------------------------------------------------------
FORECAST_RUN_SQL = """
with chosen_run as (
    select issued_at, run_id
    from {db:Identifier}.forecasts
    where source = {source:String} and metric = {metric:String}
      and ({run_id:String} = '' or run_id = {run_id:String})
    order by issued_at desc, run_id desc
    limit 1
)
select run_id, model_version, issued_at, origin, quality, fallback_reason, interval_level,
       ts, horizon_steps, horizon_day, yhat, lower, upper, yhat_source, model_weight, weather_status
from {db:Identifier}.forecasts
where source = {source:String} and metric = {metric:String}
  and (issued_at, run_id) in (select issued_at, run_id from chosen_run)
order by ts
limit 1 by ts
"""


def forecast_run(store: Store, p: ForecastParams) -> ForecastRunResponse:
    """The latest forecast run (or ``run_id``) with its steps, optionally filtered by horizon."""
    what = f"forecast run {p.run_id!r}" if p.run_id else f"forecast run for {p.source}/{p.metric}"
    rows = store.query_rows(FORECAST_RUN_SQL, {"source": p.source, "metric": p.metric, "run_id": p.run_id or ""})
    if not rows:
        raise NotFoundError(f"no {what} yet")
    run_id, model_version, issued_at, origin, quality, fallback_reason, level = rows[0][:7]
    steps = [
        ForecastPoint(ts=utc(r[7]), horizon_steps=int(r[8]), horizon_day=int(r[9]), yhat=float(r[10]),
                      lower=_num(r[11]), upper=_num(r[12]),
                      yhat_source=str(r[13]), model_weight=round(float(r[14]), 4))
        for r in rows
    ]
    points = [
        s for s in steps
        if (p.horizon_day is None or s.horizon_day == p.horizon_day)
        and (p.max_horizon_steps is None or s.horizon_steps <= p.max_horizon_steps)
    ]
    return ForecastRunResponse(
        run_id=str(run_id), model_version=str(model_version), issued_at=utc(issued_at), origin=utc(origin),
        quality=str(quality), fallback_reason=str(fallback_reason), interval_level=round(float(level), 4),
        steps=len(steps), first_ts=steps[0].ts, last_ts=steps[-1].ts, weather_status=str(rows[0][15]),
        source=p.source, metric=p.metric, count=len(points), points=points,
    )


FORECAST_RUNS_SQL = """
with recent_runs as (
    select issued_at, run_id
    from {db:Identifier}.forecasts
    where source = {source:String} and metric = {metric:String} and issued_at >= {since:DateTime64(3, 'UTC')}
    group by issued_at, run_id
    order by issued_at desc, run_id desc
    limit {limit:UInt32}
)
select run_id, any(model_version), issued_at, min(origin), any(quality), any(fallback_reason),
       any(interval_level), uniqExact(ts), min(ts), max(ts), any(weather_status)
from {db:Identifier}.forecasts
where source = {source:String} and metric = {metric:String}
  and issued_at >= {since:DateTime64(3, 'UTC')}
  and (issued_at, run_id) in (select issued_at, run_id from recent_runs)
group by issued_at, run_id
order by issued_at desc, run_id desc
"""


def forecast_runs(store: Store, p: ForecastRunsParams) -> ForecastRunsResponse:
    """Headers of the most recent forecast runs (empty until the forecast stage has run)."""
    params = {"source": p.source, "metric": p.metric, "limit": p.limit}
    # forecasts is sorted by issue time per series: the newest issue is read from the last granules, and the page
    # from a window back from it (all runs ever grouped before: 9.7 M rows read at three years of hourly runs)
    newest = store.scalar("select issued_at from {db:Identifier}.forecasts where source = {source:String} and "
                          "metric = {metric:String} order by issued_at desc limit 1", params)
    rows = newest_page(store, FORECAST_RUNS_SQL, params, newest, p.limit, EPOCH)
    runs = [
        ForecastRunSummary(
            run_id=str(r[0]), model_version=str(r[1]), issued_at=utc(r[2]), origin=utc(r[3]), quality=str(r[4]),
            fallback_reason=str(r[5]), interval_level=round(float(r[6]), 4), steps=int(r[7]),
            first_ts=utc(r[8]), last_ts=utc(r[9]), weather_status=str(r[10]),
        )
        for r in rows
    ]
    return ForecastRunsResponse(source=p.source, metric=p.metric, count=len(runs), runs=runs)


VS_ACTUAL_SQL = f"""
with {ACTUALS_CTE}, latest_forecast_per_ts as (
    select ts,
           argMax(tuple(yhat, lower, upper, run_id, issued_at, horizon_steps, horizon_day), (issued_at, run_id)) as best
    from {{db:Identifier}}.forecasts
    where source = {{source:String}} and metric = {{metric:String}}
      and ts >= {{start:DateTime64(3, 'UTC')}} and ts < {{end:DateTime64(3, 'UTC')}}
      and issued_at >= {{start:DateTime64(3, 'UTC')}} - interval 40 day and issued_at < {{end:DateTime64(3, 'UTC')}}
      and ({{run_id:String}} != '' or issued_at <= ts)
      and ({{run_id:String}} = '' or run_id = {{run_id:String}})
      and ({{horizon_day:Int16}} < 0 or horizon_day = {{horizon_day:Int16}})
    group by ts
)
select lf.ts, a.actual, tupleElement(lf.best, 1), tupleElement(lf.best, 2), tupleElement(lf.best, 3),
       tupleElement(lf.best, 4), tupleElement(lf.best, 5), tupleElement(lf.best, 6), tupleElement(lf.best, 7)
from latest_forecast_per_ts as lf
left join actuals as a on a.ts = lf.ts
order by lf.ts
"""


def _accuracy(points: Sequence[VsActualPoint]) -> AccuracySummary:
    pairs = [(pt, pt.actual) for pt in points if pt.actual is not None]
    if not pairs:
        return AccuracySummary(n=0, mae=None, rmse=None, mape_pct=None, bias=None, interval_coverage=None)
    errors = [pt.yhat - actual for pt, actual in pairs]
    n = len(errors)
    pct = [abs(pt.yhat - actual) / abs(actual) for pt, actual in pairs if actual != 0]
    with_interval = [(pt, actual) for pt, actual in pairs if pt.lower is not None and pt.upper is not None]
    covered = sum(1 for pt, actual in with_interval if (pt.lower or 0.0) <= actual <= (pt.upper or 0.0))
    return AccuracySummary(
        n=n,
        mae=round(sum(abs(e) for e in errors) / n, 3),
        rmse=round(math.sqrt(sum(e * e for e in errors) / n), 3),
        mape_pct=round(100 * sum(pct) / len(pct), 4) if pct else None,
        bias=round(sum(errors) / n, 3),
        interval_coverage=round(covered / len(with_interval), 4) if with_interval else None,
    )


def forecast_vs_actual(store: Store, p: VsActualParams, latest: LatestFn | None = None) -> VsActualResponse:
    """Per target step of the period, the latest forecast issued before it next to the actual value."""
    default_end = None
    if p.end is None:
        last = (latest or partial(latest_ts, store))(p.source, p.metric)
        default_end = _floor(last, RAW_STEP) + RAW_STEP if last is not None else None
    start, end = _window(p.start, p.end, default_end, DEFAULT_WINDOW_DAYS, MAX_VS_ACTUAL_DAYS)
    rows = store.query_rows(
        VS_ACTUAL_SQL,
        {"source": p.source, "metric": p.metric, "start": start, "end": end, "run_id": p.run_id or "",
         "horizon_day": -1 if p.horizon_day is None else p.horizon_day},
    )
    points = []
    for ts, actual, yhat, lower, upper, run_id, issued_at, h_steps, h_day in rows:
        act = _num(actual)
        points.append(
            VsActualPoint(ts=utc(ts), actual=act, yhat=float(yhat), lower=_num(lower), upper=_num(upper),
                          error=None if act is None else round(float(yhat) - act, 3), run_id=str(run_id),
                          issued_at=utc(issued_at), horizon_steps=int(h_steps), horizon_day=int(h_day))
        )
    return VsActualResponse(source=p.source, metric=p.metric, start=start, end=end, run_id=p.run_id,
                            horizon_day=p.horizon_day, summary=_accuracy(points), points=points)


# --- detect outputs: anomalies, data quality, model metrics ----------------------------------------------
def _json_dict(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"raw": str(raw)}
    return value if isinstance(value, dict) else {"value": value}


def iso_utc(value: datetime) -> str:
    """An instant as the API writes it everywhere: ISO 8601 in UTC with ``Z``."""
    return utc(value).isoformat().replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


ANOMALIES_SQL = """
select ts, source, metric, kind, detector, severity, value, value_version, expected, lower, upper, score,
       threshold, model_version, forecast_run_id, detected_at, run_id, status, resolved_at, resolution
from {db:Identifier}.anomalies final
where source = {source:String} and metric = {metric:String}
  and ts >= {start:DateTime64(3, 'UTC')} and ts < {end:DateTime64(3, 'UTC')}
  and ({kind:String} = '' or kind = {kind:String})
  and ({severity:String} = '' or severity = {severity:String})
  and ({detector:String} = '' or detector = {detector:String})
  and ({status:String} = '' or status = {status:String})
  and ({paged:UInt8} = 0 or (ts, kind, detector) < ({after:DateTime64(3, 'UTC')}, {after_kind:String},
                                                   {after_detector:String}))
order by ts desc, kind desc, detector desc
limit {limit:UInt32}
"""


def anomalies(store: Store, p: AnomaliesParams, now: datetime) -> AnomaliesResponse:
    """Anomalies (latest state per point) in [start, end), newest first, a page of ``limit`` at a time (``next_cursor``
    for the next, older, page: a month of a noisy detector is thousands of points, and the first page used to be all
    there was, with nothing saying so); empty until detect has run."""
    start, end = _window(p.start, p.end, now, 30, MAX_RANGE_DAYS)
    after = decode_cursor(p.cursor) if p.cursor else {"ts": EPOCH}
    rows = store.query_rows(ANOMALIES_SQL, {
        "source": p.source, "metric": p.metric, "start": start, "end": end, "kind": p.kind or "",
        "severity": p.severity or "", "detector": p.detector or "", "status": p.status or "",
        "limit": p.limit + 1,  # one extra row tells whether there is a next page
        "paged": int(bool(p.cursor)),  # cursor= (empty) is the first page, as on /measurements
        "after": after["ts"], "after_kind": str(after.get("kind", "")),
        "after_detector": str(after.get("detector", "")),
    })
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    items = [
        Anomaly(ts=utc(r[0]), source=str(r[1]), metric=str(r[2]), kind=str(r[3]), detector=str(r[4]),
                severity=str(r[5]), value=_num(r[6]), value_version=int(r[7]), expected=_num(r[8]), lower=_num(r[9]),
                upper=_num(r[10]), score=_num(r[11]), threshold=_num(r[12]), model_version=str(r[13]),
                forecast_run_id=str(r[14]), detected_at=utc(r[15]), run_id=str(r[16]), status=str(r[17]),
                resolved_at=utc(r[18]) if r[18] is not None else None, resolution=str(r[19]))
        for r in rows
    ]
    last = items[-1] if more and items else None
    next_cursor = (encode_cursor({"ts": last.ts.isoformat(), "kind": last.kind, "detector": last.detector})
                   if last is not None else None)
    return AnomaliesResponse(start=start, end=end, count=len(items), next_cursor=next_cursor, items=items)


DATA_QUALITY_SQL = """
with chosen_run as (
    select run_id, max(checked_at) as last_checked
    from {db:Identifier}.data_quality
    where source = {source:String} and metric = {metric:String}
      and ({run_id:String} = '' or run_id = {run_id:String})
    group by run_id
    order by last_checked desc, run_id desc
    limit 1
)
select checked_at, run_id, source, metric, check, scope, value, expected, status, details
from {db:Identifier}.data_quality
where source = {source:String} and metric = {metric:String}
  and run_id in (select run_id from chosen_run)
order by check, scope
"""


def data_quality(store: Store, p: DataQualityParams) -> DataQualityResponse:
    """The checks of the latest detect run (or ``run_id``), optionally one check or one status."""
    rows = store.query_rows(DATA_QUALITY_SQL, {"source": p.source, "metric": p.metric, "run_id": p.run_id or ""})
    if p.run_id and not rows:  # as /forecasts?run_id= answers (README: 404 "no such run")
        raise NotFoundError(f"no data-quality checks of run {p.run_id!r} for {p.source}/{p.metric}")
    checks = [
        QualityCheck(checked_at=utc(r[0]), run_id=str(r[1]), source=str(r[2]), metric=str(r[3]), check=str(r[4]),
                     scope=str(r[5]), value=float(r[6]), expected=_num(r[7]), status=str(r[8]),
                     details=_jsonable(_json_dict(r[9])))
        for r in rows
    ]
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.status] = counts.get(c.status, 0) + 1
    items = [c for c in checks
             if (p.check is None or c.check == p.check) and (p.status is None or c.status == p.status)]
    return DataQualityResponse(
        run_id=checks[0].run_id if checks else None,
        checked_at=max(c.checked_at for c in checks) if checks else None, status_counts=counts,
        count=len(items[: p.limit]), items=items[: p.limit],
    )


MODEL_METRICS_SQL = """
with newest as (
    -- the newest computation of each measure from the narrow key columns first: reading every row's details
    -- (FINAL) before `limit 1 by` took 0.6 s and 350 MiB at three years of simulated history
    select kind as n_kind, name as n_name, horizon_day as n_horizon_day, scope as n_scope,
           max(computed_at) as n_computed_at
    from {db:Identifier}.model_metrics
    where source = {source:String} and metric = {metric:String}
      and ({kind:String} = '' or kind = {kind:String})
    group by kind, name, horizon_day, scope
)
select computed_at, run_id, kind, name, horizon_day, scope, model_version, window_start, window_end, value,
       threshold, n, breached, details
from {db:Identifier}.model_metrics final
where source = {source:String} and metric = {metric:String}
  and ({kind:String} = '' or kind = {kind:String})
  and computed_at >= (select min(n_computed_at) from newest)
  and (kind, name, horizon_day, scope, computed_at) in
      (select n_kind, n_name, n_horizon_day, n_scope, n_computed_at from newest)
order by computed_at desc
limit 1 by kind, name, horizon_day, scope
limit {limit:UInt32}
"""


def model_metrics(store: Store, p: ModelMetricsParams) -> ModelMetricsResponse:
    """Latest value of each model measure (detect's drift/accuracy/coverage/PSI and retrain requests)."""
    rows = store.query_rows(MODEL_METRICS_SQL, {"source": p.source, "metric": p.metric, "kind": p.kind or "",
                                                "limit": p.limit})
    items = [
        ModelMetric(computed_at=utc(r[0]), run_id=str(r[1]), kind=str(r[2]), name=str(r[3]), horizon_day=int(r[4]),
                    scope=str(r[5]), model_version=str(r[6]), window_start=utc(r[7]), window_end=utc(r[8]),
                    value=float(r[9]), threshold=_num(r[10]), n=int(r[11]), breached=bool(r[12]),
                    details=_jsonable(_json_dict(r[13])))
        for r in rows
    ]
    items.sort(key=lambda m: (m.kind, m.name, m.horizon_day, m.scope))
    return ModelMetricsResponse(source=p.source, metric=p.metric, count=len(items), items=items)


# --- pipeline runs ----------------------------------------------------------------------------------
# pipeline_runs grows by every invocation (~800 runs a day) and is never pruned: a read that aggregated all of it
# (the argMax of every run's details) took 5.2 s and 1.7 GiB for /runs/latest on three years of simulated history.
# Each read now aggregates only the rows of the runs it answers with.
_RUN_COLUMNS = """
    select function, run_id, argMax(trigger, updated_at), started_at, argMax(finished_at, updated_at),
           argMax(status, updated_at) as status_, argMax(rows_in, updated_at), argMax(rows_out, updated_at),
           argMax(error, updated_at), argMax(details, updated_at)
    from {db:Identifier}.pipeline_runs
"""

RUNS_SQL = _RUN_COLUMNS + """
    where ({function:String} = '' or function = {function:String})
      and ({run_id:String} = '' or run_id = {run_id:String})
      and started_at >= greatest({start:DateTime64(3, 'UTC')}, {since:DateTime64(3, 'UTC')})
      and started_at < {end:DateTime64(3, 'UTC')}
      {status_filter}
    group by function, started_at, run_id
    having {status:String} = '' or status_ = {status:String}
    order by started_at desc, run_id desc
    limit {limit:UInt32}
"""

# with a status: a run ends with a row of its final status, so only runs that have one can qualify (a rare status,
# e.g. failed, otherwise grouped every run of the range to find none: 1.2 s at three years of simulated history)
RUNS_STATUS_FILTER = """and (function, started_at, run_id) in (
          select function, started_at, run_id from {db:Identifier}.pipeline_runs
          where status = {status:String}
            and ({function:String} = '' or function = {function:String})
            and started_at >= greatest({start:DateTime64(3, 'UTC')}, {since:DateTime64(3, 'UTC')})
            and started_at < {end:DateTime64(3, 'UTC')})"""

NEWEST_RUN_START_SQL = """
select max(started_at) from {db:Identifier}.pipeline_runs
where ({function:String} = '' or function = {function:String})
  and ({run_id:String} = '' or run_id = {run_id:String})
  and started_at >= {start:DateTime64(3, 'UTC')} and started_at < {end:DateTime64(3, 'UTC')}
"""

# the newest start of each function (two narrow columns), then the runs that started then
LATEST_RUNS_SQL = _RUN_COLUMNS + """
    where (function, started_at) in (select function, max(started_at) from {db:Identifier}.pipeline_runs
                                     group by function)
    group by function, started_at, run_id
    order by started_at desc, run_id desc
    limit 1 by function
"""

# windows back from the newest row, tried in turn until one holds a full page (then it holds the newest page: every
# row outside it is older), the whole requested range last (a filter on a rare status reads it all anyway)
WIDENING_DAYS = (1, 31)


def _run_row(r: Sequence[Any]) -> RunRow:
    return RunRow(function=str(r[0]), run_id=str(r[1]), trigger=str(r[2]), started_at=utc(r[3]),
                  finished_at=utc(r[4]) if r[4] is not None else None, status=str(r[5]), rows_in=int(r[6]),
                  rows_out=int(r[7]), error=str(r[8]), details=_jsonable(_json_dict(r[9])))


def newest_page(store: Store, sql: str, params: dict[str, Any], newest: datetime | None, limit: int,
                start: datetime) -> list[tuple[Any, ...]]:
    """The ``limit`` newest rows of ``sql`` (which bounds its time column from below by ``{since}``), read from
    windows of :data:`WIDENING_DAYS` back from ``newest`` until one holds ``limit`` rows, else from ``start``."""
    if newest is None:
        return []
    rows: list[tuple[Any, ...]] = []
    for days in WIDENING_DAYS:
        since = utc(newest) - timedelta(days=days)
        if since <= start:
            break
        rows = store.query_rows(sql, {**params, "since": since})
        if len(rows) >= limit:
            return rows
    return store.query_rows(sql, {**params, "since": start})


def runs(store: Store, p: RunsParams) -> RunsResponse:
    """pipeline_runs history (final state of each run), most recent first."""
    start, end = p.start or EPOCH, p.end or FAR_FUTURE
    if start >= end:
        raise BadRequestError("start must be before end")
    params = {"function": p.function or "", "status": p.status or "", "run_id": p.run_id or "", "start": start,
              "end": end, "limit": p.limit}
    newest = store.scalar(NEWEST_RUN_START_SQL, params)
    sql = RUNS_SQL.replace("{status_filter}", RUNS_STATUS_FILTER if p.status else "")
    rows = newest_page(store, sql, params, newest, p.limit, start)
    items = [_run_row(r) for r in rows]
    return RunsResponse(count=len(items), runs=items)


def latest_runs(store: Store) -> RunsResponse:
    """The most recent run of every function."""
    items = sorted((_run_row(r) for r in store.query_rows(LATEST_RUNS_SQL)), key=lambda r: r.function)
    return RunsResponse(count=len(items), runs=items)


# --- CSV --------------------------------------------------------------------------------------------
def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """RFC 4180 CSV with ISO 8601 UTC timestamps and empty cells for nulls."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else _jsonable(v) for v in row])
    return buf.getvalue().encode()


# --- model registry ---------------------------------------------------------------------------------
def model_registry(settings: Settings, series: str) -> ModelsResponse:
    """Versions and the current pointer of one series from the artifact store; while the series has no
    model, an empty registry (``available: false``)."""
    try:
        registry = get_artifact_store(settings)
        versions = [_jsonable(dict(m)) for m in (registry.list_models(series) or [])]
        current = registry.current(series)
    except PowerSenseError:
        raise
    except Exception as exc:  # boto3/filesystem errors: one typed error (503) for the caller
        raise ArtifactError(f"artifact store unavailable: {type(exc).__name__}") from exc
    return ModelsResponse(
        series=series,
        available=bool(versions) or current is not None,
        current=_jsonable(dict(current)) if current is not None else None,
        models=versions,
    )
