"""A series whose instants are not on the hour: the grid follows the series, and forecast origins land on the grid.

An hourly series published at the local hours of a zone half an hour off UTC (India, UTC+5:30; Newfoundland,
UTC−3:30) lies at :30 UTC. The grid used to be on the hour whatever the series: such a series had no value on it
("0.0 days of valid history"), and with a series on the hour, local noon in such a zone (06:30 UTC) was an origin
between two grid instants, whose forecasts matched no actual (an empty report). The values here are real (Swiss
hourly load, ENTSO-E, 2023-Q1, tests/data); only the instants are moved half an hour, as such a zone would publish
them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shared.features import build_grid, floor_to_grid, grid_phase
from shared.forecasting.evaluate import daily_origins, load_data
from shared.forecasting.service import model_config
from shared.ingest.history import read_history_file
from shared.settings import get_settings

SWISS_Q1 = Path(__file__).parent / "data" / "entsoe_total-load_CH_2023-Q1.csv.gz"


def _half_past(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    load = read_history_file(SWISS_Q1).dropna(subset=["consommation"])
    moved = pd.DataFrame({"ts": load["ts"] + pd.Timedelta(minutes=30), "value": load["consommation"]})
    path = tmp_path / "half_past.csv"
    pd.DataFrame({"timestamp": moved["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": moved["value"]}).to_csv(
        path, index=False)
    return path, moved.reset_index(drop=True)


def test_the_phase_of_an_hourly_series_at_half_past_is_30_minutes(tmp_path: Path) -> None:
    _, moved = _half_past(tmp_path)
    assert grid_phase(moved["ts"], 60) == pd.Timedelta(minutes=30)
    assert grid_phase(moved["ts"] - pd.Timedelta(minutes=30), 60) == pd.Timedelta(0)


def test_a_grid_with_the_series_phase_holds_every_value(tmp_path: Path) -> None:
    _, moved = _half_past(tmp_path)
    on_the_hour = build_grid(moved, 60, max_interp_steps=0)
    phased = build_grid(moved, 60, max_interp_steps=0, phase=grid_phase(moved["ts"], 60))
    assert on_the_hour["value"].notna().sum() == 0
    assert phased["value"].notna().sum() == len(moved)


def test_the_backtests_grid_follows_the_series(tmp_path: Path) -> None:
    path, moved = _half_past(tmp_path)
    grid, _ = load_data([path], None, get_settings())
    assert grid.attrs["grid_phase_min"] == 30.0 and grid.attrs["resolution_min"] == 60
    # every value is on the grid: held, or rejected by the training-data gate (the Swiss file's 17 Feb drop)
    assert int(grid["value"].notna().sum()) + len(grid.attrs["gated"]) == len(moved)


def test_origins_are_floored_onto_the_models_grid() -> None:
    cfg = model_config(get_settings())
    cfg.timezone, cfg.resolution_min = "Asia/Kolkata", 60
    start, end = pd.Timestamp("2023-03-01", tz="Asia/Kolkata"), pd.Timestamp("2023-03-05", tz="Asia/Kolkata")
    cfg.grid_phase_min = 0.0  # a series on the hour: local noon (06:30 UTC) is floored to 06:00 UTC
    assert set(daily_origins(start, end, 12, cfg.timezone, cfg).strftime("%H:%M")) == {"06:00"}
    cfg.grid_phase_min = 30.0  # a series at half past: local noon is on its grid
    assert set(daily_origins(start, end, 12, cfg.timezone, cfg).strftime("%H:%M")) == {"06:30"}


def test_flooring_keeps_instants_already_on_the_grid() -> None:
    on = pd.DatetimeIndex(["2023-01-01T00:30Z", "2023-01-01T05:30Z"])
    assert (floor_to_grid(on, 60, pd.Timedelta(minutes=30)) == on).all()
    assert list(floor_to_grid(on, 60).strftime("%H:%M")) == ["00:00", "05:00"]


def test_a_stale_series_fallback_starts_on_the_series_grid() -> None:
    from shared.forecasting.service import forecast_targets

    # the newest value a day old at :30 UTC; issued at 12:07 UTC: the first target is the grid's 11:30, not 12:00
    targets = forecast_targets(pd.Timestamp("2023-03-01T11:30Z"), pd.Timestamp("2023-03-02T12:07Z"), 60, 7)
    assert targets[0] == pd.Timestamp("2023-03-02T11:30Z") and set(targets.minute) == {30}


def test_a_few_missing_values_do_not_move_a_quarter_hourly_series_grid() -> None:
    # real quarter-hourly load (eco2mix 2021, every :00/:15/:30/:45): each offset of a 30-min grid is equally
    # common, so two missing :00 values made :15 the most common one and moved the grid and the origins to :15/:45
    from shared.ingest.history import read_history

    load = read_history([Path(__file__).parents[1] / "data" / "eco2mix" / "eco2mix_national_2021.csv.gz"],
                        "2021-02-01T00:00Z", "2021-03-01T00:00Z")
    ts = load.loc[load["consommation"].notna(), "ts"].reset_index(drop=True)
    assert set(ts.dt.minute) == {0, 15, 30, 45}
    two_fewer = ts.drop(ts.index[ts.dt.minute == 0][:2])
    assert grid_phase(two_fewer, 30) == pd.Timedelta(0)
    assert grid_phase(two_fewer, 60) == pd.Timedelta(0)
