"""``python -m shared evaluate``'s answers to options and periods it cannot use (a robustness probe's findings): one
line on stderr and exit status 2 before any training, or a ``note:`` line saying what the run did with them. The
series are REAL eco2mix load written as ``timestamp,value`` CSVs; a synthetic one only where the case is a made-up
series (a constant)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from shared import settings as settings_mod
from shared.errors import BadRequestError
from shared.forecasting.evaluate import daily_origins, data_test_period, format_table, main, score
from shared.settings import Settings
from tests.fixtures_forecast import FAST_MODEL_ENV, history


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for k, v in FAST_MODEL_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("POWERSENSE_FORECAST_HOLDOUT_DAYS", raising=False)  # the default, sized down by history
    monkeypatch.delenv("POWERSENSE_FORECAST_LEVEL_MIN_HISTORY_DAYS", raising=False)  # the default
    settings_mod.get_settings.cache_clear()
    yield settings_mod.get_settings()
    settings_mod.get_settings.cache_clear()


def _csv(tmp_path: Path, start: str, end: str, every: str = "30min", scale: float = 1.0, shift: float = 0.0) -> Path:
    """Real national load ``start <= ts < end`` as a timestamp,value CSV (``value * scale - shift``)."""
    h = history(start, end)
    h = h[h["ts"].dt.floor(every) == h["ts"]]
    path = tmp_path / "series.csv"
    pd.DataFrame({"timestamp": h["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "value": h["value"] * scale - shift}).to_csv(path, index=False)
    return path


def _run(tmp_path: Path, *args: str) -> int:
    return main([*args, "--out", str(tmp_path / "r"), "--no-progress"])


def _error(capsys: pytest.CaptureFixture) -> str:
    """The one line on stderr (asserted one line, no traceback)."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("end", ["2023-04-10", "2023-04-17"])
def test_a_test_end_not_after_the_test_start_is_one_line(fast: Settings, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture, end: str) -> None:
    csv = _csv(tmp_path, "2023-04-01", "2023-04-21")
    assert _run(tmp_path, "--data", str(csv), "--test-start", "2023-04-17", "--test-end", end) == 2
    assert _error(capsys) == f"evaluate: error: --test-end ({end}) must be after --test-start (2023-04-17)"


