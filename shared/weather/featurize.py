"""Weather features for production: featurize writes them (``weather_features``), forecast reads them.

``plan → compute → write``, called by the featurize stage (:func:`shared.features.run_featurize`) after the load
features:

* **plan** (:func:`plan_weather`) — the watermark is the newest ``measurements.inserted_at`` of the weather series
  already featurized (``weather_features.source_inserted_max``). Weather measurements inserted after it *and at or
  before the run's time* are new data; none → nothing is written (a re-run, or a run between two poll-weather
  ticks, writes nothing). The past window to recompute starts at the oldest realised instant that changed (a
  late archive day), at the newest realised instant (the hours after it are filled from the forecast and move
  with every forecast), and at least :data:`PAST_KEEP` before the run (so each run's rows alone hold the path a
  forecast issued from it needs, even when the load data is a few hours late).
* **compute** (:func:`weather_path`, pure) — the national temperature path *as known at the run*, through the one
  definition :func:`shared.weather.features.known_at` (``derive`` inside): realised temperature strictly before
  the run (Open-Meteo's archive where stored, else the shipped Enedis series; hours after the newest realised
  instant: the latest forecast for them), the latest stored forecast from the run on. Everything is read as of
  the run (``load_series(..., as_of=now)``): a value stored later can never enter it.
* **write** — one row per grid step with ``as_of`` (the run), ``part`` (past | forecast), ``temp_source`` and
  ``issued_at`` (the newest forecast version's issue time known then: the forecast stage's staleness check).

Readers (the forecast stage): :func:`read_weather_run` (the newest run with ``as_of <= now``: the weather the
forecast uses) and :func:`read_weather_history` (per step the past row of the newest run: training and the
model's history).

Realised sources and smoothing. The same definition of "national temperature" is Open-Meteo's archive at the
weighted locations (``weather-backfill --archive``); the shipped Enedis series is used only where no archive value
is stored. Every path is derived with ``smoothed_input=False`` (one definition for realised and forecast values):
the Enedis series, already smoothed by Enedis, is then smoothed once more — consistent between training and the
demo (whose replayed "forecast" is that same series) but not with real raw forecasts; a production install loads
the archive (README, Weather).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from shared.logs import log_event
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import to_utc
from shared.weather import (
    ENEDIS_REALISED_METRIC,
    ENEDIS_SOURCE,
    FORECAST_METRIC,
    REALISED_METRIC,
    SOURCE,
)
from shared.weather.features import SMOOTHING_TAU_H, WEATHER_COLUMNS, known_at

log = logging.getLogger(__name__)

# each run writes at least this much past: a forecast issued from the run may start up to
# forecast_max_staleness_hours (6 h) before it, and the model's history reads the last days' weather
PAST_KEEP = pd.Timedelta(days=2)
# the smoothing's memory: values this far before the window are read so its first step is settled
# (exp(-10) ≈ 5e-5 of the initial state left after 10 time constants)
WARMUP = pd.Timedelta(hours=10 * SMOOTHING_TAU_H)
# (source, metric, temp_source label) of realised temperature, in priority order
REALISED_SOURCES: list[tuple[str, str, str]] = [
    (SOURCE, REALISED_METRIC, "open_meteo_realised"),
    (ENEDIS_SOURCE, ENEDIS_REALISED_METRIC, "enedis_realised"),
]
FORECAST_LABEL = "open_meteo_forecast"
# the weather measurements whose arrival makes a new run
WATCHED: list[tuple[str, str]] = [(s, m) for s, m, _ in REALISED_SOURCES] + [(SOURCE, FORECAST_METRIC)]
COLUMNS = ["resolution_min", "as_of", "ts", "part", "temp_source", *WEATHER_COLUMNS, "issued_at",
           "source_inserted_max", "computed_at"]


@dataclass
class WeatherPlan:
    """What one weather featurize run computes: the path as known at ``as_of`` for ``ts >= start``."""

    as_of: pd.Timestamp
    start: pd.Timestamp
    watermark: pd.Timestamp
    new_watermark: pd.Timestamp
    new_rows: int


def _watched_sql() -> str:
    return " or ".join(f"(source = '{s}' and metric = '{m}')" for s, m in WATCHED)


def _ts(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = to_utc(value)
    return None if ts.year <= 1970 else ts


def plan_weather(store: Store, settings: Settings, now: datetime) -> WeatherPlan | None:
    """The run to make at ``now``, or None when no weather measurement arrived since the last one."""
    as_of = to_utc(now)
    wm = _ts(store.scalar(
        "select max(source_inserted_max) from {db:Identifier}.weather_features where resolution_min = {r:UInt16}",
        {"r": settings.forecast_resolution_min}))
    watermark = wm if wm is not None else pd.Timestamp(0, tz="UTC")
    row = store.query_rows(
        f"select max(inserted_at), count(), minIf(ts, metric != '{FORECAST_METRIC}') "
        f"from {{db:Identifier}}.measurements where ({_watched_sql()}) "
        "and inserted_at > {wm:DateTime64(3, 'UTC')} and inserted_at <= {now:DateTime64(3, 'UTC')}",
        {"wm": watermark.to_pydatetime(), "now": as_of.to_pydatetime()})
    if not row or not row[0][1]:
        return None
    new_wm, count, changed_realised = row[0]
    start = as_of - PAST_KEEP
    changed = _ts(changed_realised) if int(count) else None
    if changed is not None and wm is not None:
        start = min(start, changed)
    if wm is None:  # first run: the whole realised history (bounded like the load features)
        first = _first_realised(store)
        if first is not None:
            start = min(start, first)
    newest_realised = _newest_realised(store, as_of)
    if newest_realised is not None:
        start = min(start, newest_realised)
    lookback = as_of - pd.Timedelta(days=settings.features_lookback_days)
    step = f"{settings.forecast_resolution_min}min"
    start = max(start, lookback).floor(step)
    return WeatherPlan(as_of, start, watermark, to_utc(new_wm), int(count))


def _first_realised(store: Store) -> pd.Timestamp | None:
    return _ts(store.scalar(
        "select min(ts) from {db:Identifier}.measurements where "
        + " or ".join(f"(source = '{s}' and metric = '{m}')" for s, m, _ in REALISED_SOURCES)
        + " having count() > 0"))


def _newest_realised(store: Store, as_of: pd.Timestamp) -> pd.Timestamp | None:
    return _ts(store.scalar(
        "select max(ts) from {db:Identifier}.measurements where ("
        + " or ".join(f"(source = '{s}' and metric = '{m}')" for s, m, _ in REALISED_SOURCES)
        + ") and ts < {a:DateTime64(3, 'UTC')} and inserted_at <= {a:DateTime64(3, 'UTC')} having count() > 0",
        {"a": as_of.to_pydatetime()}))


# --- compute (pure) ---------------------------------------------------------------------------------------
def _near(ts: pd.DatetimeIndex, taken: pd.DatetimeIndex, within: pd.Timedelta) -> np.ndarray:
    """For each instant of ``ts``: is an instant of ``taken`` (sorted) within ``within`` of it?"""
    if len(taken) == 0 or len(ts) == 0:
        return np.zeros(len(ts), dtype=bool)
    t = taken.as_unit("ns").asi8
    x = ts.as_unit("ns").asi8
    pos = np.searchsorted(t, x)
    left = np.abs(x - t[np.clip(pos - 1, 0, len(t) - 1)])
    right = np.abs(t[np.clip(pos, 0, len(t) - 1)] - x)
    return np.minimum(left, right) <= within.value


def split_at(as_of: pd.Timestamp) -> pd.Timestamp:
    """Where a run's path turns from the past (realised) to the forecast: the hour ``as_of`` falls in."""
    return to_utc(as_of).floor("h")


