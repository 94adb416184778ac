"""HTTP client of the ODRÉ (Opendatasoft) Explore API v2.1 ``records`` endpoint.

The same code talks to the real API (https://odre.opendatasoft.com/api/explore/v2.1) and to the
local replay of the shipped data (local_dev/replay.py); only the base URL differs.

Retries (tenacity: at most ``source_retries`` retries within ``source_retry_budget_s``, exponential
backoff with jitter, ``Retry-After`` honoured up to ``source_backoff_max_s``) cover
timeouts, connection errors, HTTP 429 and 5xx, and bodies that are not the expected JSON (a
truncated answer is usually transient).  Other 4xx answers are the caller's fault and are not
retried.  When retries are exhausted a :class:`~shared.errors.SourceError` is raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import Counter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
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

MAX_PAGE = 100  # the records endpoint returns at most 100 records per call
MAX_WINDOW = 10_000  # and offset + limit may not exceed 10 000


class RetryableSourceError(SourceError):
    """A transient failure (timeout, 429, 5xx, unreadable body); ``retry_after`` in seconds if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Page:
    """One answer of the records endpoint."""

    records: list[Any]
    total_count: int
    url: str
    offset: int
    where: str
    note: str = ""  # set by the pager: "tie" (an instant read again), "repeated" (no progress)


def iso_utc(ts: datetime) -> str:
    """An instant as the ODSQL literal we send (ISO-8601, explicit +00:00)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def window_where(start: datetime, end: datetime) -> str:
    """ODSQL filter for ``start <= date_heure < end``."""
    return f'date_heure >= "{iso_utc(start)}" and date_heure < "{iso_utc(end)}"'


def keyset_where(after: datetime, end: datetime) -> str:
    """ODSQL filter for ``after < date_heure < end``: the next keyset page after the last instant read.

    Keyset paging (``where date_heure > last_seen``, ``order_by=date_heure``, ``offset=0``) instead of
    offsets: the records endpoint caps ``offset + limit`` at 10 000 and an offset page shifts when
    the source inserts or rewrites rows while we page (Opendatasoft Explore API v2.1 reference,
    https://help.opendatasoft.com/apis/ods-explore-v2/explore_v2.1.html: ``where``/``order_by``
    are ODSQL, ``limit`` ≤ 100 per call, ``offset + limit`` ≤ 10 000 on the records endpoint).
    """
    return f'date_heure > "{iso_utc(after)}" and date_heure < "{iso_utc(end)}"'


def instant_where(ts: datetime) -> str:
    """ODSQL filter for one instant (every record sharing it: padding rows, several natures)."""
    return f'date_heure = "{iso_utc(ts)}"'


class OdreClient:
    """Pages through ``/catalog/datasets/<dataset>/records`` with retries."""

    def __init__(
        self,
        base_url: str,
        dataset: str,
        *,
        timeout_s: float = 20.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_budget_s: float = 45.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.records_url = f"{base_url.rstrip('/')}/catalog/datasets/{dataset}/records"
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.retry_budget_s = retry_budget_s
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"accept": "application/json", "user-agent": "powersense-poll/0.1"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, transport: httpx.BaseTransport | None = None) -> OdreClient:
        """A client configured by ``POWERSENSE_SOURCE_*``."""
        return cls(
            settings.source_url,
            settings.source_dataset,
            timeout_s=settings.source_timeout_s,
            retries=settings.source_retries,
            backoff_s=settings.source_backoff_s,
            backoff_max_s=settings.source_backoff_max_s,
            retry_budget_s=settings.source_retry_budget_s,
            transport=transport,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> OdreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        exp = wait_exponential_jitter(initial=self.backoff_s, max=self.backoff_max_s, jitter=self.backoff_s)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableSourceError) and exc.retry_after is not None:
            return min(max(exc.retry_after, exp), self.backoff_max_s)
        return exp

    def fetch_page(self, where: str, *, offset: int = 0, limit: int = MAX_PAGE, order_by: str = "date_heure") -> Page:
        """GET one page; retried as described in the module docstring."""
        if not 1 <= limit <= MAX_PAGE or offset < 0 or offset + limit > MAX_WINDOW:
            raise SourceError(f"page out of the API's caps: offset={offset} limit={limit}")
        params = {"where": where, "order_by": order_by, "limit": str(limit), "offset": str(offset)}

        def _log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            SOURCE_REQUESTS.labels("retry").inc()
            log_event(log, "source_retry", logging.WARNING, attempt=state.attempt_number, offset=offset,
                      error=str(exc), sleep_s=round(state.next_action.sleep, 3) if state.next_action else None)

        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1) | stop_after_delay(self.retry_budget_s),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, RetryableSourceError)),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            page = retrying(self._get, params)
        except RetryableSourceError as exc:
            SOURCE_REQUESTS.labels("failed").inc()
            raise SourceError(f"{self.records_url} failed after retries: {exc}") from exc
        SOURCE_REQUESTS.labels("ok").inc()
        page.offset, page.where = offset, where
        return page

    def _get(self, params: dict[str, str]) -> Page:
        try:
            resp = self._http.get(self.records_url, params=params)
        except httpx.TimeoutException as exc:
            raise RetryableSourceError(f"timeout: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSourceError(f"transport error: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise RetryableSourceError(f"HTTP {resp.status_code}: {resp.text[:200]}", _retry_after(resp))
        if resp.status_code >= 400:
            raise SourceError(f"HTTP {resp.status_code} from {resp.request.url}: {resp.text[:500]}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise RetryableSourceError(f"response is not valid JSON ({len(resp.content)} bytes): {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise RetryableSourceError("response JSON has no 'results' list")
        total = body.get("total_count")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise RetryableSourceError(f"response JSON has an invalid total_count: {total!r}")
        return Page(records=body["results"], total_count=total, url=str(resp.request.url), offset=0, where="")


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to exponential backoff
