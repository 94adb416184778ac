"""The weather model (ModelConfig.weather) on real data: round-trip, no weather → ModelError, no look-ahead,
and the weather-free model untouched by weather inputs. Tiny epochs: behaviour, not accuracy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.errors import ModelError
from shared.forecasting import model as fm
from shared.forecasting.evaluate import (
    perfect_provider,
    realised_temperature,
    with_weather,
)
from shared.settings import Settings
from shared.weather.features import WEATHER_COLUMNS, features_for_origins
from shared.weather.forecast_error import simulated_provider, t2m_error_sd
from tests.fixtures_forecast import fast_model_settings, grid_2022, tiny_model_config

TINY = tiny_model_config(level_seeds=2, weather_level_seeds=2)
STEP = pd.Timedelta(minutes=30)
HORIZON = pd.Timedelta(days=8)


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    grid = grid_2022("2022-04-20", start="2022-01-01")
    real = realised_temperature(grid["ts"])
    gw = with_weather(grid, real, smoothed_input=True)
    cfg = replace(TINY, weather=True, weather_smoothed_input=True, weather_level_lags=5)
    model = fm.fit(gw[gw["ts"] < "2022-04-01"], cfg)
    origins = pd.DatetimeIndex(["2022-04-05 10:00", "2022-04-06 10:00"], tz="UTC")
    wx = features_for_origins(real, perfect_provider(real, HORIZON, STEP)(origins), origins, 30, True)
    return {"grid": grid, "real": real, "gw": gw, "model": model, "origins": origins, "wx": wx}


def test_weather_model_round_trips_through_its_artifact(data: dict) -> None:
    model, gw, origins, wx = data["model"], data["gw"], data["origins"], data["wx"]
    assert model.config.weather and model.profile.powersense_weather_regs
    fc = fm.predict(model, gw, origins, weather=wx)
    assert len(fc) == 2 * int(HORIZON / STEP) and fc["yhat"].notna().all()
    back = fm.from_files(fm.to_files(model))
    assert back.config == model.config
    # the least-squares slope correction travels with the artifact (prediction below would differ without it)
    assert np.abs(model.profile.powersense_weather_correction).max() > 0
    np.testing.assert_array_equal(back.profile.powersense_weather_correction,
                                  model.profile.powersense_weather_correction)
    fc2 = fm.predict(back, gw, origins, weather=wx)
    np.testing.assert_allclose(fc2["yhat"], fc["yhat"], rtol=1e-6)


def test_weather_model_profile_is_the_mean_of_its_seeds(data: dict) -> None:
    # weather_profile_seeds networks (the weather-free model: profile_seeds), each with its own slope correction
    model = data["model"]
    nets = [model.profile, *model.extra_profiles]
    assert len(nets) == model.config.weather_profile_seeds == fm.profile_seeds_of(model.config) > 1
    # and weather_level_seeds level networks (not level_seeds, the weather-free model's)
    assert 1 + len(model.extra_levels) == model.config.weather_level_seeds == fm.level_seeds_of(model.config)
    corrections = [n.powersense_weather_correction for n in nets]
    assert all(np.abs(c).max() > 0 for c in corrections) and not np.allclose(corrections[0], corrections[1])
    back = fm.from_files(fm.to_files(model))
    for a, b in zip([back.profile, *back.extra_profiles], nets, strict=True):
        np.testing.assert_array_equal(a.powersense_weather_correction, b.powersense_weather_correction)


def test_an_artifact_from_before_the_block_shape_setting_predicts_with_step_blocks(data: dict) -> None:
    """Artifacts saved before ``weather_block_shape`` existed were trained with step blocks: loading one must not
    switch it to the new default."""
    files = fm.to_files(data["model"])
    doc = json.loads(files["model.json"])
    assert doc["config"].pop("weather_block_shape") == "hat"  # the default now
    old = fm.from_files({**files, "model.json": json.dumps(doc).encode()})
    assert old.config.weather_block_shape == "step"


def test_the_weather_model_reads_its_own_number_of_level_lags(data: dict) -> None:
    model = data["model"]
    assert fm.level_lags_of(model.config) == 5 and model.config.level_lags == 7
    assert model.level.n_lags == 5
    assert fm.level_lags_of(replace(model.config, weather=False)) == 7  # the weather-free model: level_lags


def test_an_artifact_from_before_weather_level_lags_loads_with_its_level_lags(data: dict) -> None:
    """Before ``weather_level_lags`` existed the weather model's level network read ``level_lags`` days: such an
    artifact (here: this model's weights with the old config keys) must rebuild networks of that size and
    forecast exactly as before."""
    model, gw, origins, wx = data["model"], data["gw"], data["origins"], data["wx"]
    files = fm.to_files(model)
    doc = json.loads(files["model.json"])
    doc["config"].pop("weather_level_lags")
    doc["config"]["level_lags"] = 5  # what an old artifact with 5-day level networks stored
    old = fm.from_files({**files, "model.json": json.dumps(doc).encode()})
    assert old.config.weather_level_lags == 5
    np.testing.assert_allclose(fm.predict(old, gw, origins, weather=wx)["yhat"],
                               fm.predict(model, gw, origins, weather=wx)["yhat"], rtol=1e-6)


def test_the_damping_slopes_travel_with_the_artifact_and_move_only_the_forecast_after_the_origin(data: dict) -> None:
    model, gw, origins, wx = data["model"], data["gw"], data["origins"], data["wx"]
    damped = replace(model, weather_damping={str(k): 0.5 for k in range(1, 9)}, weather_normal_offset=0.8,
                     weather_normal_harmonics=[13.5, -7.8, -3.1, 0.0, 0.9])
    back = fm.from_files(fm.to_files(damped))
    assert back.weather_damping == damped.weather_damping and back.weather_normal_offset == 0.8
    assert back.weather_normal_harmonics == [13.5, -7.8, -3.1, 0.0, 0.9]
    plain, shrunk = fm.predict(model, gw, origins, weather=wx), fm.predict(back, gw, origins, weather=wx)
    first = (shrunk["ts"] == shrunk["origin"]).to_numpy()
    np.testing.assert_allclose(shrunk["yhat"].to_numpy()[first], plain["yhat"].to_numpy()[first], rtol=1e-9)
    assert np.abs(shrunk["yhat"].to_numpy() - plain["yhat"].to_numpy()).max() > 1.0  # MW


def test_each_compared_source_is_damped_by_its_own_track_record(data: dict) -> None:
    """make evaluate --weather: (a)'s perfect source earns slopes of 1, a (b) source with errors less than 1."""
    from shared.forecasting.evaluate import source_dampings

    model = replace(data["model"], weather_damping={str(k): 0.5 for k in range(1, 9)})
    train = data["gw"][data["gw"]["ts"] < "2022-04-01"]
    providers = {"a": perfect_provider(data["real"], HORIZON, STEP),
                 "b": simulated_provider(data["real"], HORIZON, STEP, seed=1, smoothed_input=True, scale=1.5)}
    damping = source_dampings(model, train, pd.Timestamp("2022-01-01T11:00Z"), pd.Timestamp("2022-03-31T11:00Z"),
                              providers)
    assert set(damping["a"].values()) == {1.0}
    assert damping["b"]["7"] < 1.0
    assert source_dampings(replace(model, weather_damping={}), train, pd.Timestamp("2022-01-01T11:00Z"),
                           pd.Timestamp("2022-03-31T11:00Z"), providers) == {}


def test_an_artifact_from_before_the_damping_loads_without_it(data: dict) -> None:
    model, gw, origins, wx = data["model"], data["gw"], data["origins"], data["wx"]
    files = fm.to_files(replace(model, weather_damping={str(k): 0.5 for k in range(1, 9)}))
    doc = json.loads(files["model.json"])
    doc.pop("weather_damping")
    doc.pop("weather_normal_offset")
    doc["config"].pop("weather_damping")
    old = fm.from_files({**files, "model.json": json.dumps(doc).encode()})
    assert old.weather_damping == {} and old.config.weather_damping is False and old.weather_normal_offset == 0.0
    np.testing.assert_allclose(fm.predict(old, gw, origins, weather=wx)["yhat"],
                               fm.predict(model, gw, origins, weather=wx)["yhat"], rtol=1e-6)


def test_weather_model_without_weather_raises(data: dict) -> None:
    model, gw, grid, origins, wx = data["model"], data["gw"], data["grid"], data["origins"], data["wx"]
    with pytest.raises(ModelError):
        fm.predict(model, gw, origins)  # no weather at all
    with pytest.raises(ModelError):
        fm.predict(model, grid, origins, weather=wx)  # history without the realised weather
    short = wx[wx["ts"] < wx["origin"] + pd.Timedelta(days=3)]  # the feed stops after 3 days
    with pytest.raises(ModelError, match="no weather"):
        fm.predict(model, gw, origins, weather=short)
    holed = wx.copy()
    holed.loc[holed.index[10], "hdd_smooth"] = np.nan
    with pytest.raises(ModelError):
        fm.predict(model, gw, origins, weather=holed)


def _ten_origins_without(data: dict, hole_start: str, hours: int) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    """Ten daily origins' weather features from the real temperature, less ``hours`` of targets from ``hole_start``."""
    real = data["real"]
    origins = pd.date_range("2022-04-01 10:00", periods=10, freq="D", tz="UTC")
    wx = features_for_origins(real, perfect_provider(real, HORIZON, STEP)(origins), origins, 30, True)
    start = pd.Timestamp(hole_start, tz="UTC")
    return origins, wx[(wx["ts"] < start) | (wx["ts"] >= start + pd.Timedelta(hours=hours))]


def test_a_weather_model_forecasts_from_the_origins_whose_every_target_has_weather(data: dict) -> None:
    origins, holed = _ten_origins_without(data, "2022-04-12", 24)
    unknown = fm.weather_unknown_targets(holed, origins, 30)
    # 8 days of targets from 10:00: the origins up to 3 April end before the lost day, the later ones meet it
    assert list(pd.DatetimeIndex(unknown["origin"].unique())) == list(origins[3:])
    assert unknown["ts"].min() == pd.Timestamp("2022-04-12", tz="UTC")
    assert unknown["ts"].max() == pd.Timestamp("2022-04-12 23:30", tz="UTC")
    assert fm.predict(data["model"], data["gw"], origins[:3], weather=holed)["yhat"].notna().all()
    with pytest.raises(ModelError, match="no weather"):
        fm.predict(data["model"], data["gw"], origins[3:4], weather=holed)


def test_a_holdout_is_scored_without_the_origins_a_hole_in_the_temperature_meets(data: dict) -> None:
    from shared.forecasting.service import weather_scored_origins

    origins, holed = _ten_origins_without(data, "2022-04-17 06:00", 2)  # two hours lost on 17 April
    kept, left_out = weather_scored_origins(holed, origins, data["model"].config)
    assert list(kept) == list(origins[:8])
    assert left_out == {"count": 2, "of": 10, "first": "2022-04-09T10:00:00+00:00",
                        "last": "2022-04-10T10:00:00+00:00"}
    assert weather_scored_origins(data["wx"], data["origins"], data["model"].config) == (data["origins"], None)


def test_a_holdout_mostly_without_temperature_is_an_error_that_names_the_backfill(data: dict) -> None:
    origins, holed = _ten_origins_without(data, "2022-04-12", 24)  # 7 of 10 origins meet the lost day
    from shared.forecasting.service import weather_scored_origins

    with pytest.raises(ModelError, match=r"7 of the 10 holdout origins .*python -m shared weather-backfill "
                                         r"--archive --start 2022-04-12 --end 2022-04-13$"):
        weather_scored_origins(holed, origins, data["model"].config)


@pytest.mark.parametrize(("hole_start", "left_out"), [("2022-04-14 06:00", 5), ("2022-04-13 06:00", 6)])
def test_a_holdout_is_scored_while_at_least_half_of_its_origins_have_weather(data: dict, hole_start: str,
                                                                            left_out: int) -> None:
    from shared.forecasting.service import WeatherHoldoutError, weather_scored_origins

    origins, holed = _ten_origins_without(data, hole_start, 2)
    if left_out * 2 > len(origins):
        with pytest.raises(WeatherHoldoutError, match=f"{left_out} of the 10"):
            weather_scored_origins(holed, origins, data["model"].config)
    else:
        assert weather_scored_origins(holed, origins, data["model"].config)[1]["count"] == left_out  # type: ignore[index]


def test_the_current_model_is_scored_on_the_origins_the_hole_leaves(data: dict) -> None:
    # the new model is scored on the origins with weather; the current one, compared with it, on the same: with the
    # hole it raised ModelError, and the new model was promoted against seasonal naive alone
    from shared.forecasting import service

    real = data["real"]
    hole = (real["ts"] >= "2022-04-18") & (real["ts"] < "2022-04-18 09:00")
    gw = with_weather(data["grid"], real[~hole], smoothed_input=True)
    h0, h1 = pd.Timestamp("2022-04-01", tz="UTC"), pd.Timestamp("2022-04-20", tz="UTC")
    mape, note = service.current_holdout_mape(data["model"], gw, h0, h1)
    cfg = data["model"].config
    origins = service.holdout_origins(h0, h1, tz=cfg.timezone, cfg=cfg)
    wx = service.holdout_weather_features(gw, origins, cfg, None)[0]
    kept, left_out = service.weather_scored_origins(wx, origins, cfg)
    assert left_out is not None and 0 < left_out["count"] < len(origins) and note is None
    issued = service.issue(data["model"], gw, kept, weather=wx)
    assert mape == pytest.approx(service.holdout_metrics(issued, gw, h1)["mape"])


def test_forecast_uses_the_weather_known_at_the_origin_only(data: dict) -> None:
    model, gw, real, origins, wx = data["model"], data["gw"], data["real"], data["origins"], data["wx"]
    base = fm.predict(model, gw, origins, weather=wx)
    # realised weather (and load) at or after an origin changes — what happened later: its forecast does not move
    o = origins[:1]
    later = gw.copy()
    after = later["ts"] >= o[0]
    later.loc[after, WEATHER_COLUMNS] = later.loc[after, WEATHER_COLUMNS] + 7.0
    later.loc[after, "value"] = later.loc[after, "value"] * 1.2
    one = wx[wx["origin"] == o[0]]
    np.testing.assert_array_equal(fm.predict(model, later, o, weather=one)["yhat"],
                                  base.loc[base["origin"] == o[0], "yhat"])
    # a colder forecast changes the forecast load — the weather forecast is used at the targets (its sign is the
    # model's: a 2-epoch model has not learnt the heating slope)
    cold = features_for_origins(real, perfect_provider(real.assign(temp_degc=real["temp_degc"] - 5), HORIZON,
                                                       STEP)(origins), origins, 30, True)
    cold_fc = fm.predict(model, gw, origins, weather=cold)
    assert (cold_fc["yhat"] - base["yhat"]).abs().min() > 0


def test_weather_free_model_ignores_weather_inputs(data: dict) -> None:
    grid, gw, origins, wx = data["grid"], data["gw"], data["origins"], data["wx"]
    plain = fm.fit(grid[grid["ts"] < "2022-04-01"], TINY)
    fc = fm.predict(plain, grid, origins)
    pd.testing.assert_frame_equal(fm.predict(plain, gw, origins, weather=wx), fc)
    assert not plain.config.weather and plain.profile.powersense_weather_regs == []


def test_weather_model_skips_training_rows_without_weather(data: dict) -> None:
    gw = data["gw"]
    partial = gw[gw["ts"] < "2022-04-01"].copy()
    partial.loc[partial["ts"] < "2022-02-01", WEATHER_COLUMNS] = np.nan
    m = fm.fit(partial, replace(TINY, weather=True, weather_smoothed_input=True, weather_level_seeds=1))
    assert m.meta["train_start"] >= pd.Timestamp("2022-02-01", tz="UTC").isoformat()
    with pytest.raises(ModelError):
        fm.fit(data["grid"][data["grid"]["ts"] < "2022-04-01"], replace(TINY, weather=True))


def test_simulated_provider_is_seeded_and_grows_with_lead(data: dict) -> None:
    real, origins = data["real"], data["origins"]
    p1 = simulated_provider(real, HORIZON, STEP, seed=1, smoothed_input=False)
    a, b = p1(origins), p1(origins)
    pd.testing.assert_frame_equal(a, b)  # same seed, same origin → same forecast run
    perfect = perfect_provider(real, HORIZON, STEP)(origins)
    err = a["temp_degc"] - perfect["temp_degc"]
    assert not np.allclose(err, 0)
    assert not np.allclose(simulated_provider(real, HORIZON, STEP, 2, False)(origins)["temp_degc"], a["temp_degc"])
    sd = t2m_error_sd(np.array([1.0, 3.0, 6.0, 7.0]))
    assert sd[1] == pytest.approx(1.6) and sd[2] == pytest.approx(2.3) and np.all(np.diff(sd) > 0)


@pytest.fixture
def fc_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    yield from fast_model_settings(monkeypatch, tmp_path)


def test_train_and_calibrate_weather_model_on_a_grid_ending_with_the_data(data: dict, fc_settings: Settings) -> None:
    """Production's training grid ends at the newest realised step: the holdout's last origins reach past it."""
    from shared.forecasting import service

    gw = data["gw"]
    train = gw[gw["ts"] < "2022-04-01"]
    cfg = replace(service.model_config(fc_settings), weather=True, weather_smoothed_input=True, weather_level_seeds=1)
    model, hold = service.train_and_calibrate(train, fc_settings, cfg)
    assert model.config.weather
    assert hold["metrics"]["mape"] is not None and "perfect" in hold["metrics"]["holdout_weather"]
    p = perfect_provider(data["real"], HORIZON, STEP)
    _, hold_p = service.train_and_calibrate(train, fc_settings, cfg, weather=p)
    assert hold_p["metrics"]["holdout_weather"].startswith("weather provider")


def test_training_learns_the_damping_from_the_forecasts_its_holdout_is_scored_with(
        data: dict, fc_settings: Settings) -> None:
    """Slopes below 1 at long leads for a forecast with errors, 1 for a perfect one; none when switched off."""
    from shared.forecasting import service

    train = data["gw"][data["gw"]["ts"] < "2022-04-01"]
    cfg = replace(service.model_config(fc_settings), weather=True, weather_smoothed_input=True, weather_level_seeds=1)
    noisy = simulated_provider(data["real"], HORIZON, STEP, seed=0, smoothed_input=True, scale=1.5)
    model, hold = service.train_and_calibrate(train, fc_settings, cfg, weather=noisy)
    assert model.weather_damping["7"] < 1.0 and model.meta["holdout_metrics"] == hold["metrics"]
    assert model.meta["weather_damping"] == model.weather_damping
    from shared.weather.damping import normal_offset

    assert model.weather_normal_offset == normal_offset(train) != 0.0  # the training window's mean anomaly
    perfect, _ = service.train_and_calibrate(train, fc_settings, cfg,
                                             weather=perfect_provider(data["real"], HORIZON, STEP))
    assert perfect.weather_damping and set(perfect.weather_damping.values()) == {1.0}
    off, _ = service.train_and_calibrate(train, fc_settings, replace(cfg, weather_damping=False), weather=noisy)
    assert off.weather_damping == {}
    # another series' own normal needs a year of its temperature: three months give none, and no damping
    own, _ = service.train_and_calibrate(train, fc_settings, replace(cfg, weather_normal="own"), weather=noisy)
    assert own.weather_damping == {} and own.weather_normal_harmonics == []


def test_the_weather_model_trains_on_its_own_window_the_weather_free_model_on_the_whole_grid(
        data: dict, fc_settings: Settings) -> None:
    """``forecast_weather_train_days`` bounds the weather model's window (its profile fits scale with it); the
    weather-free model keeps every row it is given (``forecast_train_days`` chose them)."""
    from shared.forecasting import service

    train = data["gw"][data["gw"]["ts"] < "2022-04-01"]
    settings = fc_settings.model_copy(update={"forecast_weather_train_days": 60})
    base = replace(service.model_config(settings), weather_smoothed_input=True, weather_level_seeds=1, level_seeds=1)
    weather, _ = service.train_and_calibrate(train, settings, replace(base, weather=True))
    free, _ = service.train_and_calibrate(train, settings, base)
    last = train["ts"].max()
    # the window minus its holdout: trained from 60 days before the newest row (not 1 January)
    assert pd.Timestamp(weather.meta["train_start"]) == last - pd.Timedelta(days=60) + STEP
    assert pd.Timestamp(free.meta["train_start"]) == train["ts"].min()


def _confounded(slope_gap: float) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Synthetic edge case (two winters, 30-min grid, a 3-day gap): a residual that is ``slope_gap`` × heating
    degrees plus a −5 GW level drop from the second autumn on — a level change confounded with the weather, as the
    2022–23 sobriety drop was — plus noise."""
    rng = np.random.default_rng(7)
    ts = pd.date_range("2021-10-01", "2023-03-31", freq="30min", tz="UTC")
    ts = ts[(ts < "2022-01-10") | (ts >= "2022-01-13")]
    day = (ts - ts[0]) / pd.Timedelta(days=1)
    seasonal = 8 + 7 * np.cos(2 * np.pi * (day.to_numpy() - 100) / 365.25)
    weather = pd.Series(rng.normal(0, 3, len(day.unique()) + 600)).rolling(3, min_periods=1).mean().to_numpy()
    hdd = np.clip(seasonal + weather[day.to_numpy().astype(int)], 0, None)
    level = np.where(ts >= pd.Timestamp("2022-10-01", tz="UTC"), -5000.0, 0.0)
    resid = slope_gap * hdd + level + rng.normal(0, 300, len(ts))
    return ts, resid, hdd[:, None]


def test_weather_slope_correction_reads_the_short_term_response_not_a_confounded_level() -> None:
    ts, resid, wx = _confounded(400.0)
    corr = fm.weather_slope_correction(ts, resid, wx, window=7 * 48)
    assert corr[0] == pytest.approx(400.0, rel=0.1)
    # plain least squares over the whole window takes the level drop for weather
    coef = np.linalg.lstsq(np.column_stack([wx[:, 0], np.ones(len(wx))]), resid, rcond=None)[0][0]
    assert abs(coef - 400.0) > 0.3 * 400.0


def test_weather_slope_correction_gives_zero_to_a_regressor_that_never_varies() -> None:
    ts, resid, wx = _confounded(400.0)
    corr = fm.weather_slope_correction(ts, resid, np.column_stack([wx[:, 0], np.zeros(len(wx))]), window=7 * 48)
    assert corr[1] == 0.0 and corr[0] == pytest.approx(400.0, rel=0.1)


@pytest.mark.parametrize("shape", ["step", "hat"])
def test_weather_regressors_share_each_degree_among_the_blocks(shape: str) -> None:
    """Every instant's heating degrees are split among the blocks without loss (weights sum to 1), whatever the
    block shape; "hat" peaks at a block's centre and is shared half-and-half at its edges (also across midnight)."""
    cfg = fm.ModelConfig(weather=True, weather_block_shape=shape)
    ts = pd.date_range("2022-01-10 23:00", periods=48, freq="30min", tz="UTC")  # 00:00 … 23:30 Paris winter time
    wx = pd.DataFrame({"hdd_smooth": np.full(48, 3.0), "cdd_smooth": np.zeros(48)})
    r = fm.weather_regressors(ts, wx, cfg)[:, : cfg.weather_blocks]
    np.testing.assert_allclose(r.sum(axis=1), 3.0)
    if shape == "hat":
        assert r[4].tolist() == [3.0, 0, 0, 0, 0, 0]  # 02:00, the centre of block 0 (00:00–04:00)
        assert r[0].tolist() == [1.5, 0, 0, 0, 0, 1.5]  # midnight: between block 5's centre and block 0's
    else:
        assert r[0].tolist() == [3.0, 0, 0, 0, 0, 0] and r[8].tolist() == [0, 3.0, 0, 0, 0, 0]


def test_an_unknown_block_shape_is_refused() -> None:
    cfg = fm.ModelConfig(weather=True, weather_block_shape="triangle")
    ts = pd.date_range("2022-01-10", periods=2, freq="30min", tz="UTC")
    with pytest.raises(ModelError, match="weather_block_shape"):
        fm.weather_regressors(ts, pd.DataFrame({"hdd_smooth": [1.0, 1.0], "cdd_smooth": [0.0, 0.0]}), cfg)
