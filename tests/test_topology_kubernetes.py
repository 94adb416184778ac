"""The Kubernetes topology (deploy/kubernetes/), loaded from its files and checked for the invariants that broke.

Objects: every resource of deploy/kubernetes/kustomization.yaml plus the ConfigMaps it generates, checked
offline against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors, as
`kubectl apply`'s server-side field validation makes them) and, for the Altinity operator's custom
resources, against the operator's own CRD schema (deploy/kubernetes/schemas/, vendored with provenance).
`kubectl kustomize` builds the same object set where kubectl is installed.

Invariants: every host a function, Grafana, Prometheus or Alloy connects to is a Service these manifests
create (explicitly, or by the operator from a ClickHouseInstallation/ClickHouseKeeperInstallation by its
naming rule) with that port, by its fully qualified name; gateway upstream_timeout > every exec_timeout
and <= its read/write timeouts; queue-worker ack_wait > the upstream timeout; every image pinned and from a
repository that still serves images; every Secret an object or a function reads is created by
deploy/kubernetes/secrets.sh (parsed) or by a chart the README installs; scale.max <= 5 (OpenFaaS CE);
the schedules the cron-connector reads (the same stack) match SAM's; users and monitoring wiring match
the single-host definitions.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from local_dev.stack import FunctionSpec, read_stack
from shared.settings import Settings
from tests.fixtures_topology import (
    REPO,
    STAGES,
    aws_minutes,
    cron_minutes,
    go_duration_s,
    image_is_dead,
    image_is_pinned,
    load_sam,
    sam_functions,
    tool,
)

K8S = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.32.0"  # schema version the manifests are checked against (any >= 1.27 API they use)
RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
FQDN = re.compile(r"^(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.cluster\.local$")

# Services the charts the README installs create (names/ports from github:openfaas/faas-netes
# chart/openfaas templates/gateway-svc.yaml and prometheus-svc.yaml).
CHART_SERVICES = {("openfaas", "gateway"): {8080}, ("openfaas", "prometheus"): {9090}}
# Secrets the charts create: basic-auth (chart/openfaas templates/secret.yaml, generateBasicAuth: true),
# read by the cron-connector chart (chart/cron-connector templates/deployment.yaml, basicAuth: true).
CHART_SECRETS = {("openfaas", "basic-auth")}
# Operator-created Services: "clickhouse-" + CHI name and "keeper-" + CHK name
# (github:Altinity/clickhouse-operator pkg/model/chi/namer/patterns.go, pkg/model/chk/namer/patterns.go),
# with ClickHouse's http/tcp ports and the Keeper client port set in keeper.yaml.
OPERATOR_PORTS = {"ClickHouseInstallation": {8123, 9000}, "ClickHouseKeeperInstallation": {2181}}
CRD_SCHEMAS = {"ClickHouseInstallation": "clickhouseinstallation.json",
               "ClickHouseKeeperInstallation": "clickhousekeeperinstallation.json"}


# --- loading ---------------------------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def load_objects() -> list[dict[str, Any]]:
    """Every object kustomize would emit: the resources, plus the generated ConfigMaps (unhashed names)."""
    kz = _kustomization()
    objects: list[dict[str, Any]] = []
    for resource in kz["resources"]:
        objects += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    for gen in kz.get("configMapGenerator", []):
        data = {}
        for entry in gen["files"]:
            key, _, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
            file = (K8S / path).resolve()
            assert file.is_file(), f"{gen['name']}: {path} does not exist"
            data[key or file.name] = file.read_text()
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": gen["name"], "namespace": gen["namespace"]}, "data": data})
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return load_objects()


def _stack() -> list[FunctionSpec]:
    return read_stack(environ={"POWERSENSE_TOPOLOGY": "kubernetes"})


def _values(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


def services(objs: list[dict[str, Any]]) -> dict[tuple[str, str], set[int]]:
    """(namespace, name) -> ports of every Service the manifests, the operator and the charts create."""
    out: dict[tuple[str, str], set[int]] = dict(CHART_SERVICES)
    for o in objs:
        ns = o["metadata"].get("namespace", "")
        if o["kind"] == "Service":
            out[(ns, o["metadata"]["name"])] = {p["port"] for p in o["spec"]["ports"]}
        elif o["kind"] == "ClickHouseInstallation":
            out[(ns, f"clickhouse-{o['metadata']['name']}")] = OPERATOR_PORTS[o["kind"]]
        elif o["kind"] == "ClickHouseKeeperInstallation":
            port = int(o["spec"]["configuration"]["settings"]["keeper_server/tcp_port"])
            assert port in OPERATOR_PORTS[o["kind"]]
            out[(ns, f"keeper-{o['metadata']['name']}")] = {port}
    return out


def assert_reachable(address: str, svcs: dict[tuple[str, str], set[int]], default_port: int | None = None) -> None:
    """``address`` (URL or host:port) names a shipped Service by its FQDN, on a port it serves."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    m = FQDN.match(parts.hostname or "")
    assert m, f"{address}: not a fully qualified Service name (<svc>.<ns>.svc.cluster.local)"
    key = (m["ns"], m["svc"])
    assert key in svcs, f"{address}: no Service {key[1]} in namespace {key[0]}"
    port = parts.port or default_port
    assert port in svcs[key], f"{address}: Service {key} serves {sorted(svcs[key])}, not {port}"


