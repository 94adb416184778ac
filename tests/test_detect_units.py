"""Pure detection functions on real eco2mix data: causality of the residual detector (what the cron
replay relies on), the z-score baseline, DST helpers, PSI, and the evaluation CLI's output shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_detect import ECO2MIX, real_load, utc

from shared.calendar import expected_steps
from shared.detection import evaluate
from shared.detection.drift import psi
from shared.detection.quality import completeness, interpolated
from shared.detection.residual import detect_residual, is_fallback_gap, profile_delta, regular_grid
from shared.detection.zscore import detect_zscore


@pytest.fixture(scope="module")
def spring_2023() -> pd.Series:
    """Real 2023 consumption, January to May, on its 15-min grid."""
    return regular_grid(real_load("2023-01-01", "2023-05-01")[["ts", "value"]])


@pytest.mark.parametrize(("day", "ignore_gap", "slots"), [("2023-03-26", True, 92), ("2023-06-01", True, 96),
                                                          ("2023-10-29", True, 96), ("2023-10-29", False, 100)])
def test_local_day_has_dst_aware_quarter_hours(day: str, ignore_gap: bool, slots: int) -> None:
    # the fall-back day's first repeated hour is never published by RTE: with the rule on it is not expected
    assert expected_steps(pd.Timestamp(day, tz="Europe/Paris"), ignore_fallback_gap=ignore_gap) == slots


def test_completeness_finds_the_real_fall_back_day_complete() -> None:
    """Real: 2023-10-29 holds 96 quarter-hours (RTE publishes the repeated 02:xx hour once). Detect warned on every
    fall-back day (96 of 100 < 0.98) while poll's gap proof called it resolved."""
    days = real_load("2023-10-27 22:00", "2023-10-30 23:00")
    checks = completeness(days, utc("2023-10-30 23:00"), 3, 15, 0.98)
    fall_back = next(c for c in checks if c["scope"] == "2023-10-29")
    assert (fall_back["status"], fall_back["details"]["present"], fall_back["details"]["expected_steps"]) == (
        "ok", 96, 96)
    assert [c["status"] for c in checks] == ["ok", "ok", "ok"]


def test_interpolated_check_warns_on_the_sources_straight_line() -> None:
    """Real: 2023-11-01 22:45 UTC … 11-02 19:00 UTC the real-time data is one straight line (82 quarter-hours between
    two real values); the two days after it have none."""
    ramp_day = real_load("2023-11-01 12:00", "2023-11-03")
    c = interpolated(ramp_day.assign(raw_value=ramp_day["value"]), 6)
    assert (c["check"], c["value"], c["status"]) == ("interpolated", 82.0, "warn")
    assert c["details"]["first"] == "2023-11-01T22:45:00+00:00"
    clean = real_load("2023-11-03", "2023-11-05")
    assert interpolated(clean, 6)["status"] == "ok"


def test_fallback_gap_is_the_first_repeated_local_hour() -> None:
    ts = pd.date_range("2023-10-28 23:00", "2023-10-29 02:00", freq="15min", tz="UTC")
    assert list(ts[is_fallback_gap(ts)].strftime("%H:%M")) == ["00:00", "00:15", "00:30", "00:45"]


def test_residual_detector_decides_from_the_past_only(spring_2023: pd.Series) -> None:
    # what a run at time T reports must not change when later data exists: the cron replay relies on it
    x, _ = evaluate.inject(spring_2023, utc("2023-03-01"), utc("2023-05-01"), per_kind=4, seed=7)
    cut = utc("2023-04-02 12:00")
    full = detect_residual(x, profile_delta(x), detect_from=utc("2023-03-01"))
    early = detect_residual(x[x.index <= cut], profile_delta(x[x.index <= cut]), detect_from=utc("2023-03-01"))
    decided = full[full["decided_ts"] <= cut].drop(columns="superseded").reset_index(drop=True)
    assert len(decided) > 0
    pd.testing.assert_frame_equal(decided, early.drop(columns="superseded").reset_index(drop=True))


def test_zscore_baseline_flags_a_gross_dip(spring_2023: pd.Series) -> None:
    x = spring_2023.copy()
    t = utc("2023-04-19 12:00")
    x[t] *= 0.5  # the seasonal z-score only sees gross errors: its 8-week buckets are wide in spring
    rows = detect_zscore(x, detect_from=utc("2023-04-19"))
    assert rows.set_index("ts").loc[t, "kind"] == "dip"


