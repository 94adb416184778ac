"""PowerSense's load model: two NeuralProphet networks, fit, predict, save/load.

Why two stages: a single NeuralProphet with hourly autoregression over 7 days (n_lags = n_forecasts =
168) trains for ~14 minutes and still loses to a week-old copy of the data at D+7, while the model
without autoregression cannot follow level shifts (COVID, the 2022–23 sobriety drop) and misses by
~7 %. So:

1. **profile** — NeuralProphet on the grid without trend (``growth='off'``) and without lags:
   yearly and weekly seasonality, daily seasonality *conditional* on day type (Monday / Tuesday–Thursday
   / Friday / Saturday / Sunday-or-holiday) × summer/winter time, public holidays pooled by the weekday
   they fall on (one event for Monday–Friday, one for Saturday; ``holiday_events``), bridge days and the
   24 Dec – 1 Jan break (binary future regressors). Time is passed as local
   *standard* time (UTC+1 all year), so the grid has no DST holes or duplicates; the summer-time
   condition moves the daily shape by the hour people shift.
2. **level** — NeuralProphet with autoregression at a *daily* resolution: the profile's residual
   averaged over 24-hour blocks ending at the forecast origin, ``n_lags`` blocks in, 8 blocks out
   (covers D+7 from any origin hour). The block forecasts are interpolated between block centres and
   added to the profile. The level network learns day-to-day *changes* (``level_mode='diff'``), so a
   new level persists; learning deviations from a 28-day mean (``'detrended'``) measured worse
   (D+7 MAPE 6.6 % vs 5.9 % on 2023). A series with less history than
   ``POWERSENSE_FORECAST_LEVEL_MIN_HISTORY_DAYS`` has none (``level_network=False``): too few daily blocks train
   it on noise, and the last block's level is carried forward instead, reverting toward the recent mean by weights
   learnt on the training history (``persistence_weights``).
3. **recent shape** (no network): the profile residual's deviation from each day's mean, by time of day,
   averaged over the 7 days before the origin and added at 0.75 weight to every forecast day
   (:func:`recent_shape`). The daily shape drifts through the year faster than the profile follows;
   this took 2023 MAPE from 3.71 to 3.30 % at D+1 and 5.90 to 5.76 % at D+7 (intraday shape error
   ≈ 2.4 → 1.8 %). Same-weekday-last-week residual shapes added nothing on top (measured).
4. **nowcast**: the level network reads 24-hour means only; the residual of the last hour before the
   origin (shape removed) minus the last block's mean is added at 0.5 weight to every block forecast
   (:func:`_nowcast`): 2023 D+1 3.30 → 3.15 %, D+7 5.76 → 5.71 % (2022, out of sample: 3.21 → 3.07 %).

The level network is trained with nine seeds (the weather model's with five) and the median of their block
forecasts is used: single seeds land in a poor optimum now and then (2023, same profile: D+7 MAPE 5.7 % for seeds
42/45/46, 6.2 % for 43, 8.5 % for 44); the median of five matched the good seeds (seed 42 → 5.71 %, seed 43 →
5.69 %), nine did a little better on the 2015–2018 backtests (``level_seeds``).
The weather model's profile network is trained with ``weather_profile_seeds`` seeds too, and their mean is the
profile: ten epochs of a network with ~245 seasonal, event and weather terms end in a seed-dependent optimum, and
the weather slopes it learns move every forecast — the level network cannot absorb a slope error, the weather
changes day to day (2022-Q1, one training, realised temperature as the forecast — look-ahead: D+1 MAPE 2.16 /
1.89 / 2.18 % for seeds 42 / 43 / 44 alone, 1.93 % for the mean of three profiles, 1.80 % for five). The
weather-free model keeps one (``profile_seeds``): its level network absorbs its profile's errors (2015 backtest,
five profiles: no gain at D+1, D+7 worse, three times the training).

Measured on 2023 and left off (options kept for reruns): the profile on log(load) (D+1 3.79 % vs
3.71 %), extra winter-weighted daily shapes (3.80 %), learning rate 0.03 (3.81 %), 20 epochs or a
28-block level memory (no change), yearly order 20 (worse).

Prediction intervals are conformal: quantiles of the relative errors per lead day measured on a
holdout the model did not train on, centred on the holdout's median error (see :func:`calibrate`) — the
starting point; once forecasts have been issued, the stage replaces them by adaptive intervals from the issued
forecasts' recent errors (``shared/forecasting/combine.py``), and the issued forecast is the model combined
with seasonal naive per lead day (``blend``, learnt on the holdout).

**Weather** (``ModelConfig.weather``; off = the weather-free model, unchanged): the national temperature's
heating and cooling degrees (``shared/weather/features.py``: smoothed temperature, learnt bases) enter the profile
network as future regressors, one per degree kind × time-of-day block (``weather_blocks`` blocks of local standard
time), because the load's temperature response differs by hour (heating at the morning and evening peaks). The
profile then explains the weather part of the load, so the residual the level network, the recent shape and
the nowcast read is weather-free: in the past it is computed with the *realised* weather (``history`` carries
it), at the targets the profile uses the weather *as known at each origin* (``weather``: realised before the
origin, the forecast after it — :func:`shared.weather.features.known_at`). Without that split the diff-mode level
network would carry yesterday's weather anomaly forward while the profile already explains tomorrow's. Training
rows without weather are skipped; a weather model asked to predict without weather for its targets raises
:class:`shared.errors.ModelError` (the caller falls back to the weather-free model). The weather part of the
profile is linear in the regressors (additive future regressors), so targets that share a timestamp but not the
weather (several origins) cost one network call: the weather-free part per instant plus regressors × the per-unit
effects (:func:`_weather_slopes`). NeuralProphet's slopes come out too flat (the profile has no level term, so the
lockdown and sobriety drops of the training window, both in the heating season, are confounded with the weather): after
the fit a least-squares correction of each slope is estimated from the residual's short-term variation
(:func:`weather_slope_correction`), before the level network is trained on the residual.

Artifacts are JSON (configuration, normalisation parameters, component names, calibration) plus
``torch.save``'d state dicts — ``neuralprophet.load()`` unpickles whole objects, which torch ≥ 2.6
refuses (``weights_only``), and unpickling from object storage would run arbitrary code anyway.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from shared.calendar import TZ, bridge_of, day_type_of, public_holidays
from shared.errors import ModelError
from shared.features import steps_per_day
from shared.forecasting.baseline import apply_intervals, lead_days, relative_error_quantiles
from shared.forecasting.combine import weights_by_row
from shared.forecasting.gate import strict
from shared.forecasting.linear import fit_linear, level_shift, predict_linear
from shared.logs import log_event
from shared.process_limits import available_cpus
from shared.weather.damping import apply_damping

log = logging.getLogger(__name__)

BLOCKS_OUT = 8  # 24-hour blocks forecast by the level model: enough for D+7 from any origin hour
ANCHOR_HOURS = 6  # the forecast starts from the profile's mean residual over the last hours
STD_OFFSET = pd.Timedelta(hours=1)  # Europe/Paris standard time (CET) = UTC+1
GENERIC_EVENTS = ["holiday", "bridge", "christmas_week"]  # "named", any other country: one event for all holidays
# holiday_events="weekday" (the default): public holidays pooled by the weekday they fall on, for any country
WEEKDAY_EVENTS = ["holiday_weekday", "holiday_saturday", "bridge", "christmas_week"]
CONDITIONS = [f"{season}_{day}" for season in ("summer", "winter") for day in ("work", "sat", "off")]
CONDITIONS_MON_FRI = [f"{season}_{day}" for season in ("summer", "winter")
                      for day in ("mon", "work", "fri", "sat", "off")]
HOLIDAY_EVENTS = [
    "new_year", "easter_monday", "labour_day", "victory_day", "ascension", "whit_monday", "bastille_day",
    "assumption", "all_saints", "armistice", "christmas", "bridge", "christmas_week",
]
_HOLIDAY_KEYS = {
    "New Year's Day": "new_year", "Easter Monday": "easter_monday", "Labor Day": "labour_day",
    "Labour Day": "labour_day", "Victory Day": "victory_day", "Ascension Day": "ascension",
    "Whit Monday": "whit_monday", "Pentecost Monday": "whit_monday", "National Day": "bastille_day",
    "Assumption Day": "assumption", "All Saints' Day": "all_saints", "Armistice Day": "armistice",
    "Christmas Day": "christmas",
}


def _holiday_keys(name: str) -> list[str]:
    """The named events of one French holiday as the ``holidays`` package names it: two holidays on one day come
    as one name joined by "; " (2008-05-01: "Ascension Day; Labor Day"). The package renamed Whit Monday
    "Pentecost Monday"; both spellings are kept for the artifacts trained before."""
    return [_HOLIDAY_KEYS[part] for part in name.split("; ") if part in _HOLIDAY_KEYS]


@dataclass
class ModelConfig:
    """Hyper-parameters of both stages (stored with every artifact)."""

    resolution_min: int = 30
    epochs: int = 10
    learning_rate: float = 0.01
    batch_size: int = 1024
    # the profile network gets at least this many optimizer steps: ``epochs`` is raised on a short series
    # (:func:`profile_epochs`). Ten epochs of a 12-week series at batch 1024 are ~30 steps, an untrained profile
    # (bench.short_series, 23 windows of 63 days: the model alone at D+1 12.5 % MAPE, 3.9 % with 600 steps, the same
    # with 1200); 400 leaves every training of three years or more as it was (4 years ≈ 650 steps, the weather
    # model's 3 years ≈ 480). 0 = ``epochs`` as given
    profile_min_steps: int = 400
    # on a grid finer than this, the weather model's profile networks train on this coarser grid's instants only (a
    # 15-minute series: its :00 and :30 steps, those a 30-minute grid holds), at a batch of as many minutes of the
    # series (batch_size × resolution / this step), so every epoch takes as many optimizer steps, each over the same
    # span of time, as on every step. Its fitted values, slope correction, linear companion and level networks
    # still use every step. Measured at 15 minutes (train_and_calibrate before 2023, 91-day holdout with simulated
    # temperature forecast errors, two training processes): holdout MAPE 3.500 / 3.475 % for seeds 42 / 43 against
    # 3.501 / 3.476 % on every step; 60–75 s instead of 92–107 s; 1.25 + 1.08 GiB (stage + worker) instead of 1.84 +
    # 1.70 — over the 3 GiB budget. Not the weather-free model: its one profile network lost 0.11 pp of holdout
    # MAPE so (5.91 / 5.93 / 5.49 against 5.81 / 5.81 / 5.38 %, seeds 42–44) and costs 45–55 s and 2.4 GiB on every
    # step. 0 = every step
    weather_profile_step_min: int = 30
    yearly_order: int = 10
    weekly_order: int = 4
    daily_order: int = 10
    level_lags: int = 14
    # the weather model's level network reads fewer days: its residual has the weather taken out, so it is less
    # persistent and 14 lags fit noise. Chosen on 2022 (trained before it, one training per quarter, issued
    # forecast, (a) realised temperature as the forecast — look-ahead — / (b) simulated errors, seed 1, D+1 and
    # D+7 MAPE %): 7 lags instead of 14 — Q1 (a) 1.83 → 1.79, 3.40 → 2.94, (b) 2.30 → 2.24, 4.26 → 4.03; Q3 (a)
    # 1.71 → 1.66, 2.28 → 2.13, (b) 1.89 → 1.84, 2.90 → 2.88. Artifacts saved before it used level_lags
    weather_level_lags: int = 7
    level_epochs: int = 60
    level_learning_rate: float = 0.01
    profile_log: bool = False  # fit the profile on log(load)
    # weather: heating/cooling degrees of the smoothed national temperature as future regressors of the profile,
    # per time-of-day block (``weather_blocks`` blocks of 24/N hours of local standard time). ``grid``/``history``
    # carry shared.weather.features.WEATHER_COLUMNS; ``weather_smoothed_input``: the temperature the model was
    # trained on is already smoothed (the shipped Enedis series) — the same definition must be used at prediction
    weather: bool = False
    weather_blocks: int = 6
    # how an instant belongs to the blocks: "step" (its own block only) or "hat" (shared linearly between the two
    # nearest block centres, so a slope moves smoothly through the day instead of jumping at block edges). "hat"
    # chosen on 2022 (trained before it, one training per quarter, realised temperature as the forecast —
    # look-ahead): D+1 MAPE Q1 1.86 → 1.83 %, Q3 1.76 → 1.71 %; simulated forecasts (seed 1) 2.30 → 2.30 %,
    # 1.93 → 1.89 %. Artifacts saved before this setting existed were trained with "step" (see from_files)
    weather_block_shape: str = "hat"
    weather_smoothed_input: bool = False
    # the weather regressors the model has (set by fit: a block × degree kind that is 0 all through the training
    # window — no cooling in a winter-only window — cannot be learnt) — None = all of weather_regressor_names()
    weather_regs: list[str] | None = None
    # the weather slopes re-estimated by least squares on the *high-passed* profile residual (a centred moving
    # mean of ``weather_refit_days`` removed from residual and regressors; 0 = NeuralProphet's slopes alone), see
    # :func:`weather_slope_correction`
    weather_refit_days: float = 7.0
    # the weather model's linear companion (shared/forecasting/linear.py: a ridge regression per time-of-day slot on
    # the same degrees and calendar, shifted by its mean residual over the last ``weather_linear_level_days``): the
    # forecast is ``(1 − w) · networks + w · linear``; 0 = none. Why and the figures: that module's docstring.
    # Artifacts saved before it have none (see from_files)
    weather_linear_weight: float = 0.3
    weather_linear_level_days: float = 3.0
    # the temperature forecast shrunk toward the normal by slopes learnt on the training holdout
    # (shared/weather/damping.py; LoadModel.weather_damping); False = fed as it comes
    weather_damping: bool = True
    # the normal it is damped toward: "france" = the shipped Enedis normal; "own" = the seasonal cycle of the
    # series' own realised temperature over the training window (damping.fit_normal; another series than France's)
    weather_normal: Literal["france", "own"] = "france"
    cold_shapes: bool = False  # extra daily shapes weighted by winter depth
    split_mon_fri: bool = True  # Monday and Friday get their own daily shapes
    christmas_week: bool = True  # an event for 24 Dec – 1 Jan
    level_mode: str = "diff"  # "diff": day-to-day changes; "detrended": deviations from a trailing mean
    # False: no level network, the level is carried forward (the last 24-hour block, reverting by ``persistence``
    # below, plus the nowcast) — for a series under
    # POWERSENSE_FORECAST_LEVEL_MIN_HISTORY_DAYS, whose daily blocks are too few: the network fits noise (12 weeks:
    # ~26 training samples; model alone D+1 … D+7 MAPE 3.9 … 7.9 % with it, 3.6 … 6.1 % without) and still loses at
    # long leads with two years (bench.short_series; service.train_and_calibrate decides)
    level_network: bool = True
    # without a level network the carried level reverts toward the mean of the last ``persistence_mean_days``
    # blocks by a weight per block ahead learnt on the training history (:func:`persistence_weights`: 1 = the last
    # block persists, 0 = the mean), pulled toward 1 by ``persistence_shrink`` (0 = pure persistence, as before;
    # the in-sample weights of a 12-week history are biased low). Weather-driven levels revert within days (PJM
    # East's summer heat: 12-week windows' D+3 … D+7 MAPE 9.79 … 10.42 → 9.38 … 10.08 %), France's behave more like
    # a random walk (weights near 1); chosen on those two, checked on five series (README, *Short series*)
    persistence_mean_days: int = 14
    persistence_shrink: float = 0.5
    level_baseline_days: int = 28
    # recent intraday shape: the profile residual's deviation from its daily mean, by time of day, averaged
    # over the last ``shape_days`` days before the origin, added with ``shape_weight`` (0 = off)
    shape_days: int = 7
    shape_weight: float = 0.75
    # nowcast: the residual of the last ``nowcast_hours`` (shape removed) minus the last 24-hour block's mean,
    # added with ``nowcast_weight`` to every block forecast — the level network only sees 24-hour means, so
    # it learns today's weather from yesterday afternoon as much as from this morning (0 = off)
    nowcast_hours: float = 1.0
    nowcast_weight: float = 0.5
    # leave holiday, bridge-day and Christmas-week residuals out of what the level, shape and nowcast read:
    # the diff-mode level network would otherwise carry a holiday's miss into the following days. Measured off:
    # 2023 D+1 3.21 % / D+7 6.01 % retrained with it (3.15 / 5.71 without); at prediction only ±0.04
    skip_event_days: bool = False
    # level networks trained with seeds seed, seed+1, …; the forecast is their median. One seed in five
    # measured on 2023 ended in a poor optimum (D+7 MAPE 6.2–8.5 % instead of 5.7 %); the median ignores it
    # Nine instead of five chosen on the 2015–2018 backtests (mean D+1 2.644 → 2.632 %, D+4 4.566 → 4.529 %, D+7
    # 5.222 → 5.219 %, better at every D+k; coverage in band 109 → 110 of 112 cells; +4 s per training)
    level_seeds: int = 9
    # the weather model's: nine measured neutral on 2022 (one training per quarter, (a) / (b) seed 1 D+1 MAPE: Q1
    # 1.797 → 1.799 / 2.212 → 2.217 %, Q3 1.538 → 1.547 / 1.714 → 1.720 %; D+7 ±0.06 pp), so it keeps five
    weather_level_seeds: int = 5
    # profile networks trained with seeds seed, seed+1, …; the profile is their mean (why five for the weather model
    # and one without weather, with the figures: the module docstring). Artifacts saved before it have one profile
    profile_seeds: int = 1
    weather_profile_seeds: int = 5
    interval_level: float = 0.8
    interval_centered: bool = False
    seed: int = 42
    torch_threads: int = 1  # POWERSENSE_FORECAST_TORCH_THREADS (shared/settings.py says why 1)
    # processes that train the seeds' networks side by side (POWERSENSE_FORECAST_TRAIN_PROCESSES): the same
    # networks whatever the count (see _fit_seeds); 1 = all in the calling process
    train_processes: int = 1
    # the series' calendar: local time zone (day types, DST) and public holidays (a ``holidays`` country code,
    # '' = none); how the holidays become events: ``holiday_events`` below.
    timezone: str = TZ
    holiday_country: str = "FR"
    # the grid's instants lie this far past whole multiples of resolution_min since the epoch
    # (shared.features.grid_phase: 30 for an hourly series published at the local hours of a zone half an hour off
    # UTC); origins are floored onto that grid. 0 for France's series and for artifacts saved before it existed
    grid_phase_min: float = 0.0
    # how public holidays enter the profile (events_for): "weekday" — pooled by the day they fall on (one event for
    # Monday–Friday, one for Saturday), so each is learnt from ~8 / ~1.3 days per year of window; "named" — one
    # event per French holiday, each learnt from one occurrence per year, whatever its weekday (a 1 May on a
    # Sunday and one on a Tuesday share a coefficient): in the 2015–2020 backtests those days had D+1 MAPE 8–10 %
    # (1 May, 8 May, 14 July, 15 Aug) and the day after them 4–8 % (the miss carried by the level network), against
    # 2.6–3.1 % on other days. Artifacts saved before this setting were trained with "named" (see from_files)
    holiday_events: str = "weekday"
    # daily-shape conditions the model has (set by fit: the day-type × season combinations its training data
    # contains; a combination it never saw borrows the nearest one) — None = all of conditions_of()
    conditions: list[str] | None = None


@dataclass
class LoadModel:
    """A trained model: the two NeuralProphet networks plus what prediction needs."""

    config: ModelConfig
    profile: Any  # NeuralProphet
    level: Any  # NeuralProphet; None = no level network (``ModelConfig.level_network``)
    calibration: dict[str, list[float]] = field(default_factory=dict)  # lead day "1".."8" → [q_lo, q_hi]
    meta: dict[str, Any] = field(default_factory=dict)
    extra_levels: list[Any] = field(default_factory=list)  # the other seeds' level networks (median, see config)
    extra_profiles: list[Any] = field(default_factory=list)  # the other seeds' profile networks (mean, see config)
    # per lead day "1".."8": the model's weight against seasonal naive learnt on the holdout (shared/forecasting/
    # combine.py); empty for models saved before the challenger existed (= the model alone)
    blend: dict[str, Any] = field(default_factory=dict)
    # the weather model's linear companion (shared/forecasting/linear.py: fit_linear's coefficients); None = none
    linear: dict[str, Any] | None = None
    # per lead day: the networks' weight against the linear part learnt on the holdout (combine.learn_weights);
    # empty = config.weather_linear_weight (a model fitted without a holdout)
    linear_blend: dict[str, Any] = field(default_factory=dict)
    # no level network: per block ahead 1…BLOCKS_OUT, the weight of the last block's deviation from the recent mean
    # (ModelConfig.persistence_mean_days) that the level forecast keeps; empty = the last block persists (models
    # with a level network, and artifacts saved before the weights existed)
    persistence: list[float] = field(default_factory=list)
    # a weather model: per 24-hour lead block "1".."8", the slope its temperature forecast's anomaly is damped by
    # (shared/weather/damping.py), learnt on the holdout; empty = fed as it comes (a model trained without a holdout
    # or with ``config.weather_damping`` off, and artifacts saved before the damping existed)
    weather_damping: dict[str, float] = field(default_factory=dict)
    # °C added to the normal the damping pulls toward: the mean anomaly of the model's realised temperature
    # (shared.weather.damping.normal_offset); 0 for artifacts saved before it
    weather_normal_offset: float = 0.0
    # config.weather_normal "own": the normal's coefficients (shared.weather.damping.fit_normal); empty = France's
    weather_normal_harmonics: list[float] = field(default_factory=list)


# --- frames the two networks see -------------------------------------------------------------------
def std_offset(tz: str) -> pd.Timedelta:
    """The zone's standard UTC offset (the smaller of mid-January's and mid-July's, for both hemispheres)."""
    if tz == TZ:
        return STD_OFFSET
    offs = [pd.Timestamp(f"2021-{m}-15", tz="UTC").tz_convert(tz).utcoffset() for m in ("01", "07")]
    return pd.Timedelta(min(o for o in offs if o is not None))


