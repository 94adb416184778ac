"""NESO demand data (Great Britain) read as downloaded: settlement date + period → UTC instants, on real excerpts
of the two clock-change days (tests/data/README.md), and the calendar an evaluation of it gets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shared.calendar import check_holiday_calendar, public_holidays
from shared.errors import BadRequestError
from shared.ingest.history import history_format, is_other_series, read_history, read_history_file

DATA = Path(__file__).parent / "data"
FALL_BACK = DATA / "neso_demanddata_2021_fall-back.csv"  # 30 Oct – 1 Nov 2021: 48, 50, 48 periods
SPRING_FORWARD = DATA / "neso_demanddata_2022_spring-forward.csv"  # 26 – 28 Mar 2022: 48, 46, 48 periods


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def test_a_neso_file_is_told_from_its_header() -> None:
    assert history_format(FALL_BACK) == "neso"


def test_the_fall_back_day_s_fifty_periods_are_fifty_consecutive_half_hours() -> None:
    df = read_history_file(FALL_BACK)
    assert len(df) == 146 and df["ts"].is_unique
    assert (df["ts"].diff().dropna() == pd.Timedelta(minutes=30)).all()
    # local midnight of 31 Oct 2021 is 23:00 UTC (summer time); period 50 is 23:30-24:00 GMT
    day = df[(df["ts"] >= "2021-10-30T23:00Z") & (df["ts"] < "2021-11-01T00:00Z")]
    assert len(day) == 50


def test_the_spring_forward_day_s_forty_six_periods_start_at_midnight_utc() -> None:
    df = read_history_file(SPRING_FORWARD)
    assert len(df) == 142 and (df["ts"].diff().dropna() == pd.Timedelta(minutes=30)).all()
    day = df[(df["ts"] >= "2022-03-27T00:00Z") & (df["ts"] < "2022-03-27T23:00Z")]
    assert len(day) == 46


def test_national_demand_is_the_value_of_its_row() -> None:
    df = read_history_file(SPRING_FORWARD).set_index("ts")["consommation"]
    rows = _rows(SPRING_FORWARD)
    # period 3 of the spring-forward day: 01:00-01:30 UTC (the clocks went forward at 01:00 UTC)
    nd = rows.loc[(rows["SETTLEMENT_DATE"] == "27-MAR-2022") & (rows["SETTLEMENT_PERIOD"] == 3), "ND"].item()
    assert df[pd.Timestamp("2022-03-27T01:00Z")] == nd
    # period 48 of the next day: 23:30-24:00 BST = 22:30 UTC
    nd = rows.loc[(rows["SETTLEMENT_DATE"] == "28-MAR-2022") & (rows["SETTLEMENT_PERIOD"] == 48), "ND"].item()
    assert df[pd.Timestamp("2022-03-28T22:30Z")] == nd


def test_named_columns_read_another_column_of_a_neso_file() -> None:
    df = read_history_file(FALL_BACK, columns=("SETTLEMENT_DATE", "TSD"))
    assert df["consommation"].tolist() == _rows(FALL_BACK)["TSD"].astype(float).tolist()


def test_iso_settlement_dates_read_like_the_older_spelling(tmp_path: Path) -> None:
    # the portal's files from 2023 on write 2023-01-01 where the older ones wrote 01-JAN-2023
    rows = _rows(SPRING_FORWARD)
    rows["SETTLEMENT_DATE"] = pd.to_datetime(rows["SETTLEMENT_DATE"], format="%d-%b-%Y").dt.strftime("%Y-%m-%d")
    rows.to_csv(tmp_path / "iso.csv", index=False)
    pd.testing.assert_frame_equal(read_history_file(tmp_path / "iso.csv"), read_history_file(SPRING_FORWARD),
                                  check_like=True)


def test_a_period_beyond_its_day_s_half_hours_is_refused_and_counted(tmp_path: Path) -> None:
    rows = _rows(SPRING_FORWARD)
    # a 47th period on the 46-period day would be the next day's first instant read twice
    rows.loc[(rows["SETTLEMENT_DATE"] == "27-MAR-2022") & (rows["SETTLEMENT_PERIOD"] == 46), "SETTLEMENT_PERIOD"] = 47
    rows.to_csv(tmp_path / "bad.csv", index=False)
    df = read_history_file(tmp_path / "bad.csv")
    assert len(df) == 141
    assert df.attrs["rejections"] == {"settlement period outside its local day's half-hours": 1}


def test_forecast_rows_of_the_update_file_are_refused_and_counted(tmp_path: Path) -> None:
    rows = _rows(FALL_BACK)
    rows["FORECAST_ACTUAL_INDICATOR"] = ["A"] * 98 + ["F"] * 48
    rows.to_csv(tmp_path / "update.csv", index=False)
    df = read_history_file(tmp_path / "update.csv")
    assert len(df) == 98 and df.attrs["rejections"] == {"forecast row, not an outturn": 48}


def test_a_neso_file_is_another_series_than_france_s() -> None:
    h = read_history([FALL_BACK, SPRING_FORWARD])
    assert h.attrs["formats"] == ["neso"] and is_other_series(h.attrs["formats"])


def test_mixing_france_s_files_with_another_series_is_one_clear_error() -> None:
    with pytest.raises(BadRequestError, match="mix France's national load"):
        is_other_series(["neso", "rte"])


def test_england_s_calendar_has_easter_monday_which_the_whole_kingdom_s_lacks() -> None:
    easter_monday = pd.Timestamp("2022-04-18").date()
    assert easter_monday in public_holidays(2022, "GB-ENG") and easter_monday not in public_holidays(2022, "GB")


def test_an_unknown_subdivision_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown subdivision 'XYZ' of GB \(its subdivisions: ENG"):
        check_holiday_calendar("GB-XYZ")


def test_evaluate_gives_a_neso_series_great_britain_s_calendar(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from shared.forecasting import evaluate

    # three days are too short to train on: the run ends with that one-line error, after saying how it reads them
    assert evaluate.main(["--data", str(FALL_BACK), "--test-start", "2021-11-01", "--test-end", "2021-11-02",
                          "--out", str(tmp_path), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "days of valid history" in err
    assert "note: NESO demand data: Great Britain's National Demand" in out
    assert "days of Europe/London, holidays GB-ENG" in out
    assert "origins daily 12:00 Europe/London; holidays: GB-ENG" in out
