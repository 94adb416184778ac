"""Prometheus metrics shared by all functions (names carry units or ``_total``)."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, pushadd_to_gateway

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

STAGE_RUNS = Counter(
    "powersense_stage_runs_total", "Stage invocations by final status", ["function", "status"], registry=REGISTRY
)
STAGE_DURATION = Histogram(
    "powersense_stage_duration_seconds",
    "Wall time of a stage invocation",
    ["function"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
STAGE_ROWS = Counter(
    "powersense_stage_rows_total",
    "Rows read (in) and written (out) by stages",
    ["function", "direction"],
    registry=REGISTRY,
)
STAGE_LAST_SUCCESS = Gauge(
    "powersense_stage_last_success_timestamp_seconds",
    "Unix time of the last run that did its work (status success or partial)",
    ["function"],
    registry=REGISTRY,
)


def push(gateway_url: str | None, job: str) -> None:
    """Push this process's metrics to a Pushgateway (PUT: the job's group becomes them), if one is configured;
    never raises."""
    _push(push_to_gateway, gateway_url, job, REGISTRY)


def _push(send: Any, gateway_url: str | None, job: str, registry: CollectorRegistry) -> None:
    if not gateway_url:
        return
    try:
        send(gateway_url, job=job, registry=registry, timeout=2)
    except Exception as exc:  # metrics must never fail a run
        log.warning("pushgateway_failed", extra={"event": "pushgateway_failed", "error": str(exc)})


class _RunsOnly:
    """A collector exposing :data:`STAGE_RUNS` alone (for :func:`push_runs`)."""

    def collect(self):  # type: ignore[no-untyped-def]  # prometheus_client's collector protocol
        return STAGE_RUNS.collect()


_RUNS_REGISTRY = CollectorRegistry(auto_describe=False)
_RUNS_REGISTRY.register(_RunsOnly())  # type: ignore[arg-type]


def push_runs(gateway_url: str | None, job: str) -> None:
    """Push the run counter alone, merged into the job's group (POST): the other series pushed before (the last
    success gauge) stay. For a failure counted outside a run, in a process that may not know them: :func:`push`'s
    PUT would replace the group and drop the gauge PowerSenseStageNoRecentSuccess reads. Never raises."""
    _push(pushadd_to_gateway, gateway_url, job, _RUNS_REGISTRY)