def _containers(o: dict[str, Any]) -> list[dict[str, Any]]:
    if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        spec = o["spec"]["template"]["spec"]
        return spec.get("containers", []) + spec.get("initContainers", [])
    if o["kind"] in CRD_SCHEMAS:
        return [c for t in o["spec"].get("templates", {}).get("podTemplates", []) for c in t["spec"]["containers"]]
    return []


def _secrets_sh() -> dict[tuple[str, str], set[str]]:
    """(namespace, name) -> keys of every Secret deploy/kubernetes/secrets.sh applies."""
    text = (K8S / "secrets.sh").read_text()
    nss = dict(re.findall(r"^(\w+_NS)=(\S+)$", text, re.MULTILINE))
    out: dict[tuple[str, str], set[str]] = {}
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        m = re.match(r'^apply "\$(\w+)" (\S+)( --openfaas)? (.+)$', line.strip())
        if m:
            keys = set(re.findall(r'(?:^|\s)([\w.-]+)="', m.group(4)))
            out[(nss[m.group(1)], m.group(2))] = keys
        m = re.match(r'^kubectl create secret tls (\S+) -n "\$(\w+)"', line.strip())
        if m:  # a TLS Secret's keys are fixed (kubectl create secret tls)
            out[(nss[m.group(2)], m.group(1))] = {"tls.crt", "tls.key"}
    return out


# --- offline schema checks ------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it: unknown fields are errors, except where preserved."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Validation errors of an Altinity custom resource against the vendored CRD schema."""
    vendored = json.loads((K8S / "schemas" / CRD_SCHEMAS[obj["kind"]]).read_text())
    assert obj["apiVersion"] == f"{vendored['group']}/{vendored['version']}"
    validator = jsonschema.Draft7Validator(_strict(vendored["schema"]))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


def test_every_object_passes_the_offline_schema_check(objects: list[dict[str, Any]]) -> None:
    kinds = set()
    for o in objects:
        kinds.add(o["kind"])
        where = f"{o['kind']}/{o['metadata']['name']}"
        assert RFC1123.match(o["metadata"]["name"]), where
        if o["kind"] in CRD_SCHEMAS:
            assert crd_errors(o) == [], where
        else:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
    assert {"ClickHouseInstallation", "ClickHouseKeeperInstallation", "Service", "StatefulSet", "ConfigMap"} <= kinds


def test_the_crd_check_rejects_what_the_api_server_would() -> None:
    chi = next(o for o in load_objects() if o["kind"] == "ClickHouseInstallation")
    bad = copy.deepcopy(chi)
    bad["spec"]["configuration"]["clusters"][0]["layuot"] = bad["spec"]["configuration"]["clusters"][0].pop("layout")
    assert any("layuot" in e for e in crd_errors(bad))
    bad = copy.deepcopy(chi)
    bad["spec"]["configuration"]["clusters"][0]["layout"]["shardsCount"] = {"two": 2}
    assert crd_errors(bad)


def test_kustomize_builds_the_same_objects(objects: list[dict[str, Any]]) -> None:
    kubectl = tool("kubectl", "https://kubernetes.io/docs/tasks/tools/ (kustomize build not run)")
    res = subprocess.run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(K8S)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    built = [d for d in yaml.safe_load_all(res.stdout) if d]

    def key(o: dict[str, Any], hashed: bool = False) -> tuple[str, str, str]:
        name = o["metadata"]["name"]
        if hashed and o["kind"] == "ConfigMap":
            name = re.sub(r"-[a-z0-9]{10}$", "", name)  # kustomize's content hash suffix
        return o["kind"], o["metadata"].get("namespace", ""), name

    assert sorted(key(o, hashed=True) for o in built) == sorted(map(key, objects))
    # and the workloads mount the generated ConfigMaps under their hashed names
    generated = {o["metadata"]["name"] for o in built if o["kind"] == "ConfigMap"}
    mounted = {v["configMap"]["name"] for o in built if o["kind"] in ("Deployment", "StatefulSet")
               for v in o["spec"]["template"]["spec"].get("volumes", []) if "configMap" in v}
    assert mounted <= generated and mounted