def test_psi_separates_a_shifted_distribution() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(50_000, 5_000, 5_000)
    assert psi(ref, rng.normal(50_000, 5_000, 500)) < 0.1 < 0.5 < psi(ref, rng.normal(58_000, 5_000, 500))


def test_evaluate_cli_writes_the_report_shape_and_a_png(tmp_path: Path) -> None:
    files = [str(ECO2MIX / "eco2mix_national_2023.csv.gz")]
    code = evaluate.main(
        [
            "--data",
            *files,
            "--start",
            "2023-04-01T00:00:00Z",
            "--end",
            "2023-06-01T00:00:00Z",
            "--seed",
            "3",
            "--per-kind",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    report = json.loads((tmp_path / "anomaly_eval.json").read_text())
    ps = report["detectors"]["powersense"]
    assert code == 0 and (tmp_path / "anomaly_eval.png").stat().st_size > 0
    assert set(report["detectors"]) == {"powersense", "zscore_baseline"}
    assert {"precision", "recall", "f1"} <= set(ps["overall"]) and set(ps["per_kind"]) == set(evaluate.KINDS)
    assert {"median_time_to_detect_min", "false_alarms_per_week"} <= set(report["detectors"]["zscore_baseline"])


def test_residual_params_come_from_the_settings() -> None:
    from shared.detection.residual import ResidualParams
    from shared.settings import Settings

    p = ResidualParams.from_settings(Settings(detect_onset_z=9.5, detect_level_shift_z=6.0))
    assert (p.onset_z, p.shift_z) == (9.5, 6.0)
    assert p.calibration_days == Settings.model_fields["detect_calibration_days"].default


def test_evaluate_cli_ends_a_bad_input_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.csv"
    other.write_text("when,load\n2023-01-01T00:00Z,1\n", encoding="utf-8")
    assert evaluate.main(["--data", str(other), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("evaluate-anomalies: error: ") and "Traceback" not in err


@pytest.mark.parametrize(("day", "country", "kind"), [
    ("2023-07-14", "FR", 4), ("2023-07-14", "GB-ENG", 2), ("2023-07-14", "", 2),  # Bastille Day, a Friday
    ("2023-08-28", "FR", 0), ("2023-08-28", "GB-ENG", 4),  # England's summer bank holiday, a Monday
])
def test_day_types_follow_the_given_holiday_calendar(day: str, country: str, kind: int) -> None:
    from shared.calendar import day_type

    assert day_type(pd.DatetimeIndex([day]), country)[0] == kind


def test_the_profile_copies_sundays_for_a_holiday_of_its_calendar() -> None:
    """Real: 1 May 2023 (a Monday, France's Labour Day). With France's calendar the profile copies Sundays (9.8 %
    above the day's load); with no holidays it copies Mondays (27.7 % above)."""
    from shared.calendar import FRANCE, Calendar
    from shared.detection.residual import profile_level

    x = regular_grid(real_load("2023-03-01", "2023-05-01T22:00")[["ts", "value"]])
    day = x[x.index >= utc("2023-04-30T22:00")]  # the local day 1 May
    err = {name: float((profile_level(x, calendar=cal)[day.index] / day - 1).abs().mean())
           for name, cal in (("FR", FRANCE), ("none", Calendar("Europe/Paris", "")))}
    assert err["FR"] < err["none"] / 2


def _as_generic_csv(path: Path, start: str, end: str) -> Path:
    load = real_load(start, end)
    pd.DataFrame({"timestamp": load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": load["value"]}).to_csv(
        path, index=False)
    return path


_PERIOD = ["--start", "2023-04-01T00:00:00Z", "--end", "2023-05-01T00:00:00Z", "--seed", "3", "--per-kind", "2"]


def test_evaluate_anomalies_reads_a_generic_series_with_utc_days_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _as_generic_csv(tmp_path / "series.csv", "2023-01-15", "2023-05-02")
    assert evaluate.main(["--data", str(csv), *_PERIOD, "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "anomaly_eval.json").read_text())
    assert report["calendar"] == {"timezone": "UTC", "holidays": None}
    assert "read with UTC days and no public holidays" in capsys.readouterr().out


def test_evaluate_anomalies_with_the_series_calendar_scores_it_as_the_eco2mix_file(tmp_path: Path) -> None:
    """The same real load as a timestamp,value CSV with --timezone/--holidays of France: every detector figure
    equals the run on the shipped file, whose calendar is France's."""
    csv = _as_generic_csv(tmp_path / "series.csv", "2023-01-01", "2024-01-01")
    assert evaluate.main(["--data", str(csv), *_PERIOD, "--timezone", "Europe/Paris", "--holidays", "FR",
                          "--out", str(tmp_path / "generic")]) == 0
    assert evaluate.main(["--data", str(ECO2MIX / "eco2mix_national_2023.csv.gz"), *_PERIOD,
                          "--out", str(tmp_path / "eco2mix")]) == 0
    generic, eco2mix = (json.loads((tmp_path / d / "anomaly_eval.json").read_text()) for d in ("generic", "eco2mix"))
    assert generic["calendar"] == eco2mix["calendar"] == {"timezone": "Europe/Paris", "holidays": "FR"}
    assert generic["detectors"] == eco2mix["detectors"]


def test_evaluate_anomalies_reads_named_columns_and_wall_clock_times_as_evaluate_does(tmp_path: Path) -> None:
    """The same real load written as a spreadsheet would (other column names, Paris wall-clock times, day first)
    scores exactly as its UTC timestamp,value twin, with --columns and --naive-timestamps local."""
    load = real_load("2023-01-15", "2023-05-02")
    utc_csv = _as_generic_csv(tmp_path / "utc.csv", "2023-01-15", "2023-05-02")
    local_csv = tmp_path / "local.csv"
    pd.DataFrame({"Datetime": load["ts"].dt.tz_convert("Europe/Paris").dt.strftime("%d/%m/%Y %H:%M"),
                  "Load MW": load["value"]}).to_csv(local_csv, index=False)
    calendar = ["--timezone", "Europe/Paris", "--holidays", "FR"]
    assert evaluate.main(["--data", str(utc_csv), *_PERIOD, *calendar, "--out", str(tmp_path / "utc")]) == 0
    assert evaluate.main(["--data", str(local_csv), *_PERIOD, *calendar, "--columns", "Datetime,Load MW",
                          "--naive-timestamps", "local", "--out", str(tmp_path / "local")]) == 0
    utc, local = (json.loads((tmp_path / d / "anomaly_eval.json").read_text()) for d in ("utc", "local"))
    assert local["detectors"] == utc["detectors"]


def test_evaluate_anomalies_names_an_unknown_calendar_in_one_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(ECO2MIX / "eco2mix_national_2023.csv.gz")]
    assert evaluate.main(["--data", *files, *_PERIOD, "--holidays", "XX", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate-anomalies: error: unknown holiday calendar 'XX'") and len(err.splitlines()) == 1


def test_a_series_noisier_than_the_fixed_cap_is_judged_on_its_own_scale() -> None:
    """Real: Switzerland's hourly total load, Q1 2023 (ENTSO-E export). Its residuals are ~6 % of the load (France's
    15-min load: ~0.5 %); with the scale capped at 0.75 % of the load, as tuned for France, the detector raised 134
    alarms over these 6.4 clean weeks (20.9 a week). The cap now never goes below the series' own typical scale."""
    from shared.calendar import Calendar
    from shared.detection.residual import ResidualParams
    from shared.ingest.history import read_history
    from shared.settings import get_settings

    data = Path(__file__).parent / "data" / "entsoe_total-load_CH_2023-Q1.csv.gz"
    x = regular_grid(read_history([data]).rename(columns={"consommation": "value"})[["ts", "value"]])
    start, calendar = utc("2023-02-15"), Calendar("Europe/Brussels", "CH")
    rows = detect_residual(x, profile_delta(x, calendar=calendar), ResidualParams.from_settings(get_settings()),
                           start, calendar.tz)
    weeks = (x.index[-1] - start) / pd.Timedelta(weeks=1)
    assert len(evaluate.events_of(rows, pd.Timedelta(hours=1))) <= weeks


@pytest.fixture(scope="module")
def hourly_spring_2023(spring_2023: pd.Series) -> pd.Series:
    """The same real load as an hourly series (the mean of each hour's four quarter-hours)."""
    return spring_2023.resample("60min").mean()


def test_a_six_hour_drop_of_an_hourly_series_is_a_level_shift(hourly_spring_2023: pd.Series) -> None:
    """The level-shift span is a time (2 h), not a step count: counted in 15-min steps it was 8 hours of an hourly
    series, and a real 6-hour drop was called a dip."""
    x = hourly_spring_2023.copy()
    shift = (x.index >= utc("2023-04-18 08:00")) & (x.index < utc("2023-04-18 14:00"))
    x[shift] *= 0.9
    rows = detect_residual(x, profile_delta(x), detect_from=utc("2023-04-01"))
    kinds = rows[~rows["superseded"] & rows["ts"].isin(x.index[shift])]["kind"]
    assert len(kinds) >= 4 and set(kinds) == {"level_shift"}, kinds.tolist()


def test_injected_spikes_last_at_most_an_hour_whatever_the_resolution(hourly_spring_2023: pd.Series) -> None:
    """Spikes and dips are 15–60 min at every resolution (one step of an hourly series), shorter than the 2-hour
    level-shift span; counted in steps they lasted up to 4 hours of an hourly series."""
    _, labels = evaluate.inject(hourly_spring_2023, utc("2023-03-01"), utc("2023-05-01"), per_kind=6, seed=3)
    short = labels[labels["kind"].isin(["spike", "dip"])]
    assert len(short) == 12 and set(short["steps"]) == {1}


def test_the_level_shift_span_is_the_same_time_at_every_resolution() -> None:
    from shared.detection.residual import ResidualParams
    from shared.settings import Settings

    p = ResidualParams.from_settings(Settings())
    assert [p.level_shift_min_steps(m) for m in (15, 30, 60)] == [8, 4, 2]


def test_a_missing_block_is_as_severe_for_the_same_time_at_every_resolution() -> None:
    """Severity of a missing or stuck block is its duration: one missing hour of an hourly series is four missing
    quarter-hours (medium), four hours either way high; counted in steps the hourly hour was 'low'."""
    from shared.detection.service import severity

    assert [severity("missing", None, None, n * m) for n, m in ((1, 60), (4, 15), (3, 15), (4, 60), (16, 15))] == [
        "medium", "medium", "low", "high", "high"]


@pytest.fixture(scope="module")
def spring_2023_in_gw(spring_2023: pd.Series) -> pd.Series:
    """The same real load as published in GW with two decimals (10 MW steps: exact repeats come by chance)."""
    return (spring_2023 / 10).round() * 10


def test_a_series_that_repeats_values_by_chance_gets_no_flatline_for_one_repeat(spring_2023_in_gw: pd.Series) -> None:
    """Real load rounded to 10 MW repeats a value ~40 times in two months; one repeat is then the series, not a
    stuck feed (14 flatline rows on these clean months before; Spain's ENTSO-E load, ~6 chance repeats a week,
    had 78 false flatline alarms in 2023-Q2…Q4)."""
    x = spring_2023_in_gw
    assert int((x.diff() == 0).sum()) >= 30  # the premise: chance repeats are common here
    rows = detect_residual(x, profile_delta(x), detect_from=utc("2023-03-01"))
    assert rows[rows["kind"] == "flatline"].empty


def test_a_run_of_repeats_is_still_a_flatline_where_single_repeats_are_chance(spring_2023_in_gw: pd.Series) -> None:
    x = spring_2023_in_gw.copy()
    stuck = x.index[(x.index >= utc("2023-04-12 09:00")) & (x.index < utc("2023-04-12 10:00"))]
    x[stuck] = x[stuck[0] - pd.Timedelta(minutes=15)]
    rows = detect_residual(x, profile_delta(x), detect_from=utc("2023-03-01"))
    flat = rows[(rows["kind"] == "flatline") & ~rows["superseded"]]
    assert set(stuck[1:]) <= set(flat["ts"])


def test_the_expected_change_blends_the_forecast_and_the_profile_by_the_configured_weight(
        spring_2023: pd.Series) -> None:
    """Where an issued forecast covers a point its change and the seasonal profile's are averaged with
    POWERSENSE_DETECT_FORECAST_WEIGHT; elsewhere the profile's change stands alone."""
    from shared.detection.service import expectation_deltas

    x = spring_2023[spring_2023.index < utc("2023-04-20")]
    covered = x.index[-8:]
    fd = pd.DataFrame({"ts": covered, "delta": 1000.0, "run_id": "r1", "model_version": "m1"})
    profile = profile_delta(x)
    blended, run_of, _ = expectation_deltas(x, fd, forecast_weight=0.25)
    assert np.allclose(blended[covered], 0.25 * 1000.0 + 0.75 * profile[covered])
    assert blended.drop(covered).equals(profile.drop(covered)) and set(run_of[covered]) == {"r1"}
