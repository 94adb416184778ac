"""Features on real data: DST days, holidays and bridge days, gaps; incremental recomputation."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from shared.features import (
    WEATHER_DIR,
    build_grid,
    calendar_features,
    compute_features,
    featurize,
    grid_step_for,
    normal_temperature,
    plan_window,
    series_step_minutes,
    temperature_features,
)
from shared.settings import Settings
from shared.store import Store
from shared.weather.enedis import read_enedis_dir
from tests.fixtures_forecast import history, insert_measurements


@pytest.fixture(scope="module")
def autumn_2023() -> pd.DataFrame:
    """Real 2023 consumption around the missing local day 2023-10-14 and the fall-back DST day."""
    return history("2023-10-01", "2023-11-08")


def _local_day(feats: pd.DataFrame, day: str) -> pd.DataFrame:
    local = pd.DatetimeIndex(feats["ts"]).tz_convert("Europe/Paris")
    return feats[local.strftime("%Y-%m-%d") == day]


def test_grid_keeps_long_gap_missing(autumn_2023: pd.DataFrame) -> None:
    grid = build_grid(autumn_2023, 30, max_interp_steps=4)
    day = _local_day(grid, "2023-10-14")
    assert day["missing"].all() and day["value"].isna().all() and not day["interpolated"].any()


def test_grid_interpolates_and_flags_short_gap(autumn_2023: pd.DataFrame) -> None:
    holed = autumn_2023[~autumn_2023["ts"].isin(pd.date_range("2023-10-05 10:00", periods=2, freq="30min", tz="UTC"))]
    grid = build_grid(holed, 30, max_interp_steps=4).set_index("ts")
    t = pd.Timestamp("2023-10-05 10:00", tz="UTC")
    assert grid.loc[t, "interpolated"] and not grid.loc[t, "missing"]
    before, after = grid.loc[t - pd.Timedelta(minutes=30), "value"], grid.loc[t + pd.Timedelta(minutes=60), "value"]
    assert grid.loc[t, "value"] == pytest.approx(before + (after - before) / 3)


def test_fall_back_day_has_25_local_hours(autumn_2023: pd.DataFrame) -> None:
    feats = compute_features(build_grid(autumn_2023, 30), 30)
    day = _local_day(feats, "2023-10-29")
    assert len(day) == 50 and day["is_dst_transition"].all()
    assert day["is_summer_time"].iloc[0] and not day["is_summer_time"].iloc[-1]
    # 02:00–02:30 local happen twice: once in summer time, once in winter time
    assert (day["local_minute"] == 120).sum() == 2


def test_spring_forward_day_has_23_local_hours() -> None:
    grid = build_grid(history("2023-03-20", "2023-03-30"), 30)
    day = _local_day(compute_features(grid, 30), "2023-03-26")
    assert len(day) == 46 and day["is_dst_transition"].all() and not (day["local_minute"] == 150).any()


def test_holidays_and_bridge_days() -> None:
    ts = pd.Series(pd.date_range("2023-05-16 22:00", "2023-05-21 22:00", freq="1h", tz="UTC"))
    cal = calendar_features(ts)
    local_day = pd.DatetimeIndex(ts).tz_convert("Europe/Paris").strftime("%m-%d")
    assert cal.loc[local_day == "05-18", "holiday_name"].eq("Ascension Day").all()  # Thursday
    assert cal.loc[local_day == "05-19", "is_bridge"].all()  # the Friday after
    assert not cal.loc[local_day == "05-17", "is_holiday"].any()


def test_lags_and_rolling_use_only_past_values(autumn_2023: pd.DataFrame) -> None:
    feats = compute_features(build_grid(autumn_2023, 30), 30).set_index("ts")
    t = pd.Timestamp("2023-11-03 12:00", tz="UTC")
    assert feats.loc[t, "lag_1w"] == feats.loc[t - pd.Timedelta(days=7), "value"]
    past_day = feats.loc[t - pd.Timedelta(days=1): t - pd.Timedelta(minutes=30), "value"]
    assert feats.loc[t, "roll_mean_1d"] == pytest.approx(past_day.mean())


def test_normal_temperature_exists_for_any_year() -> None:
    feats = compute_features(build_grid(history("2015-01-10", "2015-01-12"), 30), 30)
    assert feats["temp_normal_degc"].notna().all() and feats["temp_observed_degc"].isna().all()
    assert (feats["hdd_normal"] > 0).all()  # January


def test_the_half_hourly_realised_temperature_is_interpolated_onto_a_15_minute_grid() -> None:
    ts = pd.Series(pd.date_range("2023-01-16 06:00", "2023-01-16 09:00", freq="15min", tz="UTC"))
    temp = temperature_features(ts)["temp_observed_degc"].to_numpy()
    half_hours, quarters = temp[0::2], temp[1::2]  # the shipped Enedis series' own instants, then between them
    assert np.isfinite(temp).all() and np.ptp(half_hours) > 0  # a morning the temperature moves
    assert quarters == pytest.approx((half_hours[:-1] + half_hours[1:]) / 2)


def test_the_normal_temperature_is_interpolated_between_half_hours_on_a_15_minute_grid() -> None:
    ts = pd.date_range("2024-04-16 05:00", "2024-04-16 09:00", freq="15min", tz="UTC")  # any year: a climatology
    normal = normal_temperature(ts).to_numpy()
    half_hours, quarters = normal[0::2], normal[1::2]
    # the half-hours: the shipped Enedis normal of the same local day and time, averaged over the years it covers
    shipped = read_enedis_dir(WEATHER_DIR)
    local = pd.DatetimeIndex(shipped["ts"]).tz_convert("Europe/Paris")
    by_slot = shipped.groupby(np.asarray(local.strftime("%m-%d %H:%M")))["normal"].mean()
    expected = by_slot.reindex(ts[0::2].tz_convert("Europe/Paris").strftime("%m-%d %H:%M")).to_numpy()
    assert np.ptp(half_hours) > 0 and half_hours == pytest.approx(expected)  # a spring morning warms
    assert quarters == pytest.approx((half_hours[:-1] + half_hours[1:]) / 2)


@pytest.mark.parametrize("day", ["2024-03-31", "2024-10-27"])
def test_the_normal_temperature_of_a_15_minute_dst_day_is_whole(day: str) -> None:
    ts = pd.date_range(f"{day} 00:00", periods=24 * 4, freq="15min", tz="UTC")
    assert np.isfinite(normal_temperature(ts).to_numpy()).all()


def test_plan_window_covers_a_week_after_the_change() -> None:
    changed = pd.Timestamp("2023-06-10 10:10", tz="UTC")
    start, end, load_start = plan_window(changed, pd.Timestamp("2023-06-30 23:30", tz="UTC"), 30,
                                         pd.Timestamp("2020-01-01", tz="UTC"))
    assert start == pd.Timestamp("2023-06-10 10:00", tz="UTC") and end == pd.Timestamp("2023-07-01", tz="UTC")
    assert load_start <= start - pd.Timedelta(days=7)


def test_featurize_recomputes_only_the_affected_window(store: Store, settings: Settings) -> None:
    rows = history("2023-10-01", "2023-10-22")
    insert_measurements(store, rows)
    now = datetime(2023, 10, 22, tzinfo=UTC)
    first = featurize(store, settings, now)
    # the forecast's 30-min grid and detect's 15-min grid
    assert first["rows_out"] == 21 * 48 + 21 * 96 and featurize(store, settings, now)["up_to_date"]
    t = pd.Timestamp("2023-10-20 06:00", tz="UTC")
    # a plausible revision (+300 MW): the features carry it, lags included
    revised_value = float(rows.loc[rows["ts"] == t, "value"].iloc[0]) + 300.0
    insert_measurements(store, rows[rows["ts"] == t].assign(value=revised_value), version=2)
    second = featurize(store, settings, now)
    # to the end of the data (42 h), on both grids
    assert pd.Timestamp(second["grids"]["30"]["window_start"]) == t and second["rows_out"] == 84 + 168
    got = store.query_df("select ts, value, lag_1, implausible from {db:Identifier}.features final "
                         "where resolution_min = 30 and ts >= {t:DateTime64(3, 'UTC')} order by ts limit 2",
                         {"t": t.to_pydatetime()})
    assert got["value"].iloc[0] == revised_value and got["lag_1"].iloc[1] == revised_value
    assert not got["implausible"].any()
    assert int(store.scalar("select count() from {db:Identifier}.features final where resolution_min = 30")) == 21 * 48
    assert np.isfinite(got["value"]).all()


def test_featurize_does_not_read_while_a_measurements_writer_holds_the_lease(store: Store, settings: Settings) -> None:
    # a featurize that read between upsert-version's insert and its reflag kept the value unflagged, and one that
    # overlapped another featurize could write its older rows last; neither was repaired by the next run
    from shared import clock
    from shared.features import run_featurize
    from shared.lease import MEASUREMENTS_WRITER, Lease
    from shared.runs import stage_run

    insert_measurements(store, history("2023-06-01", "2023-06-08"))
    clock.install(clock.SimulatedClock(datetime(2023, 6, 8, tzinfo=UTC), speed=0.0))
    writer = Lease(store, MEASUREMENTS_WRITER, ttl_s=300)
    try:
        assert writer.acquire()
        with stage_run(store, "featurize") as held:
            run_featurize(store, settings, held, lease_wait_s=0)
        assert held.status == "skipped" and "measurements lease is held" in held.details["skip_reason"]
        assert store.scalar("select count() from {db:Identifier}.features") == 0
        writer.release()
        with stage_run(store, "featurize") as free:
            run_featurize(store, settings, free, lease_wait_s=0)
        assert free.status == "success" and free.rows_out > 0
    finally:
        writer.release()
        clock.install(None)


def test_featurize_handler_runs_then_skips(store: Store, settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler
    from shared import clock
    from shared.app import store_dep

    insert_measurements(store, history("2023-06-01", "2023-06-08"))
    mod = load_handler("featurize")
    mod.app.dependency_overrides[store_dep] = lambda: store
    clock.install(clock.SimulatedClock(datetime(2023, 6, 8, tzinfo=UTC), speed=0.0))
    try:
        client = TestClient(mod.app)
        first, second = client.post("/").json(), client.post("/").json()
    finally:
        clock.install(None)
        mod.app.dependency_overrides.clear()
    assert first["status"] == "success" and first["rows_out"] == 7 * 48 + 7 * 96
    assert second["status"] == "skipped" and second["details"]["skip_reason"] == "features up to date"


def test_calendar_module_day_lengths_bridges_and_day_types() -> None:
    from datetime import date

    from shared.calendar import bridge_days, day_type, local_day_bounds

    hours = {d: (lambda b: (b[1] - b[0]) / pd.Timedelta(hours=1))(local_day_bounds(d))
             for d in ("2023-03-26", "2023-06-01", "2023-10-29")}
    assert hours == {"2023-03-26": 23.0, "2023-06-01": 24.0, "2023-10-29": 25.0}
    # Ascension 2023 was Thursday 18 May: Friday 19 May is a bridge; Whit Monday 29 May is a holiday
    assert bridge_days([date(2023, 5, 19), date(2023, 5, 26)]) == {date(2023, 5, 19)}
    types = day_type(pd.DatetimeIndex(["2023-05-29", "2023-05-30", "2023-06-02", "2023-06-03", "2023-06-04"]))
    assert types.tolist() == [4, 1, 2, 3, 4]


def test_a_zone_whose_clocks_skip_midnight_has_23_hour_days() -> None:
    # Chile springs forward at 00:00 (2023-09-03 began at 01:00 -03): pandas refuses that midnight, and the
    # calendar raised NonExistentTimeError, so `evaluate --timezone America/Santiago` stopped with a traceback
    from shared.calendar import expected_steps, is_dst_transition, local_day_bounds

    start, end = local_day_bounds("2023-09-03", "America/Santiago")
    assert (start, end) == (pd.Timestamp("2023-09-03T04:00Z"), pd.Timestamp("2023-09-04T03:00Z"))
    assert is_dst_transition("2023-09-03", "America/Santiago") and not is_dst_transition("2023-09-04",
                                                                                          "America/Santiago")
    assert expected_steps("2023-09-03", 60, tz="America/Santiago") == 23


def test_horizon_days_count_local_days_where_midnight_does_not_exist() -> None:
    from shared.forecasting.evaluate import daily_origins, horizon_day

    origins = daily_origins(pd.Timestamp("2023-09-02T04:00Z"), pd.Timestamp("2023-09-12T03:00Z"),
                            tz="America/Santiago")
    assert origins[1] == pd.Timestamp("2023-09-02T16:00Z")  # 12:00 -04 on the Saturday before the change
    fc = pd.DataFrame({"origin": origins[1], "ts": pd.DatetimeIndex(["2023-09-03T03:30Z", "2023-09-03T04:00Z",
                                                                     "2023-09-04T02:00Z", "2023-09-04T03:00Z"])})
    assert horizon_day(fc, "America/Santiago").tolist() == [0, 1, 1, 2]


def test_featurize_writes_the_gated_grid(store: Store, settings: Settings) -> None:
    """An implausible revision (12 345 MW in the middle of a ~47 GW October morning) is what the training-data
    gate rejects: featurize writes a gap there (interpolated, being one step) flagged implausible with the
    reason, so lags never carry it and the forecast, which reads this table, never learns from it."""
    rows = history("2023-10-01", "2023-10-22")
    insert_measurements(store, rows)
    now = datetime(2023, 10, 22, tzinfo=UTC)
    featurize(store, settings, now)
    t = pd.Timestamp("2023-10-20 06:00", tz="UTC")
    insert_measurements(store, rows[rows["ts"] == t].assign(value=12345.0), version=2)
    featurize(store, settings, now)
    got = store.query_df("select ts, value, interpolated, implausible, implausible_reason, lag_1 "
                         "from {db:Identifier}.features final where resolution_min = 30 "
                         "and ts >= {t:DateTime64(3, 'UTC')} order by ts limit 2", {"t": t.to_pydatetime()})
    assert got["implausible"].tolist() == [1, 0] and got["implausible_reason"].iloc[0] != ""
    assert got["interpolated"].iloc[0] == 1 and got["value"].iloc[0] > 40000
    assert got["lag_1"].iloc[1] == got["value"].iloc[0]


@pytest.mark.parametrize(("year", "step"), [(2019, 30.0), (2022, 15.0)])
def test_a_series_step_is_its_most_common_gap(year: int, step: float) -> None:
    # definitive 2012–2019 consumption is half-hourly, the real-time 2020–2023 one quarter-hourly; both years
    # have DST days and gaps, which do not move the step
    h = history(f"{year}-01-01", f"{year + 1}-01-01")
    assert series_step_minutes(h.dropna(subset=["value"])["ts"]) == step


@pytest.mark.parametrize(("step", "requested", "grid"), [
    (15.0, None, 30), (5.0, None, 30), (60.0, None, 60), (20.0, None, 60), (None, None, 30),
    (15.0, 15, 15), (30.0, 60, 60)])
def test_the_grid_step_is_one_the_series_fills(step: float | None, requested: int | None, grid: int) -> None:
    assert grid_step_for(step, requested, default=30) == grid


@pytest.mark.parametrize(("step", "requested"), [(60.0, 30), (30.0, 15), (45.0, None), (45.0, 60), (120.0, None)])
def test_a_grid_step_the_series_cannot_fill_is_refused(step: float, requested: int | None) -> None:
    with pytest.raises(ValueError, match="the series' step is"):
        grid_step_for(step, requested, default=30)
