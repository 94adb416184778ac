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

**Another series than France's** has no shipped normal: its normal is the seasonal cycle of its own realised smoothed
temperature over the model's training window (:func:`fit_normal`: a mean and two yearly harmonics by least squares,
the form of the climatological normals fitted to station series, e.g. Epstein, "On obtaining daily climatological
values from monthly means", *J. Climate* 4, 1991), stored with the model as ``harmonics``; with less than
:data:`NORMAL_MIN_DAYS` of temperature it has none, and its forecasts are fed as they come.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shared.features import normal_temperature
from shared.weather.features import degrees

MIN_POINTS = 48  # holdout targets a lead block needs before its slope is learnt (else: not damped)
NORMAL_HARMONICS = 2  # yearly harmonics of a series' own normal (fit_normal): the annual cycle and its asymmetry
NORMAL_MIN_DAYS = 365  # days of realised temperature fit_normal needs: a whole seasonal cycle
_YEAR_DAYS = 365.2425


def _harmonic_terms(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Columns ``1, cos(2πk·t), sin(2πk·t)`` for k = 1 … NORMAL_HARMONICS, ``t`` in years since 2000-01-01 UTC."""
    t = (pd.DatetimeIndex(ts).asi8 / 8.64e13 - 10957.0) / _YEAR_DAYS
    cols = [np.ones(len(t))]
    for k in range(1, NORMAL_HARMONICS + 1):
        cols += [np.cos(2 * np.pi * k * t), np.sin(2 * np.pi * k * t)]
    return np.column_stack(cols)


def fit_normal(realised: pd.DataFrame) -> list[float]:
    """A series' own normal: least-squares coefficients of its realised smoothed temperature (``ts,
    temp_smooth_degc``) on a mean and NORMAL_HARMONICS yearly harmonics; empty when under NORMAL_MIN_DAYS of
    values span it (a partial cycle would make a season of the anomalies)."""
    ok = np.isfinite(realised["temp_smooth_degc"].to_numpy(dtype=float))
    ts = pd.DatetimeIndex(realised["ts"])[ok]
    if len(ts) == 0 or (ts.max() - ts.min()) < pd.Timedelta(days=NORMAL_MIN_DAYS):
        return []
    coef, *_ = np.linalg.lstsq(_harmonic_terms(ts), realised["temp_smooth_degc"].to_numpy(dtype=float)[ok],
                               rcond=None)
    return [round(float(c), 6) for c in coef]


def normal_at(ts: pd.Series | pd.DatetimeIndex, harmonics: Sequence[float] = ()) -> np.ndarray:
    """The normal temperature (°C) at ``ts``: France's shipped normal (:func:`shared.features.normal_temperature`),
    or a series' own from its :func:`fit_normal` coefficients."""
    if len(harmonics):
        return _harmonic_terms(ts) @ np.asarray(harmonics, dtype=float)
    return normal_temperature(ts).to_numpy(dtype=float)


def _anomalies(frame: pd.DataFrame, column: str, offset: float, harmonics: Sequence[float] = ()) -> np.ndarray:
    return frame[column].to_numpy(dtype=float) - normal_at(frame["ts"], harmonics) - offset


def normal_offset(realised: pd.DataFrame, harmonics: Sequence[float] = ()) -> float:
    """The mean anomaly (°C) of a realised smoothed temperature (``ts, temp_smooth_degc``: the model's training
    window) against the normal (France's, or ``harmonics``): what the damping's target adds to the normal (0 when
    nothing is known)."""
    a = _anomalies(realised, "temp_smooth_degc", 0.0, harmonics)
    a = a[np.isfinite(a)]
    return round(float(a.mean()), 4) if len(a) else 0.0


def _lead_hours(frame: pd.DataFrame) -> np.ndarray:
    lead = pd.DatetimeIndex(frame["ts"]) - pd.DatetimeIndex(frame["origin"])
    return np.asarray(lead / pd.Timedelta(hours=1), dtype=float)


def learn_damping(known: pd.DataFrame, realised: pd.DataFrame, offset: float = 0.0,
                  harmonics: Sequence[float] = ()) -> dict[str, float]:
    """Per lead block ``"1"``, ``"2"``, … (24 hours each after the origin): the slope ``β`` in [0, 1] of the
    realised smoothed-temperature anomaly on the one known at the origin.

    ``known``: ``origin, ts, temp_smooth_degc`` as known at each origin (the holdout's weather features);
    ``realised``: ``ts, temp_smooth_degc`` (the realised weather features); anomalies against the normal plus
    ``offset`` (:func:`normal_offset`; the normal is France's, or ``harmonics``). A block with fewer than
    :data:`MIN_POINTS` targets known on both sides, or no anomaly at all, gets no slope (not damped).
    """
    j = known[["origin", "ts", "temp_smooth_degc"]].merge(
        realised[["ts", "temp_smooth_degc"]].rename(columns={"temp_smooth_degc": "realised"}), on="ts")
    if j.empty:
        return {}
    f, a = _anomalies(j, "temp_smooth_degc", offset, harmonics), _anomalies(j, "realised", offset, harmonics)
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


def apply_damping(weather: pd.DataFrame, damping: dict[str, float], offset: float = 0.0,
                  harmonics: Sequence[float] = ()) -> pd.DataFrame:
    """``weather`` (``origin, ts`` + :data:`~shared.weather.features.WEATHER_COLUMNS`, as known at each origin)
    with its smoothed temperature damped toward the normal plus ``offset``, ``n + β(lead) · (smoothed − n)``, and
    its heating and cooling degrees recomputed from it; the raw ``temp_degc`` is kept. No slopes: unchanged."""
    if not damping or weather.empty:
        return weather
    out = weather.copy()
    normal = normal_at(out["ts"], harmonics) + offset
    beta = slopes_at(_lead_hours(out), damping)
    sm = out["temp_smooth_degc"].to_numpy(dtype=float)
    # where the normal is unknown (no climatology shipped) the forecast is kept as it is
    damped = np.where(np.isfinite(normal), normal + beta * (sm - normal), sm)
    out["temp_smooth_degc"] = damped
    out["hdd_smooth"], out["cdd_smooth"] = degrees(damped)
    return out