def combine_realised(sources: list[tuple[str, pd.DataFrame]], forecast: pd.DataFrame,
                     origin: pd.Timestamp, resolution_min: int) -> pd.DataFrame:
    """The temperature known before ``origin``: ``ts, temp_degc, temp_source``.

    ``sources``: (label, ``ts, value``) in priority order — a later source fills only where no earlier one has a
    value within the hour (so the hourly archive's half-hours are interpolated from its own hours, never taken
    from the 30-min Enedis series: two definitions are never interleaved).
    Grid steps after the newest realised instant (the archive is days behind) take the ``forecast`` (hourly
    ``ts, value``, as known at the run), put on the grid with the forecast's own hours on both sides of
    ``origin`` (:func:`shared.weather.parse.to_grid`), so the step just before ``origin`` is known too.
    """
    from shared.weather.parse import to_grid

    parts: list[pd.DataFrame] = []
    taken = pd.DatetimeIndex([], tz="UTC")
    for label, frame in sources:
        f = frame.dropna(subset=["value"])
        f = f[pd.DatetimeIndex(f["ts"]) < origin]
        f = f[~_near(pd.DatetimeIndex(f["ts"]), taken, pd.Timedelta(hours=1))]
        if len(f):
            parts.append(pd.DataFrame({"ts": pd.DatetimeIndex(f["ts"]), "temp_degc": f["value"].astype(float),
                                       "temp_source": label}))
            taken = taken.union(pd.DatetimeIndex(f["ts"]))
    last = taken.max() if len(taken) else None
    fill = forecast.dropna(subset=["value"])
    if len(fill):
        lo = last + pd.Timedelta(minutes=1) if last is not None else pd.DatetimeIndex(fill["ts"]).min()
        fill = to_grid(fill, lo, origin, resolution_min).dropna(subset=["value"]) if lo < origin else fill.iloc[:0]
    if len(fill):
        parts.append(pd.DataFrame({"ts": pd.DatetimeIndex(fill["ts"]), "temp_degc": fill["value"].astype(float),
                                   "temp_source": FORECAST_LABEL}))
    if not parts:
        return pd.DataFrame({"ts": pd.DatetimeIndex([], tz="UTC"), "temp_degc": np.array([], float),
                             "temp_source": np.array([], object)})
    return pd.concat(parts, ignore_index=True).sort_values("ts").reset_index(drop=True)


