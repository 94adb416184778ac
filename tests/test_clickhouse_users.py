"""ClickHouse users (deploy/clickhouse/users.d/powersense.xml): the writer has least privilege.

The writer's grants must cover exactly what the stages do: read, insert, and what applying the one
DDL (ch/init, Store.apply_schema at start-up) requires — ClickHouse checks a CREATE's grant before
``if not exists`` (src/Interpreters/InterpreterCreateQuery.cpp, getRequiredAccess): CREATE DATABASE,
CREATE TABLE, CREATE VIEW (+ SELECT/INSERT on a materialized view's target), DROP VIEW for
``create or replace view`` and ALTER ADD COLUMN — and nothing that deletes data.  chDB has no access
management (its default user may not CREATE USER), so every grant is parsed by the engine
(``formatQuery``), which rejects unknown privileges, and checked structurally against the DDL.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from shared.schema import render_cluster, single_node_statements
from shared.store import Store, _split_statements

REPO = Path(__file__).resolve().parent.parent
USERS = REPO / "deploy" / "clickhouse" / "users.d" / "powersense.xml"
CHI = REPO / "deploy" / "kubernetes" / "clickhouse" / "installation.yaml"
DB = "electricity"
STAGE_PRIVILEGES = {("SELECT", f"{DB}.*"), ("INSERT", f"{DB}.*")}  # every stage reads and writes its tables
FORBIDDEN = {"ALL", "DROP", "DROP TABLE", "DROP DATABASE", "TRUNCATE", "ALTER", "ALTER DELETE", "ALTER UPDATE",
             "ALTER DROP COLUMN", "ALTER TABLE", "ACCESS MANAGEMENT", "CREATE USER", "SYSTEM", "OPTIMIZE"}
GRANT = re.compile(r"^GRANT\s+(?P<privs>.+?)\s+ON\s+(?P<obj>[\w*]+\.[\w*]+)$", re.IGNORECASE)


def _user(name: str) -> ET.Element:
    users = ET.parse(USERS).getroot().find("users")
    assert users is not None
    user = users.find(name)
    assert user is not None, name
    return user


def _parse_grants(queries: list[str]) -> set[tuple[str, str]]:
    out = set()
    for q in queries:
        m = GRANT.match(q.strip())
        assert m, q
        out |= {(p.strip().upper(), m["obj"]) for p in m["privs"].split(",")}
    return out


def _grants(name: str) -> set[tuple[str, str]]:
    return _parse_grants([q.text or "" for q in _user(name).iter("query")])


def _cluster_grants(name: str) -> set[tuple[str, str]]:
    """The Kubernetes ClickHouseInstallation's grants for one user."""
    users = yaml.safe_load(CHI.read_text())["spec"]["configuration"]["users"]
    return _parse_grants(users[f"{name}/grants/query"])


def _privileges(stmt: str) -> set[tuple[str, str]] | None:
    """What one DDL statement needs (None: no mapping); ``on cluster`` adds the CLUSTER grant."""
    s = " ".join(stmt.lower().split())
    on_cluster = re.search(r" on cluster '?\w+'?", s)
    s = re.sub(r" on cluster '?\w+'?", "", s)
    need: set[tuple[str, str]] = {("CLUSTER", "*.*")} if on_cluster else set()
    if m := re.match(r"create database (?:if not exists )?(\w+)", s):
        return need | {("CREATE DATABASE", f"{m[1]}.*")}
    if re.match(r"create table ", s):
        return need | {("CREATE TABLE", f"{DB}.*")}
    if m := re.match(r"create materialized view (?:if not exists )?[\w.]+ to ([\w.]+)", s):
        return need | {("CREATE VIEW", f"{DB}.*"), ("SELECT", m[1]), ("INSERT", m[1])}
    if m := re.match(r"create or replace view ([\w.]+)", s):
        return need | {("CREATE VIEW", f"{DB}.*"), ("DROP VIEW", m[1])}
    if re.match(r"create view ", s):
        return need | {("CREATE VIEW", f"{DB}.*")}
    if re.match(r"alter table [\w.]+ (add column)\b", s):
        return need | {("ALTER ADD COLUMN", f"{DB}.*")}
    return None


def _required_by_ddl() -> set[tuple[str, str]]:
    """The privileges applying ch/init needs, statement by statement."""
    required: set[tuple[str, str]] = set()
    for path in sorted((REPO / "ch" / "init").glob("[0-9][0-9][0-9].*.sql")):
        for stmt in _split_statements(path.read_text()):
            need = _privileges(stmt)
            if need is None:
                pytest.fail(f"{path.name}: no privilege mapping for {stmt[:60]!r}: grant it and extend this test")
            required |= need
    return required


def _covered(need: tuple[str, str], granted: set[tuple[str, str]]) -> bool:
    priv, obj = need
    return (priv, obj) in granted or (priv, f"{obj.split('.')[0]}.*") in granted


