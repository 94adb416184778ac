"""Seasonal naive as a permanent challenger, and adaptive conformal intervals (no torch import).

**Never worse than naive.** At every training the model's forecasts and seasonal naive's are scored on
the same holdout; per lead day (24-hour block after the origin) the issued forecast is
``w · model + (1 − w) · naive`` with the weight ``w ∈ {0, 0.1, …, 1}`` that has the lowest holdout MAPE.
``w = 0`` (naive alone) is one of the candidates, so on its own holdout the issued forecast is never worse
than naive, by construction. Each forecast row says which source its lead day used (``yhat_source``:
``model`` for w = 1, ``seasonal_naive`` for w = 0, ``blend`` otherwise; ``model_weight`` = w).

**Adaptive intervals.** The 80 % bounds are conformal quantiles of the *relative errors of the forecasts
actually issued* over the last ``forecast_conformal_days`` days, per lead day, using only targets whose
actual is known at the new origin — so they widen after a bad week and narrow again as actuals arrive,
instead of a static quantile from one holdout. Where too few recent forecasts exist for a lead day
(fewer than ``MIN_ORIGINS`` origins: a new install, a new series), the model's holdout calibration is used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.forecasting import baseline

WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 2)
MIN_ORIGINS = 7  # distinct recent origins per lead day before their errors replace the holdout calibration
MIN_POINTS = 24


def lead_days(origin: pd.Series | pd.DatetimeIndex, ts: pd.Series | pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    """Lead day of each target: 1 for the first 24 hours after the origin, 2 for the next, …"""
    o = pd.DatetimeIndex(origin)
    t = pd.DatetimeIndex(ts)
    return np.ceil((t - o + step) / pd.Timedelta(hours=24)).astype(int).to_numpy()


def naive_like(fc: pd.DataFrame, grid: pd.DataFrame) -> np.ndarray:
    """Seasonal naive for every (origin, ts) row of a long forecast frame, reading only data before each origin."""
    out = np.full(len(fc), np.nan)
    for o, idx in fc.groupby("origin").indices.items():
        out[idx] = baseline.seasonal_naive(grid, pd.Timestamp(o), pd.DatetimeIndex(fc["ts"].to_numpy()[idx]))
    return out


def _mape(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(yhat - y) / np.abs(y)) * 100)


def learn_weights(fc: pd.DataFrame, naive: np.ndarray, actual: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per lead day: the model weight with the lowest holdout MAPE, and the MAPEs of model, naive and blend.

    ``fc``: ``origin, ts, yhat, lead_day`` (the model's holdout forecasts); ``naive``: seasonal naive for
    the same rows; ``actual``: ``ts, value`` (gated: invalid actuals are NaN and skipped).
    """
    j = fc.assign(naive=naive).merge(actual[["ts", "value"]], on="ts", how="left")
    ok = np.isfinite(j["value"]) & np.isfinite(j["yhat"]) & np.isfinite(j["naive"]) & (j["value"] > 0)
    j = j[ok]
    out: dict[str, dict[str, float | None]] = {}
    for k, g in j.groupby("lead_day"):
        if len(g) < MIN_POINTS:
            continue
        y, m, n = g["value"].to_numpy(), g["yhat"].to_numpy(), g["naive"].to_numpy()
        scores = [_mape(y, w * m + (1 - w) * n) for w in WEIGHTS]
        best = int(np.argmin(scores))
        out[str(int(k))] = {"weight": float(WEIGHTS[best]), "mape_blend": round(scores[best], 3),
                            "mape_model": round(scores[-1], 3), "mape_naive": round(scores[0], 3), "n": int(len(g))}
    return out


def weight_of(weights: dict[str, dict[str, float | None]], lead_day: int) -> float:
    """The model weight of a lead day; a lead day never scored uses the nearest scored one.

    No weights at all = a model saved before the challenger existed: the model alone, as it was promoted.
    """
    if not weights:
        return 1.0
    keys = sorted(int(k) for k in weights)
    k = min(keys, key=lambda x: (abs(x - lead_day), x))
    w = weights[str(k)].get("weight")
    return 0.0 if w is None else float(w)


def source_of(w: float) -> str:
    """``model`` / ``seasonal_naive`` / ``blend`` for a model weight."""
    return "model" if w >= 1.0 else "seasonal_naive" if w <= 0.0 else "blend"


def apply_weights(fc: pd.DataFrame, naive: np.ndarray, weights: dict[str, dict[str, float | None]]) -> pd.DataFrame:
    """The issued forecast: model and naive combined per lead day; adds ``model_weight`` and ``yhat_source``.

    Where naive has no value (no same-slot history), the model alone is used and says so.
    """
    fc = fc.copy()
    w = np.array([weight_of(weights, int(k)) for k in fc["lead_day"]], dtype=float)
    w = np.where(np.isfinite(naive), w, 1.0)
    fc["yhat"] = w * fc["yhat"].to_numpy(dtype=float) + (1 - w) * np.nan_to_num(naive)
    fc["model_weight"] = w
    fc["yhat_source"] = [source_of(x) for x in w]
    return fc


def adaptive_calibration(past: pd.DataFrame, actual: pd.DataFrame, as_of: pd.Timestamp, level: float,
                         window_days: int, fallback: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per lead day ``[q_lo, q_hi]`` of relative errors of forecasts issued in the last ``window_days``.

    ``past``: ``origin, ts, yhat, lead_day`` of issued forecasts; only targets before ``as_of`` (their actual is
    known then) from origins in ``[as_of − window_days, as_of)`` count. Lead days with fewer than
    ``MIN_ORIGINS`` origins keep ``fallback`` (the holdout calibration).
    """
    cal = {k: list(v) for k, v in fallback.items()}
    if past.empty:
        return cal
    lo = as_of - pd.Timedelta(days=window_days)
    p = past[(past["origin"] >= lo) & (past["origin"] < as_of) & (past["ts"] < as_of)]
    if p.empty:
        return cal
    j = p.merge(actual[["ts", "value"]], on="ts", how="inner")
    j = j[np.isfinite(j["value"]) & np.isfinite(j["yhat"]) & (j["yhat"] != 0) & (j["value"] > 0)]
    alpha = (1 - level) / 2
    rel = (j["value"] - j["yhat"]) / j["yhat"]
    for k, idx in j.groupby("lead_day").indices.items():
        if j["origin"].iloc[idx].nunique() < MIN_ORIGINS or len(idx) < MIN_POINTS:
            continue
        r = rel.iloc[idx]
        cal[str(int(k))] = [float(r.quantile(alpha)), float(r.quantile(1 - alpha))]
    return cal