# --- reachability ---------------------------------------------------------------------------------------


def test_every_host_a_function_connects_to_is_a_shipped_service(objects: list[dict[str, Any]]) -> None:
    svcs = services(objects)
    specs = _stack()
    assert {s.name for s in specs} == STAGES
    for spec in specs:
        assert spec.environment_files == ("deploy/kubernetes/functions.env.yml",), spec.name
        env = spec.environment
        assert_reachable(env["POWERSENSE_CLICKHOUSE_URL"], svcs)
        assert_reachable(env["POWERSENSE_S3_ENDPOINT_URL"], svcs)
        assert_reachable(env["POWERSENSE_PUSHGATEWAY_URL"], svcs)
        # the settings a function builds from it are valid (a cluster needs a server URL)
        settings = Settings.model_validate({k.removeprefix("POWERSENSE_").lower(): v for k, v in env.items()
                                            if k.startswith("POWERSENSE_")})
        assert settings.clickhouse_cluster == _chi(objects)["spec"]["configuration"]["clusters"][0]["name"]


def _chi(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "ClickHouseInstallation")


def test_a_node_drain_may_take_one_replica_of_each_shard(objects: list[dict[str, Any]]) -> None:
    # the operator's one budget for the whole cluster (maxUnavailable 1) and the required shard anti-affinity made a
    # drain on two nodes hang: the first evicted replica stayed Pending and no second eviction was allowed
    chi = _chi(objects)
    cluster = chi["spec"]["configuration"]["clusters"][0]
    assert str(cluster["pdbManaged"]).lower() in {"no", "false", "0", "off", "disabled", "disable"}
    budgets = {tuple(sorted(o["spec"]["selector"]["matchLabels"].items())): o["spec"]
               for o in objects if o["kind"] == "PodDisruptionBudget" and o["metadata"]["namespace"] == "powersense"}
    for shard in range(cluster["layout"]["shardsCount"]):
        labels = {"clickhouse.altinity.com/chi": chi["metadata"]["name"],
                  "clickhouse.altinity.com/cluster": cluster["name"], "clickhouse.altinity.com/shard": str(shard)}
        spec = budgets.pop(tuple(sorted(labels.items())))
        assert spec["maxUnavailable"] == cluster["layout"]["replicasCount"] - 1
    assert not [b for b in budgets if ("clickhouse.altinity.com/chi", "powersense") in b]


def test_clickhouse_is_two_shards_of_two_replicas_with_keeper(objects: list[dict[str, Any]]) -> None:
    chi = _chi(objects)
    cluster = chi["spec"]["configuration"]["clusters"][0]
    assert cluster["layout"] == {"shardsCount": 2, "replicasCount": 2}
    keeper = next(o for o in objects if o["kind"] == "ClickHouseKeeperInstallation")
    assert keeper["spec"]["configuration"]["clusters"][0]["layout"]["replicasCount"] % 2 == 1  # a quorum
    svcs = services(objects)
    for node in chi["spec"]["configuration"]["zookeeper"]["nodes"]:
        assert_reachable(f"{node['host']}:{node['port']}", svcs)


