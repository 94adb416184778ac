"""Model performance and input drift into ``model_metrics``; retrain requests when a threshold is crossed.

* Accuracy per horizon day (D+k, Europe/Paris days after the issue day) of the forecasts issued in the
  last ``drift_window_days`` against the actuals known now: MAPE, MAE, bias (forecast − actual).
* Interval coverage: share of actuals inside [lower, upper], against the nominal ``interval_level``.
* Input drift: population stability index of the recent load distribution vs the reference
  (training) window, per time-of-day bucket (four 6-hour local buckets; ten reference-quantile bins).
* A breach (D+1 MAPE above ``drift_mape_max``, coverage short of nominal by more than
  ``drift_coverage_tolerance``, or any PSI above ``drift_psi_max``) writes a row
  ``kind = 'retrain_request'`` (name = which measure); the forecast stage reads it to retrain early.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from shared.calendar import TZ
from shared.store import Store

COLUMNS = [
    "computed_at",
    "run_id",
    "source",
    "metric",
    "kind",
    "name",
    "horizon_day",
    "scope",
    "model_version",
    "window_start",
    "window_end",
    "value",
    "threshold",
    "n",
    "breached",
    "details",
]
TOD_BUCKETS = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}


def load_issued_forecasts(store: Store, source: str, metric: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Forecast rows issued in [start, end) whose target is before ``end`` (actuals may exist)."""
    sql = """
    select run_id, model_version, issued_at, ts, horizon_day, yhat, lower, upper, interval_level, quality
    from {db:Identifier}.forecasts
    where source = {source:String} and metric = {metric:String}
      and issued_at >= {start:DateTime64(3, 'UTC')} and issued_at < {end:DateTime64(3, 'UTC')}
      and ts < {end:DateTime64(3, 'UTC')}
    """
    return store.query_df(sql, {"source": source, "metric": metric, "start": start, "end": end})


