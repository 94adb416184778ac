"""One retrying JSON-over-HTTP client for every external data source (ODRÉ, Open-Meteo).

Retries (tenacity: at most ``source_retries`` retries within ``source_retry_budget_s``, exponential
backoff with jitter, ``Retry-After`` honoured) cover timeouts,
connection errors, HTTP 429 and 5xx, and bodies that are not the expected JSON (a truncated answer is
usually transient). Other 4xx answers are the caller's fault and are not retried. When retries are
exhausted a :class:`~shared.errors.SourceError` is raised.

The budget is a deadline, not a count checked after the fact: no retry starts whose wait would end past it
(``stop_before_delay``), each attempt's timeout is cut to the time left, and a ``Retry-After`` longer than the time
left ends the call at once instead of asking the source again early. A caller with a deadline of its own (poll's run
budget, below its ``exec_timeout``) sets :attr:`RetryingJsonClient.deadline`, which caps the budget further. Before,
a call could run ~20 s past its 45 s budget (a backoff, then a full attempt), and nothing bounded a caller's pages.

Each source client subclasses :class:`RetryingJsonClient`, so both sources share one retry policy, one metric and
one log shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Self, TypeVar

import httpx
from prometheus_client import Counter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from shared.errors import SourceError
from shared.logs import log_event
from shared.metrics import REGISTRY
from shared.settings import Settings

log = logging.getLogger(__name__)

SOURCE_REQUESTS = Counter(
    "powersense_source_requests_total", "HTTP requests to the data source by outcome", ["outcome"], registry=REGISTRY
)

T = TypeVar("T")


class RetryableSourceError(SourceError):
    """A transient failure (timeout, 429, 5xx, unreadable body); ``retry_after`` in seconds if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_s(resp: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class RetryingJsonClient:
    """An httpx client whose calls are retried with the source policy (``POWERSENSE_SOURCE_*``)."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        backoff_max_s: float,
        retry_budget_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # no defaults here: the policy's one definition is the POWERSENSE_SOURCE_* settings (see policy())
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.retry_budget_s = retry_budget_s
        self.timeout_s = timeout_s
        # time.monotonic() by which every call must be over (None: only the retry budget bounds a call)
        self.deadline: float | None = None
        self._call_deadline: float | None = None
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"accept": "application/json", "user-agent": user_agent},
        )

    @staticmethod
    def policy(settings: Settings) -> dict[str, Any]:
        """The retry policy's constructor arguments from ``POWERSENSE_SOURCE_*``."""
        return {
            "timeout_s": settings.source_timeout_s,
            "retries": settings.source_retries,
            "backoff_s": settings.source_backoff_s,
            "backoff_max_s": settings.source_backoff_max_s,
            "retry_budget_s": settings.source_retry_budget_s,
        }

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        exp = wait_exponential_jitter(initial=self.backoff_s, max=self.backoff_max_s, jitter=self.backoff_s)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableSourceError) and exc.retry_after is not None:
            # never earlier than the source asked; one longer than the time left stops the call (stop_before_delay)
            return max(exc.retry_after, float(exp))
        return float(exp)

    def _time_left(self) -> float:
        """Seconds left before the current call's deadline (its budget, or the caller's deadline)."""
        return (self._call_deadline or float("inf")) - time.monotonic()

    def retried(self, attempt: Callable[..., T], *args: Any, url: str, event: str, **log_fields: Any) -> T:
        """``attempt(*args)`` retried on :class:`RetryableSourceError`; SourceError once retries run out."""

        def _log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            SOURCE_REQUESTS.labels("retry").inc()
            log_event(log, event, logging.WARNING, attempt=state.attempt_number, error=str(exc),
                      sleep_s=round(state.next_action.sleep, 3) if state.next_action else None, **log_fields)

        budget = self.retry_budget_s
        if self.deadline is not None:
            budget = min(budget, self.deadline - time.monotonic())
            if budget <= 0:
                SOURCE_REQUESTS.labels("failed").inc()
                raise SourceError(f"{url}: no time left in the run's budget for another request")
        self._call_deadline = time.monotonic() + budget
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1) | stop_before_delay(budget),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, RetryableSourceError)),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            result: T = retrying(attempt, *args)
        except RetryableSourceError as exc:
            SOURCE_REQUESTS.labels("failed").inc()
            raise SourceError(f"{url} failed after retries: {exc}") from exc
        SOURCE_REQUESTS.labels("ok").inc()
        return result

    def get_json(self, url: str, params: dict[str, str]) -> tuple[Any, httpx.Response]:
        """One GET: the decoded JSON body and the response; transient failures raise RetryableSourceError."""
        left = self._time_left()
        if left <= 0:  # reached after a retry's wait: the call's time is spent (a non-retryable end of the call)
            raise SourceError(f"{url}: the retry budget is spent")
        try:
            resp = self._http.get(url, params=params, timeout=min(self.timeout_s, left))
        except httpx.TimeoutException as exc:
            raise RetryableSourceError(f"timeout: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSourceError(f"transport error: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise RetryableSourceError(f"HTTP {resp.status_code}: {resp.text[:200]}", retry_after_s(resp))
        if resp.status_code >= 400:
            raise SourceError(f"HTTP {resp.status_code} from {resp.request.url}: {resp.text[:500]}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise RetryableSourceError(f"response is not valid JSON ({len(resp.content)} bytes): {exc}") from exc
        return body, resp