def weather_path(realised: pd.DataFrame, forecast: pd.DataFrame, as_of: pd.Timestamp, start: pd.Timestamp,
                 resolution_min: int) -> pd.DataFrame:
    """Pure: the weather features as known at ``as_of`` on the grid from ``start``: ``ts, part, temp_source`` +
    :data:`WEATHER_COLUMNS`. ``realised`` from :func:`combine_realised`, ``forecast`` (``ts, value``) the forecast
    as known at ``as_of`` (both read as of ``as_of``).

    The split between the two (``known_at``'s origin) is ``as_of``'s hour (:func:`split_at`): the forecast's
    hourly values are interpolated onto the grid only between two forecast hours, so with the split at 10:20 the
    10:30 step would lie between a realised 10:00 and a forecast 11:00 and stay unknown. The forecast's 10:00 value
    is known at 10:20, so nothing later than ``as_of`` is read either way.
    """
    origin = split_at(as_of)
    fc = forecast.rename(columns={"value": "temp_degc"})[["ts", "temp_degc"]]
    path = known_at(realised[["ts", "temp_degc"]], fc, origin, resolution_min=resolution_min)
    path = path[path["ts"] >= start].reset_index(drop=True)
    past = path["ts"] < origin
    path.insert(1, "part", np.where(past, "past", "forecast"))
    # which source each past step came from: the one of the newest input instant at or before it
    src = realised[["ts", "temp_source"]].assign(ts=pd.DatetimeIndex(realised["ts"]).as_unit("ns")).sort_values("ts")
    grid = pd.DataFrame({"ts": pd.DatetimeIndex(path["ts"]).as_unit("ns")})
    labels = pd.merge_asof(grid, src, on="ts", direction="backward")["temp_source"]
    path.insert(2, "temp_source", np.where(past, labels.fillna("").to_numpy(dtype=object), FORECAST_LABEL))
    path.loc[path["temp_degc"].isna(), "temp_source"] = ""
    return path