def test_writer_password_comes_from_the_environment_and_it_is_not_read_only() -> None:
    writer = _user("powersense_writer")
    password = writer.find("password")
    assert password is not None and password.get("from_env") == "POWERSENSE_WRITER_PASSWORD"
    assert not (password.text or "").strip()
    assert writer.findtext("profile") != "powersense_readonly"  # it applies the DDL and inserts


def test_every_grant_parses_in_the_engine(store: Store) -> None:
    for name in ("powersense_writer", "powersense_reader", "grafana", "powersense_dbt"):
        for q in _user(name).iter("query"):
            text = (q.text or "").strip()
            formatted = store.scalar("select formatQuery({q:String})", {"q": f"{text} TO x"})
            assert str(formatted).upper().startswith("GRANT"), text
    with pytest.raises(Exception, match="Syntax error"):  # the parser does reject unknown privileges
        store.scalar("select formatQuery({q:String})", {"q": "GRANT DROP EVERYTHING ON electricity.* TO x"})


def test_writer_grants_cover_the_ddl_and_nothing_more() -> None:
    granted = _grants("powersense_writer")
    required = _required_by_ddl() | STAGE_PRIVILEGES
    assert all(_covered(n, granted) for n in required), {n for n in required if not _covered(n, granted)}
    extra = {g for g in granted if g not in required and not any(_covered(n, {g}) for n in required)}
    assert not extra, extra
    assert not {p for p, _ in granted} & FORBIDDEN
    assert all(obj != f"{DB}.*" for p, obj in granted if p.startswith("DROP")), "DROP only on named views"


def test_no_stage_deletes_data() -> None:
    """The writer holds no DROP TABLE/TRUNCATE/ALTER DELETE because no code issues them."""
    pattern = re.compile(r"\b(drop|truncate)\s+(table|database|dictionary)\b|\bdelete\s+from\b"
                         r"|\balter\s+table\b[^\n]*\b(delete|update)\b|\boptimize\s+table\b", re.IGNORECASE)
    hits = [f"{p.relative_to(REPO)}: {m[0]}" for root in ("shared", "functions") for p in (REPO / root).rglob("*.py")
            for m in pattern.finditer(p.read_text())]
    assert not hits, hits


def test_readers_stay_read_only() -> None:
    for name in ("powersense_reader", "grafana"):
        assert _user(name).findtext("profile") == "powersense_readonly"
        assert {p for p, _ in _grants(name)} == {"SELECT"}


def test_cluster_writer_grants_cover_the_cluster_rendering() -> None:
    """The Kubernetes writer applies the DDL ON CLUSTER (shared/schema.py): every rendered statement
    (local and Distributed tables, the unsharded leases table, the series view, the ALTERs on both
    tables) is covered by the ClickHouseInstallation's grants, which add only CLUSTER to the single host's."""
    cluster = render_cluster(single_node_statements(), "powersense")
    required: set[tuple[str, str]] = set(STAGE_PRIVILEGES)
    for stmt in cluster:
        need = _privileges(stmt)
        assert need is not None, f"no privilege mapping for {stmt[:60]!r}"
        required |= need
    assert ("CLUSTER", "*.*") in required and ("DROP VIEW", f"{DB}.series") in required
    granted = _cluster_grants("powersense_writer")
    assert all(_covered(n, granted) for n in required), {n for n in required if not _covered(n, granted)}
    assert granted == _grants("powersense_writer") | {("CLUSTER", "*.*")}


def test_dbt_reads_the_store_and_owns_only_the_analytics_database() -> None:
    # dbt (README "Analytics") builds its relations in `analytics` from the sources in `electricity`: it had no
    # user a deployment created (dbt/profiles.yml's `default` with an empty password matched no server's)
    dbt = _user("powersense_dbt")
    password = dbt.find("password")
    assert password is not None and password.get("from_env") == "POWERSENSE_DBT_PASSWORD"
    profile = (REPO / "dbt" / "profiles.yml").read_text()
    schema = re.search(r"env_var\('POWERSENSE_DBT_SCHEMA', '(\w+)'\)", profile)
    assert schema and schema[1] == "analytics"
    granted = _grants("powersense_dbt")
    assert {p for p, obj in granted if obj == f"{DB}.*"} == {"SELECT"}  # nothing but reads on the store
    assert {obj for _, obj in granted} == {f"{DB}.*", "analytics.*"}
    # what dbt-clickhouse's table/view/seed materialisations issue in its own database (EXCHANGE TABLES needs
    # SELECT + DROP TABLE on one side and CREATE TABLE + INSERT on the other: InterpreterRenameQuery.cpp)
    needed = {"SELECT", "INSERT", "CREATE DATABASE", "CREATE TABLE", "CREATE VIEW", "DROP TABLE", "DROP VIEW",
              "TRUNCATE"}
    assert {p for p, obj in granted if obj == "analytics.*"} == needed
    # on the cluster also what dbt-clickhouse's `cluster` profile issues: ON CLUSTER DDL, clusterAllReplicas (a
    # remote table function), and the replicas' sync before a mart's swap (dbt/macros/exchange_tables_atomic.sql)
    on_cluster = {("CLUSTER", "*.*"), ("REMOTE", "*.*"), ("CREATE TEMPORARY TABLE", "*.*"),
                  ("SYSTEM SYNC REPLICA", "analytics.*")}
    assert _cluster_grants("powersense_dbt") == granted | on_cluster


