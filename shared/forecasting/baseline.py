"""Seasonal-naive forecast: the value at the same time one (or more) weeks earlier.

It is both the benchmark of the backtest and the production fallback. No torch import here, so a
fallback works even when the ML stack cannot load.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WEEK = pd.Timedelta(days=7)


def lead_days(origin: pd.Timestamp | pd.Series | pd.DatetimeIndex, ts: pd.Series | pd.DatetimeIndex,
              step: pd.Timedelta) -> np.ndarray:
    """Lead day of each target: 1 for the first 24 hours after the origin, 2 for the next, …"""
    o = origin if isinstance(origin, pd.Timestamp) else pd.DatetimeIndex(origin)
    return np.ceil((pd.DatetimeIndex(ts) - o + step) / pd.Timedelta(hours=24)).astype(int).to_numpy()


def _lagged_copy(history: pd.DataFrame, origin: pd.Timestamp, targets: pd.DatetimeIndex,
                 period: pd.Timedelta) -> np.ndarray:
    """The value k periods earlier with the smallest k that lands strictly before ``origin``; a missing lagged
    value falls back to one more period back (up to 3 more)."""
    s = history.dropna(subset=["value"]).set_index("ts")["value"].sort_index()
    s = s[s.index < origin]
    s = s[~s.index.duplicated(keep="last")]
    out = np.full(len(targets), np.nan)
    if s.empty:
        return out
    k0 = np.maximum(np.ceil((targets - origin + pd.Timedelta(microseconds=1)) / period).astype(int).to_numpy(), 1)
    for extra in range(4):
        todo = np.isnan(out)
        if not todo.any():
            break
        out[todo] = s.reindex(targets[todo] - period * (k0[todo] + extra)).to_numpy()
    return out


def seasonal_naive(history: pd.DataFrame, origin: pd.Timestamp, targets: pd.DatetimeIndex) -> np.ndarray:
    """Forecast ``targets`` from ``history`` (``ts``, ``value``) strictly before ``origin``.

    Each target takes the value k weeks earlier with the smallest k that lands before the origin, so a
    D+7 target never reads data after the origin (a plain 168-hour lag would, for evening targets).
    Missing lagged values fall back to one more week back (up to 4 weeks).
    """
    return _lagged_copy(history, origin, targets, WEEK)


def seasonal_naive_many(
    history: pd.DataFrame, origins: pd.DatetimeIndex, steps: int, step: pd.Timedelta
) -> pd.DataFrame:
    """Long frame ``origin, ts, yhat, lead_day`` of seasonal-naive forecasts from each origin."""
    return simple_many("seasonal_naive", history, origins, steps, step)


def relative_error_quantiles(
    fc: pd.DataFrame, actual: pd.DataFrame, level: float, centered: bool = False
) -> dict[str, list[float]]:
    """Per lead day, the (1−level)/2 and (1+level)/2 quantiles of (actual − yhat)/yhat (conformal bounds).

    ``centered`` subtracts the holdout's median error first: a holdout with a one-off level shift
    (e.g. the 2022 sobriety drop) otherwise widens the intervals by a bias the model no longer has.
    """
    alpha = (1 - level) / 2
    joined = fc.merge(actual[["ts", "value"]], on="ts", how="inner").dropna(subset=["value", "yhat"])
    rel = (joined["value"] - joined["yhat"]) / joined["yhat"]
    cal: dict[str, list[float]] = {}
    for k, r in rel.groupby(joined["lead_day"]):
        if len(r) >= 24:
            mid = float(r.median()) if centered else 0.0
            cal[str(int(k))] = [float(r.quantile(alpha)) - mid, float(r.quantile(1 - alpha)) - mid]
    return cal


def apply_intervals(fc: pd.DataFrame, calibration: dict[str, list[float]]) -> pd.DataFrame:
    """Add ``lower``/``upper`` = yhat × (1 + quantile) per lead day (NaN when that day is uncalibrated)."""
    fc = fc.copy()
    keys = fc["lead_day"].astype(int).astype(str)
    fc["lower"] = fc["yhat"] * (1 + keys.map(lambda k: calibration.get(k, [np.nan, np.nan])[0]).astype(float))
    fc["upper"] = fc["yhat"] * (1 + keys.map(lambda k: calibration.get(k, [np.nan, np.nan])[1]).astype(float))
    return fc


DAY = pd.Timedelta(days=1)


def daily_naive(history: pd.DataFrame, origin: pd.Timestamp, targets: pd.DatetimeIndex) -> np.ndarray:
    """The value k days earlier with the smallest k that lands before ``origin`` (up to 3 more days back when
    missing): the other simple model, better than a week-old copy on a series with no weekly rhythm."""
    return _lagged_copy(history, origin, targets, DAY)


SIMPLE_MODELS = {"seasonal_naive": seasonal_naive, "daily_naive": daily_naive}


def simple_many(name: str, history: pd.DataFrame, origins: pd.DatetimeIndex, steps: int,
                step: pd.Timedelta) -> pd.DataFrame:
    """Long frame ``origin, ts, yhat, lead_day`` of one simple model (see ``SIMPLE_MODELS``) from each origin."""
    rows = []
    for o in origins:
        t = pd.date_range(o, periods=steps, freq=step)
        rows.append(pd.DataFrame({"origin": o, "ts": t, "yhat": SIMPLE_MODELS[name](history, o, t),
                                  "lead_day": lead_days(o, t, step)}))
    if not rows:
        return pd.DataFrame(columns=["origin", "ts", "yhat", "lead_day"])
    return pd.concat(rows, ignore_index=True)
