"""The fallback a forecast run issues without a usable model (no model yet, the artifact store down, stale data,
a series under 56 days): how good is it, per lead day, on France's real load?

``python -m bench.fallback [--years 2019 … 2023] [--daily-naive-max-lead N] [--stale-hours H]`` (≈ 25 min a year on
2 cores). One origin a day at 12:00 Paris time, the shipped national load through the training-data gate (``make
evaluate``'s grid), fresh data (the last value the step before the origin) unless ``--stale-hours`` says otherwise.
At each origin, from the data before it only (the ``service.FALLBACK_HISTORY`` a fallback reads):

* ``fallback``: the product's (``service.best_simple_model``: per 24-hour lead day the simple model with the lowest
  MAPE over the last 28 days' daily origins, yesterday's copy a candidate for lead day 1 only, bounds from the
  chosen copies' errors over the last 91 days);
* ``seasonal_naive_28d``: the fallback until 2026-12-07 (seasonal naive, bounds from its errors over the last 28
  days);
* with ``--daily-naive-max-lead N``, ``daily_naive_to_lead_N``: the product's rule with yesterday's copy a candidate
  up to lead day N (7: at every lead day, the choice ``baseline.SIMPLE_MAX_LEAD_DAY`` rules out).

``--stale-hours H``: the run the forecast stage makes when the data end H hours before the origin (a gap of H
between the last value and the first target; the newest value is H + 30 min old; a feed down, past
``POWERSENSE_FORECAST_MAX_STALENESS_HOURS``). ``fallback`` is then exactly production's ``service.fallback_forecast``
at the origin (its targets start at the origin, its copies are chosen and calibrated across the gap);
``seasonal_naive_28d`` is the fallback until 2026-12-07, which knew no gap. Lead day k: the k-th 24 hours from the
origin. ``--no-max-gap``: without ``baseline.SIMPLE_MAX_GAP`` (yesterday's copy a candidate at any gap, as measured
before that limit was set).

Per 24-hour lead day: MAPE and 80 % interval coverage, and how often each copy was issued. Printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from shared.calendar import TZ
from shared.detection.evaluate import default_files
from shared.forecasting import baseline
from shared.forecasting.evaluate import load_data
from shared.forecasting.service import (
    FALLBACK_CHOICE_DAYS,
    FALLBACK_HISTORY,
    LEVEL_BLOCKS,
    SimpleModel,
    best_simple_model,
    fallback_forecast,
    holdout_metrics,
)
from shared.settings import Settings

STEP = pd.Timedelta(minutes=30)
LEVEL = 0.8


def _variants(past: pd.DataFrame, last: pd.Timestamp, daily_max_lead: int | None) -> dict[str, SimpleModel]:
    out = {"fallback": best_simple_model(past, last, STEP, LEVEL),
           "seasonal_naive_28d": best_simple_model(past, last, STEP, LEVEL, calibration_days=FALLBACK_CHOICE_DAYS,
                                                   models=("seasonal_naive",))}
    if daily_max_lead is not None:
        out[f"daily_naive_to_lead_{daily_max_lead}"] = best_simple_model(
            past, last, STEP, LEVEL, max_lead={"daily_naive": daily_max_lead})
    return out


def _stale(past: pd.DataFrame, origin: pd.Timestamp, steps: int, settings: Settings) -> dict[str, pd.DataFrame]:
    """The product's fallback as the forecast stage issues it at ``origin`` from ``past`` (data ending hours before
    it), and the fallback until 2026-12-07 (seasonal naive, 28-day bounds, no notion of the gap)."""
    fc, _ = fallback_forecast(past, origin, settings)
    fc = fc[fc["ts"] >= origin].assign(origin=origin)
    fc["lead_day"] = ((fc["ts"] - origin) // pd.Timedelta(days=1)).astype(int) + 1
    last = past.dropna(subset=["value"])["ts"].max()
    old = best_simple_model(past, last, STEP, LEVEL, calibration_days=FALLBACK_CHOICE_DAYS, models=("seasonal_naive",))
    return {"fallback": fc,
            "seasonal_naive_28d": baseline.apply_intervals(old.forecast(past, pd.DatetimeIndex([origin]), steps, STEP),
                                                           old.calibration)}


def run_year(grid: pd.DataFrame, year: int, daily_max_lead: int | None = None,
             progress: bool = True, stale_hours: float = 0) -> dict[str, Any]:
    """Per lead day, MAPE and coverage of each variant over one year's noon origins; with ``stale_hours``, the data
    end that many hours before each origin."""
    origins = pd.date_range(f"{year}-01-01 12:00", f"{year}-12-31 12:00", freq="D", tz=TZ).tz_convert("UTC")
    steps = int(pd.Timedelta(days=LEVEL_BLOCKS) / STEP)
    gap = pd.Timedelta(hours=stale_hours)
    settings = Settings(forecast_resolution_min=30, forecast_interval_level=LEVEL)  # STEP, LEVEL
    issued: dict[str, list[pd.DataFrame]] = {}
    for o in tqdm(origins, desc=str(year), unit="origin", disable=not progress, file=sys.stderr):
        past = grid[(grid["ts"] < o - gap) & (grid["ts"] >= o - FALLBACK_HISTORY)]
        if stale_hours:
            for name, fc in _stale(past, o, steps, settings).items():
                issued.setdefault(name, []).append(fc)
            continue
        last = past.dropna(subset=["value"])["ts"].max()
        for name, simple in _variants(past, last, daily_max_lead).items():
            fc = simple.forecast(past, pd.DatetimeIndex([o]), steps, STEP)
            issued.setdefault(name, []).append(baseline.apply_intervals(fc, simple.calibration))
    out: dict[str, Any] = {}
    for name, frames in issued.items():
        fc = pd.concat(frames, ignore_index=True)
        fc = fc[fc["lead_day"] <= 7]
        m = holdout_metrics(fc, grid, grid["ts"].max() + STEP)
        j = fc.merge(grid[["ts", "value"]], on="ts").dropna(subset=["value", "lower", "upper"])
        cov = ((j["value"] >= j["lower"]) & (j["value"] <= j["upper"])).groupby(j["lead_day"]).mean()
        out[name] = {"mape_by_lead_day": m["mape_by_lead_day"],
                     "coverage_by_lead_day": {str(int(k)): round(float(v), 3) for k, v in cov.items()},
                     "sources": {str(int(k)): {str(s): int(n) for s, n in g.value_counts().items()}
                                 for k, g in fc.groupby("lead_day")["yhat_source"]}}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the years and print the JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.fallback", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--years", type=int, nargs="+", default=[2023])
    p.add_argument("--daily-naive-max-lead", type=int, choices=range(1, 8), default=None)
    p.add_argument("--stale-hours", type=float, default=0,
                   help="the data end this many hours before each origin (production's fallback on a feed down)")
    p.add_argument("--no-max-gap", action="store_true",
                   help="yesterday's copy a candidate at any gap (without baseline.SIMPLE_MAX_GAP)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.no_max_gap:
        baseline.SIMPLE_MAX_GAP.clear()
    if a.stale_hours < 0 or (a.stale_hours and a.daily_naive_max_lead is not None):
        p.error("--stale-hours is a positive number of hours, and compares the product with the old fallback only "
                "(without --daily-naive-max-lead)")
    first, last = min(a.years), max(a.years)
    start = pd.Timestamp(f"{first}-01-01", tz="UTC")
    files = default_files(start, pd.Timestamp(f"{last + 1}-01-08", tz="UTC"), FALLBACK_HISTORY.days + 1)
    grid, _ = load_data(files, 30)
    result: dict[str, Any] = {str(y): run_year(grid, y, a.daily_naive_max_lead, not a.no_progress, a.stale_hours)
                              for y in a.years}
    mean: dict[str, Any] = {}
    for name in result[str(a.years[0])]:
        for key in ("mape_by_lead_day", "coverage_by_lead_day"):
            vals = [result[str(y)][name][key] for y in a.years]
            mean.setdefault(name, {})[key] = {k: round(float(np.mean([v[k] for v in vals])), 3) for k in vals[0]}
    result["mean"] = mean
    print(json.dumps(result, indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
