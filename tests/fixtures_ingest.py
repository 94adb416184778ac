"""Test helpers for ingestion: the real replay app served by uvicorn on 127.0.0.1, with an ASGI
fault injector in front of it (HTTP errors, delays, malformed bodies, rewritten records).

The injector is a test helper only: the product's replay (local_dev/replay.py) has no fault paths.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import uvicorn

from local_dev.replay import create_replay_app
from shared import clock
from shared.runs import stage_run
from shared.settings import REPO_ROOT, Settings
from shared.store import Store

ECO2MIX = REPO_ROOT / "data" / "eco2mix"
REPLAY_FILES = [ECO2MIX / "eco2mix_national_2015.csv.gz", ECO2MIX / "eco2mix_national_2023.csv.gz"]

Transform = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclass
class Fault:
    """What to do to records request number ``n`` (1-based; None = every request)."""

    n: int | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes | None = None
    transform: Transform | None = None


class FaultInjector:
    """ASGI middleware applying :class:`Fault` rules to the requests of the wrapped app whose path ends
    with ``path_suffix`` (the records endpoint by default; None: every request)."""

    def __init__(self, app: Any, path_suffix: str | None = "/records") -> None:
        self.app = app
        self.path_suffix = path_suffix
        self.faults: list[Fault] = []
        self.count = 0
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def reset(self, *faults: Fault) -> None:
        """Replace the rules and restart request counting."""
        with self._lock:
            self.faults = list(faults)
            self.count = 0
            self.log = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (self.path_suffix is not None and not scope["path"].endswith(self.path_suffix)):
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.count += 1
            n = self.count
            self.log.append({"n": n, "query": scope.get("query_string", b"").decode()})
            rules = [f for f in self.faults if f.n is None or f.n == n]
        for f in rules:
            if f.delay_s:
                await asyncio.sleep(f.delay_s)
            if f.status is not None or f.body is not None:
                body = f.body if f.body is not None else json.dumps({"error": "injected"}).encode()
                headers = [(b"content-type", b"application/json")]
                headers += [(k.lower().encode(), v.encode()) for k, v in f.headers.items()]
                await send({"type": "http.response.start", "status": f.status or 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        transforms = [f.transform for f in rules if f.transform is not None]
        if not transforms:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        start: dict[str, Any] = {}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        doc = json.loads(b"".join(chunks))
        for t in transforms:
            doc = t(doc, n)
        body = json.dumps(doc).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 200), "headers": headers})
        await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ReplayServer:
    """A running replay: ``api_url`` is what POWERSENSE_SOURCE_URL points at."""

    api_url: str
    faults: FaultInjector


@contextmanager
def serve(app: Any, path: str = "") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1; yields its base URL + ``path``."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("replay server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serve_replay(files: list[Any] | None = None) -> Iterator[ReplayServer]:
    """Serve the real replay app (behind a FaultInjector) with uvicorn in a thread."""
    injector = FaultInjector(create_replay_app(files or REPLAY_FILES))
    with serve(injector, "/api/explore/v2.1") as url:
        yield ReplayServer(url, injector)


def ingest_settings(settings: Settings, replay: ReplayServer, **overrides: Any) -> Settings:
    """Settings pointing at the replay, with fast retries and no history bootstrap by default."""
    values: dict[str, Any] = {
        "source_url": replay.api_url,
        "source_timeout_s": 2.0,
        "source_retries": 3,
        "source_backoff_s": 0.01,
        "source_backoff_max_s": 0.05,
        "poll_bootstrap": False,
        "history_files": [ECO2MIX / "eco2mix_national_2023.csv.gz"],
    }
    values.update(overrides)
    return settings.model_copy(update=values)


def set_clock(at: datetime) -> None:
    """Freeze the product clock at ``at`` (speed 0)."""
    clock.install(clock.SimulatedClock(at, speed=0.0))


def poll_once(store: Store, settings: Settings, **options: Any) -> dict[str, Any]:
    """One poll run (pipeline_runs row included); exceptions propagate."""
    from shared.ingest.poll import run_poll

    with stage_run(store, "poll") as run:
        run_poll(store, settings, run, **options)
    return run.as_dict()


def upsert_once(store: Store, settings: Settings, **options: Any) -> dict[str, Any]:
    """One upsert-version run; exceptions propagate."""
    from shared.ingest.versioning import run_upsert

    with stage_run(store, "upsert-version") as run:
        run_upsert(store, settings, run, **options)
    return run.as_dict()


def content(store: Store) -> list[tuple[Any, ...]]:
    """The logical measurements content: (ukey, version, value, metric, ts) after deduplication."""
    return store.query_rows(
        """
        select ukey, version, value, metric, ts
        from {db:Identifier}.measurements final
        order by ukey, version
        """
    )


def physical_duplicates(store: Store) -> int:
    """(ukey, version) pairs stored more than once before merges (should stay 0)."""
    return int(store.scalar(
        """
        select count() from (
            select ukey, version from {db:Identifier}.measurements group by ukey, version having count() > 1
        )
        """
    ) or 0)


@contextmanager
def other_database(settings: Settings) -> Iterator[tuple[Store, Settings]]:
    """A second, empty database on the same chDB engine (for reference runs), dropped afterwards."""
    name = f"ref_{uuid.uuid4().hex[:10]}"
    other = settings.model_copy(update={"clickhouse_database": name})
    store = Store(other)
    store.apply_schema()
    try:
        yield store, other
    finally:
        store.command(f"drop database if exists {name}")


# --- record-level faults (issue 9): what real sources do -------------------------------------------------


def _at(doc: dict[str, Any], instant: str) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r.get("date_heure") == instant]


def add_copy(instant: str, **changes: Any) -> Transform:
    """Append, after the real record of ``instant`` (when the page has it), a copy with ``changes``:
    e.g. ``perimetre="Bretagne", consommation=5`` (a foreign perimeter) or
    ``date_heure="…T12:00:30+00:00"`` (an off-grid instant)."""

    def transform(doc: dict[str, Any], n: int) -> dict[str, Any]:
        for i, rec in enumerate(list(doc["results"])):
            if rec.get("date_heure") == instant and rec.get("perimetre") == "France":
                doc["results"].insert(i + 1, {**rec, **changes})
                break
        return doc

    return transform


def set_field(values: dict[str, Any], field_name: str = "consommation") -> Transform:
    """Replace ``field_name`` of the records at the given instants (``{date_heure: raw value}``), e.g.
    ``"Infinity"``, ``"1_586"``, Arabic-Indic digits."""

    def transform(doc: dict[str, Any], n: int) -> dict[str, Any]:
        for rec in doc["results"]:
            if rec.get("date_heure") in values:
                rec[field_name] = values[rec["date_heure"]]
        return doc

    return transform


def repeat_previous_page(n_repeat: int) -> Transform:
    """Request ``n_repeat`` answers the previous request's records again (the source rewrote rows while
    we paged: an offset reader then skips the page it should have got)."""
    previous: dict[int, list[Any]] = {}

    def transform(doc: dict[str, Any], n: int) -> dict[str, Any]:
        if n == n_repeat and n - 1 in previous:
            doc["results"] = json.loads(json.dumps(previous[n - 1]))
        previous[n] = json.loads(json.dumps(doc["results"]))
        return doc

    return transform


def drop_from_page(n_drop: int, count: int, at: int = 40) -> Transform:
    """Request ``n_drop`` loses ``count`` records from the middle of its page (a short page)."""

    def transform(doc: dict[str, Any], n: int) -> dict[str, Any]:
        if n == n_drop:
            del doc["results"][at:at + count]
        return doc

    return transform


def drop_instants(instants: set[str]) -> Transform:
    """Every request lacks the records of these instants (a source that lost rows: its total_count
    still counts them)."""

    def transform(doc: dict[str, Any], n: int) -> dict[str, Any]:
        doc["results"] = [r for r in doc["results"] if r.get("date_heure") not in instants]
        return doc

    return transform


def inflate_total_count(extra: int) -> Transform:
    """The source announces ``extra`` more records than it ever delivers."""

    def transform(doc: dict[str, Any], n: int) -> dict[str, Any]:
        doc["total_count"] += extra
        return doc

    return transform


def requests_where(faults: FaultInjector) -> list[str]:
    """The ``where`` parameter of every records request seen so far."""
    from urllib.parse import parse_qs

    return [parse_qs(entry["query"]).get("where", [""])[0] for entry in faults.log]
