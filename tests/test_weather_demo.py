"""`make demo`'s weather wiring in scripted mode (a separate process: it owns its chDB data directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures_ingest import free_port

REPO = Path(__file__).resolve().parent.parent


def test_demo_loads_realised_temperature_before_the_start_and_labels_the_replay(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERSENSE_")}
    env["POWERSENSE_HISTORY_FILES"] = '["data/eco2mix/eco2mix_national_2023.csv.gz"]'
    cmd = [sys.executable, "-m", "local_dev", "demo", "--data-dir", str(tmp_path), "--port", str(free_port()),
           "--start", "2023-06-01T00:00:00Z", "--speed", "120", "--ticks", "1"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # Enedis realised + normal, 30 min, 2020-01-09 … 2023-05-31T23:30Z (before the start: no look-ahead)
    half_hours = (17184 + 17520 * 2) + 151 * 48
    assert f"realised temperature (Enedis, shipped) values={2 * half_hours} written={2 * half_hours}" in out.stdout
    # the replay's archive serves up to 5 days before the (frozen) start: 2020-01-09 … 2023-05-26T23:00Z
    hours = (17184 + 17520 * 2) // 2 + (146 * 24)
    assert f"(replay archive = shipped Enedis values) hours={hours} written={hours}" in out.stdout
    assert "/replay/open-meteo/v1 (replay: shipped REALISED temperature served as the 'forecast'" in out.stdout
    again = subprocess.run([*cmd[:-1], "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "realised temperature" not in again.stdout  # loaded once