def test_grafana_prometheus_and_alloy_reach_their_backends(objects: list[dict[str, Any]]) -> None:
    svcs = services(objects)
    cms = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    sources = yaml.safe_load(cms["grafana-datasources"]["powersense.yml"])["datasources"]
    for ds in sources:
        if ds["type"] == "grafana-clickhouse-datasource":
            assert_reachable(f"{ds['jsonData']['host']}:{ds['jsonData']['port']}", svcs)
        else:
            assert_reachable(ds["url"], svcs)
    prom = yaml.safe_load(cms["prometheus-config"]["prometheus.yml"])
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                if not target.startswith("localhost:"):
                    assert_reachable(target, svcs)
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                # a headless Service: one A record per selected pod
                svc = next(o for o in objects if o["kind"] == "Service"
                           and (o["metadata"]["namespace"], o["metadata"]["name"]) == tuple(
                               reversed(FQDN.match(name).groups())))  # type: ignore[union-attr]
                assert svc["spec"]["clusterIP"] == "None" and sd["port"] in svcs[
                    (svc["metadata"]["namespace"], svc["metadata"]["name"])], name
    for am in prom["alerting"]["alertmanagers"]:
        for target in am["static_configs"][0]["targets"]:
            assert_reachable(target, svcs)
    alloy = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "alloy")
    env = {e["name"]: e.get("value") for e in alloy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert_reachable(env["LOKI_URL"], svcs)


def test_scraped_headless_services_list_pods_that_are_not_ready(objects: list[dict[str, Any]]) -> None:
    # An `up == 0` alert (ClickHouseDown, PowerSenseTargetDown) needs the down pod to stay a target: a headless
    # Service's DNS lists only Ready endpoints unless publishNotReadyAddresses is set (Kubernetes ServiceSpec),
    # so without it a crashed ClickHouse host left DNS and Prometheus dropped its target instead of recording 0
    prom = yaml.safe_load(next(o for o in objects if o["kind"] == "ConfigMap"
                               and o["metadata"]["name"] == "prometheus-config")["data"]["prometheus.yml"])
    names = [n for job in prom["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
    assert names
    for name in names:
        ns_svc = tuple(reversed(FQDN.match(name).groups()))  # type: ignore[union-attr]
        svc = next(o for o in objects if o["kind"] == "Service"
                   and (o["metadata"]["namespace"], o["metadata"]["name"]) == ns_svc)
        assert svc["spec"].get("publishNotReadyAddresses") is True, name


def test_every_volume_is_writable_by_the_user_its_image_runs_as(objects: list[dict[str, Any]]) -> None:
    # The single-host install gives each service's data directory to the user its image runs as
    # (deploy/faasd/install.sh `data_dir NAME UID`); on Kubernetes a fresh volume is root's unless the pod's
    # fsGroup is that user's group. Alertmanager and Pushgateway (nobody) had none until 2026-12-05
    owners = {name: int(uid) for name, uid in re.findall(r"^data_dir (\S+) (\d+)$",
                                                         (REPO / "deploy" / "faasd" / "install.sh").read_text(), re.M)}
    checked = 0
    for o in objects:
        if o["kind"] == "StatefulSet" and o["spec"].get("volumeClaimTemplates") and owners.get(o["metadata"]["name"]):
            fs_group = o["spec"]["template"]["spec"].get("securityContext", {}).get("fsGroup")
            assert fs_group == owners[o["metadata"]["name"]], o["metadata"]["name"]
            checked += 1
    assert checked >= 4  # grafana, loki, alertmanager, pushgateway


def test_only_seaweedfs_s3_api_is_reachable_from_other_pods(objects: list[dict[str, Any]]) -> None:
    # its S3 gRPC port (identity and policy updates) binds where the S3 API does: a policy admits 8333 only, besides
    # the client certificate that port requires (tests/test_seaweedfs_binding.py)
    sts = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "seaweedfs")
    labels = sts["spec"]["template"]["metadata"]["labels"].items()
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == "powersense"
                and o["spec"]["podSelector"].get("matchLabels", {}).items() <= labels]
    assert len(policies) == 1 and policies[0]["spec"]["policyTypes"] == ["Ingress"]
    ports = [p for rule in policies[0]["spec"]["ingress"] for p in rule["ports"]]
    assert ports == [{"protocol": "TCP", "port": 8333}]
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "seaweedfs")
    assert [p["port"] for p in service["spec"]["ports"]] == [8333]


def test_only_openfaas_reaches_the_functions(objects: list[dict[str, Any]]) -> None:
    # faas-netes gives every function a ClusterIP Service: without a policy any pod could call a stage past the
    # gateway; the namespace label is the one Kubernetes sets on every namespace
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == "openfaas-fn"]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert spec["podSelector"] == {} and spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "openfaas"}}}]}]
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    assert {"openfaas", "openfaas-fn"} <= namespaces


