"""The forecast stage reads its grid from ``features`` (featurize's gated grid): parity with the grid the stage
used to build itself from ``measurements`` (load_series → training-data gate → build_grid), on real 2023 data,
when featurize is up to date and when it is behind (the tail is computed in-process), and the same forecast
issued end to end (training and prediction) at a fixed origin."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.artifacts import LocalArtifactStore
from shared.features import build_grid, featurize
from shared.forecasting import service
from shared.forecasting.gate import gate
from shared.series import load_series
from shared.settings import Settings
from shared.store import Store
from tests.fixtures_forecast import assert_start_up_fails, fast_model_settings, insert_measurements

NOW = datetime(2023, 3, 15, 10, 20, tzinfo=UTC)  # data ends at 10:00 UTC


@pytest.fixture
def fc_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    yield from fast_model_settings(monkeypatch, tmp_path)


def old_grid(store: Store, settings: Settings, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The grid as the forecast stage built it from measurements before it read ``features`` (no open anomaly)."""
    s = load_series(store, settings.series_source, settings.series_metric, start.to_pydatetime(), end.to_pydatetime())
    g = gate(s[["ts", "value"]].sort_values("ts").reset_index(drop=True), settings, metric=settings.series_metric)
    last = g.frame.dropna(subset=["value"])["ts"].max()
    return build_grid(g.frame, settings.forecast_resolution_min, start, last + pd.Timedelta(minutes=1),
                      settings.max_interp_steps)[["ts", "value"]]


def _window(settings: Settings) -> tuple[pd.Timestamp, pd.Timestamp]:
    now = pd.Timestamp(NOW)
    return now - pd.Timedelta(days=settings.forecast_train_days), now + pd.Timedelta(minutes=1)


def test_grid_from_features_equals_the_grid_built_from_measurements(
        store: Store, fc_settings: Settings, winter_2023: pd.DataFrame) -> None:
    insert_measurements(store, winter_2023)
    assert featurize(store, fc_settings, NOW)["rows_out"] > 0
    start, end = _window(fc_settings)
    pd.testing.assert_frame_equal(service.load_grid(store, fc_settings, start, end),
                                  old_grid(store, fc_settings, start, end), check_exact=True)


def test_features_behind_the_data_are_completed_in_process(
        store: Store, fc_settings: Settings, winter_2023: pd.DataFrame) -> None:
    cut = pd.Timestamp("2023-03-14", tz="UTC")
    insert_measurements(store, winter_2023[winter_2023["ts"] < cut])
    featurize(store, fc_settings, cut.to_pydatetime())
    insert_measurements(store, winter_2023[winter_2023["ts"] >= cut], batch_id="later")  # featurize has not run
    start, end = _window(fc_settings)
    grid = service.load_grid(store, fc_settings, start, end)
    assert grid["ts"].max() == pd.Timestamp("2023-03-15 09:30", tz="UTC")  # not stale: the newest step is there
    pd.testing.assert_frame_equal(grid, old_grid(store, fc_settings, start, end), check_exact=True)
    # and nothing was written by the forecast path: featurize stays the only writer of features
    newest = store.scalar("select max(ts) from {db:Identifier}.features")
    assert pd.Timestamp(newest).tz_localize(None) < cut.tz_localize(None)


def test_issued_forecast_equals_the_old_path(store: Store, fc_settings: Settings, winter_2023: pd.DataFrame,
                                             tmp_path: Path) -> None:
    """Training and prediction through the features path (run_forecast) give the forecast the old path gives:
    the same model training on the grid built from measurements, issued at the same origin."""
    insert_measurements(store, winter_2023)
    featurize(store, fc_settings, NOW)
    now = pd.Timestamp(NOW)
    past = service.recent_forecasts(store, fc_settings, now)
    res = service.run_forecast(store, fc_settings, lambda: LocalArtifactStore(tmp_path / "a"), NOW, "run-features")
    assert res.quality == "model"
    new = store.query_df("select ts, yhat, lower, upper from {db:Identifier}.forecasts "
                         "where run_id = 'run-features' order by ts")
    grid = old_grid(store, fc_settings, *_window(fc_settings))
    model, _ = service.train_and_calibrate(grid, fc_settings)
    ref = service.predict_current(model, grid, now, fc_settings, past=past)
    assert list(pd.DatetimeIndex(new["ts"])) == list(pd.DatetimeIndex(ref["ts"]))
    for col in ("yhat", "lower", "upper"):
        np.testing.assert_allclose(new[col].to_numpy(), ref[col].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", ["POWERSENSE_FORECAST_TRAIN_DAYS", "POWERSENSE_FORECAST_WEATHER_TRAIN_DAYS"])
def test_a_training_window_longer_than_featurize_reaches_back_fails_at_start_up(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The forecast reads its window from featurize's table (``features_lookback_days`` deep): a longer window
    would silently train on less than it says."""
    assert_start_up_fails(monkeypatch, name, "2000", "POWERSENSE_FEATURES_LOOKBACK_DAYS \\(1830\\) must cover")


def test_featurize_at_another_resolution_stops_the_forecast(
        store: Store, fc_settings: Settings, winter_2023: pd.DataFrame) -> None:
    """featurize deployed with 15 min, forecast with 30: a configuration error, not a silent in-process rebuild."""
    from shared.errors import ConfigurationError

    insert_measurements(store, winter_2023[winter_2023["ts"] >= pd.Timestamp("2023-03-01", tz="UTC")])
    featurize(store, fc_settings.model_copy(update={"forecast_resolution_min": 15}), NOW)
    service._resolution_checked.clear()
    with pytest.raises(ConfigurationError, match="featurize writes .* at \\[15\\] min"):
        service.run_forecast(store, fc_settings, lambda: None, NOW, "run-mismatch")
