"""Temperature forecasts shrunk toward the normal by their own track record (pure functions; one definition for
training, the holdout, the backtest and production).

A forecast's temperature anomaly (forecast − normal) overstates the anomaly that comes: at long leads part of it
is forecast error. The linear estimate of the realised anomaly ``a`` from the forecast one ``f`` with the least
squared error is ``β · f``, ``β = Σ f·a / Σ f²`` — the regression of observed on forecast values of model output
statistics (H. R. Glahn and D. A. Lowry, "The use of Model Output Statistics (MOS) in objective weather
forecasting", *J. Appl. Meteor.* 11, 1972). With an error independent of the anomaly, ``β = var(a) / (var(a) +
var(e))``: 1 for a perfect forecast, toward 0 as the error grows with the lead.

What is damped is the **smoothed** temperature (``temp_smooth_degc``), the one every weather input of the load
model is derived from (heating and cooling degrees, the linear companion's terms), against the normal
(:func:`shared.features.normal_temperature`, Enedis's smoothed normal) shifted by the mean anomaly of the model's
own realised temperature (:func:`normal_offset`): the damping's target is the recent climate *in the temperature's
own definition* — Enedis's normal is a climatological one, colder than recent years (the shipped realised series' mean
anomaly: 2020 +0.97, 2021 −0.31, 2022 +1.35, 2023 +1.18 °C), and production's temperature is Open-Meteo's, not
Enedis's, so a fixed normal would pull every damped forecast toward a colder, differently defined temperature. Its
heating and cooling degrees are then recomputed (:func:`shared.weather.features.degrees`).

``β`` is learnt per 24-hour lead block after the origin on
the weather model's training holdout, whose temperature forecast is the one production meets
(``service.HoldoutWeather``: the stored forecasts where they cover an origin, else the published error model),
so it is the skill of the forecasts the model is fed; between block centres it is interpolated, and it is 1 at
the origin (the smoothed temperature there is realised).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.features import normal_temperature
from shared.weather.features import degrees

MIN_POINTS = 48  # holdout targets a lead block needs before its slope is learnt (else: not damped)


def _anomalies(frame: pd.DataFrame, column: str, offset: float) -> np.ndarray:
    return frame[column].to_numpy(dtype=float) - normal_temperature(frame["ts"]).to_numpy(dtype=float) - offset


def normal_offset(realised: pd.DataFrame) -> float:
    """The mean anomaly (°C) of a realised smoothed temperature (``ts, temp_smooth_degc``: the model's training
    window) against the normal: what the damping's target adds to the normal (0 when nothing is known)."""
    a = _anomalies(realised, "temp_smooth_degc", 0.0)
    a = a[np.isfinite(a)]
    return round(float(a.mean()), 4) if len(a) else 0.0


def _lead_hours(frame: pd.DataFrame) -> np.ndarray:
    lead = pd.DatetimeIndex(frame["ts"]) - pd.DatetimeIndex(frame["origin"])
    return np.asarray(lead / pd.Timedelta(hours=1), dtype=float)


def learn_damping(known: pd.DataFrame, realised: pd.DataFrame, offset: float = 0.0) -> dict[str, float]:
    """Per lead block ``"1"``, ``"2"``, … (24 hours each after the origin): the slope ``β`` in [0, 1] of the
    realised smoothed-temperature anomaly on the one known at the origin.

    ``known``: ``origin, ts, temp_smooth_degc`` as known at each origin (the holdout's weather features);
    ``realised``: ``ts, temp_smooth_degc`` (the realised weather features); anomalies against the normal plus
    ``offset`` (:func:`normal_offset`). A block with fewer than :data:`MIN_POINTS` targets known on both sides, or
    no anomaly at all, gets no slope (not damped).
    """
    j = known[["origin", "ts", "temp_smooth_degc"]].merge(
        realised[["ts", "temp_smooth_degc"]].rename(columns={"temp_smooth_degc": "realised"}), on="ts")
    if j.empty:
        return {}
    f, a = _anomalies(j, "temp_smooth_degc", offset), _anomalies(j, "realised", offset)
    block = np.floor(_lead_hours(j) / 24.0).astype(int) + 1
    ok = np.isfinite(f) & np.isfinite(a)
    out: dict[str, float] = {}
    for k in np.unique(block[ok]):
        m = ok & (block == k)
        ff = float(np.sum(f[m] * f[m]))
        if m.sum() < MIN_POINTS or ff <= 0:
            continue
        out[str(int(k))] = round(float(np.clip(np.sum(f[m] * a[m]) / ff, 0.0, 1.0)), 4)
    return out


def slopes_at(lead_hours: np.ndarray, damping: dict[str, float]) -> np.ndarray:
    """``β`` at each lead (hours after the origin): 1 at the origin, each block's slope at its centre, linear in
    between, the last block's beyond it; a block without a slope counts as 1."""
    if not damping:
        return np.ones(len(lead_hours))
    last = max(int(k) for k in damping)
    centres = np.array([0.0] + [24.0 * k - 12.0 for k in range(1, last + 1)])
    values = np.array([1.0] + [float(damping.get(str(k), 1.0)) for k in range(1, last + 1)])
    return np.interp(np.asarray(lead_hours, dtype=float), centres, values)


def apply_damping(weather: pd.DataFrame, damping: dict[str, float], offset: float = 0.0) -> pd.DataFrame:
    """``weather`` (``origin, ts`` + :data:`~shared.weather.features.WEATHER_COLUMNS`, as known at each origin)
    with its smoothed temperature damped toward the normal plus ``offset``, ``n + β(lead) · (smoothed − n)``, and
    its heating and cooling degrees recomputed from it; the raw ``temp_degc`` is kept. No slopes: unchanged."""
    if not damping or weather.empty:
        return weather
    out = weather.copy()
    normal = normal_temperature(out["ts"]).to_numpy(dtype=float) + offset
    beta = slopes_at(_lead_hours(out), damping)
    sm = out["temp_smooth_degc"].to_numpy(dtype=float)
    # where the normal is unknown (no climatology shipped) the forecast is kept as it is
    damped = np.where(np.isfinite(normal), normal + beta * (sm - normal), sm)
    out["temp_smooth_degc"] = damped
    out["hdd_smooth"], out["cdd_smooth"] = degrees(damped)
    return out
