"""shared/weather/features.py: derive / known_at on synthetic edge cases (NaN gaps, no look-ahead)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.weather.features import (
    CDD_BASE_C,
    HDD_BASE_C,
    SMOOTHING_TAU_H,
    WEATHER_COLUMNS,
    derive,
    interpolate_on,
    known_at,
    smooth,
)


def _frame(n: int = 480, start: str = "2023-01-01", freq: str = "30min", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    return pd.DataFrame({"ts": ts, "temp_degc": 10 + 5 * np.sin(np.arange(n) / 48 * 2 * np.pi) + rng.normal(0, 1, n)})


def test_derive_columns_and_degree_days() -> None:
    f = _frame()
    d = derive(f)
    assert list(d["ts"]) == list(f["ts"])
    for c in WEATHER_COLUMNS:
        assert c in d.columns
    sm = d["temp_smooth_degc"].to_numpy()
    assert np.allclose(d["hdd_smooth"], np.clip(HDD_BASE_C - sm, 0, None))
    assert np.allclose(d["cdd_smooth"], np.clip(sm - CDD_BASE_C, 0, None))
    # smoothing damps the daily cycle
    assert d["temp_smooth_degc"].iloc[96:].std() < f["temp_degc"].iloc[96:].std() / 2


def test_step_response_matches_time_constant() -> None:
    ts = pd.date_range("2023-01-01", periods=200, freq="30min", tz="UTC")
    x = np.where(np.arange(200) < 100, 0.0, 10.0)
    s = smooth(ts, x)
    k = int(SMOOTHING_TAU_H * 2)  # k half-hour updates = one time constant (the first at the step itself)
    assert s[100 + k - 1] == pytest.approx(10 * (1 - np.exp(-1)), abs=1e-9)


def test_nan_gaps_stay_unknown_and_state_is_held() -> None:
    f = _frame()
    f.loc[100:109, "temp_degc"] = np.nan
    d = derive(f)
    assert d.loc[100:109, WEATHER_COLUMNS].isna().all().all()
    assert d.loc[110:, WEATHER_COLUMNS].notna().all().all()
    # the value after a gap continues from the held state decayed over the elapsed time (11 steps = 5.5 h)
    s99 = d.loc[99, "temp_smooth_degc"]
    a = 1 - np.exp(-5.5 / SMOOTHING_TAU_H)
    assert d.loc[110, "temp_smooth_degc"] == pytest.approx(s99 + a * (f.loc[110, "temp_degc"] - s99))
    # all-NaN input → all-NaN features, no error
    assert derive(f.assign(temp_degc=np.nan))[WEATHER_COLUMNS].isna().all().all()
    # empty frame
    assert len(derive(f.iloc[:0])) == 0


def test_long_gap_restarts_smoothing() -> None:
    f = _frame(n=400)
    f.loc[50:249, "temp_degc"] = np.nan  # 100 h gap > RESTART_GAP
    d = derive(f)
    assert d.loc[250, "temp_smooth_degc"] == pytest.approx(f.loc[250, "temp_degc"])


def test_no_look_ahead_in_derive() -> None:
    f = _frame()
    base = derive(f)
    g = f.copy()
    g.loc[300:, "temp_degc"] += 15  # a future temperature change
    changed = derive(g)
    pd.testing.assert_frame_equal(base.iloc[:300], changed.iloc[:300])
    assert not np.allclose(base["temp_smooth_degc"].iloc[300:], changed["temp_smooth_degc"].iloc[300:])


def test_smoothed_input_is_not_smoothed_twice() -> None:
    f = _frame()
    d = derive(f, smoothed_input=True)
    assert np.allclose(d["temp_smooth_degc"], f["temp_degc"])


def test_known_at_splits_realised_and_forecast_at_origin() -> None:
    realised = _frame(n=480)  # 10 days, 30 min
    origin = realised["ts"].iloc[240]
    # hourly forecast from origin on, offset +3 °C so its use is visible; it also has values before origin
    fts = pd.date_range(origin - pd.Timedelta(hours=6), periods=60, freq="1h", tz="UTC")
    forecast = pd.DataFrame({"ts": fts, "temp_degc": 20.0})
    k = known_at(realised, forecast, origin)
    assert list(k.columns) == ["ts", *WEATHER_COLUMNS]
    past, fut = k[k["ts"] < origin], k[k["ts"] >= origin]
    assert np.allclose(past["temp_degc"], realised["temp_degc"].iloc[:240])
    assert (fut["temp_degc"] == 20.0).all()  # hourly forecast interpolated onto the 30-min grid
    assert fut["ts"].iloc[-1] == fts[-1]
    # the smoothing continues from the realised past into the forecast (no restart at the origin)
    s_prev = past["temp_smooth_degc"].iloc[-1]
    a = 1 - np.exp(-0.5 / SMOOTHING_TAU_H)
    assert fut["temp_smooth_degc"].iloc[0] == pytest.approx(s_prev + a * (20.0 - s_prev))


def test_known_at_no_look_ahead() -> None:
    realised = _frame(n=480)
    origin = realised["ts"].iloc[240]
    forecast = pd.DataFrame({"ts": realised["ts"].iloc[240:], "temp_degc": 12.0})
    k = known_at(realised, forecast, origin)
    # realised values at/after the origin and forecast values change: nothing before the origin moves,
    # and realised values after the origin are never read
    r2 = realised.copy()
    r2.loc[240:, "temp_degc"] += 30
    f2 = forecast.assign(temp_degc=25.0)
    k2 = known_at(r2, f2, origin)
    before = k["ts"] < origin
    pd.testing.assert_frame_equal(k[before], k2[before])
    assert np.allclose(known_at(r2, forecast, origin)[WEATHER_COLUMNS], k[WEATHER_COLUMNS])


def test_known_at_missing_forecast_is_nan() -> None:
    realised = _frame(n=480)
    origin = realised["ts"].iloc[240]
    fts = pd.date_range(origin, periods=24, freq="1h", tz="UTC")
    forecast = pd.DataFrame({"ts": fts, "temp_degc": 5.0})
    forecast.loc[5:15, "temp_degc"] = np.nan  # an 12-hour hole > INTERP_LIMIT
    k = known_at(realised, forecast, origin)
    fut = k[k["ts"] >= origin].reset_index(drop=True)
    assert fut["temp_degc"].isna().sum() > 0
    assert fut.loc[fut["temp_degc"].isna(), WEATHER_COLUMNS].isna().all().all()
    # no forecast at all: only the past
    k0 = known_at(realised, forecast.iloc[:0], origin)
    assert k0["ts"].max() < origin


@pytest.mark.parametrize("gap_h", [1, 3])
def test_one_instant_between_two_values_up_to_the_limit_apart_is_interpolated(gap_h: int) -> None:
    # the window is one instant; the source's values around it lie outside the window, up to INTERP_LIMIT away
    hourly = _frame(n=96, freq="1h")
    source = hourly[(hourly.index <= 40) | (hourly.index >= 40 + gap_h)]
    mid = hourly["ts"].iloc[40] + pd.Timedelta(hours=gap_h) / 2
    before, after = hourly["temp_degc"].iloc[40], hourly["temp_degc"].iloc[40 + gap_h]
    got = interpolate_on(source, pd.DatetimeIndex([mid]))
    assert got.iloc[0] == pytest.approx((before + after) / 2)


def test_an_instant_in_a_gap_longer_than_the_limit_stays_unknown() -> None:
    hourly = _frame(n=96, freq="1h")
    source = hourly[(hourly.index <= 40) | (hourly.index >= 44)]  # 4 h apart
    got = interpolate_on(source, pd.DatetimeIndex([hourly["ts"].iloc[42]]))
    assert np.isnan(got.iloc[0])
