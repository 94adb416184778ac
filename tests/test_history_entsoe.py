"""ENTSO-E Transparency Platform exports (Total Load - Day Ahead / Actual) read as downloaded, on real excerpts
of Switzerland's 2018 export (both clock-change days) and 2023 export (a day with an N/A), tests/data/README.md."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shared.errors import BadRequestError
from shared.ingest.history import history_format, is_other_series, read_history_file, source_calendar

DATA = Path(__file__).parent / "data"
DST_DAYS = DATA / "entsoe_total-load_CH_2018_dst-days.csv"  # 25 Mar 2018 (+ padding row), 28 Oct 2018 (25 rows)
WITH_NA = DATA / "entsoe_total-load_CH_2023-02-07.csv"  # 7 Feb 2023: the actual load of 13:00-14:00 is N/A
COPIED_FORECAST = DATA / "entsoe_total-load_CH_2022-06-15.csv"  # 2022: the day-ahead column equals the actuals
QUARTER_HOURS_FALL_BACK = DATA / "entsoe_total-load_ES_2023-10-29.csv"  # Spain, 15 min: 100 rows
QUARTER_HOURS_SPRING = DATA / "entsoe_total-load_NL_2022-03-27.csv"  # the Netherlands, 15 min, "… (NL)" names
ACTUAL = "Actual Total Load [MW] - BZN|CH"
FORECAST = "Day-ahead Total Load Forecast [MW] - BZN|CH"


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_an_entsoe_export_is_told_from_its_header_and_is_another_series() -> None:
    assert history_format(DST_DAYS) == "entsoe" and is_other_series(["entsoe"])


def test_the_spring_forward_padding_row_is_refused_and_counted() -> None:
    df = read_history_file(DST_DAYS)
    day = df[(df["ts"] >= "2018-03-24T23:00Z") & (df["ts"] < "2018-03-25T22:00Z")]  # local 25 Mar: 23 hours
    assert len(day) == 23 and (day["ts"].diff().dropna() == pd.Timedelta(hours=1)).all()
    assert df.attrs["rejections"] == {"local time does not exist in Europe/Brussels (the spring-forward hour)": 1}


def test_the_fall_back_hour_listed_twice_is_summer_time_first() -> None:
    df = read_history_file(DST_DAYS).set_index("ts")["consommation"]
    rows = _rows(DST_DAYS)
    twice = rows.loc[rows["Time (CET/CEST)"] == "28.10.2018 02:00 - 28.10.2018 03:00", ACTUAL].astype(float)
    assert len(twice) == 2
    assert df[pd.Timestamp("2018-10-28T00:00Z")] == twice.iloc[0]  # 02:00 CEST
    assert df[pd.Timestamp("2018-10-28T01:00Z")] == twice.iloc[1]  # 02:00 CET
    day = df[(df.index >= "2018-10-27T22:00Z") & (df.index < "2018-10-28T23:00Z")]
    assert len(day) == 25 and day.index.is_unique


def test_an_n_a_load_is_missing_and_the_others_are_the_file_s_values() -> None:
    df = read_history_file(WITH_NA).set_index("ts")["consommation"]
    assert pd.isna(df[pd.Timestamp("2023-02-07T12:00Z")])  # 13:00-14:00 CET
    rows = _rows(WITH_NA)
    assert df.drop(pd.Timestamp("2023-02-07T12:00Z")).tolist() == [float(v) for v in rows[ACTUAL] if v != "N/A"]


def test_a_dash_is_missing_too(tmp_path: Path) -> None:
    rows = _rows(WITH_NA)
    rows.loc[3, ACTUAL] = "-"
    rows.to_csv(tmp_path / "dash.csv", index=False)
    assert read_history_file(tmp_path / "dash.csv")["consommation"].isna().sum() == 2


def test_named_columns_read_the_day_ahead_forecast() -> None:
    df = read_history_file(WITH_NA, columns=("Time (CET/CEST)", FORECAST))
    assert df["consommation"].tolist() == _rows(WITH_NA)[FORECAST].astype(float).tolist()


def test_the_day_ahead_forecast_is_read_as_the_benchmark() -> None:
    df = read_history_file(DST_DAYS)
    rows = _rows(DST_DAYS)
    assert df["prevision_j1"].tolist() == [float(v) for v in rows[FORECAST] if v]  # the padding row is refused


def test_a_day_ahead_column_that_repeats_the_actual_load_is_no_benchmark() -> None:
    df = read_history_file(COPIED_FORECAST)
    assert "prevision_j1" not in df.columns and len(df) == 24
    assert df.attrs["rejections"] == {"day-ahead forecast column equal to the actual load (not a forecast)": 24}


def test_an_export_in_utc_reads_its_intervals_as_utc(tmp_path: Path) -> None:
    rows = _rows(WITH_NA).rename(columns={"Time (CET/CEST)": "Time (UTC)"})
    rows.to_csv(tmp_path / "utc.csv", index=False)
    df = read_history_file(tmp_path / "utc.csv")
    assert df["ts"].iloc[0] == pd.Timestamp("2023-02-07T00:00Z") and len(df) == 24


def test_an_export_in_another_clock_is_one_clear_error(tmp_path: Path) -> None:
    _rows(WITH_NA).rename(columns={"Time (CET/CEST)": "Time (EET/EEST)"}).to_csv(tmp_path / "eet.csv", index=False)
    with pytest.raises(BadRequestError, match=r"in 'EET/EEST' time; export it in CET/CEST or UTC"):
        read_history_file(tmp_path / "eet.csv")


def test_the_export_says_its_calendar() -> None:
    tz, country, what = source_calendar(DST_DAYS) or ("", "", "")
    assert (tz, country) == ("Europe/Brussels", "CH") and "area CH" in what


def test_evaluate_gives_an_entsoe_series_its_area_s_calendar(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from shared.forecasting import evaluate

    # one day is too short to train on: the run ends with that one-line error, after saying how it reads the file
    assert evaluate.main(["--data", str(WITH_NA), "--test-start", "2023-02-07", "--test-end", "2023-02-08",
                          "--out", str(tmp_path), "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert "note: ENTSO-E export: the actual total load of area CH" in out
    assert "origins daily 12:00 Europe/Brussels; holidays: CH" in out


def test_evaluate_compares_with_the_operator_s_day_ahead_forecast() -> None:
    from shared.forecasting.evaluate import BENCHMARKS, load_data

    grid, benchmark = load_data([DST_DAYS], None)
    assert grid.attrs["benchmark"] == "operator_day_ahead" and "operator_day_ahead" in BENCHMARKS
    assert benchmark is not None
    rows = _rows(DST_DAYS)
    first = rows.loc[rows["Time (CET/CEST)"] == "25.03.2018 00:00 - 25.03.2018 01:00", FORECAST].astype(float).item()
    assert benchmark.set_index("ts")["value"][pd.Timestamp("2018-03-24T23:00Z")] == first


def test_a_quarter_hourly_fall_back_day_is_one_hundred_consecutive_quarter_hours() -> None:
    df = read_history_file(QUARTER_HOURS_FALL_BACK)
    assert len(df) == 100 and (df["ts"].diff().dropna() == pd.Timedelta(minutes=15)).all()
    rows = _rows(QUARTER_HOURS_FALL_BACK)
    actual = "Actual Total Load [MW] - BZN|ES"
    twice = rows.loc[rows["Time (CET/CEST)"] == "29.10.2023 02:00 - 29.10.2023 02:15", actual].astype(float)
    by_ts = df.set_index("ts")["consommation"]
    assert by_ts[pd.Timestamp("2023-10-29T00:00Z")] == twice.iloc[0]  # 02:00 CEST
    assert by_ts[pd.Timestamp("2023-10-29T01:00Z")] == twice.iloc[1]  # 02:00 CET


def test_a_quarter_hourly_spring_forward_day_refuses_its_four_padding_rows() -> None:
    df = read_history_file(QUARTER_HOURS_SPRING)
    assert len(df) == 92 and (df["ts"].diff().dropna() == pd.Timedelta(minutes=15)).all()
    assert df.attrs["rejections"] == {"local time does not exist in Europe/Brussels (the spring-forward hour)": 4}


def test_an_area_named_by_country_gives_its_calendar() -> None:
    assert (source_calendar(QUARTER_HOURS_SPRING) or ("", "", ""))[:2] == ("Europe/Brussels", "NL")