# --- the stage step -----------------------------------------------------------------------------------------
def load_temperature_forecast(
    store: Store, start: datetime, end: datetime, as_of: datetime, resolution_min: int | None = None,
) -> pd.DataFrame:
    """The national temperature forecast for ``[start, end)`` as known at ``as_of`` (no look-ahead): ``ts, value``.

    Only versions inserted at or before ``as_of`` are read (``load_series(..., as_of=…)``).  With
    ``resolution_min`` the hourly values are put on that grid (:func:`shared.weather.parse.to_grid`).
    """
    from shared.series import load_series
    from shared.weather.parse import to_grid

    hourly = load_series(store, SOURCE, FORECAST_METRIC, start, end + pd.Timedelta(hours=1), as_of=as_of)
    frame = hourly[["ts", "value"]]
    if resolution_min is None:
        return frame[frame["ts"] < to_utc(end)].reset_index(drop=True)
    return to_grid(frame, to_utc(start), to_utc(end), resolution_min)


def read_known_inputs(store: Store, start: pd.Timestamp, as_of: pd.Timestamp,
                      end: pd.Timestamp) -> tuple[list[tuple[str, pd.DataFrame]], pd.DataFrame]:
    """What was known at ``as_of`` (versions inserted, and verdicts made, at or before it): each realised source's
    temperature in ``[start, as_of)`` as :func:`combine_realised`'s ``(label, ts, value)`` in priority order, and the
    temperature forecast (``ts, value``) in ``[start, end)``. Read by featurize's runs and by the real-forecast
    backtest's provider alike."""
    from shared.series import load_series

    lo, at = to_utc(start).to_pydatetime(), to_utc(as_of).to_pydatetime()
    sources = [(label, load_series(store, source, metric, lo, at, as_of=at)[["ts", "value"]])
               for source, metric, label in REALISED_SOURCES]
    # the one reader of "the temperature forecast as known then" (its versions inserted by as_of)
    return sources, load_temperature_forecast(store, lo, to_utc(end).to_pydatetime(), as_of=at)


def featurize_weather(store: Store, settings: Settings, now: datetime) -> dict[str, Any]:
    """Plan → compute → write one weather featurize run as of ``now``; returns run details (``rows_out``)."""
    plan = plan_weather(store, settings, now)
    if plan is None:
        return {"weather_up_to_date": True, "rows_out": 0}
    as_of, res = plan.as_of, settings.forecast_resolution_min
    at = as_of.to_pydatetime()
    horizon = as_of + pd.Timedelta(days=settings.weather_forecast_days + 1)
    sources, forecast = read_known_inputs(store, plan.start - WARMUP, as_of, horizon)
    realised = combine_realised(sources, forecast, split_at(as_of), res)
    path = weather_path(realised, forecast, as_of, plan.start, res)
    issued = store.scalar(
        "select max(inserted_at) from {db:Identifier}.measurements where source = {s:String} "
        "and metric = {m:String} and inserted_at <= {a:DateTime64(3, 'UTC')} having count() > 0",
        {"s": SOURCE, "m": FORECAST_METRIC, "a": at})
    issued_at = _ts(issued)
    details: dict[str, Any] = {
        "weather_as_of": as_of.isoformat(), "weather_window_start": plan.start.isoformat(),
        "weather_watermark": plan.watermark.isoformat(), "weather_new_watermark": plan.new_watermark.isoformat(),
        "weather_new_values": plan.new_rows,
        "weather_issued_at": issued_at.isoformat() if issued_at is not None else None,
    }
    if path.empty:
        # new weather data, but none of it on or after the window (e.g. only old realised values outside the
        # lookback): nothing to write; the watermark stays, which is harmless (the same check runs next time)
        details.update(rows_out=0, weather_rows=0)
        return details
    rows = path.assign(resolution_min=res, as_of=as_of,
                       issued_at=issued_at.to_pydatetime() if issued_at is not None else None,
                       source_inserted_max=plan.new_watermark.to_pydatetime(), computed_at=datetime.now(UTC))
    rows = rows[COLUMNS]
    written = store.insert_df("weather_features", rows)
    fc_rows = rows[rows["part"] == "forecast"]
    details.update(
        rows_out=written, weather_rows=written,
        weather_past_rows=int((rows["part"] == "past").sum()),
        weather_forecast_end=(fc_rows.loc[fc_rows["temp_degc"].notna(), "ts"].max().isoformat()
                              if fc_rows["temp_degc"].notna().any() else None),
        weather_sources={str(k): int(v) for k, v in rows["temp_source"].value_counts().items() if k},
    )
    log_event(log, "weather_features_written", **{k: v for k, v in details.items() if k != "weather_sources"})
    return details


