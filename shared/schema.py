"""The cluster rendering of the one DDL (``ch/init/NNN.*.sql``).

A single ClickHouse server (and chDB) runs the DDL as written.  A sharded, replicated cluster (the
Kubernetes topology: 2 shards x 2 replicas with ClickHouse Keeper, ``deploy/kubernetes/``) runs the
same definitions rendered by :func:`render_cluster`, so every table is defined exactly once:

* ``create database``                 -> ``... ON CLUSTER '<cluster>'``
* a ``*MergeTree`` table ``db.t``      -> ``db.t_local``: ``Replicated*MergeTree`` with the Keeper path
  ``/clickhouse/tables/{shard}/{database}/{table}`` and replica ``{replica}`` (macros the Altinity
  operator writes on every host: Altinity/clickhouse-operator pkg/model/chi/config/generator.go,
  getHostMacros), the engine's own arguments (e.g. the ``ver`` column) kept; same columns, partition,
  primary and sorting key
  + ``db.t``: ``Distributed('<cluster>', 'db', 't_local', <sharding key>)`` with the same columns,
  so every reader and writer keeps its SQL (``insert into db.t``, ``select … from db.t final``).
* a table in :data:`UNSHARDED_TABLES` (small coordination tables such as a lease) -> one replicated
  table under its own name whose Keeper path has no ``{shard}``: every host holds a full copy.
* a ``KeeperMap`` table is already shared through Keeper: only ``ON CLUSTER`` is added.
* ``create materialized view … to db.t as select … from db.s`` -> the view on the local tables
  (``to db.t_local … from db.s_local``): it fires on the shard that receives the insert, so source
  and target must be sharded by the same key (checked here).
* a plain (parameterised) view -> ``ON CLUSTER`` only: it reads the Distributed tables.
* ``alter table db.t …`` -> the same alteration of ``db.t_local`` and, for column changes, of ``db.t``.

Insert deduplication is kept: ``non_replicated_deduplication_window = N`` becomes
``replicated_deduplication_window = N``; a table without it gets ``replicated_deduplication_window = 0``
because the single-node table does not deduplicate either (replicated tables would by default).
Inserts through a Distributed table must run with ``distributed_foreground_insert = 1`` (the writer
profile in ``deploy/kubernetes/clickhouse/`` sets it): the block is then split by the deterministic
sharding key and each shard's part is inserted synchronously into ``t_local`` with the query's
settings, ``insert_deduplication_token`` included, so a retried insert is split identically and each
shard drops the part it already has (ClickHouse discussion #28270).  Background (asynchronous)
Distributed inserts may batch several inserts into one block, which would break that mapping
(ClickHouse issue #76405 asks the same question; it is not documented).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOCAL_SUFFIX = "_local"
ZK_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
ZK_PATH_UNSHARDED = "/clickhouse/tables/all/{database}/{table}"

# Sharding keys that are not the default (a hash of the sorting key).  Why each one:
# measurements / measurements_latest: measurements_latest is fed by a materialized view on the
#   local table, i.e. per shard, and ReplacingMergeTree(version) keeps the highest version only among
#   rows of the same shard.  Every version of a ukey must therefore land on the same shard as all the
#   others, and measurements_latest must be sharded the same way: cityHash64(ukey).  (Sharding by
#   (source, metric, toYYYYMM(ts)) would also keep a ukey on one shard, but sends every current write
#   to one shard; a hash spreads writes and lets time-range reads run on all shards in parallel.)
SHARDING_KEYS: dict[str, str] = {
    "measurements": "cityHash64(ukey)",
    "measurements_latest": "cityHash64(ukey)",
}

# Small coordination tables: replicated to every host but not sharded, so a reader on any host sees
# every row (a lease must be one row for the whole cluster, not one per shard).
UNSHARDED_TABLES: frozenset[str] = frozenset({"lease", "leases", "measurement_lease", "upsert_lease",
                                              "schema_fingerprints"})

_MERGE_TREE = re.compile(r"^(?!Replicated)(\w*)MergeTree$")
_CLAUSES = ("engine", "partition by", "primary key", "order by", "sample by", "ttl", "settings", "comment")
_CLAUSE_RE = re.compile(r"\b(" + "|".join(c.replace(" ", r"\s+") for c in _CLAUSES) + r")\b", re.IGNORECASE)
_CREATE_TABLE = re.compile(r"^create\s+table\s+(if\s+not\s+exists\s+)?([\w.`]+)\s*\(", re.IGNORECASE)
_CREATE_DB = re.compile(r"^create\s+database\s+(if\s+not\s+exists\s+)?([\w`]+)(.*)$", re.IGNORECASE | re.DOTALL)
_CREATE_MV = re.compile(
    r"^create\s+materialized\s+view\s+(if\s+not\s+exists\s+)?([\w.`]+)\s+to\s+([\w.`]+)\s+as\s+(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_CREATE_PLAIN_VIEW = re.compile(
    r"^(create\s+(?:or\s+replace\s+)?view\s+(?:if\s+not\s+exists\s+)?[\w.`]+)\s+(as\s+.*)$",
    re.IGNORECASE | re.DOTALL,
)
_ALTER = re.compile(r"^alter\s+table\s+([\w.`]+)\s+(.*)$", re.IGNORECASE | re.DOTALL)
_ACCESS_CONTROL = ("create user", "alter user", "grant", "revoke", "create role", "create settings profile")
_COLUMN_ALTER = re.compile(r"^\s*(add|drop|modify|rename|comment)\s+column\b", re.IGNORECASE)


class SchemaError(ValueError):
    """A statement the cluster rendering cannot express (the message says what to add)."""


# --- lexical helpers ------------------------------------------------------------------------------
def strip_comments(sql: str) -> str:
    """Remove ``--`` and ``/* */`` comments outside string literals and quoted identifiers."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'`\"":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            out.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _depth_map(s: str) -> list[int]:
    """Paren depth at each character; -1 inside a quoted literal or identifier."""
    depths: list[int] = []
    depth, quote = 0, ""
    for i, c in enumerate(s):
        if quote:
            depths.append(-1)
            if c == quote and s[i - 1] != "\\":
                quote = ""
            continue
        if c in "'`\"":
            quote = c
            depths.append(-1)
            continue
        if c == "(":
            depths.append(depth)
            depth += 1
            continue
        if c == ")":
            depth -= 1
        depths.append(depth)
    return depths