def events_for(country: str, mode: str = ModelConfig.holiday_events) -> list[str]:
    """Candidate holiday events of a calendar (none: none). ``mode`` (``ModelConfig.holiday_events``): "weekday" —
    every public holiday in one of two events by the day it falls on (Monday–Friday, Saturday; a Sunday holiday is
    a Sunday already); "named" — France: one event per holiday, another country: one event for all."""
    if not country:
        return []
    if mode == "weekday":
        return WEEKDAY_EVENTS
    if mode == "named":
        return HOLIDAY_EVENTS if country == "FR" else GENERIC_EVENTS
    raise ModelError(f"holiday_events must be 'weekday' or 'named', not {mode!r}")


def holiday_frame(start: pd.Timestamp, end: pd.Timestamp, tz: str = TZ, country: str = "FR") -> pd.DataFrame:
    """Local dates with their event name (public holidays and bridge days) between two instants."""
    rows: list[tuple[pd.Timestamp, str]] = []
    if not country:
        return pd.DataFrame(rows, columns=["date", "event"])
    for y in range(start.tz_convert(tz).year - 1, end.tz_convert(tz).year + 2):
        # holidays and bridge days from the one calendar module (shared/calendar.py), as featurize's columns
        for d, name in public_holidays(y, country).items():
            for key in (_holiday_keys(name) if country == "FR" else ["holiday"]):
                rows.append((pd.Timestamp(d), key))
            # the same day in its weekday pool ("weekday" events); both kinds are listed so that a model restores
            # with whichever events it was trained with
            wd = pd.Timestamp(d).dayofweek
            if wd < 6:
                rows.append((pd.Timestamp(d), "holiday_weekday" if wd < 5 else "holiday_saturday"))
            bridge = bridge_of(d)
            if bridge is not None:
                rows.append((pd.Timestamp(bridge), "bridge"))
        # the end-of-year break (24 Dec – 1 Jan): a dip too sharp for the yearly Fourier terms
        for d in pd.date_range(f"{y}-12-24", f"{y + 1}-01-01", freq="D"):
            rows.append((d, "christmas_week"))
    return pd.DataFrame(rows, columns=["date", "event"]).drop_duplicates()


