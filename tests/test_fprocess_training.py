"""Training worker processes start from a server run like the function's ``fprocess``.

The image runs ``uvicorn handler:app …`` (template/powersense-python/Dockerfile): the ``uvicorn`` console script is
the process's ``__main__``. A ``spawn``ed worker re-runs the parent's main module (as ``__mp_main__``) before it
runs its job, so a main module without a ``__name__ == "__main__"`` guard would start a second server in every
worker; the training would then never get its network back. This starts the real console script in a subprocess
(as of-watchdog starts fprocess, minus the watchdog) and trains through it. Real 2022 load, tiny epochs.

The other thing a worker needs in a container is ``/dev/shm`` for the pool's POSIX semaphores (its data travels
through pipes): faasd creates function containers with containerd's ``WithNewSpec`` (github:openfaas/faasd
``pkg/provider/handlers/deploy.go``), whose default Linux spec mounts a 64 MiB tmpfs there (github:containerd/containerd
``oci/mounts.go``, ``defaultMounts``). AWS Lambda has none: ``test_train_processes.py`` covers the fallback.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from shared.settings import REPO_ROOT
from tests.fixtures_ingest import free_port

# the command faas-cli deploys as the function's fprocess (tests/test_ops_configs.py: the Dockerfile's is the same)
FPROCESS = yaml.safe_load((REPO_ROOT / "template" / "powersense-python" / "template.yml").read_text())["fprocess"]


def fprocess_argv(port: int) -> list[str]:
    """``FPROCESS`` with the test app for ``handler:app``, a free port for its 8000, and this environment's
    ``uvicorn`` console script (the one pip installs in the image too)."""
    argv = shlex.split(FPROCESS)
    assert argv[:2] == ["uvicorn", "handler:app"] and argv[argv.index("--port") + 1] == "8000", FPROCESS
    argv[:2] = [str(Path(sys.executable).parent / "uvicorn"), "tests.fprocess_app:app"]
    argv[argv.index("--port") + 1] = str(port)
    return argv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    # the server's log goes to a file: a pipe nobody reads would block it once full
    log = tmp_path_factory.mktemp("fprocess") / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(fprocess_argv(port), cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                                stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"{url}/docs", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    assert proc.poll() is None, log.read_text()
    try:
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_worker_trains_under_the_fprocess_command(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = server
    r = httpx.post(f"{url}/train", timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pid"] == proc.pid  # the server process trained, no second server answered
    assert body["levels"] == 2
    assert body["workers_peak_rss_bytes"] > 0  # a worker process ran and was joined
