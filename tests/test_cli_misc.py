"""Command lines' answers to ordinary input mistakes (a robustness probe's findings): ``python -m bench.short_series``,
``python -m shared evaluate-anomalies``, ``python -m shared <unknown command>`` and ``python -m shared config``. One
line on stderr and exit status 2 instead of a traceback, numpy's words or a silent default; strict JSON on stdout.
The series are REAL eco2mix load written as ``timestamp,value`` CSVs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from shared import settings as settings_mod
from shared.settings import REPO_ROOT
from tests.fixtures_forecast import history

SPRING = ("2023-03-01", "2023-05-01")  # the real load the bench windows and the anomaly periods are cut from


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Settings built from this test's environment, and not left cached for the next test."""
    settings_mod.get_settings.cache_clear()
    yield
    settings_mod.get_settings.cache_clear()


def _csv(tmp_path: Path, start: str, end: str) -> Path:
    """Real national load ``start <= ts < end`` as a timestamp,value CSV."""
    h = history(start, end)
    path = tmp_path / "series.csv"
    pd.DataFrame({"timestamp": h["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": h["value"]}).to_csv(
        path, index=False)
    return path


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line on stderr (asserted one line, no traceback)."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- python -m bench.short_series ------------------------------------------------------------------------------------
def _bench(*args: str) -> int:
    from bench.short_series import main

    return main(list(args))


def test_the_bench_summary_of_a_short_window_is_strict_json_with_a_coverage_at_every_lead_day(
        fresh_settings: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real: one window of 35 days of history from 2023-03-02, too short for the model. Until 2026-12-07 its
    simple model was calibrated on an 8-day holdout with no D+7 errors: no D+7 interval, and a NaN mean that was
    not JSON (then null). The fallback's rule (service.best_simple_model) calibrates every lead day."""
    csv = _csv(tmp_path, *SPRING)
    assert _bench("--data", str(csv), "--first-start", "2023-03-02", "--end", "2023-04-30",
                  "--history-days", "35") == 0
    doc = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert all(doc["summary"]["mean_coverage"][d] is not None for d in [f"D+{k}" for k in range(1, 8)])


def test_a_null_mean_in_the_bench_summary_says_why() -> None:
    from bench.short_series import DAYS, summarize

    row = {"start": "2023-03-02", **{d: {"powersense": 5.0, "seasonal_naive": 6.0, "coverage": 0.8} for d in DAYS}}
    row["D+7"] = {"powersense": 5.0, "seasonal_naive": 6.0, "coverage": None}
    summary = summarize([row, row])
    assert list(summary["mean_coverage_reason"]) == ["D+7"] and "no window has a coverage" in \
        summary["mean_coverage_reason"]["D+7"]
    # null in strict JSON (it was NaN, which is not JSON)
    assert json.loads(json.dumps(summary, allow_nan=False))["mean_coverage"]["D+7"] is None


@pytest.mark.parametrize(("option", "value", "least"), [("--every-days", "0", 1), ("--every-days", "-3", 1),
                                                        ("--history-days", "0", 1), ("--retrain-days", "-1", 0)])
def test_a_bench_option_out_of_range_is_one_line(capsys: pytest.CaptureFixture[str], option: str, value: str,
                                                 least: int) -> None:
    assert _bench(option, value) == 2
    assert _error(capsys) == f"bench.short_series: error: {option} must be ≥ {least} (got {value})"


def test_a_missing_bench_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    assert _bench("--data", str(missing), "--first-start", "2023-03-02", "--end", "2023-04-30",
                  "--history-days", "35") == 2
    assert str(missing) in _error(capsys)


def test_a_bench_date_that_is_no_day_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _bench("--first-start", "2023-99-02")
    assert exit_.value.code == 2 and "'2023-99-02' is not a day as YYYY-MM-DD" in capsys.readouterr().err


def test_bench_windows_outside_the_shipped_history_say_what_it_covers(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench("--first-start", "2030-01-05", "--end", "2031-01-01") == 2
    assert _error(capsys).startswith("bench.short_series: error: the shipped history (data/eco2mix) covers the years "
                                     "2000 … 2023, not the period 2030-01-05 … 2031-01-01")


def test_a_window_evaluate_refuses_is_named_under_evaluates_own_line(
        fresh_settings: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real: 10 days of history are fewer than evaluate's 14: its error line, then the bench's naming the window."""
    csv = _csv(tmp_path, *SPRING)
    assert _bench("--data", str(csv), "--first-start", "2023-03-02", "--end", "2023-04-30", "--history-days", "10") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("evaluate: error: only ") and err[-1] == (
        "bench.short_series: error: evaluate failed on the window from 2023-03-02 (10 days of history, test period "
        "2023-03-12 … 2023-04-02): its error is the line above")


# --- python -m shared evaluate-anomalies ---------------------------------------------------------------------------
def _anomalies(tmp_path: Path, *args: str) -> int:
    from shared.detection import evaluate

    return evaluate.main([*args, "--seed", "3", "--out", str(tmp_path / "r")])


@pytest.fixture(scope="module")
def march_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real national load of March 2023 (UTC) as a timestamp,value CSV."""
    return _csv(tmp_path_factory.mktemp("march"), "2023-03-01", "2023-04-01")


def test_an_anomaly_period_ending_before_it_starts_is_said_in_the_users_words(
        march_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2023-03-30", "--end", "2023-03-15") == 2
    assert _error(capsys) == "evaluate-anomalies: error: --end (2023-03-15) must be after --start (2023-03-30)"


def test_an_anomaly_period_too_short_to_inject_into_is_one_line(
        march_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2023-03-20", "--end", "2023-03-22") == 2
    assert _error(capsys) == ("evaluate-anomalies: error: the period --start 2023-03-20 … --end 2023-03-22 is "
                              "shorter than 3 days: anomalies are injected a day clear of each end")


def test_an_anomaly_period_outside_the_data_says_what_the_data_cover(
        march_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2024-01-01", "--end", "2024-02-01") == 2
    assert _error(capsys) == ("evaluate-anomalies: error: no data between 2024-01-01 and 2024-02-01; the data cover "
                              "2023-03-01 to 2023-03-31 23:45 UTC")


def test_an_anomaly_period_with_history_before_it_but_no_data_in_it_is_one_line(
        march_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The 70 days of calibration history before 2023-04-05 are in the file; the period itself is not."""
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2023-04-05", "--end", "2023-04-20") == 2
    assert _error(capsys).startswith("evaluate-anomalies: error: no data between 2023-04-05 and 2023-04-20")


def test_an_anomaly_period_past_the_data_is_evaluated_to_their_end_and_says_so(
        march_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # it injected into the days without data and reported their weeks, without a word
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2023-03-10", "--end", "2023-04-20",
                      "--per-kind", "1", "--no-progress") == 0
    assert ("note: the data end on 2023-04-01: evaluated 2023-03-10 … 2023-04-01, 22.0 of the period's 41.0 days"
            in capsys.readouterr().out.splitlines())
    period = json.loads((tmp_path / "r" / "anomaly_eval.json").read_text())["period"]
    assert (period["end"], period["weeks"]) == ("2023-04-01T00:00:00+00:00", round(22 / 7, 2))


def test_an_anomaly_period_with_too_little_data_before_their_end_is_one_line(
        march_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2023-03-30", "--end", "2023-04-20") == 2
    assert _error(capsys) == ("evaluate-anomalies: error: the data end on 2023-04-01, less than 3 days after "
                              "--start 2023-03-30: anomalies are injected a day clear of each end")


def test_no_progress_leaves_no_progress_bar_on_stderr(march_csv: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """As evaluate's --no-progress: a scripted run's stderr holds no tqdm bars."""
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2023-03-10", "--end", "2023-03-31",
                      "--per-kind", "1", "--no-progress") == 0
    assert "run/s" not in capsys.readouterr().err and (tmp_path / "r" / "anomaly_eval.json").is_file()


@pytest.mark.parametrize("per_kind", ["0", "-2"])
def test_a_per_kind_below_one_is_refused(march_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         per_kind: str) -> None:
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2023-03-10", "--end", "2023-03-31",
                      "--per-kind", per_kind) == 2
    assert _error(capsys) == (f"evaluate-anomalies: error: --per-kind must be ≥ 1 (anomalies injected per kind; "
                              f"got {per_kind})")


@pytest.mark.parametrize("option", ["--timezone", "--holidays"])
def test_an_empty_anomaly_calendar_option_is_refused(march_csv: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str], option: str) -> None:
    assert _anomalies(tmp_path, "--data", str(march_csv), "--start", "2023-03-10", "--end", "2023-03-31",
                      "--per-kind", "1", option, "") == 2
    assert _error(capsys).startswith(f"evaluate-anomalies: error: {option} is empty: ")


def test_an_anomaly_period_outside_the_shipped_history_says_what_it_covers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _anomalies(tmp_path, "--start", "2030-01-01", "--end", "2030-02-01") == 2
    assert _error(capsys).startswith("evaluate-anomalies: error: the shipped history (data/eco2mix) covers the years "
                                     "2000 … 2023, not the period 2030-01-01 … 2030-02-01")


def test_injecting_where_there_is_no_value_gives_an_empty_label_table() -> None:
    """Real March 2023 load, then an April with no value: nothing can be injected there, and the labels are an
    empty table of the usual columns (a KeyError before)."""
    from shared.detection.evaluate import inject
    from shared.detection.residual import regular_grid

    h = history("2023-03-01", "2023-04-01")
    x = regular_grid(h[["ts", "value"]])
    x = x.reindex(pd.date_range(x.index[0], periods=len(x) + 30 * 96, freq="15min"))
    _, labels = inject(x, pd.Timestamp("2023-04-05", tz="UTC"), pd.Timestamp("2023-04-30", tz="UTC"), 2, 3)
    assert labels.empty and list(labels.columns) == ["kind", "start", "end", "steps", "magnitude"]


# --- python -m shared <command> ------------------------------------------------------------------------------------
def test_the_anomaly_table_shows_a_dash_where_no_anomaly_of_a_kind_was_detected() -> None:
    # until 2026-12-07 the Markdown table printed Python's "None" as the median time to detect
    from shared.detection.evaluate import KINDS, table

    def detector(ttd: float | None) -> dict[str, object]:
        scores = {"precision": 0.5, "recall": 0.5, "f1": 0.5}
        # false alarms are None in a deployed run without --deployed-clean
        return {"per_kind": dict.fromkeys(KINDS, scores), "overall": scores, "false_alarms_per_week": ttd and 1.0,
                "median_time_to_detect_min": dict.fromkeys(KINDS, ttd)}

    text = table({"detectors": {"powersense": detector(15.0), "zscore_baseline": detector(None),
                                "powersense_profile": detector(None)}})
    assert "None" not in text
    assert f"| {KINDS[0]} | 0.50 / 0.50 / 0.50 | 15.0 | 0.50 / 0.50 / 0.50 | – |" in text
    assert "| false alarms / week (clean) | 1.0 | | – | |" in text


def test_an_unknown_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.__main__ import main

    assert main(["nonsense"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "python -m shared: error: unknown command 'nonsense'"


# --- python -m shared config ---------------------------------------------------------------------------------------
def test_config_with_an_invalid_setting_is_one_line_and_no_table(
        fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from shared.config_doc import main

    monkeypatch.setenv("POWERSENSE_FORECAST_HOLDOUT_DAYS", "-1")
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(
        "config: error: invalid configuration: POWERSENSE_FORECAST_HOLDOUT_DAYS: ") and captured.err.count("\n") == 1


def test_a_list_setting_takes_the_comma_separated_form_the_readme_writes(
        fresh_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # only a JSON list was read: the README's POWERSENSE_WEATHER_MODELS=meteofrance_seamless,ecmwf_ifs025 failed
    monkeypatch.setenv("POWERSENSE_WEATHER_MODELS", "meteofrance_seamless, ecmwf_ifs025")
    assert settings_mod.get_settings().weather_models == ["meteofrance_seamless", "ecmwf_ifs025"]


def test_a_list_setting_that_is_broken_json_is_one_line_naming_the_variable(
        fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from shared.config_doc import main

    monkeypatch.setenv("POWERSENSE_SOURCE_NATURES", '["Données temps réel"')
    assert main([]) == 2
    assert _error(capsys).startswith("config: error: invalid configuration: POWERSENSE_SOURCE_NATURES: ")


def test_config_warns_of_a_misspelled_setting_and_names_the_closest(
        fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from shared.config_doc import main

    monkeypatch.setenv("POWERSENSE_FORECAST_HOLDOUTDAYS", "20")
    assert main([]) == 0
    assert ("warning: POWERSENSE_FORECAST_HOLDOUTDAYS is not a setting (did you mean "
            "POWERSENSE_FORECAST_HOLDOUT_DAYS?); it is ignored") in capsys.readouterr().err.splitlines()


def test_every_powersense_variable_of_the_deploy_files_is_known_to_config() -> None:
    """A POWERSENSE_* name the repository's deployment, demo and dbt files use is a setting or one of config's other
    variables: a deployment never gets a 'not a setting' warning for the repository's own variables."""
    from shared.config_doc import unknown_variables

    files = [*(REPO_ROOT / "deploy").rglob("*"), *(REPO_ROOT / "local_dev").rglob("*.py"), REPO_ROOT / "Makefile",
             *(REPO_ROOT / "observability").rglob("*"), REPO_ROOT / "docker-compose.yml",
             REPO_ROOT / "openfaas-stack.yml", REPO_ROOT / "template.yaml", REPO_ROOT / "dbt" / "profiles.yml"]
    # a name ending in "_" is a family written as POWERSENSE_WEATHER_* in prose, not a variable
    names = {m for f in files if f.is_file() for m in re.findall(r"POWERSENSE_[A-Z0-9_]*[A-Z0-9]\b(?!\*)",
                                                                   f.read_text(errors="ignore"))}
    assert names and unknown_variables(dict.fromkeys(names, "")) == []


# --- every python -m shared command goes through run_cli ---------------------------------------------------------
def _shared(*args: str) -> int:
    from shared.__main__ import main

    return main(list(args))


def _last_error(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr's last line: a command that opens the store logs (JSON) before its error; the exit status, returned
    rather than raised, is what shows run_cli answered."""
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_weather_backfill_before_the_bootstrap_is_one_line_and_exit_1(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A command run before the one it needs is the product's ConflictError in one line (it was a traceback)."""
    assert _shared("weather-backfill", "--start", "2023-01-01", "--end", "2023-01-08") == 1
    assert _last_error(capsys).startswith("weather-backfill: error: the eco2mix history bootstrap has not completed")


def test_an_origin_hour_out_of_range_for_the_stored_forecast_backtest_is_one_line(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _shared("evaluate-weather-store", "--test-start", "2023-01-01", "--test-end", "2023-02-01",
                   "--origin-hour", "25") == 2
    assert _last_error(capsys) == "evaluate-weather-store: error: the origin hour must be 0–23 (got 25)"


@pytest.mark.parametrize(("args", "message"), [
    (("weather-backfill", "--start", "04/05/2023"), "argument --start: '04/05/2023' is not a day as YYYY-MM-DD"),
    (("weather-backfill", "--chunk-days", "0"), "--chunk-days must be at least 1 (got 0)"),
    (("bootstrap", "--until", "04/05/2023"), "argument --until: '04/05/2023' is not an ISO 8601 instant"),
    (("evaluate-weather-store", "--test-start", "2023-02-01", "--test-end", "2023-01-01"),
     "--test-end 2023-01-01 must be after --test-start 2023-02-01"),
    (("evaluate-weather-store", "--test-start", "1/2/2023", "--test-end", "2023-02-01"),
     "argument --test-start: '1/2/2023' is not a day as YYYY-MM-DD"),
    (("evaluate-anomalies", "--start", "04/05/2023"), "argument --start: '04/05/2023' is not an ISO 8601 instant"),
    (("evaluate-anomalies", "--end", "yesterday"), "argument --end: 'yesterday' is not an ISO 8601 instant"),
    (("ddl", "--cluster", ""), "--cluster '' is not a cluster name"),
    (("ddl", "--database", "x;drop table y"), "--database 'x;drop table y' is not a database name"),
])
def test_a_command_option_it_cannot_use_is_an_argparse_error(
        args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each used to be a traceback (a date pandas could not read, an empty cluster name printing the single-node
    DDL as if it were the cluster's, a database name written into the DDL as typed) or a silent guess."""
    with pytest.raises(SystemExit) as exit_:
        _shared(*args)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"python -m shared {args[0]}: error: {message}"), last


@pytest.mark.parametrize(("variable", "value"), [
    ("POWERSENSE_HISTORY_UNTIL", "04/05/2023"), ("POWERSENSE_CLICKHOUSE_DATABASE", "electricity; drop"),
])
def test_a_setting_used_only_later_is_checked_at_start_up(
        fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        variable: str, value: str) -> None:
    """A bootstrap cut-off pandas cannot read and a database name that is no identifier (written into the DDL) fail
    when the settings are built, naming the variable; they used to surface only when bootstrap or the DDL ran."""
    monkeypatch.setenv(variable, value)
    assert _shared("config") == 2
    assert _error(capsys).startswith(f"config: error: invalid configuration: {variable}: ")


def test_an_iso_instant_is_normalised_to_the_utc_it_means() -> None:
    from shared.timeutil import iso_instant

    assert [iso_instant(t) for t in ("2023-05-04", "2023-05-04T12:00:00+02:00", "2023-05-04T10:00Z")] == [
        "2023-05-04T00:00:00+00:00", "2023-05-04T10:00:00+00:00", "2023-05-04T10:00:00+00:00"]


def test_the_cli_reads_a_lower_case_z_as_the_query_api_does() -> None:
    # one reading of an instant (shared.timeutil.parse_iso): the API accepted "z", the CLI refused it
    from shared.timeutil import iso_instant

    assert iso_instant("2023-05-04T10:00:00z") == "2023-05-04T10:00:00+00:00"
