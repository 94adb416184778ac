"""Real-data fixtures for the query tests and benchmark: shipped eco2mix history as version-1
measurements, and a real seasonal-naive forecast run (same time last week) with empirical intervals."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from shared.ingest.history import LOAD_COLUMNS, read_history
from shared.ingest.versioning import make_ukeys, wide_to_long
from shared.settings import REPO_ROOT
from shared.store import Store

SOURCE = "eco2mix_national"
ECO2MIX = REPO_ROOT / "data" / "eco2mix"


def history_files(years: Sequence[int]) -> list[Path]:
    """Shipped yearly files."""
    return [ECO2MIX / f"eco2mix_national_{y}.csv.gz" for y in years]


def measurement_rows(frame: pd.DataFrame, version: int = 1, batch_id: str = "history") -> pd.DataFrame:
    """History (wide) → measurement rows with the ukey convention; NULL values are not stored as v1."""
    long = wide_to_long(frame, LOAD_COLUMNS)
    long = long[long["value"].notna()].reset_index(drop=True)
    long["ukey"] = make_ukeys(long["ts"], long["metric"], long["nature"], long["perimetre"])
    long["source"] = SOURCE
    long["version"] = version
    long["batch_id"] = batch_id
    return long[["ts", "source", "metric", "nature", "value", "ukey", "version", "batch_id"]]


def load_history(store: Store, start: str, end: str, years: Sequence[int] | None = None) -> pd.DataFrame:
    """Insert the shipped history for [start, end) as version 1; returns the wide frame."""
    years = years or sorted({pd.Timestamp(start).year, (pd.Timestamp(end) - pd.Timedelta("1ms")).year})
    frame = read_history(history_files(years), start, end)
    store.insert_df("measurements", measurement_rows(frame))
    return frame


def seasonal_naive_run(
    history: pd.DataFrame, issued_at: datetime, days: int = 7, step_min: int = 30, level: float = 0.8
) -> pd.DataFrame:
    """A forecast run from real data: yhat(ts) = consommation at ts − 7 days; the interval is the
    empirical (1−level)/2 … (1+level)/2 quantile band of the same forecaster's errors over the 4 weeks
    before ``issued_at``."""
    s = history.set_index("ts")["consommation"].astype(float).dropna()
    s = s[s.index.minute % step_min == 0]
    issued = pd.Timestamp(issued_at)
    origin = issued.floor(f"{step_min}min")
    if origin < issued:
        origin += pd.Timedelta(minutes=step_min)
    target = pd.date_range(origin, origin + pd.Timedelta(days=days), freq=f"{step_min}min", inclusive="left")
    week = pd.Timedelta(days=7)
    yhat = s.reindex(target - week).to_numpy()
    past = s[(s.index >= issued - pd.Timedelta(days=28)) & (s.index < issued)]
    errors = (past - s.reindex(past.index - week).to_numpy()).dropna()
    lo_q, hi_q = (np.quantile(errors, [(1 - level) / 2, (1 + level) / 2]) if len(errors) else (0.0, 0.0))
    paris_issue_day = issued.tz_convert("Europe/Paris").normalize().tz_localize(None)
    horizon_day = ((target.tz_convert("Europe/Paris").normalize().tz_localize(None) - paris_issue_day).days).to_numpy()
    run = pd.DataFrame({
        "run_id": f"naive-{issued.strftime('%Y%m%dT%H%M')}-{uuid.uuid4().hex[:6]}",
        "model_version": "",
        "issued_at": issued,
        "origin": origin,
        "source": SOURCE,
        "metric": "consommation",
        "ts": target,
        "horizon_steps": np.arange(1, len(target) + 1, dtype="uint16"),
        "horizon_day": horizon_day.astype("uint8"),
        "yhat": yhat,
        "lower": yhat + lo_q,
        "upper": yhat + hi_q,
        "interval_level": np.float32(level),
        "quality": "fallback",
        "fallback_reason": "seasonal naive (same time last week)",
    })
    return run[run["yhat"].notna()].reset_index(drop=True)


def insert_forecast_run(store: Store, history: pd.DataFrame, issued_at: datetime, **kw: object) -> pd.DataFrame:
    """Compute and store one seasonal-naive run."""
    run = seasonal_naive_run(history, issued_at, **kw)  # type: ignore[arg-type]
    store.insert_df("forecasts", run)
    return run


def anomaly_row(ts: datetime, kind: str, severity: str, status: str = "open", **kw: object) -> dict[str, object]:
    """One row of detect's anomalies table (shape of ch/init/030.detect.sql)."""
    return {"ts": ts, "source": SOURCE, "metric": "consommation", "kind": kind, "detector": "residual",
            "severity": severity, "value": 41000.0, "value_version": 1, "expected": 52000.0, "lower": 50000.0,
            "upper": 54000.0, "score": 9.5, "threshold": 8.0, "model_version": "profile", "forecast_run_id": "",
            "detected_at": ts + timedelta(minutes=20), "run_id": "detect-1", "status": status, "resolved_at": None,
            "resolution": "", "updated_at": ts + timedelta(minutes=20), **kw}


def utc(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    """Shorthand for a UTC datetime."""
    return datetime(y, m, d, h, mi, tzinfo=UTC)


DAY = timedelta(days=1)
