"""poll: fetch the ODRÉ records of a window computed from watermarks and land them raw.

Plan → compute → write:

* **plan** — :func:`plan_window` (pure): ``[watermark − overlap, now + lookahead)``, capped at
  ``poll_max_window_days``; the watermark is read from ClickHouse (:func:`read_watermark`: the last
  instant with a non-NULL ``consommation`` in measurements, or in landed pages not yet versioned),
  never "now minus one period".  The cron-connector never retries nor catches up missed ticks, so
  a missed or failed tick is healed by the next one re-computing the same window.
* **fetch** — :func:`iter_pages`: ``order_by=date_heure``, ``limit`` ≤ 100, offset paging; a
  window whose ``total_count`` exceeds the API's ``offset + limit ≤ 10 000`` cap is split in two
  (recursively) before paging.
* **write** — :func:`land_page`: each page gets a batch id; its raw records go to
  ``raw_records``, the records that fail validation to ``rejected_records`` with the reason, and
  a ``raw_batches`` header row written *last* marks the page complete (upsert-version only reads
  complete pages).  A failure after some pages leaves those pages landed; the run fails with a
  SourceError and the next tick fetches the window again (duplicates are harmless: unchanged values
  create no versions).

On a store without measurements the shipped history is bootstrapped first (``poll_bootstrap``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from shared import clock
from shared.errors import BadRequestError, SourceError
from shared.ingest.parse import Rejection, parse_records
from shared.logs import log_event
from shared.runs import Run
from shared.settings import Settings
from shared.store import Store

if TYPE_CHECKING:  # the HTTP stack is imported on first use, keeping the handler's cold start short
    import httpx

    from shared.ingest.odre import OdreClient, Page

log = logging.getLogger(__name__)

MIN_SPLIT = timedelta(minutes=15)


@dataclass(frozen=True)
class Window:
    """A half-open fetch window ``[start, end)`` in UTC."""

    start: datetime
    end: datetime


def _utc(ts: datetime | pd.Timestamp) -> datetime:
    ts = pd.Timestamp(ts)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def plan_window(
    watermark: datetime | None,
    now: datetime,
    *,
    overlap: timedelta,
    lookahead: timedelta,
    max_window: timedelta,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Window | None:
    """The window to fetch (None when empty).

    Default start: ``watermark − overlap`` (re-reads recent values, which ODRÉ revises), or
    ``now − max_window`` on a store with nothing yet.  Default end: ``now + lookahead`` (forecast
    columns are published ahead).  The window is capped at ``max_window`` from its start so a long
    outage is caught up over several ticks.  Explicit ``start``/``end`` (a backfill) override.
    """
    now = _utc(now)
    if start is not None:
        lo = _utc(start)
    elif watermark is not None:
        lo = _utc(watermark) - overlap
    else:
        lo = now - max_window
    hi = _utc(end) if end is not None else now + lookahead
    hi = min(hi, lo + max_window)
    if hi <= lo:
        return None
    return Window(lo, hi)


def read_watermark(store: Store, settings: Settings) -> datetime | None:
    """Last instant with a non-NULL consommation: measurements first, then landed unversioned pages."""
    measured = store.scalar(
        """
        select max(ts) from {db:Identifier}.measurements
        where source = {source:String} and metric = 'consommation' and value is not null
        """,
        {"source": settings.series_source},
    )
    landed = store.scalar(
        """
        with unversioned as (
            select batch_id from {db:Identifier}.raw_batches
            where batch_id not in (select batch_id from {db:Identifier}.batch_versions)
        ),
        landed_consumption as (
            select parseDateTime64BestEffortOrNull(JSONExtractString(payload, 'date_heure'), 3, 'UTC') as ts,
                   toFloat64OrNull(trim(both '"' from JSONExtractRaw(payload, 'consommation'))) as value
            from {db:Identifier}.raw_records
            where batch_id in (select batch_id from unversioned)
        )
        select max(ts) from landed_consumption where value is not null and not isNaN(value)
        """,
    )
    found = [_utc(v) for v in (measured, landed) if v is not None and pd.Timestamp(v).year > 1970]
    return max(found) if found else None


def iter_pages(
    client: OdreClient, window: Window, *, page_size: int, max_records: int
) -> Iterator[tuple[Window, Page]]:
    """Yield ``(sub_window, page)`` covering ``window`` within the API's paging caps."""
    from shared.ingest.odre import MAX_PAGE, window_where

    where = window_where(window.start, window.end)
    limit = min(page_size, MAX_PAGE, max_records)
    first = client.fetch_page(where, offset=0, limit=limit)
    if first.total_count > max_records:
        if window.end - window.start <= MIN_SPLIT:
            raise SourceError(f"{first.total_count} records in {window} cannot be paged (cap {max_records})")
        mid = window.start + (window.end - window.start) / 2
        mid = mid.replace(second=0, microsecond=0)
        if mid <= window.start:
            mid = window.start + MIN_SPLIT
        log_event(log, "poll_window_split", start=window.start, end=window.end, total_count=first.total_count)
        yield from iter_pages(client, Window(window.start, mid), page_size=page_size, max_records=max_records)
        yield from iter_pages(client, Window(mid, window.end), page_size=page_size, max_records=max_records)
        return
    yield window, first
    offset, last = len(first.records), len(first.records)
    while offset < first.total_count and last == limit and offset + 1 <= max_records:
        page = client.fetch_page(where, offset=offset, limit=min(limit, max_records - offset))
        if not page.records:
            break
        yield window, page
        last = len(page.records)
        offset += last


