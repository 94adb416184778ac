"""`make demo` in scripted mode: a separate process (it owns its own chDB data directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures_ingest import free_port

REPO = Path(__file__).resolve().parent.parent


def _demo(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERSENSE_")}
    env["POWERSENSE_HISTORY_FILES"] = '["data/eco2mix/eco2mix_national_2023.csv.gz"]'
    cmd = [sys.executable, "-m", "local_dev", "demo", "--data-dir", str(data_dir), "--port", str(free_port()),
           "--start", "2023-06-01T00:00:00Z", "--speed", "120", *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_scripted_demo_bootstraps_polls_and_resumes(tmp_path: Path) -> None:
    first = _demo(tmp_path, "--ticks", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "bootstrap: status=done" in first.stdout
    assert "query token (shown once" in first.stdout
    # ticks 00:00 (poll) and 00:01 (upsert-version): the replayed quarter-hour is ingested
    assert "poll            success" in first.stdout
    assert "upsert-version  success" in first.stdout
    assert "stopped after 2 cron ticks" in first.stdout

    second = _demo(tmp_path, "--ticks", "1")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "(resumed)" in second.stdout
    assert "bootstrap: status" not in second.stdout  # history is not loaded twice
    assert "query token (shown once" not in second.stdout  # the token is printed once only
    logs = (tmp_path / "logs" / "powersense.jsonl").read_text().splitlines()
    assert any('"function": "poll"' in line and '"event": "run_finished"' in line for line in logs)


@pytest.mark.parametrize(("args", "message"), [
    (["--start", "yesterday"], "argument --start: 'yesterday' is not an ISO 8601 instant (e.g. 2023-12-01T00:00:00Z)"),
    (["--speed", "0"], "argument --speed: must be above 0 (got 0)"),
    (["--ticks", "-1"], "argument --ticks: must be above 0 (got -1)"),
    (["--port", "99999"], "argument --port: a port is 1–65535 (got 99999)"),
])
def test_a_demo_option_it_cannot_use_is_one_usage_line(args: list[str], message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # each was a traceback after the data directory and secrets were made, or (--speed 0) a demo that never ticked
    from local_dev.demo import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"python -m local_dev demo: error: {message}"


@pytest.mark.parametrize(("newest", "bootstrapped", "expected"), [
    (None, False, (datetime(2023, 12, 1, tzinfo=UTC), False)),  # an empty store: the start asked for
    # chDB's max() of no value, after a bootstrap that loaded nothing before an early start
    (datetime(1970, 1, 1), True, (datetime(2023, 12, 1, tzinfo=UTC), False)),
    # an interrupted bootstrap reloads up to the start
    (datetime(2015, 3, 1, tzinfo=UTC), False, (datetime(2023, 12, 1, tzinfo=UTC), False)),
    # a restart resumes after the newest value, also when the start asked for (the default) lies months later
    (datetime(2023, 6, 1, 0, 15), True, (datetime(2023, 6, 1, 0, 30, tzinfo=UTC), True)),
    (datetime(2024, 1, 5, 12, 0), True, (datetime(2024, 1, 5, 12, 15, tzinfo=UTC), True)),
])
def test_a_restart_resumes_after_the_newest_value_whatever_the_start(
        newest: datetime | None, bootstrapped: bool, expected: tuple[datetime, bool]) -> None:
    from local_dev.demo import clock_start

    assert clock_start(newest, datetime(2023, 12, 1, tzinfo=UTC), bootstrapped) == expected


def test_a_replay_start_from_the_environment_it_cannot_use_is_one_usage_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from local_dev.demo import parse_args

    monkeypatch.setenv("POWERSENSE_REPLAY_START", "soon")
    with pytest.raises(SystemExit) as exit_:
        parse_args([])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "python -m local_dev demo: error: POWERSENSE_REPLAY_START: 'soon' is not an ISO 8601 instant "
        "(e.g. 2023-12-01T00:00:00Z)")


def test_the_scheduler_names_a_missing_stack_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from local_dev.scheduler import main

    with pytest.raises(SystemExit) as exit_:
        main(["--stack", str(tmp_path / "nonexist.yml")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"error: --stack {tmp_path / 'nonexist.yml'}: no such file")
