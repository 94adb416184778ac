"""The embedded OpenFaaS-compatible gateway and cron-connector, end to end over real HTTP.

A uvicorn server runs the gateway (every function app + the replay of real data) on loopback;
the cron-connector fires functions through it exactly as OpenFaaS's cron-connector would.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from local_dev.cron import CronConnector
from local_dev.stack import read_stack
from shared import clock
from shared.settings import get_settings
from shared.store import Store
from tests.fixtures_gateway import serve_gateway
from tests.fixtures_ingest import free_port

REPLAY_NOW = datetime(2023, 6, 1, 0, 0, tzinfo=UTC)


MAX_BODY = 64 * 1024
QUEUE_SIZE = 2


@pytest.fixture
def callback_port() -> int:
    """Port of the one callback receiver the gateway is allowed to POST results to."""
    return free_port()


@pytest.fixture
def gateway(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path, callback_port: int) -> Iterator[str]:
    """Serve the gateway for this test's database; the poll source is the gateway's own replay."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("POWERSENSE_GATEWAY_MAX_BODY_BYTES", str(MAX_BODY))
    monkeypatch.setenv("POWERSENSE_GATEWAY_ASYNC_QUEUE_SIZE", str(QUEUE_SIZE))
    monkeypatch.setenv("POWERSENSE_GATEWAY_ASYNC_WORKERS", "1")
    monkeypatch.setenv("POWERSENSE_GATEWAY_CALLBACK_URLS", json.dumps([f"http://127.0.0.1:{callback_port}/done"]))
    (tmp_path / "gateway_password").write_text("s3cret")
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("POWERSENSE_SOURCE_URL", f"{url}/replay/api/explore/v2.1")
    monkeypatch.setenv("POWERSENSE_HISTORY_FILES", '["data/eco2mix/eco2mix_national_2023.csv.gz"]')
    monkeypatch.setenv("POWERSENSE_HISTORY_UNTIL", "2023-05-31T00:00:00Z")
    get_settings.cache_clear()
    clock.install(clock.SimulatedClock(REPLAY_NOW, speed=1.0))
    try:
        with serve_gateway(port):
            yield url
    finally:
        clock.install(None)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_healthz_answers_without_credentials(gateway: str) -> None:
    resp = httpx.get(f"{gateway}/healthz")
    assert resp.status_code == 200 and resp.text == "OK"


def test_system_routes_require_basic_auth(gateway: str) -> None:
    assert httpx.get(f"{gateway}/system/functions").status_code == 401
    assert httpx.get(f"{gateway}/system/functions", headers=_basic("admin", "wrong")).status_code == 401


def test_system_functions_lists_cron_annotations(gateway: str) -> None:
    resp = httpx.get(f"{gateway}/system/functions", headers=_basic("admin", "s3cret"))
    assert resp.status_code == 200
    listed = {f["name"]: f for f in resp.json()}
    assert {"poll", "upsert-version"} <= set(listed)
    assert listed["poll"]["annotations"]["schedule"] == "*/5 * * * *"


def test_unknown_function_is_404(gateway: str) -> None:
    resp = httpx.post(f"{gateway}/function/nope")
    assert resp.status_code == 404 and set(resp.json()) == {"error", "detail"}


def test_poll_then_upsert_through_gateway_versions_replayed_data(gateway: str, store: Store) -> None:
    headers = {"X-Topic": "cron-function", "X-Connector": "cron-connector"}
    # a fresh store: poll waits for the history bootstrap, which upsert-version (its owner) loads
    assert httpx.post(f"{gateway}/function/poll", headers=headers, timeout=120).json()["status"] == "skipped"
    boot = httpx.post(f"{gateway}/function/upsert-version", headers=headers, timeout=120).json()
    assert boot["status"] == "success" and boot["details"]["bootstrap"]["status"] == "done"
    poll = httpx.post(f"{gateway}/function/poll", headers=headers, timeout=120)
    assert poll.status_code == 200, poll.text
    assert poll.json()["status"] == "success"
    upsert = httpx.post(f"{gateway}/function/upsert-version", headers=headers, timeout=120)
    assert upsert.status_code == 200, upsert.text
    newest = store.scalar(
        "select max(ts) from {db:Identifier}.measurements where metric = 'consommation' and value is not null"
    )
    # history stops at 2023-05-31; the replayed day up to the simulated now was polled and versioned
    assert newest.replace(tzinfo=UTC) == REPLAY_NOW
    triggers = store.query_rows(
        "select function, argMax(trigger, updated_at), argMax(status, updated_at) "
        "from {db:Identifier}.pipeline_runs group by function, run_id order by function"
    )
    assert ("poll", "cron", "success") in triggers and ("upsert-version", "cron", "success") in triggers


def test_async_invocation_returns_202_and_runs_with_the_call_id(gateway: str, store: Store) -> None:
    assert httpx.post(f"{gateway}/function/upsert-version", timeout=120).json()["status"] == "success"  # history
    assert httpx.post(f"{gateway}/function/poll", timeout=120).json()["status"] == "success"  # lands pages
    resp = httpx.post(f"{gateway}/async-function/upsert-version", headers={"X-Call-Id": "abc123"})
    assert resp.status_code == 202 and resp.headers["x-call-id"] == "abc123"
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        rows = store.query_rows(
            "select argMax(status, updated_at) from {db:Identifier}.pipeline_runs where run_id = 'abc123'"
        )
        status = rows[0][0] if rows else None
        if status in ("success", "skipped", "failed"):
            break
        time.sleep(0.1)
    assert status == "success"