def test_a_train_start_not_before_the_test_start_is_one_line(fast: Settings, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-04-01", "2023-04-21")
    assert _run(tmp_path, "--data", str(csv), "--train-start", "2023-04-18", "--test-start", "2023-04-17",
                "--test-end", "2023-04-20") == 2
    assert _error(capsys) == "evaluate: error: --train-start (2023-04-18) must be before --test-start (2023-04-17)"


def test_an_empty_period_has_no_origin_as_a_utc_index() -> None:
    day = pd.Timestamp("2023-04-17", tz="UTC")
    origins = daily_origins(day, day)
    assert len(origins) == 0 and str(origins.tz) == "UTC"


@pytest.mark.parametrize("year", ["-5", "0", "20230"])
def test_a_year_that_is_no_calendar_year_is_one_line(fast: Settings, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture, year: str) -> None:
    csv = _csv(tmp_path, "2023-04-01", "2023-04-04")
    assert _run(tmp_path, "--data", str(csv), "--years", year) == 2
    assert _error(capsys).startswith(f"evaluate: error: --years {year}: not a test year (1900 … 2200")


@pytest.mark.parametrize("hour", ["24", "25", "-1"])
def test_an_origin_hour_outside_the_day_is_one_line(fast: Settings, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture, hour: str) -> None:
    csv = _csv(tmp_path, "2023-04-01", "2023-04-04")
    assert _run(tmp_path, "--data", str(csv), "--origin-hour", hour) == 2
    assert _error(capsys) == f"evaluate: error: --origin-hour must be 0–23 (got {hour})"


def test_a_negative_retrain_cadence_is_one_line(fast: Settings, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-04-01", "2023-04-04")
    assert _run(tmp_path, "--data", str(csv), "--retrain-days", "-5") == 2
    assert _error(capsys) == "evaluate: error: --retrain-days must be ≥ 0 (0 = trained once; got -5)"


@pytest.mark.parametrize("option", ["--timezone", "--holidays"])
def test_an_empty_calendar_option_is_one_line(fast: Settings, tmp_path: Path, capsys: pytest.CaptureFixture,
                                              option: str) -> None:
    csv = _csv(tmp_path, "2023-04-01", "2023-04-04")
    assert _run(tmp_path, "--data", str(csv), f"{option}=") == 2
    assert _error(capsys).startswith(f"evaluate: error: {option} is empty: give ")


def test_a_negative_weather_error_scale_is_one_line(fast: Settings, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-04-01", "2023-04-04")
    assert _run(tmp_path, "--data", str(csv), "--weather-error-scale", "-1") == 2
    assert _error(capsys).startswith("evaluate: error: --weather-error-scale must be ≥ 0")


def test_naive_local_timestamps_without_a_timezone_are_one_line(fast: Settings, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-04-01", "2023-04-04")
    assert _run(tmp_path, "--data", str(csv), "--naive-timestamps", "local") == 2
    assert _error(capsys).startswith("evaluate: error: --naive-timestamps local reads the timestamps as the wall "
                                     "clock of --timezone: give --timezone")


def test_a_test_period_after_the_data_is_one_line_before_any_training(fast: Settings, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-03-01", "2023-05-01")
    assert _run(tmp_path, "--data", str(csv), "--test-start", "2024-01-01", "--test-end", "2024-01-08") == 2
    assert _error(capsys) == ("evaluate: error: the data end on 2023-04-30, before the test period 2024-01-01 … "
                              "2024-01-08: no actual to score")
    assert not (tmp_path / "r" / "forecast_eval.json").exists()


def test_test_days_after_the_data_are_counted_in_a_note(fast: Settings, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    # 9.5 days before the first origin: the run stops before training, after the note
    csv = _csv(tmp_path, "2023-04-07", "2023-04-21")
    _run(tmp_path, "--data", str(csv), "--test-start", "2023-04-17", "--test-end", "2023-04-24")
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: the data end")]
    assert notes == ["note: the data end on 2023-04-20; 3 of 7 test days have no actuals (not scored)"]


def test_the_default_test_end_is_named_when_the_data_end_before_it(fast: Settings, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-04-07", "2023-04-21")
    _run(tmp_path, "--data", str(csv), "--test-start", "2023-04-17")
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: the data end")]
    assert notes == ["note: the data end on 2023-04-20; 255 of 259 test days have no actuals (not scored) "
                     "(--test-end defaults to 2024-01-01)"]


# a user's 12 weeks, no test period given: another year used to stop ("the data end on …, before the test period
# 2023-01-01 … 2024-01-01"), 12 weeks of 2023 at the default period's first origin (2022-12-31, before the data:
# "the data's first valid value is on 2023-03-06, after the first forecast origin", until 2026-12-07); the last 21 of
# the 84 days are now the test period
@pytest.mark.parametrize(("start", "end", "why", "test_start"), [
    ("2019-03-04", "2019-05-27", "none of the default one", "2019-05-06"),
    ("2023-03-06", "2023-05-29", "too little history before the default one", "2023-05-08"),
])
def test_data_without_the_default_period_and_its_history_are_tested_on_their_last_quarter(
        fast: Settings, tmp_path: Path, capsys: pytest.CaptureFixture, start: str, end: str, why: str,
        test_start: str) -> None:
    csv = _csv(tmp_path, start, end)
    assert _run(tmp_path, "--data", str(csv)) == 0
    out = capsys.readouterr().out
    assert (f"note: no test period given, and the data hold {why} (2023-01-01 … 2024-01-01): testing on their last "
            "21 days") in out
    report = json.loads((tmp_path / "r" / "forecast_eval.json").read_text())
    assert [pd.Timestamp(t) for t in report["test_period"]] == [pd.Timestamp(test_start, tz="UTC"),
                                                                 pd.Timestamp(end, tz="UTC")]
    assert report["models"]["powersense"]["D+1"]["mape"] is not None


@pytest.mark.parametrize(("start", "end", "days"), [("2022-01-01", "2022-01-23", 7), ("2022-01-01", "2022-01-31", 7),
                                                   ("2022-01-01", "2022-04-01", 22), ("2012-01-01", "2020-01-01", 365)])
def test_the_data_test_period_is_a_quarter_between_a_week_and_a_year(start: str, end: str, days: int) -> None:
    h = history(start, end)
    # the data end at 23:30 UTC the day before
    test_start, test_end = data_test_period(h[["ts", "value"]], "UTC", 14)
    assert test_end == pd.Timestamp(end, tz="UTC") and (test_end - test_start).days == days
    # in Paris the last half-hour (00:30 local) opens one more local day, which the period includes
    assert data_test_period(h[["ts", "value"]], "Europe/Paris", 14)[1] == pd.Timestamp(end, tz="Europe/Paris") + \
        pd.Timedelta(days=1)


def test_the_data_test_period_leaves_the_first_model_its_minimum_history() -> None:
    # 40 days: a quarter is 10 test days, but with 30 days of minimum history (and the origin the day before the
    # period) 9 are left
    h = history("2022-01-01", "2022-02-10")
    test_start, test_end = data_test_period(h[["ts", "value"]], "UTC", 30)
    assert (test_end - test_start).days == 9


def test_data_too_short_for_history_and_a_test_week_are_one_clear_error() -> None:
    # until 2026-12-07 three weeks got a week of test days and stopped later at "only 13.5 days of valid history"
    h = history("2022-01-01", "2022-01-22")
    with pytest.raises(BadRequestError, match=r"the data cover 21\.0 days \(their first value to the end of their "
                                              r"last local day\): a backtest needs at least 22 \(14 days of history "
                                              r"before the first forecast origin, then 7 test days\)"):
        data_test_period(h[["ts", "value"]], "UTC", 14)


def test_data_starting_late_in_their_first_day_count_from_their_first_value() -> None:
    # 22 local days whose first value is at 18:00: 21.25 days of data, too few for 14 days of history and a test
    # week (counted by local days they passed, and the run stopped later at "only 13.8 days of valid history")
    h = history("2022-01-01", "2022-01-23")
    late = h[h["ts"] >= pd.Timestamp("2022-01-01T18:00Z")]
    with pytest.raises(BadRequestError, match=r"the data cover 21\.2 days"):
        data_test_period(late[["ts", "value"]], "UTC", 14)


def test_the_help_states_the_test_end_default(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "local day after the test period (default 2024-01-01" in " ".join(capsys.readouterr().out.split())


def test_the_shipped_history_outside_its_years_says_what_it_covers(fast: Settings, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    assert _run(tmp_path, "--years", "2030") == 2
    err = _error(capsys)
    assert "the shipped history (data/eco2mix, POWERSENSE_HISTORY_FILES) covers the years 2000 … 2023, not the test " \
           "period 2030-01-01 … 2031-01-01: give --data FILE…" in err


def test_a_test_period_before_the_data_names_the_data_start_not_a_negative_span(
        fast: Settings, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-03-01", "2023-05-01")
    assert _run(tmp_path, "--data", str(csv), "--years", "2023") == 2
    out, err = capsys.readouterr()
    assert "spans -" not in out
    assert err.strip() == ("evaluate: error: the data's first valid value is on 2023-03-01, after the first forecast "
                           "origin (2022-12-31 12:00 UTC, the day before the test period): no history to train on; "
                           "give a later test period or older --data")


def test_years_overriding_the_test_start_is_noted(fast: Settings, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-03-01", "2023-05-01")
    _run(tmp_path, "--data", str(csv), "--years", "2023", "--test-start", "2023-04-17")
    assert "note: --years sets the test periods and training windows: --test-start not used" in \
        capsys.readouterr().out.splitlines()


def test_a_large_share_rejected_by_the_gate_is_counted_in_a_note(fast: Settings, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # real load less its median crosses zero (like net load): the gate rejects its non-positive half and the jumps
    # around zero; the run then stops on too little valid history, after the note
    h = history("2023-04-01", "2023-04-21")
    csv = _csv(tmp_path, "2023-04-01", "2023-04-21", shift=float(h["value"].median()))
    _run(tmp_path, "--data", str(csv), "--test-start", "2023-04-17", "--test-end", "2023-04-20")
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: the training-data gate")]
    assert len(notes) == 1
    match = re.search(r"rejected (\d+) of the (\d+) values read .*non_positive \d+", notes[0])
    assert match and int(match[1]) / int(match[2]) > 0.3


def test_a_series_the_gate_rejects_entirely_says_so_in_its_error(fast: Settings, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # SYNTHETIC: a constant series (a stuck meter), every value a flatline
    ts = pd.date_range("2023-03-01", "2023-03-31", freq="30min", tz="UTC", inclusive="left")
    csv = tmp_path / "constant.csv"
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": 50000.0}).to_csv(csv, index=False)
    assert _run(tmp_path, "--data", str(csv), "--test-start", "2023-03-20", "--test-end", "2023-03-27") == 2
    # 18.5 days of half-hours before the first origin (2023-03-19 12:00 UTC)
    assert _error(capsys).endswith("; all 888 values read before it were rejected by the training-data gate: "
                                   "flatline 888")


def test_errors_keep_four_significant_digits() -> None:
    # a series in GW: an error of 1.23456 GW is not rounded to 1.2
    ts = pd.date_range("2023-04-18", periods=4, freq="h", tz="UTC")
    fc = pd.DataFrame({"origin": pd.Timestamp("2023-04-17 12:00", tz="UTC"), "ts": ts, "yhat": 51.23456})
    actual = pd.DataFrame({"ts": ts, "value": 50.0})
    m = score(fc, actual, ts[0], ts[-1] + pd.Timedelta(hours=1), days=range(1, 2), tz="UTC")["D+1"]
    assert (m["mae"], m["rmse"], m["bias"]) == (1.235, 1.235, 1.235)


def test_errors_of_a_series_of_unknown_unit_are_not_labelled_mw() -> None:
    report = {"models": {"powersense": {"D+1": {"mape": 2.1, "mae": 1.235, "rmse": 1.6, "bias": -0.0123,
                                                "coverage": 0.8}}}}
    header, _, row = format_table(report, unit=None).splitlines()
    assert "MW" not in header and "MAE (file's unit)" in header
    assert row == "| powersense | D+1 | 2.10 | 1.235 | 1.600 | -0.01230 | 80.0 % |"


def test_a_generic_series_in_gw_prints_its_errors_in_its_own_unit(fast: Settings, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    # 6 weeks before the test: the best simple model, no network trained; the load written in GW
    csv = _csv(tmp_path, "2023-01-10", "2023-03-10", every="60min", scale=0.001)
    assert _run(tmp_path, "--data", str(csv), "--test-start", "2023-02-22", "--test-end", "2023-03-01") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("| model | horizon | MAPE % | MAE (file's unit) |") for line in lines)
    d1 = next(line for line in lines if line.startswith("| powersense | D+1 |")).split(" | ")
    assert re.fullmatch(r"\d\.\d{3}", d1[3])  # MAE of a few GW, four significant digits


@pytest.mark.parametrize("day", ["04/05/2023", "17/04/2023", "May 4 2023"])
def test_a_test_day_not_written_yyyy_mm_dd_is_refused_not_guessed(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  day: str) -> None:
    # pandas reads 04/05/2023 month first (5 April) and 17/04/2023 day first: one file, two conventions
    with pytest.raises(SystemExit) as stop:
        _run(tmp_path, "--test-start", day)
    assert stop.value.code == 2
    assert f"argument --test-start: {day!r} is not a day as YYYY-MM-DD" in capsys.readouterr().err
