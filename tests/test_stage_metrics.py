"""A function's stage metrics survive a new process (a deploy, an OOM kill, a scale from zero).

Each process pushes its registry to the Pushgateway with PUT, which replaces the job's group: what a new
process does not export, Prometheus no longer sees."""

from __future__ import annotations

import contextlib

import pytest

from shared import metrics, runs
from shared.runs import stage_run
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
