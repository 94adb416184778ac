"""The seeds' networks trained side by side in worker processes (``ModelConfig.train_processes``,
``POWERSENSE_FORECAST_TRAIN_PROCESSES``): the same model as in one process, a clear error when a worker dies, and
training in the calling process where workers cannot start. Real 2022 load and temperature, tiny epochs: the
mechanics, not accuracy."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from shared.errors import ModelError
from shared.forecasting import model as fm
from shared.forecasting.evaluate import perfect_provider, realised_temperature, with_weather
from shared.weather.features import features_for_origins
from tests.fixtures_forecast import grid_2022, tiny_model_config

# a weather model: its workers also return each profile's slope correction and fitted values
WEATHER = replace(tiny_model_config(), weather=True, weather_smoothed_input=True, weather_level_lags=5,
                  weather_profile_seeds=3, weather_level_seeds=3)
ORIGINS = pd.DatetimeIndex(["2022-04-05 10:00", "2022-04-06 10:00"], tz="UTC")


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    grid = grid_2022("2022-04-20", start="2022-01-01")
    real = realised_temperature(grid["ts"])
    return {"grid": grid, "real": real, "gw": with_weather(grid, real, smoothed_input=True)}


@pytest.fixture(scope="module")
def models(data: dict[str, pd.DataFrame]) -> dict[int, fm.LoadModel]:
    train = data["gw"][data["gw"]["ts"] < "2022-04-01"]
    return {n: fm.fit(train, replace(WEATHER, train_processes=n)) for n in (1, 2)}


def _forecast(model: fm.LoadModel, data: dict[str, pd.DataFrame]) -> np.ndarray:
    real = data["real"]
    wx = features_for_origins(real, perfect_provider(real, pd.Timedelta(days=8), pd.Timedelta(minutes=30))(ORIGINS),
                              ORIGINS, 30, True)
    return fm.predict(model, data["gw"], ORIGINS, weather=wx)["yhat"].to_numpy()


def test_workers_train_the_same_model(models: dict[int, fm.LoadModel], data: dict[str, pd.DataFrame]) -> None:
    one, two = models[1], models[2]
    assert len(two.extra_profiles) == 2 and len(two.extra_levels) == 2
    for a, b in zip([one.profile, *one.extra_profiles], [two.profile, *two.extra_profiles], strict=True):
        np.testing.assert_array_equal(a.powersense_weather_correction, b.powersense_weather_correction)
    # bit-identical: every seed seeds its own fit, and a worker's network comes back through the artifact format
    np.testing.assert_array_equal(_forecast(two, data), _forecast(one, data))


def test_a_worker_trained_network_differs_by_seed(models: dict[int, fm.LoadModel],
                                                   data: dict[str, pd.DataFrame]) -> None:
    # seed 1 is trained in the worker: a network of its own, not a copy of seed 0's
    two = models[2]
    ts = pd.DatetimeIndex(data["gw"]["ts"].iloc[:2000:7])
    wx = fm.weather_regressors(ts, data["gw"].set_index("ts").loc[ts].reset_index(), two.config)
    a, b = (fm._profile_predict(p, ts, wx) for p in (two.profile, two.extra_profiles[0]))
    assert np.abs(a - b).max() > 1.0


def _die(*_: object) -> None:
    os._exit(3)  # a worker killed mid-fit (the OOM killer's SIGKILL looks the same to the pool)


def test_a_worker_that_dies_is_a_model_error(monkeypatch: pytest.MonkeyPatch, data: dict[str, pd.DataFrame]) -> None:
    monkeypatch.setattr(fm, "_level_job", _die)
    with pytest.raises(ModelError, match="training process died"):
        fm.fit(data["grid"], tiny_model_config(level_seeds=2, train_processes=2))


class _NoSemaphores:
    def __init__(self, *_: object, **__: object) -> None:
        raise OSError(38, "Function not implemented")  # what AWS Lambda (no /dev/shm) raises


def test_training_stays_in_process_where_workers_cannot_start(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, data: dict[str, pd.DataFrame]) -> None:
    import concurrent.futures

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _NoSemaphores)
    with caplog.at_level(logging.WARNING, logger=fm.__name__):
        model = fm.fit(data["grid"], tiny_model_config(level_seeds=2, train_processes=2))
    assert len(model.extra_levels) == 1
    assert [r.event for r in caplog.records] == ["training_processes_unavailable"]  # type: ignore[attr-defined]


class _NoPoolExpected:
    def __init__(self, *_: object, **__: object) -> None:
        raise AssertionError("no worker process should start")


def test_one_cpu_trains_in_process(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                   data: dict[str, pd.DataFrame]) -> None:
    # a second process on one CPU would only double the memory
    import concurrent.futures

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _NoPoolExpected)
    monkeypatch.setattr(fm, "available_cpus", lambda: 1)
    with caplog.at_level(logging.INFO, logger=fm.__name__):
        model = fm.fit(data["grid"], tiny_model_config(level_seeds=2, train_processes=2))
    assert len(model.extra_levels) == 1
    assert [r.event for r in caplog.records] == ["training_processes_capped"]  # type: ignore[attr-defined]
