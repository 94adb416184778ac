"""Public holidays in the profile (``ModelConfig.holiday_events``): pooled by the weekday they fall on (default), or
one event per named holiday (models saved before the setting). Real 2022 calendar and load; tiny epochs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from shared.errors import ModelError
from shared.forecasting import model as fm
from tests.fixtures_forecast import grid_2022, tiny_model_config

TINY = tiny_model_config()


def _day(frame: pd.DataFrame, ts: pd.DatetimeIndex, date: str) -> pd.Series:
    """The profile frame's row at local noon of ``date``."""
    return frame.iloc[int(np.flatnonzero(ts == pd.Timestamp(f"{date} 12:00", tz="Europe/Paris"))[0])]


@pytest.fixture(scope="module")
def year_2022() -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    ts = pd.date_range("2022-01-01", "2023-01-01", freq="30min", tz="Europe/Paris", inclusive="left")
    return ts, fm.profile_frame(ts, events=fm.WEEKDAY_EVENTS + fm.HOLIDAY_EVENTS)


def test_a_holiday_on_a_weekday_joins_the_weekday_pool(year_2022: tuple) -> None:
    ts, frame = year_2022
    for date in ("2022-07-14", "2022-08-15", "2022-11-11", "2022-04-18", "2022-05-26"):  # Thu, Mon, Fri, Mon, Thu
        row = _day(frame, ts, date)
        assert (row["holiday_weekday"], row["holiday_saturday"]) == (1.0, 0.0), date
    row = _day(frame, ts, "2022-07-14")
    assert row["bastille_day"] == 1.0 and row["winter_off"] + row["summer_off"] == 1.0  # a Sunday-like day shape


def test_a_holiday_on_a_saturday_joins_the_saturday_pool_and_one_on_a_sunday_no_pool(year_2022: tuple) -> None:
    ts, frame = year_2022
    sat = _day(frame, ts, "2022-01-01")  # New Year's Day 2022 was a Saturday
    assert (sat["holiday_weekday"], sat["holiday_saturday"]) == (0.0, 1.0)
    sun = _day(frame, ts, "2022-05-01")  # Labour Day 2022 was a Sunday: a Sunday already
    assert (sun["holiday_weekday"], sun["holiday_saturday"], sun["labour_day"]) == (0.0, 0.0, 1.0)


def test_ordinary_days_and_bridges_are_in_no_holiday_pool(year_2022: tuple) -> None:
    ts, frame = year_2022
    bridge = _day(frame, ts, "2022-07-15")  # the Friday after Thursday 14 July
    assert (bridge["bridge"], bridge["holiday_weekday"]) == (1.0, 0.0)
    assert frame.loc[ts.month == 9, ["holiday_weekday", "holiday_saturday"]].to_numpy().sum() == 0  # no holiday
    # 2022: 7 holidays on Monday–Friday, 1 on a Saturday (1 Jan), 3 on a Sunday (1 May, 8 May, 25 Dec)
    days = pd.Series(ts.date, index=ts)
    assert days[frame["holiday_weekday"].to_numpy() == 1].nunique() == 7
    assert days[frame["holiday_saturday"].to_numpy() == 1].nunique() == 1


def test_events_for_each_mode() -> None:
    assert fm.events_for("FR") == fm.WEEKDAY_EVENTS == fm.events_for("GB", "weekday")
    assert fm.events_for("FR", "named") == fm.HOLIDAY_EVENTS and fm.events_for("GB", "named") == fm.GENERIC_EVENTS
    assert fm.events_for("", "weekday") == []
    with pytest.raises(ModelError, match="holiday_events"):
        fm.events_for("FR", "by_month")


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    grid = grid_2022("2022-05-01")
    train = grid[grid["ts"] < "2022-04-01"]
    return {"grid": grid, "weekday": fm.fit(train, TINY), "named": fm.fit(train, replace(TINY, holiday_events="named"))}


def test_a_new_model_learns_the_weekday_pools(models: dict) -> None:
    # January–March 2022: New Year's Day (Saturday) and the Christmas break; no weekday holiday yet
    assert models["weekday"].config.holiday_events == "weekday"
    assert models["weekday"].profile.powersense_events == ["holiday_saturday", "christmas_week"]
    assert models["named"].profile.powersense_events == ["new_year", "christmas_week"]


def test_an_artifact_from_before_the_setting_keeps_its_named_events_and_forecasts(models: dict) -> None:
    """Artifacts saved before ``holiday_events`` existed were trained with named events: loading one restores them
    and forecasts exactly as the model did."""
    model, grid = models["named"], models["grid"]
    files = fm.to_files(model)
    doc = json.loads(files["model.json"])
    assert doc["config"].pop("holiday_events") == "named"
    old = fm.from_files({**files, "model.json": json.dumps(doc).encode()})
    assert old.config.holiday_events == "named" and old.profile.powersense_events == ["new_year", "christmas_week"]
    origins = pd.DatetimeIndex(["2022-04-14 10:00", "2022-04-15 10:00"], tz="UTC")  # targets over Easter Monday
    np.testing.assert_allclose(fm.predict(old, grid, origins)["yhat"], fm.predict(model, grid, origins)["yhat"],
                               rtol=1e-6)


def test_every_french_holiday_of_the_calendar_has_its_named_event() -> None:
    # the keys were written by hand beside the `holidays` package: its "Pentecost Monday" (ex "Whit Monday") and
    # 2008's combined "Ascension Day; Labor Day" had no event, so named-mode models never saw those days
    from shared.calendar import public_holidays

    frame = fm.holiday_frame(pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2035-12-31", tz="UTC"))
    named = frame[frame["event"].isin(set(fm.HOLIDAY_EVENTS) - {"bridge", "christmas_week"})]
    for year in range(2000, 2036):
        for day, name in public_holidays(year).items():
            events = set(named.loc[named["date"] == pd.Timestamp(day), "event"])
            assert len(events) == len(name.split("; ")), (day, name)
    assert set(named.loc[named["date"] == pd.Timestamp("2008-05-01"), "event"]) == {"ascension", "labour_day"}
    assert set(named.loc[named["date"] == pd.Timestamp("2023-05-29"), "event"]) == {"whit_monday"}
