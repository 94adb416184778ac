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
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.settings import REPO_ROOT

UVICORN = Path(sys.executable).parent / "uvicorn"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    # the fprocess command line of the image, with the test app instead of handler:app
    proc = subprocess.Popen([str(UVICORN), "tests.fprocess_app:app", "--host", "127.0.0.1", "--port", str(port),
                             "--no-access-log", "--timeout-graceful-shutdown", "20"],
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"{url}/docs", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
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
    assert body["children_peak_rss_kib"] > 0  # a worker process ran and was joined
