"""``python -m shared evaluate-anomalies``: detectors measured on labelled anomalies injected into real data.

Protocol (reproducible with ``--seed``):
1. Read a real period (default: 2023 of the shipped eco2mix files; any file ``evaluate`` reads works: ODRÉ, RTE,
   ENTSO-E, NESO or ``timestamp,value``) plus the preceding weeks as calibration history. The series' calendar
   (zone and holidays: the profile's wall clock and day types, the detectors' hours) is chosen as ``evaluate``
   chooses it (:func:`shared.ingest.history.series_calendar`; ``--timezone`` / ``--holidays`` override).
2. Inject ``--per-kind`` anomalies of each kind at random, non-overlapping positions: spikes/dips of
   ±3–15 % lasting 1–4 steps, level shifts of ±5 % over 6–48 h, flatlines (value stuck at the last
   good value) of 1–12 h, missing blocks of 1–24 h.
3. Replay time forward as the cron schedule (``detect_schedule``) would: a value for ts is published
   at ts + step, each detection is stamped with the first cron tick at which its deciding value was
   available. The detectors are causal (every decision uses only values published by then), so one
   chronological pass equals the run-by-run replay (tests/test_detect_units.py checks causality).
   Forecasts "as in production": the expectation of the residual detector comes from the forecast
   issued just before each point; ``--expectation profile`` (default) uses the seasonal profile forecast
   (:func:`shared.detection.residual.profile_delta`, what detect falls back to without forecasts),
   ``seasonal-naive`` the product's fallback forecaster (shared.forecasting.baseline), ``deployed`` the
   forecasts the product issues (:func:`deployed_forecasts`: the real model, issued on the forecast stage's
   schedule, read the way detect reads the forecasts table; a quarter takes a few minutes on CPU).
4. Score events (runs of flagged points of one kind) against the labels, and count alarms on the
   same period without injections (false alarms per week).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from croniter import croniter
from tqdm import tqdm

from shared.calendar import FRANCE, Calendar, is_fallback_gap
from shared.detection.events import event_ids
from shared.detection.residual import (
    ResidualParams,
    detect_residual,
    infer_step_min,
    missing_points,
    profile_delta,
    regular_grid,
)
from shared.detection.service import (
    FORECAST_MAX_LEAD_HOURS,
    expectation_deltas,
    forecast_deltas,
    interpolated_points,
)
from shared.detection.zscore import detect_zscore
from shared.errors import BadRequestError, run_cli
from shared.ingest.history import (
    add_file_arguments,
    columns_option,
    is_other_series,
    naive_tz_option,
    read_history,
    series_calendar,
)
from shared.ingest.history import no_shipped_history as history_error
from shared.logs import configure_logging, log_event
from shared.settings import REPO_ROOT, get_settings, shipped_history_files
from shared.timeutil import iso_instant, to_utc

log = logging.getLogger(__name__)

KINDS = ("spike", "dip", "level_shift", "flatline", "missing")
MATCH_TAIL_STEPS = 2  # an alarm on the first step(s) after an anomaly is the anomaly's return


def default_files(start: pd.Timestamp, end: pd.Timestamp, history_days: int) -> list[Path]:
    """Shipped eco2mix files covering [start - history_days, end)."""
    first = (start - pd.Timedelta(days=history_days)).year
    files = [REPO_ROOT / "data" / "eco2mix" / f"eco2mix_national_{y}.csv.gz" for y in range(first, end.year + 1)]
    return [f for f in files if f.exists()]


def no_shipped_history(start: pd.Timestamp, end: pd.Timestamp) -> BadRequestError:
    """The error for a period :func:`default_files` has no file for: what the shipped history covers, and to give
    ``--data`` (not read_history's "no history files given": the user gave none and did not have to)."""
    return history_error(shipped_history_files(), "data/eco2mix", f"period {_moment(start)} … {_moment(end)}")


SPIKE_QUARTER = pd.Timedelta(minutes=15)  # injected spikes and dips last 1–4 of these


def inject(
    x: pd.Series, start: pd.Timestamp, end: pd.Timestamp, per_kind: int, seed: int
) -> tuple[pd.Series, pd.DataFrame]:
    """Inject labelled anomalies into ``x`` within [start, end); returns (injected series, labels)."""
    rng = np.random.default_rng(seed)
    step = x.index[1] - x.index[0]
    steps_per_h = pd.Timedelta(hours=1) / step
    out = x.copy()
    vals = out.to_numpy(dtype=float).copy()
    taken = np.zeros(len(x), dtype=bool)
    buffer = int(12 * steps_per_h)
    lo = int(x.index.searchsorted(start + pd.Timedelta(days=1)))
    hi = int(x.index.searchsorted(end - pd.Timedelta(days=1)))
    original_nan = np.isnan(vals)
    plan = [k for k in KINDS for _ in range(per_kind)]
    rng.shuffle(plan)
    labels = []
    for kind in plan:
        if kind in ("spike", "dip"):
            # 15 to 60 minutes (at least one step): a spike is shorter than the detector's level-shift span
            # (POWERSENSE_DETECT_LEVEL_SHIFT_MIN_MINUTES, 2 h); counted in steps, an hourly series' spikes
            # lasted up to 4 h
            length = max(1, round(int(rng.integers(1, 5)) * SPIKE_QUARTER / step))
        elif kind == "level_shift":
            length = int(rng.integers(int(6 * steps_per_h), int(48 * steps_per_h) + 1))
        elif kind == "flatline":
            length = int(rng.integers(int(steps_per_h), int(12 * steps_per_h) + 1))
        else:
            length = int(rng.integers(int(steps_per_h), int(24 * steps_per_h) + 1))
        if hi - length <= lo:
            continue  # no room for this length between the margins: fewer labels, stated in the report
        for _ in range(2000):
            s = int(rng.integers(lo, hi - length))
            a, b = s - buffer, s + length + buffer
            if not taken[a:b].any() and not original_nan[a:b].any():
                break
        else:
            continue  # period too short for all anomalies: fewer labels, stated in the report
        taken[s - buffer : s + length + buffer] = True
        magnitude = 0.0
        if kind in ("spike", "dip"):
            magnitude = float(rng.uniform(0.03, 0.15)) * (1 if kind == "spike" else -1)
            vals[s : s + length] *= 1 + magnitude
        elif kind == "level_shift":
            magnitude = 0.05 * float(rng.choice([-1, 1]))
            vals[s : s + length] *= 1 + magnitude
        elif kind == "flatline":
            vals[s : s + length] = vals[s - 1]
        else:
            vals[s : s + length] = np.nan
        labels.append(
            {"kind": kind, "start": x.index[s], "end": x.index[s + length - 1], "steps": length, "magnitude": magnitude}
        )
    out[:] = vals
    # with no label placed (a period with no value to inject into), an empty frame of the same columns
    frame = pd.DataFrame(labels, columns=["kind", "start", "end", "steps", "magnitude"])
    return out, frame.sort_values("start").reset_index(drop=True)


def cron_ticks(start: pd.Timestamp, end: pd.Timestamp, schedule: str) -> pd.DatetimeIndex:
    """Every firing of ``schedule`` in [start, end]."""
    it = croniter(schedule, start.to_pydatetime() - pd.Timedelta(seconds=1).to_pytimedelta())
    ticks = []
    while True:
        t = it.get_next(datetime)
        if t > end:
            break
        ticks.append(t)
    return pd.DatetimeIndex(ticks).tz_convert("UTC") if ticks else pd.DatetimeIndex([], tz="UTC")


EXPECTATIONS = {
    "profile": "seasonal profile forecast (median change at the same local time on the 4 latest days of the same "
    "type, holidays as Sundays), issued before each point, carried from the last normal observation "
    "(lead 15 min)",
    "seasonal-naive": "the product's fallback forecaster shared.forecasting.baseline.seasonal_naive (value one week "
    "earlier), issued daily before each point, carried from the last normal observation (lead 15 min)",
    "deployed": "the forecasts the product issues, replayed: the weather-free forecast model trained once on the "
    "forecast_train_days before the period (train_and_calibrate: model, blend with seasonal naive, holdout "
    "calibration), issued on the forecast stage's cron (openfaas-stack.yml) from the gated 30-min grid of the "
    "series as published at each issue (the simple-model fallback when the input is stale or incomplete), read as "
    "detect reads the forecasts table (latest issue at or before the point within 6 h, service.forecast_deltas), "
    "the seasonal profile where none covers the point",
}
DEPLOYED_APPROXIMATIONS = [
    "one model for the whole period, trained at its start on the data before it (production retrains daily and "
    "promotes a new model only when it is not worse on its holdout)",
    "forecast intervals are the holdout calibration (production adapts them hourly); detect reads only yhat",
    "short gaps in the forecast input are not interpolated (at issue time the gap at the end of the data cannot be)",
    "the training-data gate runs once over the whole series, so a flatline's first values are rejected from its "
    "start (production's gate sees a run only once it is 4 steps long)",
    "points detect flagged are not removed from the forecast input (production drops open anomalies): the "
    "replayed forecasts see the injected anomalies (a level shift moves the nowcast and the recent residual)",
    "the model forecasts 30-min steps; detect interpolates them to 15 min (service.forecast_deltas), as in "
    "production",
    "a value for ts is published at ts + 15 min (the evaluation's publication model), so an issue at hh:07 starts "
    "at hh:00 with data up to hh-1:30 on the 30-min grid",
]
DEPLOYED_PERIOD = ("2023-04-01T00:00:00Z", "2023-07-01T00:00:00Z")  # default quarter of --expectation deployed
DEPLOYED_HORIZON = pd.Timedelta(hours=7)  # forecast steps replayed per issue: detect reads leads up to 6 h
DEPLOYED_CHUNK = 240  # issues per predict call (the model predicts a batch of origins at once)


def expected_delta(x: pd.Series, expectation: str, start: pd.Timestamp, calendar: Calendar = FRANCE) -> pd.Series:
    """Expected change per step from the chosen forecast source, each issued before its targets (the profile's
    day types and wall clock are the series' ``calendar``)."""
    if expectation == "profile":
        return profile_delta(x, calendar=calendar)
    if expectation == "deployed":
        raise ValueError("the deployed expectation is built by deployed_forecasts + deployed_delta")
    from shared.forecasting.baseline import seasonal_naive  # the product's fallback forecaster (no torch)

    history = pd.DataFrame({"ts": x.index, "value": x.to_numpy()})
    step = x.index[1] - x.index[0]
    f = pd.Series(np.nan, index=x.index)
    # one issue per local day (lead < 1 day: the same values an hourly issue would give)
    days = pd.date_range(x.index[0].floor("D"), x.index[-1], freq="D")
    for day in days:
        targets = pd.date_range(day - step, day + pd.Timedelta(days=1), freq=step, inclusive="left")
        # on the series' own wall clock (the naive's one definition), not the default zone's
        f[targets[targets.isin(f.index)]] = seasonal_naive(history, day - step, targets,
                                                           calendar.tz)[targets.isin(f.index)]
    return f.diff()


# --- the deployed path: the product's forecasts, replayed ----------------------------------------------------------
def forecast_schedule() -> str:
    """The forecast stage's cron, from openfaas-stack.yml (the reader the embedded cron-connector uses)."""
    from local_dev.stack import read_stack

    return next(f.schedule for f in read_stack() if f.name == "forecast" and f.schedule)


def train_deployed(files: list[Path], start: pd.Timestamp, settings: Any, calendar: Calendar = FRANCE,
                   naive_tz: str = "UTC", columns: tuple[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """The model production serves at ``start``: weather-free, trained by ``train_and_calibrate`` on the
    ``forecast_train_days`` of gated grid before ``start`` (the grid ``make evaluate`` and featurize build).
    ``naive_tz`` / ``columns``: how a generic file is read (:func:`shared.ingest.history.read_history_file`)."""
    import time

    from shared.forecasting.evaluate import load_data
    from shared.forecasting.service import model_config, train_and_calibrate

    grid, _ = load_data(files, settings.forecast_resolution_min, settings, naive_tz=naive_tz, columns=columns)
    train = grid[(grid["ts"] >= start - pd.Timedelta(days=settings.forecast_train_days)) & (grid["ts"] < start)]
    cfg = model_config(settings)
    cfg.timezone, cfg.holiday_country = calendar  # the series' days, DST and holidays, as evaluate trains it
    cfg.grid_phase_min = grid.attrs["grid_phase_min"]  # and its grid (a series at :30 UTC keeps :30)
    if hasattr(cfg, "weather"):
        cfg.weather = False  # the weather-free model: the replay has no stored temperature forecasts
    t0 = time.perf_counter()
    model, hold = train_and_calibrate(train.reset_index(drop=True), settings, cfg)
    return model, {"cut": start.isoformat(), "train_start": train["ts"].min().isoformat(),
                   "train_seconds": round(time.perf_counter() - t0, 1), "holdout": hold["holdout"],
                   "holdout_mape": hold["metrics"]["mape"], "holdout_naive_mape": hold["metrics"].get("naive_mape")}


def deployed_forecasts(
    model: Any, x: pd.Series, start: pd.Timestamp, end: pd.Timestamp, settings: Any, metric: str | None,
    schedule: str, progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The forecasts the forecast stage would have issued over [start − 6 h, end) from ``x`` as published.

    Each cron tick T issues from origin = the grid step after the newest value published by T (a value for ts
    is published at ts + x's step); the input is the gated grid (``series_grid``, as featurize writes it) of x
    before the origin; a stale or incomplete input (``input_problem``) gets the simple-model fallback
    (``fallback_forecast``), as in production. Returns ``forecasts``-like rows (run_id, model_version,
    issued_at, ts, yhat) for the first ``DEPLOYED_HORIZON`` of each issue, and figures.
    Approximations (documented in the report): one model for the whole period (production retrains daily and
    promotes only a better one); short gaps are not interpolated (the gap at the end of the data cannot be,
    at issue time); points detect flagged are not removed from the input (production drops open anomalies).
    """
    import time

    from shared.features import series_grid
    from shared.forecasting.service import FALLBACK_HISTORY, fallback_forecast, input_problem, issue, on_model_grid

    t0 = time.perf_counter()
    res = pd.Timedelta(minutes=settings.forecast_resolution_min)
    phase = pd.Timedelta(minutes=model.config.grid_phase_min)  # the grid the model was trained on
    native = x.index[1] - x.index[0]
    series = pd.DataFrame({"ts": x.index, "value": x.to_numpy(dtype=float)})
    grid = series_grid(series, settings, metric, settings.forecast_resolution_min, x.index[0], x.index[-1] + native,
                       max_interp_steps=0, phase=phase)[["ts", "value"]]
    ticks = cron_ticks(start - pd.Timedelta(hours=FORECAST_MAX_LEAD_HOURS), end - native, schedule)
    origins = on_model_grid(ticks - native, model.config) + res
    valid_ts = pd.DatetimeIndex(grid.loc[grid["value"].notna(), "ts"])
    fallback: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    model_issue: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for t, o in zip(ticks, origins, strict=True):
        last = valid_ts[max(int(valid_ts.searchsorted(o)) - 1, 0)]
        recent = grid[(grid["ts"] >= last - pd.Timedelta(days=15)) & (grid["ts"] <= last)]
        (fallback if input_problem(recent, t, settings) else model_issue).append((t, o))
    frames = []
    for t, o in fallback:
        past = grid[(grid["ts"] >= o - FALLBACK_HISTORY) & (grid["ts"] < o)]  # what production's fallback reads
        fc, _ = fallback_forecast(past, t, settings)
        frames.append(fc[fc["ts"] < o + DEPLOYED_HORIZON].assign(issued_at=t, model_version=""))
    issued_at = dict((o, t) for t, o in model_issue)
    chunks = [model_issue[i:i + DEPLOYED_CHUNK] for i in range(0, len(model_issue), DEPLOYED_CHUNK)]
    for chunk in tqdm(chunks, desc="deployed forecasts", unit="chunk", disable=not progress):
        sel = pd.DatetimeIndex([o for _, o in chunk])
        fc = issue(model, grid[grid["ts"] < sel.max()], sel, horizon_end=DEPLOYED_HORIZON)
        frames.append(fc.assign(issued_at=fc["origin"].map(issued_at), model_version="replay"))
    rows = pd.concat(frames, ignore_index=True)
    rows["run_id"] = "replay-" + pd.DatetimeIndex(rows["issued_at"]).strftime("%Y%m%dT%H%M")
    lead = pd.DatetimeIndex(rows["ts"]) - pd.DatetimeIndex(rows["issued_at"])
    keep = (lead >= pd.Timedelta(0)) & (lead <= pd.Timedelta(hours=FORECAST_MAX_LEAD_HOURS))  # load_forecasts' rule
    rows = rows[keep][["run_id", "model_version", "issued_at", "ts", "yhat"]].reset_index(drop=True)
    return rows, {"issues": len(ticks), "fallback_issues": len(fallback), "model_issues": len(model_issue),
                  "issue_seconds": round(time.perf_counter() - t0, 1)}


def deployed_delta(x: pd.Series, forecasts: pd.DataFrame, start: pd.Timestamp, calendar: Calendar,
                   forecast_weight: float) -> tuple[pd.Series, float]:
    """The expectation detect builds from ``forecasts`` rows (service.expectation_deltas with the configured
    ``POWERSENSE_DETECT_FORECAST_WEIGHT``) and the share of points from ``start`` on that had a forecast."""
    dexp, _, version_of = expectation_deltas(x, forecast_deltas(forecasts, x.index), calendar=calendar,
                                             forecast_weight=forecast_weight)
    return dexp, float((version_of[x.index >= start] != "profile").mean())


def run_detector(
    name: str,
    x: pd.Series,
    start: pd.Timestamp,
    end: pd.Timestamp,
    params: ResidualParams,
    settings: Any,
    expectation: str = "profile",
    dexp: pd.Series | None = None,
    calendar: Calendar = FRANCE,
    other_series: bool = False,
) -> pd.DataFrame:
    """All rows a detector raises over [start, end) on ``x`` (with history before ``start``); ``dexp``: a
    precomputed expectation (the deployed path) instead of ``expectation``; ``calendar``: the series'. RTE's
    fall-back gap (``detect_ignore_fallback_gap``) is a rule of France's source: ``other_series``' missing
    instants all count."""
    if name == "powersense":
        delta = dexp if dexp is not None else expected_delta(x, expectation, start, calendar)
        # as detect judges: from the history's start, on what the source measured (not the lines it drew through
        # gaps: detect reports those as 'interpolated', a kind not injected here, so they are left out of the scores)
        drawn = interpolated_points(x, settings.forecast_ramp_points)
        rows = detect_residual(x.where(~drawn), delta, params, tz=calendar.tz)
        step = x.index[1] - x.index[0]
        miss = missing_points(
            x[x.index < end], end - step, settings.detect_value_lag_min, start,
            settings.detect_ignore_fallback_gap and not other_series,
        )
        if not miss.empty:
            miss = miss.assign(kind="missing", superseded=False)
            rows = pd.concat([rows, miss], ignore_index=True) if not rows.empty else miss
    else:
        rows = detect_zscore(
            x,
            settings.detect_zscore_lookback_weeks,
            settings.detect_zscore_threshold,
            params.level_shift_min_steps(infer_step_min(x.index)),
            detect_from=start,
            tz=calendar.tz,
        )
    if rows.empty:
        return rows
    return rows[(rows["ts"] >= start) & (rows["ts"] < end)].reset_index(drop=True)


def stamp_detection_times(
    rows: pd.DataFrame, ticks: pd.DatetimeIndex, step: pd.Timedelta, lag_min: float
) -> pd.DataFrame:
    """detected_at = first cron tick at which the deciding value was published (ts + step)."""
    if rows.empty:
        return rows.assign(detected_at=pd.Series(dtype="datetime64[ns, UTC]"))
    due = pd.DatetimeIndex(rows["decided_ts"]) + step
    is_missing = (rows["kind"] == "missing").to_numpy()
    # missing rows already carry the due time (ts + step + lag) as decided_ts
    due = pd.DatetimeIndex(np.where(is_missing, pd.DatetimeIndex(rows["decided_ts"]), due))
    pos = np.minimum(ticks.searchsorted(due), len(ticks) - 1)
    return rows.assign(detected_at=ticks[pos])


def events_of(rows: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """Runs of consecutive flagged points of one kind (final rows only) → events (kind, start, end)."""
    final = rows[~rows["superseded"].astype(bool)] if not rows.empty else rows
    if final.empty:
        return pd.DataFrame(columns=["kind", "start", "end"])
    events = []
    for kind, grp in final.sort_values("ts").groupby("kind"):
        ts = pd.DatetimeIndex(grp["ts"])
        ids = event_ids(ts, step)  # the product's events (shared/detection/events.py)
        for _, seg in pd.Series(ts, index=ids).groupby(level=0):
            events.append({"kind": kind, "start": seg.iloc[0], "end": seg.iloc[-1]})
    return pd.DataFrame(events).sort_values("start").reset_index(drop=True)


def _overlaps(a_start: pd.Timestamp, a_end: pd.Timestamp, b_start: pd.Timestamp, b_end: pd.Timestamp) -> bool:
    return bool(a_start <= b_end and b_start <= a_end)


def score(rows: pd.DataFrame, labels: pd.DataFrame, gaps: pd.DataFrame, step: pd.Timedelta) -> dict[str, Any]:
    """Precision/recall/F1 per kind and overall, median time-to-detect per kind."""
    events = events_of(rows, step)
    tail = MATCH_TAIL_STEPS * step
    spans = [(lab.start, lab.end + tail) for lab in labels.itertuples()]
    gap_spans = [(g.start, g.end + tail) for g in gaps.itertuples()]
    per_kind: dict[str, dict[str, float | int]] = {}
    ttd: dict[str, float | None] = {}
    ev_tp_any = ev_fp = 0
    for ev in events.itertuples():
        if any(_overlaps(ev.start, ev.end, s, e) for s, e in spans):
            ev_tp_any += 1
        elif not any(_overlaps(ev.start, ev.end, s, e) for s, e in gap_spans):
            ev_fp += 1
    detected_any = 0
    for kind in KINDS:
        lab_k = labels[labels["kind"] == kind]
        ev_k = events[events["kind"] == kind]
        hits, delays = 0, []
        for lab in lab_k.itertuples():
            s, e = lab.start, lab.end + tail
            if any(_overlaps(ev.start, ev.end, s, e) for ev in ev_k.itertuples()):
                hits += 1
                near = rows[(rows["ts"] >= s) & (rows["ts"] <= e)]
                delays.append((near["detected_at"].min() - lab.start).total_seconds() / 60)
        ev_ok = sum(
            any(_overlaps(ev.start, ev.end, lab.start, lab.end + tail) for lab in lab_k.itertuples())
            for ev in ev_k.itertuples()
        )
        ev_real_gap = sum(any(_overlaps(ev.start, ev.end, s, e) for s, e in gap_spans) for ev in ev_k.itertuples())
        n_ev = len(ev_k) - ev_real_gap
        precision = ev_ok / n_ev if n_ev else (1.0 if len(lab_k) == 0 else 0.0)
        recall = hits / len(lab_k) if len(lab_k) else 0.0
        per_kind[kind] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(_f1(precision, recall), 4),
            "injected": int(len(lab_k)),
            "detected": hits,
            "events": int(n_ev),
        }
        ttd[kind] = round(float(np.median(delays)), 1) if delays else None
    for lab in labels.itertuples():
        s, e = lab.start, lab.end + tail
        if any(_overlaps(ev.start, ev.end, s, e) for ev in events.itertuples()):
            detected_any += 1
    n_ev = ev_tp_any + ev_fp
    precision = ev_tp_any / n_ev if n_ev else 0.0
    recall = detected_any / len(labels) if len(labels) else 0.0
    return {
        "overall": {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(_f1(precision, recall), 4),
            "events": n_ev,
            "false_events": ev_fp,
        },
        "per_kind": per_kind,
        "median_time_to_detect_min": ttd,
    }


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def source_gaps(x: pd.Series, start: pd.Timestamp, end: pd.Timestamp, ignore_fallback: bool) -> pd.DataFrame:
    """Blocks already missing in the real data (e.g. local day 2023-10-14): real anomalies, not false alarms."""
    window = x[(x.index >= start) & (x.index < end)]
    miss = window.index[window.isna().to_numpy()]
    if ignore_fallback and len(miss):
        miss = miss[~is_fallback_gap(miss)]
    if not len(miss):
        return pd.DataFrame(columns=["start", "end", "steps"])
    step = x.index[1] - x.index[0]
    new = np.r_[True, np.diff(miss.asi8) > step.value]
    ids = np.cumsum(new)
    blocks = pd.Series(miss, index=ids).groupby(level=0).agg(["first", "last", "count"])
    return blocks.rename(columns={"first": "start", "last": "end", "count": "steps"}).reset_index(drop=True)


def evaluate(
    files: list[Path],
    start: pd.Timestamp,
    end: pd.Timestamp,
    seed: int,
    per_kind: int,
    history_days: int = 70,
    expectation: str = "profile",
    progress: bool = True,
    deployed_clean: bool = False,
    calendar: Calendar | None = None,
    naive_tz: str = "UTC",
    columns: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Run the whole protocol; returns the report dict (see module docstring).

    ``expectation="deployed"`` also scores the profile expectation on the same labels (detector
    ``powersense_profile``), so the deployed figure stands next to the profile one; ``files`` must then cover
    the ``forecast_train_days`` before ``start`` the model trains on. The clean-period replay of the deployed
    path (its false alarms per week) issues every forecast a second time, so it runs only with
    ``deployed_clean``; the injected run's precision counts its false alarms either way. ``calendar``: the
    series' local zone and holidays (default: what its files say, :func:`series_calendar`). ``naive_tz`` /
    ``columns``: how a generic file is read, as ``evaluate`` reads it (:func:`read_history`)."""
    settings = get_settings()
    params = ResidualParams.from_settings(settings)
    calendar = calendar or series_calendar(files, columns=columns).calendar
    hist = read_history(files, start - pd.Timedelta(days=history_days), end, naive_tz=naive_tz, columns=columns)
    if "consommation" not in hist.columns:
        raise ValueError("no consommation/value column in the data")
    in_period = hist.loc[(hist["ts"] >= start) & (hist["ts"] < end), "consommation"]
    if not in_period.notna().any():
        # nothing to inject into or score: said in the user's terms, not as an IndexError deep in the grid code
        raise BadRequestError(f"no data between {_moment(start)} and {_moment(end)}; "
                              f"{data_extent(files, naive_tz, columns)}")
    other = is_other_series(hist.attrs["formats"])  # not France's files: none of RTE's publication rules
    x = regular_grid(hist.rename(columns={"consommation": "value"})[["ts", "value"]])
    step = x.index[1] - x.index[0]
    # a period past the data's end: evaluated up to the data's end, and said (it injected into the empty days and
    # reported weeks without data: 2 of 150 level shifts injected, scores of 1.00 with nothing to find)
    data_end = pd.Timestamp(x.last_valid_index()) + step
    period_note = None
    if data_end < end:
        if data_end - start < MIN_PERIOD:
            raise BadRequestError(f"the data end on {_moment(data_end)}, less than {MIN_PERIOD.days} days after "
                                  f"--start {_moment(start)}: anomalies are injected a day clear of each end")
        period_note = (f"the data end on {_moment(data_end)}: evaluated {_moment(start)} … {_moment(data_end)}, "
                       f"{(data_end - start) / pd.Timedelta(days=1):.1f} of the period's "
                       f"{(end - start) / pd.Timedelta(days=1):.1f} days")
        end = data_end
    x = x.reindex(pd.date_range(x.index[0], end - step, freq=step))
    x_inj, labels = inject(x, start, end, per_kind, seed)
    gaps = source_gaps(x, start, end, settings.detect_ignore_fallback_gap and not other)
    ticks = cron_ticks(start, end + pd.Timedelta(days=1), settings.detect_schedule)
    weeks = (end - start) / pd.Timedelta(weeks=1)
    # records of ODRÉ / RTE files the poller's validation refused, as forecast evaluation reports them
    report: dict[str, Any] = {"detectors": {}, "source_records_rejected": hist.attrs["rejections"] or None}
    detectors = {"powersense": expectation, "zscore_baseline": ""}
    dexps: dict[str, pd.Series] = {}
    deployed: dict[str, Any] = {}
    if expectation == "deployed":
        detectors["powersense_profile"] = "profile"
        # the model's grid, as evaluate chooses it: the configured step where the series fills it, else the finest
        # it fills (an hourly series: 60 min, not a 30-minute grid with every other point missing)
        from shared.features import grid_step_for

        try:
            res = grid_step_for(step / pd.Timedelta(minutes=1), None, settings.forecast_resolution_min)
        except ValueError as exc:
            raise BadRequestError(f"--expectation deployed: {exc}") from None
        settings = settings.model_copy(update={"forecast_resolution_min": res})
        deployed["resolution_min"] = res
        model, deployed["model"] = train_deployed(files, start, settings, calendar, naive_tz, columns)
        deployed["forecast_schedule"] = schedule = forecast_schedule()
        deployed["variants"] = {}
        for variant, series in (("injected", x_inj), ("clean", x))[: 2 if deployed_clean else 1]:
            fc, info = deployed_forecasts(model, series, start, end, settings, None if other else "consommation",
                                          schedule, progress)
            dexps[variant], share = deployed_delta(series, fc, start, calendar, settings.detect_forecast_weight)
            deployed["variants"][variant] = {**info, "points_with_forecast": round(share, 4)}
    jobs = [(d, v) for d in detectors for v in ("injected", "clean")]
    clean_events: dict[str, list[dict[str, str]]] = {}
    for det, variant in tqdm(jobs, desc="evaluate-anomalies", unit="run", disable=not progress):
        if detectors[det] == "deployed" and variant not in dexps:
            report["detectors"][det].update(false_alarms_per_week=None, clean_period_alarms=None,
                                            clean_period_source_gap_alarms=None,
                                            clean_period_reason="clean-period replay not run (--deployed-clean)")
            continue
        series = x_inj if variant == "injected" else x
        rows = run_detector(
            "zscore" if det == "zscore_baseline" else "powersense", series, start, end, params, settings,
            detectors[det] or "profile", dexps.get(variant) if detectors[det] == "deployed" else None, calendar,
            other,
        )
        rows = stamp_detection_times(rows, ticks, step, settings.detect_value_lag_min)
        if variant == "injected":
            report["detectors"][det] = score(rows, labels, gaps, step)
        else:
            ev = events_of(rows, step) if not rows.empty else pd.DataFrame(columns=["kind", "start", "end"])
            real = [
                any(_overlaps(e.start, e.end, g.start, g.end + MATCH_TAIL_STEPS * step) for g in gaps.itertuples())
                for e in ev.itertuples()
            ]
            false_ev = ev[~np.array(real, dtype=bool)] if len(ev) else ev
            report["detectors"][det]["false_alarms_per_week"] = round(len(false_ev) / weeks, 3)
            report["detectors"][det]["clean_period_alarms"] = int(len(false_ev))
            report["detectors"][det]["clean_period_source_gap_alarms"] = int(sum(real))
            clean_events[det] = [
                {"kind": e.kind, "start": e.start.isoformat(), "end": e.end.isoformat()} for e in false_ev.itertuples()
            ]
    powersense_f1 = report["detectors"]["powersense"]["overall"]["f1"]
    baseline_f1 = report["detectors"]["zscore_baseline"]["overall"]["f1"]
    report.update(
        {
            "period": {"start": start.isoformat(), "end": end.isoformat(), "weeks": round(weeks, 2),
                       "note": period_note},
            "data": [str(Path(f).name) for f in files],
            "seed": seed,
            "calendar": {"timezone": calendar.tz, "holidays": calendar.holidays or None},
            "step_min": int(step / pd.Timedelta(minutes=1)),
            "injected": labels["kind"].value_counts().to_dict() if not labels.empty else {},
            "source_gaps": [
                {"start": g.start.isoformat(), "end": g.end.isoformat(), "steps": int(g.steps)}
                for g in gaps.itertuples()
            ],
            "f1_ratio_vs_baseline": round(powersense_f1 / baseline_f1, 2) if baseline_f1 else None,
            "expectation": EXPECTATIONS[expectation],
            "schedule": settings.detect_schedule,
            "params": asdict(params),
            "clean_period_alarm_list": clean_events,
            "labels": [
                {**r, "start": r["start"].isoformat(), "end": r["end"].isoformat()} for r in labels.to_dict("records")
            ],
        }
    )
    if deployed:
        report["deployed"] = {**deployed, "approximations": DEPLOYED_APPROXIMATIONS}
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    """Per-kind F1 and median time-to-detect, PowerSense vs the z-score baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dets = [("powersense", "PowerSense"), ("zscore_baseline", "z-score baseline")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    pos = np.arange(len(KINDS))
    for j, (key, label) in enumerate(dets):
        d = report["detectors"][key]
        axes[0].bar(pos + (j - 0.5) * width, [d["per_kind"][k]["f1"] for k in KINDS], width, label=label)
        axes[1].bar(
            pos + (j - 0.5) * width, [d["median_time_to_detect_min"][k] or 0 for k in KINDS], width, label=label
        )
    # headroom above F1 = 1 keeps the legend clear of the bars
    axes[0].set(title="F1 per kind", xticks=pos, xticklabels=KINDS, ylim=(0, 1.3))
    axes[1].set(title="median time to detect (min)", xticks=pos, xticklabels=KINDS)
    axes[1].axhline(30, color="grey", linestyle="--", linewidth=0.8)
    axes[0].legend(loc="upper center", ncol=2)
    p = report["period"]
    names = report["data"]
    series = ("real eco2mix load" if names[0].startswith("eco2mix_national_")
              else names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}")
    fig.suptitle(f"Injected anomalies in {series}, {p['start'][:10]} → {p['end'][:10]} (seed {report['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _moment(ts: pd.Timestamp) -> str:
    """A UTC instant as a person reads it: the day alone at midnight, else day and time."""
    return f"{ts:%Y-%m-%d}" if ts == ts.normalize() else f"{ts:%Y-%m-%d %H:%M} UTC"


def data_extent(files: list[Path], naive_tz: str, columns: tuple[str, str] | None) -> str:
    """``the data cover FIRST to LAST`` (the files' first and last values, whatever the period): what an error about
    a period without data tells the user to choose from. Read again in full, only on that error path."""
    hist = read_history(files, naive_tz=naive_tz, columns=columns)
    ts = hist.loc[hist["consommation"].notna(), "ts"] if "consommation" in hist.columns else hist["ts"].iloc[:0]
    if ts.empty:
        return "the data hold no value"
    return f"the data cover {_moment(ts.min())} to {_moment(ts.max())}"


# inject keeps a day clear of each end; a day between them takes every kind but the longest level shifts and
# missing blocks (skipped where they do not fit: fewer labels, counted in the report's "injected")
MIN_PERIOD = pd.Timedelta(days=3)


def check_options(args: argparse.Namespace) -> None:
    """A :class:`BadRequestError` (one line) for an option value argparse accepts but the evaluation cannot use:
    it would otherwise be replaced silently (``--per-kind 0`` by the default) or fail deep inside (``--per-kind
    -2``: a ``KeyError``). An empty ``--timezone`` / ``--holidays`` is refused by ``series_calendar``."""
    if args.per_kind is not None and args.per_kind < 1:
        raise BadRequestError(f"--per-kind must be ≥ 1 (anomalies injected per kind; got {args.per_kind})")


def period_of(args: argparse.Namespace, default: tuple[str, str]) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(start, end) in UTC from ``--start`` / ``--end`` (each defaulting to ``default``); an end not after the start
    or a period too short to inject into is a :class:`BadRequestError` in the user's terms (numpy's
    ``low >= high`` otherwise)."""
    start_text = args.start or default[0]
    end_text = args.end or default[1]
    start, end = to_utc(start_text), to_utc(end_text)
    if end <= start:
        raise BadRequestError(f"--end ({end_text}{'' if args.end else ', its default'}) must be after "
                              f"--start ({start_text}{'' if args.start else ', its default'})")
    if end - start < MIN_PERIOD:
        raise BadRequestError(f"the period --start {start_text} … --end {end_text} is shorter than "
                              f"{MIN_PERIOD.days} days: anomalies are injected a day clear of each end")
    return start, end


def _iso_text(text: str) -> str:
    """An argparse type: ``text`` as the user wrote it (the errors quote it), once :func:`iso_instant` reads it."""
    iso_instant(text)
    return text.strip()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see module docstring). A bad input ends with one line on stderr and exit status 2, as
    ``evaluate``'s does."""
    return run_cli("evaluate-anomalies", _main, argv)


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared evaluate-anomalies", description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", type=Path,
                    help="history files (as evaluate reads them: eco2mix, ODRÉ, RTE, ENTSO-E, NESO or timestamp,value)")
    # ISO 8601 only (shared.timeutil.iso_instant, as bootstrap's --until): pandas read 04/05/2023 as 5 April
    ap.add_argument("--start", type=_iso_text, help="ISO 8601 day or instant, default 2023-01-01 (deployed: "
                                                   "2023-04-01)")
    ap.add_argument("--end", type=_iso_text, help="ISO 8601 day or instant, default 2024-01-01 (deployed: "
                                                 "2023-07-01)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--per-kind", type=int, help="anomalies injected per kind (default 30; deployed: 10 in a quarter)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    ap.add_argument(
        "--expectation",
        choices=sorted(EXPECTATIONS),
        default="profile",
        help="forecast source behind the residual detector's expectation",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (as evaluate's)")
    ap.add_argument("--deployed-clean", action="store_true",
                    help="deployed: also replay the clean period (false alarms per week; twice the forecast replay)")
    ap.add_argument("--timezone", default=None,
                    help="the series' local time zone (IANA name; default Europe/Paris for France's files, what an "
                         "ENTSO-E or NESO file says, UTC for a timestamp,value CSV): the profile's wall clock, the "
                         "detectors' hours")
    ap.add_argument("--holidays", default=None,
                    help="public-holiday calendar (a `holidays` country code, a country and subdivision such as "
                         "GB-ENG, or 'none'; default as evaluate chooses it): the profile's day types")
    add_file_arguments(ap)
    args = ap.parse_args(argv)
    check_options(args)
    settings = get_settings()
    configure_logging(settings.log_level)
    deployed = args.expectation == "deployed"
    start, end = period_of(args, DEPLOYED_PERIOD if deployed else ("2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z"))
    per_kind = args.per_kind if args.per_kind is not None else (10 if deployed else 30)
    if args.deployed_clean and not deployed:
        ap.error("--deployed-clean goes with --expectation deployed")
    # the deployed model trains on the forecast_train_days before the period
    files = args.data or default_files(start, end, settings.forecast_train_days + 1 if deployed else 70)
    if not files:
        raise no_shipped_history(start, end)
    columns = columns_option(args)
    calendar, note, _ = series_calendar(files, args.timezone, args.holidays, columns)
    if note:
        print(f"note: {note}", flush=True)
    report = evaluate(files, start, end, args.seed, per_kind, expectation=args.expectation,
                      deployed_clean=args.deployed_clean, calendar=calendar,
                      naive_tz=naive_tz_option(args, calendar.tz), columns=columns, progress=not args.no_progress)
    if report["period"]["note"]:
        print(f"note: {report['period']['note']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "anomaly_eval_deployed" if deployed else "anomaly_eval"
    # strict JSON: a figure that cannot be computed is null, never NaN
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str, allow_nan=False))
    plot(report, args.out / f"{stem}.png")
    log_event(
        log,
        "anomaly_eval_written",
        out=str(args.out),
        powersense=report["detectors"]["powersense"]["overall"],
        baseline=report["detectors"]["zscore_baseline"]["overall"],
    )
    print(table(report))
    return 0


def table(report: dict[str, Any]) -> str:
    """Markdown table: per kind precision / recall / F1 / median TTD, both detectors."""
    ps, zb = report["detectors"]["powersense"], report["detectors"]["zscore_baseline"]
    lines = [
        "| kind | PowerSense P / R / F1 | median TTD (min) | z-score P / R / F1 | median TTD (min) |",
        "|---|---|---|---|---|",
    ]
    def shown(value: Any) -> str:
        return "–" if value is None else str(value)  # not measured (nothing of the kind detected, no clean run)

    def ttd(detector: dict[str, Any], kind: str) -> str:
        return shown(detector["median_time_to_detect_min"][kind])

    for k in KINDS:
        a, b = ps["per_kind"][k], zb["per_kind"][k]
        lines.append(
            f"| {k} | {a['precision']:.2f} / {a['recall']:.2f} / {a['f1']:.2f} | "
            f"{ttd(ps, k)} | {b['precision']:.2f} / {b['recall']:.2f} / {b['f1']:.2f} | {ttd(zb, k)} |"
        )
    for name, key in (("overall", "overall"),):
        a, b = ps[key], zb[key]
        lines.append(
            f"| **{name}** | {a['precision']:.2f} / {a['recall']:.2f} / {a['f1']:.2f} | | "
            f"{b['precision']:.2f} / {b['recall']:.2f} / {b['f1']:.2f} | |"
        )
    lines.append(f"| false alarms / week (clean) | {shown(ps['false_alarms_per_week'])} | | "
                 f"{shown(zb['false_alarms_per_week'])} | |")
    if "powersense_profile" in report["detectors"]:  # the deployed run: the profile expectation on the same labels
        pp = report["detectors"]["powersense_profile"]
        o = pp["overall"]
        lines.append(f"| overall, profile expectation (same labels) | {o['precision']:.2f} / {o['recall']:.2f} / "
                     f"{o['f1']:.2f} | | | |")
        lines.append("| false alarms / week (clean), profile expectation | "
                     f"{shown(pp['false_alarms_per_week'])} | | | |")
    return "\n".join(lines)
