"""A function's stage metrics survive a new process (a deploy, an OOM kill, a scale from zero).

Each process pushes its registry to the Pushgateway with PUT, which replaces the job's group: what a new
process does not export, Prometheus no longer sees."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import yaml

from shared import metrics, runs
from shared.errors import StoreError
from shared.runs import stage_run
from shared.settings import REPO_ROOT
from shared.store import Store
from shared.timeutil import utc_datetime


def _new_process(function: str) -> None:
    """Forget what this process knows of ``function``'s runs, as a fresh one would."""
    runs._seeded.discard(function)
    for status in runs.RUN_STATUSES:
        with contextlib.suppress(KeyError):
            metrics.STAGE_RUNS.remove(function, status)
    with contextlib.suppress(KeyError):
        metrics.STAGE_LAST_SUCCESS.remove(function)


def _sample(name: str, labels: dict[str, str]) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_a_new_process_whose_runs_fail_still_reports_the_last_success(store: Store) -> None:
    # it reported none: PowerSenseStageNoRecentSuccess had no series to fire on for a broken deployment
    with stage_run(store, "featurize"):
        pass
    stored = store.scalar("select max(finished_at) from {db:Identifier}.pipeline_runs "
                          "where function = 'featurize' and status = 'success'")
    _new_process("featurize")
    with pytest.raises(RuntimeError), stage_run(store, "featurize"):
        raise RuntimeError("broken deployment")
    got = _sample("powersense_stage_last_success_timestamp_seconds", {"function": "featurize"})
    assert got == pytest.approx(utc_datetime(stored).timestamp(), abs=1e-3)


def test_a_new_process_exports_its_failure_counter_from_zero(store: Store) -> None:
    # a failure counter that first appears at 1 is no increase() for Prometheus: the next process's first
    # failure went uncounted unless this one had exported the series at 0
    _new_process("detect")
    with stage_run(store, "detect"):
        pass
    assert _sample("powersense_stage_runs_total", {"function": "detect", "status": "failed"}) == 0.0


def _killed_run(store: Store, function: str, started_ago_s: float) -> str:
    """The row a run leaves when its process is killed: ``running``, and nothing after it."""
    run = runs.Run(function=function, run_id=runs.new_run_id(), trigger="cron",
                   started_at=datetime.now(UTC) - timedelta(seconds=started_ago_s))
    runs._write(store, run)
    return run.run_id


def _final_status(store: Store, run_id: str) -> tuple[str, str]:
    rows = store.query_rows("select argMax(status, updated_at), argMax(error, updated_at) "
                            "from {db:Identifier}.pipeline_runs where run_id = {r:String}", {"r": run_id})
    return str(rows[0][0]), str(rows[0][1])


def test_the_next_run_records_a_killed_run_as_failed(store: Store) -> None:
    # a SIGKILLed run stayed "running" for good in the run history and the dashboards
    killed = _killed_run(store, "poll", 86_400)  # a day: far past any threshold
    before = _sample("powersense_stage_runs_total", {"function": "poll", "status": "failed"}) or 0.0
    with stage_run(store, "poll"):
        pass
    status, error = _final_status(store, killed)
    assert (status, error.split(":")[0]) == ("failed", "lost")
    assert _sample("powersense_stage_runs_total", {"function": "poll", "status": "failed"}) == before + 1


def test_a_run_younger_than_the_lost_threshold_stays_running(store: Store) -> None:
    slow = _killed_run(store, "forecast", 600)
    with stage_run(store, "forecast"):
        pass
    assert _final_status(store, slow)[0] == "running"


def test_a_lost_run_inside_the_lookback_is_closed_and_one_before_it_is_not(store: Store) -> None:
    # close_lost_runs reads only the last RUN_LOST_LOOKBACK_DAYS days (it read every run ever recorded, on every run
    # of every stage). The trade-off: a run lost before that stays "running" — only possible for a function that did
    # not run for the whole lookback, as every stage runs at least hourly and closes its lost runs on each run
    lookback = timedelta(days=runs.RUN_LOST_LOOKBACK_DAYS)
    inside = _killed_run(store, "featurize", (lookback - timedelta(minutes=10)).total_seconds())
    before = _killed_run(store, "featurize", (lookback + timedelta(minutes=10)).total_seconds())
    assert runs.close_lost_runs(store, "featurize") == 1
    assert _final_status(store, inside)[0] == "failed"
    assert _final_status(store, before)[0] == "running"


