"""deploy/faasd/services-watchdog.sh: faasd starts each service once and never restarts it; the watchdog restarts
faasd when one has stopped. Run for real (bash) against stand-ins for `systemctl` and `ctr` that record what
they are asked, over faasd's compose file with PowerSense merged in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures_topology import tool
from tests.test_topology_single_host import FAASD, faasd_compose, faasd_install  # noqa: F401 - fixtures

SCRIPT = FAASD / "services-watchdog.sh"


class Host:
    """A faasd host in a directory: its compose file, its containerd tasks, and what systemctl was told."""

    def __init__(self, root: Path, services: list[str]) -> None:
        self.root, self.services = root, services
        self.bin = root / "bin"
        self.bin.mkdir()
        self.tasks = dict.fromkeys(services, "RUNNING")
        self.active, self.entered_us = "active", 0
        (self.bin / "ctr").write_text(f"#!/bin/sh\ncat {root}/tasks\n")
        (self.bin / "systemctl").write_text(
            "#!/bin/sh\n"
            f'echo "$*" >> {root}/systemctl.log\n'
            f'case "$1" in is-active) cat {root}/active;; show) cat {root}/entered;; esac\n')
        for exe in ("ctr", "systemctl"):
            (self.bin / exe).chmod(0o755)

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        lines = ["TASK      PID     STATUS"] + [f"{n}  {100 + i}  {s}" for i, (n, s) in enumerate(self.tasks.items())
                                               if s != "absent"]
        (self.root / "tasks").write_text("\n".join(lines) + "\n")
        (self.root / "active").write_text(self.active + "\n")
        (self.root / "entered").write_text(f"{self.entered_us}\n")
        path = f"{self.bin}:{Path(sys.executable).parent}:/usr/bin:/bin"  # python3 with PyYAML: the venv's
        return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30,
                              env={"PATH": path, "FAASD_DIR": str(self.root), "POWERSENSE_WATCHDOG_GRACE_S": "0",
                                   "POWERSENSE_WATCHDOG_STATE": str(self.root / "last-restart"), **env})

    def restarts(self) -> int:
        log = self.root / "systemctl.log"
        return log.read_text().splitlines().count("restart faasd") if log.exists() else 0


@pytest.fixture
def host(tmp_path: Path, faasd_compose: dict[str, Any]) -> Host:  # noqa: F811
    (tmp_path / "docker-compose.yaml").write_text(yaml.safe_dump(faasd_compose))
    return Host(tmp_path, list(faasd_compose["services"]))


def test_nothing_is_restarted_while_every_service_runs(host: Host) -> None:
    res = host.run()
    assert res.returncode == 0 and host.restarts() == 0 and res.stdout == ""


def test_a_stopped_service_restarts_faasd(host: Host) -> None:
    host.tasks["clickhouse"] = "STOPPED"
    res = host.run()
    assert res.returncode == 0 and host.restarts() == 1
    assert "not running: clickhouse" in res.stdout


def test_a_service_without_a_task_restarts_faasd(host: Host) -> None:
    host.tasks["prometheus"] = "absent"
    host.run()
    assert host.restarts() == 1


def test_a_service_that_cannot_start_is_not_restarted_every_minute(host: Host) -> None:
    host.tasks["loki"] = "STOPPED"
    host.run()
    again = host.run()
    assert host.restarts() == 1 and "not again before 600 s" in again.stdout
    host.run(POWERSENSE_WATCHDOG_BACKOFF_S="0")
    assert host.restarts() == 2


def test_a_faasd_that_just_started_is_left_to_start_its_services(host: Host) -> None:
    # `faasd up` pulls and creates the services one after the other: they are missing for a while
    host.tasks["clickhouse"] = "absent"
    host.entered_us = int(float(Path("/proc/uptime").read_text().split()[0]) * 1e6)
    host.run(POWERSENSE_WATCHDOG_GRACE_S="300")
    assert host.restarts() == 0


def test_a_stopped_faasd_is_left_alone(host: Host) -> None:
    host.active, host.tasks["clickhouse"] = "inactive", "STOPPED"
    host.run()
    assert host.restarts() == 0


def test_install_sh_installs_the_timer_and_its_script(faasd_install: Path) -> None:  # noqa: F811
    units = faasd_install / "systemd"
    service = (units / "powersense-faasd-watchdog.service").read_text()
    assert "@" not in service
    assert f"Environment=FAASD_DIR={faasd_install}\n" in service
    script = Path(next(line for line in service.splitlines() if line.startswith("ExecStart="))[10:])
    assert script.read_text() == SCRIPT.read_text() and os.access(script, os.X_OK)
    timer = "powersense-faasd-watchdog.timer"
    assert (units / timer).read_text() == (FAASD / timer).read_text()


def test_the_units_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install -y systemd")
    service = (FAASD / "powersense-faasd-watchdog.service").read_text()
    (tmp_path / "powersense-faasd-watchdog.service").write_text(
        service.replace("@FAASD_DIR@", str(tmp_path)).replace("@WATCHDOG@", str(SCRIPT)))
    (tmp_path / "powersense-faasd-watchdog.timer").write_text((FAASD / "powersense-faasd-watchdog.timer").read_text())
    res = subprocess.run([analyze, "verify", str(tmp_path / "powersense-faasd-watchdog.service"),
                          str(tmp_path / "powersense-faasd-watchdog.timer")], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    assert res.returncode == 0 and "powersense" not in res.stderr, res.stderr
