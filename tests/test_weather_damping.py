"""The temperature forecast damped toward the normal by its track record (shared/weather/damping.py), on the shipped
realised national temperature (Enedis) with the product's simulated forecast errors (shared/weather/
forecast_error.py): a perfect forecast is left alone, a forecast with errors is shrunk where that brings it closer to
what came — on origins the slopes were not learnt on — and the degrees the model reads follow the damped
temperature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.forecasting.evaluate import perfect_provider, realised_temperature
from shared.weather.damping import apply_damping, fit_normal, learn_damping, normal_at, normal_offset, slopes_at
from shared.weather.features import WEATHER_COLUMNS, degrees, derive, features_for_origins
from shared.weather.forecast_error import simulated_provider

STEP = pd.Timedelta(minutes=30)
HORIZON = pd.Timedelta(days=8)


@pytest.fixture(scope="module")
def realised() -> pd.DataFrame:
    ts = pd.Series(pd.date_range("2021-11-01", "2022-05-01", freq=STEP, tz="UTC", inclusive="left"))
    return realised_temperature(ts)


def _origins(start: str, end: str) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq="1D", tz="UTC") + pd.Timedelta(hours=11)


def _known(realised: pd.DataFrame, provider: object, origins: pd.DatetimeIndex) -> pd.DataFrame:
    return features_for_origins(realised, provider(origins), origins, 30, True)  # type: ignore[operator]


def _realised_features(realised: pd.DataFrame) -> pd.DataFrame:
    return derive(realised[["ts", "temp_degc"]], smoothed_input=True)


def test_a_perfect_forecast_is_not_damped(realised: pd.DataFrame) -> None:
    origins = _origins("2022-01-01", "2022-03-01")
    known = _known(realised, perfect_provider(realised, HORIZON, STEP), origins)
    slopes = learn_damping(known, _realised_features(realised))
    assert sorted(slopes, key=int) == [str(k) for k in range(1, 9)]
    assert all(v == 1.0 for v in slopes.values())


def test_a_forecast_with_errors_is_damped_more_at_longer_leads(realised: pd.DataFrame) -> None:
    provider = simulated_provider(realised, HORIZON, STEP, seed=1, smoothed_input=True, scale=1.5)
    slopes = learn_damping(_known(realised, provider, _origins("2021-11-05", "2022-02-15")),
                           _realised_features(realised))
    assert 0.0 < slopes["7"] < slopes["1"] < 1.0


def test_damping_brings_the_forecast_closer_to_what_came_on_origins_it_was_not_learnt_on(
        realised: pd.DataFrame) -> None:
    provider = simulated_provider(realised, HORIZON, STEP, seed=1, smoothed_input=True, scale=1.5)
    real = _realised_features(realised)
    slopes = learn_damping(_known(realised, provider, _origins("2021-11-05", "2022-02-15")), real)
    later = _known(realised, provider, _origins("2022-02-16", "2022-04-15"))
    truth = later[["ts"]].merge(real[["ts", "temp_smooth_degc"]], on="ts", how="left")["temp_smooth_degc"]
    lead = (later["ts"] - later["origin"]) / pd.Timedelta(days=1)
    far = (lead >= 4).to_numpy()
    raw_err = float(np.nanmean((later["temp_smooth_degc"] - truth).to_numpy()[far] ** 2))
    damped = apply_damping(later, slopes)
    damped_err = float(np.nanmean((damped["temp_smooth_degc"] - truth).to_numpy()[far] ** 2))
    assert damped_err < raw_err


def test_damping_keeps_the_origin_and_the_raw_temperature_and_recomputes_the_degrees(realised: pd.DataFrame) -> None:
    origins = _origins("2022-01-10", "2022-01-12")
    known = _known(realised, perfect_provider(realised, HORIZON, STEP), origins)
    damped = apply_damping(known, {str(k): 0.5 for k in range(1, 9)})
    at_origin = (damped["ts"] == damped["origin"]).to_numpy()
    np.testing.assert_array_equal(damped["temp_smooth_degc"].to_numpy()[at_origin],
                                  known["temp_smooth_degc"].to_numpy()[at_origin])
    assert (damped["temp_smooth_degc"].to_numpy()[~at_origin] != known["temp_smooth_degc"].to_numpy()[~at_origin]).any()
    np.testing.assert_array_equal(damped["temp_degc"], known["temp_degc"])
    hdd, cdd = degrees(damped["temp_smooth_degc"].to_numpy())
    np.testing.assert_array_equal(damped["hdd_smooth"], hdd)
    np.testing.assert_array_equal(damped["cdd_smooth"], cdd)
    assert list(damped.columns) == ["origin", "ts", *WEATHER_COLUMNS]


def test_no_slopes_leave_the_forecast_as_it_is(realised: pd.DataFrame) -> None:
    origins = _origins("2022-01-10", "2022-01-11")
    known = _known(realised, perfect_provider(realised, HORIZON, STEP), origins)
    pd.testing.assert_frame_equal(apply_damping(known, {}), known)


def test_the_offset_is_the_realised_temperatures_mean_anomaly_and_the_damping_pulls_toward_it(
        realised: pd.DataFrame) -> None:
    from shared.features import normal_temperature

    real = _realised_features(realised)
    offset = normal_offset(real)
    expected = float(np.nanmean(real["temp_smooth_degc"].to_numpy() - normal_temperature(real["ts"]).to_numpy()))
    assert offset == pytest.approx(expected, abs=1e-4) and offset != 0.0
    known = _known(realised, perfect_provider(realised, HORIZON, STEP), _origins("2022-01-10", "2022-01-11"))
    flat = apply_damping(known, {str(k): 0.0 for k in range(1, 9)}, offset)  # slopes 0: the target itself
    after = (flat["ts"] - flat["origin"]) >= pd.Timedelta(hours=12)
    np.testing.assert_allclose(flat.loc[after, "temp_smooth_degc"],
                               normal_temperature(flat.loc[after, "ts"]).to_numpy() + offset)


@pytest.fixture(scope="module")
def two_years() -> pd.DataFrame:
    """The realised smoothed national temperature of 2021–2022 as weather features."""
    ts = pd.Series(pd.date_range("2021-01-01", "2023-01-01", freq=STEP, tz="UTC", inclusive="left"))
    return _realised_features(realised_temperature(ts))


def test_a_series_own_normal_is_the_seasonal_cycle_of_its_temperature(two_years: pd.DataFrame) -> None:
    # fitted on France's own two years, it is France's shipped normal within a degree, shifted by the recent
    # climate's warmth (the offset the damping adds to the shipped one)
    harmonics = fit_normal(two_years)
    own, shipped = normal_at(two_years["ts"], harmonics), normal_at(two_years["ts"])
    winter, summer = normal_at(pd.DatetimeIndex(["2022-01-15", "2022-07-15"], tz="UTC"), harmonics)
    assert summer - winter > 12.0
    assert np.sqrt(np.mean((own - shipped - normal_offset(two_years)) ** 2)) < 1.0
    assert normal_offset(two_years, harmonics) == pytest.approx(0.0, abs=1e-3)


def test_under_a_year_of_temperature_gives_no_normal(two_years: pd.DataFrame) -> None:
    assert fit_normal(two_years[two_years["ts"] < pd.Timestamp("2021-12-01", tz="UTC")]) == []


def test_the_damping_pulls_toward_the_series_own_normal(realised: pd.DataFrame, two_years: pd.DataFrame) -> None:
    harmonics = fit_normal(two_years)
    known = _known(realised, perfect_provider(realised, HORIZON, STEP), _origins("2022-01-10", "2022-01-11"))
    flat = apply_damping(known, {str(k): 0.0 for k in range(1, 9)}, 0.5, harmonics)  # slopes 0: the target itself
    after = (flat["ts"] - flat["origin"]) >= pd.Timedelta(hours=12)
    np.testing.assert_allclose(flat.loc[after, "temp_smooth_degc"], normal_at(flat.loc[after, "ts"], harmonics) + 0.5)


def test_slopes_run_from_one_at_the_origin_through_each_block_centre() -> None:
    beta = slopes_at(np.array([0.0, 12.0, 24.0, 36.0, 200.0]), {"1": 0.8, "2": 0.6})
    np.testing.assert_allclose(beta, [1.0, 0.8, 0.7, 0.6, 0.6])


def test_the_latest_weather_models_damping_is_a_gauge_per_lead_day() -> None:
    from shared.forecasting.service import record_weather_damping
    from shared.metrics import REGISTRY

    record_weather_damping({"1": 0.97, "2": 0.9})
    record_weather_damping({"1": 0.95})  # the next model's: lead days it has no slope for keep no series
    assert REGISTRY.get_sample_value("powersense_forecast_weather_damping_ratio", {"lead_day": "1"}) == 0.95
    assert REGISTRY.get_sample_value("powersense_forecast_weather_damping_ratio", {"lead_day": "2"}) is None
