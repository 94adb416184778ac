"""Seasonal naive as a permanent challenger, and adaptive conformal intervals (no torch import).

**Never worse than naive.** At every training the model's forecasts and seasonal naive's are scored on
the same holdout; per lead day (24-hour block after the origin) the issued forecast is
``w · model + (1 − w) · naive`` with the weight ``w ∈ {0, 0.1, …, 1}`` that has the lowest holdout MAPE.
``w = 0`` (naive alone) is one of the candidates, so on its own holdout the issued forecast is never worse
than naive, by construction. Each forecast row says which source its lead day used (``yhat_source``:
``model`` for w = 1, ``seasonal_naive`` for w = 0, ``blend`` otherwise; ``model_weight`` = w).

**Adaptive intervals.** The 80 % bounds are conformal quantiles of the *relative errors of the forecasts
actually issued* over the last ``forecast_conformal_days`` days, per lead day, using only targets whose
actual is known at the new origin, each origin's errors weighted by its age (half-life
``ERROR_HALF_LIFE_DAYS``) — so they follow the season and widen after a bad week, instead of a static
quantile from one holdout — then widened or narrowed by the coverage the issued intervals actually had over
the window, recent origins weighing more (``ACI_GAMMA``, ``ACI_LEAK_HALF_LIFE_DAYS``). Where too few recent
forecasts exist for a lead day (fewer than ``MIN_ORIGINS`` origins: a new install, a new series), the model's
holdout calibration is used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.forecasting import baseline

WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 2)
MIN_ORIGINS = 7  # distinct recent origins per lead day before their errors replace the holdout calibration
MIN_POINTS = 24
# Intervals (see adaptive_calibration). Chosen on the 2019 backtest (flat optimum: half-life 5–10 days, step
# 0.6–1.5), confirmed on 2020, checked on 2022–2023 (bench/intervals.py replays the interval step over the
# captured issued forecasts of a backtest):
ERROR_HALF_LIFE_DAYS = 7.0  # age weight of a past origin's errors: 0.5 ** (age in days / half-life)
ACI_GAMMA = 1.0  # log-width step per resolved origin and unit of excess miscoverage
ACI_SCALE = (0.5, 3.0)  # bounds of the width factor
# The integrator's terms fade with the origin's age (half-life in days). Over the 91-day window the oldest term still
# weighs 0.70 (0.84 on average), so this does not bound the wind-up (the sum is clipped only at the end: a summer of
# over-coverage still sums far below the floor); it tilts the sum toward the last weeks' coverage and lowers the
# gain of old terms. Chosen on the 2015–2018 backtests among half-lives 45–365 days and none (most quarter × D+k
# cells in band; README, *Adaptive conformal intervals*): 180 days, 106 → 111 of 112 cells, narrower, better interval
# score; checked on 2019–2023: 133 → 136 of 140. Halving every 30 days or clipping the sum at every step held fewer.
ACI_LEAK_HALF_LIFE_DAYS = 180.0


def naive_like(fc: pd.DataFrame, grid: pd.DataFrame, tz: str) -> np.ndarray:
    """Seasonal naive (on the wall clock of ``tz``) for every (origin, ts) row of a long forecast frame, reading only
    data before each origin."""
    out = np.full(len(fc), np.nan)
    ts = pd.DatetimeIndex(fc["ts"])  # once: a tz-aware column's to_numpy() is an object array of Timestamps
    for o, idx in fc.groupby("origin").indices.items():
        out[idx] = baseline.seasonal_naive(grid, pd.Timestamp(o), ts[idx], tz)
    return out


def _mape(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(yhat - y) / np.abs(y)) * 100)


def learn_weights(fc: pd.DataFrame, naive: np.ndarray, actual: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per lead day: the model weight with the lowest holdout MAPE, and the MAPEs of model, naive and blend.

    ``fc``: ``origin, ts, yhat, lead_day`` (the model's holdout forecasts); ``naive``: seasonal naive for
    the same rows; ``actual``: ``ts, value`` (gated: invalid actuals are NaN and skipped).
    """
    j = fc.assign(naive=naive).merge(actual[["ts", "value"]], on="ts", how="left")
    ok = np.isfinite(j["value"]) & np.isfinite(j["yhat"]) & np.isfinite(j["naive"]) & (j["value"] > 0)
    j = j[ok]
    out: dict[str, dict[str, float]] = {}
    for k, g in j.groupby("lead_day"):
        if len(g) < MIN_POINTS:
            continue
        y, m, n = g["value"].to_numpy(), g["yhat"].to_numpy(), g["naive"].to_numpy()
        scores = [_mape(y, w * m + (1 - w) * n) for w in WEIGHTS]
        best = int(np.argmin(scores))
        out[str(int(k))] = {"weight": float(WEIGHTS[best]), "mape_blend": round(scores[best], 3),
                            "mape_model": round(scores[-1], 3), "mape_naive": round(scores[0], 3), "n": int(len(g))}
    return out


