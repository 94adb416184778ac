"""The forecast stage: train on schedule, keep the better model, issue a 7-day forecast every run.

``plan → compute → write``:

1. read the grid featurize wrote (``features``: the series through the training-data gate, ``gate.py``, on
   the grid, flags included; a tail featurize has not written yet is computed in-process by the same code)
   and drop the points the detect stage flagged as open anomalies (:func:`load_grid`);
2. decide whether to train: no current model, current model older than ``forecast_retrain_hours``,
   or a ``retrain_request`` row in ``model_metrics`` newer than the model (table owned by detect;
   read defensively);
3. train on the window minus the most recent ``forecast_holdout_days`` (at most a quarter of the history),
   learn per lead day the model's weight against seasonal naive (``combine.py``), calibrate the intervals and
   score the issued combination on that holdout; score the current model and seasonal naive on the same
   holdout; move the ``current`` pointer only if the new one is worse than neither (else keep it and say why);
4. forecast 7 local days ahead from the current model (loaded from the artifact store once per
   process, cached by version) combined with seasonal naive per lead day, with adaptive conformal intervals
   from the recently issued forecasts' errors, and write ``forecasts`` rows with ``quality='model'`` and the
   source of each lead day (``yhat_source``, ``model_weight``);
5. on any of: no model, input checks failed (stale or incomplete data), artifact store down,
   prediction error → the simple-model fallback (:func:`fallback_forecast`) with ``quality='fallback'`` and
   the reason, so consumers always get 7 days ahead.

**Weather** (issue 12; ``POWERSENSE_FORECAST_WEATHER``). Two models are kept, each under its own artifact series:
the weather-free model (``series_key``, as before) and the weather model (``weather_series_key``, trained on the
``features`` grid + the realised weather features featurize wrote, ``shared/weather/featurize.py``). Each run
reads the weather as known at the run (:func:`weather_inputs`: the newest ``weather_features`` run with
``as_of <= now``) and issues the weather model only when that weather is fresh (newest temperature forecast issued
at most ``POWERSENSE_WEATHER_MAX_AGE_H`` ago) and covers every target step; otherwise the weather-free model's
forecast, flagged: every ``forecasts`` row carries ``weather_status`` (``used`` | ``off`` | ``missing`` |
``stale`` | ``incomplete`` | ``no_model`` | ``failed`` | ``unused``), pushed as gauges too. It never fails a run
and never uses stale weather.

Training budget: one model per invocation (:func:`training_plan`). The model the run issues (weather model while
the weather is fresh, else the weather-free one) retrains every ``forecast_retrain_hours``; the other, the
standby, every ``forecast_standby_retrain_hours`` (a week) in a run that trains nothing else — so a retrain stays
one model's training (the budget of issue 12: ≤ 120 s), and the fallback is at most a week old when the feed
fails (its level network, recent shape and nowcast still read the latest load at every run). A fresh install
trains the weather-free model first: it is the safety net.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import Counter, Gauge

from shared.calendar import day_start, local_dates
from shared.errors import ArtifactError, ModelError, StoreError
from shared.features import TZ, floor_to_grid, grid_phase
from shared.forecasting import baseline, combine
from shared.lease import Lease
from shared.logs import log_event
from shared.metrics import REGISTRY
from shared.process_limits import memory_limit_bytes, peak_rss_bytes
from shared.runs import Run
from shared.series import data_age_s, freshness_status
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import to_utc
from shared.weather.damping import fit_normal, learn_damping, normal_offset
from shared.weather.features import WEATHER_COLUMNS
from shared.weather.featurize import FORECAST_LABEL, PAST_KEEP, read_weather_history, read_weather_run

log = logging.getLogger(__name__)
# A training's lease (per series): above the forecast's 300 s exec_timeout, so a crashed trainer's lease expires
# within a quarter of an hour and the next hourly run trains.
TRAIN_LEASE_TTL_S = 900.0

LEVEL_BLOCKS = 8


def model_config(settings: Settings, weather: bool = False) -> Any:
    """The model hyper-parameters from settings (imports the ML stack lazily); ``weather``: the weather model's."""
    from shared.forecasting.model import ModelConfig

    cfg = ModelConfig(
        resolution_min=settings.forecast_resolution_min,
        epochs=settings.forecast_epochs,
        learning_rate=settings.forecast_learning_rate,
        batch_size=settings.forecast_batch_size,
        profile_min_steps=settings.forecast_profile_min_steps,
        level_lags=settings.forecast_level_lags,
        weather_level_lags=settings.forecast_weather_level_lags,
        level_epochs=settings.forecast_level_epochs,
        profile_seeds=settings.forecast_profile_seeds,
        weather_profile_seeds=settings.forecast_weather_profile_seeds,
        weather_linear_weight=settings.forecast_weather_linear_weight,
        weather_damping=settings.forecast_weather_damping,
        interval_level=settings.forecast_interval_level,
        interval_centered=settings.forecast_interval_centered,
        seed=settings.forecast_seed,
        torch_threads=settings.forecast_torch_threads,
        train_processes=settings.forecast_train_processes,
    )
    if weather:
        cfg.weather = True  # production derives every path the same way (shared/weather/featurize.py)
    return cfg


# --- pure pieces ---------------------------------------------------------------------------------------
def holdout_origins(start: pd.Timestamp, end: pd.Timestamp, hour: int = 12, tz: str = TZ,
                    cfg: Any | None = None) -> pd.DatetimeIndex:
    """Daily origins at ``hour`` local time whose first day of targets lies inside [start, end); with a model
    configuration ``cfg``, floored onto its grid (:func:`on_model_grid`)."""
    days = pd.date_range(local_dates(pd.DatetimeIndex([start]), tz)[0], local_dates(pd.DatetimeIndex([end]), tz)[0],
                         freq="D")
    out = on_model_grid(pd.DatetimeIndex([(d + pd.Timedelta(hours=hour))
                                          .tz_localize(tz, nonexistent="shift_forward", ambiguous=True)
                                          .tz_convert("UTC") for d in days]), cfg)
    return pd.DatetimeIndex([o for o in out if start + pd.Timedelta(days=1) <= o < end - pd.Timedelta(days=1)])


def on_model_grid(origins: pd.DatetimeIndex, cfg: Any | None) -> pd.DatetimeIndex:
    """``origins`` floored onto the grid of the model configuration ``cfg`` (its step and ``grid_phase_min``): a
    forecast's targets start at its origin, so an origin between two grid instants (local noon of a zone half an
    hour off UTC on an hourly grid) would forecast instants the series never has, and nothing would be scored.
    ``cfg`` None: unchanged."""
    if cfg is None or not len(origins):
        return pd.DatetimeIndex(origins)
    return floor_to_grid(origins, cfg.resolution_min, pd.Timedelta(minutes=cfg.grid_phase_min))


def holdout_metrics(fc: pd.DataFrame, actual: pd.DataFrame, end: pd.Timestamp) -> dict[str, Any]:
    """MAPE per lead day (and overall) of forecasts whose targets fall before ``end``."""
    j = fc[fc["ts"] < end].merge(actual[["ts", "value"]], on="ts").dropna(subset=["value", "yhat"])
    j = j[j["value"] > 0]  # the gated series has no such value; a raw frame might (MAPE would be inf)
    if j.empty:
        return {"mape": None, "n": 0, "reason": "no valid actual in the holdout"}
    ape = (j["yhat"] - j["value"]).abs() / j["value"].abs() * 100
    per_day = {str(int(k)): round(float(v), 3) for k, v in ape.groupby(j["lead_day"]).mean().items()}
    cov = None
    if "lower" in j and j["lower"].notna().all():
        cov = round(float(((j["value"] >= j["lower"]) & (j["value"] <= j["upper"])).mean()), 3)
    return {"mape": round(float(ape.mean()), 3), "mape_by_lead_day": per_day, "coverage": cov, "n": int(len(j))}


