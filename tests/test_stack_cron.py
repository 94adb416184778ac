"""openfaas-stack.yml parsing and the embedded cron-connector's schedule arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from local_dev.cron import next_fire_times
from local_dev.stack import read_stack
from shared import clock
from shared.errors import ConfigurationError


def test_stack_declares_every_stage_with_cron_schedules() -> None:
    specs = {s.name: s for s in read_stack()}
    assert set(specs) == {"poll", "poll-weather", "upsert-version", "featurize", "forecast", "detect", "query"}
    scheduled = {n for n, s in specs.items() if s.schedule}
    assert scheduled == {"poll", "poll-weather", "upsert-version", "featurize", "forecast", "detect"}
    assert all(specs[n].annotations["topic"] == "cron-function" for n in scheduled)


def test_upsert_version_is_single_flight_in_production() -> None:
    spec = {s.name: s for s in read_stack()}["upsert-version"]
    assert spec.labels["com.openfaas.scale.max"] == "1"


def test_invalid_schedule_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "stack.yml"
    bad.write_text(
        "version: 1.0\nfunctions:\n  poll:\n    image: x\n    annotations:\n"
        "      topic: cron-function\n      schedule: '61 * * * *'\n"
    )
    with pytest.raises(ConfigurationError, match="poll"):
        read_stack(bad)


def test_next_fire_times_are_evaluated_in_utc() -> None:
    specs = read_stack()
    after = datetime(2023, 3, 26, 0, 59, 30, tzinfo=UTC)  # the spring DST night in Paris
    due = next_fire_times(specs, after)
    assert due["poll"] == datetime(2023, 3, 26, 1, 0, tzinfo=UTC)
    assert due["upsert-version"] == datetime(2023, 3, 26, 1, 1, tzinfo=UTC)
    assert due["forecast"] == datetime(2023, 3, 26, 1, 7, tzinfo=UTC)
    assert all(t.tzinfo is not None and t.utcoffset().total_seconds() == 0 for t in due.values())


def test_simulated_clock_runs_faster_than_wall_time() -> None:
    start = datetime(2023, 12, 1, tzinfo=UTC)
    sim = clock.SimulatedClock(start, speed=3600)
    clock.install(sim)
    try:
        import time

        time.sleep(0.05)
        elapsed = (clock.now() - start).total_seconds()
        assert elapsed >= 0.05 * 3600 * 0.9
    finally:
        clock.install(None)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5


def test_configuration_doc_lists_every_setting() -> None:
    from shared.config_doc import DOC, render

    assert DOC.read_text() == render(), "docs/configuration.md is stale: run python -m shared config --write"


# --- faas-cli's reading of the stack: ${…} substitution and environment_file ---------------------------------


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${A}", {"A": "x"}, "x"),
    ("${A}", {}, ""),
    ("${A:-d/e}", {}, "d/e"),
    ("${A:-d}", {"A": ""}, "d"),  # ":-": default when unset or empty
    ("${A-d}", {"A": ""}, ""),  # "-": default only when unset
    ("${A-d}", {}, "d"),
    ("$A and $$", {"A": "x"}, "$A and $$"),  # only the braced form is the stack's
    ("img:${TAG:-0.1.0}", {"TAG": "2.0"}, "img:2.0"),
])
def test_expand_env_follows_envsubst(text: str, env: dict[str, str], expected: str) -> None:
    from local_dev.stack import expand_env

    assert expand_env(text, env) == expected


def _stack_with_env_file(tmp_path: Path, file_text: str | None) -> Path:
    (tmp_path / "deploy" / "lab").mkdir(parents=True)
    if file_text is not None:
        (tmp_path / "deploy" / "lab" / "functions.env.yml").write_text(file_text)
    stack = tmp_path / "stack.yml"
    stack.write_text(
        "version: 1.0\nfunctions:\n  poll:\n    image: ${REGISTRY:-r}/poll:1\n"
        "    environment_file:\n      - \"deploy/${POWERSENSE_TOPOLOGY:-faasd}/functions.env.yml\"\n"
        "    environment: {POWERSENSE_CLICKHOUSE_URL: http://stack:8123, exec_timeout: 60s}\n"
    )
    return stack


def test_environment_file_of_the_topology_is_merged_over_the_stack(tmp_path: Path) -> None:
    stack = _stack_with_env_file(tmp_path, "environment:\n  POWERSENSE_CLICKHOUSE_URL: http://lab:8123\n")
    (spec,) = read_stack(stack, environ={"POWERSENSE_TOPOLOGY": "lab", "REGISTRY": "reg"})
    assert spec.image == "reg/poll:1"
    assert spec.environment == {"POWERSENSE_CLICKHOUSE_URL": "http://lab:8123", "exec_timeout": "60s"}
    assert spec.environment_files == ("deploy/lab/functions.env.yml",)


@pytest.mark.parametrize("file_text", [None, "POWERSENSE_CLICKHOUSE_URL=http://lab:8123\n"])
def test_missing_or_malformed_environment_file_fails_loudly(tmp_path: Path, file_text: str | None) -> None:
    stack = _stack_with_env_file(tmp_path, file_text)
    with pytest.raises(ConfigurationError, match="environment"):
        read_stack(stack, environ={"POWERSENSE_TOPOLOGY": "lab"})
