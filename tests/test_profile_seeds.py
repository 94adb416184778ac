"""The profile is the mean of ``profile_seeds`` (weather model: ``weather_profile_seeds``) networks trained with
different seeds (``model.profile_values``): what each network and the ensemble give, and that the artifact keeps
every network. Tiny epochs: the mechanics, not accuracy (real 2022 load)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.forecasting import model as fm
from tests.fixtures_forecast import grid_2022, tiny_model_config

TINY = tiny_model_config()


@pytest.fixture(scope="module")
def grid() -> pd.DataFrame:
    return grid_2022("2022-04-01", start="2022-01-01")


@pytest.fixture(scope="module")
def models(grid: pd.DataFrame) -> dict[int, fm.LoadModel]:
    return {n: fm.fit(grid, fm.replace(TINY, profile_seeds=n)) for n in (1, 3)}


def _ts(grid: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(grid["ts"].iloc[::7])


def test_each_profile_seed_trains_its_own_network(models: dict, grid: pd.DataFrame) -> None:
    three = models[3]
    assert len(three.extra_profiles) == 2
    vals = [fm._profile_predict(p, _ts(grid)) for p in [three.profile, *three.extra_profiles]]
    assert all(np.isfinite(v).all() for v in vals)
    # different seeds end in different networks
    assert np.abs(vals[0] - vals[1]).max() > 1.0 and np.abs(vals[1] - vals[2]).max() > 1.0


def test_the_profile_is_the_mean_of_its_networks(models: dict, grid: pd.DataFrame) -> None:
    three = models[3]
    vals = [fm._profile_predict(p, _ts(grid)) for p in [three.profile, *three.extra_profiles]]
    np.testing.assert_allclose(fm.profile_values(three, _ts(grid)), np.mean(vals, axis=0))


def test_the_first_profile_seed_is_the_single_profile_model(models: dict, grid: pd.DataFrame) -> None:
    # the first network is seeded as a one-profile model's: an ensemble adds networks, it does not change the first
    np.testing.assert_array_equal(fm._profile_predict(models[3].profile, _ts(grid)),
                                  fm._profile_predict(models[1].profile, _ts(grid)))
    assert models[1].extra_profiles == []


def test_an_artifact_keeps_every_profile_network(models: dict, grid: pd.DataFrame) -> None:
    three = models[3]
    files = fm.to_files(three)
    assert {"profile.pt", "profile_1.pt", "profile_2.pt"} <= set(files)
    back = fm.from_files(files)
    assert len(back.extra_profiles) == 2 and back.config.profile_seeds == 3
    np.testing.assert_allclose(fm.profile_values(back, _ts(grid)), fm.profile_values(three, _ts(grid)), rtol=1e-6)
    hist = grid[grid["ts"] < "2022-03-20"]
    origin = [pd.Timestamp("2022-03-20T11:00Z")]
    np.testing.assert_allclose(fm.predict(back, hist, origin)["yhat"], fm.predict(three, hist, origin)["yhat"],
                               rtol=1e-6)


def test_an_artifact_without_profile_seeds_restores_one_profile(models: dict) -> None:
    # artifacts saved before the setting existed: no profile_seeds in the config, no extra_profiles
    import json

    files = fm.to_files(models[1])
    doc = json.loads(files["model.json"])
    del doc["config"]["profile_seeds"]
    del doc["config"]["weather_profile_seeds"]
    del doc["extra_profiles"]
    files["model.json"] = json.dumps(doc).encode()
    back = fm.from_files(files)
    assert back.config.profile_seeds == back.config.weather_profile_seeds == 1 and back.extra_profiles == []


def test_a_weather_free_model_uses_the_weather_free_seed_counts(models: dict) -> None:
    # level_seeds / profile_seeds, not the weather model's weather_level_seeds / weather_profile_seeds
    cfg = models[3].config
    assert cfg.weather_level_seeds != cfg.level_seeds and cfg.weather_profile_seeds != cfg.profile_seeds
    assert 1 + len(models[3].extra_levels) == cfg.level_seeds == fm.level_seeds_of(cfg)
    assert 1 + len(models[3].extra_profiles) == cfg.profile_seeds == fm.profile_seeds_of(cfg)


def test_fitted_profiles_do_not_keep_their_training_data(models: dict) -> None:
    # each fitted NeuralProphet held its training data loader (~0.5 GiB on a 3-year window): five profiles took the
    # forecast stage past 3 GiB. The networks keep only what prediction needs
    for p in [models[3].profile, *models[3].extra_profiles]:
        assert getattr(p.model, "train_loader", None) is None
        assert p.model._trainer is None  # the trainer that fitted it holds its loops and data loader
