"""The embedded OpenFaaS-compatible gateway and cron-connector, end to end over real HTTP.

A uvicorn server runs the gateway (every function app + the replay of real data) on loopback;
the cron-connector fires functions through it exactly as OpenFaaS's cron-connector would.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn

from local_dev.cron import CronConnector
from local_dev.gateway import create_gateway_app
from local_dev.stack import read_stack
from shared import clock
from shared.settings import get_settings
from shared.store import Store

REPLAY_NOW = datetime(2023, 6, 1, 0, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gateway(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[str]:
    """Serve the gateway for this test's database; the poll source is the gateway's own replay."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "gateway_password").write_text("s3cret")
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("POWERSENSE_SOURCE_URL", f"{url}/replay/api/explore/v2.1")
    monkeypatch.setenv("POWERSENSE_HISTORY_FILES", '["data/eco2mix/eco2mix_national_2023.csv.gz"]')
    monkeypatch.setenv("POWERSENSE_HISTORY_UNTIL", "2023-05-31T00:00:00Z")
    get_settings.cache_clear()
    clock.install(clock.SimulatedClock(REPLAY_NOW, speed=1.0))
    app = create_gateway_app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "gateway did not start"
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
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
    assert httpx.post(f"{gateway}/function/nope").status_code == 404


def test_poll_then_upsert_through_gateway_versions_replayed_data(gateway: str, store: Store) -> None:
    headers = {"X-Topic": "cron-function", "X-Connector": "cron-connector"}
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
