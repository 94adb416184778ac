"""A profile network's values come from NeuralProphet's own network called directly (``model._profile_network``):
they must be what ``NeuralProphet.predict`` gives, for the weather-free and the weather profile, fresh and restored
from the artifact. Tiny epochs: equivalence, not accuracy."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.errors import ModelError
from shared.forecasting import model as fm
from shared.forecasting.evaluate import realised_temperature, with_weather
from tests.fixtures_forecast import grid_2022, tiny_model_config

TINY = tiny_model_config(level_seeds=1, weather_level_seeds=1, weather_profile_seeds=1)


def _reference(m: Any, ts: pd.DatetimeIndex, wx: np.ndarray | None = None) -> np.ndarray:
    """The profile through ``NeuralProphet.predict``: what ``_profile_network`` replaces."""
    df = fm.profile_frame(ts, events=m.powersense_events, conditions=m.powersense_conditions)
    for k, name in enumerate(m.powersense_weather_regs):
        df[name] = wx[:, k]  # type: ignore[index]
    df["y"] = 0.0
    return m.predict(df, decompose=False)["yhat1"].to_numpy(dtype=float)


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    grid = grid_2022("2022-04-01", start="2022-01-01")
    gw = with_weather(grid, realised_temperature(grid["ts"]), smoothed_input=True)
    plain = fm.fit(grid, TINY)
    weather = fm.fit(gw, replace(TINY, weather=True, weather_smoothed_input=True, weather_level_lags=5))
    # instants with a gap (a missing day) and a public holiday (Easter Monday 2022-04-18), past and future
    ts = pd.date_range("2022-03-20", "2022-04-25", freq="30min", tz="UTC")
    ts = ts[(ts < "2022-03-25") | (ts >= "2022-03-26")]
    return {"plain": plain, "weather": weather, "ts": ts}


def test_a_weather_free_profile_equals_neuralprophet_predict(models: dict) -> None:
    m, ts = models["plain"].profile, models["ts"]
    fast = fm._profile_network(m, fm.profile_frame(ts, events=m.powersense_events,
                                                   conditions=m.powersense_conditions))
    assert fast.shape == (len(ts),)
    np.testing.assert_array_equal(fast, _reference(m, ts))  # the same float32 network on the same input


def test_a_weather_profile_equals_neuralprophet_predict(models: dict) -> None:
    m, ts = models["weather"].profile, models["ts"]
    rng = np.random.default_rng(0)
    wx = rng.uniform(0.0, 12.0, (len(ts), len(m.powersense_weather_regs)))
    np.testing.assert_array_equal(fm._profile_raw(m, ts, wx), _reference(m, ts, wx))


def test_a_restored_profile_equals_neuralprophet_predict(models: dict) -> None:
    back = fm.from_files(fm.to_files(models["plain"]))
    ts = models["ts"]
    np.testing.assert_array_equal(fm._profile_predict(back.profile, ts), _reference(back.profile, ts))


def test_a_missing_regressor_is_refused(models: dict) -> None:
    # predict would silently drop the row and return fewer values than instants asked for
    m, ts = models["weather"].profile, models["ts"][:48]
    wx = np.ones((len(ts), len(m.powersense_weather_regs)))
    wx[3, 0] = np.nan
    with pytest.raises(ModelError, match="missing input"):
        fm._profile_raw(m, ts, wx)
