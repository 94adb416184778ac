"""The level network's forecast is NeuralProphet's own network called directly (``model._level_forecast``): it must
give what ``NeuralProphet.predict`` gives, on a fresh model and on one restored from its artifact. Tiny epochs:
equivalence, not accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.errors import ModelError
from shared.forecasting import model as fm
from tests.fixtures_forecast import grid_2022, tiny_model_config

TINY = tiny_model_config(level_epochs=5, level_seeds=2)


def _reference(level: Any, lags: np.ndarray) -> np.ndarray:
    """The level forecast through NeuralProphet's ``predict``, each origin its own short series (lags + an empty
    future; IDs zero-padded because NeuralProphet groups, and so orders, by ID): what ``_level_forecast`` replaces."""
    frames = []
    for i, row in enumerate(fm._filled_lags(lags)):
        f = fm._level_frame(np.concatenate([row, np.full(fm.BLOCKS_OUT, np.nan)]))
        f["ID"] = f"o{i:06d}"
        frames.append(f)
    out = level.predict(pd.concat(frames, ignore_index=True), decompose=False, raw=True, auto_extend=False)
    return out[[f"step{k}" for k in range(fm.BLOCKS_OUT)]].to_numpy(dtype=float)


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    grid = grid_2022("2022-05-01", start="2022-01-01")
    model = fm.fit(grid[grid["ts"] < "2022-04-01"], TINY)
    # lag rows from the real series: 7 consecutive daily-mean deviations from the period's mean, one row per day
    daily = grid.set_index("ts")["value"].resample("D").mean()
    dev = (daily - daily.mean()).to_numpy()
    rows = np.lib.stride_tricks.sliding_window_view(dev, TINY.level_lags)[:40].copy()
    rows[5, 3] = np.nan  # a missing block: both paths interpolate it the same way
    return {"model": model, "lags": np.diff(rows, axis=1, prepend=rows[:, :1])}


def test_direct_level_forecast_equals_neuralprophet_predict(trained: dict) -> None:
    model, lags = trained["model"], trained["lags"]
    for level in [model.level, *model.extra_levels]:
        fast = fm._level_forecast(level, lags)
        ref = _reference(level, lags)
        assert fast.shape == ref.shape == (len(lags), fm.BLOCKS_OUT)
        np.testing.assert_array_equal(fast, ref)  # the same float32 network on the same float32 input: bit for bit


def test_direct_level_forecast_of_a_restored_artifact_equals_the_trained_model(trained: dict) -> None:
    model, lags = trained["model"], trained["lags"]
    back = fm.from_files(fm.to_files(model))
    np.testing.assert_allclose(fm._level_forecast(back.level, lags), fm._level_forecast(model.level, lags),
                               rtol=1e-6)  # normalisation parameters round-trip through JSON floats
    np.testing.assert_array_equal(fm._level_forecast(back.level, lags), _reference(back.level, lags))


def test_level_forecast_refuses_lags_of_the_wrong_length(trained: dict) -> None:
    model, lags = trained["model"], trained["lags"]
    with pytest.raises(ModelError, match="takes 7 lags"):
        fm._level_forecast(model.level, lags[:, 1:])


def test_level_forecast_keeps_origins_apart(trained: dict) -> None:
    # one call for many origins gives each origin what it gets alone (no mixing across rows)
    model, lags = trained["model"], trained["lags"]
    together = fm._level_forecast(model.level, lags)
    alone = np.vstack([fm._level_forecast(model.level, lags[i:i + 1]) for i in range(len(lags))])
    np.testing.assert_array_equal(together, alone)