def train_and_calibrate(grid: pd.DataFrame, settings: Settings, cfg: Any | None = None,
                        weather: Any | None = None) -> tuple[Any, dict[str, Any]]:
    """Train on ``grid`` minus its last ``forecast_holdout_days``; calibrate and score on the holdout. A model without
    a level network (less than ``forecast_level_min_history_days`` of valid history) is then trained again on the
    whole of ``grid``, keeping the holdout's weights, calibration and yearly seasonality (its ``meta["train_end"]``
    then lies past the holdout's start: :func:`trained_on_holdout`).

    Returns the model and ``{"holdout": [start, end], "metrics": {...}}``.

    A weather model (``cfg.weather``): ``grid`` carries the realised weather (``WEATHER_COLUMNS``); the holdout
    forecasts use, at each holdout origin, the realised weather before it and ``weather(origins)`` (a
    ``WeatherProvider``: ``origin, ts, temp_degc``, the temperature forecast known at each origin) after it. Without a
    provider the realised temperature stands for the forecast (a perfect forecast: the holdout is optimistic) and
    ``metrics["holdout_weather"]`` says so.
    """
    from shared.forecasting import model as fm

    cfg = cfg or model_config(settings)
    data = grid.dropna(subset=["value"])
    if data.empty:
        raise ModelError("no data to train on")
    if cfg.weather:
        # the weather model keeps its own window (forecast_weather_train_days): the one it was measured with, and
        # each of its profile fits (weather_profile_seeds) scales with it (training ≤ 120 s)
        first = data["ts"].max() - pd.Timedelta(days=settings.forecast_weather_train_days)
        grid = grid[grid["ts"] > first]
        data = data[data["ts"] > first]
    days = valid_history_days(grid, cfg.resolution_min)
    if days < settings.forecast_model_min_history_days:
        raise ModelError(f"{days:.0f} days of valid history; the model needs at least "
                         f"{settings.forecast_model_min_history_days} (POWERSENSE_FORECAST_MODEL_MIN_HISTORY_DAYS)")
    end = data["ts"].max() + pd.Timedelta(minutes=cfg.resolution_min)
    hold_start = end - pd.Timedelta(days=holdout_days(days, settings))
    if days < settings.forecast_level_min_history_days:
        # too few daily blocks: the level network fits noise and the carried-forward level (reverting by weights
        # learnt on the history, ModelConfig.persistence_shrink) does better at long leads
        # (ModelConfig.level_network, measured in bench.short_series)
        cfg = replace(cfg, level_network=False)
    origins = holdout_origins(hold_start, end, tz=cfg.timezone, cfg=cfg)
    if len(origins) == 0:
        raise ModelError("holdout too short for calibration")
    wx, holdout_weather, without_weather = None, None, None
    if cfg.weather:
        # before the fit: a holdout the weather cannot score fails in seconds, not after a training's minute
        wx, holdout_weather = holdout_weather_features(grid, origins, cfg, weather)
        origins, without_weather = weather_scored_origins(wx, origins, cfg)
        wx = wx[pd.DatetimeIndex(wx["origin"]).tz_convert("UTC").isin(origins)]
    model = fm.fit(grid[grid["ts"] < hold_start], cfg)
    if wx is not None and cfg.weather_damping:
        # the slopes the temperature forecast's anomaly is damped by, learnt on the forecasts the holdout is
        # scored with (those production meets); predict applies them, here and in every later prediction
        # (another series than France's: toward its own normal, none with under a year of temperature)
        harmonics = fit_normal(grid) if cfg.weather_normal == "own" else []
        if cfg.weather_normal != "own" or harmonics:
            model.weather_normal_harmonics = harmonics
            model.weather_normal_offset = normal_offset(grid, harmonics)
            model.weather_damping = learn_damping(wx, grid, model.weather_normal_offset, harmonics)
    raw = fm.predict(model, grid, origins, weather=wx, parts=True)
    raw = raw[raw["ts"] < end]
    if "yhat_linear" in raw:
        # the weather model's linear part: its weight per lead day learnt here, like naive's below, on a holdout
        # scored with temperature forecast errors (which cost the regression more than the networks)
        model.linear_blend = combine.learn_weights(raw, raw["yhat_linear"].to_numpy(), grid)
        raw = fm.mix_linear(raw, model)
    # seasonal naive is a permanent challenger: per lead day, the weight of the model against naive with the
    # lowest holdout MAPE (0 = naive alone is a candidate, so the issued forecast is never worse on the holdout)
    naive = combine.naive_like(raw, grid, cfg.timezone)
    model.blend = combine.learn_weights(raw, naive, grid)
    fc = combine.apply_weights(raw, naive, model.blend)
    # the intervals are calibrated on what is issued (the combination), not on the model alone
    fm.calibrate(model, fc, grid)
    fc = baseline.apply_intervals(fc, model.calibration)
    metrics = holdout_metrics(fc, grid, end)
    metrics["model_only_mape"] = holdout_metrics(raw, grid, end)["mape"]
    metrics["naive_mape"] = holdout_metrics(raw.assign(yhat=naive), grid, end)["mape"]
    if warning := short_holdout_warning(days, settings):
        metrics["warning"] = warning
    if holdout_weather:
        metrics["holdout_weather"] = holdout_weather
    if without_weather:
        metrics["origins_without_weather"] = without_weather
    if not cfg.level_network:
        # a model without a level network (less valid history than forecast_level_min_history_days) is trained again
        # on the whole history once the holdout has set its weights and calibration: the holdout is its most recent
        # days (a quarter of a short series). bench.short_series: better at every D+k on 63-, 182-, 273- and
        # 400-day histories, from D+2 on at 730 days. It keeps the holdout model's yearly seasonality: a history
        # whose training part is under a year but whole is over it would otherwise gain a yearly term fitted on one
        # cycle, which the weights were not learnt for (400 days: worse than no refit at D+5/D+6, 2.58 pp over naive
        # in one cell). The holdout metrics stay those of the model that did not see the holdout. Not done with a
        # level network (experiments in README, *Where the refit of a network stops paying*): 0.01–0.20 pp better
        # on 913-day histories, 0.02–0.09 on three-year ones, worse on the three-year weather model (2023) and the
        # four-year main series (2017); and a refit current model has seen the next daily retrain's holdout, so
        # the promotion could no longer compare the two (it rejected a worse weather retrain in the 2023 backtest).
        refit = fm.fit(grid, replace(cfg, yearly_order=model.config.yearly_order))
        model = replace(refit, blend=model.blend, calibration=model.calibration, linear_blend=model.linear_blend,
                        weather_damping=model.weather_damping, weather_normal_offset=model.weather_normal_offset,
                        weather_normal_harmonics=model.weather_normal_harmonics)
    model.meta.update({"holdout": [hold_start.isoformat(), end.isoformat()], "holdout_metrics": metrics,
                       "blend": model.blend, **({"linear_blend": model.linear_blend} if model.linear_blend else {}),
                       **({"weather_damping": model.weather_damping,
                           "weather_normal_offset": model.weather_normal_offset} if model.weather_damping else {})})
    # the training leaves reference cycles (the networks' fits, Lightning loops, holdout datasets): collect them
    # here, in the training, not in a later prediction of the same process, which would pay for the full
    # collection (bench forecast, 4-year window: 1.3 s of a 2.4 s prediction run)
    gc.collect()
    return model, {"holdout": [hold_start.isoformat(), end.isoformat()], "metrics": metrics, "forecasts": fc}


def holdout_weather_features(grid: pd.DataFrame, origins: pd.DatetimeIndex, cfg: Any,
                             weather: Any | None) -> tuple[pd.DataFrame, str]:
    """The weather features known at each origin for its targets (``origin, ts, *WEATHER_COLUMNS``), and a label.

    Realised temperature: ``grid``'s ``temp_degc`` before each origin; after it ``weather(origins)`` or, without a
    provider, the realised temperature itself (labelled: a perfect forecast). Without a provider, targets after the
    newest realised value (past the grid's end, so past the holdout, never scored) repeat that value: every holdout
    origin gets a full horizon.
    """
    from shared.weather.features import features_for_origins, perfect_provider

    realised = grid[["ts", "temp_degc"]]
    if weather is None:
        horizon = pd.Timedelta(hours=24 * LEVEL_BLOCKS)
        step = pd.Timedelta(minutes=cfg.resolution_min)
        known = realised.dropna(subset=["temp_degc"])
        fill = None
        if len(known):  # targets after the newest realised value repeat it
            last = known["ts"].max()
            after = pd.date_range(last + step, origins.max() + horizon, freq=step)
            fill = pd.DataFrame({"ts": after, "temp_degc": float(known.loc[known["ts"] == last, "temp_degc"].iloc[-1])})
        fc = perfect_provider(realised, horizon, step, fill)(origins)
        label = "realised temperature used as the forecast (perfect forecast: optimistic holdout)"
    else:
        fc = weather(origins)
        label = str(getattr(weather, "label", "weather provider (forecast known at each origin)"))
    wx = features_for_origins(realised, fc, origins, cfg.resolution_min, cfg.weather_smoothed_input)
    return wx, label


class WeatherHoldoutError(ModelError):
    """The weather model's holdout has too little temperature to be scored (:func:`weather_scored_origins`): raised
    before any fit, so the run's one training is still unspent."""


def weather_scored_origins(wx: pd.DataFrame, origins: pd.DatetimeIndex, cfg: Any,
                           ) -> tuple[pd.DatetimeIndex, dict[str, Any] | None]:
    """The holdout origins a weather model is scored on: those whose every target has the weather known at the
    origin in ``wx`` (:func:`holdout_weather_features`; ``model.weather_unknown_targets``), and which were left out
    (``count``, ``of``, ``first``, ``last``; None when none).

    A hole in the realised temperature (an archive outage longer than poll-weather's catch-up, never backfilled)
    made every training of the weather model fail while it lay in the holdout ("no weather for N target steps"):
    no weather model, and a training's CPU spent at every hourly run for nothing. The origins that meet it are left
    out instead; under half of the holdout left is a :class:`WeatherHoldoutError` that names the days to backfill.
    """
    from shared.forecasting.model import weather_unknown_targets

    unknown = weather_unknown_targets(wx, origins, cfg.resolution_min)
    if unknown.empty:
        return origins, None
    missing = pd.DatetimeIndex(unknown["origin"].unique())
    known = origins[~origins.isin(missing)]
    if 2 * len(known) < len(origins):
        hole = pd.DatetimeIndex(unknown["ts"])
        raise WeatherHoldoutError(
            f"weather model: no temperature for the targets of {len(missing)} of the {len(origins)} holdout origins "
            f"({missing[0].isoformat()} … {missing[-1].isoformat()}; targets {hole.min().isoformat()} … "
            f"{hole.max().isoformat()}); fill the realised temperature: python -m shared weather-backfill --archive "
            f"--start {hole.min():%Y-%m-%d} --end {hole.max() + pd.Timedelta(days=1):%Y-%m-%d}")
    return known, {"count": len(missing), "of": len(origins), "first": missing[0].isoformat(),
                   "last": missing[-1].isoformat()}


def valid_history_days(grid: pd.DataFrame, resolution_min: int) -> float:
    """Days of valid (gated, non-missing) values in ``grid``."""
    return float(grid["value"].notna().sum()) / (24 * 60 / resolution_min)


