"""The detect stage: load (window from watermarks, every read) → compute (pure: detectors, checks, drift)
→ write.  ``run_detect`` = :func:`load_detect_inputs` → :func:`compute_detect` → :func:`write_detect_outputs`.

* Input: the series as published, from featurize's 15-min grid in ``features`` (``observed``,
  ``observed_flag``, ``observed_version``; :func:`load_detect_series`) — not the gated, interpolated
  ``value`` the forecast reads: detect judges what the source sent. A tail featurize has not written yet is
  computed in-process with featurize's code (``shared.features.read_grid``).

* Window: from the previous successful detect run's ``window_end`` (pipeline_runs) minus
  ``detect_overlap_hours`` — so late and revised values are looked at again — up to now; an explicit
  start/end (backfill) overrides it. The calibration history before the window is read too.
* Expectation per point: the latest forecast issued at or before it (forecasts table, 30-min steps
  interpolated to the series' step); where no forecast covers a point, the seasonal profile.
  With no usable expectation at all (a bare store), the z-score baseline runs instead.
* Values on a straight line the source drew through a gap (the training-data gate's ramp rule,
  :func:`interpolated_points`) are no observations for the detectors: they become ``interpolated`` anomalies
  (detector ``gate``, severity by duration), resolved when a revision replaces the line.
* The residual detector judges from the start of the history it reads, not from the window's start, so a
  point's verdict is the same in every run that re-examines it.
* Values the plausibility rule flags (shared/plausibility.py; the series leaves them out) become
  ``implausible`` anomalies (detector ``plausibility``) and an ``implausible`` data-quality check; a
  revision (or a neighbour) that makes the value plausible resolves them.
* Data-quality checks describe the window: they are computed, and stamped (``checked_at``), as of
  the window's end — now for a scheduled run, the end of the window for a backfill — so a backfill
  never replaces the latest data-quality view with checks of a series loaded for another window.
* Writes are idempotent: the anomalies already stored for the window are read first; only new
  points, state changes (resolved, reclassified, reopened) are inserted, as new versions of the same
  key (ReplacingMergeTree on (source, metric, kind, detector, ts), version ``updated_at``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import Counter, Gauge

from shared import clock, metrics
from shared.calendar import FRANCE, Calendar, day_type_of, wall_clock
from shared.detection import drift, quality
from shared.detection.events import event_ids
from shared.detection.residual import (
    ROW_COLUMNS,
    ResidualParams,
    detect_residual,
    infer_step_min,
    missing_points,
    profile_delta,
    regular_grid,
)
from shared.detection.zscore import detect_zscore
from shared.features import DETECT_RESOLUTION_MIN, read_grid
from shared.forecasting.gate import ramp_mask
from shared.lease import Lease
from shared.logs import log_event
from shared.runs import Run
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import to_utc

log = logging.getLogger(__name__)
DETECT_LEASE = "detect"
LEASE_WAIT_S = 30.0  # a detect pass takes seconds; a longer wait means a stuck run, whose lease expires

ANOMALY_COLUMNS = [
    "ts",
    "source",
    "metric",
    "kind",
    "detector",
    "severity",
    "value",
    "value_version",
    "expected",
    "lower",
    "upper",
    "score",
    "threshold",
    "model_version",
    "forecast_run_id",
    "detected_at",
    "run_id",
    "status",
    "resolved_at",
    "resolution",
    "updated_at",
]
KEY = ["kind", "detector", "ts"]
IMPLAUSIBLE = "implausible"  # kind (and detector "plausibility") of values the plausibility rule flags
INTERPOLATED = "interpolated"  # kind (and detector "gate") of values on a straight line the source drew
PROFILE_HISTORY_DAYS = 43  # same-type days for the profile (6 weeks back) + 1
# Stored anomalies this far before the window are checked against revisions on every run (the detector judges the
# whole history it reads, so their verdicts are at hand): a revision arriving after the 48-h overlap never resolved
# its anomaly (review D5). 42 days: revisions of the previous month, and 4 weeks of calibration left before them in
# the history detect reads (calibration_days + PROFILE_HISTORY_DAYS = 71 days before the window).
REVISIT_DAYS = 42

ANOMALIES_RAISED = Counter(
    "powersense_anomalies_raised_total", "Anomalous points raised by detect", ["kind"], registry=metrics.REGISTRY
)
ANOMALIES_RESOLVED = Counter(
    "powersense_anomalies_resolved_total", "Anomalous points resolved by detect", registry=metrics.REGISTRY
)
DATA_AGE = Gauge(
    "powersense_data_age_seconds", "Age of the newest actual at the last detect run", registry=metrics.REGISTRY
)
RETRAIN_REQUESTS = Counter(
    "powersense_retrain_requests_total", "Retrain requests written by detect", ["reason"], registry=metrics.REGISTRY
)


# --- plan -------------------------------------------------------------------------------------------
def plan_window(
    store: Store, settings: Settings, now: datetime, start: datetime | None = None, end: datetime | None = None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) to examine: explicit, or the last watermark minus the overlap, up to now."""
    end_ts = to_utc(end or now)
    if start is not None:
        start_ts = to_utc(start)
    else:
        sql = """
        with detect_runs as (
            select details, started_at from {db:Identifier}.pipeline_runs final
            where function = 'detect' and status = 'success'
        )
        select details from detect_runs order by started_at desc limit 1
        """
        watermark = None
        details = store.scalar(sql)
        if details:
            try:
                watermark = json.loads(details).get("window_end")
            except (TypeError, ValueError):
                watermark = None
        base = to_utc(watermark) if watermark else end_ts
        start_ts = min(base, end_ts) - pd.Timedelta(hours=settings.detect_overlap_hours)
    start_ts = max(start_ts, end_ts - pd.Timedelta(days=settings.detect_max_window_days))
    return start_ts, end_ts


