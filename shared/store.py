"""The one ClickHouse access layer: chDB in-process (embedded default) or a server over HTTP(S).

Both transports go through clickhouse-connect, so every statement, the ``{name:Type}`` server-side
parameter binding and ``insert_df``/``query_df`` are identical.  The DDL in ``ch/init/NNN.*.sql`` is
applied idempotently by :func:`Store.apply_schema` on both.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from shared.errors import StoreError
from shared.logs import log_event
from shared.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

DDL_DIR = REPO_ROOT / "ch" / "init"

# Explicit insert settings: ClickHouse 26 servers default to async_insert=1, which would make an
# insert return before its rows are visible and break read-your-writes between stages.
INSERT_SETTINGS: dict[str, Any] = {"async_insert": 0, "wait_for_async_insert": 1}

# Access control exists on servers only; chDB has no users.
_ACCESS_CONTROL = ("create user", "alter user", "grant", "create role", "create settings profile")

_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


# A parameterised view (``{db:Identifier}.series(source=…)``, ch/init/007.series.sql) is called like a
# table function, and ClickHouse's parser takes no ``{db:Identifier}`` parameter in front of a table
# function (chDB 26.9: "Syntax error … Expected one of: token, Comma"), so the store writes its own
# database name there (quoted; it comes from the validated settings, never from a request).
_DB_TABLE_FUNCTION = re.compile(r"\{db:Identifier\}\.(\w+)\(")


def _split_statements(sql: str) -> list[str]:
    """Split a DDL file on ``;`` at line ends, dropping comments and blanks."""
    no_comments = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", no_comments) if s.strip()]


def _limit_server_time(client: Any, timeout_s: float, user: str) -> None:
    """Make the server stop a statement when the client stops waiting for it (``max_execution_time``).

    The client's timeout only closes the connection: ClickHouse cancels a read-only statement then
    (``cancel_http_readonly_queries_on_client_close``, which clickhouse-connect sends), but a write (``insert …
    select``, DDL) runs on after its function has failed or been killed. With the same limit on the server every
    statement ends with ``TIMEOUT_EXCEEDED`` (a ``StoreError`` naming it) a second before the client would give
    up, so the caller gets the server's reason rather than a socket timeout. A profile's own lower limit is kept;
    a user that may not change the setting (``readonly = 1`` without a ``changeable_in_readonly`` constraint)
    keeps the server's, with a warning, rather than failing every statement (clickhouse-connect refuses to send a
    setting ``system.settings`` marks read-only)."""
    limit = max(1, math.ceil(timeout_s) - 1)
    setting = client.server_settings.get("max_execution_time")
    if setting is not None and setting.readonly:
        log_event(log, "server_time_limit_unavailable", logging.WARNING, user=user,
                  hint="max_execution_time is read-only for this user: a statement the client gave up on may run on "
                       "the server; add a changeable_in_readonly constraint to its profile")
        return
    current = float(setting.value) if setting is not None else 0.0
    if 0 < current <= limit:
        return
    client.set_client_setting("max_execution_time", limit)


class Store:
    """Thread-safe facade over a clickhouse-connect client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self.embedded = settings.embedded
        # chDB runs one engine per process: every call is serialised through one lock there.
        # Over HTTP each call is an independent request, so no lock is needed.
        self._lock: threading.RLock | None = threading.RLock() if self.embedded else None
        self._client = self._connect()

    def _connect(self) -> Any:
        import clickhouse_connect

        s = self.settings
        try:
            if s.embedded:
                path = str(Path(s.chdb_path).resolve())
                with _ENGINES_LOCK:
                    if path not in _ENGINES:
                        if _ENGINES:
                            raise StoreError(
                                f"chDB already open at {next(iter(_ENGINES))}; one data directory per process"
                            )
                        Path(path).mkdir(parents=True, exist_ok=True)
                        _ENGINES[path] = clickhouse_connect.get_client(interface="chdb", path=path)
                    return _ENGINES[path]
            client = clickhouse_connect.get_client(
                dsn=s.clickhouse_url,
                username=s.clickhouse_user,
                password=s.clickhouse_password.get_secret_value(),
                autogenerate_session_id=False,
                connect_timeout=10,
                # 300 s before: a server that accepted and never answered held every statement, and the query
                # API's /health, past each function's exec_timeout
                send_receive_timeout=s.clickhouse_timeout_s,
            )
            _limit_server_time(client, s.clickhouse_timeout_s, s.clickhouse_user)
            return client
        except StoreError:
            raise
        except Exception as exc:  # the driver raises many types; one typed error for callers
            raise StoreError(f"cannot connect to ClickHouse: {exc}") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    # --- statements -----------------------------------------------------------------------------
    def command(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> Any:
        """Run a statement that returns no rows (DDL, INSERT … SELECT)."""
        try:
            with self._locked():
                return self._client.command(self._sql(sql), parameters=self._params(parameters), settings=settings)
        except Exception as exc:
            raise StoreError(f"ClickHouse command failed: {exc}") from exc

    def _sql(self, sql: str) -> str:
        quoted = "`" + self.database.replace("\\", "\\\\").replace("`", "\\`") + "`"
        return _DB_TABLE_FUNCTION.sub(lambda m: f"{quoted}.{m.group(1)}(", sql)

    def _params(self, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
        # ``{db:Identifier}`` is always bound to this store's database, so SQL never hard-codes it.
        params = {"db": self.database}
        if parameters:
            params.update(parameters)
        return params

    def query_df(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a SELECT and return a DataFrame; values are bound server-side via ``{name:Type}``.

        Timestamp columns come back timezone-aware in UTC on both transports (chDB drops the zone).
        """
        try:
            with self._locked():
                df = self._client.query_df(self._sql(sql), parameters=self._params(parameters))
        except Exception as exc:
            raise StoreError(f"ClickHouse query failed: {exc}") from exc
        for col in df.columns:
            if pd.api.types.is_datetime64_any_dtype(df[col]):
                s = df[col]
                df[col] = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        return df

    def query_rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a SELECT and return its rows as tuples."""
        try:
            with self._locked():
                return list(self._client.query(self._sql(sql), parameters=self._params(parameters)).result_rows)
        except Exception as exc:
            raise StoreError(f"ClickHouse query failed: {exc}") from exc

    def scalar(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """First column of the first row, or None."""
        rows = self.query_rows(sql, parameters)
        return rows[0][0] if rows else None

    def insert_df(
        self,
        table: str,
        df: pd.DataFrame,
        *,
        dedup_token: str | None = None,
        column_names: Sequence[str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> int:
        """Insert a DataFrame synchronously; NaN/NA/NaT become SQL NULL.

        ``dedup_token`` makes a retried insert of the same block a no-op (ClickHouse insert
        deduplication; the tables set ``non_replicated_deduplication_window``).  ``settings`` adds
        per-insert settings (the lease's ``insert_quorum``).
        """
        if df.empty:
            return 0
        insert_settings = {**INSERT_SETTINGS, **(settings or {})}
        if dedup_token:
            insert_settings["insert_deduplication_token"] = dedup_token
            insert_settings["insert_deduplicate"] = 1
        frame = sanitize_nulls(df)
        try:
            with self._locked():
                self._client.insert_df(
                    f"{self.database}.{table}" if "." not in table else table,
                    frame,
                    column_names=list(column_names) if column_names else None,
                    settings=insert_settings,
                )
        except Exception as exc:
            raise StoreError(f"insert into {table} failed: {exc}") from exc
        return len(frame)

    # --- schema ---------------------------------------------------------------------------------
    def apply_schema(self, ddl_dir: Path = DDL_DIR) -> int:
        """Apply every ``NNN.*.sql`` file in order; idempotent (``if not exists`` everywhere). Returns the number
        of statements run: 0 when the server already holds this DDL.

        A read-only connection (the query function's user) applies nothing: the writers own the DDL. A server
        whose last fingerprint in ``schema_fingerprints`` is this DDL's (``ch/init/099.schema_fingerprints.sql``)
        and that holds every object it creates is left as it is: two local reads instead of ~50 statements, which on a
        cluster each wait for every host (a host down made every writer's start-up fail). An object dropped
        since, or any change to the DDL, applies it all again.
        """
        if not self.embedded and int(self.scalar("select getSetting('readonly')") or 0) > 0:
            log_event(log, "schema_skipped_readonly", database=self.database)
            return 0
        from shared.schema import render_cluster, single_node_statements

        statements = single_node_statements(ddl_dir, self.database)
        if self.settings.clickhouse_cluster:  # one DDL, rendered ON CLUSTER (Replicated* + Distributed)
            statements = render_cluster(statements, self.settings.clickhouse_cluster)
        if self.embedded:  # access control exists on servers only
            statements = [s for s in statements if not s.lstrip().lower().startswith(_ACCESS_CONTROL)]
        fingerprint = hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()
        if self._schema_is_current(fingerprint, statements):
            log_event(log, "schema_current", fingerprint=fingerprint[:16], database=self.database)
            return 0
        for stmt in statements:
            self.command(stmt)
        self.command("insert into {db:Identifier}.schema_fingerprints (fingerprint, statements) "
                     "values ({fingerprint:String}, {n:UInt32})",
                     {"fingerprint": fingerprint, "n": len(statements)}, settings=INSERT_SETTINGS)
        log_event(log, "schema_applied", statements=len(statements), fingerprint=fingerprint[:16],
                  database=self.database)
        return len(statements)

    def _schema_is_current(self, fingerprint: str, statements: Sequence[str]) -> bool:
        """True when ``fingerprint`` is the last DDL this server recorded and it still holds every object the
        statements create. The last, not any: after a roll-back that applied another release's DDL (its view
        bodies), rolling forward again must re-apply this one."""
        from shared.schema import created_objects

        try:
            last = self.scalar("select argMax(fingerprint, applied_at) from {db:Identifier}.schema_fingerprints")
        except StoreError:
            return False  # no fingerprint table yet: a new server, or one initialised before it existed
        if last != fingerprint:
            return False
        expected = created_objects(statements)
        present = set(self.query_rows(
            "select database, name from system.tables where (database, name) in {objects:Array(Tuple(String, String))}",
            {"objects": sorted(expected)}))
        return present >= expected

    def ping(self) -> bool:
        """True when the store answers a trivial query."""
        try:
            return self.scalar("select 1") == 1
        except StoreError:
            return False


def sanitize_nulls(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy where NaN/NA/NaT (and inf in float columns) are None, i.e. SQL NULL."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_float_dtype(s):
            s = s.where(~s.isin([float("inf"), float("-inf")]))
        if s.isna().any():
            out[col] = s.astype(object).where(s.notna(), None)
    return out


_store: Store | None = None
_store_lock = threading.Lock()


def get_store(settings: Settings | None = None) -> Store:
    """The process-wide store (built once; schema applied on first use)."""
    global _store
    with _store_lock:
        if _store is None:
            from shared.settings import get_settings

            store = Store(settings or get_settings())
            # kept only once the schema is applied: a failed apply (a host down, a server restarting) is tried
            # again by the next call instead of leaving the process on whatever schema the server holds
            store.apply_schema()
            _store = store
        return _store


def existing_store() -> Store | None:
    """The process-wide store if one was built, else None: never connects (safe on an event loop)."""
    return _store


def reset_store() -> None:
    """Forget the process-wide store (tests switch databases with this)."""
    global _store
    with _store_lock:
        _store = None