def new_batch_id(fetched_at: datetime, run_id: str, page_no: int) -> str:
    """Batch ids sort in landing order: fetch time, run, page."""
    return f"{fetched_at:%Y%m%dT%H%M%S%f}-{run_id[:12]}-{page_no:05d}"


def land_page(
    store: Store, page: Page, *, batch_id: str, fetched_at: datetime, window: Window, page_no: int, run_id: str
) -> tuple[int, int]:
    """Land one page: raw records, dead letters, then the header that marks it complete.

    Returns (records, rejected).
    """
    parsed = parse_records(page.records)
    if page.records:
        raw = pd.DataFrame(
            {
                "batch_id": batch_id,
                "record_no": range(len(page.records)),
                "fetched_at": fetched_at,
                "source_url": page.url,
                "payload": [json.dumps(r, ensure_ascii=False, allow_nan=True) for r in page.records],
            }
        )
        store.insert_df("raw_records", raw, dedup_token=f"{batch_id}:raw")
    # The overlap re-fetches the same bad records every tick: dead-letter each distinct payload once
    # (every occurrence stays in raw_records, and raw_batches.n_rejected counts it).
    fresh = _not_yet_dead_lettered(store, parsed.rejections)
    if fresh:
        dead = pd.DataFrame(
            {
                "batch_id": batch_id,
                "record_no": [r.record_no for r in fresh],
                "stage": "poll",
                "reason": [r.reason for r in fresh],
                "payload": [r.payload for r in fresh],
                "rejected_at": fetched_at,
            }
        )
        store.insert_df("rejected_records", dead, dedup_token=f"{batch_id}:rejected")
        for r in fresh:
            log_event(log, "record_rejected", logging.WARNING, batch_id=batch_id, record_no=r.record_no,
                      reason=r.reason)
    header = pd.DataFrame(
        [{"batch_id": batch_id, "fetched_at": fetched_at, "source_url": page.url, "window_start": window.start,
          "window_end": window.end, "page": page_no, "n_records": len(page.records),
          "n_rejected": len(parsed.rejections), "run_id": run_id}]
    )
    store.insert_df("raw_batches", header)
    return len(page.records), len(parsed.rejections)


def _not_yet_dead_lettered(store: Store, rejections: list[Rejection]) -> list[Rejection]:
    """The rejections whose payload is not in the dead-letter table yet."""
    if not rejections:
        return []
    known = {
        p for (p,) in store.query_rows(
            """select distinct payload from {db:Identifier}.rejected_records
               where stage = 'poll' and payload in {payloads:Array(String)}""",
            {"payloads": [r.payload for r in rejections]},
        )
    }
    return [r for r in rejections if r.payload not in known]


def run_poll(
    store: Store,
    settings: Settings,
    run: Run,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    max_pages: int | None = None,
    bootstrap: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """One poll invocation (cron: no options; backfill: ``start``/``end``; ``max_pages`` bounds it).

    Fills run.rows_in (records fetched), run.rows_out (records landed and accepted) and run.details.
    Raises SourceError when the source fails after retries (pages landed before stay landed).
    """
    t0 = time.perf_counter()
    if start is not None and end is not None and end <= start:
        raise BadRequestError("end must be after start")
    if bootstrap and settings.poll_bootstrap and start is None:
        from shared.ingest.bootstrap import bootstrap as load_history

        result = load_history(store, settings, progress=False, run_id=run.run_id)
        if result.get("status") == "done":
            run.details["bootstrap"] = result
    now = clock.now()
    watermark = read_watermark(store, settings)
    window = plan_window(
        watermark, now,
        overlap=timedelta(hours=settings.poll_overlap_hours),
        lookahead=timedelta(hours=settings.poll_lookahead_hours),
        max_window=timedelta(days=settings.poll_max_window_days),
        start=start, end=end,
    )
    run.details.update(watermark=watermark.isoformat() if watermark else None, now=now.isoformat())
    if window is None:
        run.skip("empty window")
        return
    # A capped window (end before now + lookahead) means a backlog: later ticks continue from the new watermark.
    catching_up = start is None and end is None and window.end < now + timedelta(hours=settings.poll_lookahead_hours)
    run.details.update(window_start=window.start.isoformat(), window_end=window.end.isoformat(),
                       catching_up=catching_up)
    from shared.ingest.odre import OdreClient

    records = rejected = pages = 0
    truncated = False
    try:
        with OdreClient.from_settings(settings, transport=transport) as client:
            for sub, page in iter_pages(client, window, page_size=settings.source_page_size,
                                        max_records=settings.source_max_window_records):
                fetched_at = datetime.now(UTC)
                n, bad = land_page(store, page, batch_id=new_batch_id(fetched_at, run.run_id, pages),
                                   fetched_at=fetched_at, window=sub, page_no=pages, run_id=run.run_id)
                pages += 1
                records += n
                rejected += bad
                if max_pages is not None and pages >= max_pages:
                    truncated = True
                    break
    finally:
        run.rows_in = records
        run.rows_out = records - rejected
        run.details.update(pages=pages, records=records, rejected=rejected, truncated=truncated,
                           elapsed_s=round(time.perf_counter() - t0, 4))
    log_event(log, "poll_done", pages=pages, records=records, rejected=rejected,
              window_start=window.start, window_end=window.end)


def poll_options(body: Any) -> dict[str, Any]:
    """Keyword options for run_poll from a request body model (None → cron defaults)."""
    if body is None:
        return {}
    return {k: v for k, v in body.model_dump().items() if v is not None}