def weight_of(weights: dict[str, dict[str, float]], lead_day: int) -> float:
    """The model weight of a lead day; a lead day never scored uses the nearest scored one.

    No weights at all = a model saved before the challenger existed: the model alone, as it was promoted.
    """
    if not weights:
        return 1.0
    keys = sorted(int(k) for k in weights)
    k = min(keys, key=lambda x: (abs(x - lead_day), x))
    w = weights[str(k)].get("weight")
    return 0.0 if w is None else float(w)


def weights_by_row(weights: dict[str, dict[str, float]], lead_day: pd.Series | np.ndarray) -> np.ndarray:
    """:func:`weight_of` for every row's lead day (looked up once per distinct lead day)."""
    days, inverse = np.unique(np.asarray(lead_day, dtype=int), return_inverse=True)
    return np.array([weight_of(weights, int(k)) for k in days], dtype=float)[inverse]


def source_of(w: float) -> str:
    """``model`` / ``seasonal_naive`` / ``blend`` for a model weight."""
    return "model" if w >= 1.0 else "seasonal_naive" if w <= 0.0 else "blend"


def apply_weights(fc: pd.DataFrame, naive: np.ndarray, weights: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The issued forecast: model and naive combined per lead day; adds ``model_weight`` and ``yhat_source``.

    Where naive has no value (no same-slot history), the model alone is used and says so.
    """
    fc = fc.copy()
    w = np.where(np.isfinite(naive), weights_by_row(weights, fc["lead_day"]), 1.0)
    fc["yhat"] = w * fc["yhat"].to_numpy(dtype=float) + (1 - w) * np.nan_to_num(naive)
    fc["model_weight"] = w
    fc["yhat_source"] = [source_of(x) for x in w]
    return fc


def weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: list[float]) -> np.ndarray:
    """Quantiles ``qs`` of ``x`` under non-negative weights ``w``: the weighted empirical distribution with each
    point at the middle of its own weight, linear in between (equal weights: Hazen's plotting positions)."""
    o = np.argsort(x, kind="stable")
    xs, ws = np.asarray(x, dtype=float)[o], np.asarray(w, dtype=float)[o]
    cdf = (np.cumsum(ws) - 0.5 * ws) / ws.sum()
    return np.interp(qs, cdf, xs)


def age_weights(origins: pd.Series | pd.Index, as_of: pd.Timestamp, half_life_days: float | None) -> np.ndarray:
    """``0.5 ** (age in days / half_life_days)`` of each origin at ``as_of``; equal weights (1) for ``None``. The
    one age weighting of the intervals: the error quantiles' and the coverage integrator's."""
    if half_life_days is None:
        return np.ones(len(origins))
    age_days = ((as_of - pd.DatetimeIndex(origins)) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    return np.asarray(0.5 ** (age_days / half_life_days), dtype=float)


def adaptive_calibration(past: pd.DataFrame, actual: pd.DataFrame, as_of: pd.Timestamp, level: float,
                         window_days: int, fallback: dict[str, list[float]],
                         gamma: float = ACI_GAMMA,
                         half_life_days: float | None = ERROR_HALF_LIFE_DAYS,
                         leak_half_life_days: float | None = ACI_LEAK_HALF_LIFE_DAYS) -> dict[str, list[float]]:
    """Per lead day ``[q_lo, q_hi]`` of relative errors of forecasts issued in the last ``window_days``.

    ``past``: ``origin, ts, yhat, lead_day`` (and, where known, the issued ``lower, upper``) of issued forecasts;
    only targets before ``as_of`` (their actual is known then) from origins in ``[as_of − window_days, as_of)``
    count. Lead days with fewer than ``MIN_ORIGINS`` origins keep ``fallback`` (the holdout calibration).

    Two parts, in the spirit of conformal PID control (Angelopoulos, Candès & Tibshirani 2023, "Conformal PID
    Control for Time Series Prediction": a fast estimate of the score's level plus an integrator on the coverage
    errors), both functions of the stored issued forecasts and the actuals only — production recomputes them
    every hour from the same rows (stateless replay: no state is kept between runs):

    * **base quantiles**: weighted quantiles of the relative errors, an origin of age ``a`` days weighing
      ``0.5 ** (a / half_life_days)`` (non-exchangeable conformal prediction with fixed decaying weights, Barber,
      Candès, Ramdas & Tibshirani 2023). The error scale of French load is seasonal (heating: winter errors are
      2–3× summer's at D+7); an unweighted 91-day window lags it (2019–2023: Q2 over-covered, Q4 under-covered).
      ``half_life_days=None``: equal weights.
    * **width factor**: the base bounds are widened around their median by ``exp(γ · Σ (miss_i − α))`` (bounded by
      ``ACI_SCALE``) over the window's origins whose lead-day block is fully observed, ``miss_i`` being the share
      of that block's actuals outside the interval issued then (adaptive conformal inference, Gibbs & Candès
      2021, in a windowed multiplicative form). Recent errors are autocorrelated (weather regimes last days), so
      quantiles dominated by the last weeks under-cover; the integrator settles where the misses over the window
      exceed ``α`` just enough to hold the factor that fixes that. A multiplicative width is used rather than a
      shifted quantile level, whose reach ends at the window's largest error. Each term weighs
      ``0.5 ** (age / leak_half_life_days)``, ``age`` in days from the origin to ``as_of`` (a leaky integrator:
      recent coverage counts more than the window's oldest); ``leak_half_life_days=None``: equal terms.
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
    alpha = 1 - level
    rel = ((j["value"] - j["yhat"]) / j["yhat"]).to_numpy(dtype=float)
    weight = age_weights(j["origin"], as_of, half_life_days)
    has_iv = {"lower", "upper"} <= set(j.columns)
    for k, idx in j.groupby("lead_day").indices.items():
        g = j.iloc[idx]
        if g["origin"].nunique() < MIN_ORIGINS or len(idx) < MIN_POINTS:
            continue
        scale = 1.0
        if has_iv and gamma > 0:
            iv = g.dropna(subset=["lower", "upper"])
            # only blocks whose every target is known (the block ends before as_of)
            iv = iv[(iv["origin"] + pd.Timedelta(hours=24) * int(k)) <= as_of]
            if len(iv):
                miss = (~((iv["value"] >= iv["lower"]) & (iv["value"] <= iv["upper"]))).groupby(iv["origin"]).mean()
                fade = age_weights(miss.index, as_of, leak_half_life_days)
                excess = float(((miss.to_numpy(dtype=float) - alpha) * fade).sum())
                scale = float(np.clip(np.exp(gamma * excess), ACI_SCALE[0], ACI_SCALE[1]))
        q_lo, mid, q_hi = weighted_quantiles(rel[idx], weight[idx], [alpha / 2, 0.5, 1 - alpha / 2])
        cal[str(int(k))] = [float(mid + scale * (q_lo - mid)), float(mid + scale * (q_hi - mid))]
    return cal
