"""Real-forecast backtests on the product's own data: the temperature forecast as known at each origin, from the store.

PowerSense keeps every temperature forecast poll-weather received (versioned measurements, issue time =
``inserted_at``), so after deployment a backtest can use the forecasts that were really known at each origin
instead of the (a) perfect / (b) simulated forecasts of ``make evaluate --weather`` (no archived forecasts ship
with the product). :func:`store_provider` is the :data:`shared.forecasting.evaluate.WeatherProvider` that reads
them, with the temperature known before each origin (``featurize.read_known_inputs(store, …, as_of=origin, …)``:
versions inserted after an origin are never read for it).

``python -m shared evaluate-weather-store --test-start 2025-01-01 --test-end 2025-04-01`` runs the backtest of
``make evaluate`` (``shared.forecasting.evaluate.backtest``: same training, promotion, combination with naive,
adaptive intervals) on the store's series (``features``, the grid featurize wrote) twice, same origins: the weather
model with the stored forecasts, and the weather-free model. How each model reads the weather (in the report's notes):

* the training holdouts score the weather model as production's training does (``service.holdout_weather``):
  with the stored forecast as known at each holdout origin where one covers it, elsewhere the realised
  temperature plus the simulated forecast error of ``make evaluate --weather`` (no forecast known at a holdout
  origin is required);
* before each origin the model reads the temperature as the store knew it then (each realised
  source as stored at the origin — the archive days behind — and the forecasts' own hours after its newest value,
  combined as featurize combined them), so the smoothing state at the origin is production's, not one informed by
  realised values that arrived later. (Until 2026-12-05 the realised temperature as stored *now* was read there:
  slightly optimistic.)
* not as of each origin (the report's notes): the load, featurize's grid as stored when the command runs, and the
  realised temperature behind the model's past residuals (``store_grid``): both models read the same, so their
  comparison is like for like and their absolute errors optimistic.

It refuses (exit status 2) a test period with an origin whose stored forecast, as known then, does not cover
D+7 (before poll-weather ran, or during an outage): those origins would have had the weather-free model in
production, so they say nothing about the weather model's accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.errors import BadRequestError
from shared.settings import REPO_ROOT, Settings
from shared.store import Store
from shared.timeutil import to_utc

WeatherProviderT = Any  # Callable[[pd.DatetimeIndex], pd.DataFrame]; the alias lives in forecasting.evaluate


def store_provider(store: Store, horizon: pd.Timedelta, resolution_min: int) -> WeatherProviderT:
    """The temperature path as the store knew it at each origin: the national temperature forecast for
    ``[origin, origin + horizon]`` (hourly, as stored) and, before the origin, the realised temperature as known
    then — each realised source as stored at the origin, and where the archive had not yet arrived (it runs days
    behind) the forecasts' own hours, as featurize combined them (``featurize.read_known_inputs`` and
    ``combine_realised``, on the ``resolution_min`` grid): ``origin, ts, temp_degc``, from
    :data:`~shared.weather.features.WARMUP` before each origin. An origin with no forecast known then gets no rows.
    One as-of read per source and origin: a version stored after an origin is never read for it."""
    from shared.weather.features import WARMUP
    from shared.weather.featurize import combine_realised, read_known_inputs

    def provide(origins: pd.DatetimeIndex) -> pd.DataFrame:
        parts = []
        for o in pd.DatetimeIndex(origins).tz_convert("UTC"):
            # one hour more: the grid steps of the last hour are interpolated between two forecast hours
            end = o + horizon + pd.Timedelta(hours=1)
            sources, forecast = read_known_inputs(store, o - WARMUP, o, end)
            future = forecast[pd.DatetimeIndex(forecast["ts"]) >= o].dropna(subset=["value"])
            if future.empty:
                continue
            past = combine_realised(sources, forecast, o, resolution_min)
            parts.append(pd.DataFrame({"origin": o, "ts": pd.DatetimeIndex(past["ts"]).tz_convert("UTC"),
                                       "temp_degc": past["temp_degc"].astype(float).to_numpy()}))
            parts.append(pd.DataFrame({"origin": o, "ts": pd.DatetimeIndex(future["ts"]).tz_convert("UTC"),
                                       "temp_degc": future["value"].astype(float).to_numpy()}))
        if not parts:
            return pd.DataFrame({"origin": pd.DatetimeIndex([], tz="UTC"), "ts": pd.DatetimeIndex([], tz="UTC"),
                                 "temp_degc": np.array([], float)})
        return pd.concat(parts, ignore_index=True).dropna(subset=["temp_degc"])

    return provide


def uncovered_origins(frame: pd.DataFrame, origins: pd.DatetimeIndex, until: pd.Timedelta) -> list[pd.Timestamp]:
    """Origins whose provided forecast does not reach ``origin + until`` (pure)."""
    last = frame.groupby("origin")["ts"].max() if len(frame) else pd.Series(dtype="datetime64[ns, UTC]")
    out = []
    for o in pd.DatetimeIndex(origins).tz_convert("UTC"):
        end = last.get(o)
        if end is None or pd.isna(end) or end < o + until - pd.Timedelta(hours=1):
            out.append(o)
    return out


def store_grid(store: Store, settings: Settings, start: pd.Timestamp, end: pd.Timestamp,
               now: datetime) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    """(load grid, load grid with the realised weather features, RTE's J-1 grid or None, the newest temperature
    known for every step: ``ts, temp_degc``) from the store: the grid the forecast stage reads (``load_grid``:
    featurize's ``features``), the weather featurize wrote as known at ``now``."""
    from shared.features import build_grid
    from shared.forecasting.gate import gate
    from shared.forecasting.service import load_grid, with_weather
    from shared.series import load_series
    from shared.weather.featurize import read_weather_history, read_weather_run

    grid = load_grid(store, settings, start, end)
    hist = read_weather_history(store, settings, start, end, now)
    run = read_weather_run(store, settings, now, start)
    parts = [f[["ts", "temp_degc"]] for f in (hist, run.path if run is not None else None) if f is not None]
    newest = pd.concat(parts, ignore_index=True).dropna().drop_duplicates("ts", keep="last").sort_values("ts")
    rte = None
    pj = load_series(store, settings.series_source, "prevision_j1", start.to_pydatetime(), end.to_pydatetime())
    pj = pj.dropna(subset=["value"])[["ts", "value"]]
    if len(pj):
        pj = gate(pj.sort_values("ts").reset_index(drop=True), settings, metric="prevision_j1").frame
        rte = build_grid(pj, settings.forecast_resolution_min, max_interp_steps=0)[["ts", "value"]]
    return grid, with_weather(grid, hist, realised_only=True), rte, newest


def evaluate_store(store: Store, settings: Settings, test_start: pd.Timestamp, test_end: pd.Timestamp, *,
                   retrain_days: int, origin_hour: int, now: datetime, progress: bool = False) -> dict[str, Any]:
    """The real-forecast backtest (module docstring): the weather model with the stored forecasts vs the
    weather-free model, same origins. Raises BadRequestError when the store cannot support it."""
    from dataclasses import replace

    from shared.forecasting import evaluate as ev
    from shared.forecasting.service import holdout_weather, model_config

    if not 0 <= origin_hour <= 23:
        raise BadRequestError(f"the origin hour must be 0–23 (got {origin_hour})")
    if retrain_days < 0:
        raise BadRequestError(f"retrain days must be ≥ 0 (0 = trained once; got {retrain_days})")
    horizon = ev.TARGET_SPAN
    train_start = test_start - pd.Timedelta(days=settings.forecast_train_days)
    origins = ev.daily_origins(test_start, test_end, origin_hour)
    if len(origins) == 0:
        raise BadRequestError("test period too short: no daily origin inside it")
    provider = store_provider(store, horizon, settings.forecast_resolution_min)
    known = provider(origins)
    # D+7 ends at most 8.5 days after a noon origin; the stored forecast must reach the end of local D+7
    ahead = known[known["ts"] >= known["origin"]]  # the forecasts (each origin also brings its past as known then)
    missing = uncovered_origins(known, origins, pd.Timedelta(days=ev.HORIZON_DAYS + 1) - pd.Timedelta(hours=12))
    if missing:
        raise BadRequestError(
            f"{len(missing)} of {len(origins)} origins have no stored temperature forecast covering D+7 as known "
            f"then (first: {missing[0].isoformat()}); choose a test period after poll-weather started")
    grid, gw, rte, newest = store_grid(store, settings, train_start, test_end + horizon, now)
    if gw["temp_degc"].notna().sum() == 0:
        raise BadRequestError("no realised weather features in the store: run weather-backfill, then featurize")
    cfg = model_config(settings)
    t0 = time.perf_counter()
    plain = ev.backtest(grid, rte, train_start, test_start, test_end, settings, retrain_days, origin_hour,
                        progress=progress, cfg=replace(cfg))
    realised = gw[["ts", "temp_degc"]]
    wrep = ev.backtest(gw, rte, train_start, test_start, test_end, settings, retrain_days, origin_hour,
                       progress=progress, cfg=replace(cfg, weather=True),
                       weather={"powersense_weather_store": provider},
                       holdout_weather=holdout_weather(realised, newest, settings, store))
    models = {"powersense_weather_store": wrep["models"]["powersense_weather_store"],
              "weather_free": plain["models"]["powersense"], "seasonal_naive": plain["models"]["seasonal_naive"]}
    models.update({k: v for k, v in plain["models"].items() if k in ev.BENCHMARKS})
    return {
        "what": "real-forecast backtest on the product's own data: the weather model with the temperature "
                "forecasts stored by poll-weather as known at each origin, vs the weather-free model, same origins",
        "notes": [
            "training holdouts, as production's training scores them: the stored forecast as known at each holdout "
            "origin where one covers it, elsewhere the realised temperature plus a simulated forecast error",
            "before each origin the temperature is read as the store knew it then (each realised source as stored "
            "at the origin, the forecasts' own hours after the newest realised value), as featurize combined it",
            "not as of each origin: the load (featurize's grid as stored now: consolidated figures and revisions "
            "stored after an origin included) and the realised temperature behind the model's past residuals; "
            "both models read the same, so the comparison is like for like, the absolute errors optimistic",
        ],
        "models": models,
        "test_period": plain["test_period"],
        "origins": plain["origins"],
        "retrains": {"weather": wrep["retrains"], "weather_free": plain["retrains"]},
        "train_seconds": {"weather": wrep["train_seconds"], "weather_free": plain["train_seconds"]},
        "forecast_hours_per_origin": round(float(ahead.groupby("origin")["ts"].count().mean()), 1),
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m shared evaluate-weather-store --test-start D --test-end D [--out DIR]``."""
    from shared import clock
    from shared.forecasting import evaluate as ev
    from shared.forecasting.gate import strict
    from shared.settings import get_settings
    from shared.store import get_store
    from shared.timeutil import iso_day

    p = argparse.ArgumentParser(prog="python -m shared evaluate-weather-store",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--test-start", type=iso_day, required=True,
                   help="first local day of the test period (YYYY-MM-DD)")
    p.add_argument("--test-end", type=iso_day, required=True, help="local day after the test period (YYYY-MM-DD)")
    p.add_argument("--retrain-days", type=int, default=ev.DEFAULT_RETRAIN_DAYS,
                   help=f"retrain every N days (default {ev.DEFAULT_RETRAIN_DAYS}; production: daily)")
    p.add_argument("--origin-hour", type=int, default=12, help="local hour of the daily forecast origin")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.test_end <= a.test_start:  # both YYYY-MM-DD: text order is date order
        p.error(f"--test-end {a.test_end} must be after --test-start {a.test_start}")
    settings = get_settings()
    # a bad period or too little data is one line, exit 2 (python -m shared runs every command through run_cli)
    report = evaluate_store(get_store(settings), settings, ev.local_midnight(a.test_start),
                            ev.local_midnight(a.test_end), retrain_days=a.retrain_days,
                            origin_hour=a.origin_hour, now=to_utc(clock.now()).to_pydatetime(),
                            progress=not a.no_progress)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "forecast_eval_weather_store.json"
    path.write_text(json.dumps(strict(report), indent=2, allow_nan=False) + "\n")
    for name, m in report["models"].items():
        mapes = ", ".join(f"{d} {v['mape']}" for d, v in m.items() if d.startswith("D+") and isinstance(v, dict))
        print(f"{name:<26} MAPE % {mapes}")
    print(f"wrote {path}")
    return 0