# --- readers (the forecast stage) ----------------------------------------------------------------------------
@dataclass
class WeatherRun:
    """The newest weather featurize run known at a time: its path (``ts`` + WEATHER_COLUMNS) and provenance."""

    as_of: pd.Timestamp
    issued_at: pd.Timestamp | None
    path: pd.DataFrame


def read_weather_run(store: Store, settings: Settings, now: datetime, start: pd.Timestamp) -> WeatherRun | None:
    """The newest run with ``as_of <= now`` (its rows with ``ts >= start``), or None when featurize wrote none."""
    at = to_utc(now).to_pydatetime()
    as_of = _ts(store.scalar(
        "select max(as_of) from {db:Identifier}.weather_features where resolution_min = {r:UInt16} "
        "and as_of <= {a:DateTime64(3, 'UTC')} having count() > 0",
        {"r": settings.forecast_resolution_min, "a": at}))
    if as_of is None:
        return None
    cols = ", ".join(WEATHER_COLUMNS)
    df = store.query_df(
        f"select ts, part, temp_source, {cols}, issued_at from {{db:Identifier}}.weather_features final "
        "where resolution_min = {r:UInt16} and as_of = {o:DateTime64(3, 'UTC')} and ts >= {s:DateTime64(3, 'UTC')} "
        "order by ts",
        {"r": settings.forecast_resolution_min, "o": as_of.to_pydatetime(), "s": to_utc(start).to_pydatetime()})
    issued = _ts(df["issued_at"].dropna().iloc[0]) if len(df) and df["issued_at"].notna().any() else None
    return WeatherRun(as_of, issued, _typed(df))


def read_weather_history(store: Store, settings: Settings, start: pd.Timestamp, end: pd.Timestamp,
                         now: datetime, realised_only: bool = False) -> pd.DataFrame:
    """Per grid step in ``[start, end)``: the past row of the newest run with ``as_of <= now`` (``ts`` +
    WEATHER_COLUMNS + ``temp_source``). ``realised_only`` leaves out steps whose temperature was a forecast
    (the hours after the newest realised one when that run was made)."""
    cols = ", ".join(f"argMax({c}, as_of) as {c}" for c in [*WEATHER_COLUMNS, "temp_source"])
    df = store.query_df(
        f"select ts, {cols} from {{db:Identifier}}.weather_features final "
        "where resolution_min = {r:UInt16} and part = 'past' and as_of <= {a:DateTime64(3, 'UTC')} "
        "and ts >= {s:DateTime64(3, 'UTC')} and ts < {e:DateTime64(3, 'UTC')} group by ts order by ts",
        {"r": settings.forecast_resolution_min, "a": to_utc(now).to_pydatetime(),
         "s": to_utc(start).to_pydatetime(), "e": to_utc(end).to_pydatetime()})
    df = _typed(df)
    if realised_only and len(df):
        df = df[df["temp_source"] != FORECAST_LABEL].reset_index(drop=True)
    return df


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        out = pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]")})
        for c in WEATHER_COLUMNS:
            out[c] = pd.Series(dtype=float)
        out["temp_source"] = pd.Series(dtype=object)
        return out
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for c in WEATHER_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df