def holdout_days(history_days: float, settings: Settings) -> int:
    """The holdout, sized from the history: ``forecast_holdout_days`` (91), but at most a quarter of the history
    and at least 7 days (a 12-week series keeps 9 weeks to train on)."""
    return int(max(7, min(settings.forecast_holdout_days, history_days // 4)))


def short_series(history_days: float, settings: Settings) -> bool:
    """A series too short for a full holdout (``forecast_holdout_days`` is more than a quarter of its valid
    history): its holdout weights carry :func:`short_holdout_warning`."""
    return holdout_days(history_days, settings) < settings.forecast_holdout_days


def short_holdout_warning(history_days: float, settings: Settings) -> str | None:
    """Why a model trained on ``history_days`` of history earns less trust than the main series' models, or None.

    The holdout cut below ``forecast_holdout_days`` learns the per-lead-day weights against seasonal naive on a few
    origins, and that is measured not to hold everywhere (``bench.short_series``: 23 twelve-week windows of real load,
    the issued forecast worse than naive in 36 of 161 window × D+k cells); the user is told so instead of reading
    only the holdout's promise of "never worse than naive".
    """
    if not short_series(history_days, settings):
        return None
    h = holdout_days(history_days, settings)
    return (f"holdout of {h} days (a quarter of {history_days:.0f} days of valid history, below the "
            f"{settings.forecast_holdout_days} of POWERSENSE_FORECAST_HOLDOUT_DAYS): the weights against seasonal "
            "naive are learnt on few origins and may not hold; on 12-week series the issued forecast beat naive on "
            "average at every lead day but lost to it in 36 of 161 window x lead-day cells (python -m "
            "bench.short_series)")


def issue(model: Any, grid: pd.DataFrame, origins: list[pd.Timestamp] | pd.DatetimeIndex,
          horizon_end: pd.Timedelta | None = None, calibration: dict[str, list[float]] | None = None,
          weather: pd.DataFrame | None = None) -> pd.DataFrame:
    """The issued forecast from each origin: the model combined with seasonal naive per lead day (the model's
    ``blend``), with intervals from ``calibration`` (default: the model's holdout calibration).

    ``weather`` (a weather model only): ``origin, ts, *WEATHER_COLUMNS``, the features known at each origin for its
    targets; ``grid`` then carries the realised weather columns (:func:`shared.forecasting.model.predict`).
    Columns ``origin, ts, yhat, lower, upper, lead_day, model_weight, yhat_source``.
    """
    from shared.forecasting import model as fm

    fc = fm.predict(model, grid, origins, horizon_end=horizon_end, weather=weather)
    fc = combine.apply_weights(fc, combine.naive_like(fc, grid, model.config.timezone),
                               getattr(model, "blend", {}) or {})
    return baseline.apply_intervals(fc, model.calibration if calibration is None else calibration)


def fingerprint(grid: pd.DataFrame) -> str:
    """sha256 of the training grid (timestamps and values), to tell which data a model saw."""
    h = hashlib.sha256()
    h.update(pd.DatetimeIndex(grid["ts"]).asi8.tobytes())
    h.update(np.nan_to_num(grid["value"].to_numpy(dtype=float), nan=-1.0).tobytes())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions that decide whether a stored model can be loaded."""
    import importlib.metadata as md

    out = {}
    for pkg in ("neuralprophet", "torch", "pandas", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def forecast_targets(last_obs: pd.Timestamp, issued_at: pd.Timestamp, resolution_min: int,
                     horizon_days: int) -> pd.DatetimeIndex:
    """Steps from the one after ``last_obs`` to the end of local day D+``horizon_days`` of ``issued_at``."""
    step = pd.Timedelta(minutes=resolution_min)
    # stale data: start at the current step, not in the past (the forecast still covers D+1…D+7) — the step of
    # the series' own grid, whose phase last_obs carries (a series at :30 UTC keeps :30)
    phase = grid_phase(pd.DatetimeIndex([last_obs]), resolution_min)
    origin = max(last_obs + step, floor_to_grid(pd.DatetimeIndex([issued_at]), resolution_min, phase)[0])
    end = day_start(local_dates(pd.DatetimeIndex([issued_at]))[0] + pd.Timedelta(days=horizon_days + 1))
    return pd.date_range(origin, end, freq=step, inclusive="left")


def forecast_rows(fc: pd.DataFrame, *, run_id: str, model_version: str, issued_at: pd.Timestamp,
                  settings: Settings, quality: str, fallback_reason: str = "", weather_status: str = "off",
                  ) -> pd.DataFrame:
    """Shape a forecast (``ts, yhat, lower, upper``) into ``forecasts`` rows."""
    origin = fc["ts"].min()
    step = pd.Timedelta(minutes=settings.forecast_resolution_min)
    issued_day = local_dates(pd.DatetimeIndex([issued_at]))[0]
    tday = local_dates(pd.DatetimeIndex(fc["ts"]))
    return pd.DataFrame({
        "run_id": run_id,
        "model_version": model_version,
        "issued_at": issued_at,
        "origin": origin,
        "source": settings.series_source,
        "metric": settings.series_metric,
        "ts": pd.DatetimeIndex(fc["ts"]),
        "horizon_steps": (((fc["ts"] - origin) / step).round().astype(int) + 1).astype("uint16").to_numpy(),
        # steps of the issue day before issued_at (data up to the previous local day) count as D+0
        "horizon_day": np.clip(((tday - issued_day) / pd.Timedelta(days=1)).round(), 0, None).astype("uint8"),
        "yhat": fc["yhat"].astype(float).to_numpy(),
        "lower": fc["lower"].astype(float).to_numpy(),
        "upper": fc["upper"].astype(float).to_numpy(),
        "interval_level": float(settings.forecast_interval_level),
        "quality": quality,
        "fallback_reason": fallback_reason,
        # which source each lead day used (ch/init/021.forecast_source.sql)
        "yhat_source": (fc["yhat_source"].astype(str).to_numpy() if "yhat_source" in fc
                        else ("seasonal_naive" if quality == "fallback" else "model")),
        "model_weight": (fc["model_weight"].astype(float).to_numpy() if "model_weight" in fc
                         else (0.0 if quality == "fallback" else 1.0)),
        # whether the weather was used, else why not (ch/init/022.forecast_weather_status.sql)
        "weather_status": weather_status,
    })


def input_problem(grid: pd.DataFrame, now: pd.Timestamp, settings: Settings) -> str:
    """'' when the recent data is good enough for the model, else why not (stale / incomplete)."""
    data = grid.dropna(subset=["value"])
    if data.empty:
        return "no data"
    last = data["ts"].max()
    age_s = data_age_s(last.to_pydatetime(), now)
    if freshness_status(age_s, settings) == "too_old":
        return f"stale data: newest value {last.isoformat()} is {age_s / 3600:.1f} h old"
    recent = grid[grid["ts"] >= last - pd.Timedelta(days=14)]
    share = float(recent["value"].notna().mean()) if len(recent) else 0.0
    if share < settings.forecast_min_completeness:
        return f"incomplete data: {share:.0%} of the last 14 days present"
    return ""


# --- I/O ---------------------------------------------------------------------------------------------
def check_features_resolution(store: Store, settings: Settings) -> None:
    """Fail with ConfigurationError when featurize writes the series at other resolutions than the forecast's.

    Both stages take the grid step from the one setting ``forecast_resolution_min``, but each function is
    deployed with its own environment: were they to disagree, the forecast would find no features at its step
    and silently rebuild the whole grid in-process at every run. Checked on the first run of the process
    (the features table is the store's, so there is no earlier moment to look), then cached.
    """
    key = (settings.series_source, settings.series_metric, settings.forecast_resolution_min)
    if key in _resolution_checked:
        return
    found = {int(r[0]) for r in store.query_rows(
        "select distinct resolution_min from {db:Identifier}.features "
        "where source = {s:String} and metric = {m:String}",
        {"s": settings.series_source, "m": settings.series_metric})}
    if found and settings.forecast_resolution_min not in found:
        from shared.errors import ConfigurationError

        raise ConfigurationError(
            f"invalid configuration: POWERSENSE_FORECAST_RESOLUTION_MIN={settings.forecast_resolution_min} but "
            f"featurize writes {settings.series_source}.{settings.series_metric} at {sorted(found)} min; "
            "give both functions the same value")
    _resolution_checked.add(key)


_resolution_checked: set[tuple[str, str, int]] = set()


def read_features(store: Store, settings: Settings, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The grid featurize wrote (``features``) for ``start <= ts < end``: ``ts, value, interpolated, missing,
    implausible, implausible_reason``."""
    df = store.query_df(
        "select ts, value, interpolated, missing, implausible, implausible_reason "
        "from {db:Identifier}.features final where source = {s:String} and metric = {m:String} "
        "and resolution_min = {r:UInt16} and ts >= {a:DateTime64(3, 'UTC')} and ts < {b:DateTime64(3, 'UTC')} "
        "order by ts",
        {"s": settings.series_source, "m": settings.series_metric, "r": settings.forecast_resolution_min,
         "a": start.to_pydatetime(), "b": end.to_pydatetime()},
    )
    if df.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "value": pd.Series(dtype=float),
                             "interpolated": pd.Series(dtype=bool), "missing": pd.Series(dtype=bool),
                             "implausible": pd.Series(dtype=bool), "implausible_reason": pd.Series(dtype=str)})
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    for col in ("interpolated", "missing", "implausible"):
        df[col] = df[col].astype(bool)
    return df


def load_grid(store: Store, settings: Settings, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The forecast grid, read from ``features`` (featurize's gated grid), open anomalies removed.

    featurize is the one place the grid is made (``shared.features.series_grid``: the training-data gate, then
    short-gap interpolation). When the table is behind the measurements (featurize has not run since new or
    revised data arrived), the missing tail is computed here, in-process, by the same code featurize runs
    (``plan_featurize`` + ``planned_features``, not written: featurize stays the only writer), so a forecast
    never uses stale inputs. Open anomalies (detect's verdicts, newer than the features) become gaps; only then
    are short gaps re-interpolated, as they were when the grid was built from the series here.
    """
    from shared.features import interpolate_short_gaps, plan_featurize, planned_features

    check_features_resolution(store, settings)
    step = pd.Timedelta(minutes=settings.forecast_resolution_min)
    feats = read_features(store, settings, start, end)
    plan = plan_featurize(store, settings, end.to_pydatetime())
    if plan is not None:
        tail, _ = planned_features(store, settings, plan)
        tail = tail[(tail["ts"] >= start) & (tail["ts"] < end)][list(feats.columns)]
        log_event(log, "features_tail_computed", start=plan.start.isoformat(), steps=int(len(tail)))
        feats = pd.concat([feats[feats["ts"] < plan.start], tail], ignore_index=True)
    valid = feats.dropna(subset=["value"])
    if feats.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "value": pd.Series(dtype=float)})
    last = valid["ts"].max() if len(valid) else feats["ts"].max()
    # the grid from start to the newest valid value, like the one the stage built itself before
    idx = pd.date_range(start.ceil(step), last, freq=step, tz="UTC")
    grid = feats.set_index("ts").reindex(idx)
    value = grid["value"].astype(float)
    bad = store.query_df(
        "select distinct ts from {db:Identifier}.anomalies final where source = {s:String} "
        "and metric = {m:String} and status = 'open' and ts >= {a:DateTime64(3, 'UTC')} "
        "and ts < {b:DateTime64(3, 'UTC')}",
        {"s": settings.series_source, "m": settings.series_metric,
         "a": start.to_pydatetime(), "b": end.to_pydatetime()},
    )
    if not bad.empty:
        hit = idx.isin(pd.DatetimeIndex(pd.to_datetime(bad["ts"], utc=True)))
        if hit.any():
            measured = value.where(~grid["interpolated"].fillna(False).astype(bool))
            value = interpolate_short_gaps(measured.where(~hit), settings.max_interp_steps)
            log_event(log, "anomalies_excluded", points=int(hit.sum()))
    out = pd.DataFrame({"ts": idx, "value": value.to_numpy()})
    reasons = grid["implausible_reason"].fillna("").astype(str)
    out.attrs["gated"] = {str(k): int(v) for k, v in reasons[reasons != ""].value_counts().items()}
    if out.attrs["gated"]:
        log_event(log, "values_gated", points=int((reasons != "").sum()), reasons=out.attrs["gated"])
    return out


def retrain_requested_after(store: Store, settings: Settings, trained_at: pd.Timestamp) -> bool:
    """True when detect recorded a retrain request for this series newer than the model (``model_metrics``,
    ch/init/030: the DDL is applied before first use, so a missing table is a real schema error and raises)."""
    n = store.scalar(
        "select count() from {db:Identifier}.model_metrics where kind = 'retrain_request' "
        "and computed_at > {t:DateTime64(3, 'UTC')} and source = {s:String} and metric = {m:String}",
        {"t": trained_at.to_pydatetime(), "s": settings.series_source, "m": settings.series_metric},
    )
    return bool(n)


# --- model cache (one load per process and version) ------------------------------------------------------
_cache: dict[str, Any] = {}
_cache_lock = threading.Lock()


def cached_model(artifacts: Any, series: str, version: str) -> Any:
    """The model of ``version``, loaded from the artifact store once per process."""
    from shared.forecasting import registry  # the ML stack, only when a model is loaded

    key = f"{series}/{version}"
    with _cache_lock:
        if key not in _cache:
            _forget(series)  # keep one model per series in memory (the weather model and the weather-free one)
            _cache[key] = registry.load_model(artifacts, series, version)
        return _cache[key]


def _forget(series: str) -> None:
    for key in [k for k in _cache if k.rsplit("/", 1)[0] == series]:
        del _cache[key]


# --- the stage ---------------------------------------------------------------------------------------------
@dataclass
class ForecastResult:
    """What a forecast run did (goes into pipeline_runs.details)."""

    rows: int = 0
    quality: str = ""
    fallback_reason: str = ""
    model_version: str = ""
    trained: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def series_key(settings: Settings) -> str:
    """Artifact series name of the weather-free model, e.g. ``eco2mix_national.consommation.30min``."""
    return f"{settings.series_source}.{settings.series_metric}.{settings.forecast_resolution_min}min"


def weather_series_key(settings: Settings) -> str:
    """Artifact series name of the weather model, e.g. ``eco2mix_national.consommation.30min.weather``."""
    return series_key(settings) + ".weather"


# --- weather inputs (issue 12) ------------------------------------------------------------------------------
WEATHER_STATUSES = ("used", "off", "missing", "stale", "incomplete", "no_model", "failed", "unused")
# pushed with the stage metrics (Pushgateway job "forecast"): a run that could use no model (none yet, the artifact
# store down, stale inputs, a prediction error) issues the simple-model fallback with status success; without
# this gauge nothing told an operator, the rows' quality column aside (PowerSenseForecastFallback)
FORECAST_FALLBACK = Gauge(
    "powersense_forecast_fallback",
    "1 when the latest forecast run issued the simple-model fallback instead of a model (forecasts.fallback_reason "
    "says why), else 0", registry=REGISTRY)
# pushed with the stage metrics (Pushgateway job "forecast") by every run that consulted the artifact store: an S3
# outage only made the forecast fall back (a successful run: no stage alert) and reached the model owners as
# PowerSenseForecastFallback; PowerSenseArtifactStoreUnavailable tells operations, who run the store
FORECAST_ARTIFACT_STORE_UP = Gauge(
    "powersense_forecast_artifact_store_up",
    "1 when the artifact store answered every read and write of the latest forecast run that used it, 0 when one "
    "failed (ArtifactError: unreachable, refused, timed out)", registry=REGISTRY)
# pushed with the stage metrics (Pushgateway job "forecast"): alert on a status other than used/off lasting hours
FORECAST_WEATHER_STATUS = Gauge(
    "powersense_forecast_weather_status_info",
    "1 for the weather status of the latest forecast run (label status: used, off, missing, stale, incomplete, "
    "no_model, failed, unused)", ["status"], registry=REGISTRY)
FORECAST_WEATHER_AGE = Gauge(
    "powersense_forecast_weather_age_seconds",
    "Seconds between the latest forecast run and the issue time of the newest temperature forecast it found "
    "(NaN when none)", registry=REGISTRY)
FORECAST_WEATHER_DEGRADED = Counter(
    "powersense_forecast_weather_degraded_runs_total",
    "Forecast runs issued without weather while the weather model is enabled, by weather status", ["status"],
    registry=REGISTRY)


# the weather model's damping (shared/weather/damping.py), pushed when a weather model is promoted: the share of the
# temperature forecast's anomaly it keeps per lead day, i.e. the forecasts' skill on its holdout (alert: a day-ahead
# slope far below the published error model's 0.95-1.00 means a feed that went wrong, e.g. shifted or mis-weighted)
FORECAST_WEATHER_DAMPING = Gauge(
    "powersense_forecast_weather_damping_ratio",
    "Share of the temperature forecast's anomaly (forecast - normal) the latest weather model keeps, per lead day "
    "(1 = taken as it comes; learnt on its holdout from the forecasts' own record)", ["lead_day"], registry=REGISTRY)


def record_weather_damping(damping: dict[str, float]) -> None:
    """Set the damping gauge from a weather model's slopes (lead days without one keep no series)."""
    FORECAST_WEATHER_DAMPING.clear()
    for k, v in damping.items():
        FORECAST_WEATHER_DAMPING.labels(lead_day=k).set(float(v))


# --- training memory ------------------------------------------------------------------------------------
# The function's memory limit counts its training worker processes too (POWERSENSE_FORECAST_TRAIN_PROCESSES): pushed
# after each training so that an alert can warn before an out-of-memory kill fails one.
FORECAST_TRAINING_PEAK_RSS = Gauge(
    "powersense_forecast_training_peak_rss_bytes",
    "Peak resident memory since the forecast function's process started, as of its latest training (label process: "
    "function = its own process, workers = the largest of its training worker processes)", ["process"],
    registry=REGISTRY)
FORECAST_MEMORY_LIMIT = Gauge(
    "powersense_forecast_memory_limit_bytes",
    "The forecast function's memory limit: its cgroup's memory.max (NaN when unlimited or unknown)", registry=REGISTRY)


def record_training_memory() -> dict[str, float | None]:
    """Set the training-memory gauges from this process's and its reaped children's peak RSS; the figures in MiB."""
    own, workers = peak_rss_bytes()  # the training's workers are reaped when its pool shuts down
    limit = memory_limit_bytes()
    FORECAST_TRAINING_PEAK_RSS.labels(process="function").set(own)
    FORECAST_TRAINING_PEAK_RSS.labels(process="workers").set(workers)
    FORECAST_MEMORY_LIMIT.set(limit)
    mib = 1024.0**2
    return {"peak_rss_mib": round(own / mib, 1), "workers_peak_rss_mib": round(workers / mib, 1),
            "memory_limit_mib": round(limit / mib, 1) if np.isfinite(limit) else None}


@dataclass
class WeatherInputs:
    """The weather as known at a forecast run.

    ``status`` '' = fresh and covering every target (the weather model may be used), else why not (``off``,
    ``missing``, ``stale``, ``incomplete``) with ``reason``. ``history``: per grid step the past weather as known at
    the run (``ts``, WEATHER_COLUMNS, ``temp_source``); ``future``: the newest weather featurize run's path
    (``ts`` + WEATHER_COLUMNS; past and forecast parts) — what the targets use.
    """

    status: str
    reason: str = ""
    history: pd.DataFrame | None = None
    future: pd.DataFrame | None = None
    as_of: pd.Timestamp | None = None
    issued_at: pd.Timestamp | None = None

    def details(self, now: pd.Timestamp) -> dict[str, Any]:
        """For the run's details (pipeline_runs)."""
        age = (now - self.issued_at) / pd.Timedelta(hours=1) if self.issued_at is not None else None
        return {"weather_reason": self.reason, "weather_as_of": self.as_of.isoformat() if self.as_of else None,
                "weather_issued_at": self.issued_at.isoformat() if self.issued_at is not None else None,
                "weather_age_h": round(age, 2) if age is not None else None}


def weather_inputs(store: Store, settings: Settings, grid: pd.DataFrame, now: pd.Timestamp) -> WeatherInputs:
    """Read the weather as known at ``now`` (``weather_features``, written by featurize) and judge it.

    Never raises for the weather's sake: a feed that is off, missing, unreadable, stale (newest temperature
    forecast issued more than ``weather_max_age_h`` before ``now``) or short (not covering every target step of
    this run) is a status, and the run issues the weather-free model.
    """
    if not settings.forecast_weather:
        return WeatherInputs("off", "POWERSENSE_FORECAST_WEATHER is false")
    try:
        start = grid["ts"].min() if len(grid) else now - pd.Timedelta(days=settings.forecast_train_days)
        history = read_weather_history(store, settings, start, now + pd.Timedelta(minutes=1), now.to_pydatetime())
        run = read_weather_run(store, settings, now.to_pydatetime(), now - PAST_KEEP)
    except StoreError as exc:
        log_event(log, "weather_features_unreadable", logging.WARNING, error=str(exc))
        return WeatherInputs("missing", f"weather features unreadable: {exc}")
    if run is None or not run.path["temp_degc"].notna().any():
        return WeatherInputs("missing", "no weather features as of the run (featurize has written none)", history)
    wx = WeatherInputs("", "", history, run.path, run.as_of, run.issued_at)
    if run.issued_at is None:
        wx.status, wx.reason = "missing", "no temperature forecast stored as of the run"
        return wx
    age_h = (now - run.issued_at) / pd.Timedelta(hours=1)
    if age_h > settings.weather_max_age_h:
        wx.status = "stale"
        wx.reason = (f"newest temperature forecast issued {run.issued_at.isoformat()}, {age_h:.1f} h before the run "
                     f"(POWERSENSE_WEATHER_MAX_AGE_H={settings.weather_max_age_h:g})")
        return wx
    data = grid.dropna(subset=["value"])
    if data.empty:
        return wx
    targets = forecast_targets(data["ts"].max(), now, settings.forecast_resolution_min,
                               settings.forecast_horizon_days)
    known = run.path.drop_duplicates("ts").set_index("ts").reindex(targets)[WEATHER_COLUMNS].notna().all(axis=1)
    if not known.all():
        last = known[known].index.max() if known.any() else None
        wx.status = "incomplete"
        wx.reason = (f"the weather known at the run covers {int(known.sum())} of {len(targets)} target steps "
                     f"(last known {last.isoformat() if last is not None else 'none'}, "
                     f"horizon {targets[-1].isoformat()})")
    return wx


def with_weather(grid: pd.DataFrame, history: pd.DataFrame | None, realised_only: bool = False) -> pd.DataFrame:
    """``grid`` (``ts, value``) with the weather columns of ``history`` (NaN where none; ``realised_only``: steps
    whose temperature was a forecast when written are left NaN — the training grid)."""
    h = history if history is not None else pd.DataFrame(columns=["ts", *WEATHER_COLUMNS, "temp_source"])
    if realised_only and len(h):
        h = h[h["temp_source"] != FORECAST_LABEL]
    out = grid.merge(h[["ts", *WEATHER_COLUMNS]].astype({c: float for c in WEATHER_COLUMNS}), on="ts", how="left")
    out.attrs = dict(grid.attrs)
    return out


def weather_training_grid(grid: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """The weather model's training grid: ``grid`` with the *realised* weather, ending at the newest step that has
    it. Open-Meteo's archive is days behind the load, and the holdout (the window's last days) scores the model with
    the realised weather of its targets, so the load after the newest realised temperature is left out of training
    (the prediction still reads it, with the weather known then)."""
    out = with_weather(grid, history, realised_only=True)
    known = out["ts"][out["temp_degc"].notna()]
    if known.empty:
        return out
    return out[out["ts"] <= known.max()].reset_index(drop=True)


class HoldoutWeather:
    """The temperature forecast at each origin of a weather model's training holdout (a WeatherProvider), with a
    ``label`` saying what it was (set at each call; it goes into the model's holdout metrics).

    At an origin where the store keeps a temperature forecast as known then covering the origin's horizon: that
    forecast (its real errors). Elsewhere — before poll-weather ran, during an outage, or with no store — the
    realised temperature plus a simulated forecast error: the lead-dependent error model of ``make evaluate
    --weather`` (``shared/weather/forecast_error.py``, seed ``HOLDOUT_SEED``). Never the realised temperature alone:
    a holdout with a perfect forecast calibrates the combination with naive, the intervals and the promotion gate
    for an accuracy the model never gets. ``make evaluate --weather`` has no stored forecasts and scores its
    training holdouts with the same simulated error, so its (b) runs measure what production computes.
    """

    def __init__(self, simulated: Any, stored: Any | None, horizon: pd.Timedelta) -> None:
        self.simulated, self.stored, self.horizon = simulated, stored, horizon
        self.label = "realised temperature plus simulated forecast errors (no origin called yet)"
        # the holdout is read twice per training (the new model, then the current one on the same origins)
        self._last: tuple[tuple[int, ...], pd.DataFrame, str] | None = None

    def __call__(self, origins: pd.DatetimeIndex) -> pd.DataFrame:
        origins = pd.DatetimeIndex(origins).tz_convert("UTC")
        key = tuple(int(v) for v in origins.asi8)
        if self._last is not None and self._last[0] == key:
            self.label = self._last[2]
            return self._last[1].copy()
        out = self._provide(origins)
        self._last = (key, out, self.label)
        return out.copy()

    def _provide(self, origins: pd.DatetimeIndex) -> pd.DataFrame:
        from shared.weather.provider import uncovered_origins

        sim_label = "realised temperature plus simulated forecast errors (shared/weather/forecast_error.py)"
        known = self.stored(origins) if self.stored is not None and len(origins) else None
        missing = origins if known is None else pd.DatetimeIndex(uncovered_origins(known, origins, self.horizon),
                                                                 tz="UTC")
        if known is None or len(missing) == len(origins):
            self.label = f"{sim_label} at all {len(origins)} holdout origins (no stored forecast known at any)"
            return self.simulated(origins)
        self.label = (f"stored temperature forecast as known at {len(origins) - len(missing)} of {len(origins)} "
                      f"holdout origins; {sim_label} at the others")
        # the simulated error is seeded per origin: simulating only the uncovered ones gives them the same values
        parts = [known[~known["origin"].isin(missing)]] + ([self.simulated(missing)] if len(missing) else [])
        out = pd.concat(parts, ignore_index=True)
        return out.sort_values(["origin", "ts"], kind="stable").reset_index(drop=True)


def holdout_weather_provider(train_grid: pd.DataFrame, wx: WeatherInputs, settings: Settings,
                             store: Store | None = None) -> HoldoutWeather:
    """The temperature forecast a weather model's training holdout uses at each origin (:class:`HoldoutWeather`)
    in a forecast run: ``train_grid``'s realised temperature; where none is stored yet — the archive is days behind,
    and the last holdout origins' targets run past the training grid — the newest temperature known at the run
    (``wx``: realised history, then the newest forecast) stands for it."""
    parts = [f[["ts", "temp_degc"]] for f in (wx.history, wx.future) if f is not None and len(f)]
    fill = (pd.concat(parts, ignore_index=True).dropna().drop_duplicates("ts", keep="last").sort_values("ts")
            if parts else None)
    return holdout_weather(train_grid[["ts", "temp_degc"]], fill, settings, store)


def holdout_weather(realised: pd.DataFrame, fill: pd.DataFrame | None, settings: Settings,
                    store: Store | None) -> HoldoutWeather:
    """:class:`HoldoutWeather` over ``realised`` (``ts, temp_degc``; ``fill`` where it has no value) and, with a
    ``store``, the temperature forecasts stored there (read as known at each origin)."""
    from shared.weather.forecast_error import HOLDOUT_SEED, simulated_provider
    from shared.weather.provider import store_provider

    step = pd.Timedelta(minutes=settings.forecast_resolution_min)
    horizon = pd.Timedelta(hours=24 * LEVEL_BLOCKS)
    cfg = model_config(settings, weather=True)
    simulated = simulated_provider(realised, horizon, step, HOLDOUT_SEED, cfg.weather_smoothed_input, fill=fill)
    return HoldoutWeather(simulated, store_provider(store, horizon, settings.forecast_resolution_min)
                          if store is not None else None, horizon)


def weather_days(grid: pd.DataFrame, resolution_min: int) -> float:
    """Days of steps with both a valid value and realised weather (what a weather model trains on)."""
    if "hdd_smooth" not in grid:
        return 0.0
    ok = grid["value"].notna() & grid["hdd_smooth"].notna() & grid["cdd_smooth"].notna()
    return float(ok.sum()) / (24 * 60 / resolution_min)


def due_reason(store: Store, settings: Settings, current: dict[str, Any] | None, now: pd.Timestamp,
               retrain_hours: float, detect_requests: bool = True) -> str:
    """Why a model whose ``current`` pointer is given must be retrained now ('' = not due): none yet, older than
    ``retrain_hours``, or (``detect_requests``) a retrain request from detect newer than it."""
    if current is None:
        return "no model"
    trained_at = pd.Timestamp(current["trained_at"])
    if now - trained_at >= pd.Timedelta(hours=retrain_hours):
        return f"model older than {retrain_hours:g} h"
    if detect_requests and retrain_requested_after(store, settings, trained_at):
        return "retrain requested by detect"
    return ""


def usable_current(artifacts: Any, series: str, *, load: bool) -> tuple[dict[str, Any] | None, str]:
    """``(the current model's metadata, '')``, or ``(None, why)`` when its pointer, its metadata or (``load``) its
    files cannot be read as a model (ModelError: a restore cut short, a hand edit, a zeroed state dict). The series
    then trains as one without a model — promoted against seasonal naive — instead of issuing seasonal naive every
    hour until someone edits the store. An unreachable store (ArtifactError) still raises: nothing is known."""
    try:
        current = artifacts.current(series)
        if current is not None and load:
            cached_model(artifacts, series, current["version"])
    except ModelError as exc:
        log_event(log, "current_model_unusable", logging.ERROR, series=series, error=str(exc))
        return None, f"current model unusable ({exc})"
    return current, ""


def training_plan(store: Store, settings: Settings, artifacts: Any, now: pd.Timestamp, *, weather_fresh: bool,
                  weather_trainable: bool, force: bool = False) -> tuple[bool, str] | None:
    """Which model this run trains, if any: ``(weather, reason)``; at most one per run (the training budget).

    The weather-free model first when there is none (the safety net). Then the model the run issues — the weather
    model while the weather is fresh (and there is realised weather to train it on), else the weather-free one —
    on ``forecast_retrain_hours`` (and detect's requests; ``force``: now); then the standby model on
    ``forecast_standby_retrain_hours``. With ``forecast_weather`` off: the weather-free model only, as before.
    A model the operator holds (``set-current-model --hold``) is never due (:func:`_held`).
    """
    use_weather = settings.forecast_weather and weather_fresh and weather_trainable
    # the model the run issues is loaded anyway (and cached): a damaged one is retrained at once
    plain, plain_problem = usable_current(artifacts, series_key(settings), load=not use_weather)
    if force:
        return (plain is not None and use_weather), "requested"
    if plain is None:
        return False, plain_problem or "no model"
    if not settings.forecast_weather:
        why = "" if _held(plain) else due_reason(store, settings, plain, now, settings.forecast_retrain_hours)
        return (False, why) if why else None
    order = [(use_weather, settings.forecast_retrain_hours, True),
             (not use_weather, settings.forecast_standby_retrain_hours, False)]
    for weather, hours, requests in order:
        if weather and not weather_trainable:
            continue
        current, problem = (usable_current(artifacts, weather_series_key(settings), load=True) if weather
                            else (plain, ""))
        if problem:
            return weather, problem
        if _held(current):
            continue
        if weather and current is None:
            # no weather model promoted yet: the newest attempt (a version the promotion rule rejected) counts, so a
            # weather model worse than naive is retried on the model's schedule, not at every run
            tried = [m for m in artifacts.list_models(weather_series_key(settings)) if m.get("trained_at")]
            current = max(tried, key=lambda m: str(m["trained_at"])) if tried else None
        why = due_reason(store, settings, current, now, hours, detect_requests=requests)
        if why:
            return weather, why if requests else f"standby: {why}"
    return None


def _held(current: dict[str, Any] | None) -> bool:
    """True when the operator holds the series' current model (``python -m shared set-current-model SERIES VERSION
    --hold``): its schedule and detect's requests train nothing until it is released; a rollback without the hold
    lasted until the next daily training, which could promote the model rolled back from again."""
    if current is not None and current.get("held"):
        log_event(log, "training_held", series=current.get("series"), version=current.get("version"))
        return True
    return False


def maybe_train(store: Store, settings: Settings, artifacts: Any, grid: pd.DataFrame, now: pd.Timestamp,
                force: bool = False, *, weather: bool = False, reason: str | None = None,
                holdout_weather: Any | None = None) -> dict[str, Any]:
    """Train if due (``reason`` given: train now, for that reason); store the new version; move ``current`` only if
    not worse on the holdout, under a per-series lease (a second training meanwhile is skipped). ``weather``: the
    weather model (``grid`` carries the realised weather columns), kept under :func:`weather_series_key`, its holdout
    scored with ``holdout_weather`` (a WeatherProvider, :func:`holdout_weather_provider`); otherwise the weather-free
    model under :func:`series_key`."""
    from shared.forecasting import registry

    series = weather_series_key(settings) if weather else series_key(settings)
    current, problem = usable_current(artifacts, series, load=False)
    if reason is None and problem:
        reason = problem
    if reason is None:
        reason = "requested" if force else due_reason(store, settings, current, now, settings.forecast_retrain_hours)
    if not reason:
        return {"trained": False}
    lease = Lease(store, f"forecast-trainer:{series}", ttl_s=TRAIN_LEASE_TTL_S)
    if not lease.acquire():
        # a cron run and a force_train (or two replicas) training at once: each compared itself with the current
        # model it read before training, and the last to finish moved `current`, even when it was the worse one
        log_event(log, "training_skipped_concurrent", series=series, holder=lease.describe_other())
        return {"trained": False, "skipped": f"another training of {series} is running ({lease.describe_other()})"}
    with lease:
        # under the lease: a training that finished meanwhile moved it
        current, problem = usable_current(artifacts, series, load=False)
        if problem and problem not in reason:
            reason = f"{reason}; {problem}"
        t0 = time.perf_counter()
        model, hold = train_and_calibrate(grid, settings, model_config(settings, weather=weather),
                                          **({"weather": holdout_weather} if weather and holdout_weather else {}))
        train_s = round(time.perf_counter() - t0, 2)
        # sortable by training time; the random suffix keeps two trainings at the same (simulated) instant apart
        version = now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
        new_mape = hold["metrics"]["mape"]
        naive_mape = hold["metrics"].get("naive_mape")
        h0, h1 = pd.Timestamp(hold["holdout"][0]), pd.Timestamp(hold["holdout"][1])
        cur_mape = None
        not_compared = ""
        if current is not None:
            try:
                cur_mape, note = current_holdout_mape(cached_model(artifacts, series, current["version"]), grid, h0, h1,
                                                      holdout_weather)
                if note:
                    reason = f"{reason}; {note}"
            except ArtifactError as exc:
                # the store did not answer (a timeout): the current model may well be better. Promoting on naive
                # alone let one failed read replace it by a worse model; the series stays due and retries next run
                not_compared = f"current model {current['version']} could not be read ({exc}): not compared"
            except (ModelError, KeyError, ValueError) as exc:
                reason = f"{reason}; current model unusable ({exc})"
        decision, why = promotion_decision(new_mape, cur_mape, naive_mape, settings.forecast_accept_tolerance,
                                           current["version"] if current else "")
        if not_compared:
            decision, why = "rejected", f"{not_compared}; retried at the next run"
        elif current is not None and current.get("held"):
            # a requested training (force_train) still runs and is kept: the operator may promote it by hand
            decision, why = "rejected", (f"{why}; not promoted: the operator holds {current['version']} "
                                         f"(python -m shared set-current-model {series} --release)")
        why = f"{reason}; {why}"
        meta = {
            "version": version,
            "trained_at": now.isoformat(),
            "training_window": [grid["ts"].min().isoformat(), model.meta["train_end"]],
            "holdout": hold["holdout"],
            "data_fingerprint": fingerprint(grid),
            "library_versions": library_versions(),
            "backtest_metrics": {"holdout": hold["metrics"], "current_model_holdout_mape": cur_mape,
                                 "naive_holdout_mape": naive_mape},
            "train_seconds": train_s,
            "train_reason": reason,
            "decision": decision,
            "decision_reason": why,
            "series": series,
            "weather": weather,
        }
        registry.save_model(artifacts, series, version, model, meta)
        if decision == "promoted":
            artifacts.set_current(series, version, meta)
            with _cache_lock:
                _forget(series)
                _cache[f"{series}/{version}"] = model
        pruned = prune_versions(artifacts, series, settings.forecast_keep_versions)
        if warning := hold["metrics"].get("warning"):
            log_event(log, "short_holdout", logging.WARNING, warning=warning, version=version)
        if weather and decision == "promoted":
            record_weather_damping(model.weather_damping)
        log_event(log, "model_trained", version=version, decision=decision, reason=why, train_s=train_s,
                  holdout_mape=new_mape, current_mape=cur_mape, train_processes=settings.forecast_train_processes,
                  memory=record_training_memory(),
                  **({"weather_damping": model.weather_damping} if model.weather_damping else {}))
        return {"trained": True, "model": "weather" if weather else "weather_free", "train_reason": reason,
                "version": version, "decision": decision, "reason": why,
                "train_s": train_s, "versions_pruned": len(pruned),
                "holdout_mape": new_mape, "current_holdout_mape": cur_mape, "naive_holdout_mape": naive_mape}


def prune_versions(artifacts: Any, series: str, keep: int) -> list[str]:
    """Delete the versions of ``series`` older than its ``keep`` newest (never the current one); the deleted
    versions. A store that fails to delete is logged, not raised: the forecast this run issues does not depend on
    it, and the next training tries again."""
    try:
        gone: list[str] = artifacts.prune(series, keep)
    except ArtifactError as exc:
        log_event(log, "model_prune_failed", logging.WARNING, series=series, error=str(exc))
        return []
    if gone:
        log_event(log, "models_pruned", series=series, kept=keep, deleted=len(gone), oldest_kept_after=gone[-1])
    return gone


NOT_COMPARED = "current model trained on this holdout (refit after its own), not compared"


def trained_on_holdout(model: Any, holdout_start: pd.Timestamp) -> bool:
    """Whether ``model`` was trained on data from ``holdout_start`` on (its ``meta["train_end"]`` is later): such a
    model — one without a level network, refit after its own holdout — scores in-sample there, so it cannot be
    compared with a new model on that holdout."""
    end = model.meta.get("train_end")
    return end is not None and pd.Timestamp(end) > holdout_start


def current_holdout_mape(current: Any, grid: pd.DataFrame, h0: pd.Timestamp, h1: pd.Timestamp,
                         provider: Any | None = None) -> tuple[float | None, str | None]:
    """The current model's MAPE on a new model's holdout ``[h0, h1)``, issued as it is (its own combination with
    naive, from its own daily origins; a weather model with the holdout's weather from ``provider``, as the new one
    was scored), and no note; or ``(None, NOT_COMPARED)`` when it was trained on that holdout
    (:func:`trained_on_holdout`): it would score in-sample, and the new model is compared with seasonal naive only."""
    if trained_on_holdout(current, h0):
        return None, NOT_COMPARED
    cfg = current.config  # the current model is of the new one's kind (same series): its weather, its time zone
    origins = holdout_origins(h0, h1, tz=cfg.timezone, cfg=cfg)
    wx = None
    if cfg.weather:  # scored on the new model's origins: those with the weather known at every target
        wx = holdout_weather_features(grid, origins, cfg, provider)[0]
        origins = weather_scored_origins(wx, origins, cfg)[0]
    return holdout_metrics(issue(current, grid, origins, weather=wx), grid, h1)["mape"], None


def promotion_decision(new_mape: float | None, cur_mape: float | None, naive_mape: float | None,
                       tolerance: float, current_version: str = "") -> tuple[str, str]:
    """Promote the new model only when, on the same holdout, it is not worse than the current model (within
    ``tolerance``) *and* not worse than seasonal naive (the permanent challenger). Returns (decision, why)."""
    if new_mape is None:
        return "rejected", "no holdout MAPE for the new model"
    if naive_mape is not None and new_mape > naive_mape:
        return "rejected", f"holdout MAPE {new_mape:.3f} % worse than seasonal naive {naive_mape:.3f} %"
    if cur_mape is not None and new_mape > cur_mape * (1 + tolerance):
        return "rejected", f"holdout MAPE {new_mape:.3f} % worse than current {cur_mape:.3f} % ({current_version})"
    return "promoted", f"holdout MAPE {new_mape:.3f} % (current {cur_mape}, seasonal naive {naive_mape})"


def run_forecast_stage(store: Store, settings: Settings, run: Run, *, artifacts_factory: Any, now: datetime,
                       train: bool = True, force_train: bool = False) -> Run:
    """The forecast stage under the one result contract of every ``run_<stage>`` (shared/runs.py): one
    :func:`run_forecast` whose rows, input points and details fill ``run``."""
    res = run_forecast(store, settings, artifacts_factory, now, run.run_id, train=train, force_train=force_train)
    run.rows_in, run.rows_out = int(res.details.get("points", 0)), res.rows
    run.details.update(res.details)
    return run


def run_forecast(store: Store, settings: Settings, artifacts_factory: Any, now: datetime, run_id: str,
                 train: bool = True, force_train: bool = False) -> ForecastResult:
    """One forecast stage invocation. ``artifacts_factory()`` builds the store (may raise ArtifactError)."""
    res = ForecastResult()
    now_ts = to_utc(now)
    start = now_ts - pd.Timedelta(days=settings.forecast_train_days)
    grid = load_grid(store, settings, start, now_ts + pd.Timedelta(minutes=1))
    res.details["points"] = int(grid["value"].notna().sum())
    problem = input_problem(grid, now_ts, settings)
    wx = weather_inputs(store, settings, grid, now_ts)
    weather_status = wx.status
    fc: pd.DataFrame | None = None
    version = ""
    fallback_reason = problem
    store_error = ""  # an ArtifactError of this run (FORECAST_ARTIFACT_STORE_UP)
    if not problem:
        try:
            artifacts = artifacts_factory()
            wgrid = with_weather(grid, wx.history) if settings.forecast_weather else grid
            if train:
                train_grid = weather_training_grid(grid, wx.history) if settings.forecast_weather else grid
                trainable = (weather_days(train_grid, settings.forecast_resolution_min)
                             >= settings.forecast_model_min_history_days)
                res.trained = {"trained": False}
                weather_error: dict[str, Any] = {}
                while (plan := training_plan(store, settings, artifacts, now_ts, weather_fresh=not wx.status,
                                             weather_trainable=trainable, force=force_train)) is not None:
                    weather, reason = plan
                    try:
                        res.trained = maybe_train(
                            store, settings, artifacts, train_grid if weather else grid, now_ts, weather=weather,
                            reason=reason, holdout_weather=holdout_weather_provider(train_grid, wx, settings, store)
                            if weather else None) | weather_error
                    except (ArtifactError, ModelError, ValueError, KeyError, RuntimeError) as exc:
                        # a failed training must not stop the forecast from the current model, nor a refused write
                        # of the new one (the current model may still be readable, or in this process's cache)
                        res.trained = {"trained": False, "model": "weather" if weather else "weather_free",
                                       "error": f"{type(exc).__name__}: {exc}"} | weather_error
                        if isinstance(exc, ArtifactError):
                            store_error = str(exc)
                        # a hole in the realised temperature is a data condition with its remedy in the message,
                        # retried every run until filled: a warning, not an error with a traceback each hour
                        held = isinstance(exc, WeatherHoldoutError)
                        log_event(log, "training_failed", logging.WARNING if held else logging.ERROR, error=str(exc),
                                  weather=weather, error_type=type(exc).__name__, exc_info=None if held else exc)
                        if held and trainable:
                            # failed before any fit: the run's training goes to the next model due (the weather-free
                            # one was never retrained while a hole in the temperature failed every weather training)
                            trainable, weather_error = False, {"weather_error": res.trained["error"]}
                            res.trained |= weather_error  # where the next plan trains nothing, too
                            continue
                    break
            if not wx.status:  # fresh weather covering every target: the weather model, when there is one
                fc, version, weather_status = _predict_weather(store, settings, artifacts, wgrid, now_ts, wx)
            if fc is None:
                current = artifacts.current(series_key(settings))
                if current is None:
                    fallback_reason = "no model"
                else:
                    version = current["version"]
                    fc = predict_current(cached_model(artifacts, series_key(settings), version), grid, now_ts,
                                         settings, past=_recent(store, settings, now_ts, weather_used=False))
        except ArtifactError as exc:
            fallback_reason = f"artifact store unavailable: {exc}"
            store_error = str(exc)
        except (ModelError, ValueError, KeyError, RuntimeError) as exc:
            fallback_reason = f"model failed: {type(exc).__name__}: {exc}"
            # the type and the traceback: "model_failed error='level_3'" alone did not say a KeyError, nor where
            log_event(log, "model_failed", logging.ERROR, error=str(exc), error_type=type(exc).__name__, exc_info=exc)
    if fc is not None:
        res.quality, res.model_version = "model", version
    else:
        fc, simple = fallback_forecast(grid, now_ts, settings)
        res.quality, res.fallback_reason, version = "fallback", fallback_reason or "unknown", ""
        res.details["fallback_model"] = simple.reason
        log_event(log, "fallback_forecast", logging.WARNING, reason=res.fallback_reason, model=simple.reason)
    if res.quality == "fallback" and weather_status in ("", "used", "no_model", "failed"):
        weather_status = "unused"  # the simple models: no model, so no weather, whatever the feed's state
    weather_status = weather_status or "no_model"
    _weather_metrics(settings, weather_status, wx, now_ts)
    FORECAST_FALLBACK.set(1.0 if res.quality == "fallback" else 0.0)
    if not problem:  # the store was consulted
        FORECAST_ARTIFACT_STORE_UP.set(0.0 if store_error else 1.0)
        if store_error:
            res.details["artifact_store_error"] = store_error
    if weather_status not in ("used", "off"):
        log_event(log, "forecast_without_weather", logging.WARNING, weather_status=weather_status, reason=wx.reason)
    rows = forecast_rows(fc, run_id=run_id, model_version=version, issued_at=now_ts, settings=settings,
                         quality=res.quality, fallback_reason=res.fallback_reason, weather_status=weather_status)
    res.rows = store.insert_df("forecasts", rows, dedup_token=f"forecast-{run_id}")
    res.details.update({"quality": res.quality, "fallback_reason": res.fallback_reason, "model_version": version,
                        "origin": rows["origin"].iloc[0].isoformat(), "last_target": rows["ts"].iloc[-1].isoformat(),
                        "trained": res.trained, "weather_status": weather_status, **wx.details(now_ts)})
    return res


def _predict_weather(store: Store, settings: Settings, artifacts: Any, wgrid: pd.DataFrame, now: pd.Timestamp,
                     wx: WeatherInputs) -> tuple[pd.DataFrame | None, str, str]:
    """The weather model's forecast with the weather known at the run: (forecast, version, 'used'), or (None, '',
    'no_model' | 'failed') — the caller then issues the weather-free model. An unreachable artifact store raises
    (ArtifactError: the run falls back as for the weather-free model)."""
    key = weather_series_key(settings)
    try:
        current = artifacts.current(key)
    except ModelError as exc:  # a damaged pointer or metadata: the weather-free model is issued, as below
        wx.reason = f"weather model failed: {exc}"
        log_event(log, "weather_model_failed", logging.ERROR, error=str(exc))
        return None, "", "failed"
    if current is None:
        wx.reason = "no weather model yet"
        return None, "", "no_model"
    try:
        model = cached_model(artifacts, key, current["version"])
        fc = predict_current(model, wgrid, now, settings, past=_recent(store, settings, now, weather_used=True),
                             weather=wx.future)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 — whatever the weather path raises, the weather-free model is issued
        wx.reason = f"weather model failed: {type(exc).__name__}: {exc}"
        log_event(log, "weather_model_failed", logging.ERROR, error=str(exc))
        return None, "", "failed"
    return fc, str(current["version"]), "used"


def _recent(store: Store, settings: Settings, now: pd.Timestamp, weather_used: bool) -> pd.DataFrame | None:
    try:
        return recent_forecasts(store, settings, now, weather_used=weather_used)
    except StoreError as exc:  # the holdout calibration still gives intervals
        log_event(log, "recent_forecasts_unreadable", logging.WARNING, error=str(exc))
        return None


def _weather_metrics(settings: Settings, status: str, wx: WeatherInputs, now: pd.Timestamp) -> None:
    for s in WEATHER_STATUSES:
        FORECAST_WEATHER_STATUS.labels(status=s).set(1.0 if s == status else 0.0)
    FORECAST_WEATHER_AGE.set((now - wx.issued_at).total_seconds() if wx.issued_at is not None else float("nan"))
    if settings.forecast_weather and status != "used":
        FORECAST_WEATHER_DEGRADED.labels(status=status).inc()


def predict_current(model: Any, grid: pd.DataFrame, now: pd.Timestamp, settings: Settings,
                    past: pd.DataFrame | None = None, weather: pd.DataFrame | None = None) -> pd.DataFrame:
    """7 local days ahead from the model (combined with seasonal naive per lead day), origin = the step after
    the newest observation. ``past``: forecasts issued recently (``origin, ts, yhat, lead_day``) whose errors set
    the adaptive intervals (:func:`shared.forecasting.combine.adaptive_calibration`); None = holdout calibration.
    ``weather`` (a weather model): the weather path known at the run (``ts`` + WEATHER_COLUMNS, covering every
    target); ``grid`` then carries the past weather columns."""
    last = grid.dropna(subset=["value"])["ts"].max()
    targets = forecast_targets(last, now, settings.forecast_resolution_min, settings.forecast_horizon_days)
    step = pd.Timedelta(minutes=settings.forecast_resolution_min)
    cal = model.calibration
    if past is not None:
        cal = combine.adaptive_calibration(past, grid, targets[0], settings.forecast_interval_level,
                                           settings.forecast_conformal_days, model.calibration)
    extra: dict[str, Any] = {}
    if weather is not None:  # the interface's long frame: origin, ts, WEATHER_COLUMNS for this run's targets
        wx = weather[pd.DatetimeIndex(weather["ts"]).isin(targets)].drop_duplicates("ts")
        extra["weather"] = wx.assign(origin=targets[0])[["origin", "ts", *WEATHER_COLUMNS]].reset_index(drop=True)
    fc = issue(model, grid, [targets[0]], horizon_end=targets[-1] - targets[0] + step, calibration=cal, **extra)
    fc = fc[fc["ts"].isin(targets)]
    if len(fc) != len(targets) or fc["yhat"].isna().any():
        raise ModelError(f"model returned {len(fc)} of {len(targets)} steps or NaN values")
    return fc[["ts", "yhat", "lower", "upper", "yhat_source", "model_weight"]].reset_index(drop=True)


def recent_forecasts(store: Store, settings: Settings, now: pd.Timestamp, weather_used: bool = False) -> pd.DataFrame:
    """Model forecasts issued over the last ``forecast_conformal_days`` at the same UTC hour as ``now`` (one run
    a day, like the holdout's daily origins), as ``origin, ts, yhat, lead_day, lower, upper`` — the adaptive
    intervals' errors and the coverage the issued intervals had. Only runs of the same kind: the weather model's
    (``weather_used``) or the weather-free model's — their errors differ, so each gets intervals from its own."""
    step = pd.Timedelta(minutes=settings.forecast_resolution_min)
    df = store.query_df(
        "select origin, ts, yhat, lower, upper from {db:Identifier}.forecasts "
        "where source = {s:String} and metric = {m:String} "
        "and quality = 'model' and issued_at >= {a:DateTime64(3, 'UTC')} and issued_at < {b:DateTime64(3, 'UTC')} "
        "and toHour(issued_at) = {h:UInt8} and (weather_status = 'used') = {w:Bool} order by origin, ts",
        {"s": settings.series_source, "m": settings.series_metric,
         "a": (now - pd.Timedelta(days=settings.forecast_conformal_days)).to_pydatetime(), "b": now.to_pydatetime(),
         "h": int(now.hour), "w": weather_used},
    )
    if df.empty:
        return pd.DataFrame(columns=["origin", "ts", "yhat", "lead_day", "lower", "upper"])
    df["origin"] = pd.to_datetime(df["origin"], utc=True)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df = df.drop_duplicates(["origin", "ts"], keep="last")
    df["lead_day"] = baseline.lead_days(df["origin"], df["ts"], step)
    return df


# Daily origins the simple models are chosen on, and calibrated on. On French load 2016–2023 (noon origins,
# seasonal naive's 80 % bounds from the errors before each origin) bounds from 28 days covered 67–73 % by lead day,
# from 91 days 76–77 %: a month's errors rarely hold the next week's worst. The choice wants recent errors: over 28
# days D+1 is 4.95 %, over 56 or 91 days 5.09 / 5.35 % (baseline.SIMPLE_MAX_LEAD_DAY's analysis).
FALLBACK_CHOICE_DAYS = 28
FALLBACK_CALIBRATION_DAYS = 91
# the history a fallback reads (the calibration window, 8 lead days, 4 weeks of copies further back)
FALLBACK_HISTORY = pd.Timedelta(days=FALLBACK_CALIBRATION_DAYS + LEVEL_BLOCKS + 28)


SIMPLE_DEFAULT = next(iter(baseline.SIMPLE_MODELS))  # seasonal naive: the product's challenger and benchmark


@dataclass(frozen=True)
class SimpleModel:
    """The simple model a series without a usable model gets, per lead day (:func:`best_simple_model`)."""

    sources: dict[str, str]  # lead day ("1", "2", …) -> a key of baseline.SIMPLE_MODELS; seasonal naive elsewhere
    calibration: dict[str, list[float]]  # interval bounds per lead day, from the chosen models' own recent errors
    forecasts: pd.DataFrame  # origin, ts, yhat, lead_day, yhat_source: what it issued from the scored origins
    reason: str  # the sentence the run, the report and the log give

    def forecast(self, history: pd.DataFrame, origins: pd.DatetimeIndex, steps: int, step: pd.Timedelta,
                 tz: str = TZ) -> pd.DataFrame:
        """Long frame ``origin, ts, yhat, lead_day, yhat_source`` from each origin: each lead day's model."""
        frames = {name: baseline.simple_many(name, history, origins, steps, step, tz)
                  for name in dict.fromkeys([SIMPLE_DEFAULT, *self.sources.values()])}
        return _per_lead_day(frames, self.sources)


def _per_lead_day(frames: dict[str, pd.DataFrame], sources: dict[str, str]) -> pd.DataFrame:
    """``frames[SIMPLE_DEFAULT]`` (``origin, ts, yhat, lead_day``) with each lead day's yhat taken from the frame of
    its model in ``sources`` (matched on origin and ts; seasonal naive where none is named), and ``yhat_source``."""
    fc = frames[SIMPLE_DEFAULT].assign(yhat_source=SIMPLE_DEFAULT).reset_index(drop=True)
    chosen = fc["lead_day"].astype(str).map(sources).fillna(SIMPLE_DEFAULT)
    for name in set(sources.values()) - {SIMPLE_DEFAULT}:
        other = fc[["origin", "ts"]].merge(frames[name][["origin", "ts", "yhat"]], on=["origin", "ts"], how="left")
        mine = (chosen == name).to_numpy()
        fc.loc[mine, "yhat"], fc.loc[mine, "yhat_source"] = other.loc[mine, "yhat"].to_numpy(), name
    return fc


def best_simple_model(grid: pd.DataFrame, last: pd.Timestamp, step: pd.Timedelta, level: float, tz: str = TZ,
                      days: int = FALLBACK_CHOICE_DAYS, calibration_days: int = FALLBACK_CALIBRATION_DAYS,
                      models: tuple[str, ...] = tuple(baseline.SIMPLE_MODELS), gap: pd.Timedelta = pd.Timedelta(0),
                      max_lead: dict[str, int] | None = None) -> SimpleModel:
    """Per lead day, the simple model (``baseline.SIMPLE_MODELS``: seasonal or daily naive, the latter up to its
    ``SIMPLE_MAX_LEAD_DAY``) with the lowest MAPE over daily origins of the last ``days`` days before ``last`` (the
    last value; targets up to it), and interval bounds from its errors over the last ``calibration_days``.

    One rule for production's fallback and the backtest of a series too short for the model (issue 10: "degrades to
    the best simple model and says so"). Per lead day because yesterday's copy is the better next 24 hours on French
    load (``bench.fallback``) and not beyond. The origins span every lead day's errors: a 34-day series' holdout (8
    days) had none for D+7, so its backtest issued no interval there while production did. A tie, a lead day
    without a valid actual, or a model that leaves some of them without a forecast (a copy that found no value)
    keeps seasonal naive (the first; the product's challenger and benchmark).

    ``gap``: the time between the last value and the first target the model will issue (a run on stale input).
    Each scoring origin then reads only what lies more than ``gap`` before it, so the choice and the bounds are those
    of copies made across the same gap: scored without it, yesterday's copy won the first day from fresh data and
    was then issued from data 3 days old (a review, real 2023 ends: first-day MAPE 10.7 % against seasonal naive's
    7.6 %). ``models``: the candidates (a subset of ``baseline.SIMPLE_MODELS``, seasonal naive among them);
    ``max_lead`` overrides ``SIMPLE_MAX_LEAD_DAY`` (``bench.fallback``'s comparisons). Across a gap of
    ``baseline.SIMPLE_MAX_GAP`` or more a model is no candidate (yesterday's copy: 48 h).
    """
    tops = baseline.SIMPLE_MAX_LEAD_DAY if max_lead is None else max_lead
    # a copy from further back than its longest gap (baseline.SIMPLE_MAX_GAP) is no candidate, and the reason says so
    too_far = [m for m in models if gap >= baseline.SIMPLE_MAX_GAP.get(m, pd.Timedelta.max)]
    models = tuple(m for m in models if m not in too_far)
    window = max(days, calibration_days)
    origins = pd.date_range(last - pd.Timedelta(days=window), last - pd.Timedelta(days=1), freq="D")
    # what the copies can read: the window, 8 lead days and 4 weeks of fallback copies before it (faster on years)
    grid = grid[grid["ts"] >= origins[0] - pd.Timedelta(days=LEVEL_BLOCKS + 28) - gap] if len(origins) else grid
    recent = last - pd.Timedelta(days=days)
    per_day_steps = int(pd.Timedelta(days=1) / step)
    valid = grid.dropna(subset=["value"])[["ts"]]
    scores: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    frames: dict[str, pd.DataFrame] = {}
    for name in dict.fromkeys([SIMPLE_DEFAULT, *models]):
        top = tops.get(name, LEVEL_BLOCKS)
        fc = baseline.simple_many(name, grid, origins, top * per_day_steps, step, tz, gap=gap)
        frames[name] = fc[fc["ts"] <= last]
        if name in models:
            scored = frames[name][frames[name]["origin"] >= recent]
            scores[name] = holdout_metrics(scored, grid, last + step).get("mape_by_lead_day", {})
            # how many valid targets it forecast, per lead day: a copy that found nothing must not win on the rest
            n = scored.dropna(subset=["yhat"]).merge(valid, on="ts")["lead_day"].value_counts()
            counts[name] = {str(int(k)): int(v) for k, v in n.items()}
    leads = sorted({k for per_day in scores.values() for k in per_day}, key=int)

    def eligible(name: str, k: str) -> bool:
        return k in scores[name] and counts[name].get(k, 0) >= max(c.get(k, 0) for c in counts.values())

    sources = {k: min((n for n in scores if eligible(n, k)), key=lambda n: scores[n][k], default=SIMPLE_DEFAULT)
               for k in leads}
    # what it would have issued from those origins: each lead day's model (seasonal naive where none was scored)
    fc = _per_lead_day(frames, sources)
    if not leads:
        return SimpleModel({}, {}, fc, f"{SIMPLE_DEFAULT}: no valid value in the last {days} days to score the "
                           "simple models on, so no interval")
    why = (f"best simple model per 24-hour lead day over the last {days} days (MAPE % " + " / ".join(scores) + "): "
           + ", ".join(f"lead day {k} {sources[k]} " + "/".join(f"{scores[n][k]:.1f}" if k in scores[n] else "–"
                                                                for n in scores) for k in leads)
           + f"; bounds from its errors over the last {calibration_days} days"
           + (f", copies made {gap / pd.Timedelta(hours=1):.0f} h after the last value as this run's are"
              if gap > pd.Timedelta(0) else "")
           + "".join(f"; {m} no candidate across {baseline.SIMPLE_MAX_GAP[m] / pd.Timedelta(hours=1):.0f} h or more"
                     for m in too_far))
    return SimpleModel(sources, baseline.relative_error_quantiles(fc, grid, level), fc, why)


def fallback_forecast(grid: pd.DataFrame, now: pd.Timestamp, settings: Settings,
                      ) -> tuple[pd.DataFrame, SimpleModel]:
    """The best simple model per lead day (:func:`best_simple_model`, returned too: chosen on the last 28 days,
    scored across this run's gap between the last value and the first target) over the targets, with intervals from
    its errors over the last 91 days; ``yhat_source`` names it.

    With no data at all it still returns the target steps (NaN forecasts are impossible to write as
    yhat, so yhat falls back to the last known value or 0 with no interval) — consumers always get rows.
    """
    step = pd.Timedelta(minutes=settings.forecast_resolution_min)
    data = grid.dropna(subset=["value"])
    last = data["ts"].max() if len(data) else now.floor(step) - step
    targets = forecast_targets(last, now, settings.forecast_resolution_min, settings.forecast_horizon_days)
    gap = max(targets[0] - last - step, pd.Timedelta(0))  # 0 when the data reach the step before the first target
    simple = best_simple_model(grid, last, step, settings.forecast_interval_level, gap=gap)
    # from the first target, in the zone forecast_targets cuts its days in
    fc = simple.forecast(grid, pd.DatetimeIndex(targets[:1]), len(targets), step, TZ).drop(columns="origin")
    if fc["yhat"].isna().any():
        fill = float(data["value"].iloc[-1]) if len(data) else 0.0
        fc["yhat"] = fc["yhat"].fillna(fill)
    fc = baseline.apply_intervals(fc, simple.calibration)
    fc["model_weight"] = 0.0
    return fc[["ts", "yhat", "lower", "upper", "yhat_source", "model_weight"]], simple
