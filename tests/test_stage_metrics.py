"""A function's stage metrics survive a new process (a deploy, an OOM kill, a scale from zero).

Each process pushes its registry to the Pushgateway with PUT, which replaces the job's group: what a new
process does not export, Prometheus no longer sees."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from shared import metrics, runs
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


def test_the_lost_threshold_exceeds_every_stage_timeout() -> None:
    stack = yaml.safe_load((REPO_ROOT / "openfaas-stack.yml").read_text())
    timeouts = [float(f["environment"]["exec_timeout"].rstrip("s")) for f in stack["functions"].values()]
    timeouts += [float(t) for t in re.findall(r"^\s+Timeout: (\d+)", (REPO_ROOT / "template.yaml").read_text(), re.M)]
    assert len(timeouts) >= 12
    assert 2 * max(timeouts) < runs.RUN_LOST_AFTER_S
