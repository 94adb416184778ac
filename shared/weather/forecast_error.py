"""The temperature forecast error model: one definition for the backtest's (b) runs and every training holdout.

No archived temperature forecasts exist for the shipped years, and a freshly deployed product has none stored
for its first training holdouts. Both then stand for "the forecast known at an origin" with the realised
temperature plus a simulated forecast error whose size by lead day comes from published verification scores
(below). ``make evaluate --weather`` uses it for its (b) runs (seeds :data:`SIMULATED_SEEDS`) and for the training
holdouts (:data:`HOLDOUT_SEED`); production's training holdouts use the same error at origins where no stored
forecast is known (``shared.forecasting.service.holdout_weather_provider``), so the backtest's holdouts are the
ones production computes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.weather.features import WeatherProvider, perfect_provider

# (b) error model: standard deviation (°C) of 2 m temperature forecast errors by lead day. Source: ECMWF's annual
# verification report, T. Haiden et al., "Evaluation of ECMWF forecasts, including the 2020 upgrade", ECMWF
# Technical Memorandum 880 (January 2021), section 4 (weather parameters): HRES 2 m temperature verified against
# European SYNOP stations, error standard deviation at forecast day 3 ≈ 1.6 K and day 6 ≈ 2.3 K (daytime, recent
# years; values read off the memo's figure from memory — approximate, not re-verified: the memo is ECMWF e-library
# entry 19879, but its scores are figures no text states). Other lead days: linear in lead between / beyond those
# two points. These are *station* errors (they include each station's representativeness error); applied to a
# 32-station national mean they overstate its error (local errors partly cancel in the mean).
# ``--weather-error-scale`` shows the sensitivity (labelled, not a published score). A published figure that
# could be read (Météo-France, "Les performances de la prévision", meteofrance.fr): a temperature forecast *at a
# point* is accurate to about 1-1.25 °C on average at 24 h and about 3 °C at 7 days — as mean absolute errors of
# Gaussian errors, SDs of 1.25-1.57 and ~3.8 °C, i.e. 1.1-1.4x and 1.5x the values here. So the values here are
# below that point accuracy and a national mean's error is below it too, by an amount not known here: whether
# (b) is pessimistic or optimistic is not established, and scale 1.5 (point errors) bounds it from above.
T2M_ERROR_SD_DAY3_C, T2M_ERROR_SD_DAY6_C = 1.6, 2.3
# errors are autocorrelated inside one forecast run: AR(1) in time with an e-folding time of 24 h (an assumption:
# synoptic-scale errors last about a day), starting from 0 at the origin (the realised past has no error)
T2M_ERROR_CORR_H = 24.0
SIMULATED_SEEDS = (1, 2, 3)
HOLDOUT_SEED = 0  # the simulated forecasts of the training holdouts (never one of the evaluated seeds)


def t2m_error_sd(lead_days: np.ndarray) -> np.ndarray:
    """Error standard deviation (°C) of a 2 m temperature forecast at fractional lead days (see the constants)."""
    slope = (T2M_ERROR_SD_DAY6_C - T2M_ERROR_SD_DAY3_C) / 3.0
    return np.maximum(0.0, T2M_ERROR_SD_DAY3_C + slope * (np.asarray(lead_days, dtype=float) - 3.0))


def simulated_provider(realised: pd.DataFrame, horizon: pd.Timedelta, step: pd.Timedelta, seed: int,
                       smoothed_input: bool, scale: float = 1.0,
                       fill: pd.DataFrame | None = None) -> WeatherProvider:
    """(b) realised temperature + a simulated forecast error per run: AR(1) in time (``T2M_ERROR_CORR_H``), standard
    deviation ``scale · t2m_error_sd(lead)``, one independent run per origin (seeded by ``seed`` and the origin, so a
    provider answers the same for the same origin). ``smoothed_input``: the realised series is already smoothed
    (Enedis), so the error is smoothed the same way before it is added (the forecast of a smoothed temperature is the
    smoothing of realised past + forecast future; the past has no error)."""
    from shared.weather.features import smooth

    perfect = perfect_provider(realised, horizon, step, fill)
    n = int(horizon / step)
    phi = float(np.exp(-(step / pd.Timedelta(hours=1)) / T2M_ERROR_CORR_H))
    lead = (np.arange(n) + 1) * (step / pd.Timedelta(days=1))
    sd = scale * t2m_error_sd(lead)
    rel = pd.date_range("2000-01-01", periods=n + 1, freq=step, tz="UTC")  # the step before the origin + targets

    def provide(origins: pd.DatetimeIndex) -> pd.DataFrame:
        out = perfect(origins)
        errs = []
        for o in pd.DatetimeIndex(origins):
            rng = np.random.default_rng([seed, int(o.value // 10**9)])
            z = np.empty(n)
            eta = rng.standard_normal(n)
            z[0] = eta[0]
            for i in range(1, n):
                z[i] = phi * z[i - 1] + np.sqrt(1 - phi * phi) * eta[i]
            e = sd * z
            # smoothing state at the origin carries no error (the realised past): start it at 0
            errs.append(smooth(rel, np.concatenate([[0.0], e]))[1:] if smoothed_input else e)
        return out.assign(temp_degc=out["temp_degc"].to_numpy() + np.concatenate(errs))

    return provide
