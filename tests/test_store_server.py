"""The store over a ClickHouse server's HTTP interface (clickhouse-connect's HTTP client, as production runs it),
against ``tests/chdb_http.py``: the HTTP interface in front of chDB, the same engine, in its own process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.errors import StoreError
from shared.settings import REPO_ROOT, Settings
from shared.store import Store

StartServer = Callable[..., str]


@pytest.fixture
def clickhouse_http(tmp_path: Path) -> Iterator[StartServer]:
    """Start the HTTP stand-in (``--readonly`` settings as keyword) and return its URL; killed after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(readonly: tuple[str, ...] = ()) -> str:
        port_file = tmp_path / f"port{len(procs)}"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.chdb_http", str(tmp_path / f"data{len(procs)}"), str(port_file),
             "--readonly", *readonly], cwd=REPO_ROOT))
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text()):
            assert procs[-1].poll() is None and time.monotonic() < deadline, "the HTTP stand-in did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port_file.read_text()}"

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _store(url: str, timeout_s: float) -> Store:
    return Store(Settings(clickhouse_url=url, clickhouse_timeout_s=timeout_s))


def test_a_statement_past_the_timeout_is_stopped_by_the_server_with_its_reason(clickhouse_http: StartServer) -> None:
    """Before: only the client gave up (a socket timeout), and the server ran the statement on."""
    store = _store(clickhouse_http(), timeout_s=3)
    with pytest.raises(StoreError, match="TIMEOUT_EXCEEDED"):
        store.query_rows("select count() from numbers(100000000000)")


def test_a_write_the_client_gave_up_on_does_not_keep_the_server_busy(clickhouse_http: StartServer) -> None:
    """A write is not cancelled when its client closes the connection (only read-only statements are): without a
    server-side limit it held the stand-in's one engine, so the next statement timed out as well."""
    store = _store(clickhouse_http(), timeout_s=3)
    store.command("create table sink (x UInt64) engine = Null")
    with pytest.raises(StoreError):
        store.command("insert into sink select number from numbers(100000000000)")
    assert store.query_rows("select 1") == [(1,)]


def test_a_user_that_may_not_change_the_limit_keeps_the_servers(clickhouse_http: StartServer,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """``readonly = 1`` without a ``changeable_in_readonly`` constraint: clickhouse-connect refuses to send the
    setting, so setting it anyway would fail every statement; the store warns and runs without it."""
    store = _store(clickhouse_http(readonly=("max_execution_time",)), timeout_s=3)
    assert store.query_rows("select 40 + 2") == [(42,)]
    assert "server_time_limit_unavailable" in caplog.text
