"""Response cache keyed on the request and a data watermark of the store.

The watermark changes whenever any table of the database receives an insert, a mutation or a merge
(per table: highest block number, part count, data version of the active parts) or when a table is
created or dropped. A cached response therefore stays valid exactly as long as the data behind it;
the watermark itself is re-read at most every ``ttl_s`` seconds, so a response can be at most
``ttl_s`` behind the store (0 = re-read on every request: strict read-your-writes).

Why: in embedded mode chDB serialises every query under one lock, so repeated dashboard and API
reads of the same window would queue behind each other. A hit costs a dict lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import StoreError
from shared.logs import log_event
from shared.query.service import REQUIRED_TABLES
from shared.store import Store

log = logging.getLogger(__name__)

WATERMARK_SQL = """
select
    (select groupArray((table, max_block, parts, data_ver)) from (
        select table, max(max_block_number) as max_block, count() as parts, max(data_version) as data_ver
        from system.parts
        where database = {db:String} and active
        group by table
        order by table
    )),
    (select groupArray(name) from (select name from system.tables where database = {db:String} order by name))
"""


@dataclass(frozen=True)
class StoreState:
    """What the cache knows about the store: a watermark token and the tables that exist."""

    token: str
    tables: frozenset[str]
    checked_at: float = field(compare=False)


@dataclass(frozen=True)
class CachedResponse:
    """A serialised response body with its media type and extra headers."""

    body: bytes
    media_type: str
    headers: dict[str, str]


# When system tables cannot be read, the schema cannot be checked: assume what the query API reads exists
# (a missing table then fails its own query with StoreError, 503).
ALL_TABLES = REQUIRED_TABLES
_warned = False


def read_state(store: Store, ttl_s: float = 1.0) -> StoreState:
    """Read the watermark and table set (one cheap query on system tables).

    A server that denies the reader ``system.parts``/``system.tables`` (``select_from_system_db_requires_grant``)
    degrades to a time-bucketed watermark: responses are then at most ``max(ttl_s, 1)`` seconds old.
    """
    global _warned
    try:
        rows = store.query_rows(WATERMARK_SQL)
    except StoreError as exc:
        if not store.ping():
            raise
        if not _warned:
            log_event(log, "watermark_unavailable", logging.WARNING, error=str(exc)[:300],
                      hint="grant SELECT on system.parts and system.tables to the query user")
            _warned = True
        bucket = int(time.monotonic() // max(ttl_s, 1.0))
        return StoreState(token=f"time-{bucket}", tables=ALL_TABLES, checked_at=time.monotonic())
    parts, tables = rows[0] if rows else ([], [])
    return StoreState(token=repr(parts), tables=frozenset(str(t) for t in tables), checked_at=time.monotonic())


class QueryCache:
    """Bounded LRU of serialised responses plus the per-database watermark."""

    def __init__(self, ttl_s: float, max_entries: int = 512, max_entry_bytes: int = 4 << 20,
                 max_total_bytes: int = 64 << 20) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes
        self.max_total_bytes = max_total_bytes  # the function runs with 512 MiB
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        # Small derived facts (known series, latest timestamp per series) keyed on the watermark: kept
        # even when response caching is off, they are what makes a response-cache miss cost one query.
        self._memo: OrderedDict[Hashable, tuple[Any]] = OrderedDict()
        self.max_memo = 1024
        self._states: dict[str, StoreState] = {}
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._flights: dict[Hashable, threading.Lock] = {}

    def fresh_state(self, store: Store) -> StoreState | None:
        """The watermark if it was read less than ``ttl_s`` ago, else None (no I/O)."""
        return self.fresh_state_for(store.database)

    def fresh_state_for(self, database: str) -> StoreState | None:
        """:meth:`fresh_state` by database name."""
        state = self._states.get(database)
        if state is not None and time.monotonic() - state.checked_at < self.ttl_s:
            return state
        return None

    def refresh_state(self, store: Store) -> StoreState:
        """Re-read the watermark (blocking; call from a worker thread)."""
        with self._refresh_lock:
            state = self.fresh_state(store)  # another thread may have just refreshed it
            if state is None:
                state = read_state(store, self.ttl_s)
                self._states[store.database] = state
            return state

    def get(self, key: Hashable) -> Any | None:
        """The cached value for ``key`` (moved to most recent) or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any, size: int = 0) -> None:
        """Store a value unless it is larger than ``max_entry_bytes``; evict the oldest beyond the bound."""
        if self.max_entries <= 0 or size > self.max_entry_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += size - (old[1] if old else 0)
            self._entries[key] = (value, size)
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_total_bytes):
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Cached ``compute()`` (the key must contain the watermark token), computed once per key however many
        callers ask at the same time: 30 concurrent /metrics scrapes ran the collector's queries 30 times."""
        with self._lock:
            boxed = self._memo.get(key)  # boxed in a 1-tuple so that a computed None is cached too
            if boxed is not None:
                return boxed[0]
            flight = self._flights.setdefault(key, threading.Lock())
        try:
            with flight:  # the first caller computes; the others wait, then find its result
                with self._lock:
                    boxed = self._memo.get(key)
                if boxed is None:
                    boxed = (compute(),)
                    with self._lock:
                        self._memo[key] = boxed
                        while len(self._memo) > self.max_memo:
                            self._memo.popitem(last=False)
        finally:
            with self._lock:
                self._flights.pop(key, None)
        return boxed[0]

    def clear(self) -> None:
        """Forget every entry and watermark."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._memo.clear()
            self._states.clear()