def accuracy(forecasts: pd.DataFrame, actuals: pd.DataFrame) -> pd.DataFrame:
    """Per horizon day: mape, mae, bias, coverage, n, nominal level, dominant model version."""
    if forecasts.empty or actuals.empty:
        return pd.DataFrame(columns=["horizon_day", "mape", "mae", "bias", "coverage", "n", "level", "model_version"])
    act = actuals.dropna(subset=["value"])[["ts", "value"]]
    df = forecasts.merge(act, on="ts", how="inner")
    df = df[df["value"] > 0]
    if df.empty:
        return pd.DataFrame(columns=["horizon_day", "mape", "mae", "bias", "coverage", "n", "level", "model_version"])
    err = df["yhat"] - df["value"]
    df = df.assign(
        ape=(err.abs() / df["value"]),
        ae=err.abs(),
        err=err,
        inside=((df["value"] >= df["lower"]) & (df["value"] <= df["upper"])).where(
            df["lower"].notna() & df["upper"].notna()
        ),
    )
    out = (
        df.groupby("horizon_day")
        .agg(
            mape=("ape", "mean"),
            mae=("ae", "mean"),
            bias=("err", "mean"),
            coverage=("inside", "mean"),
            n=("ape", "size"),
            level=("interval_level", "median"),
            model_version=("model_version", lambda s: s.mode().iloc[0] if len(s) else ""),
        )
        .reset_index()
    )
    return out


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``recent`` against ``reference`` on reference-quantile bins."""
    reference = reference[np.isfinite(reference)]
    recent = recent[np.isfinite(recent)]
    if reference.size < bins * 5 or recent.size < bins:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    p_ref = np.histogram(reference, edges)[0] / reference.size
    p_new = np.histogram(recent, edges)[0] / recent.size
    p_ref, p_new = np.clip(p_ref, eps, None), np.clip(p_new, eps, None)
    return float(np.sum((p_new - p_ref) * np.log(p_new / p_ref)))


def psi_by_time_of_day(
    series: pd.DataFrame, recent_start: datetime, seasonal_days: int = 14
) -> dict[str, tuple[float, int]]:
    """PSI per local time-of-day bucket: values before ``recent_start`` are the reference.

    Load is seasonal, so the reference keeps only the training-window points within ``seasonal_days`` of
    the recent window's calendar days (earlier years); what is left is drift the season does not explain.
    Falls back to the whole reference when that leaves too few points (training window under a year).
    """
    s = series.dropna(subset=["value"])
    if s.empty:
        return {}
    ts = pd.DatetimeIndex(s["ts"])
    hours = ts.tz_convert(TZ).hour
    is_recent = (s["ts"] >= pd.Timestamp(recent_start)).to_numpy()
    vals = s["value"].to_numpy(dtype=float)
    doy = ts.dayofyear.to_numpy()
    center = int(np.median(doy[is_recent])) if is_recent.any() else 0
    dist = np.abs(doy - center)
    dist = np.minimum(dist, 365 - dist)
    half = int(np.ptp(doy[is_recent]) // 2) if is_recent.any() else 0
    seasonal = dist <= seasonal_days + min(half, 182)
    out = {}
    for name, (h0, h1) in TOD_BUCKETS.items():
        in_bucket = (hours >= h0) & (hours < h1)
        ref = in_bucket & ~is_recent & seasonal
        if ref.sum() < 200:
            ref = in_bucket & ~is_recent
        out[name] = (psi(vals[ref], vals[in_bucket & is_recent]), int(np.sum(in_bucket & is_recent)))
    return out


def compute(forecasts: pd.DataFrame, series: pd.DataFrame, now: datetime, settings: Any) -> list[dict[str, Any]]:
    """All model_metrics rows (as dicts without run/source columns), retrain requests included."""
    window_start = pd.Timestamp(now) - pd.Timedelta(days=settings.drift_window_days)
    rows: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []

    def add(
        kind: str,
        name: str,
        value: float,
        *,
        horizon_day: int = 0,
        scope: str = "all",
        model_version: str = "",
        threshold: float | None = None,
        n: int = 0,
        breached: bool = False,
        details: dict[str, Any] | None = None,
        start: Any = window_start,
    ) -> None:
        rows.append(
            {
                "kind": kind,
                "name": name,
                "horizon_day": int(horizon_day),
                "scope": scope,
                "model_version": model_version,
                "window_start": pd.Timestamp(start),
                "window_end": pd.Timestamp(now),
                "value": float(value),
                "threshold": threshold,
                "n": int(n),
                "breached": int(breached),
                "details": json.dumps(details or {}, default=str),
            }
        )

    def judged(kind: str, name: str, value: float, *, threshold: float, breached: bool, request: dict[str, Any],
               **kw: Any) -> None:
        """A measure with a threshold: its row and, when breached, a retrain request (``request``: its scope)."""
        add(kind, name, value, threshold=threshold, breached=breached, **kw)
        if breached:
            requests.append({"name": name, "value": value, "threshold": threshold, **request})

    acc = accuracy(forecasts, series)
    for r in acc.itertuples():
        mv = str(r.model_version)
        on = {"horizon_day": r.horizon_day, "model_version": mv, "n": r.n}
        if r.horizon_day == 1:  # the retrain criterion is D+1 accuracy (other horizons are reported)
            judged("accuracy", "mape", r.mape, threshold=settings.drift_mape_max,
                   breached=r.mape > settings.drift_mape_max, request={"horizon_day": 1, "model_version": mv}, **on)
        else:
            add("accuracy", "mape", r.mape, **on)
        add("accuracy", "mae", r.mae, **on)
        add("accuracy", "bias", r.bias, **on)
        if pd.notna(r.coverage):
            floor = float(r.level) - settings.drift_coverage_tolerance
            short = r.horizon_day == 1 and r.coverage < floor
            judged("coverage", "coverage", r.coverage, threshold=floor, breached=short,
                   request={"horizon_day": 1, "model_version": mv}, details={"nominal": float(r.level)}, **on)
    ref_start = window_start - pd.Timedelta(days=settings.drift_reference_days)
    for bucket, (value, n) in psi_by_time_of_day(series[series["ts"] >= ref_start], window_start).items():
        if not np.isfinite(value):
            continue
        judged("psi", "psi", value, threshold=settings.drift_psi_max, breached=value > settings.drift_psi_max,
               request={"horizon_day": 0, "scope": bucket}, scope=bucket, n=n,
               details={"reference_start": ref_start.isoformat(), "reference": "same season of the training window"})
    for req in requests:
        add(
            "retrain_request",
            req["name"],
            req["value"],
            horizon_day=req["horizon_day"],
            scope=req.get("scope", "all"),
            model_version=req.get("model_version", ""),
            threshold=req["threshold"],
            breached=True,
            details=req,
        )
    return rows


def to_frame(rows: list[dict[str, Any]], now: datetime, run_id: str, source: str, metric: str) -> pd.DataFrame:
    """Rows for ``model_metrics``."""
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    df.insert(0, "computed_at", pd.Timestamp(now))
    df.insert(1, "run_id", run_id)
    df.insert(2, "source", source)
    df.insert(3, "metric", metric)
    return df[COLUMNS]
