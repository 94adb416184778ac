"""Test helpers for detect: real eco2mix rows written straight into measurements (version 1, ukey per the
convention), forecasts rows built from them, and a frozen clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from shared import clock
from shared.ingest.history import read_history
from shared.ingest.versioning import make_ukeys
from shared.settings import REPO_ROOT
from shared.store import Store

ECO2MIX = REPO_ROOT / "data" / "eco2mix"
SOURCE, METRIC = "eco2mix_national", "consommation"


def utc(text: str) -> pd.Timestamp:
    """A UTC timestamp from text."""
    return pd.Timestamp(text, tz="UTC")


def real_load(start: str, end: str) -> pd.DataFrame:
    """Real consumption (ts, nature, value) from the shipped files, start <= ts < end."""
    s, e = utc(start), utc(end)
    files = [ECO2MIX / f"eco2mix_national_{y}.csv.gz" for y in range(s.year, e.year + 1)]
    df = read_history([f for f in files if f.exists()], s, e)
    out = df.rename(columns={"consommation": "value"})[["ts", "nature", "value"]].dropna(subset=["value"])
    return out.astype({"value": float})


def write_measurements(store: Store, rows: pd.DataFrame, version: int = 1, inserted_at: datetime | None = None) -> None:
    """Insert (ts, nature, value) rows as measurements of one version."""
    df = pd.DataFrame(
        {
            "ts": rows["ts"],
            "source": SOURCE,
            "metric": METRIC,
            "nature": rows["nature"].replace("", "Données temps réel"),
            "value": rows["value"].astype(float),
        }
    )
    df["ukey"] = make_ukeys(df["ts"], df["metric"], df["nature"], "France")  # the product's key builder
    df["version"] = np.uint64(version)
    df["batch_id"] = f"test-{uuid.uuid4().hex[:8]}"
    df["inserted_at"] = pd.Timestamp(inserted_at or datetime.now().astimezone()).tz_convert("UTC")
    store.insert_df("measurements", df)


def write_forecasts(
    store: Store,
    truth: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    factor: float = 1.0,
    model_version: str = "test-model",
) -> None:
    """Hourly forecast runs over [start, end): 30-min steps for the next 6 h, yhat = truth × factor,
    an 80 % interval of ±3 %."""
    s = truth.set_index("ts")["value"]
    s = s[s.index.minute % 30 == 0]
    frames = []
    for issued in pd.date_range(start, end, freq="1h", inclusive="left"):
        target = s[(s.index >= issued) & (s.index < issued + pd.Timedelta(hours=6))]
        if target.empty:
            continue
        yhat = target.to_numpy() * factor
        local_issue = issued.tz_convert("Europe/Paris").normalize()
        frames.append(
            pd.DataFrame(
                {
                    "run_id": f"run-{issued:%Y%m%d%H}",
                    "model_version": model_version,
                    "issued_at": issued,
                    "origin": target.index[0],
                    "source": SOURCE,
                    "metric": METRIC,
                    "ts": target.index,
                    "horizon_steps": np.arange(1, len(target) + 1, dtype=np.uint16),
                    "horizon_day": np.array(
                        [(t.tz_convert("Europe/Paris").normalize() - local_issue).days for t in target.index],
                        dtype=np.uint8,
                    ),
                    "yhat": yhat,
                    "lower": yhat * 0.97,
                    "upper": yhat * 1.03,
                    "interval_level": np.float32(0.8),
                    "quality": "model",
                    "fallback_reason": "",
                }
            )
        )
    store.insert_df("forecasts", pd.concat(frames, ignore_index=True))


@contextmanager
def frozen_clock(at: pd.Timestamp) -> Iterator[None]:
    """Install a simulated clock standing still at ``at``."""
    clock.install(clock.SimulatedClock(at.to_pydatetime(), speed=0.0))
    try:
        yield
    finally:
        clock.install(None)


def upsert_load(store: Store, rows: pd.DataFrame, batch_id: str = "test") -> int:
    """Write (ts, nature, value) consumption rows through the product's versioning path
    (compute_versions + write_versions: versions, inserted_at from the product clock, plausibility flags)."""
    from shared.ingest.versioning import compute_versions, load_latest, write_versions

    obs = pd.DataFrame({"ts": rows["ts"], "metric": METRIC,
                        "nature": rows["nature"].replace("", "Données temps réel"),
                        "perimetre": "France", "value": rows["value"].astype(float)})
    obs["ukey"] = make_ukeys(obs["ts"], obs["metric"], obs["nature"], obs["perimetre"])
    latest = load_latest(store, SOURCE, [METRIC], obs["ts"].min(), obs["ts"].max())
    return write_versions(store, compute_versions(obs, latest), SOURCE, batch_id, chunk_rows=100_000)


QUERY_TOKEN = "trust-series-test-token"


@contextmanager
def query_client(store: Store) -> Iterator[Any]:
    """The real query function (HTTP, bearer token) over ``store``'s database, responses never cached."""
    import os

    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler
    from shared import settings as settings_mod
    from shared import store as store_mod

    saved = {k: os.environ.get(k) for k in ("POWERSENSE_QUERY_TOKEN", "POWERSENSE_QUERY_CACHE_TTL_S",
                                            "POWERSENSE_CLICKHOUSE_DATABASE")}
    os.environ.update(POWERSENSE_QUERY_TOKEN=QUERY_TOKEN, POWERSENSE_QUERY_CACHE_TTL_S="0",
                      POWERSENSE_CLICKHOUSE_DATABASE=store.database)
    settings_mod.get_settings.cache_clear()
    store_mod.reset_store()
    try:
        with TestClient(load_handler("query").app, headers={"Authorization": f"Bearer {QUERY_TOKEN}"}) as c:
            yield c
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        settings_mod.get_settings.cache_clear()
        store_mod.reset_store()
