"""The detector's seasonal profile across a DST change, on a series part of whose load keeps standard time.

Real data: Victoria's (Australia) half-hourly demand, 16 Feb – 20 Apr 2014 (tests/data, from the ``vic_elec``
dataset). Victoria's clocks went back on 6 Apr 2014 (03:00 AEDT → 02:00 AEST). Off-peak water heating switches on at
23:00 standard time all year: a step of about +270 MW, at 00:00 on the wall clock before the change and at 23:00 after
it, while the rest of the load follows the wall clock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.calendar import Calendar
from shared.detection import residual
from shared.detection.residual import profile, regular_grid

VICTORIA = Calendar("Australia/Melbourne", "AU-VIC")
DEMAND = Path(__file__).parent / "data" / "vic_elec_demand_2014-02-16_2014-04-20.csv"


@pytest.fixture(scope="module")
def victoria() -> pd.Series:
    d = pd.read_csv(DEMAND)
    return regular_grid(pd.DataFrame({"ts": pd.to_datetime(d["timestamp"], utc=True), "value": d["value"]}))


def _at_23_local(x: pd.Series, days: list[str]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(f"{d} 23:00", tz=VICTORIA.tz).tz_convert("UTC") for d in days])


def test_the_water_heating_step_is_expected_at_23_standard_time_after_the_change(victoria: pd.Series) -> None:
    # the second week after the change: four reference days, all before it for weekends, some for weekdays
    at = _at_23_local(victoria, ["2014-04-09", "2014-04-10", "2014-04-11", "2014-04-12", "2014-04-13"])
    actual = (victoria - victoria.shift(1))[at]
    expected = profile(victoria, calendar=VICTORIA)[0][at]
    assert (actual > 150).all()
    assert (expected > 0.6 * actual).all()


def test_without_the_fixed_clock_the_step_is_expected_an_hour_late(victoria: pd.Series,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the wall clock alone (the rule before): the reference days' step sits at 00:00, so 23:00 expects none of it
    monkeypatch.setattr(residual, "FIXED_CLOCK_MIN_READINGS", 10**9)
    at = _at_23_local(victoria, ["2014-04-12", "2014-04-13"])  # a weekend: every reference day is before the change
    actual = (victoria - victoria.shift(1))[at]
    assert (profile(victoria, calendar=VICTORIA)[0][at] < 0.3 * actual).all()


def test_the_clock_choice_reads_only_the_past(victoria: pd.Series) -> None:
    cut = pd.Timestamp("2014-04-11T00:00Z")
    early = victoria[victoria.index <= cut]
    full_delta, full_level = profile(victoria, calendar=VICTORIA)
    early_delta, early_level = profile(early, calendar=VICTORIA)
    assert np.allclose(full_delta[early.index], early_delta, equal_nan=True)
    assert np.allclose(full_level[early.index], early_level, equal_nan=True)