def profile_frame(
    ts: pd.Series | pd.DatetimeIndex, y: np.ndarray | pd.Series | None = None, events: list[str] | None = None,
    conditions: list[str] | None = None, tz: str = TZ, country: str = "FR",
) -> pd.DataFrame:
    """The profile network's input: ``ds`` in local standard time, ``y``, day-type conditions, events."""
    idx = pd.DatetimeIndex(ts)
    local = idx.tz_convert(tz)
    dates = pd.DatetimeIndex(local.date)
    hol = (holiday_frame(idx.min(), idx.max(), tz, country) if len(idx)
           else pd.DataFrame(columns=["date", "event"]))
    std = std_offset(tz)
    df = pd.DataFrame({"ds": (idx.tz_convert("UTC") + std).tz_localize(None)})
    df["y"] = np.asarray(y, dtype=float) if y is not None else np.nan
    summer = np.array([t.utcoffset() != std for t in local]) if len(local) else np.array([])
    conditions = conditions or CONDITIONS
    day = _day_names(local, dates, hol, split="summer_mon" in conditions)
    # "cold" shapes are weighted by how deep in winter the day is (a smooth calendar climatology:
    # 1 in mid-January, 0 in mid-July), so the daily shape can change gradually with the season
    doy = local.dayofyear.to_numpy()
    coldness = (1 + np.cos(2 * np.pi * (doy - 15) / 365.25)) / 2
    # each step's own condition; one the model lacks (never in its training data) borrows the nearest one
    season = np.where(summer, "summer", "winter") if len(local) else np.array([], dtype=str)
    own = np.char.add(np.char.add(season.astype(str), "_"), day.astype(str)) if len(local) else season
    plain = [c for c in conditions if not c.startswith("cold_")]
    mapped = own.copy()
    for c in set(own.tolist()):
        if c not in plain:
            se, dk = c.split("_")
            other = "winter" if se == "summer" else "summer"
            alts = [f"{other}_{dk}", f"{se}_work", f"{other}_work", *plain]
            mapped[own == c] = next((a for a in alts if a in plain), c)
    for cond in conditions:
        se, kind = cond.split("_")
        if se == "cold":
            df[cond] = np.where(day == kind, coldness, 0.0)
        else:
            df[cond] = (mapped == cond).astype(float)
    for ev, col in _event_indicators(dates, hol, HOLIDAY_EVENTS if events is None else events).items():
        df[ev] = col
    return df


def _event_indicators(dates: pd.DatetimeIndex, hol: pd.DataFrame, events: list[str]) -> dict[str, np.ndarray]:
    """0/1 per local date and event of :func:`holiday_frame`'s rows ``hol``."""
    return {ev: dates.isin(hol.loc[hol["event"] == ev, "date"]).astype(float) for ev in events}


DAY_NAMES = np.array(["mon", "work", "fri", "sat", "off"])  # shared.calendar.day_type_of's classes 0–4, by name


def _day_names(local: pd.DatetimeIndex, dates: pd.DatetimeIndex, hol: pd.DataFrame, split: bool = True) -> np.ndarray:
    """Day type of each local instant, by name (:data:`DAY_NAMES`; ``split=False``: Monday and Friday are ``work``).

    The one day-type definition (:func:`shared.calendar.day_type_of`) with the model's holidays (``hol``, from
    :func:`holiday_frame`, any country): a day off is a Sunday, a public holiday (Saturday ones too) or a day of
    the 24 Dec – 1 Jan break — its load is Sunday-like; bridge days are not days off (half the country works).
    """
    off = dates.isin(hol.loc[hol["event"] != "bridge", "date"])
    names = DAY_NAMES[day_type_of(local.dayofweek.to_numpy(), off)]
    return names if split else np.where(np.isin(names, ["mon", "fri"]), "work", names)


def calendar_columns(ts: pd.DatetimeIndex, events: list[str], tz: str = TZ, country: str = "FR",
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The profile's calendar at instants ``ts`` without the rest of its frame (the linear companion's): the day
    type of each (:func:`_day_names`) and the holiday-event indicators, exactly as :func:`profile_frame`'s, from one
    :func:`holiday_frame`."""
    idx = pd.DatetimeIndex(ts)
    if len(idx) == 0:
        return np.array([], dtype=DAY_NAMES.dtype), {ev: np.zeros(0) for ev in events}
    local = idx.tz_convert(tz)
    dates = pd.DatetimeIndex(local.date)
    hol = holiday_frame(idx.min(), idx.max(), tz, country)
    return _day_names(local, dates, hol), _event_indicators(dates, hol, events)


def weather_regressor_names(cfg: ModelConfig) -> list[str]:
    """The profile's weather regressors: heating and cooling degrees per time-of-day block."""
    if not cfg.weather:
        return []
    if cfg.weather_regs is not None:
        return list(cfg.weather_regs)
    return _all_weather_regs(cfg)


def _all_weather_regs(cfg: ModelConfig) -> list[str]:
    return [f"{kind}_b{b}" for kind in ("hdd", "cdd") for b in range(max(1, cfg.weather_blocks))]


