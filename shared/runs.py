"""Run bookkeeping: every invocation gets a run id, JSON log lines and a ``pipeline_runs`` row.

The one result contract of every stage: ``run_<stage>(store, settings, run, **options)`` fills the
:class:`Run` it is given (rows_in, rows_out, details, status via :meth:`Run.skip`) and returns it;
:func:`stage_run` records it in ``pipeline_runs`` and metrics, and :class:`RunResult` (``Run.as_dict``)
is what every stage's HTTP handler answers.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from shared import metrics
from shared.logs import current_function, current_run_id, log_event
from shared.store import Store
from shared.timeutil import utc_datetime

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Mutable record of one invocation; the stage fills rows_in/rows_out/details/status."""

    function: str
    run_id: str
    trigger: str
    started_at: datetime
    status: str = "running"
    rows_in: int = 0
    rows_out: int = 0
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None

    def skip(self, reason: str) -> None:
        """Mark the run as skipped (nothing to do, or another run holds the stage)."""
        self.status = "skipped"
        self.details["skip_reason"] = reason

    def result(self) -> RunResult:
        """The run as the result contract (what handlers answer)."""
        return RunResult(
            function=self.function,
            run_id=self.run_id,
            trigger=self.trigger,
            status=self.status,
            started_at=self.started_at.isoformat(),
            finished_at=self.finished_at.isoformat() if self.finished_at else None,
            duration_s=round((self.finished_at - self.started_at).total_seconds(), 4) if self.finished_at else None,
            rows_in=self.rows_in,
            rows_out=self.rows_out,
            error=self.error or None,
            details=self.details,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (:meth:`result` as a dict)."""
        return self.result().model_dump()


class RunResult(BaseModel):
    """What a stage invocation returns: the pipeline_runs row plus stage figures."""

    function: str
    run_id: str
    trigger: str
    status: str = Field(description="running | success | partial | skipped | failed")
    started_at: str
    finished_at: str | None
    duration_s: float | None
    rows_in: int
    rows_out: int
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def _write(store: Store, run: Run) -> None:
    row = pd.DataFrame(
        [
            {
                "function": run.function,
                "run_id": run.run_id,
                "trigger": run.trigger,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "status": run.status,
                "rows_in": run.rows_in,
                "rows_out": run.rows_out,
                "error": run.error[:4000],
                "details": json.dumps(run.details, default=str),
                "updated_at": datetime.now(UTC),
            }
        ]
    )
    store.insert_df("pipeline_runs", row)


def new_run_id() -> str:
    """A fresh run id (uuid4 hex)."""
    return uuid.uuid4().hex


# what a run ends as (pipeline_runs.status, less "running")
RUN_STATUSES = ("success", "partial", "skipped", "failed")
_seeded: set[str] = set()


def _runs_from_zero(function: str) -> None:
    """Every status series of ``function``'s run counter exists from 0 (a series first pushed at 1 is no increase)."""
    for status in RUN_STATUSES:
        metrics.STAGE_RUNS.labels(function, status)


def _seed_metrics(store: Store, function: str) -> None:
    """At a process's first run of ``function``: every status counter exists from 0, and the last-success gauge
    holds the store's last success or partial run. A new process (a deploy, an OOM kill, a scale from zero) pushes
    with PUT, which replaces the job's group at the Pushgateway: one whose runs all failed pushed ``failed`` as a
    new series starting at 1, which ``increase()`` does not count, and no last-success gauge at all — a broken
    deployment fired neither PowerSenseStageFailing nor PowerSenseStageNoRecentSuccess."""
    if function in _seeded:
        return
    _runs_from_zero(function)
    try:
        last = store.scalar("select max(finished_at) from {db:Identifier}.pipeline_runs "
                            "where function = {function:String} and " + DID_ITS_WORK_SQL,
                            {"function": function})
    except Exception as exc:  # the run itself reports the store; try again at the next run
        log_event(log, "metrics_seed_failed", logging.WARNING, error=str(exc))
        return
    if last is not None:
        metrics.STAGE_LAST_SUCCESS.labels(function).set(utc_datetime(last).timestamp())
    _seeded.add(function)


def count_unstarted_failure(function: str, error: BaseException, pushgateway: str | None = None) -> None:
    """Count a failed invocation of ``function`` that never reached :func:`stage_run` (its store could not even be
    opened), and push: no ``pipeline_runs`` row can record it, and the stage-failure alerts read this counter."""
    _runs_from_zero(function)  # as a run's would
    metrics.STAGE_RUNS.labels(function, "failed").inc()
    log_event(log, "run_failed_unrecorded", logging.ERROR,  # the app's log context names the function
              error=f"{type(error).__name__}: {error}")
    metrics.push_runs(pushgateway, job=function)  # merged: a PUT from this process would drop the last success


# A run still ``running`` this long after it started was killed before it could record its end (SIGKILL, an
# OOM kill, a node lost, a timeout that stopped the container). Far above the longest invocation of any
# stage (forecast's exec_timeout, 300 s; tests/test_stage_metrics.py ties it to the stack and SAM's
# timeouts), so a run that is merely slow is never closed under it.
RUN_LOST_AFTER_S = 3600
# How far back :func:`close_lost_runs` looks: every function is scheduled at least hourly (openfaas-stack.yml,
# template.yaml), so a run lost in the last 35 days is closed by one of hundreds of later runs. The bound keeps
# the read to the last 35 days of the function's rows (pipeline_runs is ordered by (function, started_at, ...));
# without it every run ever recorded was read and grouped on every run of every stage.
RUN_LOST_LOOKBACK_DAYS = 35

# A run that did its work: a partial run too (poll landed what the source has; what is missing has its own signal,
# poll_gaps and powersense_poll_missing_quarter_hours). The last-success gauge, the alerts that read it and the
# Pipeline health dashboard (build_dashboards.py RUN_DID_ITS_WORK; tests/test_ops_sql.py) count these.
DID_ITS_WORK = ("success", "partial")
DID_ITS_WORK_SQL = f"status in ({', '.join(repr(s) for s in DID_ITS_WORK)})"

LOST_ERROR = ("lost: no end was recorded within {s} s of the start (the process was killed: SIGKILL, "
              "out of memory, timeout or node lost); see the function's logs for this run_id")


def close_lost_runs(store: Store, function: str) -> int:
    """Record as failed every run of ``function`` still ``running`` past :data:`RUN_LOST_AFTER_S` that started
    in the last :data:`RUN_LOST_LOOKBACK_DAYS` days.

    A killed process leaves its ``running`` row for good: the run history, the dashboards' last status and
    the failure counts showed it as in progress for ever. Each is closed with an ``error`` saying so (no
    ``finished_at``: when it died is unknown) and counted as a failed run. Returns how many were closed.

    Trade-off of the lookback: only the last :data:`RUN_LOST_LOOKBACK_DAYS` days are read, so this read does
    not grow with the run history. A function that did not run at all for longer than that (every stage is
    scheduled at least hourly: a function switched off for over five weeks) leaves a run lost just before the
    pause ``running``; close such a run by hand (a ``failed`` row for its run_id), nothing else does."""
    rows = store.query_rows(
        """
        select run_id, started_at, trigger from (
            select run_id, started_at, argMax(status, updated_at) as status, argMax(trigger, updated_at) as trigger
            from {db:Identifier}.pipeline_runs
            where function = {function:String} and started_at < now64(3) - toIntervalSecond({after:UInt32})
              and started_at >= now64(3) - toIntervalDay({lookback:UInt16})
            group by run_id, started_at)
        where status = 'running'
        """,
        {"function": function, "after": RUN_LOST_AFTER_S, "lookback": RUN_LOST_LOOKBACK_DAYS},
    )
    for run_id, started_at, trigger in rows:
        lost = Run(function=function, run_id=str(run_id), trigger=str(trigger), started_at=utc_datetime(started_at),
                   status="failed", error=LOST_ERROR.format(s=RUN_LOST_AFTER_S))
        _write(store, lost)
        metrics.STAGE_RUNS.labels(function, "failed").inc()
        log_event(log, "run_lost", logging.WARNING, lost_run_id=lost.run_id, started_at=lost.started_at.isoformat())
    return len(rows)


def failed_run_id(exc: BaseException) -> str | None:
    """The run_id of the stage run ``exc`` failed (None for an error raised outside a run)."""
    return getattr(exc, "powersense_run_id", None)


@contextmanager
def stage_run(
    store: Store, function: str, trigger: str = "http", run_id: str | None = None, pushgateway: str | None = None
) -> Iterator[Run]:
    """Wrap one invocation: context vars, start/end log events, pipeline_runs rows, metrics.

    Exceptions propagate after the run is recorded as failed.
    """
    _seed_metrics(store, function)
    try:
        close_lost_runs(store, function)
    except Exception as exc:  # bookkeeping of earlier runs must not stop this one; the next run tries again
        log_event(log, "close_lost_runs_failed", logging.WARNING, error=str(exc))
    run = Run(function=function, run_id=run_id or new_run_id(), trigger=trigger, started_at=datetime.now(UTC))
    tok_f, tok_r = current_function.set(function), current_run_id.set(run.run_id)
    t0 = time.perf_counter()
    try:
        log_event(log, "run_started", trigger=trigger)
        try:
            # inside: a store that refuses this first row (down, read-only, a rotated password) fails the run,
            # counted and pushed below; outside it, the failure reached no metric and the failure alerts never fired
            _write(store, run)
            yield run
            if run.status == "running":
                run.status = "success"
        except BaseException as exc:
            run.status = "failed"
            run.error = f"{type(exc).__name__}: {exc}"
            # the error handlers log it (with the traceback) after this context has been reset: they read the run
            # from the exception, so the line an on-call engineer needs carries the run_id pipeline_runs shows
            with suppress(AttributeError):
                exc.powersense_run_id = run.run_id  # type: ignore[attr-defined]
            raise
        finally:
            run.finished_at = datetime.now(UTC)
            elapsed = time.perf_counter() - t0
            try:
                _write(store, run)
            except Exception as exc:  # recording must not mask the real outcome
                log_event(log, "run_record_failed", logging.ERROR, error=str(exc))
            metrics.STAGE_RUNS.labels(function, run.status).inc()
            metrics.STAGE_DURATION.labels(function).observe(elapsed)
            metrics.STAGE_ROWS.labels(function, "in").inc(run.rows_in)
            metrics.STAGE_ROWS.labels(function, "out").inc(run.rows_out)
            if run.status in DID_ITS_WORK:
                metrics.STAGE_LAST_SUCCESS.labels(function).set(time.time())
            log_event(
                log,
                "run_finished",
                logging.INFO if run.status != "failed" else logging.ERROR,
                status=run.status,
                rows_in=run.rows_in,
                rows_out=run.rows_out,
                duration_s=round(elapsed, 4),
                error=run.error or None,
            )
            metrics.push(pushgateway, job=function)
    finally:
        current_function.reset(tok_f)
        current_run_id.reset(tok_r)
