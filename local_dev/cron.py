"""The cron-connector, embedded: fire functions on their ``openfaas-stack.yml`` schedules.

Like OpenFaaS's cron-connector it evaluates 5-field schedules in UTC and invokes
``POST <gateway>/function/<name>`` (or, without a gateway, ``POST <function_urls[name]>``: the
plain-compose scheduler, ``local_dev/scheduler.py``) with an empty body and the headers
``X-Topic: cron-function`` and ``X-Connector: cron-connector``; it never retries and never catches
up missed ticks (each stage heals itself from its watermarks). Time comes from :mod:`shared.clock`,
so a simulated clock makes schedules run faster in the demo.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from croniter import croniter

from local_dev.stack import FunctionSpec
from shared import clock
from shared.logs import log_event

log = logging.getLogger(__name__)

CRON_HEADERS = {"X-Topic": "cron-function", "X-Connector": "cron-connector"}


@dataclass
class Invocation:
    """Outcome of one cron-fired call."""

    function: str
    scheduled_for: datetime
    status_code: int
    duration_s: float
    body: dict[str, Any] | None
    error: str | None = None


def next_fire_times(specs: list[FunctionSpec], after: datetime) -> dict[str, datetime]:
    """Next fire time (UTC) strictly after ``after`` for every scheduled function."""
    return {s.name: croniter(s.schedule, after).get_next(datetime) for s in specs if s.schedule}


class CronConnector:
    """Fires scheduled functions through the gateway over HTTP."""

    def __init__(
        self,
        gateway_url: str,
        specs: list[FunctionSpec],
        on_result: Callable[[Invocation], None] | None = None,
        timeout_s: float = 600.0,
        function_urls: Mapping[str, str] | None = None,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.specs = [s for s in specs if s.schedule]
        # Without a gateway each function is called at its own URL (the watchdog serves it at "/").
        self.function_urls = dict(function_urls or {})
        missing = {s.name for s in self.specs} - set(self.function_urls) if function_urls is not None else set()
        if missing:
            raise ValueError(f"no URL for scheduled function(s) {sorted(missing)}")
        self.timeout_s = timeout_s
        self.on_result = on_result
        # One connection per call, like the connector's fire-and-forget requests: a keep-alive socket the
        # server closed after an error must not fail the next tick.
        self._client = httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_keepalive_connections=0))
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.specs)), thread_name_prefix="cron")
        self._stop = threading.Event()
        self.ticks = 0

    def invoke(self, name: str, scheduled_for: datetime) -> Invocation:
        """One cron-style call; errors are reported, never retried."""
        t0 = time.perf_counter()
        try:
            url = self.function_urls.get(name) or f"{self.gateway_url}/function/{name}"
            resp = self._client.post(url, content=b"", headers=CRON_HEADERS)
            try:
                body = resp.json()
            except ValueError:
                body = None
            inv = Invocation(name, scheduled_for, resp.status_code, time.perf_counter() - t0, body)
        except httpx.HTTPError as exc:
            inv = Invocation(name, scheduled_for, 0, time.perf_counter() - t0, None, str(exc))
        log_event(log, "cron_invocation", function_name=name, status_code=inv.status_code,
                  duration_s=round(inv.duration_s, 3), scheduled_for=scheduled_for.isoformat())
        if self.on_result:
            self.on_result(inv)
        return inv

    def stop(self) -> None:
        """Ask the loop to stop after the tick in flight."""
        self._stop.set()

    def run(self, max_ticks: int | None = None, wait_each_tick: bool = False, speed: float = 1.0) -> int:
        """Fire schedules until stopped (or ``max_ticks`` ticks). A tick is one instant at which at
        least one function is due. ``wait_each_tick`` waits for that tick's calls before the next
        (scripted runs); otherwise calls overlap like the real connector's. Returns ticks fired."""
        pending: list[Future[Invocation]] = []
        last_at: datetime | None = None
        try:
            while not self._stop.is_set() and (max_ticks is None or self.ticks < max_ticks):
                now = clock.now()
                # Scripted runs (wait_each_tick) take every tick in order so a run of N ticks is
                # reproducible; a live loop, like the real connector, skips ticks it has missed.
                base = last_at if (wait_each_tick and last_at is not None) else now
                due = next_fire_times(self.specs, base)
                if not due:
                    return self.ticks
                at = min(due.values())
                # wait in real time for the simulated (or real) clock to reach `at`
                while not self._stop.is_set():
                    remaining = (at - clock.now()).total_seconds()
                    if remaining <= 0:
                        break
                    self._stop.wait(min(remaining / max(speed, 1e-9), 0.5))
                if self._stop.is_set():
                    break
                last_at = at
                names = [n for n, t in due.items() if t == at]
                futures = [self._pool.submit(self.invoke, n, at) for n in names]
                self.ticks += 1
                if wait_each_tick:
                    for f in futures:
                        f.result()
                else:
                    pending = [f for f in pending + futures if not f.done()]
        finally:
            for f in pending:
                f.result()  # nothing lost: in-flight invocations finish before we return
        return self.ticks

    def close(self) -> None:
        """Wait for in-flight calls and release the HTTP client."""
        self._pool.shutdown(wait=True)
        self._client.close()