def test_cron_connector_fires_due_functions_with_cron_headers(gateway: str, store: Store) -> None:
    # 2023-06-01 00:00 is due for poll; +1 min for upsert-version (schedules read from the stack file)
    clock.install(clock.SimulatedClock(datetime(2023, 5, 31, 23, 59, 30, tzinfo=UTC), speed=60.0))
    fired: list[tuple[str, int]] = []
    specs = [s for s in read_stack() if s.name in ("poll", "upsert-version")]
    cron = CronConnector(gateway, specs, on_result=lambda inv: fired.append((inv.function, inv.status_code)))
    try:
        ticks = cron.run(max_ticks=2, wait_each_tick=True, speed=60.0)
    finally:
        cron.close()
    assert ticks == 2
    assert fired == [("poll", 200), ("upsert-version", 200)]
    runs = store.query_rows(
        "select function, argMax(trigger, updated_at) from {db:Identifier}.pipeline_runs group by function, run_id"
    )
    assert sorted(runs) == [("poll", "cron"), ("upsert-version", "cron")]


# --- limits (issue 9: max_inflight, body size, async queue, callbacks) ------------------------------------
class _HeldRequest:
    """A request the gateway has admitted (a max_inflight slot taken) but that cannot finish: its
    body is sent one byte short over a raw socket until ``finish()``."""

    def __init__(self, gateway: str, path: str) -> None:
        self.address = ("127.0.0.1", int(gateway.rsplit(":", 1)[1]))
        self.path = path
        self._open()

    def _open(self) -> None:
        self.sock = socket.create_connection(self.address, timeout=60)
        self.sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n{{".encode())

    def answered_early(self) -> bool:
        """The gateway answered before the body was complete (it was refused, not admitted)."""
        readable, _, _ = select.select([self.sock], [], [], 0.05)
        return bool(readable)

    def reopen(self) -> None:
        self.sock.close()
        self._open()

    def finish(self) -> int:
        """Send the last byte; the status code of the answer."""
        self.sock.sendall(b"}")
        data = b""
        while b"\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        self.sock.close()
        return int(data.split(b" ", 2)[1])


def _hold_slot(gateway: str, path: str, attempts: int = 200) -> tuple[_HeldRequest, httpx.Response]:
    """Hold the function's only slot, proven by a second request answered 429 (bounded retries: a probe
    may itself hold the slot at the moment the held request arrives)."""
    held = _HeldRequest(gateway, path)
    probe = httpx.get(f"{gateway}{path}", timeout=30)
    for _ in range(attempts):
        if probe.status_code == 429:
            break
        if held.answered_early():
            held.reopen()
        probe = httpx.get(f"{gateway}{path}", timeout=30)
    return held, probe


def test_max_inflight_from_the_stack_gives_429_like_of_watchdog(gateway: str) -> None:
    # poll has max_inflight: 1 in openfaas-stack.yml; query has 50, so it stays available meanwhile
    held, refused = _hold_slot(gateway, "/function/poll/health")
    try:
        assert refused.status_code == 429
        assert refused.text == "Concurrent request limit exceeded. Max concurrent requests: 1\n"
        assert httpx.get(f"{gateway}/function/query/health").status_code == 200
    finally:
        first = held.finish()
    assert first == 200  # the admitted request completes normally
    assert httpx.get(f"{gateway}/function/poll/health").status_code == 200  # slot given back


def test_request_body_over_the_limit_is_413(gateway: str) -> None:
    big = b"x" * (MAX_BODY + 1)
    declared = httpx.post(f"{gateway}/function/upsert-version", content=big)
    assert declared.status_code == 413 and declared.json()["error"] == "PayloadTooLarge"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(4):
            yield b"y" * (MAX_BODY // 2)

    streamed = httpx.post(f"{gateway}/function/upsert-version", content=chunked())
    assert streamed.status_code == 413 and set(streamed.json()) == {"error", "detail"}
    queued = httpx.post(f"{gateway}/async-function/upsert-version", content=chunked())
    assert queued.status_code == 413


def test_async_queue_is_bounded(gateway: str) -> None:
    # Hold poll's only slot: the queue-worker waits for it, so async calls pile up in the queue.
    held, probe = _hold_slot(gateway, "/function/poll/health")
    statuses: list[int] = []
    try:
        assert probe.status_code == 429
        for i in range(10):
            resp = httpx.get(f"{gateway}/async-function/poll/health", headers={"X-Call-Id": f"q{i}"})
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                assert resp.json()["error"] == "QueueFull"
                break
    finally:
        held.finish()
    # one taken by the worker (waiting for the slot) at most, QUEUE_SIZE waiting, then refused
    assert statuses[-1] == 429
    assert QUEUE_SIZE <= statuses.count(202) <= QUEUE_SIZE + 1


class _CallbackReceiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []
    arrived = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received.append((self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args: object) -> None:
        pass


def test_callback_urls_are_restricted_to_the_allow_list(gateway: str, callback_port: int) -> None:
    for url in ("http://169.254.169.254/latest/meta-data", f"http://127.0.0.1:{callback_port}/donex",
                f"http://127.0.0.1:{callback_port}.evil.example/done", "file:///etc/passwd"):
        resp = httpx.get(f"{gateway}/async-function/query/health", headers={"X-Callback-Url": url})
        assert resp.status_code == 400, url
        assert resp.json()["error"] == "BadRequestError"

    server = HTTPServer(("127.0.0.1", callback_port), _CallbackReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        resp = httpx.get(f"{gateway}/async-function/query/health",
                         headers={"X-Callback-Url": f"http://127.0.0.1:{callback_port}/done/1", "X-Call-Id": "cb1"})
        assert resp.status_code == 202
        assert _CallbackReceiver.arrived.wait(timeout=60)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    path, headers, body = _CallbackReceiver.received[0]
    assert path == "/done/1" and headers["X-Call-Id"] == "cb1" and headers["X-Function-Status"] == "200"
    assert json.loads(body)["store"] is True
