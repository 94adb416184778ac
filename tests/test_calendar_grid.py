"""The expected-instants grid: a window starting off the grid, a zone half an hour off UTC."""

from __future__ import annotations

import pandas as pd

from shared.calendar import expected_instants, expected_steps


def test_expected_instants_start_at_the_first_grid_instant_at_or_after_start() -> None:
    """A window starting off the grid expects nothing before its start."""
    got = expected_instants("2023-01-02T00:07Z", "2023-01-02T01:00Z")
    assert got[0] == pd.Timestamp("2023-01-02T00:15Z") and len(got) == 3


def test_an_hourly_day_in_a_half_hour_zone_holds_24_steps() -> None:
    """A local day of Asia/Kolkata starts at 18:30Z; an hourly series is expected 24 times in it."""
    assert expected_steps("2023-06-01", 60, tz="Asia/Kolkata") == 24
