"""Shared helpers of the featurize/forecast tests: real eco2mix rows inserted straight into measurements
(version 1, ukey per the convention), standing in for the ingestion stages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shared import settings as settings_mod
from shared.errors import ConfigurationError
from shared.forecasting import service
from shared.forecasting.evaluate import load_data
from shared.forecasting.model import ModelConfig
from shared.ingest.history import read_history
from shared.ingest.versioning import make_ukeys
from shared.settings import REPO_ROOT, Settings
from shared.store import Store

ECO2MIX = REPO_ROOT / "data" / "eco2mix"

# Tiny model configuration for tests; the full-quality one is for `make evaluate` and the benchmark.
FAST_MODEL_ENV = {
    "POWERSENSE_FORECAST_TRAIN_DAYS": "70",
    "POWERSENSE_FORECAST_HOLDOUT_DAYS": "14",
    "POWERSENSE_FORECAST_EPOCHS": "3",
    "POWERSENSE_FORECAST_BATCH_SIZE": "128",
    "POWERSENSE_FORECAST_PROFILE_MIN_STEPS": "0",
    "POWERSENSE_FORECAST_LEVEL_EPOCHS": "5",
    # the tests' few weeks of history stand in for the main series' four years: they keep its level network
    # (the short-series tests unset this, as they unset the holdout)
    "POWERSENSE_FORECAST_LEVEL_MIN_HISTORY_DAYS": "0",
    "POWERSENSE_FORECAST_LEVEL_LAGS": "7",
    "POWERSENSE_FORECAST_TORCH_THREADS": "1",
    # networks this small train in a fraction of a second, a worker process starts in ~6 s; the parallel path has
    # its own tests (tests/test_train_processes.py)
    "POWERSENSE_FORECAST_TRAIN_PROCESSES": "1",
}


def tiny_model_config(**overrides: Any) -> ModelConfig:
    """A model configuration that trains in seconds (the model-level tests: mechanics, not accuracy)."""
    tiny = ModelConfig(epochs=2, batch_size=128, level_epochs=3, level_lags=7, torch_threads=1, level_seeds=1,
                       profile_min_steps=0)
    return replace(tiny, **overrides)


def grid_2022(end: str, start: str | None = None) -> pd.DataFrame:
    """The shipped 2022 national load on the 30-min model grid (``ts`` UTC, ``value``), ``start <= ts < end``."""
    grid, _ = load_data([ECO2MIX / "eco2mix_national_2022.csv.gz"], 30)
    keep = grid["ts"] < end
    if start is not None:
        keep &= grid["ts"] >= start
    return grid[keep].reset_index(drop=True)


def fast_model_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """Body of a settings fixture: ``FAST_MODEL_ENV``, artifacts under ``tmp_path``, fresh settings and model
    cache (both cleared again at teardown). Use as ``yield from fast_model_settings(monkeypatch, tmp_path)``."""
    for k, v in FAST_MODEL_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("POWERSENSE_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    settings_mod.get_settings.cache_clear()
    service._cache.clear()
    yield settings_mod.get_settings()
    service._cache.clear()
    settings_mod.get_settings.cache_clear()


def assert_start_up_fails(monkeypatch: pytest.MonkeyPatch, name: str, value: str, match: str) -> None:
    """With ``name=value`` in the environment, building the settings (every function's start-up) raises
    ConfigurationError matching ``match``; the settings cache is cleared before and after."""
    monkeypatch.setenv(name, value)
    settings_mod.get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match=match):
            settings_mod.get_settings()
    finally:
        settings_mod.get_settings.cache_clear()


def history(start: str, end: str) -> pd.DataFrame:
    """Shipped consumption rows (UTC) with ``start <= ts < end``."""
    years = range(pd.Timestamp(start).year, pd.Timestamp(end).year + 1)
    files = [ECO2MIX / f"eco2mix_national_{y}.csv.gz" for y in years]
    h = read_history(files, start, end)
    return h[["ts", "nature", "consommation"]].rename(columns={"consommation": "value"}).dropna(subset=["value"])


def insert_measurements(store: Store, rows: pd.DataFrame, version: int = 1, batch_id: str = "test",
                        metric: str = "consommation", source: str = "eco2mix_national") -> int:
    """Insert ``ts, nature, value`` rows as measurements of one version."""
    df = pd.DataFrame({
        "ts": rows["ts"],
        "source": source,
        "metric": metric,
        "nature": rows["nature"],
        "value": rows["value"].astype(float),
        # the product's own key builder, so test rows are indistinguishable from ingested ones
        "ukey": make_ukeys(rows["ts"], pd.Series(metric, index=rows.index), rows["nature"], "France"),
        "version": version,
        "batch_id": batch_id,
    })
    return store.insert_df("measurements", df)