def test_every_user_password_is_supplied_by_every_single_host_topology() -> None:
    # compose passes each from_env variable to the ClickHouse service from .env (deploy/env.example generates it)
    variables = re.findall(r'from_env="(\w+)"', USERS.read_text())
    assert "POWERSENSE_DBT_PASSWORD" in variables
    compose = (REPO / "docker-compose.yml").read_text()
    example = (REPO / "deploy" / "env.example").read_text()
    for variable in variables:
        assert re.search(rf"^\s+{variable}: \$\{{{variable}:\?", compose, re.M), variable
        assert re.search(rf"^{variable}=change-me-", example, re.M), variable


def test_readers_can_read_every_table_and_view_of_the_ddl() -> None:
    created = set()
    for stmt in single_node_statements():
        m = re.match(r"create (?:or replace )?(?:table|view|materialized view) (?:if not exists )?([\w.]+)",
                     " ".join(stmt.lower().split()))
        if m:
            created.add(m[1])
    assert {f"{DB}.leases", f"{DB}.poll_gaps", f"{DB}.series", f"{DB}.features", f"{DB}.forecasts"} <= created
    for name in ("powersense_reader", "grafana"):
        for grants in (_grants(name), _cluster_grants(name)):
            assert all(_covered(("SELECT", obj), grants) for obj in created), name


def test_grafana_can_read_every_table_a_dashboard_panel_reads() -> None:
    """Each ``${db}.<table>`` in a provisioned panel's SQL (e.g. ``features`` for the gate's rejections) exists in the
    DDL and is covered by the grafana user's grants on the single host and on the cluster."""
    import json

    created = {m[1] for stmt in single_node_statements() if (m := re.match(
        r"create (?:or replace )?(?:table|view|materialized view) (?:if not exists )?[\w]+\.(\w+)",
        " ".join(stmt.lower().split())))}
    read: set[str] = set()
    for path in (REPO / "observability" / "grafana" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                read |= set(re.findall(r"\$\{db\}\.(\w+)", target.get("rawSql", "")))
    assert "features" in read and read <= created, read - created
    for grants in (_grants("grafana"), _cluster_grants("grafana")):
        assert all(_covered(("SELECT", f"{DB}.{t}"), grants) for t in read)


# The single host's networks: loopback and the private ranges, for every user and the image's admin.
FAASD_BRIDGE = "10.62.0.0/16"  # github:openfaas/faasd pkg/cninetwork/cni_network.go defaultSubnet
DOCKER_LOCAL_POOLS = ("172.17.0.0/16", "172.18.0.0/15", "172.20.0.0/14", "172.24.0.0/13", "192.168.0.0/16")
# ^ github:moby/moby libnetwork/ipamutils/utils.go localScopeDefaultNetworks: where compose's network is allocated


def _networks(user: ET.Element) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(ip.text or "") for ip in user.iterfind("networks/ip")]


def test_every_user_accepts_only_loopback_and_private_networks() -> None:
    users = ET.parse(USERS).getroot().find("users")
    assert users is not None
    lists = {user.tag: _networks(user) for user in users}
    assert {"default", "powersense_writer", "powersense_reader", "powersense_dbt", "grafana"} <= set(lists)
    first = next(iter(lists.values()))
    for name, nets in lists.items():
        assert nets == first, name
        assert all(n.is_private for n in nets), name  # ::/0 or a public range would not be


def test_single_host_clients_fall_inside_the_networks() -> None:
    nets = _networks(_user("powersense_writer"))
    clients = [FAASD_BRIDGE, *DOCKER_LOCAL_POOLS, "127.0.0.1/32", "::1/128"]
    for client in map(ipaddress.ip_network, clients):
        assert any(client.version == n.version and client.subnet_of(n) for n in nets), client  # type: ignore[arg-type]
    for outsider in ("8.8.8.8", "2001:db8::1", "100.64.0.1"):
        address = ipaddress.ip_address(outsider)
        assert not any(address in n for n in nets), outsider


def test_the_admin_override_replaces_the_images_networks_only() -> None:
    # the image's entrypoint writes users.d/default-user.xml (admin open to ::/0); ClickHouse merges users.d files in
    # sorted path order and `replace` swaps the element whole (ConfigProcessor getConfigMergeFiles, mergeRecursive)
    admin = _user("default")
    assert [child.tag for child in admin] == ["networks"]
    networks = admin.find("networks")
    assert networks is not None and networks.get("replace") == "replace"
    assert sorted(["default-user.xml", USERS.name]) == ["default-user.xml", USERS.name]
    for topology in (REPO / "docker-compose.yml", REPO / "deploy" / "faasd" / "docker-compose.powersense.yaml"):
        assert f"/etc/clickhouse-server/users.d/{USERS.name}" in topology.read_text(), topology