def _admitted_namespaces(objects: list[dict[str, Any]], pod_labels: dict[str, str]) -> set[str]:
    """Namespaces the one powersense NetworkPolicy selecting pods with ``pod_labels`` admits (all ports)."""
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == "powersense"
                and o["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()]
    assert len(policies) == 1, [p["metadata"]["name"] for p in policies]
    assert policies[0]["spec"]["policyTypes"] == ["Ingress"]
    out = set()
    for rule in policies[0]["spec"]["ingress"]:
        assert "ports" not in rule
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, peer
            out.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    return out


def test_clickhouse_admits_its_clients_namespaces_only(objects: list[dict[str, Any]]) -> None:
    # the users' networks stay ::/0 (pod addresses are the CNI's): the policy is what keeps other pods out
    chi = _chi(objects)
    name, ns = chi["metadata"]["name"], chi["metadata"]["namespace"]
    host = f"clickhouse-{name}.{ns}.svc.cluster.local"
    clients = {"openfaas-fn"} if all(host in s.environment["POWERSENSE_CLICKHOUSE_URL"] for s in _stack()) else set()
    clients |= {o["metadata"]["namespace"] for o in objects if o["kind"] != "ClickHouseInstallation"
                and "metadata" in o and "namespace" in o["metadata"] and host in json.dumps(o)}
    # the operator, installed by the README's helm command, and the other replicas of the cluster
    operator = re.search(r"helm upgrade --install clickhouse-operator .*?-n (\S+)",
                         (REPO / "README.md").read_text(), re.DOTALL)
    assert operator
    clients |= {operator[1], ns}
    assert clients == {"openfaas-fn", "powersense"}  # Grafana's data source is in powersense
    assert _admitted_namespaces(objects, {"clickhouse.altinity.com/chi": name}) == clients


def test_keeper_admits_the_clickhouse_namespace_only(objects: list[dict[str, Any]]) -> None:
    # Keeper has no authentication: any pod reaching it could rewrite the replicated tables' metadata
    chk = next(o for o in objects if o["kind"] == "ClickHouseKeeperInstallation")
    template = next(t for t in chk["spec"]["templates"]["podTemplates"]
                    if t["name"] == chk["spec"]["defaults"]["templates"]["podTemplate"])
    assert _admitted_namespaces(objects, template["metadata"]["labels"]) == {_chi(objects)["metadata"]["namespace"]}


def test_keeper_replicas_prefer_distinct_nodes(objects: list[dict[str, Any]]) -> None:
    # three Keeper replicas on one node lose the quorum with it; preferred, so two nodes still schedule them
    chk = next(o for o in objects if o["kind"] == "ClickHouseKeeperInstallation")
    template = next(t for t in chk["spec"]["templates"]["podTemplates"]
                    if t["name"] == chk["spec"]["defaults"]["templates"]["podTemplate"])
    terms = template["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    term = terms[0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert chk["spec"]["configuration"]["clusters"][0]["layout"]["replicasCount"] == 3


def test_clickhouse_metrics_service_selects_the_operators_pods(objects: list[dict[str, Any]]) -> None:
    svc = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "clickhouse-metrics")
    # pkg/model/chi/tags/labeler/list.go: LabelCRName = "clickhouse.altinity.com/chi"
    assert svc["spec"]["selector"] == {"clickhouse.altinity.com/chi": _chi(objects)["metadata"]["name"]}
    ports = {p.get("containerPort") for c in _containers(_chi(objects)) for p in c.get("ports", [])}
    assert 9363 in ports
    assert _chi(objects)["spec"]["configuration"]["settings"]["prometheus/port"] == 9363


# --- OpenFaaS: timeouts, edition, schedules --------------------------------------------------------------


def _longest_exec_s() -> float:
    return max(go_duration_s(s.environment["exec_timeout"]) for s in _stack())


def test_gateway_timeouts_exceed_every_exec_timeout() -> None:
    gateway = _values("openfaas-values.yaml")["gateway"]
    upstream = go_duration_s(gateway["upstreamTimeout"])
    assert _longest_exec_s() == 300  # forecast: trains inside the invocation
    for spec in _stack():
        exec_s = go_duration_s(spec.environment["exec_timeout"])
        assert exec_s < upstream, spec.name
        # the function's own watchdog lets the handler run its exec_timeout
        assert go_duration_s(spec.environment["read_timeout"]) >= exec_s, spec.name
    assert upstream <= go_duration_s(gateway["readTimeout"]) and upstream <= go_duration_s(gateway["writeTimeout"])


def test_queue_worker_ack_wait_exceeds_the_longest_invocation() -> None:
    values = _values("openfaas-values.yaml")
    ack_wait = go_duration_s(values["queueWorker"]["ackWait"])
    assert ack_wait > go_duration_s(values["gateway"]["upstreamTimeout"]) > _longest_exec_s()


def test_cron_connector_invokes_synchronously_through_the_gateway(objects: list[dict[str, Any]]) -> None:
    cron = _values("cron-connector-values.yaml")
    assert cron["asyncInvocation"] is False  # see the values file: CE's queue-worker would serialise the stages
    assert_reachable(cron["gatewayURL"], services(objects))
    assert cron["basicAuth"] is True and ("openfaas", "basic-auth") in CHART_SECRETS


def test_scale_labels_fit_openfaas_community_edition() -> None:
    assert _values("openfaas-values.yaml")["openfaasPro"] is False
    for spec in _stack():
        scale_max = int(spec.labels["com.openfaas.scale.max"])
        assert int(spec.labels.get("com.openfaas.scale.min", "1")) <= scale_max <= 5, spec.name
        # faas-netes CE refuses these labels and multi-value topics (pkg/handlers/validate.go, deploy.go)
        assert not {"com.openfaas.scale.zero", "com.openfaas.scale.target", "com.openfaas.scale.type"} & set(
            spec.labels), spec.name
        assert "," not in spec.annotations.get("topic", ""), spec.name
    scale = {s.name: int(s.labels["com.openfaas.scale.max"]) for s in _stack()}
    assert scale["upsert-version"] == 1 and scale["query"] > 1


def test_cron_connector_schedules_are_the_stacks_and_sams() -> None:
    # the cron-connector reads the deployed functions' annotations, i.e. this stack as deployed here
    k8s = {s.name: s.schedule for s in _stack() if s.annotations.get("topic") == "cron-function"}
    faasd = {s.name: s.schedule for s in read_stack(environ={"POWERSENSE_TOPOLOGY": "faasd"}) if s.schedule}
    assert k8s == faasd and set(k8s) == STAGES - {"query"}
    functions = sam_functions(load_sam())
    for name, schedule in k8s.items():
        assert schedule, name
        cron = functions[name]["Properties"]["Events"]["Cron"]["Properties"]
        assert aws_minutes(cron["ScheduleExpression"]) == cron_minutes(schedule), name


# --- images and secrets ----------------------------------------------------------------------------------


def test_every_image_is_pinned_and_from_a_repository_that_still_serves(objects: list[dict[str, Any]]) -> None:
    images = {f"{o['kind']}/{o['metadata']['name']}/{c['name']}": c["image"] for o in objects for c in _containers(o)}
    openfaas = _values("openfaas-values.yaml")
    images |= {f"openfaas:{k}": v["image"] for k, v in openfaas.items() if isinstance(v, dict) and "image" in v}
    images["cron-connector"] = _values("cron-connector-values.yaml")["image"]
    operator = _values("clickhouse-operator-values.yaml")
    assert operator["crdHook"]["enabled"] is False  # its image is bitnami/kubectl:latest
    for part in ("operator", "metrics"):
        image = operator[part]["image"]
        images[f"clickhouse-operator:{part}"] = f"{image['repository']}:{image['tag']}"
    assert len(images) >= 15
    for where, image in images.items():
        assert image_is_pinned(image), f"{where}: {image} has no version tag"
        assert not image_is_dead(image), f"{where}: {image}"


def _secret_refs(objects: list[dict[str, Any]]) -> set[tuple[str, str, str | None]]:
    """(namespace, secret, key or None) of every Secret an object reads."""
    refs: set[tuple[str, str, str | None]] = set()

    def walk(node: Any, ns: str) -> None:
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                refs.add((ns, node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
            if "secretName" in node:
                refs.add((ns, node["secretName"], None))
            for v in node.values():
                walk(v, ns)
        elif isinstance(node, list):
            for v in node:
                walk(v, ns)

    for o in objects:
        walk(o.get("spec", {}), o["metadata"].get("namespace", ""))
    return refs


def test_every_secret_is_created_by_a_documented_step(objects: list[dict[str, Any]]) -> None:
    created = _secrets_sh()
    refs = _secret_refs(objects)
    assert ("powersense", "clickhouse-users", "writer_password") in refs
    for ns, name, key in refs:
        assert (ns, name) in created or (ns, name) in CHART_SECRETS, f"{ns}/{name} is created by no step"
        if key is not None and (ns, name) in created:
            assert key in created[(ns, name)], f"{ns}/{name} has no key {key}"
    # every function secret secrets.sh creates is one Settings reads (file = the field name, or hyphenated)
    fields = set(Settings.model_fields)
    for (ns, name), keys in created.items():
        if ns == "openfaas-fn":
            assert RFC1123.match(name) and {k.replace("-", "_") for k in keys} <= fields, name
    # the same values where two sides must agree: the writer's password and the functions' secret
    text = (K8S / "secrets.sh").read_text()
    assert 'clickhouse-password="$WRITER_PW"' in text and 'writer_password="$WRITER_PW"' in text
    assert 'clickhouse-reader-password="$READER_PW"' in text and 'reader_password="$READER_PW"' in text


def test_every_stack_secret_is_a_kubernetes_secret_created_by_a_documented_step() -> None:
    # faas-netes pkg/k8s/secrets.go: the Secret object is named after the stack's secret, and each data key
    # is mounted as /var/openfaas/secrets/<key>
    created = _secrets_sh()
    for spec in _stack():
        for secret in spec.secrets:
            assert RFC1123.match(secret), f"{spec.name}: secret {secret!r} is not a valid Kubernetes object name"
            assert ("openfaas-fn", secret) in created, f"{spec.name}: secret {secret} is created by no step"


def test_settings_read_hyphenated_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what faas-netes mounts for a Secret named like the stack's (faas-cli secret create clickhouse-password)
    (tmp_path / "clickhouse-password").write_text("from-k8s\n")
    (tmp_path / "query_token").write_text("underscore\n")
    (tmp_path / "query-token").write_text("hyphen\n")
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path))
    settings = Settings()
    assert settings.clickhouse_password.get_secret_value() == "from-k8s"
    assert settings.query_token is not None and settings.query_token.get_secret_value() == "underscore"


def test_secrets_script_passes_shellcheck() -> None:
    exe = tool("shellcheck", "apt-get install -y shellcheck")
    res = subprocess.run([exe, str(K8S / "secrets.sh")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout


# --- one definition with the single-host files ----------------------------------------------------------


def _xml_users() -> dict[str, dict[str, Any]]:
    root = ET.parse(REPO / "deploy" / "clickhouse" / "users.d" / "powersense.xml").getroot()
    users = {}
    for user in root.find("users") or []:
        if user.tag == "default":  # only narrows the image's admin (its networks); the operator has its own admin
            continue
        users[user.tag] = {"profile": user.findtext("profile"),
                           "grants": sorted(q.text or "" for q in user.iter("query"))}
    return users


def _xml_profile(name: str) -> dict[str, str]:
    root = ET.parse(REPO / "deploy" / "clickhouse" / "users.d" / "powersense.xml").getroot()
    profile = root.find(f"profiles/{name}")
    assert profile is not None
    out = {}
    for el in profile.iter():
        if el is profile or len(el):
            continue
        path = []
        node = el
        parents = {c: p for p in profile.iter() for c in p}
        while node is not profile:
            path.append(node.tag)
            node = parents[node]
        out["/".join(reversed(path))] = (el.text or "").strip()
    return out


def test_clickhouse_users_are_the_single_host_users(objects: list[dict[str, Any]]) -> None:
    users = _chi(objects)["spec"]["configuration"]["users"]
    profiles = _chi(objects)["spec"]["configuration"]["profiles"]
    xml = _xml_users()
    assert {"powersense_writer", "powersense_reader", "grafana"} <= set(xml)
    for name in {"powersense_writer", "powersense_reader", "grafana"}:
        assert users[f"{name}/password"]["valueFrom"]["secretKeyRef"]["name"] == "clickhouse-users", name
        assert users[f"{name}/networks/ip"] == ["::/0"], name
    for name, spec in xml.items():
        assert users[f"{name}/profile"] == spec["profile"] or name == "powersense_writer", name
        grants = sorted(users[f"{name}/grants/query"])
        # the writer applies the DDL ON CLUSTER (the cluster rendering), which needs the CLUSTER grant; dbt's
        # `cluster` profile also lists relations with clusterAllReplicas and syncs replicas before a swap
        extra = {"powersense_writer": ["GRANT CLUSTER ON *.*"],
                 "powersense_dbt": ["GRANT CLUSTER ON *.*", "GRANT REMOTE, CREATE TEMPORARY TABLE ON *.*",
                                    "GRANT SYSTEM SYNC REPLICA ON analytics.*"]}.get(name, [])
        assert grants == sorted(spec["grants"] + extra), name
    # the read-only profile: the single host's settings, plus GLOBAL subqueries over Distributed tables
    chi_readonly = {k.split("/", 1)[1]: str(v) for k, v in profiles.items() if k.startswith("powersense_readonly/")}
    single = _xml_profile("powersense_readonly")
    assert {k: v for k, v in chi_readonly.items() if k != "distributed_product_mode"} == single
    assert chi_readonly["distributed_product_mode"] == "global"
    # writers insert into Distributed tables synchronously (dedup tokens per shard: shared/schema.py)
    assert profiles["powersense_writer/distributed_foreground_insert"] == "1"


def test_clickhouse_metrics_endpoint_is_the_single_host_one(objects: list[dict[str, Any]]) -> None:
    root = ET.parse(REPO / "deploy" / "clickhouse" / "config.d" / "prometheus.xml").getroot()
    single = {f"prometheus/{el.tag}": (el.text or "").strip() for el in root.find("prometheus") or []}
    settings = {k: str(v) for k, v in _chi(objects)["spec"]["configuration"]["settings"].items()
                if k.startswith("prometheus/")}
    assert settings == single


# the system logs clickhouse-operator replaces with its own 30-day tables, or removes
# (github:Altinity/clickhouse-operator config/chi/config.d/01-clickhouse-03-query_log.xml, -04-part_log, -05-trace_log)
OPERATOR_SYSTEM_LOGS = {"query_log", "part_log", "trace_log", "query_thread_log"}


def test_clickhouse_system_logs_are_kept_as_on_one_host(objects: list[dict[str, Any]]) -> None:
    root = ET.parse(REPO / "deploy" / "clickhouse" / "config.d" / "system_logs.xml").getroot()
    single = {f"{log.tag}/{el.tag}": (el.text or "").strip() for log in root for el in log}
    settings = {k: str(v) for k, v in _chi(objects)["spec"]["configuration"]["settings"].items()
                if k.split("/")[0].endswith("_log") or k.startswith("logger/")}
    assert settings == {k: v for k, v in single.items() if k.split("/")[0] not in OPERATOR_SYSTEM_LOGS}
    assert {k.split("/")[0] for k in single} >= OPERATOR_SYSTEM_LOGS


def test_clickhouse_log_files_are_bounded_on_every_topology() -> None:
    # the image's config.xml (trace, 10 × 1000M for the log and the error log) and the operator's (debug, the same
    # sizes) let each server write ~20 GB of log files; the Kubernetes settings are tied to these by the test above
    root = ET.parse(REPO / "deploy" / "clickhouse" / "config.d" / "system_logs.xml").getroot()
    logger = {el.tag: (el.text or "").strip() for el in root.find("logger")}  # type: ignore[union-attr]
    assert logger["level"] in {"information", "warning", "error"}
    size_mb = int(logger["size"].removesuffix("M"))
    assert 2 * size_mb * int(logger["count"]) <= 1000  # log + error log, MB


def test_monitoring_uses_the_single_host_definitions(objects: list[dict[str, Any]]) -> None:
    cms = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    obs = REPO / "observability"
    # every rule file, dashboard and Alloy file the single-host topologies load is mounted here too
    assert set(cms["prometheus-rules"]) == {p.name for p in (obs / "prometheus" / "rules").glob("*.yml")}
    assert set(cms["grafana-dashboards"]) == {p.name for p in (obs / "grafana" / "dashboards").glob("*.json")}
    assert set(cms["alloy-config"]) == {"config.alloy", "kubernetes.alloy"}
    # the same scrape jobs as OpenFaaS on one host (alert rules and dashboards select on job), less
    # faasd's own provider
    single = yaml.safe_load((obs / "prometheus" / "prometheus.yml").read_text())
    k8s = yaml.safe_load(cms["prometheus-config"]["prometheus.yml"])
    assert [j["job_name"] for j in k8s["scrape_configs"]] == [
        j["job_name"] for j in single["scrape_configs"] if j["job_name"] != "faasd-provider"]
    # the same data sources (dashboards refer to the uids), only the addresses differ
    def shape(path_or_text: str | Path) -> list[tuple[str, str, str, list[str]]]:
        text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
        return [(d["name"], d["uid"], d["type"], sorted(d.get("jsonData", {})))
                for d in yaml.safe_load(text)["datasources"]]
    assert shape(cms["grafana-datasources"]["powersense.yml"]) == shape(
        obs / "grafana" / "provisioning" / "datasources" / "powersense.yml")


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    exe = tool("promtool", "apt-get install -y prometheus")
    cfg = yaml.safe_load((K8S / "prometheus" / "prometheus.yml").read_text())
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in (REPO / "observability" / "prometheus" / "rules").glob("*.yml"):
        (rules / path.name).write_text(path.read_text())
    cfg["rule_files"] = [str(rules / "*.yml")]  # where the ConfigMap is mounted in the pod
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([exe, "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


# --- secrets.sh against a kubectl that answers as a cluster would ---------------------------------------------------

FAKE_KUBECTL = """#!/usr/bin/env bash
echo "$*" >> "$KUBECTL_LOG"
case "$1" in
  get)  # --ignore-not-found: an absent Secret is no output and status 0
    if [ -n "${KUBECTL_GET_FAILS:-}" ]; then
      echo 'Error from server (Forbidden): secrets "clickhouse-users" is forbidden' >&2; exit 1; fi
    exit 0 ;;
  create) echo "kind: Secret" ;;
  label|apply) cat ;;
esac
"""


def _run_secrets_sh(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    log = tmp_path / "kubectl.log"
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "KUBECTL_LOG": str(log), "HOME": str(tmp_path), **env}
    res = subprocess.run(["bash", str(K8S / "secrets.sh")], env=run_env, capture_output=True, text=True, timeout=60)
    return res, log.read_text().splitlines() if log.exists() else []


def test_secrets_sh_creates_every_secret_on_a_fresh_cluster(tmp_path: Path) -> None:
    res, calls = _run_secrets_sh(tmp_path)
    assert res.returncode == 0, res.stderr
    applied = [c for c in calls if c.startswith("create secret generic")]
    assert {c.split()[3] for c in applied} >= {"clickhouse-users", "seaweedfs-s3", "query-token", "admin-token"}


def test_secrets_sh_stops_when_it_cannot_read_an_existing_secret(tmp_path: Path) -> None:
    # a forbidden or timed-out read counted as "no Secret yet": new random passwords were applied over the ones the
    # running ClickHouse and functions held
    res, calls = _run_secrets_sh(tmp_path, KUBECTL_GET_FAILS="1")
    assert res.returncode != 0 and "Forbidden" in res.stderr
    assert not [c for c in calls if c.startswith(("create", "apply"))]
