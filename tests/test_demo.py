"""`make demo` in scripted mode: a separate process (it owns its own chDB data directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
