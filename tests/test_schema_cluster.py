"""The cluster rendering of the one DDL (shared/schema.py) against the real engine.

chDB cannot run a cluster (no remote_servers, no Keeper), but its parser is ClickHouse's: every rendered
statement goes through ``formatQuery``, and the canonical text chDB prints is what the checks compare
(columns, keys, engines, settings) between each single-node table and its cluster rendering.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared import schema
from shared.schema import SchemaError, render_cluster, single_node_statements
from shared.settings import REPO_ROOT as REPO
from shared.store import Store

CLUSTER = "powersense"
DB = "electricity"


def fmt(store: Store, sql: str) -> str:
    """ClickHouse's canonical formatting of one statement (raises when the parser refuses it)."""
    return str(store.scalar("select formatQuery({q:String})", {"q": sql}))


def parts(formatted: str) -> dict[str, Any]:
    """Split a formatted CREATE TABLE into its name, column lines and clauses."""
    lines = formatted.splitlines()
    head = lines[0]
    name = re.search(r"CREATE TABLE (?:IF NOT EXISTS )?(\S+)", head)
    assert name, head
    open_at = lines.index("(")
    close_at = lines.index(")", open_at)
    columns = [c.strip().rstrip(",") for c in lines[open_at + 1 : close_at]]
    clauses: dict[str, str] = {}
    for line in lines[close_at + 1 :]:
        m = re.match(r"(ENGINE =|PARTITION BY|PRIMARY KEY|ORDER BY|SETTINGS|SAMPLE BY|TTL)\s*(.*)", line)
        assert m, line
        clauses[m.group(1).rstrip(" =")] = m.group(2)
    return {"head": head, "name": name.group(1), "columns": columns, **clauses}


@pytest.fixture
def rendered() -> tuple[list[str], list[str]]:
    single = single_node_statements()
    return single, render_cluster(single, CLUSTER)


