"""HTTP client of the ODRÉ (Opendatasoft) Explore API v2.1 ``records`` endpoint.

The same code talks to the real API (https://odre.opendatasoft.com/api/explore/v2.1) and to the
local replay of the shipped data (local_dev/replay.py); only the base URL differs.

Retries follow the one source policy of :mod:`shared.ingest.http` (timeouts, connection errors, 429
with ``Retry-After``, 5xx and bodies that are not the expected JSON are retried; other 4xx fail at once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from shared.errors import SourceError
from shared.ingest.http import SOURCE_REQUESTS, RetryableSourceError, RetryingJsonClient
from shared.settings import Settings

__all__ = ["SOURCE_REQUESTS", "OdreClient", "Page", "RetryableSourceError"]

log = logging.getLogger(__name__)

MAX_PAGE = 100  # the records endpoint returns at most 100 records per call
MAX_WINDOW = 10_000  # and offset + limit may not exceed 10 000


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


class OdreClient(RetryingJsonClient):
    """Pages through ``/catalog/datasets/<dataset>/records`` with retries."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        # the retry policy's values come from the settings only (RetryingJsonClient.policy), never a second default
        super().__init__(user_agent="powersense-poll/0.1", transport=transport, **self.policy(settings))
        self.records_url = f"{settings.source_url.rstrip('/')}/catalog/datasets/{settings.source_dataset}/records"

    @classmethod
    def from_settings(cls, settings: Settings, transport: httpx.BaseTransport | None = None) -> OdreClient:
        """A client configured by ``POWERSENSE_SOURCE_*``."""
        return cls(settings, transport)

    def fetch_page(self, where: str, *, offset: int = 0, limit: int = MAX_PAGE, order_by: str = "date_heure") -> Page:
        """GET one page; retried as described in the module docstring."""
        if not 1 <= limit <= MAX_PAGE or offset < 0 or offset + limit > MAX_WINDOW:
            raise SourceError(f"page out of the API's caps: offset={offset} limit={limit}")
        params = {"where": where, "order_by": order_by, "limit": str(limit), "offset": str(offset)}
        page = self.retried(self._get, params, url=self.records_url, event="source_retry", offset=offset)
        page.offset, page.where = offset, where
        return page

    def _get(self, params: dict[str, str]) -> Page:
        body, resp = self.get_json(self.records_url, params)
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise RetryableSourceError("response JSON has no 'results' list")
        total = body.get("total_count")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise RetryableSourceError(f"response JSON has an invalid total_count: {total!r}")
        return Page(records=body["results"], total_count=total, url=str(resp.request.url), offset=0, where="")