# --- the series detect judges, from features ----------------------------------------------------------
OBSERVED_COLUMNS = ["observed", "observed_flag", "observed_version"]
CALENDAR_COLUMNS = ["dow", "is_holiday"]  # featurize's calendar columns detect's seasonal profile uses


def day_types_from_features(feats: pd.DataFrame) -> pd.Series:
    """Day type per local date (naive midnight → ``shared.calendar.day_type`` class) from grid rows carrying
    ``CALENDAR_COLUMNS`` (pure): featurize's calendar, so detect does not recompute it."""
    if feats.empty:
        return pd.Series(dtype=int)
    dates = wall_clock(pd.DatetimeIndex(pd.to_datetime(feats["ts"], utc=True))).normalize()
    types = pd.Series(day_type_of(feats["dow"].to_numpy(), feats["is_holiday"].to_numpy()), index=dates)
    return types[~types.index.duplicated(keep="last")]


def series_from_features(feats: pd.DataFrame) -> pd.DataFrame:
    """The series as published (pure), from grid rows carrying ``OBSERVED_COLUMNS``: ``ts, value, version, flag,
    raw_value`` like :func:`shared.series.load_series` — one row per instant holding a measurement
    (``observed_version`` > 0); ``value`` is NaN where the store flags the value implausible (``flag``)."""
    have = feats[pd.to_numeric(feats["observed_version"], errors="coerce").fillna(0) > 0]
    flag = have["observed_flag"].fillna("").astype(str).to_numpy(dtype=object)
    raw = pd.to_numeric(have["observed"], errors="coerce").to_numpy(dtype=float)
    return pd.DataFrame({
        "ts": pd.DatetimeIndex(pd.to_datetime(have["ts"], utc=True)),
        "value": np.where(flag == "", raw, np.nan),
        "version": have["observed_version"].to_numpy(dtype="uint64"),
        "flag": flag,
        "raw_value": raw,
    })


