"""Features of the forecast series on a regular grid: pure functions over DataFrames + thin I/O.

``plan → compute → write``:

* :func:`series_grid` is *the* grid every consumer uses — featurize (written to ``features``), the forecast
  stage (which reads ``features``) and the offline evaluation (``make evaluate``, from CSV files): the series
  through the training-data gate (``shared/forecasting/gate.py``; a rejected value becomes a gap, flagged
  ``implausible`` with its reason), then on the grid by :func:`build_grid`. One function, so the three
  agree by construction.
* :func:`build_grid` puts the latest values of the series on a regular UTC grid (15/30/60 min).
  Grid values are the measurements *at* the grid instants (2012–2019 history has consumption only
  at :00/:30, so averaging sub-steps would mix resolutions). Short gaps (≤ ``max_interp_steps``)
  are linearly interpolated and flagged ``interpolated``; longer gaps stay missing (``missing``).
* :func:`calendar_features` — Europe/Paris local time, day of week, month, French public holidays
  (``holidays``), bridge days, DST-transition days, summer-time flag. French school holidays are not
  included: no source shipped with the product or in the ``holidays`` package covers them.
* :func:`temperature_features` — Enedis smoothed *normal* temperature (a climatology by local
  day-of-year and time of day, so it exists for any future date) with heating/cooling degrees,
  and the *observed* smoothed temperature where the shipped files have it (NULL otherwise).
* :func:`compute_features` — lags (1 step, 1 day, 1 week) and past-only rolling mean/std (1 day,
  1 week), i.e. every lag/rolling column at ``ts`` uses values strictly before ``ts``.
* :func:`featurize` — the incremental stage: a watermark (``source_inserted_max``, the newest
  ``measurements.inserted_at`` already featurized) finds the ts range of new or revised data; only
  the window it affects (its own steps and up to one week after, because of the lags/rolling
  windows) is recomputed and written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from shared import clock
from shared.calendar import TZ, bridge_days, holiday_names, is_dst_transition, is_summer_time
from shared.detection.events import DETECT_RESOLUTION_MIN  # the grid detect reads (defined there)
from shared.forecasting.gate import gate
from shared.lease import MEASUREMENTS_WRITER, Lease
from shared.logs import log_event
from shared.runs import Run
from shared.settings import REPO_ROOT, Settings
from shared.store import Store
from shared.timeutil import to_utc
from shared.weather.features import (  # degree-day bases: one definition, learnt there
    CDD_BASE_C,
    HDD_BASE_C,
    interpolate_on,
)

log = logging.getLogger(__name__)

WEATHER_DIR = REPO_ROOT / "data" / "weather"
# How long featurize waits for the measurements lease before skipping: an upsert-version pass takes about a second,
# a history bootstrap minutes (the next run, 15 minutes later, catches up).
LEASE_WAIT_S = 30.0

FEATURE_COLUMNS = [
    "value", "interpolated", "missing", "implausible", "implausible_reason",
    "observed", "observed_flag", "observed_version", "lag_1", "lag_1d", "lag_1w",
    "roll_mean_1d", "roll_std_1d", "roll_mean_1w", "roll_std_1w",
    "local_minute", "dow", "month", "is_holiday", "holiday_name", "is_bridge", "is_dst_transition",
    "is_summer_time", "temp_normal_degc", "temp_observed_degc", "hdd_normal", "cdd_normal",
]




def feature_resolutions(settings: Settings) -> list[int]:
    """The grids featurize writes: the forecast's step, then detect's (once when they are equal)."""
    return list(dict.fromkeys([settings.forecast_resolution_min, DETECT_RESOLUTION_MIN]))


# --- grid -------------------------------------------------------------------------------------
GRID_STEPS_MIN = (15, 30, 60)  # the forecast grid's possible steps (Settings.forecast_resolution_min)


def series_step_minutes(ts: pd.Series | pd.DatetimeIndex) -> float | None:
    """A series' own step: the most common gap between its consecutive distinct timestamps, in minutes (None
    with fewer than two); gaps and a DST day do not move it."""
    idx = pd.DatetimeIndex(ts).unique().sort_values()
    if len(idx) < 2:
        return None
    gaps = pd.Series(idx[1:] - idx[:-1])
    return float(gaps.mode().iloc[0] / pd.Timedelta(minutes=1))


def grid_step_for(step_min: float | None, requested: int | None, default: int) -> int:
    """The forecast grid's step for a series whose own step is ``step_min`` minutes.

    A grid step is *filled* by the series when it is a whole multiple of the series' step: the grid takes the
    series' values at its own instants (no averaging), so a finer grid — an hourly series on a 30-minute grid —
    would have points that never get a value (half of the history missing, forecasts at instants the series never
    has). ``requested`` (``--resolution``) is used when the series fills it; ``None`` takes ``default`` (the
    configured step) when the series fills it, else the finest step of :data:`GRID_STEPS_MIN` it fills (60 for an
    hourly series). ``ValueError`` saying why, when the step cannot be filled.
    """
    def fills(grid: int) -> bool:
        return step_min is None or (grid >= step_min and (grid / step_min).is_integer())

    if requested is None:
        for grid in (default, *GRID_STEPS_MIN):
            if fills(grid):
                return grid
        raise ValueError(f"the series' step is {step_min:g} min: none of the forecast grid's steps "
                         f"({'/'.join(map(str, GRID_STEPS_MIN))} min) is a whole multiple of it")
    if not fills(requested):
        raise ValueError(f"the series' step is {step_min:g} min: a {requested}-minute grid would have points without "
                         f"a value (choose a resolution that is a whole multiple of {step_min:g} min)")
    return requested


def grid_phase(ts: pd.Series | pd.DatetimeIndex, resolution_min: int) -> pd.Timedelta:
    """How far past whole multiples of the grid's step (since the Unix epoch) a series' instants lie: the most
    common offset among them (0 for none). An hourly series of a zone half an hour off UTC (India, UTC+5:30),
    published at its local hours, lies at :30 UTC, where an hourly grid on the hour would hold no value.

    Offsets about as common as the most common one (:data:`PHASE_TIE_SHARE` of its count) tie, and the smallest
    wins: a quarter-hourly series fills every offset of a 30- or 60-minute grid equally, and a few missing values
    must not move its grid (and the backtest's origins) to :15 / :45."""
    idx = pd.DatetimeIndex(ts)
    if not len(idx):
        return pd.Timedelta(0)
    counts = pd.Series(idx.asi8 % pd.Timedelta(minutes=resolution_min).value).value_counts()
    return pd.Timedelta(int(counts.index[counts >= PHASE_TIE_SHARE * counts.max()].min()))


# on a 30-min grid, 90 days of quarter-hours (4 320 at each offset) move only with more than 432 :00 values missing
# than :15; a series split nearly evenly between two phases (52 / 48 %) takes the smaller offset
PHASE_TIE_SHARE = 0.9


def floor_to_grid(instants: pd.DatetimeIndex, resolution_min: int, phase: pd.Timedelta = pd.Timedelta(0)
                  ) -> pd.DatetimeIndex:
    """Each instant floored to the grid of ``resolution_min`` minutes and ``phase`` (:func:`build_grid`): the last
    grid instant at or before it (UTC)."""
    idx = pd.DatetimeIndex(instants).tz_convert("UTC")
    step, ph = pd.Timedelta(minutes=resolution_min).value, pd.Timedelta(phase).value
    return pd.DatetimeIndex((idx.asi8 - ph) // step * step + ph, tz="UTC")


def steps_per_day(resolution_min: int) -> int:
    """Number of grid steps in 24 hours."""
    return 24 * 60 // resolution_min


def build_grid(
    series: pd.DataFrame,
    resolution_min: int,
    start: pd.Timestamp | datetime | None = None,
    end: pd.Timestamp | datetime | None = None,
    max_interp_steps: int = 4,
    phase: pd.Timedelta = pd.Timedelta(0),
) -> pd.DataFrame:
    """Regular grid ``start <= ts < end`` from a ``ts, value`` frame (ts UTC-aware).

    Returns columns ``ts``, ``value`` (after short-gap interpolation), ``raw`` (the measured value
    or NaN), ``interpolated`` and ``missing`` (booleans). ``start``/``end`` default to the data's span.
    ``phase``: the grid's instants are ``phase`` past whole multiples of the step since the Unix epoch (0: on
    the hour for an hourly grid; :func:`grid_phase` of a series whose instants are not).
    """
    freq = f"{resolution_min}min"
    s = series.dropna(subset=["value"]).set_index("ts")["value"].sort_index()
    s = s[~s.index.duplicated(keep="last")]
    if start is None:
        start = s.index.min() if len(s) else pd.Timestamp(0, tz="UTC")
    if end is None:
        end = (floor_to_grid(pd.DatetimeIndex([s.index.max()]), resolution_min, phase)[0]
               + pd.Timedelta(minutes=resolution_min)) if len(s) else pd.Timestamp(0, tz="UTC")
    # the first grid instant at or after start
    lo = floor_to_grid(pd.DatetimeIndex([to_utc(start) - pd.Timedelta(1)]), resolution_min, phase)[0]
    idx = pd.date_range(lo + pd.Timedelta(minutes=resolution_min), to_utc(end), freq=freq, inclusive="left")
    raw = s.reindex(idx)
    value = interpolate_short_gaps(raw, max_interp_steps)
    out = pd.DataFrame({"ts": idx, "value": value.to_numpy(), "raw": raw.to_numpy()})
    out["interpolated"] = out["raw"].isna() & out["value"].notna()
    out["missing"] = out["value"].isna()
    return out


def series_grid(
    series: pd.DataFrame,
    settings: Settings,
    metric: str | None,
    resolution_min: int,
    start: pd.Timestamp | datetime | None = None,
    end: pd.Timestamp | datetime | None = None,
    max_interp_steps: int = 4,
    phase: pd.Timedelta = pd.Timedelta(0),
) -> pd.DataFrame:
    """The series on the grid through the training-data gate (pure; the one definition of the grid).

    ``series``: ``ts, value`` sorted by ``ts`` (NaN = no value), optionally ``flag`` (the store's plausibility
    reason, '' = plausible, as :func:`shared.series.load_series` returns it). ``metric``: the series' metric for
    the plausibility bounds (None for a foreign series: only the built-in checks). The gate runs *before* the
    grid, so a rejected value is a gap that short-gap interpolation may fill, exactly as the forecast always
    treated it. Returns :func:`build_grid`'s columns plus ``implausible`` (bool: the value at that instant was
    rejected, by the store's check or the gate) and ``implausible_reason``; ``attrs["gated"]`` counts the
    gate's rejections per reason. ``phase``: see :func:`build_grid`.
    """
    frame = series[["ts", "value"]].reset_index(drop=True)
    g = gate(frame, settings, metric=metric)
    grid = build_grid(g.frame, resolution_min, start, end, max_interp_steps, phase)
    reasons = g.reasons.to_numpy(dtype=object)
    if "flag" in series:  # the store already nulled these; say why
        flag = series["flag"].fillna("").astype(str).to_numpy()
        reasons = np.where((reasons == "") & (flag != ""), flag, reasons)
    by_ts = pd.Series(reasons, index=pd.DatetimeIndex(frame["ts"]))
    by_ts = by_ts[by_ts != ""]
    by_ts = by_ts[~by_ts.index.duplicated(keep="last")]
    grid["implausible_reason"] = by_ts.reindex(pd.DatetimeIndex(grid["ts"])).fillna("").to_numpy(dtype=object)
    grid["implausible"] = grid["implausible_reason"] != ""
    grid.attrs["gated"] = g.counts
    return grid


def observed_columns(series: pd.DataFrame, ts: pd.Series) -> pd.DataFrame:
    """The series as published at each grid instant ``ts`` (pure): ``observed`` (what the chosen version holds,
    also when the store flags it implausible; NaN = no value), ``observed_flag`` (the store's plausibility
    reason, '' = plausible) and ``observed_version`` (0 = no measurement at that instant).

    ``series``: :func:`shared.series.load_series` columns ``ts, value, version, flag, raw_value``. Nothing is
    gated or interpolated here: detect judges exactly what the source sent (a flatline the training-data gate
    rejects, a missing quarter-hour), so it reads these columns, not ``value``.
    """
    s = series.drop_duplicates("ts", keep="last").set_index("ts")
    idx = pd.DatetimeIndex(ts)
    raw = s["raw_value"] if "raw_value" in s else s["value"]
    flag = s["flag"].fillna("").astype(str) if "flag" in s else pd.Series("", index=s.index)
    version = s["version"] if "version" in s else pd.Series(1, index=s.index)
    return pd.DataFrame({
        "observed": pd.to_numeric(raw, errors="coerce").reindex(idx).to_numpy(dtype=float),
        "observed_flag": flag.reindex(idx).fillna("").to_numpy(dtype=object),
        "observed_version": version.reindex(idx).fillna(0).to_numpy(dtype="uint64"),
    })


def interpolate_short_gaps(raw: pd.Series, max_steps: int) -> pd.Series:
    """Linear interpolation inside gaps of at most ``max_steps`` consecutive missing steps.

    Longer gaps, and gaps at either end (no value on one side), stay NaN.
    """
    if max_steps <= 0 or raw.notna().all():
        return raw.copy()
    isna = raw.isna()
    run_id = (isna != isna.shift()).cumsum()
    run_len = isna.groupby(run_id).transform("sum")
    filled = raw.interpolate(method="linear", limit_area="inside")
    short = isna & (run_len <= max_steps)
    return raw.where(~short, filled)


# --- calendar ---------------------------------------------------------------------------------
def calendar_features(ts: pd.Series) -> pd.DataFrame:
    """Calendar columns for UTC timestamps, computed in Europe/Paris local time (shared/calendar.py)."""
    local = pd.DatetimeIndex(ts).tz_convert(TZ)
    dates = pd.Series(local.date, index=range(len(local)))
    names = holiday_names(dates)
    uniq = set(dates)
    bridge = bridge_days(uniq)
    dst_days = {d for d in uniq if is_dst_transition(d)}
    return pd.DataFrame(
        {
            "local_minute": (local.hour * 60 + local.minute).astype("uint16"),
            "dow": local.dayofweek.astype("uint8"),
            "month": local.month.astype("uint8"),
            "is_holiday": (names != "").to_numpy(),
            "holiday_name": names.to_numpy(),
            "is_bridge": dates.isin(bridge).to_numpy(),
            "is_dst_transition": dates.isin(dst_days).to_numpy(),
            "is_summer_time": is_summer_time(local),
        }
    )


# --- temperature ------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def shipped_temperature(weather_dir: str) -> pd.DataFrame:
    """The shipped Enedis national temperature (``ts``, ``observed``, ``normal``), read once per process: every
    featurize, detect and forecast run reads it."""
    from shared.weather.enedis import read_enedis_dir  # the one reader of the series

    df = read_enedis_dir(weather_dir)
    return df.rename(columns={"realised": "observed"})[["ts", "observed", "normal"]]


@lru_cache(maxsize=1)
def _normal_climatology(weather_dir: str) -> pd.Series:
    """Enedis normal temperature averaged by (local month-day, half-hour of day): defined for any year."""
    df = shipped_temperature(weather_dir)
    if df.empty:
        return pd.Series(dtype=float)
    local = pd.DatetimeIndex(df["ts"]).tz_convert(TZ)
    key = local.strftime("%m-%d") + "T" + ((local.hour * 60 + local.minute) // 30).astype(str)
    return df["normal"].groupby(np.asarray(key)).mean()


def _normal_at_slots(local: pd.DatetimeIndex, clim: pd.Series) -> pd.Series:
    """The climatology at the half-hour slots ``local`` lies in (positional; 29 February borrows 28 February's)."""
    key = pd.Series(np.asarray(local.strftime("%m-%d") + "T" + ((local.hour * 60 + local.minute) // 30).astype(str)))
    normal = key.map(clim).astype(float)
    if normal.isna().any() and len(clim):
        normal = normal.fillna(key.str.replace("02-29", "02-28", regex=False).map(clim))
    return normal


def normal_temperature(ts: pd.Series | pd.DatetimeIndex, weather_dir: Path = WEATHER_DIR) -> pd.Series:
    """The normal (climatological) national temperature at ``ts`` (°C, positional): Enedis's smoothed normal by
    local month-day and half-hour of the day, defined for any year. An instant between two half-hours (a
    15-minute grid) is interpolated between them, as the realised temperature is (no step at every half-hour)."""
    idx = pd.DatetimeIndex(ts)
    clim = _normal_climatology(str(weather_dir))
    normal = _normal_at_slots(idx.tz_convert(TZ), clim)
    # half-hours floored in UTC: the zone's offsets are whole hours, and a local floor is ambiguous at a DST change
    utc = idx.tz_convert("UTC")
    share = np.asarray((utc - utc.floor("30min")) / pd.Timedelta(minutes=30), dtype=float)
    if (between := share > 0).any():
        nxt = (utc[between].floor("30min") + pd.Timedelta(minutes=30)).tz_convert(TZ)
        after = _normal_at_slots(nxt, clim).to_numpy()
        before = normal.to_numpy()[between]
        normal.iloc[np.flatnonzero(between)] = before + share[between] * (after - before)
    return normal


def temperature_features(ts: pd.Series, weather_dir: Path = WEATHER_DIR) -> pd.DataFrame:
    """Normal (climatological) and observed temperature with normal heating/cooling degrees."""
    idx = pd.DatetimeIndex(ts)
    normal = normal_temperature(idx, weather_dir)
    obs_df = shipped_temperature(str(weather_dir))
    # the series is half-hourly: on a 15-minute grid the quarter-hours between two of its values are interpolated,
    # the one definition the weather features use (a plain reindex left them NaN, so a 15-minute weather model
    # trained on half its steps and its holdout stopped at the first quarter-hour without weather)
    observed = interpolate_on(obs_df.rename(columns={"observed": "temp_degc"}), idx).to_numpy()
    return pd.DataFrame(
        {
            "temp_normal_degc": normal.to_numpy(),
            "temp_observed_degc": observed,
            "hdd_normal": np.clip(HDD_BASE_C - normal.to_numpy(), 0, None),
            "cdd_normal": np.clip(normal.to_numpy() - CDD_BASE_C, 0, None),
        }
    )


# --- all features ---------------------------------------------------------------------------
def compute_features(grid: pd.DataFrame, resolution_min: int) -> pd.DataFrame:
    """Lags, past-only rolling statistics, calendar and temperature for a grid from :func:`build_grid`."""
    spd = steps_per_day(resolution_min)
    v = grid["value"].astype(float)
    past = v.shift(1)  # rolling windows end strictly before ts, so they are usable as predictors
    out = grid[["ts", "value", "interpolated", "missing"]].reset_index(drop=True).copy()
    for col in ("implausible", "implausible_reason"):  # a grid from series_grid; build_grid alone has neither
        out[col] = grid[col].to_numpy() if col in grid else (False if col == "implausible" else "")
    for col, empty in (("observed", np.nan), ("observed_flag", ""), ("observed_version", 0)):
        out[col] = grid[col].to_numpy() if col in grid else empty  # observed_columns, when featurize added them
    out["lag_1"] = past.to_numpy()
    out["lag_1d"] = v.shift(spd).to_numpy()
    out["lag_1w"] = v.shift(7 * spd).to_numpy()
    for name, w in (("1d", spd), ("1w", 7 * spd)):
        roll = past.rolling(w, min_periods=w // 2)
        out[f"roll_mean_{name}"] = roll.mean().to_numpy()
        out[f"roll_std_{name}"] = roll.std().to_numpy()
    cal = calendar_features(out["ts"])
    temp = temperature_features(out["ts"])
    return pd.concat([out, cal, temp], axis=1)


# --- incremental stage --------------------------------------------------------------------------
@dataclass
class FeaturizePlan:
    """What one featurize run recomputes on one grid: features for ``start <= ts < end`` from data since
    ``load_start``, at ``resolution_min``."""

    start: pd.Timestamp
    end: pd.Timestamp
    load_start: pd.Timestamp
    watermark: pd.Timestamp
    new_watermark: pd.Timestamp
    resolution_min: int


def plan_window(
    changed_min_ts: pd.Timestamp,
    data_end: pd.Timestamp,
    resolution_min: int,
    lookback_start: pd.Timestamp,
) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    """Pure: (start, end, load_start) of the features a change at ``changed_min_ts`` affects.

    A value at t feeds lags/rolling windows of up to one week after t, so everything from
    t to the end of the data is recomputed (new data is normally at the end, so this is small);
    loading starts one week (+1 day margin) before, so lags of the first recomputed step exist.
    """
    freq = f"{resolution_min}min"
    start = max(changed_min_ts.floor(freq), lookback_start.ceil(freq))
    end = data_end.floor(freq) + pd.Timedelta(minutes=resolution_min)
    load_start = start - pd.Timedelta(days=8)
    return start, end, load_start


def plan_featurize(store: Store, settings: Settings, now: datetime,
                   resolution_min: int | None = None) -> FeaturizePlan | None:
    """Find the window new or revised measurements affect on the grid of ``resolution_min`` (default: the
    forecast's); None when those features are up to date. Each grid has its own watermark."""
    src, met = settings.series_source, settings.series_metric
    res = resolution_min or settings.forecast_resolution_min
    wm = store.scalar(
        "select max(source_inserted_max) from {db:Identifier}.features "
        "where source = {s:String} and metric = {m:String} and resolution_min = {r:UInt16}",
        {"s": src, "m": met, "r": res},
    )
    watermark = to_utc(wm) if wm is not None and pd.Timestamp(wm).year > 1970 else pd.Timestamp(0, tz="UTC")
    row = store.query_rows(
        "select min(ts), max(ts), max(inserted_at), count() from {db:Identifier}.measurements "
        "where source = {s:String} and metric = {m:String} and inserted_at > {wm:DateTime64(3, 'UTC')}",
        {"s": src, "m": met, "wm": watermark.to_pydatetime()},
    )
    if not row or not row[0][3]:
        return None
    changed_min, _, new_wm, _ = row[0]
    data_end = store.scalar(
        "select max(ts) from {db:Identifier}.measurements where source = {s:String} and metric = {m:String}",
        {"s": src, "m": met},
    )
    lookback_start = to_utc(now) - pd.Timedelta(days=settings.features_lookback_days)
    start, end, load_start = plan_window(to_utc(changed_min), to_utc(data_end), res, lookback_start)
    if start >= end:
        return None
    return FeaturizePlan(start, end, load_start, watermark, to_utc(new_wm), res)


def planned_features(store: Store, settings: Settings, plan: FeaturizePlan) -> tuple[pd.DataFrame, int]:
    """The feature rows ``plan`` recomputes (not written) and the number of series rows read: load the series
    from ``plan.load_start`` (so lags of the first step exist), :func:`series_grid` with the series as published
    (:func:`observed_columns`), :func:`compute_features`. Used by featurize, and by the forecast and detect stages
    for the tail featurize has not written yet."""
    from shared.series import load_series

    res = plan.resolution_min
    series = load_series(store, settings.series_source, settings.series_metric,
                         plan.load_start.to_pydatetime(), plan.end.to_pydatetime())
    grid = series_grid(series, settings, settings.series_metric, res, plan.load_start, plan.end,
                       settings.max_interp_steps)
    grid = pd.concat([grid, observed_columns(series, grid["ts"])], axis=1)
    feats = compute_features(grid, res)
    return feats[feats["ts"] >= plan.start].reset_index(drop=True), len(series)


def read_grid(store: Store, settings: Settings, resolution_min: int, columns: list[str],
              start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """``ts`` and ``columns`` of the grid of ``resolution_min`` for ``start <= ts < end``, as featurize writes it.

    Read from ``features``; when the table is behind the measurements (featurize has not run since new or
    revised data arrived) the tail is computed in-process by the same code featurize runs
    (:func:`plan_featurize` + :func:`planned_features`) and not written — featurize stays the only writer — so a
    reader never works on stale inputs.
    """
    cols = ", ".join(columns)  # column names come from the caller's code, never from a request
    df = store.query_df(
        f"select ts, {cols} from {{db:Identifier}}.features final where source = {{s:String}} "
        "and metric = {m:String} and resolution_min = {r:UInt16} "
        "and ts >= {a:DateTime64(3, 'UTC')} and ts < {b:DateTime64(3, 'UTC')} order by ts",
        {"s": settings.series_source, "m": settings.series_metric, "r": resolution_min,
         "a": to_utc(start).to_pydatetime(), "b": to_utc(end).to_pydatetime()},
    )
    df = df.reindex(columns=["ts", *columns])
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    plan = plan_featurize(store, settings, to_utc(end).to_pydatetime(), resolution_min)
    if plan is not None:
        tail, _ = planned_features(store, settings, plan)
        tail = tail[(tail["ts"] >= start) & (tail["ts"] < end)]
        log_event(log, "features_tail_computed", resolution_min=resolution_min, start=plan.start.isoformat(),
                  steps=int(len(tail)))
        df = pd.concat([df[df["ts"] < plan.start], tail[["ts", *columns]]], ignore_index=True)
    return df.reset_index(drop=True)


def featurize(store: Store, settings: Settings, now: datetime) -> dict:
    """Plan → compute → write one incremental featurize run on each grid (:func:`feature_resolutions`: the
    forecast's step and detect's 15 min); returns run details: ``rows_in``/``rows_out`` over the grids and, per
    grid written (``grids``, keyed by its step in minutes), its window and counts."""
    grids = {}
    for res in feature_resolutions(settings):
        done = featurize_grid(store, settings, now, res)
        if done is not None:
            grids[str(res)] = done
    if not grids:
        return {"up_to_date": True, "rows_in": 0, "rows_out": 0}
    return {"rows_in": sum(g.pop("rows_in") for g in grids.values()),
            "rows_out": sum(g.pop("rows_out") for g in grids.values()), "grids": grids}


def featurize_grid(store: Store, settings: Settings, now: datetime, resolution_min: int) -> dict | None:
    """Plan → compute → write the features of one grid; its details, or None when it is up to date."""
    plan = plan_featurize(store, settings, now, resolution_min)
    if plan is None:
        return None
    res = plan.resolution_min
    feats, rows_in = planned_features(store, settings, plan)
    feats.insert(0, "source", settings.series_source)
    feats.insert(1, "metric", settings.series_metric)
    feats.insert(2, "resolution_min", res)
    feats["source_inserted_max"] = plan.new_watermark.to_pydatetime()
    feats["computed_at"] = datetime.now(UTC)
    for col in ("interpolated", "missing", "implausible", "is_holiday", "is_bridge", "is_dst_transition",
                "is_summer_time"):
        feats[col] = feats[col].astype("uint8")
    written = store.insert_df("features", feats)
    details = {
        "resolution_min": res, "window_start": plan.start.isoformat(), "window_end": plan.end.isoformat(),
        "watermark": plan.watermark.isoformat(), "new_watermark": plan.new_watermark.isoformat(),
        "rows_in": rows_in, "rows_out": written,
        "interpolated": int(feats["interpolated"].sum()), "missing": int(feats["missing"].sum()),
        "implausible": int(feats["implausible"].sum()),
    }
    log_event(log, "features_written", **details)
    return details


def run_featurize(store: Store, settings: Settings, run: Run, *, lease_wait_s: float = LEASE_WAIT_S) -> Run:
    """The featurize stage (shared/runs.py's contract): one :func:`featurize` run as of the product clock;
    fills and returns ``run`` (skipped when the features are up to date, or when the measurements lease stays
    held for ``lease_wait_s``).

    It runs under the measurements writers' lease: a run that read the series while upsert-version was between
    its insert and its reflag stored the value without its plausibility flag, and one that overlapped another
    featurize could write its older rows last (``computed_at`` decides); either stayed wrong, since the next
    run's watermark found nothing new.
    """
    from shared.weather.featurize import featurize_weather

    lease = Lease(store, MEASUREMENTS_WRITER, ttl_s=settings.upsert_lease_ttl_s)
    if not lease.acquire(wait_s=lease_wait_s):
        run.skip(f"the measurements lease is held: upsert-version or featurize is running ({lease.describe_other()})")
        return run
    with lease:
        now = clock.now()
        details = featurize(store, settings, now)
    weather = featurize_weather(store, settings, now)  # weather_features, as known at `now` (issue 12)
    run.rows_in, run.rows_out = int(details.pop("rows_in")), int(details.pop("rows_out")) + int(weather.pop("rows_out"))
    run.details.update(details)
    run.details.update(weather)
    if details.get("up_to_date") and weather.get("weather_up_to_date"):
        run.skip("features up to date")
    return run
