"""A misconfigured function stops at start-up with one line naming the variable, or at least says so in its logs:
the operator's mistakes that used to start a function and fail later (or never)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shared import settings as settings_mod
from shared.errors import ConfigurationError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment with no secrets directory and the settings cache cleared around the test."""
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path / "secrets"))
    settings_mod.get_settings.cache_clear()
    yield monkeypatch
    settings_mod.get_settings.cache_clear()


@pytest.fixture
def secrets(env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The (empty) secrets directory the settings read."""
    path = tmp_path / "secrets"
    path.mkdir()
    return path


def _error(env: pytest.MonkeyPatch) -> str:
    settings_mod.get_settings.cache_clear()
    with pytest.raises(ConfigurationError) as exc:
        settings_mod.get_settings()
    return str(exc.value)


@pytest.mark.parametrize("variable", ["POWERSENSE_SOURCE_URL", "POWERSENSE_WEATHER_URL",
                                      "POWERSENSE_WEATHER_ARCHIVE_URL", "POWERSENSE_CLICKHOUSE_URL",
                                      "POWERSENSE_S3_ENDPOINT_URL"])
def test_a_url_without_its_scheme_stops_the_start_up(env: pytest.MonkeyPatch, variable: str) -> None:
    env.setenv(variable, "odre.opendatasoft.com/api/explore/v2.1")
    assert f"{variable}: " in _error(env) and "http:// or https://" in _error(env)


@pytest.mark.parametrize("url", ["http://", "https://:8123", "http://clickhouse:port"])
@pytest.mark.parametrize("variable", ["POWERSENSE_SOURCE_URL", "POWERSENSE_S3_ENDPOINT_URL"])
def test_a_url_without_a_host_or_with_a_bad_port_stops_the_start_up(
    env: pytest.MonkeyPatch, url: str, variable: str
) -> None:
    env.setenv(variable, url)
    assert f"{variable}: " in _error(env)


def test_a_url_is_read_without_surrounding_spaces(env: pytest.MonkeyPatch) -> None:
    env.setenv("POWERSENSE_WEATHER_URL", " https://api.open-meteo.com/v1/ ")
    assert settings_mod.get_settings().weather_url == "https://api.open-meteo.com/v1"


def test_a_clickhouse_server_without_a_shared_artifact_store_stops_the_start_up(env: pytest.MonkeyPatch) -> None:
    # each container's own disk: forecast's models invisible to query, lost on restart
    env.delenv("POWERSENSE_ARTIFACTS_DIR", raising=False)
    env.setenv("POWERSENSE_CLICKHOUSE_URL", "http://clickhouse:8123")
    assert "POWERSENSE_S3_BUCKET: with a ClickHouse server" in _error(env)


def test_a_clickhouse_server_may_use_a_directory_the_operator_names(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("POWERSENSE_ARTIFACTS_DIR", str(tmp_path / "shared-volume"))
    env.setenv("POWERSENSE_CLICKHOUSE_URL", "http://clickhouse:8123")
    assert settings_mod.get_settings().artifacts_backend == "local"


@pytest.mark.parametrize("url", [None, "", "  "])
def test_a_deployed_function_without_a_clickhouse_server_stops_the_start_up(env: pytest.MonkeyPatch,
                                                                            url: str | None) -> None:
    """In the function image (which sets ``fprocess``) an unset or empty URL used to mean embedded chDB: each
    container its own database on its own disk."""
    env.setenv("fprocess", "uvicorn handler:app --host 127.0.0.1 --port 8000")
    env.delenv("POWERSENSE_CLICKHOUSE_URL", raising=False)
    if url is not None:
        env.setenv("POWERSENSE_CLICKHOUSE_URL", url)
    assert "POWERSENSE_CLICKHOUSE_URL: must be set in a deployed function" in _error(env)


def test_inverted_plausibility_bounds_stop_the_start_up(env: pytest.MonkeyPatch) -> None:
    env.setenv("POWERSENSE_PLAUSIBILITY_MAX_VALUE_MW", "150")  # typed in GW: every real load would be flagged
    assert "POWERSENSE_PLAUSIBILITY_MIN_VALUE_MW (14000) must be below" in _error(env)


@pytest.mark.parametrize("step", [15, 30, 60])
def test_the_forecast_grid_step_is_read_from_the_environment(env: pytest.MonkeyPatch, step: int) -> None:
    # the environment gives text; until 2026-12-07 even "30", the default, stopped the start-up
    env.setenv("POWERSENSE_FORECAST_RESOLUTION_MIN", str(step))
    settings_mod.get_settings.cache_clear()
    assert settings_mod.get_settings().forecast_resolution_min == step


@pytest.mark.parametrize("text", ["45", "²", "٣٠"])  # not a choice; a superscript and Arabic-Indic digits
def test_a_forecast_grid_step_that_is_no_choice_stops_the_start_up(env: pytest.MonkeyPatch, text: str) -> None:
    env.setenv("POWERSENSE_FORECAST_RESOLUTION_MIN", text)
    assert "POWERSENSE_FORECAST_RESOLUTION_MIN: Input should be 15, 30 or 60" in _error(env)


def test_a_series_name_that_is_no_plain_name_stops_the_start_up(env: pytest.MonkeyPatch) -> None:
    # the dashboards and dbt write it into SQL string literals
    env.setenv("POWERSENSE_SERIES_METRIC", "x' or 1=1 --")
    assert "POWERSENSE_SERIES_METRIC: String should match pattern" in _error(env)


def test_no_weather_model_stops_the_start_up(env: pytest.MonkeyPatch) -> None:
    env.setenv("POWERSENSE_WEATHER_MODELS", "")
    assert "POWERSENSE_WEATHER_MODELS: " in _error(env)


@pytest.mark.parametrize("value", ["inf", "1e400", "nan"])
def test_an_infinite_number_stops_the_start_up(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("POWERSENSE_DETECT_OVERLAP_HOURS", value)
    assert "POWERSENSE_DETECT_OVERLAP_HOURS: " in _error(env)


@pytest.mark.parametrize("schedule", ["every 15 minutes", "0 4-59/15 * * * *", "61 * * * *"])
def test_a_detect_schedule_that_is_no_five_field_cron_stops_the_start_up(
    env: pytest.MonkeyPatch, schedule: str
) -> None:
    env.setenv("POWERSENSE_DETECT_SCHEDULE", schedule)
    assert "POWERSENSE_DETECT_SCHEDULE: " in _error(env) and "five-field cron" in _error(env)


def test_a_log_file_in_a_missing_directory_stops_the_start_up(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("POWERSENSE_LOG_FILE", str(tmp_path / "no-such-dir" / "powersense.jsonl"))
    assert "POWERSENSE_LOG_FILE: " in _error(env) and "does not exist" in _error(env)


def test_a_log_file_that_is_a_directory_stops_the_start_up(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("POWERSENSE_LOG_FILE", str(tmp_path))
    assert "POWERSENSE_LOG_FILE: " in _error(env) and "is a directory" in _error(env)


@pytest.mark.parametrize("file_name", ["query-token", "query_token"])
def test_a_secret_file_that_is_not_text_stops_the_start_up_naming_it(
    env: pytest.MonkeyPatch, secrets: Path, file_name: str
) -> None:
    (secrets / file_name).write_bytes(b"\xff\xfe\x00random")  # openssl rand 24 > file
    message = _error(env)
    assert message.startswith("invalid configuration: ") and "query_token" in message.lower()


@pytest.mark.parametrize("file_name", ["query-token", "s3_secret_access_key"])
def test_an_empty_secret_file_stops_the_start_up_naming_it(
    env: pytest.MonkeyPatch, secrets: Path, file_name: str
) -> None:
    (secrets / file_name).write_text("\n")  # echo "$UNSET" > file
    assert f"POWERSENSE_{file_name.replace('-', '_').upper()}: empty" in _error(env)


def test_a_dangling_secret_link_stops_the_start_up_naming_it(
    env: pytest.MonkeyPatch, secrets: Path, tmp_path: Path
) -> None:
    (secrets / "clickhouse-password").symlink_to(tmp_path / "gone")
    message = _error(env)
    assert "POWERSENSE_CLICKHOUSE_PASSWORD: secret file " in message and "clickhouse-password" in message


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_function_logs_a_variable_that_is_no_setting(env: pytest.MonkeyPatch, database: str) -> None:
    from shared.app import create_app

    env.setenv("POWERSENSE_FORECAST_HORIZON_DAY", "3")
    settings_mod.get_settings.cache_clear()
    # on the module's logger: configure_logging replaces the root's handlers the first time it runs
    logger, seen = logging.getLogger("shared.app"), _Records()
    logger.addHandler(seen)
    try:
        create_app("poll")
    finally:
        logger.removeHandler(seen)
    assert [(r.levelno, r.function, r.variable, r.closest_setting) for r in seen.records  # type: ignore[attr-defined]
            if getattr(r, "event", "") == "unknown_setting"] == [
        (logging.WARNING, "poll", "POWERSENSE_FORECAST_HORIZON_DAY", "POWERSENSE_FORECAST_HORIZON_DAYS")]


def _startup_events(create: Callable[[], object]) -> list[tuple[int, str, str]]:
    """(level, function, error) of each ``configuration_invalid`` line logged while ``create`` raises."""
    logger, seen = logging.getLogger("shared.app"), _Records()
    logger.addHandler(seen)
    try:
        with pytest.raises(ConfigurationError):
            create()
    finally:
        logger.removeHandler(seen)
    return [(r.levelno, r.function, r.error) for r in seen.records  # type: ignore[attr-defined]
            if getattr(r, "event", "") == "configuration_invalid"]


def test_an_invalid_setting_is_logged_as_one_json_event_before_the_start_up_stops(env: pytest.MonkeyPatch) -> None:
    from shared.app import create_app

    env.setenv("POWERSENSE_SOURCE_URL", "ftp://odre")
    [(level, function, error)] = _startup_events(lambda: create_app("poll"))
    assert (level, function) == (logging.CRITICAL, "poll") and "POWERSENSE_SOURCE_URL" in error


def test_missing_history_files_stop_upsert_versions_start_up(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from shared.app import create_app
    from shared.ingest.bootstrap import check_bootstrap_settings

    env.setenv("POWERSENSE_HISTORY_FILES", str(tmp_path / "eco2mix_national_2023.csv.gz"))
    [(_, function, error)] = _startup_events(lambda: create_app("upsert-version", checks=[check_bootstrap_settings]))
    assert function == "upsert-version" and error.startswith("POWERSENSE_HISTORY_FILES: ") and "does not exist" in error


def test_history_files_are_not_checked_when_the_bootstrap_is_off(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from shared.app import create_app
    from shared.ingest.bootstrap import check_bootstrap_settings

    env.setenv("POWERSENSE_HISTORY_FILES", str(tmp_path / "eco2mix_national_2023.csv.gz"))
    env.setenv("POWERSENSE_POLL_BOOTSTRAP", "false")
    assert create_app("upsert-version", checks=[check_bootstrap_settings]).state.function == "upsert-version"


def test_an_unusable_stations_file_stops_poll_weathers_start_up(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from shared.app import create_app
    from shared.weather.service import check_stations_setting

    stations = tmp_path / "stations.csv"
    stations.write_text("ID;Nom;longitude;latitude\n149;Orly;2.38;48.72\n")  # no weights
    env.setenv("POWERSENSE_WEATHER_STATIONS_FILE", str(stations))
    [(_, function, error)] = _startup_events(lambda: create_app("poll-weather", checks=[check_stations_setting]))
    assert function == "poll-weather" and "POWERSENSE_WEATHER_STATIONS_FILE" in error and "Poids" in error


def test_the_deployed_poll_weather_and_upsert_version_check_their_files(tmp_path: Path) -> None:
    # the handlers themselves, as the function's server imports them, in a fresh process
    code = ("import sys\nfrom local_dev.functions import load_handler\n"
            "for name in ('poll-weather', 'upsert-version'):\n"
            "    try:\n        load_handler(name)\n    except Exception as exc:\n"
            "        print(name, type(exc).__name__, exc)\n")
    env = {"PATH": "/usr/bin:/bin", "POWERSENSE_CHDB_PATH": str(tmp_path / "chdb"),
           "POWERSENSE_SECRETS_DIR": str(tmp_path / "secrets"),
           "POWERSENSE_WEATHER_STATIONS_FILE": str(tmp_path / "none.csv"),
           "POWERSENSE_HISTORY_FILES": str(tmp_path / "none.csv.gz")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [["poll-weather", "ConfigurationError"],
                                                           ["upsert-version", "ConfigurationError"]], out.stderr[-2000:]
    events = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [(e["function"], e["event"]) for e in events if e["event"] == "configuration_invalid"] == [
        ("poll-weather", "configuration_invalid"), ("upsert-version", "configuration_invalid")]