def weather_regressors(ts: pd.DatetimeIndex, wx: pd.DataFrame, cfg: ModelConfig) -> np.ndarray:
    """Rows × :func:`weather_regressor_names` for instants ``ts`` with their weather features ``wx``
    (same length, columns ``hdd_smooth``, ``cdd_smooth``): each degree kind times the indicator of the
    instant's time-of-day block (local standard time, as the profile's ``ds``). NaN where the weather is unknown."""
    n_b = max(1, cfg.weather_blocks)
    idx = pd.DatetimeIndex(ts).tz_convert("UTC") + std_offset(cfg.timezone)
    minute = (idx.hour * 60 + idx.minute).to_numpy()
    # share of each instant in each block (rows sum to 1)
    if cfg.weather_block_shape == "hat":
        # position in block units, 0 at the centre of block 0; periodic over the day
        pos = minute * n_b / (24 * 60) - 0.5
        dist = np.abs(((pos[:, None] - np.arange(n_b)[None, :]) + n_b / 2) % n_b - n_b / 2)
        share = np.clip(1.0 - dist, 0.0, None)
    elif cfg.weather_block_shape == "step":
        share = ((minute * n_b // (24 * 60))[:, None] == np.arange(n_b)[None, :]).astype(float)
    else:
        raise ModelError(f"weather_block_shape must be 'step' or 'hat', not {cfg.weather_block_shape!r}")
    cols = [wx["hdd_smooth"].to_numpy(dtype=float)[:, None] * share,
            wx["cdd_smooth"].to_numpy(dtype=float)[:, None] * share]
    full = np.hstack(cols)
    everything = _all_weather_regs(cfg)
    return full[:, [everything.index(n) for n in weather_regressor_names(cfg)]]


def conditions_of(cfg: ModelConfig) -> list[str]:
    """Day-type × summer/winter conditions of the daily seasonalities."""
    if cfg.conditions is not None:
        return list(cfg.conditions)
    base = CONDITIONS_MON_FRI if cfg.split_mon_fri else CONDITIONS
    if cfg.cold_shapes:
        base = base + [f"cold_{c.split('_')[1]}" for c in base if c.startswith("winter_")]
    return base


def _new_profile(cfg: ModelConfig, events: list[str]) -> Any:
    from neuralprophet import NeuralProphet

    m = NeuralProphet(
        growth="off",
        yearly_seasonality=cfg.yearly_order if cfg.yearly_order > 0 else False,
        weekly_seasonality=cfg.weekly_order,
        daily_seasonality=False,
        n_lags=0,
        normalize="standardize",
        learning_rate=cfg.learning_rate,  # always set: the LR finder crashes with this torch
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        impute_missing=False,
        drop_missing=True,
        collect_metrics=False,
        accelerator="cpu",
        trainer_config={"enable_checkpointing": False, "logger": False},
    )
    for cond in conditions_of(cfg):
        m.add_seasonality(name=f"daily_{cond}", period=1, fourier_order=cfg.daily_order, condition_name=cond)
    # Events are binary future regressors here: NeuralProphet's own events need a separate events
    # frame; regressors keep one frame for fit and predict.
    for ev in events:
        m.add_future_regressor(ev, normalize="off")
    for name in weather_regressor_names(cfg):
        m.add_future_regressor(name)
    return m


def level_lags_of(cfg: ModelConfig) -> int:
    """Daily blocks the level network reads: ``weather_level_lags`` for a weather model, else ``level_lags``."""
    return cfg.weather_level_lags if cfg.weather else cfg.level_lags


def level_seeds_of(cfg: ModelConfig) -> int:
    """Level networks trained: ``weather_level_seeds`` for a weather model, else ``level_seeds``."""
    return cfg.weather_level_seeds if cfg.weather else cfg.level_seeds


def profile_seeds_of(cfg: ModelConfig) -> int:
    """Profile networks trained: ``weather_profile_seeds`` for a weather model, else ``profile_seeds``."""
    return cfg.weather_profile_seeds if cfg.weather else cfg.profile_seeds


def _new_level(cfg: ModelConfig) -> Any:
    from neuralprophet import NeuralProphet

    return NeuralProphet(
        growth="off",
        yearly_seasonality=False,
        weekly_seasonality=False,
        daily_seasonality=False,
        n_lags=level_lags_of(cfg),
        n_forecasts=BLOCKS_OUT,
        normalize="standardize",
        learning_rate=cfg.level_learning_rate,
        epochs=cfg.level_epochs,
        batch_size=64,
        impute_missing=True,
        collect_metrics=False,
        accelerator="cpu",
        trainer_config={"enable_checkpointing": False, "logger": False},
    )


def _quiet() -> None:
    """NeuralProphet and Lightning log a lot at INFO; keep our JSON logs readable."""
    import warnings

    # without plotly (not a dependency) NeuralProphet's import logs "Importing plotly failed" at ERROR, twice, as
    # plain text on stderr (neuralprophet/plot_forecast_plotly.py, logger "NP.plotly"): a level set before the
    # import keeps the function's stderr JSON only
    logging.getLogger("NP.plotly").setLevel(logging.CRITICAL)
    import neuralprophet  # noqa: F401  (its import sets the "NP" logger to INFO: import first, then quiet it)

    for mod in ("neuralprophet", "pytorch_lightning", "lightning", "torch"):
        warnings.filterwarnings("ignore", module=mod)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("NP", "neuralprophet", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("PYTORCH_LIGHTNING_DISABLE_PROGRESS_BAR", "1")


def _seed(cfg: ModelConfig, seed: int | None = None) -> None:
    import random

    import torch

    seed = cfg.seed if seed is None else seed
    torch.set_num_threads(max(1, cfg.torch_threads))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- stage helpers ------------------------------------------------------------------------------
def _profile_predict(m: Any, ts: pd.DatetimeIndex, wx: np.ndarray | None = None) -> np.ndarray:
    """Profile values for UTC instants (no lags, so any instants).

    A weather profile needs ``wx`` (rows × weather regressors, :func:`weather_regressors`); ``ts`` may then repeat
    (targets of several origins with different weather): the weather-free part is computed once per distinct
    instant and the weather part added as ``wx @`` the per-unit effects (exact: the regressors are additive).
    """
    if len(ts) == 0:
        return np.array([])
    names = getattr(m, "powersense_weather_regs", [])
    if not names:
        out = _profile_raw(m, ts)
        return np.exp(out) if getattr(m, "powersense_log", False) else out
    if wx is None or wx.shape != (len(ts), len(names)):
        raise ModelError("a weather model needs the weather regressors of every instant it predicts")
    uniq, inv = np.unique(pd.DatetimeIndex(ts).asi8, return_inverse=True)
    base = _profile_raw(m, pd.DatetimeIndex(uniq, tz="UTC"), np.zeros((len(uniq), len(names))))
    slopes = _weather_slopes(m) + np.asarray(getattr(m, "powersense_weather_correction", np.zeros(len(names))))
    out = base[inv] + wx @ slopes
    return np.exp(out) if getattr(m, "powersense_log", False) else out


def _profile_raw(m: Any, ts: pd.DatetimeIndex, wx: np.ndarray | None = None) -> np.ndarray:
    """A profile network's output (log scale if ``profile_log``) for distinct instants; a weather profile also takes
    its regressors ``wx`` (rows × ``powersense_weather_regs``)."""
    df = profile_frame(ts, events=m.powersense_events, conditions=m.powersense_conditions,
                       tz=getattr(m, "powersense_tz", TZ), country=getattr(m, "powersense_country", "FR"))
    if wx is not None:
        for k, name in enumerate(m.powersense_weather_regs):
            df[name] = wx[:, k]
    return _profile_network(m, df)


def _profile_network(m: Any, df: pd.DataFrame) -> np.ndarray:
    """A profile network's output (its training scale) for the rows of ``df`` (:func:`profile_frame` plus any
    regressor columns): NeuralProphet's own input preparation and network, called directly.

    The same computation as ``m.predict(df)["yhat1"]`` (``tests/test_profile_network.py`` asserts both agree bit
    for bit) without what ``predict`` spends around it. Its dataset (``time_dataset.py: TimeDataset``) splits the
    tabularised inputs into one dict per row (``_split_nested_dict``) and Lightning collates them back into batches:
    measured on a 3-year half-hourly frame (52,602 rows), 4.8 s per call against 0.8 s here. Training calls it once
    per profile network for its fitted values (five networks in the weather model), and every prediction once.
    The steps are ``forecaster.py: predict`` → ``_predict_raw`` for a model without lags: prepare and normalise the
    frame, ``tabularize_univariate_datetime``, the network's forward pass (``time_net.py: predict_step``) over
    batches of ``min(1024, rows)`` as ``_predict_raw``'s loader makes them, then ``predicted * scale + shift`` with
    the series' normalisation parameters. Rows come back aligned on ``ds``.
    """
    import torch
    from neuralprophet import df_utils, time_dataset
    from neuralprophet.data.process import _prepare_dataframe_to_predict
    from neuralprophet.data.transform import _normalize

    if m.max_lags != 0 or m.n_forecasts != 1:
        raise ModelError("a profile network has no lags and forecasts one step")
    if len(df) == 0:
        return np.array([])
    frame, _, _, _ = df_utils.prep_or_copy_df(df.assign(y=0.0))  # a y column is required; without lags, unused
    frame = _prepare_dataframe_to_predict(model=m, df=frame, max_lags=0, freq=m.data_freq)
    frame = _normalize(df=frame, config_normalization=m.config_normalization)
    inputs, _, _ = time_dataset.tabularize_univariate_datetime(
        frame, predict_mode=True, n_lags=0, n_forecasts=1, predict_steps=m.predict_steps,
        config_seasonality=m.config_seasonality, config_events=m.config_events,
        config_country_holidays=m.config_country_holidays, config_lagged_regressors=m.config_lagged_regressors,
        config_regressors=m.config_regressors, config_missing=m.config_missing)

    def tensors(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: tensors(x) for k, x in v.items()}
        # C order, as the loader's collation stacks rows: the regressors come column-major, and the network's
        # matrix products then sum in another order (measured: 1 value in ~1,700 off by one float32 ulp)
        arr = np.ascontiguousarray(v, dtype=np.float32)
        if np.isnan(arr).any():
            # predict would drop these rows (drop_missing) and return fewer values than asked for
            raise ModelError("the profile network got a missing input (an event, a condition or a regressor)")
        return torch.from_numpy(arr)

    def rows(v: Any, a: int, b: int) -> Any:
        return {k: rows(x, a, b) for k, x in v.items()} if isinstance(v, dict) else v[a:b]

    x = tensors(inputs)
    n = len(frame)
    batch = min(1024, n)
    net = m.model
    net.eval()
    with torch.no_grad():
        out = [net({**rows(x, a, a + batch), "predict_mode": True}, None, False)[0][:, 0, 0].numpy()
               for a in range(0, n, batch)]
    y = m.config_normalization.get_data_params(frame["ID"].iloc[0])["y"]  # one series: prep_or_copy_df names it
    # in float32 and then widened, as predict's frame holds it
    values = (np.concatenate(out) * y.scale + y.shift).astype(float)
    return pd.Series(values, index=frame["ds"].to_numpy()).reindex(df["ds"].to_numpy()).to_numpy(dtype=float)


def _weather_slopes(m: Any) -> np.ndarray:
    """Per-unit effect of each weather regressor on the profile (cached on the network).

    Two calls at the same distinct instants: all regressors 0, then regressor k = 1 at instant k. Additive
    future regressors make the difference the effect of one unit of regressor k, whatever the instant.
    """
    cached = getattr(m, "powersense_weather_slope_values", None)
    if cached is not None:
        return np.asarray(cached)
    n = len(m.powersense_weather_regs)
    ts = pd.date_range("2021-01-04", periods=n, freq="D", tz="UTC")
    zero = _profile_raw(m, ts, np.zeros((n, n)))
    one = _profile_raw(m, ts, np.eye(n))
    m.powersense_weather_slope_values = one - zero
    return np.asarray(m.powersense_weather_slope_values)


def weather_slope_correction(ts: pd.DatetimeIndex, resid: np.ndarray, wx: np.ndarray, window: int) -> np.ndarray:
    """Least-squares correction of the weather slopes from the profile residual's *short-term* variation.

    Residual and regressors both lose their centred moving mean over ``window`` grid steps (a high-pass filter);
    the correction is the ordinary least-squares fit of the filtered residual on the filtered regressors. Why: the
    profile has no level term, so NeuralProphet's slopes are learnt together with every slow level change of the
    training window (the 2020 lockdowns, the 2022–23 sobriety drop, both in the heating season) and come out too
    flat; gradient training in few epochs flattens them further. Day-to-day weather moves faster than those level
    changes, and the level network carries slow changes anyway, so the slopes that matter for D+1…D+7 are the
    short-term ones. Measured on the model trained on 2020–2022:
    the heating slopes rose by ~400 MW/°C per block (+26–38 %). Chosen on 2022 (trained before it, realised temperature
    as the forecast — look-ahead): D+1 MAPE 2.10 → 1.87 % in Q1, 2.29 → 2.02 % in Q3 (README, *The weather model*).

    Steps without a full window (gaps, the ends) are skipped; a regressor that never varies gets 0.
    """
    n_reg = wx.shape[1]
    if len(resid) == 0 or window < 2:
        return np.zeros(n_reg)
    # on the regular grid, so a gap does not pull distant steps into one window
    step = pd.Timedelta(pd.DatetimeIndex(ts).to_series().diff().median())
    full = pd.date_range(ts.min(), ts.max(), freq=step)
    pos = full.get_indexer(pd.DatetimeIndex(ts))
    frame = np.full((len(full), n_reg + 1), np.nan)
    frame[pos, 0] = resid
    frame[pos, 1:] = wx
    mean = pd.DataFrame(frame).rolling(window, center=True, min_periods=window).mean().to_numpy()
    hp = (frame - mean)[pos]
    ok = np.isfinite(hp).all(axis=1)
    x, y = hp[ok, 1:], hp[ok, 0]
    if len(y) <= n_reg:
        return np.zeros(n_reg)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    varies = x.std(axis=0) > 0
    return np.where(varies, coef, 0.0)


def block_means(ts: pd.DatetimeIndex, values: np.ndarray, ends: pd.DatetimeIndex, min_share: float = 0.5,
                resolution_min: int = 30) -> np.ndarray:
    """Mean of ``values`` over each block [ends[i-1] or ends[i]-24h, ends[i]); NaN when under-covered."""
    s = pd.Series(values, index=ts).dropna()
    out = np.full(len(ends), np.nan)
    if s.empty:
        return out
    t = s.index.asi8
    csum = np.concatenate([[0.0], np.cumsum(s.to_numpy())])
    hi = np.searchsorted(t, ends.asi8, side="left")
    lo = np.searchsorted(t, (ends - pd.Timedelta(hours=24)).asi8, side="left")
    n = hi - lo
    need = min_share * steps_per_day(resolution_min)
    ok = n >= need
    out[ok] = (csum[hi[ok]] - csum[lo[ok]]) / n[ok]
    return out


def _level_frame(block_values: np.ndarray) -> pd.DataFrame:
    """The level network's input: one row per block on an arbitrary regular daily axis."""
    ds = pd.date_range("2000-01-01", periods=len(block_values), freq="D")
    return pd.DataFrame({"ds": ds, "y": block_values})


# --- fit ------------------------------------------------------------------------------------------
def fit(grid: pd.DataFrame, cfg: ModelConfig) -> LoadModel:
    """Train both stages on ``grid`` (``ts`` UTC, ``value``; missing values are skipped).

    With ``cfg.weather`` the grid also carries :data:`shared.weather.features.WEATHER_COLUMNS` (realised
    temperature, derived); rows without weather are not trained on.
    """
    _quiet()
    _seed(cfg)
    data = grid.dropna(subset=["value"])
    if cfg.weather:
        if not {"hdd_smooth", "cdd_smooth"} <= set(grid.columns):
            raise ModelError("a weather model needs the weather columns in its training grid")
        data = data.dropna(subset=["hdd_smooth", "cdd_smooth"])
    if len(data) < 14 * steps_per_day(cfg.resolution_min):
        raise ModelError(f"not enough data to train: {len(data)} grid points")
    ts = pd.DatetimeIndex(data["ts"])
    # log scale: seasonal shapes become multiplicative, so the daily swing grows with the level
    y = np.log(data["value"].to_numpy()) if cfg.profile_log else data["value"].to_numpy()
    cal = {"tz": cfg.timezone, "country": cfg.holiday_country}
    candidates = events_for(cfg.holiday_country, cfg.holiday_events)
    frame = profile_frame(ts, y, events=candidates, conditions=conditions_of(cfg), **cal)
    # sized from the history: a daily shape (day type × season) or a yearly seasonality the training data cannot
    # show is not learnt (a short or single-season series; a zone without DST has no summer time)
    span_days = (ts.max() - ts.min()) / pd.Timedelta(days=1)
    if span_days < 365:
        cfg = replace(cfg, yearly_order=0)
    sample = profile_sample(ts, cfg)
    if (step := profile_train_step(cfg)) != cfg.resolution_min:
        cfg = replace(cfg, batch_size=max(1, cfg.batch_size * cfg.resolution_min // step))
    if (epochs := profile_epochs(int(sample.sum()), cfg)) != cfg.epochs:
        cfg = replace(cfg, epochs=epochs)
    present = [c for c in conditions_of(cfg) if frame[c].any()]
    if present != conditions_of(cfg):
        cfg = replace(cfg, conditions=present)
        frame = profile_frame(ts, y, events=candidates, conditions=conditions_of(cfg), **cal)
    # an event absent from the training window cannot be learnt (NeuralProphet drops constant columns)
    events = [ev for ev in candidates if frame[ev].any() and (cfg.christmas_week or ev != "christmas_week")]
    frame = frame.drop(columns=[ev for ev in candidates if ev not in events])
    wx = weather_regressors(ts, data, cfg) if cfg.weather else None
    if wx is not None:
        # a regressor that never varies in the training window cannot be learnt (NeuralProphet rejects it)
        keep = [bool(np.nanmax(wx[:, k]) > np.nanmin(wx[:, k])) for k in range(wx.shape[1])]
        if not all(keep):
            cfg = replace(cfg, weather_regs=[n for n, k in zip(weather_regressor_names(cfg), keep, strict=True) if k])
            wx = wx[:, keep]
    if wx is not None:
        for k, name in enumerate(weather_regressor_names(cfg)):
            frame[name] = wx[:, k]
    # no level network: no level seeds, so no worker process is started for a single profile network
    n_profiles, n_levels = max(1, profile_seeds_of(cfg)), max(1, level_seeds_of(cfg)) if cfg.level_network else 0
    with _training_pool(cfg, max(n_profiles, n_levels)) as workers:
        done = _fit_seeds(workers, cfg, n_profiles, (cfg, events, frame[sample], ts, y, wx), _fit_profile, _profile_job,
                          lambda out: (_restore_profile(cfg, out[0], out[1]), out[2]))
        profiles = [p for p, _ in done]
        fitted = np.mean([f for _, f in done], axis=0)
        levels: list[Any] = (_fit_levels(workers, cfg, ts, data["value"].to_numpy() - fitted, n_levels)
                             if n_levels else [None])
    end = ts.max() + pd.Timedelta(minutes=cfg.resolution_min)
    linear = None
    if cfg.weather and cfg.weather_linear_weight > 0:
        linear = fit_linear(ts, data["value"].to_numpy(), data["hdd_smooth"].to_numpy(), data["cdd_smooth"].to_numpy(),
                            events, cfg.resolution_min, cfg.timezone, cfg.holiday_country)
    meta = {"train_start": ts.min().isoformat(), "train_end": end.isoformat(), "train_points": int(len(data)),
            "profile_train_points": int(sample.sum())}
    persistence: list[float] = []
    if not cfg.level_network and cfg.persistence_shrink > 0:
        blocks = _training_blocks(cfg, ts, data["value"].to_numpy() - fitted)
        persistence = [1.0 - cfg.persistence_shrink * (1.0 - w)
                       for w in persistence_weights(blocks, _persistence_days(cfg))]
    return LoadModel(cfg, profiles[0], levels[0], meta=meta, extra_levels=levels[1:], extra_profiles=profiles[1:],
                     linear=linear, persistence=persistence)


def _persistence_days(cfg: ModelConfig) -> int:
    """Blocks the reverting level's mean spans: ``persistence_mean_days``, at most the blocks prediction reads
    (a weather model reads fewer, ``weather_level_lags``)."""
    return min(cfg.persistence_mean_days, level_lags_of(cfg) + _extra_blocks(cfg))


def persistence_weights(blocks: np.ndarray, mean_days: int, min_pairs: int = 10) -> list[float]:
    """Per block ahead k = 1…BLOCKS_OUT, the least-squares weight ``w_k`` in [0, 1] of
    ``blocks[t + k] − m_t ≈ w_k · (blocks[t] − m_t)``, ``m_t`` the mean of the ``mean_days`` blocks ending at t:
    how much of today's deviation from the recent level is still there k days later (1 = it all persists, as a
    random walk's; 0 = it is gone). Fewer than ``min_pairs`` complete pairs, or no deviation: 1."""
    b = np.asarray(blocks, dtype=float)
    mean = pd.Series(b).rolling(mean_days, min_periods=1).mean().to_numpy()
    mean[:mean_days - 1] = np.nan  # a full window of blocks, as at prediction
    out = []
    for k in range(1, BLOCKS_OUT + 1):
        x, y = b[:-k] - mean[:-k], b[k:] - mean[:-k]
        ok = np.isfinite(x) & np.isfinite(y)
        xx = float(x[ok] @ x[ok])
        out.append(float(np.clip(x[ok] @ y[ok] / xx, 0.0, 1.0)) if ok.sum() >= min_pairs and xx > 0 else 1.0)
    return out


def profile_train_step(cfg: ModelConfig) -> int:
    """The step of the instants the profile networks train on: a weather model's ``weather_profile_step_min`` on a
    grid finer than it that divides it, else the grid's own step."""
    step = cfg.weather_profile_step_min if cfg.weather else 0
    return step if step > cfg.resolution_min > 0 and step % cfg.resolution_min == 0 else cfg.resolution_min


def profile_sample(ts: pd.DatetimeIndex, cfg: ModelConfig) -> np.ndarray:
    """Which training steps the profile network fits (boolean, positional): the instants of the
    :func:`profile_train_step` grid, at the grid's own phase (``cfg.grid_phase_min``) — a 15-minute series' :00 and
    :30, those a 30-minute grid of it holds; every step where that is the grid itself."""
    step = profile_train_step(cfg)
    if step == cfg.resolution_min:
        return np.ones(len(ts), dtype=bool)
    ns = pd.DatetimeIndex(ts).asi8 - round(cfg.grid_phase_min * 60e9)  # in ns: a phase can be a fraction of a minute
    return np.asarray(ns % (step * 60_000_000_000) == 0)


def profile_epochs(points: int, cfg: ModelConfig) -> int:
    """Epochs of the profile network for ``points`` training points: ``cfg.epochs``, raised where that would give
    fewer than ``cfg.profile_min_steps`` optimizer steps (batches of ``cfg.batch_size``) — a short series."""
    batches = max(1, -(-points // cfg.batch_size))
    if batches * cfg.epochs >= cfg.profile_min_steps:
        return cfg.epochs
    return -(-cfg.profile_min_steps // batches)


def _fit_levels(workers: _Workers | None, cfg: ModelConfig, ts: pd.DatetimeIndex, resid: np.ndarray,
                n: int) -> list[Any]:
    """The level networks (seeds ``cfg.seed`` …) trained on the profile residual's 24-hour blocks ending at the
    end of the training data."""
    blocks = _level_input(_training_blocks(cfg, ts, resid), cfg)
    return _fit_seeds(workers, cfg, n, (cfg, blocks), _fit_level, _level_job,
                      lambda out: _restore(_new_level(cfg), *out))


def _training_blocks(cfg: ModelConfig, ts: pd.DatetimeIndex, resid: np.ndarray) -> np.ndarray:
    """The profile residual's 24-hour block means ending at the end of the training data (events left out)."""
    resid = _skip_events(ts, resid, cfg)
    end = ts.max() + pd.Timedelta(minutes=cfg.resolution_min)
    n_blocks = int((end - ts.min()) / pd.Timedelta(hours=24))
    ends = pd.DatetimeIndex([end - pd.Timedelta(hours=24) * k for k in range(n_blocks - 1, -1, -1)])
    return block_means(ts, resid, ends, resolution_min=cfg.resolution_min)


def _fit_level(cfg: ModelConfig, blocks: np.ndarray) -> Any:
    """One level network trained on the daily ``blocks`` (seeded by the caller)."""
    level = _new_level(cfg)
    level.fit(_level_frame(blocks), freq="D", progress=None, minimal=True)
    return level


# --- training processes ------------------------------------------------------------------------------
# The weather model trains five profile networks and five level networks, each in one torch thread (more threads
# do not help networks this small, settings.forecast_torch_threads): on a machine with more than one core they train
# side by side in separate processes (train_processes). Each seed's network is the same wherever it is
# trained: every fit seeds Python, NumPy and torch itself (_seed), and a network trained in a worker comes back
# through the artifact's own format (_profile_part / _state_bytes → _restore), which predicts bit-identically.
def _profile_job(cfg: ModelConfig, events: list[str], frame: pd.DataFrame, ts: pd.DatetimeIndex, y: np.ndarray,
                 wx: np.ndarray | None, seed: int) -> tuple[dict[str, Any], bytes, np.ndarray]:
    """Worker side of one profile fit: its artifact part, its weights and its fitted values."""
    _seed(cfg, seed)
    profile, fitted = _fit_profile(cfg, events, frame, ts, y, wx)
    return _profile_part(profile), _state_bytes(profile), fitted


def _level_job(cfg: ModelConfig, blocks: np.ndarray, seed: int) -> tuple[dict[str, Any], bytes]:
    """Worker side of one level fit: its artifact part and its weights."""
    _seed(cfg, seed)
    level = _fit_level(cfg, blocks)
    return _level_part(level), _state_bytes(level)


def _fit_seeds(workers: _Workers | None, cfg: ModelConfig, n: int, args: tuple[Any, ...], local: Any, job: Any,
               restore: Any) -> list[Any]:
    """Train ``n`` networks with seeds ``cfg.seed`` … ``cfg.seed + n − 1``; their results in seed order.

    ``local(*args)`` trains one here (seeded first); ``job(*args, seed)`` trains one in a worker and returns it in
    the artifact's format, which ``restore`` rebuilds. With worker processes, seed k goes to a worker unless k is a
    multiple of the number of training processes (this process trains those meanwhile); without, all here.
    """
    remote = {}
    if workers is not None:
        remote = {k: workers.pool.submit(job, *args, cfg.seed + k) for k in range(n) if k % workers.processes}
    done = {}
    for k in range(n):
        if k not in remote:
            _seed(cfg, cfg.seed + k)
            done[k] = local(*args)
    try:
        for k, fut in remote.items():
            done[k] = restore(fut.result())
    except BrokenProcessPool as exc:
        # out of memory, or a script that trains at import time: spawn re-imports the caller's main module, which
        # then needs the ``if __name__ == "__main__":`` guard (the product's entry points have it)
        raise ModelError("a training process died (out of memory? lower POWERSENSE_FORECAST_TRAIN_PROCESSES or raise "
                         "the memory limit; a script that trains needs an `if __name__ == \"__main__\":` "
                         "guard)") from exc
    return [done[k] for k in range(n)]


@dataclass
class _Workers:
    """Training worker processes: the pool, and how many processes train in all (this one included)."""

    pool: Any  # concurrent.futures.ProcessPoolExecutor
    processes: int


@contextmanager
def _training_pool(cfg: ModelConfig, networks: int) -> Iterator[_Workers | None]:
    """Worker processes for :func:`_fit_seeds`: ``train_processes`` − 1 of them, fewer when there are fewer networks
    to train or fewer CPUs to train on (:func:`available_cpus`: a second process on one CPU only doubles the memory);
    none when that leaves one process.

    ``spawn``, not ``fork``: a forked child inherits torch's and OpenMP's thread state from a parent that has
    trained before, which can deadlock. Where processes cannot be started (AWS Lambda has no POSIX semaphores for
    multiprocessing's queues) training stays in this process, logged as ``training_processes_unavailable``.
    """
    processes = min(max(1, cfg.train_processes), networks)
    if processes > 1:  # the cgroup files are read only when a second process is wanted
        cpus = available_cpus()
        if cpus < processes:
            log_event(log, "training_processes_capped", train_processes=cfg.train_processes, cpus=cpus)
            processes = cpus
    if processes < 2:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    try:
        pool = ProcessPoolExecutor(max_workers=processes - 1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_quiet)
    except (OSError, NotImplementedError, ImportError) as exc:
        log_event(log, "training_processes_unavailable", logging.WARNING, error=str(exc),
                  train_processes=cfg.train_processes)
        yield None
        return
    # workers start on the first submit and then import the ML stack (_quiet, ~6 s): start them now, while this
    # process trains its own share
    pool.submit(os.getpid)
    try:
        yield _Workers(pool, processes)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fit_profile(cfg: ModelConfig, events: list[str], frame: pd.DataFrame, ts: pd.DatetimeIndex, y: np.ndarray,
                 wx: np.ndarray | None) -> tuple[Any, np.ndarray]:
    """One profile network trained on ``frame`` (seeded by the caller), and its fitted values at ``ts`` (load
    scale; with weather, after the slope correction)."""
    profile = _label_profile(_new_profile(cfg, events), cfg, events)
    profile.fit(frame, freq=f"{profile_train_step(cfg)}min", progress=None, minimal=True)
    _release_training_data(profile)
    fitted = _profile_predict(profile, ts, wx)
    if wx is not None and cfg.weather_refit_days > 0:
        # in the profile's own space (log load with ``profile_log``), where the regressors are additive: the
        # corrected profile is then the fitted one plus the regressors × the correction, no second network pass
        space = np.log(fitted) if cfg.profile_log else fitted
        window = int(round(cfg.weather_refit_days * steps_per_day(cfg.resolution_min)))
        corr = weather_slope_correction(ts, y - space, wx, window)
        profile.powersense_weather_correction = corr
        fitted = np.exp(space + wx @ corr) if cfg.profile_log else fitted + wx @ corr
    return profile, fitted


def _label_profile(m: Any, cfg: ModelConfig, events: list[str]) -> Any:
    """Attach what :func:`_profile_predict` reads to a profile network (its events, calendar, scale, regressors)."""
    m.powersense_events = events
    m.powersense_tz, m.powersense_country = cfg.timezone, cfg.holiday_country
    m.powersense_conditions = conditions_of(cfg)
    m.powersense_log = cfg.profile_log
    m.powersense_weather_regs = weather_regressor_names(cfg)
    return m


def _release_training_data(m: Any) -> None:
    """Drop what a fitted NeuralProphet keeps of its training: the network holds its training data loader and the
    Lightning trainer its loops (measured: ~0.5 GiB per profile network on a 3-year window, so five weather
    profiles took the forecast stage to 3.5 GiB). Prediction needs neither: a fresh trainer as :func:`_restore`
    configures for a model loaded from its artifact. The network (a LightningModule) is detached from the trainer
    that fitted it, which holds its fit loop and data loader: a ``predict`` call used to re-attach it to the fresh
    trainer, the direct network call (:func:`_profile_network`) does not (measured with five weather profiles: peak
    RSS 1.6 → 3.1 GiB while the old trainers stayed reachable)."""
    m.model.train_loader = None
    m.model.trainer = None
    _fresh_trainer(m)
    gc.collect()


def _fresh_trainer(m: Any) -> None:
    """A prediction-only Lightning trainer for a NeuralProphet (no progress bar, no metrics, CPU)."""
    from neuralprophet import utils

    m.trainer, _ = utils.configure_trainer(
        config_train=m.config_train, config=m.trainer_config, metrics_logger=m.metrics_logger,
        early_stopping=False, accelerator="cpu", progress_bar_enabled=False, metrics_enabled=False,
    )


def profile_values(model: LoadModel, ts: pd.DatetimeIndex, wx: np.ndarray | None = None) -> np.ndarray:
    """The model's profile at ``ts``: the mean of its profile networks (:func:`profile_seeds_of`; each as in
    :func:`_profile_predict`)."""
    return np.mean([_profile_predict(p, ts, wx) for p in [model.profile, *model.extra_profiles]], axis=0)


# --- predict ----------------------------------------------------------------------------------------
def predict(model: LoadModel, history: pd.DataFrame, origins: list[pd.Timestamp] | pd.DatetimeIndex,
            horizon_end: pd.Timedelta | None = None, weather: pd.DataFrame | None = None,
            parts: bool = False) -> pd.DataFrame:
    """Forecasts from each origin using only ``history`` strictly before it.

    ``history``: ``ts`` (UTC), ``value`` on the model grid. Each origin is the first target step. Targets
    run from the origin to ``origin + horizon_end`` (default 8 days, which covers D+7 from any hour).
    Returns long columns ``origin, ts, yhat, lower, upper, lead_day`` (lead_day = ceil(lead / 24 h)).

    A weather model (``config.weather``) also needs :data:`~shared.weather.features.WEATHER_COLUMNS` in
    ``history`` (realised, for the past residuals; a past step without weather counts as unknown) and
    ``weather``: ``origin, ts, *WEATHER_COLUMNS``, the features as known at each origin for its targets
    (:func:`shared.weather.features.known_at`). Missing weather for any target raises :class:`ModelError`.
    A weather model with a linear part (:attr:`LoadModel.linear`) issues ``(1 − w) · networks + w · linear`` per
    lead day (:func:`mix_linear`); ``parts=True`` returns the networks' forecast as ``yhat`` and the linear one as
    ``yhat_linear`` instead, without intervals (the training holdout learns ``w`` from them).
    """
    cfg = model.config
    step = pd.Timedelta(minutes=cfg.resolution_min)
    horizon_end = horizon_end or pd.Timedelta(hours=24 * BLOCKS_OUT)
    origins = pd.DatetimeIndex(origins).tz_convert("UTC")
    hist = history.dropna(subset=["value"]).sort_values("ts")
    hts = pd.DatetimeIndex(hist["ts"])
    if len(origins) == 0:
        return pd.DataFrame(columns=["origin", "ts", "yhat", "lower", "upper", "lead_day"])
    lo = origins.min() - pd.Timedelta(days=max(level_lags_of(cfg) + _extra_blocks(cfg), cfg.shape_days) + 2)
    keep = (hts >= lo) & (hts < origins.max())
    hts, hval = hts[keep], hist["value"].to_numpy()[keep]
    targets = _targets(origins, step, horizon_end)
    target_lin: list[np.ndarray] | None = None
    if cfg.weather:
        if weather is not None and model.weather_damping:
            weather = apply_damping(weather, model.weather_damping, model.weather_normal_offset,
                                    model.weather_normal_harmonics)
        # the past with the realised weather, each origin's targets with the weather known at that origin
        hist_prof, target_prof, target_lin = _weather_profiles(model, hist[keep], hts, origins, targets, weather,
                                                               hval)
        resid = _skip_events(hts, hval - hist_prof, cfg)
    else:
        # one profile call for every instant needed (history residuals and all targets)
        all_ts = hts.append(targets).unique().sort_values()
        prof = pd.Series(profile_values(model, all_ts), index=all_ts)
        resid = _skip_events(hts, hval - prof.reindex(hts).to_numpy(), cfg)
    # level network input: for each origin, its last :func:`level_lags_of` blocks ending at the origin
    lag_frames = []
    n_blocks = level_lags_of(cfg) + _extra_blocks(cfg)
    for o in origins:
        ends = pd.DatetimeIndex([o - pd.Timedelta(hours=24) * k for k in range(n_blocks - 1, -1, -1)])
        b = block_means(hts, resid, ends, resolution_min=cfg.resolution_min)
        lag_frames.append(pd.Series(b).interpolate(limit_direction="both").to_numpy())
    lags = np.vstack(lag_frames)
    level_fc = np.median([_level_output(lv, lags, cfg, model.persistence)
                          for lv in [model.level, *model.extra_levels]], axis=0)
    spd = steps_per_day(cfg.resolution_min)
    resid_s = pd.Series(resid, index=hts)
    rows = []
    for i, o in enumerate(origins):
        t = targets[i]
        shape = recent_shape(resid_s, o, cfg.shape_days, step) * cfg.shape_weight
        # the shape repeats every 24 h from the origin: position of each step in that cycle
        t_pos = (((t - o) // step) % spd).to_numpy()
        # interpolate block forecasts between block centres; the residual of the last hours anchors the start
        # (minus the shape, which is added back on top of the interpolated level)
        centres = np.array([(o + pd.Timedelta(hours=24) * k - pd.Timedelta(hours=12)).value
                            for k in range(1, BLOCKS_OUT + 1)], dtype=float)
        recent = (hts >= o - pd.Timedelta(hours=ANCHOR_HOURS)) & (hts < o) & np.isfinite(resid)
        r_pos = (((hts[recent] - o) // step) % spd).to_numpy()
        anchor = (float(np.mean(resid[recent] - shape[r_pos])) if recent.sum() >= 2 else float(level_fc[i, 0]))
        now = _nowcast(hts, resid, shape, o, step, cfg.nowcast_hours, lags[i, -1])
        level_i = level_fc[i] + cfg.nowcast_weight * now
        centres = np.concatenate([[(o - pd.Timedelta(hours=ANCHOR_HOURS / 2)).value], centres])
        vals = np.concatenate([[anchor], level_i])
        corr = np.interp(t.asi8.astype(float), centres, vals)
        yhat = (target_prof[i] if cfg.weather else prof.reindex(t).to_numpy()) + corr + shape[t_pos]
        frame = pd.DataFrame({"origin": o, "ts": t, "yhat": yhat, "lead_day": lead_days(o, t, step)})
        if target_lin is not None:
            frame["yhat_linear"] = target_lin[i]
        rows.append(frame)
    out = pd.concat(rows, ignore_index=True)
    if parts:
        return out
    if "yhat_linear" in out:
        out = mix_linear(out, model)
    return apply_intervals(out, model.calibration)


def mix_linear(fc: pd.DataFrame, model: LoadModel) -> pd.DataFrame:
    """``fc`` (:func:`predict` with ``parts=True``) with ``yhat`` = networks and linear part mixed per lead day and
    ``yhat_linear`` dropped: the networks' weight learnt on the training holdout (``model.linear_blend``, read as the
    naive challenger's weights are), else ``1 − config.weather_linear_weight`` at every lead day."""
    w = (1.0 - weights_by_row(model.linear_blend, fc["lead_day"]) if model.linear_blend
         else np.full(len(fc), float(model.config.weather_linear_weight)))  # the linear part's weight
    out = fc.drop(columns=["yhat_linear"])
    out["yhat"] = (1 - w) * fc["yhat"].to_numpy(dtype=float) + w * fc["yhat_linear"].to_numpy(dtype=float)
    return out


def _targets(origins: pd.DatetimeIndex, step: pd.Timedelta, horizon_end: pd.Timedelta) -> list[pd.DatetimeIndex]:
    """Each origin's target steps in :func:`predict`: from the origin to ``origin + horizon_end``."""
    n_steps = int(horizon_end / step)
    return [pd.date_range(o, periods=n_steps, freq=step) for o in origins]


def _target_weather(weather: pd.DataFrame, origins: pd.DatetimeIndex, targets: list[pd.DatetimeIndex],
                    ) -> tuple[pd.MultiIndex, pd.DataFrame]:
    """The (origin, target) keys of every origin's targets and the weather the profile reads there, as known at the
    origin (``weather``: ``origin, ts, *WEATHER_COLUMNS``; NaN where ``weather`` has none)."""
    w = weather.assign(origin=pd.DatetimeIndex(weather["origin"]).tz_convert("UTC"),
                       ts=pd.DatetimeIndex(weather["ts"]).tz_convert("UTC"))
    w = w.drop_duplicates(["origin", "ts"], keep="last").set_index(["origin", "ts"])[["hdd_smooth", "cdd_smooth"]]
    keys = pd.MultiIndex.from_arrays([np.repeat(origins, [len(t) for t in targets]),
                                      pd.DatetimeIndex(np.concatenate([t.asi8 for t in targets]), tz="UTC")])
    return keys, w.reindex(keys)


def weather_unknown_targets(weather: pd.DataFrame, origins: pd.DatetimeIndex | list[pd.Timestamp],
                            resolution_min: int, horizon_end: pd.Timedelta | None = None) -> pd.DataFrame:
    """``origin, ts`` of every target (:func:`predict`'s, up to ``origin + horizon_end``) without the weather known
    at its origin in ``weather``: a weather model cannot forecast from those origins (:func:`predict` raises
    :class:`ModelError`)."""
    origins = pd.DatetimeIndex(origins).tz_convert("UTC")
    if len(origins) == 0:
        return pd.DataFrame({"origin": origins, "ts": origins})
    step = pd.Timedelta(minutes=resolution_min)
    targets = _targets(origins, step, horizon_end or pd.Timedelta(hours=24 * BLOCKS_OUT))
    keys, tw = _target_weather(weather, origins, targets)
    bad = tw.isna().any(axis=1).to_numpy()
    return pd.DataFrame({"origin": keys.get_level_values(0)[bad], "ts": keys.get_level_values(1)[bad]})


def _weather_profiles(model: LoadModel, hist: pd.DataFrame, hts: pd.DatetimeIndex, origins: pd.DatetimeIndex,
                      targets: list[pd.DatetimeIndex], weather: pd.DataFrame | None, hval: np.ndarray,
                      ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray] | None]:
    """A weather profile's values: at the history instants (realised weather; NaN where unknown) and at each
    origin's targets (the weather known at that origin). One network call for all of them. With a linear part
    (:attr:`LoadModel.linear`), also its forecast for each origin's targets: the regression with the same weather,
    shifted by its mean residual (``hval`` minus the regression) over the days before the origin."""
    cfg = model.config
    if weather is None or not {"hdd_smooth", "cdd_smooth"} <= set(hist.columns):
        raise ModelError("weather model: no weather given (history needs the realised weather, weather the "
                         "features known at each origin)")
    keys, tw = _target_weather(weather, origins, targets)
    bad = tw.isna().any(axis=1).to_numpy()
    if bad.any():
        o = keys[int(np.argmax(bad))]
        raise ModelError(f"weather model: no weather for {int(bad.sum())} target steps (first: origin "
                         f"{o[0].isoformat()}, target {o[1].isoformat()})")
    hw = hist[["hdd_smooth", "cdd_smooth"]].reset_index(drop=True)
    known = hw.notna().all(axis=1).to_numpy()
    t_all = hts[known].append(pd.DatetimeIndex(keys.get_level_values(1)))
    wx = np.vstack([weather_regressors(hts[known], hw[known], cfg),
                    weather_regressors(pd.DatetimeIndex(keys.get_level_values(1)), tw.reset_index(drop=True), cfg)])
    values = profile_values(model, t_all, wx)
    hist_prof = np.full(len(hts), np.nan)
    hist_prof[known] = values[: int(known.sum())]
    rest = values[int(known.sum()):]
    bounds = np.cumsum([0, *[len(t) for t in targets]])
    split = [rest[bounds[i]:bounds[i + 1]] for i in range(len(targets))]
    if model.linear is None:  # fit makes none when weather_linear_weight is 0
        return hist_prof, split, None
    cal = {"tz": cfg.timezone, "country": cfg.holiday_country}
    lin_hist = np.full(len(hts), np.nan)
    lin_hist[known] = predict_linear(model.linear, hts[known], hw["hdd_smooth"].to_numpy()[known],
                                     hw["cdd_smooth"].to_numpy()[known], **cal)
    shift = level_shift(hts, np.asarray(hval, dtype=float) - lin_hist, origins, cfg.weather_linear_level_days)
    lin_t = predict_linear(model.linear, pd.DatetimeIndex(keys.get_level_values(1)), tw["hdd_smooth"].to_numpy(),
                           tw["cdd_smooth"].to_numpy(), **cal)
    return hist_prof, split, [lin_t[bounds[i]:bounds[i + 1]] + shift[i] for i in range(len(targets))]


def _skip_events(ts: pd.DatetimeIndex, resid: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """``resid`` with NaN on local dates of holiday events (when ``cfg.skip_event_days``)."""
    if not cfg.skip_event_days or len(ts) == 0:
        return resid
    hol = holiday_frame(ts.min(), ts.max(), cfg.timezone, cfg.holiday_country)
    dates = pd.DatetimeIndex(ts.tz_convert(cfg.timezone).date)
    return np.where(dates.isin(pd.DatetimeIndex(hol["date"])), np.nan, resid)


def _nowcast(hts: pd.DatetimeIndex, resid: np.ndarray, shape: np.ndarray, origin: pd.Timestamp,
             step: pd.Timedelta, hours: float, last_block: float) -> float:
    """How far the last ``hours`` of residual (shape removed) sit from the last 24-hour block's mean (0 if unknown)."""
    if hours <= 0 or not np.isfinite(last_block):
        return 0.0
    sel = (hts >= origin - pd.Timedelta(hours=hours)) & (hts < origin) & np.isfinite(resid)
    if not sel.any():
        return 0.0
    spd = len(shape)
    pos = (((hts[sel] - origin) // step) % spd).to_numpy()
    return float(np.mean(resid[sel] - shape[pos])) - float(last_block)


def recent_shape(resid: pd.Series, origin: pd.Timestamp, days: int, step: pd.Timedelta) -> np.ndarray:
    """Mean intraday deviation of the residual over the last ``days`` 24-hour blocks before ``origin``.

    Position k of the result is the time ``origin + k·step`` modulo 24 h. Each block's own mean is removed
    first (the level network forecasts the mean), so only the *shape* is carried forward: the daily profile
    drifts through the year (sunset time moves the evening peak, heating vs cooling) faster than the yearly
    Fourier terms and day-type shapes follow. Zeros when ``days`` is 0 or data are missing.
    """
    spd = int(pd.Timedelta(hours=24) / step)
    if days <= 0:
        return np.zeros(spd)
    grid = pd.date_range(origin - pd.Timedelta(hours=24) * days, periods=spd * days, freq=step)
    r = resid.reindex(grid).to_numpy().reshape(days, spd)
    ok = np.isfinite(r)
    n_block = ok.sum(axis=1, keepdims=True)
    mean = np.divide(np.where(ok, r, 0.0).sum(axis=1, keepdims=True), n_block, out=np.zeros((days, 1)),
                     where=n_block > spd // 2)
    dev = np.where(ok & (n_block > spd // 2), r - mean, np.nan)
    n = np.isfinite(dev).sum(axis=0)
    out = np.divide(np.nansum(dev, axis=0), n, out=np.zeros(spd), where=n > 0)
    return out


def _extra_blocks(cfg: ModelConfig) -> int:
    """Blocks needed before the level network's lags (for differences or the trailing mean)."""
    return 1 if cfg.level_mode == "diff" else cfg.level_baseline_days if cfg.level_mode == "detrended" else 0


def _level_input(blocks: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """The series the level network learns from the residual blocks (see ``level_mode``)."""
    if cfg.level_mode == "diff":
        # mean reversion of day-to-day *changes* keeps a new level (e.g. the 2022 sobriety drop)
        # instead of pulling forecasts back to the training-period average
        return np.diff(blocks)
    if cfg.level_mode == "detrended":
        # weather-driven deviations revert, the slow level (trailing mean) persists
        base = pd.Series(blocks).rolling(cfg.level_baseline_days, min_periods=cfg.level_baseline_days // 2).mean()
        return (blocks - base.shift(1).to_numpy())[cfg.level_baseline_days:]
    return blocks


def _level_output(level: Any, lags: np.ndarray, cfg: ModelConfig, persistence: list[float] | None = None,
                  ) -> np.ndarray:
    """Block forecasts of the residual from each origin's recent blocks (inverse of :func:`_level_input`);
    ``level`` None (no level network: less history than the level network needs): the last block's deviation from
    the mean of the last :func:`_persistence_days` blocks, times ``persistence`` per block ahead, on that mean
    (without weights the last block's level persists)."""
    last = np.nan_to_num(lags[:, -1:])
    if level is None:
        if not persistence:
            return np.repeat(last, BLOCKS_OUT, axis=1)
        recent = lags[:, -_persistence_days(cfg):]
        base = np.nanmean(np.where(np.isfinite(recent), recent, last), axis=1, keepdims=True)
        return base + (last - base) * np.asarray(persistence, dtype=float)[None, :]
    if cfg.level_mode == "diff":
        return last + np.cumsum(_level_forecast(level, np.diff(lags, axis=1)), axis=1)
    if cfg.level_mode == "detrended":
        n = cfg.level_baseline_days
        rows, bases = [], []
        for row in lags:
            base = pd.Series(row).rolling(n, min_periods=n // 2).mean().shift(1).to_numpy()
            rows.append((row - base)[n:])
            bases.append(np.nanmean(row[-n:]))
        return np.array(bases)[:, None] + _level_forecast(level, np.vstack(rows))
    return _level_forecast(level, lags)


def _filled_lags(lags: np.ndarray) -> np.ndarray:
    """Lag rows with their gaps interpolated along each row (ends held) and a row without any value at 0."""
    return pd.DataFrame(lags).interpolate(axis=1, limit_direction="both").fillna(0.0).to_numpy(dtype=float)


def _level_forecast(level: Any, lags: np.ndarray) -> np.ndarray:
    """Level forecasts (n_origins × BLOCKS_OUT) from rows of lagged block residuals: NeuralProphet's own network
    (``level.model``), called directly on each origin's normalised lags.

    The same computation as ``level.predict`` with each origin as its own series (``tests/test_level_forecast.py``
    asserts both agree bit for bit), without its per-series overhead: ``predict`` builds a dataset, a data loader and
    a Lightning trainer *per series* (``neuralprophet/forecaster.py: _predict_raw``), ~15 ms an origin and seed here
    against ~0.15 ms — level seeds × 365 origins of a backtest year, every holdout calibration, every issued forecast.
    The network is NeuralProphet's ``TimeNet``: a static trend (``growth="off"``) plus AR-Net on the lags minus that
    trend (``time_net.py: forward``), in the scale of the training series' ``standardize`` parameters
    (``global_data_params``), undone as ``predict`` does (``predicted * scale + shift``).
    """
    import torch

    rows = _filled_lags(lags)
    net = level.model
    if rows.shape[1] != net.n_lags:
        raise ModelError(f"level network takes {net.n_lags} lags, got {rows.shape[1]}")
    # every origin is a series unseen in training: NeuralProphet normalises it with the global parameters
    y = level.config_normalization.global_data_params["y"]
    x = torch.from_numpy(((rows - y.shift) / y.scale).astype(np.float32))
    time_axis = torch.zeros((1, net.n_lags + net.n_forecasts))
    net.eval()
    with torch.no_grad():
        # one origin per call, as predict does (a batch of one series): an origin's forecast never depends on
        # which other origins share the call (batched float32 sums would round differently); ~0.1 ms a call
        pred = [net({"time": time_axis, "lags": x[i:i + 1], "predict_mode": True})[0][0, :, 0].numpy()
                for i in range(len(rows))]
    res = np.vstack(pred).reshape(len(rows), -1) * y.scale + y.shift
    if res.shape != (len(lags), BLOCKS_OUT):
        raise ModelError(f"level network returned {res.shape}, expected {(len(lags), BLOCKS_OUT)}")
    return np.asarray(res, dtype=float)


def calibrate(model: LoadModel, fc: pd.DataFrame, actual: pd.DataFrame) -> dict[str, list[float]]:
    """Conformal interval calibration: per lead day, quantiles of (actual − yhat) / yhat on a holdout."""
    model.calibration = relative_error_quantiles(fc, actual, model.config.interval_level,
                                                 centered=model.config.interval_centered)
    return model.calibration


# --- save / load --------------------------------------------------------------------------------------
def _encode(v: Any) -> Any:
    """JSON form of a normalisation shift/scale (floats, or the time axis' Timestamp/Timedelta)."""
    if isinstance(v, pd.Timestamp):
        return {"timestamp": v.isoformat()}
    if isinstance(v, pd.Timedelta):
        return {"timedelta_ns": int(v.value)}
    return float(v)


def _decode(v: Any) -> Any:
    if isinstance(v, dict) and "timestamp" in v:
        return pd.Timestamp(v["timestamp"])
    if isinstance(v, dict) and "timedelta_ns" in v:
        return pd.Timedelta(int(v["timedelta_ns"]))
    return v


def _data_params(m: Any) -> dict[str, list[Any]]:
    return {k: [_encode(v.shift), _encode(v.scale)] for k, v in m.config_normalization.global_data_params.items()}


def _state_bytes(m: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(OrderedDict((k, v.detach().cpu()) for k, v in m.model.state_dict().items()), buf)
    return buf.getvalue()


def _profile_part(m: Any) -> dict[str, Any]:
    """What ``model.json`` keeps of one profile network besides its state dict."""
    return {"data_params": _data_params(m), "freq": m.data_freq, "events": m.powersense_events,
            "weather_correction": [float(x) for x in getattr(m, "powersense_weather_correction", [])]}


def _level_part(m: Any) -> dict[str, Any]:
    """What ``model.json`` keeps of one level network besides its state dict."""
    return {"data_params": _data_params(m), "freq": m.data_freq}


def to_files(model: LoadModel) -> dict[str, bytes]:
    """Serialise to ``model.json`` + ``profile.pt`` + ``level.pt`` (state dicts only)."""
    doc = {
        "format": "powersense-two-stage-v1",
        "config": asdict(model.config),
        "calibration": model.calibration,
        "blend": model.blend,
        "linear": model.linear,
        "linear_blend": model.linear_blend,
        "persistence": model.persistence,
        "weather_damping": model.weather_damping,
        "weather_normal_offset": model.weather_normal_offset,
        "weather_normal_harmonics": model.weather_normal_harmonics,
        "meta": model.meta,
        "profile": _profile_part(model.profile),
        "extra_profiles": [_profile_part(p) for p in model.extra_profiles],
        "level": None if model.level is None else _level_part(model.level),
        "extra_levels": [_level_part(lv) for lv in model.extra_levels],
    }
    return {
        "model.json": json.dumps(strict(doc), indent=1, sort_keys=True, allow_nan=False).encode(),
        "profile.pt": _state_bytes(model.profile),
        **{f"profile_{k}.pt": _state_bytes(p) for k, p in enumerate(model.extra_profiles, start=1)},
        **({} if model.level is None else {"level.pt": _state_bytes(model.level)}),
        **{f"level_{k}.pt": _state_bytes(lv) for k, lv in enumerate(model.extra_levels, start=1)},
    }


def _restore(m: Any, part: dict[str, Any], state: bytes) -> Any:
    """Rebuild a fitted NeuralProphet from its constructor config, normalisation and weights."""
    import torch
    from neuralprophet import df_utils, utils

    m.data_freq = part["freq"]
    if m.config_seasonality is not None:
        # resolves the (explicit, data-independent) seasonality orders exactly as fit() does
        stub = pd.DataFrame({"ds": pd.date_range("2000-01-01", periods=3, freq=m.data_freq)})
        m.config_seasonality = utils.set_auto_seasonalities(stub, config_seasonality=m.config_seasonality)
    m.id_list = ["__df__"]
    m.num_trends_modelled = 1
    m.num_seasonalities_modelled = 1
    periods = m.config_seasonality.periods if m.config_seasonality is not None else {}
    m.num_seasonalities_modelled_dict = OrderedDict((k, 1) for k in periods)
    m.meta_used_in_model = False
    m.max_lags = df_utils.get_max_num_lags(m.config_lagged_regressors, m.n_lags)
    if m.max_lags == 0 and m.n_forecasts > 1:
        m.n_forecasts = 1
        m.predict_steps = 1
    m.config_normalization.global_normalization = True
    m.config_normalization.global_data_params = OrderedDict(
        (k, df_utils.ShiftScale(shift=_decode(v[0]), scale=_decode(v[1]))) for k, v in part["data_params"].items()
    )
    m.config_normalization.local_data_params = OrderedDict([("__df__", m.config_normalization.global_data_params)])
    m._init_model()
    m.model.load_state_dict(torch.load(io.BytesIO(state), weights_only=True))
    m.model.eval()
    m.fitted = True
    m.early_stopping = False
    _fresh_trainer(m)
    return m


def from_files(files: dict[str, bytes]) -> LoadModel:
    """Inverse of :func:`to_files`."""
    _quiet()
    doc = json.loads(files["model.json"])
    if doc.get("format") != "powersense-two-stage-v1":
        raise ModelError(f"unknown model format {doc.get('format')!r}")
    conf = dict(doc["config"])
    if conf.pop("perfect_weather", False):  # the retired look-ahead experiment: never a servable model
        raise ModelError("model trained with the retired perfect_weather look-ahead experiment")
    conf.setdefault("weather_block_shape", "step")  # artifacts saved before the setting: trained with steps
    conf.setdefault("holiday_events", "named")  # … with one event per named holiday
    conf.setdefault("weather_level_lags", conf.get("level_lags", ModelConfig.level_lags))  # … and level_lags
    conf.setdefault("profile_seeds", 1)  # … and one profile network
    conf.setdefault("weather_profile_seeds", 1)
    conf.setdefault("weather_level_seeds", conf.get("level_seeds", ModelConfig.level_seeds))
    conf.setdefault("weather_linear_weight", 0.0)  # … and no linear part
    conf.setdefault("weather_damping", False)  # … and no damping of the temperature forecast
    # a setting this code does not know: the artifact was saved by a newer PowerSense (a rollback). A ModelError,
    # not ModelConfig's TypeError, so the forecast stage issues its simple-model fallback instead of failing
    unknown = sorted(set(conf) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise ModelError(f"model saved by a newer PowerSense (unknown settings {', '.join(unknown)}): deploy that "
                         "version again, or point the series' current model at a version this one saved "
                         "(python -m shared set-current-model SERIES VERSION)")
    cfg = ModelConfig(**conf)
    _seed(cfg)
    profile = _restore_profile(cfg, doc["profile"], files["profile.pt"])
    extra_profiles = [_restore_profile(cfg, part, files[f"profile_{k}.pt"])
                      for k, part in enumerate(doc.get("extra_profiles", []), start=1)]
    level = None if doc["level"] is None else _restore(_new_level(cfg), doc["level"], files["level.pt"])
    extra = [_restore(_new_level(cfg), part, files[f"level_{k}.pt"])
             for k, part in enumerate(doc.get("extra_levels", []), start=1)]
    return LoadModel(cfg, profile, level, calibration=doc["calibration"], meta=doc["meta"], extra_levels=extra,
                     blend=doc.get("blend", {}), extra_profiles=extra_profiles, linear=doc.get("linear"),
                     linear_blend=doc.get("linear_blend", {}), persistence=doc.get("persistence", []),
                     weather_damping=doc.get("weather_damping", {}),
                     weather_normal_offset=float(doc.get("weather_normal_offset", 0.0)),
                     weather_normal_harmonics=[float(c) for c in doc.get("weather_normal_harmonics", [])])


def _restore_profile(cfg: ModelConfig, part: dict[str, Any], state: bytes) -> Any:
    """One profile network from its ``model.json`` part and state dict (inverse of :func:`_profile_part`)."""
    events = part["events"]
    profile = _label_profile(_restore(_new_profile(cfg, events), part, state), cfg, events)
    if part.get("weather_correction"):  # absent in artifacts saved before the slope correction
        profile.powersense_weather_correction = np.asarray(part["weather_correction"], dtype=float)
    return profile