def split_top(s: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` at paren depth 0, outside quotes."""
    depths = _depth_map(s)
    parts, start = [], 0
    for i, c in enumerate(s):
        if c == sep and depths[i] == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    parts.append(s[start:].strip())
    return [p for p in parts if p]


def _closing_paren(s: str, open_at: int) -> int:
    depths = _depth_map(s)
    for i in range(open_at + 1, len(s)):
        if s[i] == ")" and depths[i] == depths[open_at]:
            return i
    raise SchemaError(f"unbalanced parentheses in: {s[:80]}…")


def _norm(text: str) -> str:
    """Collapse whitespace runs to one space outside string literals and quoted identifiers."""
    depths = _depth_map(text)
    out: list[str] = []
    for i, c in enumerate(text):
        if c.isspace() and depths[i] != -1:
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(c)
    return "".join(out).strip()


def _qualified(name: str, default_db: str | None = None) -> tuple[str, str]:
    name = name.replace("`", "")
    if "." in name:
        db, table = name.split(".", 1)
        return db, table
    if default_db is None:
        raise SchemaError(f"table {name!r} must be qualified with its database (db.table)")
    return default_db, name


# --- parsed statements ------------------------------------------------------------------------------
@dataclass
class Table:
    """A parsed ``create table``: columns (definitions, comments dropped), engine and clauses."""

    database: str
    name: str
    if_not_exists: bool
    columns: list[str]
    engine: str
    engine_args: str | None
    clauses: dict[str, str] = field(default_factory=dict)  # 'order by' -> '(a, b)', …
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        """Names of the columns (index/projection/constraint lines excluded)."""
        return [c.split()[0].strip("`") for c in self.column_defs]

    @property
    def column_defs(self) -> list[str]:
        """Column definitions only (no INDEX, PROJECTION or CONSTRAINT lines)."""
        return [c for c in self.columns if c.split()[0].lower() not in ("index", "projection", "constraint")]

    @property
    def is_merge_tree(self) -> bool:
        """True for the ``*MergeTree`` family (not yet replicated)."""
        return bool(_MERGE_TREE.match(self.engine))


@dataclass
class View:
    """A parsed ``create materialized view … to … as select``."""

    database: str
    name: str
    if_not_exists: bool
    target: tuple[str, str]
    select: str


def parse_table(stmt: str) -> Table:
    """Parse one ``create table`` statement (comments allowed)."""
    sql = _norm(strip_comments(stmt))
    m = _CREATE_TABLE.match(sql)
    if not m:
        raise SchemaError(f"not a create table statement: {sql[:80]}…")
    db, name = _qualified(m.group(2))
    open_at = m.end() - 1
    close_at = _closing_paren(sql, open_at)
    columns = split_top(sql[open_at + 1 : close_at])
    rest = sql[close_at + 1 :]
    depths = _depth_map(rest)
    marks = [(mm.start(), mm.end(), _norm(mm.group(1)).lower())
             for mm in _CLAUSE_RE.finditer(rest) if depths[mm.start()] == 0]
    clauses: dict[str, str] = {}
    for k, (_start, end, key) in enumerate(marks):
        stop = marks[k + 1][0] if k + 1 < len(marks) else len(rest)
        clauses[key] = rest[end:stop].strip()
    if "engine" not in clauses:
        raise SchemaError(f"{db}.{name}: no engine clause")
    em = re.match(r"^=?\s*(\w+)\s*(?:\((.*)\))?\s*$", clauses.pop("engine"), re.DOTALL)
    if not em:
        raise SchemaError(f"{db}.{name}: cannot read the engine clause")
    settings: dict[str, str] = {}
    for item in split_top(clauses.pop("settings", "")):
        key, _, value = item.partition("=")
        settings[key.strip()] = value.strip()
    return Table(db, name, bool(m.group(1)), columns, em.group(1), em.group(2), clauses, settings)


def parse_view(stmt: str) -> View:
    """Parse one ``create materialized view … to …`` statement."""
    sql = _norm(strip_comments(stmt))
    m = _CREATE_MV.match(sql)
    if not m:
        raise SchemaError(
            f"only 'create materialized view … to <table> as select …' has a cluster rendering: {sql[:80]}…"
        )
    db, name = _qualified(m.group(2))
    return View(db, name, bool(m.group(1)), _qualified(m.group(3), db), m.group(4).strip())


def _kind(stmt: str) -> str:
    head = _norm(strip_comments(stmt)).lower()
    for kind, prefix in (("database", "create database"), ("table", "create table"),
                         ("view", "create materialized view"), ("alter", "alter table")):
        if head.startswith(prefix):
            return kind
    if _CREATE_PLAIN_VIEW.match(head):
        return "plain view"
    return "other"


# --- rendering --------------------------------------------------------------------------------------
def sharding_key(table: Table) -> str:
    """The Distributed sharding key of a table: an override, else a hash of its sorting key.

    Hashing the sorting key keeps every row that ReplacingMergeTree collapses (same sorting key) on one
    shard, so ``FINAL`` (executed per shard) stays correct through the Distributed table, and the key is
    deterministic, so a retried insert is split exactly as before (per-shard deduplication holds).
    """
    if table.name in SHARDING_KEYS:
        return SHARDING_KEYS[table.name]
    key = table.clauses.get("order by", "").strip()
    if key.startswith("(") and _closing_paren(key, 0) == len(key) - 1:
        key = key[1:-1].strip()
    if not key or key.lower() == "tuple()":
        key = ", ".join(table.column_names)
    return f"cityHash64({key})"


def _clauses_sql(table: Table) -> str:
    order = ("partition by", "primary key", "order by", "sample by", "ttl")
    return "".join(f"\n{k} {table.clauses[k]}" for k in order if k in table.clauses)


def _settings_sql(settings: dict[str, str]) -> str:
    return ("\nsettings " + ", ".join(f"{k} = {v}" for k, v in settings.items())) if settings else ""


def _replicated_settings(table: Table) -> dict[str, str]:
    settings = dict(table.settings)
    window = settings.pop("non_replicated_deduplication_window", "0")
    settings.setdefault("replicated_deduplication_window", window)
    return settings


def _columns_sql(defs: Sequence[str]) -> str:
    return "(\n    " + ",\n    ".join(defs) + "\n)"


def _ine(flag: bool) -> str:
    return "if not exists " if flag else ""


def _on(cluster: str) -> str:
    return f"on cluster '{cluster}'"


def _render_table(t: Table, cluster: str) -> list[str]:
    if not t.is_merge_tree:
        if t.engine in ("KeeperMap",):  # data lives in Keeper: one table for the whole cluster already
            args = f"({t.engine_args})" if t.engine_args is not None else ""
            return [f"create table {_ine(t.if_not_exists)}{t.database}.{t.name} {_on(cluster)}\n"
                    f"{_columns_sql(t.columns)}\nengine = {t.engine}{args}{_clauses_sql(t)}{_settings_sql(t.settings)}"]
        raise SchemaError(f"{t.database}.{t.name}: engine {t.engine} has no cluster rendering "
                          "(use a *MergeTree or KeeperMap engine)")
    unsharded = t.name in UNSHARDED_TABLES
    local = t.name if unsharded else t.name + LOCAL_SUFFIX
    path = ZK_PATH_UNSHARDED if unsharded else ZK_PATH
    args = f"'{path}', '{{replica}}'" + (f", {t.engine_args}" if t.engine_args else "")
    engine = f"Replicated{t.engine}({args})"
    out = [f"create table {_ine(t.if_not_exists)}{t.database}.{local} {_on(cluster)}\n{_columns_sql(t.columns)}\n"
           f"engine = {engine}{_clauses_sql(t)}{_settings_sql(_replicated_settings(t))}"]
    if not unsharded:
        out.append(f"create table {_ine(t.if_not_exists)}{t.database}.{t.name} {_on(cluster)}\n"
                   f"{_columns_sql(t.column_defs)}\n"
                   f"engine = Distributed('{cluster}', '{t.database}', '{local}', {sharding_key(t)})")
    return out


# the names the DDL is rendered with, defined once (the settings' patterns and template.yaml's parameter use them)
CLUSTER_NAME = r"[A-Za-z0-9_.-]+"
DATABASE_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def render_cluster(statements: Sequence[str], cluster: str) -> list[str]:
    """Render single-node DDL statements (in file order) for the sharded, replicated ``cluster``."""
    if not re.fullmatch(CLUSTER_NAME, cluster):
        raise SchemaError(f"invalid cluster name {cluster!r}")
    tables: dict[tuple[str, str], Table] = {}
    for stmt in statements:
        if _kind(stmt) == "table":
            t = parse_table(stmt)
            tables[(t.database, t.name)] = t

    def sharded(db: str, name: str) -> bool:
        t = tables.get((db, name))
        return t is not None and t.is_merge_tree and name not in UNSHARDED_TABLES

    out: list[str] = []
    for stmt in statements:
        kind = _kind(stmt)
        if kind == "database":
            m = _CREATE_DB.match(_norm(strip_comments(stmt)))
            assert m is not None
            rest = f" {m.group(3).strip()}" if m.group(3).strip() else ""
            out.append(f"create database {_ine(bool(m.group(1)))}{m.group(2)} {_on(cluster)}{rest}")
        elif kind == "table":
            out.extend(_render_table(parse_table(stmt), cluster))
        elif kind == "view":
            v = parse_view(stmt)
            select = v.select
            sources = {(db, name) for db, name in tables
                       if re.search(rf"\b{re.escape(db)}\.{re.escape(name)}\b", select)}
            for db, name in sources:
                if sharded(db, name):
                    select = re.sub(rf"\b{re.escape(db)}\.{re.escape(name)}\b", f"{db}.{name}{LOCAL_SUFFIX}", select)
            tdb, tname = v.target
            if sharded(tdb, tname):
                for db, name in sources:
                    if not sharded(db, name):
                        raise SchemaError(f"{v.database}.{v.name}: source {db}.{name} is not sharded like its target")
                    src_key, dst_key = sharding_key(tables[(db, name)]), sharding_key(tables[(tdb, tname)])
                    if src_key != dst_key:
                        raise SchemaError(
                            f"{v.database}.{v.name}: the view runs per shard, so {db}.{name} ({src_key}) and "
                            f"{tdb}.{tname} ({dst_key}) must be sharded by the same key: add both to SHARDING_KEYS"
                        )
                tname += LOCAL_SUFFIX
            out.append(f"create materialized view {_ine(v.if_not_exists)}{v.database}.{v.name} {_on(cluster)}\n"
                       f"to {tdb}.{tname}\nas {select}")
        elif kind == "plain view":
            # A (parameterised) view is a stored query: it reads the Distributed tables by their
            # original names, so its SQL is unchanged and it only has to exist on every host.
            m = _CREATE_PLAIN_VIEW.match(_norm(strip_comments(stmt)))
            assert m is not None
            out.append(f"{m.group(1)} {_on(cluster)}\n{m.group(2)}")
        elif kind == "alter":
            m = _ALTER.match(_norm(strip_comments(stmt)))
            assert m is not None
            db, name = _qualified(m.group(1))
            action = m.group(2)
            if sharded(db, name):
                out.append(f"alter table {db}.{name}{LOCAL_SUFFIX} {_on(cluster)} {action}")
                if _COLUMN_ALTER.match(action):
                    out.append(f"alter table {db}.{name} {_on(cluster)} {action}")
            else:
                out.append(f"alter table {db}.{name} {_on(cluster)} {action}")
        elif _norm(strip_comments(stmt)).lower().startswith(_ACCESS_CONTROL):
            # users, roles and grants of the cluster are defined by the ClickHouseInstallation
            # (deploy/kubernetes/clickhouse/), as the single server's are by users.d
            continue
        else:
            raise SchemaError(f"no cluster rendering for: {_norm(strip_comments(stmt))[:80]}…")
    return out


_CREATED = re.compile(
    r"^create\s+(?:or\s+replace\s+)?(?:table|view|materialized\s+view)\s+(?:if\s+not\s+exists\s+)?"
    r"[`]?(\w+)[`]?\.[`]?(\w+)[`]?", re.IGNORECASE)


def created_objects(statements: Sequence[str]) -> set[tuple[str, str]]:
    """``(database, name)`` of every table and view the statements create (as ``system.tables`` lists them)."""
    return {(m[1], m[2]) for stmt in statements if (m := _CREATED.match(stmt.strip()))}


def single_node_statements(ddl_dir: Path | None = None, database: str = "electricity") -> list[str]:
    """Every statement of ``ch/init/NNN.*.sql`` in order, for ``database`` (as ``Store.apply_schema`` runs them)."""
    from shared.store import DDL_DIR, _split_statements

    out: list[str] = []
    for path in sorted((ddl_dir or DDL_DIR).glob("[0-9][0-9][0-9].*.sql")):
        sql = path.read_text().replace("electricity.", f"{database}.")
        sql = sql.replace("database if not exists electricity", f"database if not exists {database}")
        out.extend(_split_statements(sql))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m shared ddl [--cluster NAME] [--database DB]``: print the DDL (cluster rendering with --cluster)."""
    parser = argparse.ArgumentParser(prog="python -m shared ddl", description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", help="cluster name (remote_servers); without it the single-node DDL")
    parser.add_argument("--database", default="electricity")
    args = parser.parse_args(argv)
    # an empty or odd name used to print the single-node DDL (or a traceback) as if it were what was asked for
    if args.cluster is not None and not re.fullmatch(CLUSTER_NAME, args.cluster):
        parser.error(f"--cluster {args.cluster!r} is not a cluster name (letters, digits, _ . -)")
    if not re.fullmatch(DATABASE_NAME, args.database):
        parser.error(f"--database {args.database!r} is not a database name (letters, digits, _; not first a digit)")
    stmts = single_node_statements(database=args.database)
    if args.cluster is not None:
        stmts = render_cluster(stmts, args.cluster)
    sys.stdout.write("".join(s.rstrip() + ";\n\n" for s in stmts))
    return 0


def apply_main(argv: list[str] | None = None) -> int:
    """``python -m shared apply-schema``: apply the DDL to the configured server now, as a writer does at its first
    start, and record its fingerprint. Run before deploying functions whose DDL changed: on a cluster the ~50
    ``ON CLUSTER`` statements each wait for every host, which the first scheduled invocation (poll: 60 s) could not
    afford; after this, every writer finds the fingerprint and applies nothing."""
    parser = argparse.ArgumentParser(
        prog="python -m shared apply-schema",
        description="Apply the DDL (ch/init) to the server of POWERSENSE_CLICKHOUSE_URL/_USER/_PASSWORD/_DATABASE "
                    "(/_CLUSTER on a cluster) and record its fingerprint; nothing when it is already there.")
    parser.parse_args(argv)
    from shared.settings import get_settings
    from shared.store import Store

    store = Store(get_settings())
    applied = store.apply_schema()
    where = f"database {store.database}" + (f" on cluster {store.settings.clickhouse_cluster}"
                                            if store.settings.clickhouse_cluster else "")
    print(f"{where}: applied {applied} statements" if applied else f"{where}: schema already current, nothing applied")
    return 0