def test_closing_lost_runs_skips_the_runs_before_the_lookback(store: Store) -> None:
    # pipeline_runs is ordered by (function, started_at, run_id): the lookback leaves out the older granules
    # 20,000 runs every 5 minutes before the lookback (69 days of a 5-minute stage), one still "running"
    started = pd.date_range(end=datetime.now(UTC) - timedelta(days=runs.RUN_LOST_LOOKBACK_DAYS, hours=1),
                            periods=20_000, freq="5min")
    status = ["running"] + ["success"] * (len(started) - 1)
    store.insert_df("pipeline_runs", pd.DataFrame({
        "function": "poll", "run_id": [f"old-{i}" for i in range(len(started))], "trigger": "cron",
        "started_at": started, "finished_at": started + timedelta(seconds=20), "status": status, "rows_in": 0,
        "rows_out": 0, "error": "", "details": "{}", "updated_at": started + timedelta(seconds=20)}))
    lost = _killed_run(store, "poll", 7_200)
    selected = "select value from system.events where event = 'SelectedRows'"
    first = int(store.scalar(selected))
    assert runs.close_lost_runs(store, "poll") == 1
    read = int(store.scalar(selected)) - first
    assert _final_status(store, lost)[0] == "failed"
    assert _final_status(store, "old-0")[0] == "running"  # the trade-off: lost before the lookback, left as it is
    assert read < 10_000, f"{read} rows read: the runs before the lookback were scanned"


def test_the_lost_threshold_exceeds_every_stage_timeout() -> None:
    stack = yaml.safe_load((REPO_ROOT / "openfaas-stack.yml").read_text())
    timeouts = [float(f["environment"]["exec_timeout"].rstrip("s")) for f in stack["functions"].values()]
    timeouts += [float(t) for t in re.findall(r"^\s+Timeout: (\d+)", (REPO_ROOT / "template.yaml").read_text(), re.M)]
    assert len(timeouts) >= 12
    assert 2 * max(timeouts) < runs.RUN_LOST_AFTER_S


# --- failures the store itself causes: counted, so the stage-failure alerts can fire --------------------------------


def test_a_run_whose_store_refuses_its_first_row_is_counted_as_failed(store: Store,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # the first pipeline_runs row was written outside the run's error handling: a read-only or unreachable store
    # failed every run without one failed count, and PowerSenseStageFailing could not fire
    before = _sample("powersense_stage_runs_total", {"function": "featurize", "status": "failed"}) or 0.0

    def refused(*args: object, **kwargs: object) -> int:
        raise StoreError("insert into pipeline_runs failed: Code: 164. READONLY")

    monkeypatch.setattr(store, "insert_df", refused)
    with pytest.raises(StoreError), stage_run(store, "featurize"):
        pass
    assert _sample("powersense_stage_runs_total", {"function": "featurize", "status": "failed"}) == before + 1


def test_a_stage_call_whose_store_cannot_be_opened_is_counted_as_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler
    from shared import app as app_mod

    def unreachable() -> Store:
        raise StoreError("cannot connect to ClickHouse: Connection refused")

    monkeypatch.setattr(app_mod, "get_store", unreachable)
    before = _sample("powersense_stage_runs_total", {"function": "detect", "status": "failed"}) or 0.0
    client = TestClient(load_handler("detect").app)
    assert client.post("/").status_code == 503
    assert _sample("powersense_stage_runs_total", {"function": "detect", "status": "failed"}) == before + 1


def test_a_stage_health_check_hides_the_drivers_error_when_the_store_cannot_be_opened(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the open /health answered the driver's text (host, port) through the typed-error handler
    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler
    from shared import app as app_mod

    def unreachable() -> Store:
        raise StoreError("cannot connect to ClickHouse: HTTPConnectionPool(host='clickhouse.internal', port=8123)")

    monkeypatch.setattr(app_mod, "get_store", unreachable)
    r = TestClient(load_handler("featurize").app).get("/health")
    assert (r.status_code, r.json()) == (503, {"status": "unavailable", "store": False})


@pytest.fixture
def pushgateway(tmp_path: object) -> Iterator[str]:
    """A real Pushgateway (Debian's prometheus-pushgateway) on a free port; its address as the settings give it."""
    import subprocess
    import time
    import urllib.request

    from tests.fixtures_ingest import free_port
    from tests.fixtures_topology import tool

    exe = tool("prometheus-pushgateway", "apt-get install -y prometheus-pushgateway")
    port = free_port()
    proc = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)  # noqa: S310 - local test server
                break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_failure_counted_outside_a_run_keeps_the_pushed_last_success(pushgateway: str) -> None:
    # count_unstarted_failure pushed with PUT from a process that knew no last success: the group lost the gauge,
    # and PowerSenseStageNoRecentSuccess had no series left to fire on
    import urllib.request

    metrics.STAGE_LAST_SUCCESS.labels("upsert-version").set(1_700_000_000.0)
    metrics.push(pushgateway, job="upsert-version")  # an earlier process's run
    _new_process("upsert-version")
    runs.count_unstarted_failure("upsert-version", StoreError("cannot connect"), pushgateway)
    body = urllib.request.urlopen(f"http://{pushgateway}/metrics", timeout=5).read().decode()  # noqa: S310
    gauge = r'powersense_stage_last_success_timestamp_seconds\{[^}]*function="upsert-version"[^}]*\} 1\.7e\+09'
    assert re.search(gauge, body), body[-2000:]
    assert re.search(r'powersense_stage_runs_total\{[^}]*status="failed"[^}]*\} 1', body)
