"""Shared helpers of the featurize/forecast tests: real eco2mix rows inserted straight into measurements
(version 1, ukey per the convention), standing in for the ingestion stages."""

from __future__ import annotations

import json

import pandas as pd

from shared.ingest.history import read_history
from shared.settings import REPO_ROOT
from shared.store import Store

ECO2MIX = REPO_ROOT / "data" / "eco2mix"


def history(start: str, end: str) -> pd.DataFrame:
    """Shipped consumption rows (UTC) with ``start <= ts < end``."""
    years = range(pd.Timestamp(start).year, pd.Timestamp(end).year + 1)
    files = [ECO2MIX / f"eco2mix_national_{y}.csv.gz" for y in years]
    h = read_history(files, start, end)
    return h[["ts", "nature", "consommation"]].rename(columns={"consommation": "value"}).dropna(subset=["value"])


def ukey(ts: pd.Timestamp, metric: str, nature: str) -> str:
    """Canonical ukey: sorted-key compact JSON of UTC date/time, metric, nature, perimetre."""
    return json.dumps({"date": ts.strftime("%Y-%m-%d"), "metric": metric, "nature": nature, "perimetre": "France",
                       "time": ts.strftime("%H:%M")}, sort_keys=True, separators=(",", ":"))


def insert_measurements(store: Store, rows: pd.DataFrame, version: int = 1, batch_id: str = "test",
                        metric: str = "consommation", source: str = "eco2mix_national") -> int:
    """Insert ``ts, nature, value`` rows as measurements of one version."""
    df = pd.DataFrame({
        "ts": rows["ts"],
        "source": source,
        "metric": metric,
        "nature": rows["nature"],
        "value": rows["value"].astype(float),
        "ukey": [ukey(t, metric, n) for t, n in zip(rows["ts"], rows["nature"], strict=True)],
        "version": version,
        "batch_id": batch_id,
    })
    return store.insert_df("measurements", df)
