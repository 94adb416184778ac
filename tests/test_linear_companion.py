"""The weather model's linear companion (shared/forecasting/linear.py): fitted on the shipped 2022 load and Enedis
temperature, mixed into the weather model's forecast with its weight, kept in the artifact; old artifacts load
without it. The level-shift test uses a tiny synthetic residual (an edge case of the arithmetic)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.forecasting import combine, linear
from shared.forecasting import model as fm
from shared.forecasting.evaluate import perfect_provider, realised_temperature, with_weather
from shared.settings import Settings
from shared.weather.features import features_for_origins
from tests.fixtures_forecast import fast_model_settings, grid_2022, tiny_model_config

STEP = pd.Timedelta(minutes=30)
HORIZON = pd.Timedelta(days=8)
EVENTS = fm.events_for("FR")


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    grid = grid_2022("2022-04-20", start="2022-01-01")
    real = realised_temperature(grid["ts"])
    gw = with_weather(grid, real, smoothed_input=True)
    cfg = replace(tiny_model_config(level_seeds=2, weather_level_seeds=2), weather=True, weather_smoothed_input=True,
                  weather_level_lags=5, weather_profile_seeds=1)
    model = fm.fit(gw[gw["ts"] < "2022-04-01"], cfg)
    origins = pd.DatetimeIndex(["2022-04-05 10:00", "2022-04-06 10:00"], tz="UTC")
    wx = features_for_origins(real, perfect_provider(real, HORIZON, STEP)(origins), origins, 30, True)
    return {"gw": gw, "model": model, "origins": origins, "wx": wx}


def _fit(gw: pd.DataFrame) -> dict | None:
    return linear.fit_linear(pd.DatetimeIndex(gw["ts"]), gw["value"].to_numpy(), gw["hdd_smooth"].to_numpy(),
                             gw["cdd_smooth"].to_numpy(), EVENTS, 30, "Europe/Paris", "FR")


def test_the_regression_learns_a_heating_response_per_time_of_day(data: dict) -> None:
    """Winter 2022: load rises with heating degrees at every time of day, more when buildings are heated up in the
    morning (07:00–09:00 local: ~2.3 GW/°C) than in the afternoon (~1.7), and the fit explains the training load to
    a few percent."""
    gw = data["gw"][data["gw"]["ts"] < "2022-04-01"]
    lin = _fit(gw)
    assert lin is not None and len(lin["coef"]) == 48
    k = lin["features"].index("hdd")
    k2 = lin["features"].index("hdd2")
    # the slope at 8 heating degrees (≈ 7 °C smoothed), MW per °C, by local half-hour
    slope = np.array([c[k] + 2 * 8 * c[k2] for c in lin["coef"]])
    assert (slope > 500).all() and slope.max() < 5000
    assert slope[14:19].mean() > 1.2 * slope[30:35].mean()  # 07:00–09:00 local against 15:00–17:00
    fitted = linear.predict_linear(lin, pd.DatetimeIndex(gw["ts"]), gw["hdd_smooth"].to_numpy(),
                                   gw["cdd_smooth"].to_numpy(), "Europe/Paris", "FR")
    ok = np.isfinite(fitted) & gw["value"].notna().to_numpy()
    assert np.mean(np.abs(fitted[ok] - gw["value"].to_numpy()[ok]) / gw["value"].to_numpy()[ok]) < 0.04


def test_days_off_are_the_profiles_day_types() -> None:
    """One definition of a day off: the regression's Saturday and day-off heating degrees follow the profile's day
    types — a Saturday public holiday (11 Nov 2023) and a weekday of the 24 Dec – 1 Jan break (27 Dec 2023) are
    days off like a Sunday; a bridge day (a Friday after Ascension, 19 May 2023) and a plain Saturday are not."""
    days = {"2023-11-11": "off", "2023-12-27": "off", "2023-12-24": "off", "2023-05-19": "work", "2023-11-18": "sat",
            "2023-11-15": "work"}
    ts = pd.DatetimeIndex([pd.Timestamp(f"{d} 12:00", tz="Europe/Paris") for d in days]).tz_convert("UTC")
    pf = fm.profile_frame(ts)
    profile_day = [next(c.split("_")[1] for c in fm.CONDITIONS if pf[c].iloc[i] == 1) for i in range(len(ts))]
    assert profile_day == list(days.values())
    # split names (Friday is "work" in the profile's conditions above)
    assert list(fm.calendar_columns(ts, EVENTS)[0]) == ["off", "off", "off", "fri", "sat", "work"]
    x, _, names = linear._features(ts, np.full(len(ts), 10.0), np.zeros(len(ts)), EVENTS, "Europe/Paris", "FR")
    hdd_off, hdd_sat = x[:, names.index("hdd_off")], x[:, names.index("hdd_sat")]
    assert hdd_off.tolist() == [10.0, 10.0, 10.0, 0.0, 0.0, 0.0]
    assert hdd_sat.tolist() == [0.0, 0.0, 0.0, 0.0, 10.0, 0.0]


def test_too_short_a_window_fits_no_linear_part(data: dict) -> None:
    """A slot needs MIN_ROWS_PER_FEATURE rows per coefficient (here ~24 features: 48 days); 30 days are too few."""
    gw = data["gw"]
    assert _fit(gw[(gw["ts"] >= "2022-02-01") & (gw["ts"] < "2022-03-03")]) is None


def test_level_shift_is_the_mean_residual_of_the_window_before_each_origin() -> None:
    hts = pd.date_range("2022-01-01", periods=6 * 24, freq="h", tz="UTC")
    resid = np.where(np.arange(len(hts)) < 3 * 24, 100.0, 400.0)
    resid[-1] = np.nan  # unknown values do not count
    origins = pd.DatetimeIndex(["2022-01-01 00:00", "2022-01-04 00:00", "2022-01-07 00:00"], tz="UTC")
    np.testing.assert_allclose(linear.level_shift(hts, resid, origins, 3.0), [0.0, 100.0, 400.0])


def test_the_weather_forecast_mixes_networks_and_regression_with_its_weight(data: dict) -> None:
    model, gw, origins, wx = data["model"], data["gw"], data["origins"], data["wx"]
    assert model.linear is not None and model.config.weather_linear_weight == 0.3
    mixed = fm.predict(model, gw, origins, weather=wx)
    nets = fm.predict(replace(model, linear=None), gw, origins, weather=wx)
    # the regression's own forecast: its values at the targets plus its mean residual over the 3 days before
    hist = gw[gw["ts"] < origins.max()].dropna(subset=["value"])
    hts = pd.DatetimeIndex(hist["ts"])
    fit_h = linear.predict_linear(model.linear, hts, hist["hdd_smooth"].to_numpy(), hist["cdd_smooth"].to_numpy(),
                                  "Europe/Paris", "FR")
    shift = linear.level_shift(hts, hist["value"].to_numpy() - fit_h, origins, 3.0)
    w = wx.set_index(["origin", "ts"])
    for i, o in enumerate(origins):
        rows = mixed[mixed["origin"] == o]
        t = pd.DatetimeIndex(rows["ts"])
        ww = w.loc[o].reindex(t)
        lin = linear.predict_linear(model.linear, t, ww["hdd_smooth"].to_numpy(), ww["cdd_smooth"].to_numpy(),
                                    "Europe/Paris", "FR") + shift[i]
        np.testing.assert_allclose(rows["yhat"].to_numpy(),
                                   0.7 * nets[nets["origin"] == o]["yhat"].to_numpy() + 0.3 * lin, rtol=1e-9)


def test_the_linear_part_travels_with_the_artifact(data: dict) -> None:
    model, gw, origins, wx = data["model"], data["gw"], data["origins"], data["wx"]
    back = fm.from_files(fm.to_files(model))
    assert back.linear == json.loads(json.dumps(model.linear))
    np.testing.assert_allclose(fm.predict(back, gw, origins, weather=wx)["yhat"],
                               fm.predict(model, gw, origins, weather=wx)["yhat"], rtol=1e-6)


def test_an_artifact_from_before_the_linear_part_predicts_with_its_networks_alone(data: dict) -> None:
    model, gw, origins, wx = data["model"], data["gw"], data["origins"], data["wx"]
    files = fm.to_files(model)
    doc = json.loads(files["model.json"])
    del doc["linear"]
    del doc["config"]["weather_linear_weight"]
    old = fm.from_files({**files, "model.json": json.dumps(doc).encode()})
    assert old.linear is None and old.config.weather_linear_weight == 0.0
    np.testing.assert_allclose(fm.predict(old, gw, origins, weather=wx)["yhat"],
                               fm.predict(replace(model, linear=None), gw, origins, weather=wx)["yhat"], rtol=1e-6)


def test_the_weather_free_model_has_no_linear_part() -> None:
    grid = grid_2022("2022-03-01", start="2022-01-01")
    assert fm.fit(grid, tiny_model_config()).linear is None


@pytest.fixture
def fc_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    yield from fast_model_settings(monkeypatch, tmp_path)


def test_training_learns_the_linear_weight_per_lead_day_on_its_holdout(data: dict, fc_settings: Settings) -> None:
    """``train_and_calibrate`` scores networks and regression on the holdout and keeps, per lead day, the mix with
    the lowest MAPE (as against naive); the issued forecast then mixes with those weights, and the artifact keeps
    them."""
    from shared.forecasting import service

    train = data["gw"][data["gw"]["ts"] < "2022-04-01"]
    cfg = replace(service.model_config(fc_settings), weather=True, weather_smoothed_input=True,
                  weather_level_seeds=1, weather_profile_seeds=1)
    model, hold = service.train_and_calibrate(train, fc_settings, cfg)
    assert model.linear is not None and set(model.linear_blend) >= {"1", "2"}
    for v in model.linear_blend.values():
        assert 0.0 <= v["weight"] <= 1.0 and v["mape_blend"] <= min(v["mape_model"], v["mape_naive"])
    gw, origins, wx = data["gw"], data["origins"], data["wx"]
    parts = fm.predict(model, gw, origins, weather=wx, parts=True)
    w = np.array([1.0 - combine.weight_of(model.linear_blend, int(k)) for k in parts["lead_day"]])
    np.testing.assert_allclose(fm.predict(model, gw, origins, weather=wx)["yhat"].to_numpy(),
                               (1 - w) * parts["yhat"].to_numpy() + w * parts["yhat_linear"].to_numpy(), rtol=1e-9)
    assert fm.from_files(fm.to_files(model)).linear_blend == model.linear_blend


def test_a_weather_model_refit_after_its_holdout_keeps_its_linear_weights(data: dict, fc_settings: Settings) -> None:
    # under the level network's minimum history the model is trained again on its whole history after the holdout;
    # the networks-vs-regression weights learnt on the holdout stay with it, as naive's do
    from shared.forecasting import service

    train = data["gw"][data["gw"]["ts"] < "2022-04-01"]
    settings = fc_settings.model_copy(update={"forecast_level_min_history_days": 913})
    cfg = replace(service.model_config(settings), weather=True, weather_smoothed_input=True,
                  weather_level_seeds=1, weather_profile_seeds=1)
    model, hold = service.train_and_calibrate(train, settings, cfg)
    assert model.level is None and service.trained_on_holdout(model, pd.Timestamp(hold["holdout"][0]))
    assert model.linear is not None and model.linear_blend and model.linear_blend == model.meta["linear_blend"]