def load_detect_series(store: Store, settings: Settings, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The series detect judges over [start, end): featurize's 15-min grid (``features``) as published."""
    return load_detect_grid(store, settings, start, end)[0]


def load_detect_grid(
    store: Store, settings: Settings, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[pd.DataFrame, pd.Series]:
    """featurize's 15-min grid over [start, end): the series as published (:func:`series_from_features`) and
    the day type per local date (:func:`day_types_from_features`)."""
    feats = read_grid(store, settings, DETECT_RESOLUTION_MIN, OBSERVED_COLUMNS + CALENDAR_COLUMNS, start, end)
    return series_from_features(feats), day_types_from_features(feats)


# --- expectation from the forecasts table ------------------------------------------------------------
# The forecasts the expectation may come from: issued at most this long before the point (the hourly forecast
# run's freshest information; an older issue is not "the latest forecast" any more).
FORECAST_MAX_LEAD_HOURS = 6.0


def load_forecasts(
    store: Store, source: str, metric: str, start: pd.Timestamp, end: pd.Timestamp,
    max_lead_hours: float = FORECAST_MAX_LEAD_HOURS,
) -> pd.DataFrame:
    """Forecast rows with a target in [start, end) issued at most ``max_lead_hours`` before it
    (columns run_id, model_version, issued_at, ts, yhat): what :func:`forecast_deltas` needs.

    The bound on ``issued_at`` alone ([start − lead, end)) is implied by the per-row one and the bound on ``ts``
    (the same rows); it is what the table's keys can use (partition by month of ``issued_at``, order by
    ``(source, metric, issued_at, …)``): without it every detect run read every forecast ever issued."""
    sql = """
    select run_id, model_version, issued_at, ts, yhat
    from {db:Identifier}.forecasts
    where source = {source:String} and metric = {metric:String}
      and ts >= {start:DateTime64(3, 'UTC')} and ts < {end:DateTime64(3, 'UTC')}
      and issued_at >= {start:DateTime64(3, 'UTC')} - toIntervalMinute({lead:UInt32})
      and issued_at < {end:DateTime64(3, 'UTC')}
      and issued_at <= ts and issued_at >= ts - toIntervalMinute({lead:UInt32})
    order by run_id, ts
    """
    return store.query_df(
        sql, {"source": source, "metric": metric, "start": start, "end": end, "lead": int(max_lead_hours * 60)}
    )


def forecast_deltas(forecasts: pd.DataFrame, grid: pd.DatetimeIndex) -> pd.DataFrame:
    """Per grid point: the change from the previous step in the latest forecast issued at or before it (pure).

    ``forecasts``: :func:`load_forecasts` rows.  Columns ts, delta, run_id, model_version (empty frame if
    no forecast covers the window).
    """
    df = forecasts
    if df.empty or len(grid) < 2:
        return pd.DataFrame(columns=["ts", "delta", "run_id", "model_version"])
    step = grid[1] - grid[0]
    parts = []
    for (run_id, model_version, issued_at), g in df.groupby(["run_id", "model_version", "issued_at"], sort=False):
        f = g.set_index("ts")["yhat"].sort_index()
        f = f[~f.index.duplicated(keep="last")]
        if len(f) < 2:
            continue
        fine = pd.date_range(f.index[0], f.index[-1], freq=step)
        f = f.reindex(f.index.union(fine)).interpolate(method="time", limit_area="inside").reindex(fine)
        delta = f.diff()
        parts.append(
            pd.DataFrame(
                {
                    "ts": fine,
                    "delta": delta.to_numpy(),
                    "run_id": run_id,
                    "model_version": model_version,
                    "issued_at": issued_at,
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["ts", "delta", "run_id", "model_version"])
    all_d = pd.concat(parts, ignore_index=True).dropna(subset=["delta"])
    all_d = all_d[all_d["issued_at"] <= all_d["ts"]]
    latest = all_d.sort_values(["ts", "issued_at"]).groupby("ts", as_index=False).last()
    return latest[["ts", "delta", "run_id", "model_version"]]


def expectation_deltas(
    x: pd.Series, forecast_deltas: pd.DataFrame, day_types: pd.Series | None = None, calendar: Calendar = FRANCE,
    *, forecast_weight: float,
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The residual detector's expected change per step of ``x`` (pure): where a forecast covers the point
    (:func:`forecast_deltas`), ``forecast_weight`` × the latest forecast's change + the rest × the seasonal
    profile's, else the profile's (its day types from ``day_types`` where given); with the forecast run id and model
    version each point's expectation came from ('' / 'profile' for the profile); ``calendar``: the series'
    (France's, the product's, by default). ``forecast_weight`` has no default here: its one default is the setting
    ``POWERSENSE_DETECT_FORECAST_WEIGHT``."""
    dexp = profile_delta(x, day_types=day_types, calendar=calendar)
    run_of = pd.Series("", index=x.index)
    version_of = pd.Series("profile", index=x.index)
    if not forecast_deltas.empty:
        fd = forecast_deltas.set_index("ts").reindex(x.index)
        has = fd["delta"].notna().to_numpy()
        dexp[has] = forecast_weight * fd["delta"][has] + (1 - forecast_weight) * dexp[has]
        run_of[has] = fd["run_id"][has]
        version_of[has] = fd["model_version"][has]
    return dexp, run_of, version_of


# --- compute -----------------------------------------------------------------------------------------
def severity(kind: str, value: float | None, expected: float | None, block_minutes: float) -> str:
    """low / medium / high: relative size for jumps, duration for stuck or missing blocks (4 h or more: high, 1 h:
    medium; a time, so an hourly series' missing hour is as severe as a 15-min series' four missing points)."""
    if kind == "implausible":  # a value no grid can produce (shared/plausibility.py)
        return "high"
    if kind in ("missing", "flatline", INTERPOLATED):
        return "high" if block_minutes >= 240 else ("medium" if block_minutes >= 60 else "low")
    if value is None or expected is None or not np.isfinite(value) or not np.isfinite(expected) or expected == 0:
        return "medium"
    rel = abs(value - expected) / abs(expected)
    return "high" if rel >= 0.10 else ("medium" if rel >= 0.05 else "low")


def compute_anomalies(
    series: pd.DataFrame, forecast_deltas: pd.DataFrame, window: tuple[pd.Timestamp, pd.Timestamp], settings: Settings,
    day_types: pd.Series | None = None, revisit_from: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Detector rows for the window (pure): ts, kind, detector, value, expected, …, superseded. ``day_types``:
    featurize's day type per local date (:func:`day_types_from_features`); None = the calendar module's.
    ``revisit_from`` (before the window's start): rows from there on too, so that the stored anomalies of those
    days can be checked against revisions (:func:`reconcile` raises nothing new there); None = the window's start."""
    start, end = window
    lo = min(revisit_from, start) if revisit_from is not None else start
    info: dict[str, Any] = {}
    x = regular_grid(series[series["ts"] < end])
    if len(x) < 3:
        return pd.DataFrame(), {"detector": "none", "reason": "not enough actuals"}
    step = x.index[1] - x.index[0]
    x = x.reindex(pd.date_range(x.index[0], max(x.index[-1], (end - step).floor(step)), freq=step))
    drawn = interpolated_points(x, settings.forecast_ramp_points)
    sent = x
    x = x.where(~drawn)  # not observations: the detectors judge (and anchor on) what the source measured
    dexp, run_of, version_of = expectation_deltas(x, forecast_deltas, day_types,
                                                  forecast_weight=settings.detect_forecast_weight)
    if not forecast_deltas.empty:
        info["points_with_forecast"] = int((version_of[x.index >= start] != "profile").sum())
    params = ResidualParams.from_settings(settings)
    if dexp[x.index >= start].notna().any():
        # Judged from the start of the history, not of the window: the detector's state at a point (its reference
        # level, an open run) must be the same in every run that examines it. With the window's start, each hourly
        # run re-examining the last 48 h took the points before its start as normal, so an anomaly the window began
        # inside became the reference and the return from it a level shift raised two days late (review D1).
        rows = detect_residual(x, dexp, params)
        detector = "residual"
    else:  # no forecast and not enough history for the profile: the original z-score baseline
        rows = detect_zscore(
            x,
            settings.detect_zscore_lookback_weeks,
            settings.detect_zscore_threshold,
            params.level_shift_min_steps(infer_step_min(x.index)),
            detect_from=start,
        )
        detector = "zscore"
    info["detector"] = detector
    # from the history's start, like the detector: a block's severity is its length, measured before the rows are
    # cut at the window (or the revisited days); cut first, a run whose window began inside a missing block wrote the
    # block's last rows back as 'medium' beside its 'high' ones (diff review of 2026-12-06)
    miss = missing_points(x, end, settings.detect_value_lag_min, None, settings.detect_ignore_fallback_gap)
    miss = miss[~miss["ts"].isin(x.index[drawn])]  # a drawn value is there: 'interpolated', not 'missing'
    if not miss.empty:
        miss = miss.assign(kind="missing", superseded=False, value=np.nan, expected=np.nan)
        rows = pd.concat([r for r in (rows, miss) if not r.empty], ignore_index=True)
    if drawn.any():
        line = pd.DataFrame({"ts": x.index[drawn], "kind": INTERPOLATED, "value": sent[drawn].to_numpy(),
                             "expected": np.nan, "superseded": False, "decided_ts": x.index[drawn]})
        info["interpolated"] = int((line["ts"] >= start).sum())
        rows = pd.concat([r for r in (rows, line) if not r.empty], ignore_index=True)
    if rows.empty:
        return rows, info
    rows = rows.reindex(columns=list(dict.fromkeys([*ROW_COLUMNS, *rows.columns])))
    rows = rows[rows["ts"] < end].reset_index(drop=True)
    rows["block_minutes"] = _block_lengths(rows, step) * (step / pd.Timedelta(minutes=1))
    rows = rows[rows["ts"] >= lo].copy()
    rows["detector"] = np.where(rows["kind"] == INTERPOLATED, "gate", detector)
    rows["model_version"] = version_of.reindex(rows["ts"]).fillna("profile").to_numpy()
    rows["forecast_run_id"] = run_of.reindex(rows["ts"]).fillna("").to_numpy()
    own = (rows["detector"] == "zscore") | (rows["kind"] == INTERPOLATED)
    rows.loc[own, "model_version"], rows.loc[own, "forecast_run_id"] = "", ""
    return rows.reset_index(drop=True), info


def _block_lengths(rows: pd.DataFrame, step: pd.Timedelta) -> np.ndarray:
    """For each row, the length of the event (:func:`shared.detection.events.event_ids`) of its kind it belongs to."""
    out = np.ones(len(rows), dtype=int)
    for _, g in rows.groupby("kind"):
        ts = pd.DatetimeIndex(g["ts"]).sort_values()
        ids = event_ids(ts, step)
        sizes = pd.Series(ids).map(pd.Series(ids).value_counts()).to_numpy()
        order = np.argsort(pd.DatetimeIndex(g["ts"]).asi8, kind="stable")
        block = np.empty(len(g), dtype=int)
        block[order] = sizes
        out[rows.index.get_indexer(g.index)] = block
    return out


def interpolated_points(x: pd.Series, min_points: int) -> np.ndarray:
    """Points of a regular grid ``x`` that lie on a straight line the source drew through a gap (pure): the
    training-data gate's ramp rule (:func:`shared.forecasting.gate.ramp_mask`, ``forecast_ramp_points``), less the
    points that repeat the value before them, which are the residual detector's ``flatline``.

    Why detect leaves them out: the real-time data of 2023-10-25 hold a line from the night into the morning ramp;
    its first points drifted off the real load too slowly to alarm and became the detector's reference level, so
    when the real values came back the detector held a 'level shift' against that level for 48 h (192 points,
    anomaly triage review, finding D2)."""
    values = x.to_numpy(dtype=float)
    on_line = ramp_mask(x.index, values, min_points)
    repeats = np.r_[False, values[1:] == values[:-1]]
    return np.asarray(on_line & ~repeats)


def implausible_rows(series: pd.DataFrame, window: tuple[pd.Timestamp, pd.Timestamp]) -> pd.DataFrame:
    """Detector rows (kind ``implausible``) for the window's values the plausibility rule flags (pure).

    ``series``: :func:`shared.series.load_series` output; the flagged value (``raw_value``) is kept
    so the anomaly shows what the source sent.
    """
    start, end = window
    flags = series["flag"].astype(str) if "flag" in series.columns else pd.Series("", index=series.index)
    bad = series[(flags != "") & (series["ts"] >= start) & (series["ts"] < end)]
    if bad.empty:
        return pd.DataFrame()
    rows = pd.DataFrame({
        "ts": bad["ts"].reset_index(drop=True), "kind": IMPLAUSIBLE, "detector": "plausibility",
        "value": bad["raw_value"].to_numpy(dtype=float), "expected": np.nan, "lower": np.nan, "upper": np.nan,
        "score": np.nan, "threshold": np.nan, "superseded": False, "model_version": "", "forecast_run_id": "",
        "reason": bad["flag"].to_numpy(),
    })
    rows["block_minutes"] = 0.0  # severity high whatever its length
    return rows.reset_index(drop=True)


def reconcile(
    computed: pd.DataFrame,
    existing: pd.DataFrame,
    versions: pd.Series,
    now: pd.Timestamp,
    run_id: str,
    source: str,
    metric: str,
    values: pd.Series | None = None,
) -> pd.DataFrame:
    """Rows to insert so that the table reflects ``computed`` without duplicating what is stored.

    * new (kind, detector, ts) → inserted open (or resolved if already superseded)
    * stored open, now superseded → resolved 'reclassified as level_shift'
    * stored open, flagged again on a revised value or with another severity → refreshed (value, version,
      expectation, severity; detected_at kept): the open row showed the value first judged, whatever the source sent
      since, and the first points of a block kept the severity of the block's length when they were written
    * stored open, no longer flagged and its value changed (revision, late arrival) → resolved
    * stored resolved by a revision, flagged again on a newer value → reopened
    Rows of ``computed`` with ``in_window`` False (the days detect revisits for revisions, before its window) change
    stored anomalies only; nothing new is raised there. Everything else (the same finding again) writes nothing.
    "Revised" (:func:`_revised`): another version, or
    another value (``values``: the value per ts the detectors judged): the consolidated data are another nature
    whose versions count from 1 again, so comparing versions alone never saw that revision (review D4).
    """
    out = []
    stored = existing.set_index(KEY) if not existing.empty else pd.DataFrame()
    seen = set()
    for r in computed.itertuples(index=False):
        key = (r.kind, r.detector, pd.Timestamp(r.ts))
        seen.add(key)
        version = int(versions.get(pd.Timestamp(r.ts), 0))
        superseded = bool(r.superseded)
        base = {
            "ts": pd.Timestamp(r.ts),
            "source": source,
            "metric": metric,
            "kind": r.kind,
            "detector": r.detector,
            "severity": severity(r.kind, _f(r.value), _f(r.expected), float(r.block_minutes)),
            "value": _f(r.value),
            "value_version": version,
            "expected": _f(r.expected),
            "lower": _f(r.lower),
            "upper": _f(r.upper),
            "score": _f(r.score),
            "threshold": _f(r.threshold),
            "model_version": str(r.model_version),
            "forecast_run_id": str(r.forecast_run_id),
            "detected_at": now,
            "run_id": run_id,
            "status": "open",
            "resolved_at": None,
            "resolution": "",
            "updated_at": now,
        }
        if superseded:
            base.update(status="resolved", resolved_at=now, resolution="reclassified as level_shift")
        if not len(stored) or key not in stored.index:
            if getattr(r, "in_window", True):  # before the window: revisions of stored anomalies only
                out.append(base)
            continue
        old = stored.loc[key]
        if old["status"] == "open" and not superseded and (
            _revised(old, version, _f(r.value)) or base["severity"] != old["severity"]
        ):
            # a revised value, or a block that grew (a missing, stuck or drawn block's severity is its length)
            out.append({**base, "detected_at": old["detected_at"]})
        elif old["status"] == "open" and superseded:
            out.append(_resolved(old, key, now, "reclassified as level_shift"))
        elif (
            old["status"] == "resolved"
            and not superseded
            and str(old["resolution"]).startswith("revised")
            and _revised(old, version, _f(r.value))
        ):
            out.append({**base, "detected_at": old["detected_at"]})
    if len(stored):
        for key, old in stored.iterrows():
            if key in seen or old["status"] != "open":
                continue
            version = int(versions.get(key[2], 0))
            value = _f(values.get(key[2])) if values is not None else None
            resolution = _no_longer_flagged(key[0], old, version, value)
            if resolution:
                out.append(_resolved(old, key, now, resolution))
    if not out:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    return pd.DataFrame(out)[ANOMALY_COLUMNS]


def _resolved(old: pd.Series, key: tuple[Any, ...], now: pd.Timestamp, resolution: str) -> dict[str, Any]:
    """A stored anomaly's row, resolved now with ``resolution``."""
    return {**old.to_dict(), **dict(zip(KEY, key, strict=True)), "status": "resolved", "resolved_at": now,
            "resolution": resolution, "updated_at": now}


def _no_longer_flagged(kind: str, old: pd.Series, version: int, value: float | None) -> str:
    """Why a stored open anomaly the detectors no longer flag is resolved ('' = it stays open)."""
    if kind == INTERPOLATED:  # the line was replaced (a revision) or, extended, is no line any more
        return f"no longer a straight line (version {version})" if version else "value withdrawn"
    if kind == IMPLAUSIBLE:  # revised, or a later neighbour proved it right
        return f"plausible (version {version})" if version else "value withdrawn"
    if kind == "missing":
        return "value arrived" if version else ""
    return f"revised value (version {version})" if _revised(old, version, value) else ""


def _revised(old: pd.Series, version: int, value: float | None) -> bool:
    """Has the value a stored anomaly judged been revised: another version, or another value (where both are
    known; a missing point has none)?"""
    if version != int(old["value_version"]):
        return True
    before = _f(old["value"])
    return value is not None and before is not None and value != before


def _f(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def load_existing(store: Store, source: str, metric: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Stored anomalies of the window, latest state per key."""
    sql = """
    select * from {db:Identifier}.anomalies final
    where source = {source:String} and metric = {metric:String}
      and ts >= {start:DateTime64(3, 'UTC')} and ts < {end:DateTime64(3, 'UTC')}
    """
    return store.query_df(sql, {"source": source, "metric": metric, "start": start, "end": end})


# --- the stage: load → compute → write ---------------------------------------------------------------
@dataclass(frozen=True)
class DriftInputs:
    """What the drift and model-performance pass reads (only when it is due)."""

    forecasts: pd.DataFrame  # forecasts issued in the drift window (drift.load_issued_forecasts)
    reference: pd.DataFrame  # the series over the reference + drift windows (load_detect_series)
    recent_requests: set[str]  # retrain requests already written within the cooldown


@dataclass(frozen=True)
class DetectInputs:
    """Everything one detect run reads from the store (:func:`load_detect_inputs`), plus the run's
    clock and id, so that :func:`compute_detect` needs no store."""

    now: pd.Timestamp
    window: tuple[pd.Timestamp, pd.Timestamp]
    source: str
    metric: str
    run_id: str
    series: pd.DataFrame  # load_detect_series over the calibration history and the window
    forecasts: pd.DataFrame | None  # load_forecasts rows; None when the series has too few values to detect on
    existing: pd.DataFrame | None  # stored anomalies of the window (load_existing); None likewise
    duplicate_counts: tuple[int, int]
    dead_letters: int
    bounds: tuple[float, float] | None
    revisions: pd.DataFrame
    drift: DriftInputs | None  # None when drift is not due
    day_types: pd.Series | None = None  # featurize's day type per local date (None: the calendar module's)
    revisit_from: pd.Timestamp | None = None  # stored anomalies from here on are checked for revisions (REVISIT_DAYS)


@dataclass
class DetectOutputs:
    """What one detect run writes (:func:`write_detect_outputs`) and reports (figures, log events, metrics)."""

    anomalies: pd.DataFrame | None  # rows to insert (reconciled); None when nothing was detected on
    data_quality: pd.DataFrame
    model_metrics: pd.DataFrame | None  # None when drift is not due
    figures: dict[str, Any]
    checks: list[dict[str, Any]]
    retrain_requests: list[dict[str, Any]]
    data_age_s: float | None  # age of the newest actual, for the gauge (scheduled runs only)


def _can_detect(series: pd.DataFrame) -> bool:
    return bool(series["value"].notna().sum() >= 3)


def load_detect_inputs(
    store: Store, settings: Settings, run_id: str, now: pd.Timestamp,
    start: datetime | None = None, end: datetime | None = None,
) -> DetectInputs:
    """Every read of one detect run: window (watermark), series, forecasts, stored anomalies, the
    data-quality aggregates and, when due, the drift inputs.  Nothing here depends on a write of the
    same run (anomalies, data_quality and model_metrics are written after all reads)."""
    source, metric = settings.series_source, settings.series_metric
    w_start, w_end = plan_window(store, settings, now, start, end)
    history_start = w_start - pd.Timedelta(days=settings.detect_calibration_days + PROFILE_HISTORY_DAYS)
    revisit_from = w_start - pd.Timedelta(days=REVISIT_DAYS)
    series, day_types = load_detect_grid(store, settings, history_start, w_end)
    forecasts = existing = None
    if _can_detect(series):
        forecasts = load_forecasts(store, source, metric, history_start, w_end)
        existing = load_existing(store, source, metric, revisit_from, w_end)
    drift_inputs = None
    if _drift_due(store, source, metric, now, settings.drift_every_min):
        drift_inputs = DriftInputs(
            forecasts=drift.load_issued_forecasts(
                store, source, metric, now - pd.Timedelta(days=settings.drift_window_days), now
            ),
            reference=load_detect_series(
                store, settings, now - pd.Timedelta(days=settings.drift_window_days + settings.drift_reference_days),
                now,
            ),
            recent_requests=_recent_requests(
                store, source, metric, now - pd.Timedelta(hours=settings.drift_request_cooldown_hours)
            ),
        )
    return DetectInputs(
        now=now,
        window=(w_start, w_end),
        source=source,
        metric=metric,
        run_id=run_id,
        series=series,
        forecasts=forecasts,
        existing=existing,
        duplicate_counts=quality.load_duplicate_counts(store, source, metric, w_start, w_end),
        dead_letters=quality.load_dead_letters(store, w_start, w_end),
        bounds=quality.learned_bounds(store, source, metric, w_start),
        revisions=quality.load_revisions(store, source, metric, w_start, w_end),
        drift=drift_inputs,
        day_types=day_types,
        revisit_from=revisit_from,
    )


def compute_detect(inputs: DetectInputs, settings: Settings) -> DetectOutputs:
    """Anomalies (reconciled with the stored ones), data-quality checks and model metrics of one run (pure).

    ``settings`` is the parameter object: the detectors' thresholds (``ResidualParams.from_settings``),
    the ``dq_*`` and ``drift_*`` fields; no default is repeated here.
    """
    now, (w_start, w_end) = inputs.now, inputs.window
    source, metric, run_id, series = inputs.source, inputs.metric, inputs.run_id, inputs.series
    figures: dict[str, Any] = {"window_start": w_start.isoformat(), "window_end": w_end.isoformat()}
    step_min = infer_step_min(pd.DatetimeIndex(series["ts"])) if len(series) > 2 else 15

    # anomalies
    to_write: pd.DataFrame | None = None
    if inputs.forecasts is not None and inputs.existing is not None:
        grid = pd.date_range(series["ts"].min(), w_end, freq=f"{step_min}min")
        deltas = forecast_deltas(inputs.forecasts, grid)
        revisit = min(inputs.revisit_from, w_start) if inputs.revisit_from is not None else w_start
        computed, info = compute_anomalies(series[["ts", "value"]], deltas, (w_start, w_end), settings,
                                           inputs.day_types, revisit_from=revisit)
        flagged = implausible_rows(series, (revisit, w_end))
        if len(flagged):
            # A flagged instant has a value, only not a plausible one: an 'implausible' anomaly, not 'missing'.
            if len(computed):
                computed = computed[~((computed["kind"] == "missing") & computed["ts"].isin(flagged["ts"]))]
            computed = pd.concat([c for c in (computed, flagged) if len(c)], ignore_index=True)
            info["implausible"] = int((flagged["ts"] >= w_start).sum())
        figures.update(info)
        if len(computed):
            computed = computed.assign(in_window=(computed["ts"] >= w_start).to_numpy())
        existing = inputs.existing
        by_ts = series.set_index("ts")
        versions = by_ts["version"].where(by_ts["value"].notna() | (by_ts["flag"].astype(str) != ""), 0)
        to_write = (
            reconcile(computed, existing, versions, now, run_id, source, metric, values=by_ts["value"])
            if len(computed) or len(existing)
            else pd.DataFrame(columns=ANOMALY_COLUMNS)
        )
        new_open = _new_open(to_write)
        figures.update(
            anomalies_flagged=int(computed["in_window"].sum()) if len(computed) else 0,
            anomalies_written=int(len(to_write)),
            anomalies_new_open=int(len(new_open)),
            anomalies_resolved=_n_resolved(to_write),
        )
    else:
        figures["detector"] = "none"

    # data quality, keyed by the window it describes: checked as of the window's end, which is now for a
    # scheduled run and the end of the window for a backfill.  So a backfill of an old window judges
    # completeness and freshness on the series it loaded (the days before its end), and its rows carry
    # that instant as checked_at: /data-quality (the run with the newest checked_at) keeps showing the
    # scheduled run's view of now instead of 0 % completeness computed from a series that ends weeks ago.
    dq_at = min(now, w_end)
    figures["checked_as_of"] = dq_at.isoformat()
    window_series = series[(series["ts"] >= w_start) & (series["ts"] < w_end)]
    checks = quality.completeness(series, dq_at, 3, step_min, settings.dq_completeness_min,
                                  settings.detect_value_lag_min,
                                  ignore_fallback_gap=settings.detect_ignore_fallback_gap)
    fresh = quality.freshness(series, dq_at, settings)
    data_age_s = fresh["value"] * 60 if np.isfinite(fresh["value"]) and dq_at == now else None
    checks.append(fresh)
    checks.append(quality.duplicates(inputs.duplicate_counts))
    checks.append(quality.dead_letter(inputs.dead_letters))
    checks.append(quality.out_of_range(window_series, inputs.bounds, settings.dq_range_margin))
    checks.append(quality.implausible(window_series))
    checks.append(quality.interpolated(window_series, settings.forecast_ramp_points, history=series))
    checks.extend(quality.revisions(inputs.revisions))
    dq = quality.to_frame(checks, dq_at, run_id, source, metric)
    figures["quality"] = {f"{c['check']}:{c['scope']}": c["status"] for c in checks if c["status"] != "ok"} or "ok"

    # drift and model performance, at most every drift_every_min
    mm: pd.DataFrame | None = None
    requests: list[dict[str, Any]] = []
    if inputs.drift is not None:
        mm_rows = drift.compute(inputs.drift.forecasts, inputs.drift.reference, now, settings)
        # one request per breached measure per cooldown: a lasting breach must not retrain every hour
        recent = inputs.drift.recent_requests
        mm_rows = [r for r in mm_rows if r["kind"] != "retrain_request" or r["name"] not in recent]
        mm = drift.to_frame(mm_rows, now, run_id, source, metric)
        requests = [r for r in mm_rows if r["kind"] == "retrain_request"]
        figures["model_metrics"] = len(mm)
        figures["retrain_requests"] = [r["name"] for r in requests]
    return DetectOutputs(
        anomalies=to_write, data_quality=dq, model_metrics=mm, figures=figures, checks=checks,
        retrain_requests=requests, data_age_s=data_age_s,
    )


def _new_open(to_write: pd.DataFrame) -> pd.DataFrame:
    return to_write[(to_write["status"] == "open")] if len(to_write) else to_write


def _n_resolved(to_write: pd.DataFrame) -> int:
    return int((to_write["status"] == "resolved").sum()) if len(to_write) else 0


def write_detect_outputs(store: Store, outputs: DetectOutputs) -> int:
    """Insert the run's anomalies, data-quality and model-metrics rows; returns the rows written."""
    written = 0
    for table, df in (
        ("anomalies", outputs.anomalies),
        ("data_quality", outputs.data_quality),
        ("model_metrics", outputs.model_metrics),
    ):
        if df is not None:
            store.insert_df(table, df)
            written += len(df)
    return written


def _report(outputs: DetectOutputs) -> None:
    """Metrics and log events of a written run."""
    if outputs.anomalies is not None:
        new_open = _new_open(outputs.anomalies)
        for kind, n in new_open["kind"].value_counts().items() if len(new_open) else []:
            ANOMALIES_RAISED.labels(kind).inc(int(n))
        ANOMALIES_RESOLVED.inc(_n_resolved(outputs.anomalies))
        if len(new_open):
            log_event(
                log,
                "anomalies_detected",
                logging.WARNING,
                count=int(len(new_open)),
                kinds=new_open["kind"].value_counts().to_dict(),
                first=str(new_open["ts"].min()),
            )
    if outputs.data_age_s is not None:
        DATA_AGE.set(outputs.data_age_s)
    checks = outputs.checks
    log_event(log, "data_quality", checks={f"{c['check']}:{c['scope']}": [c["value"], c["status"]] for c in checks})
    for r in outputs.retrain_requests:
        RETRAIN_REQUESTS.labels(r["name"]).inc()
        log_event(
            log, "retrain_requested", logging.WARNING, reason=r["name"], value=r["value"], threshold=r["threshold"]
        )


def run_detect(
    store: Store, settings: Settings, run: Run, start: datetime | None = None, end: datetime | None = None
) -> Run:
    """One detect invocation (load → compute → write); fills and returns ``run`` (figures in its details).

    Single-flight under the ``detect`` lease (waits up to ``LEASE_WAIT_S``, then skips): a manual run next to the
    cron one wrote two sets of drift outputs and retrain requests (the once-per-cooldown rule read before either
    wrote) and counted each new anomaly twice in ``powersense_anomalies_raised_total``.
    """
    lease = Lease(store, DETECT_LEASE, ttl_s=settings.upsert_lease_ttl_s)
    if not lease.acquire(wait_s=LEASE_WAIT_S):
        run.skip(f"another detect invocation is running ({lease.describe_other()})")
        return run
    with lease:
        inputs = load_detect_inputs(store, settings, run.run_id, to_utc(clock.now()), start, end)
        run.rows_in = len(inputs.series)
        outputs = compute_detect(inputs, settings)
        run.rows_out += write_detect_outputs(store, outputs)
    _report(outputs)
    run.details.update(outputs.figures)
    return run


def _recent_requests(store: Store, source: str, metric: str, since: pd.Timestamp) -> set[str]:
    """Names of retrain requests written since ``since``."""
    sql = """
    select distinct name from {db:Identifier}.model_metrics
    where source = {source:String} and metric = {metric:String} and kind = 'retrain_request'
      and computed_at >= {since:DateTime64(3, 'UTC')}
    """
    return {str(r[0]) for r in store.query_rows(sql, {"source": source, "metric": metric, "since": since})}


def _drift_due(store: Store, source: str, metric: str, now: pd.Timestamp, every_min: float) -> bool:
    sql = """
    select max(computed_at) from {db:Identifier}.model_metrics
    where source = {source:String} and metric = {metric:String} and computed_at <= {now:DateTime64(3, 'UTC')}
    """
    last = store.scalar(sql, {"source": source, "metric": metric, "now": now})
    if last is None:
        return True
    last_ts = to_utc(last)
    # an empty table answers the epoch
    return last_ts.year < 2000 or (now - last_ts) >= pd.Timedelta(minutes=every_min)