def _tables(store: Store, statements: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for stmt in statements:
        if re.match(r"\s*create\s+table", stmt, re.IGNORECASE):
            p = parts(fmt(store, stmt))
            out[p["name"]] = p
    return out


def test_every_rendered_statement_parses_in_the_engine_on_the_cluster(
    store: Store, rendered: tuple[list[str], list[str]]
) -> None:
    single, cluster = rendered
    assert len(cluster) > len(single)
    for stmt in cluster:
        formatted = fmt(store, stmt)
        assert f"ON CLUSTER {CLUSTER}" in formatted.splitlines()[0], formatted[:200]


def test_every_single_node_table_has_one_local_table_with_identical_columns_and_keys(
    store: Store, rendered: tuple[list[str], list[str]]
) -> None:
    single, cluster = rendered
    singles = _tables(store, single)
    clustered = _tables(store, cluster)
    assert singles
    for name, s in singles.items():
        table = name.split(".", 1)[1]
        unsharded = table in schema.UNSHARDED_TABLES
        local = clustered[name if unsharded else f"{name}{schema.LOCAL_SUFFIX}"]
        # exactly one rendering of the table's data: one local table (plus, if sharded, one Distributed)
        assert [n for n in clustered if n in (name, f"{name}{schema.LOCAL_SUFFIX}")] == (
            [name] if unsharded else [f"{name}{schema.LOCAL_SUFFIX}", name]
        )
        assert local["columns"] == s["columns"], name
        for clause in ("PARTITION BY", "PRIMARY KEY", "ORDER BY", "SAMPLE BY", "TTL"):
            assert local.get(clause) == s.get(clause), (name, clause)
        engine, args = re.fullmatch(r"(\w+)(?:\((.*)\))?", s["ENGINE"]).groups()  # type: ignore[union-attr]
        path = schema.ZK_PATH_UNSHARDED if unsharded else schema.ZK_PATH
        expected = f"Replicated{engine}('{path}', '{{replica}}'" + (f", {args})" if args else ")")
        assert local["ENGINE"] == expected, name
        if not unsharded:
            dist = clustered[name]
            # a Distributed table has no default-less differences: same column definitions, in order
            assert dist["columns"] == s["columns"], name
            assert "TTL" not in dist, name  # rows expire where they are stored: the local tables
            assert re.fullmatch(
                rf"Distributed\('{CLUSTER}', '{DB}', '{table}{schema.LOCAL_SUFFIX}', cityHash64\(.+\)\)", dist["ENGINE"]
            ), dist["ENGINE"]
    # nothing but these tables (no stray rendering)
    expected_names = set()
    for name in singles:
        expected_names.add(name)
        if name.split(".", 1)[1] not in schema.UNSHARDED_TABLES:
            expected_names.add(f"{name}{schema.LOCAL_SUFFIX}")
    assert set(clustered) == expected_names
    # weather_features' forecast parts expire (ch/init/012.weather_features.sql) on every shard's replicas
    assert clustered[f"{DB}.weather_features{schema.LOCAL_SUFFIX}"]["TTL"].endswith("WHERE part = 'forecast'")
    # the lease (ch/init/005.lease.sql): one replicated table on every node, never behind a Distributed one,
    # so that the claims of one epoch meet in one deduplication scope
    leases = clustered[f"{DB}.leases"]
    assert f"{DB}.leases{schema.LOCAL_SUFFIX}" not in clustered
    assert leases["ENGINE"].startswith(f"ReplicatedMergeTree('{schema.ZK_PATH_UNSHARDED}'")
    assert "{shard}" not in schema.ZK_PATH_UNSHARDED


def test_insert_deduplication_windows_are_carried_over(store: Store, rendered: tuple[list[str], list[str]]) -> None:
    single, cluster = rendered
    singles, clustered = _tables(store, single), _tables(store, cluster)
    for name, s in singles.items():
        local = clustered.get(f"{name}{schema.LOCAL_SUFFIX}") or clustered[name]
        window = re.search(r"non_replicated_deduplication_window = (\d+)", s.get("SETTINGS", ""))
        # a single-node table without the setting does not deduplicate; a replicated one would by default
        expected = window.group(1) if window else "0"
        assert f"replicated_deduplication_window = {expected}" in local["SETTINGS"], name
        assert "non_replicated_deduplication_window" not in local["SETTINGS"], name
    # the measurements writers rely on it (insert_deduplication_token per chunk)
    assert "replicated_deduplication_window = 1000" in clustered[f"{DB}.measurements_local"]["SETTINGS"]


def test_materialized_view_runs_on_local_tables_sharded_by_ukey(
    store: Store, rendered: tuple[list[str], list[str]]
) -> None:
    _, cluster = rendered
    views = [fmt(store, s) for s in cluster if re.match(r"create materialized view", s, re.IGNORECASE)]
    assert views
    latest = next(v for v in views if "measurements_latest_mv" in v.splitlines()[0])
    assert f"TO {DB}.measurements_latest_local" in latest
    assert re.search(rf"FROM {DB}\.measurements_local\b", latest)
    tables = _tables(store, cluster)
    # every version of a ukey on one shard, so the per-shard ReplacingMergeTree(version) keeps the latest
    assert tables[f"{DB}.measurements"]["ENGINE"].endswith("cityHash64(ukey))")
    assert tables[f"{DB}.measurements_latest"]["ENGINE"].endswith("cityHash64(ukey))")


def test_alters_apply_to_the_local_table_and_column_alters_to_the_distributed_one(
        rendered: tuple[list[str], list[str]]) -> None:
    single, cluster = rendered
    alters = [s for s in single if re.match(r"\s*alter\s+table", s, re.IGNORECASE)]
    for stmt in alters:
        table, action = re.match(r"\s*alter\s+table\s+(\S+)\s+(.*)", " ".join(stmt.split()), re.IGNORECASE).groups()  # type: ignore[union-attr]
        assert f"alter table {table}{schema.LOCAL_SUFFIX} on cluster '{CLUSTER}' {action}" in cluster
        # a column change reaches the Distributed table too (same columns); a storage change (a TTL) only the
        # MergeTree table that stores the rows: a Distributed table has no TTL
        on_distributed = f"alter table {table} on cluster '{CLUSTER}' {action}" in cluster
        assert on_distributed == bool(re.match(r"(add|drop|modify|rename|comment)\s+column\b", action, re.IGNORECASE))


def test_every_table_and_view_the_engine_creates_is_rendered(store: Store) -> None:
    """Apply the single-node DDL for real, then check the rendering covers every object it created."""
    rows = store.query_rows(
        "select name, engine from system.tables where database = {db:String}", {"db": store.database}
    )
    created = {name: engine for name, engine in rows}
    assert "measurements" in created
    cluster = render_cluster(single_node_statements(database=store.database), CLUSTER)
    heads = [" ".join(s.split()[:10]) for s in cluster]
    for name, engine in created.items():
        qualified = f"{store.database}.{name}"
        on_cluster = [h for h in heads if re.search(rf"\b{re.escape(qualified)} on cluster\b", h)]
        assert on_cluster, (name, engine)
        if engine.endswith("MergeTree") and name not in schema.UNSHARDED_TABLES:
            assert any(f"{qualified}{schema.LOCAL_SUFFIX} on cluster" in h for h in heads), name


def test_inconsistent_or_unsupported_definitions_are_refused() -> None:
    mv_keys = [
        "create table if not exists d.src (k String, v UInt8) engine = MergeTree order by (k, v)",
        "create table if not exists d.dst (k String, v UInt8) engine = ReplacingMergeTree(v) order by k",
        "create materialized view if not exists d.mv to d.dst as select k, v from d.src",
    ]
    with pytest.raises(SchemaError, match="sharded by the same key"):
        render_cluster(mv_keys, CLUSTER)
    with pytest.raises(SchemaError, match="no cluster rendering"):
        render_cluster(["create table if not exists d.m (k String) engine = Memory"], CLUSTER)
    with pytest.raises(SchemaError, match="qualified"):
        render_cluster(["create table if not exists m (k String) engine = MergeTree order by k"], CLUSTER)
    with pytest.raises(SchemaError, match="invalid cluster name"):
        render_cluster([], "x'; drop")


def test_comments_and_quoted_text_survive_rendering(store: Store) -> None:
    stmt = ("create table if not exists d.t\n(\n"
            "    a String default 'x  -- not a comment (really)',  -- a comment (with parens)\n"
            "    b UInt8\n)\nengine = ReplacingMergeTree(b)\norder by a")
    local, dist = render_cluster([stmt], CLUSTER)
    assert "'x  -- not a comment (really)'" in local and "with parens" not in local
    assert parts(fmt(store, local))["columns"] == parts(fmt(store, stmt))["columns"]
    assert parts(fmt(store, dist))["ENGINE"] == "Distributed('powersense', 'd', 't_local', cityHash64(a))"


def test_cli_prints_the_cluster_rendering(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.__main__ import main

    assert main(["ddl", "--cluster", CLUSTER]) == 0
    out = capsys.readouterr().out
    assert out == "".join(s.rstrip() + ";\n\n" for s in render_cluster(single_node_statements(), CLUSTER))


def test_cluster_setting_needs_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.errors import ConfigurationError
    from shared.settings import Settings, get_settings

    monkeypatch.setenv("POWERSENSE_CLICKHOUSE_CLUSTER", CLUSTER)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="POWERSENSE_CLICKHOUSE_CLUSTER"):
            get_settings()
        monkeypatch.setenv("POWERSENSE_CLICKHOUSE_URL", "http://clickhouse-powersense.powersense.svc.cluster.local:8123")
        assert Settings().clickhouse_cluster == CLUSTER
    finally:
        get_settings.cache_clear()


def test_sharding_by_ukey_keeps_each_shards_latest_version_the_global_one(store: Store) -> None:
    """Why measurements and measurements_latest are sharded by ukey, on the real engine and real data.

    Two shards are simulated as two databases on the same engine, each with the single-node tables and
    materialized view (what every shard's ``*_local`` tables do), and rows are routed as a Distributed
    table routes them (shard = sharding key modulo the total weight, 2 shards of weight 1). One week of
    the shipped 2023 history is stored, then every consommation value is revised once (+1 MW, a
    simulated revision), so each ukey has versions 1 and 2. Sharded by ukey, the union of the shards'
    ``measurements_latest FINAL`` is exactly one server's; sharded by (ukey, version) it is not.
    """
    from contextlib import ExitStack

    from shared.ingest.history import LOAD_COLUMNS, read_history
    from shared.ingest.versioning import upsert_wide
    from tests.fixtures_ingest import other_database

    history = REPO / "data" / "eco2mix" / "eco2mix_national_2023.csv.gz"
    frame = read_history([history], start="2023-03-01T00:00:00Z", end="2023-03-08T00:00:00Z")
    upsert_wide(store, frame, LOAD_COLUMNS, source="eco2mix_national", batch_id="b1", chunk_rows=100_000)
    revised = frame.assign(consommation=frame["consommation"] + 1.0)
    upsert_wide(store, revised, LOAD_COLUMNS, source="eco2mix_national", batch_id="b2", chunk_rows=100_000)
    latest = "select ukey, version, value from {db:Identifier}.measurements_latest final"
    one_server = sorted(store.query_rows(latest))
    assert one_server and {v for _, v, _ in one_server} == {1, 2}

    def sharded(key: str) -> list[tuple[Any, ...]]:
        with ExitStack() as stack:
            shards = [stack.enter_context(other_database(store.settings))[0] for _ in range(2)]
            for index, shard in enumerate(shards):
                shard.command(f"insert into {shard.database}.measurements select * from {store.database}.measurements "
                              f"where modulo({key}, 2) = {index}")
            return sorted(row for shard in shards for row in shard.query_rows(latest))

    assert schema.SHARDING_KEYS["measurements"] == schema.SHARDING_KEYS["measurements_latest"]
    assert sharded(schema.SHARDING_KEYS["measurements"]) == one_server
    assert len(sharded("cityHash64(ukey, version)")) > len(one_server)  # stale versions survive on other shards


def test_a_retried_insert_split_over_shards_is_deduplicated_on_each_shard(store: Store) -> None:
    """The insert_deduplication_token of one insert reaches every shard's part of it (Distributed with
    distributed_foreground_insert=1); with a deterministic sharding key a retry is split identically, so each
    shard drops its part, while the parts of one insert on different shards never collide (each shard's
    deduplication log is its own table's). Simulated with two databases on the real engine."""
    from contextlib import ExitStack

    import pandas as pd

    from shared.ingest.history import LOAD_COLUMNS, read_history
    from shared.ingest.versioning import upsert_wide
    from tests.fixtures_ingest import other_database

    history = REPO / "data" / "eco2mix" / "eco2mix_national_2023.csv.gz"
    frame = read_history([history], start="2023-06-01T00:00:00Z", end="2023-06-02T00:00:00Z")
    upsert_wide(store, frame, LOAD_COLUMNS, source="eco2mix_national", batch_id="b1", chunk_rows=100_000)
    rows = store.query_df("select * from {db:Identifier}.measurements order by ukey")
    key = schema.SHARDING_KEYS["measurements"]
    slot = store.query_df(f"select ukey, modulo({key}, 2) as shard from {{db:Identifier}}.measurements")
    rows = rows.merge(slot, on="ukey")

    def stored_after_retry(token: str | None) -> list[int]:
        with ExitStack() as stack:
            shards = [stack.enter_context(other_database(store.settings))[0] for _ in range(2)]
            for attempt in range(2):  # the insert, then its retry
                for index, shard in enumerate(shards):
                    part = rows[rows["shard"] == index].drop(columns=["shard"])
                    # the retry's rows carry a later inserted_at (a recomputation), so its blocks differ in
                    # content: only the token identifies them as the same insert
                    part = part.assign(inserted_at=part["inserted_at"] + pd.Timedelta(seconds=attempt))
                    shard.insert_df("measurements", part, dedup_token=token)
            return [int(shard.scalar("select count() from {db:Identifier}.measurements")) for shard in shards]

    with_token = stored_after_retry("upsert:b1:chunk0")
    assert all(with_token) and sum(with_token) == len(rows)
    assert sum(stored_after_retry(None)) == 2 * len(rows)  # without it the changed retry is stored again


def test_apply_schema_applies_the_ddl_once_and_records_it(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    # run before an upgrade's deploy, so that no function's first invocation pays for ~50 ON CLUSTER statements
    from shared.__main__ import main as cli
    from shared.store import get_store

    assert cli(["apply-schema"]) == 0
    first = capsys.readouterr().out
    assert re.fullmatch(rf"database {database}: applied \d+ statements\n", first), first
    assert cli(["apply-schema"]) == 0
    assert capsys.readouterr().out == f"database {database}: schema already current, nothing applied\n"
    assert get_store().scalar("select count() from {db:Identifier}.schema_fingerprints") == 1
