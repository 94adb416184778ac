"""The level network's forecast is NeuralProphet's own network called directly (``model._level_forecast``): it must
give what ``NeuralProphet.predict`` gives, on a fresh model and on one restored from its artifact. Tiny epochs:
equivalence, not accuracy."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.errors import ModelError
from shared.forecasting import model as fm
from shared.forecasting.evaluate import load_data, realised_temperature, with_weather
from tests.fixtures_forecast import ECO2MIX, grid_2022, tiny_model_config

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


def test_a_model_without_level_network_persists_the_last_block_and_round_trips() -> None:
    cfg = tiny_model_config(level_network=False, persistence_shrink=0.0)
    grid = grid_2022("2022-03-01", start="2022-01-03")
    model = fm.fit(grid[grid["ts"] < "2022-02-20"], cfg)
    files = fm.to_files(model)
    assert model.level is None and model.extra_levels == [] and "level.pt" not in files
    origins = pd.DatetimeIndex(["2022-02-22 11:00", "2022-02-25 11:00"], tz="UTC")
    fc = fm.predict(model, grid, origins, parts=True)
    back = fm.predict(fm.from_files(files), grid, origins, parts=True)
    np.testing.assert_allclose(back["yhat"], fc["yhat"], rtol=1e-6)
    # no level network: past the first block the forecast is the profile plus one level and the recent shape, so the
    # same time of day on consecutive later days differs only by the profile
    ts = pd.DatetimeIndex(fc["ts"].unique())
    prof = pd.Series(fm.profile_values(model, ts), index=ts).reindex(pd.DatetimeIndex(fc["ts"])).to_numpy()
    rest = (fc["yhat"].to_numpy() - prof).reshape(len(origins), -1)
    per_day = fm.steps_per_day(cfg.resolution_min)
    np.testing.assert_allclose(rest[:, 2 * per_day:3 * per_day], rest[:, 5 * per_day:6 * per_day], atol=1e-6)


def test_a_short_model_learns_its_persistence_weights_and_round_trips_them() -> None:
    cfg = tiny_model_config(level_network=False)
    grid = grid_2022("2022-03-20", start="2022-01-03")  # 11 weeks of real load: the short-series case
    model = fm.fit(grid[grid["ts"] < "2022-03-14"], cfg)
    assert len(model.persistence) == fm.BLOCKS_OUT
    # shrunk halfway toward 1: every weight lies in [0.5, 1]
    assert all(1 - cfg.persistence_shrink <= w <= 1 for w in model.persistence)
    back = fm.from_files(fm.to_files(model))
    assert back.persistence == model.persistence
    origins = pd.DatetimeIndex(["2022-03-15 11:00"], tz="UTC")
    np.testing.assert_allclose(fm.predict(back, grid, origins, parts=True)["yhat"],
                               fm.predict(model, grid, origins, parts=True)["yhat"], rtol=1e-6)


def test_without_a_level_network_the_last_deviation_reverts_by_the_weights() -> None:
    cfg = fm.ModelConfig(level_network=False, persistence_mean_days=4)
    lags = np.array([[0.0, 5.0, 1.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0, 3.0]])  # mean of the last 4: 3.0 and 1.5
    w = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    out = fm._level_output(None, lags, cfg, w)
    np.testing.assert_allclose(out[0], 3.0 + 1.0 * np.array(w))
    np.testing.assert_allclose(out[1], 1.5 + 1.5 * np.array(w))
    np.testing.assert_array_equal(fm._level_output(None, lags, cfg, []), np.repeat(lags[:, -1:], fm.BLOCKS_OUT, 1))


def test_persistence_weights_tell_a_random_walk_from_a_reverting_series() -> None:
    # synthetic daily levels (an edge-case unit test, not load data): a random walk keeps its deviations, an
    # AR(1) series around a constant with coefficient 0.5 loses them within days
    rng = np.random.default_rng(0)
    steps = rng.normal(size=2000)
    walk = np.cumsum(steps)
    ar = np.zeros(2000)
    for t in range(1, 2000):
        ar[t] = 0.5 * ar[t - 1] + steps[t]
    w_walk, w_ar = fm.persistence_weights(walk, 14), fm.persistence_weights(ar, 14)
    assert min(w_walk) > 0.85
    assert w_ar[0] < 0.6 and max(w_ar[3:]) < 0.15
    assert w_ar[0] > w_ar[1]


def test_persistence_weights_need_enough_pairs() -> None:
    assert fm.persistence_weights(np.arange(20.0), 14) == [1.0] * fm.BLOCKS_OUT  # 6 pairs at k = 1: too few
    flat = np.full(60, 2.0)
    assert fm.persistence_weights(flat, 14) == [1.0] * fm.BLOCKS_OUT  # no deviation to learn from


@pytest.mark.parametrize(("points", "epochs"), [(48 * 48, 134), (65_712, 10), (48_192, 10)])
def test_profile_epochs_give_a_short_series_its_minimum_steps(points: int, epochs: int) -> None:
    # 48 days of half-hours at batch 1024: 3 batches an epoch, raised to 400 steps; four years (~650 steps) and the
    # weather model's three (~480) keep their 10 epochs
    cfg = fm.ModelConfig()
    assert fm.profile_epochs(points, cfg) == epochs
    assert fm.profile_epochs(points, fm.ModelConfig(profile_min_steps=0)) == cfg.epochs


@pytest.mark.parametrize(("resolution", "phase", "weather", "step", "expected"),
                         [(15, 0.0, True, 30, 30), (5, 0.0, True, 30, 30), (30, 0.0, True, 30, 30),
                          (60, 30.0, True, 30, 60), (15, 0.0, True, 0, 15), (20, 0.0, True, 30, 20),
                          (15, 0.0, False, 30, 15), (15, 5.0, True, 30, 30), (15, 7.5, True, 30, 30)])
def test_a_weather_profile_trains_on_a_30_minute_grid_where_the_series_is_finer(
        resolution: int, phase: float, weather: bool, step: int, expected: int) -> None:
    # finer grids keep every step that lies on the 30-minute grid at the series' phase; a grid as coarse or coarser,
    # one that does not divide 30 minutes, weather_profile_step_min = 0 or the weather-free model keeps all
    cfg = fm.ModelConfig(resolution_min=resolution, grid_phase_min=phase, weather=weather,
                         weather_profile_step_min=step)
    ts = pd.date_range("2023-03-01", periods=48 * 60 // resolution, freq=f"{resolution}min", tz="UTC")
    ts += pd.Timedelta(minutes=phase)
    kept = ts[fm.profile_sample(ts, cfg)]
    assert fm.profile_train_step(cfg) == expected
    assert len(kept) == 48 * 60 // expected and (kept[1:] - kept[:-1] == pd.Timedelta(minutes=expected)).all()
    assert kept[0] == ts[0]


def test_a_15_minute_weather_model_fits_its_profile_on_the_30_minute_instants_and_the_rest_on_every_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fine, _ = load_data([ECO2MIX / "eco2mix_national_2022.csv.gz"], 15)
    fine = fine[(fine["ts"] >= "2022-01-15") & (fine["ts"] < "2022-02-15")].reset_index(drop=True)
    fine = with_weather(fine, realised_temperature(fine["ts"]), smoothed_input=True)
    coarse = grid_2022("2022-02-15", start="2022-01-15")
    seen: list[tuple[pd.DatetimeIndex, int, int]] = []
    real_fit = fm._fit_profile

    def fit_profile(cfg: fm.ModelConfig, events: list[str], frame: pd.DataFrame, *rest: Any) -> Any:
        seen.append((pd.DatetimeIndex(frame["ds"]), cfg.batch_size, cfg.epochs))
        return real_fit(cfg, events, frame, *rest)

    monkeypatch.setattr(fm, "_fit_profile", fit_profile)
    model = fm.fit(fine, replace(TINY, resolution_min=15, weather=True, weather_smoothed_input=True,
                                 weather_level_lags=5, weather_level_seeds=1, weather_profile_seeds=1,
                                 profile_min_steps=480))
    half_hours = pd.DatetimeIndex(coarse.dropna(subset=["value"])["ts"])
    assert len(seen) == 1  # profile_frame's ds: local standard time, naive
    ds, batch, epochs = seen[0]
    assert ds.equals((half_hours + fm.std_offset(TINY.timezone)).tz_localize(None))
    assert batch == TINY.batch_size // 2  # a batch spans as much time as on every step
    # the minimum of optimizer steps counted on the rows the profile trains on
    batches = -(-len(ds) // batch)
    assert (epochs - 1) * batches < 480 <= epochs * batches
    assert model.meta["profile_train_points"] == len(ds)
    assert model.meta["train_points"] == int(fine["value"].notna().sum())  # the level network's blocks: all steps


def test_an_artifact_saved_by_a_newer_version_is_a_model_error(trained: dict) -> None:
    # a rollback: the model file carries a setting this code lacks. ModelConfig raised TypeError, which neither the
    # registry nor the forecast stage caught, so no forecast at all (not even the fallback) was issued
    import json

    files = fm.to_files(trained["model"])
    doc = json.loads(files["model.json"])
    doc["config"]["a_setting_from_the_future"] = 1
    with pytest.raises(ModelError, match="newer PowerSense.*a_setting_from_the_future"):
        fm.from_files({**files, "model.json": json.dumps(doc).encode()})
