"""poll: fetch the ODRÉ records of a window computed from watermarks and land them raw.

Plan → compute → write:

* **plan** — :func:`plan_window` (pure): ``[watermark − overlap, now + lookahead)``, capped at
  ``poll_max_window_days``; the watermark is read from ClickHouse (:func:`read_watermark`: the last
  instant with a non-NULL ``consommation`` in measurements, or in landed pages not yet versioned),
  never "now minus one period".  The cron-connector never retries nor catches up missed ticks, so
  a missed or failed tick is healed by the next one re-computing the same window.
* **fetch** — :func:`iter_pages`: ``order_by=date_heure``, ``limit`` ≤ 100, keyset paging
  (``date_heure >`` the last instant received, offset 0): no ``offset + limit ≤ 10 000`` cap, and a
  page the source repeats or rewrites mid-read cannot shift the pages after it.
* **prove** — each window's distinct records are checked against the source's ``total_count`` and
  its accepted instants against the expected 15-minute UTC grid (:func:`expected_instants`: the
  fall-back day's first 02:xx hour, which RTE never publishes, is not expected; spring-forward
  padding rows are rejected and add no instant).  Quarter-hours newer than
  ``now − poll_expected_lag_min`` are not required yet.  A short window is re-read within the run
  (``poll_reread_attempts``); what stays missing is recorded per local day in ``poll_gaps``
  (status ``open``) and the run ends ``partial``.  Later ticks re-read open gaps wherever they are
  (not only the 24 h overlap) until they complete (``resolved``) or have been seen
  ``poll_gap_max_attempts`` times (``source_incomplete``: the source lacks the data, e.g. the local
  day 2023-10-14; reported, no longer a ``partial`` run).
* **write** — :func:`land_page`: each page gets a batch id; its raw records go to
  ``raw_records``, the records that fail validation to ``rejected_records`` with the reason, and
  a ``raw_batches`` header row written *last* marks the page complete (upsert-version only reads
  complete pages).  A failure after some pages leaves those pages landed; the run fails with a
  SourceError and the next tick fetches the window again (duplicates are harmless: unchanged values
  create no versions).

While the history bootstrap is pending (a store with neither the shipped history nor polled
measurements, ``poll_bootstrap``) a scheduled poll skips: upsert-version loads the history first
(shared/ingest/bootstrap.py), and the next tick polls from the watermark it leaves.  Poll never
writes ``measurements``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from prometheus_client import Counter, Gauge

from shared import clock
from shared.calendar import TZ, expected_instants, local_day_bounds
from shared.errors import BadRequestError
from shared.ingest.parse import GRID, REQUIRED_FIELD, Rejection, parse_records, source_rules
from shared.ingest.versioning import bootstrap_pending
from shared.logs import log_event
from shared.metrics import REGISTRY
from shared.runs import Run
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import to_utc

if TYPE_CHECKING:  # the HTTP stack is imported on first use, keeping the handler's cold start short
    import httpx

    from shared.ingest.odre import OdreClient, Page

log = logging.getLogger(__name__)

# Pushed with the stage metrics (shared/metrics.py registry, Pushgateway job "poll").
POLL_MISSING = Gauge(
    "powersense_poll_missing_quarter_hours",
    "Quarter-hours the source should have published but poll has not received, by gap status",
    ["status"], registry=REGISTRY,
)
POLL_INCOMPLETE = Counter(
    "powersense_poll_incomplete_windows_total",
    "Poll runs that ended partial: a window stayed incomplete after re-reads", registry=REGISTRY,
)


@dataclass(frozen=True)
class Window:
    """A half-open fetch window ``[start, end)`` in UTC."""

    start: datetime
    end: datetime


def _utc(ts: datetime | pd.Timestamp) -> datetime:
    """:func:`shared.timeutil.to_utc` as a stdlib datetime (windows are plain datetimes)."""
    return to_utc(ts).to_pydatetime()


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
        # a watermark after now (a measured value stored before parse_records bounded instants by the fetch
        # time) would stop every later window: the overlap re-reads from now at the latest
        lo = min(_utc(watermark), now) - overlap
    else:
        lo = now - max_window
    hi = _utc(end) if end is not None else now + lookahead
    hi = min(hi, lo + max_window)
    if hi <= lo:
        return None
    return Window(lo, hi)


def read_watermark(store: Store, settings: Settings) -> datetime | None:
    """Last instant with a non-NULL ``consommation``: measurements first, then landed unversioned pages.

    Landed pages are read through :func:`parse_records` as upsert-version will read them (each page as of its
    fetch), so a record it will reject (foreign, off-grid, dated after its fetch, …) never moves the watermark.
    """
    measured = store.scalar(
        """
        select max(ts) from {db:Identifier}.measurements
        where source = {source:String} and metric = {metric:String} and value is not null
        """,
        {"source": settings.series_source, "metric": REQUIRED_FIELD},
    )
    landed = store.query_df(
        """
        select fetched_at, payload from {db:Identifier}.raw_records
        where batch_id in (select batch_id from {db:Identifier}.raw_batches
                           where batch_id not in (select batch_id from {db:Identifier}.batch_versions))
        """
    )
    found = [_utc(measured)] if measured is not None and pd.Timestamp(measured).year > 1970 else []
    for fetched_at, page in (landed.groupby("fetched_at") if not landed.empty else ()):
        parsed = parse_records([json.loads(p) for p in page["payload"]], now=_utc(fetched_at),
                               **source_rules(settings))
        rows = parsed.rows[(parsed.rows["metric"] == REQUIRED_FIELD) & parsed.rows["value"].notna()]
        if not rows.empty:
            found.append(_utc(rows["ts"].max()))
    return max(found) if found else None


# --- fetch: keyset paging ------------------------------------------------------------------------


def _instant(rec: Any) -> datetime | None:
    """The UTC instant of a raw record's ``date_heure`` (None when absent or unreadable)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("date_heure"), str):
        return None
    try:
        ts = datetime.fromisoformat(rec["date_heure"].replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts.astimezone(UTC) if ts.tzinfo is not None else None


def iter_pages(client: OdreClient, window: Window, *, page_size: int) -> Iterator[Page]:
    """Yield the pages of ``window`` with keyset paging on ``date_heure`` (see odre.keyset_where).

    The first request is ``start <= date_heure < end``; each next one asks for ``date_heure >`` the
    last instant received, always at offset 0, so a page repeated or rewritten by the source never
    shifts the pages after it.  Records sharing the last instant of a full page (spring-forward
    padding next to the real row) could be cut by the page boundary: the source's ``total_count``
    tells — records in ``[lower, last]`` = this request's count − the next request's count — and the
    instant is then read again on its own.  A page that does not move past the last instant (the
    source repeated a page) is asked again once; a second time ends the paging and the completeness
    check re-reads what is missing.
    """
    from shared.ingest.odre import MAX_PAGE, instant_where, keyset_where, window_where

    limit = min(page_size, MAX_PAGE)
    where = window_where(window.start, window.end)
    after: datetime | None = None
    prev: tuple[int, int, datetime] | None = None  # (total_count, records in range, last instant)
    stalled = 0
    # Each request moves past at least one instant, so a window needs at most one request per
    # quarter-hour; a source that advances one record at a time cannot keep poll paging for ever.
    budget = int((window.end - window.start) / GRID) + 2
    while budget > 0:
        budget -= 1
        page = client.fetch_page(where, offset=0, limit=limit)
        instants = [t for t in map(_instant, page.records)
                    if t is not None and window.start <= t < window.end and (after is None or t > after)]
        if prev is not None and prev[0] - page.total_count > prev[1]:
            # records at the previous page's last instant were cut by the page boundary
            log_event(log, "poll_keyset_tie", instant=prev[2], expected=prev[0] - page.total_count, got=prev[1])
            tie = client.fetch_page(instant_where(prev[2]), offset=0, limit=limit)
            tie.note = "tie"
            yield tie
        if not instants and page.records and len(page.records) >= limit:
            # a full page without a record past the cursor: the source repeated a page
            stalled += 1
            page.note = "repeated"
            yield page
            if stalled > 1:
                return
            continue
        stalled = 0
        yield page
        if len(page.records) < limit or not instants:
            return
        last = max(instants)
        prev = (page.total_count, len(instants), last)
        after = last
        where = keyset_where(last, window.end)


# --- write: landing ------------------------------------------------------------------------------


_last_landing: datetime | None = None
_landing_lock = threading.Lock()


def landing_time() -> datetime:
    """``shared.clock.now()``, strictly increasing within the process.

    upsert-version versions pages in ``fetched_at`` order; with a simulated clock (the demo) or a
    frozen one (tests) two pages could otherwise share a time and be ordered by their random run id.
    """
    global _last_landing
    with _landing_lock:
        now = clock.now()
        if _last_landing is not None and now <= _last_landing:
            now = _last_landing + timedelta(milliseconds=1)
        _last_landing = now
        return now


def new_batch_id(fetched_at: datetime, run_id: str, page_no: int) -> str:
    """Batch ids sort in landing order: fetch time, run, page."""
    return f"{fetched_at:%Y%m%dT%H%M%S%f}-{run_id[:12]}-{page_no:05d}"


@dataclass
class Landed:
    """What one landed page held: records, rejections, accepted on-grid instants, record identities."""

    records: int
    rejected: int
    instants: set[pd.Timestamp]
    identities: set[tuple[Any, ...]]
    # the instants of the rejected records (where readable): sent by the source, refused by the parser
    rejected_instants: set[pd.Timestamp] = field(default_factory=set)


def _identity(rec: Any) -> tuple[Any, ...]:
    """One source row: the same row sent twice (a repeated page) counts once."""
    if not isinstance(rec, dict):
        return ("?", json.dumps(rec, default=str))
    return tuple(str(rec.get(k)) for k in ("date_heure", "date", "heure", "nature", "perimetre"))


def land_page(
    store: Store, page: Page, *, batch_id: str, fetched_at: datetime, window: Window, page_no: int, run_id: str,
    settings: Settings | None = None,
) -> Landed:
    """Land one page: raw records, dead letters, then the header that marks it complete."""
    vocab = source_rules(settings) if settings is not None else {}
    # landed first: a record parse_records cannot read still reaches raw_records (the page's audit copy)
    land_raw(store, page.records, batch_id=batch_id, fetched_at=fetched_at, url=page.url)
    parsed = parse_records(page.records, now=fetched_at, **vocab)
    # The overlap re-fetches the same bad records every tick: dead-letter each distinct payload once
    # (every occurrence stays in raw_records, and raw_batches.n_rejected counts it).
    fresh = dead_letter(store, parsed.rejections, stage="poll", batch_id=batch_id, at=fetched_at,
                        dedup_token=f"{batch_id}:rejected")
    for r in fresh:
        log_event(log, "record_rejected", logging.WARNING, batch_id=batch_id, record_no=r.record_no,
                  reason=r.reason)
    header = pd.DataFrame(
        [{"batch_id": batch_id, "fetched_at": fetched_at, "source_url": page.url, "window_start": window.start,
          "window_end": window.end, "page": page_no, "n_records": len(page.records),
          "n_rejected": len(parsed.rejections), "run_id": run_id}]
    )
    store.insert_df("raw_batches", header)
    rejected_at = {pd.Timestamp(t) for r in parsed.rejections
                   if 0 <= r.record_no < len(page.records) and (t := _instant(page.records[r.record_no])) is not None}
    return Landed(len(page.records), len(parsed.rejections), set(parsed.rows["ts"].unique()),
                  {_identity(r) for r in page.records}, rejected_at)


def land_raw(store: Store, items: list[Any], *, batch_id: str, fetched_at: datetime, url: str) -> None:
    """``items`` as received into ``raw_records``, one record each (audit; re-processing)."""
    if not items:
        return
    raw = pd.DataFrame({
        "batch_id": batch_id, "record_no": range(len(items)), "fetched_at": fetched_at, "source_url": url,
        "payload": [json.dumps(i, ensure_ascii=False, allow_nan=True) for i in items],
    })
    store.insert_df("raw_records", raw, dedup_token=f"{batch_id}:raw")


def dead_letter(store: Store, rejections: list[Rejection], *, stage: str, batch_id: str, at: datetime,
                dedup_token: str | None = None) -> list[Rejection]:
    """Rejections into ``rejected_records``, each distinct payload once per stage (a re-run or an
    overlapping fetch sends the same ones); returns those written."""
    if not rejections:
        return []
    known = {p for (p,) in store.query_rows(
        """select distinct payload from {db:Identifier}.rejected_records
           where stage = {stage:String} and payload in {payloads:Array(String)}""",
        {"stage": stage, "payloads": [r.payload for r in rejections]},
    )}
    fresh = [r for r in rejections if r.payload not in known]
    if fresh:
        store.insert_df("rejected_records", pd.DataFrame({
            "batch_id": batch_id, "record_no": [r.record_no for r in fresh], "stage": stage,
            "reason": [r.reason for r in fresh], "payload": [r.payload for r in fresh], "rejected_at": at,
        }), dedup_token=dedup_token)
    return fresh


# --- completeness ------------------------------------------------------------------------------------


@dataclass
class WindowRead:
    """Everything one read of a range brought: counts, accepted instants, record identities."""

    window: Window
    total_count: int | None = None
    pages: int = 0
    records: int = 0
    rejected: int = 0
    repeated_pages: int = 0
    instants: set[pd.Timestamp] = field(default_factory=set)
    identities: set[tuple[Any, ...]] = field(default_factory=set)
    truncated: bool = False
    last_instant: datetime | None = None


class _Reader:
    """Reads ranges through one client and lands every page (bounded by ``max_pages``)."""

    def __init__(self, store: Store, settings: Settings, client: OdreClient, run: Run, max_pages: int | None,
                 deadline: float | None = None):
        self.store, self.settings, self.client, self.run, self.max_pages = store, settings, client, run, max_pages
        self.deadline = deadline  # time.monotonic() after which no new page is started (the run's time budget)
        self.pages = self.records = self.rejected = 0
        self.rejected_instants: set[pd.Timestamp] = set()  # every read of the run: what merge_gaps is told

    @property
    def exhausted(self) -> bool:
        out_of_pages = self.max_pages is not None and self.pages >= self.max_pages
        return out_of_pages or (self.deadline is not None and time.monotonic() >= self.deadline)

    def read(self, window: Window) -> WindowRead:
        out = WindowRead(window)
        for page in iter_pages(self.client, window, page_size=self.settings.source_page_size):
            if out.total_count is None:
                out.total_count = page.total_count
            fetched_at = landing_time()
            landed = land_page(self.store, page, batch_id=new_batch_id(fetched_at, self.run.run_id, self.pages),
                               fetched_at=fetched_at, window=window, page_no=self.pages, run_id=self.run.run_id,
                               settings=self.settings)
            self.pages += 1
            self.records += landed.records
            self.rejected += landed.rejected
            self.rejected_instants |= landed.rejected_instants
            out.pages += 1
            out.records += landed.records
            out.rejected += landed.rejected
            out.repeated_pages += page.note == "repeated"
            out.instants |= landed.instants
            out.identities |= landed.identities
            seen = [t for t in map(_instant, page.records) if t is not None and window.start <= t < window.end]
            if seen:
                out.last_instant = max(seen + ([out.last_instant] if out.last_instant else []))
            if self.exhausted:
                out.truncated = True
                break
        return out


def _edge(now: datetime, settings: Settings) -> datetime:
    """Quarter-hours before this instant must be published by now (publication lag)."""
    return pd.Timestamp(now - timedelta(minutes=settings.poll_expected_lag_min)).floor(GRID).to_pydatetime()


def _checked_end(read: WindowRead, edge: datetime) -> datetime:
    end = min(read.window.end, edge)
    if read.truncated:  # only the part paged through is proven (the last instant may have been cut)
        end = min(end, read.last_instant or read.window.start)
    return end


def _missing(read: WindowRead, edge: datetime, settings: Settings) -> list[pd.Timestamp]:
    expected = expected_instants(read.window.start, _checked_end(read, edge),
                                 ignore_fallback_gap=settings.detect_ignore_fallback_gap)
    return [t for t in expected if t not in read.instants]


def _runs(instants: list[pd.Timestamp]) -> list[Window]:
    """Contiguous runs of quarter-hours as windows, split at local-day boundaries."""
    out: list[Window] = []
    for t in sorted(instants):
        day = _local_day(t)
        if out and out[-1].end == t and _local_day(out[-1].start) == day:
            out[-1] = Window(out[-1].start, t + GRID)
        else:
            out.append(Window(t.to_pydatetime(), (t + GRID).to_pydatetime()))
    return out


def _local_day(ts: datetime | pd.Timestamp) -> date:
    return pd.Timestamp(ts).tz_convert(TZ).date()


def _day_bounds(day: date) -> Window:
    lo, hi = local_day_bounds(day)
    return Window(lo.to_pydatetime(), hi.to_pydatetime())


# --- gaps: recorded per local day, re-read on later ticks ------------------------------------------------

GAP_COLUMNS = ["source", "day", "window_start", "window_end", "status", "expected", "missing", "attempts",
               "first_seen_at", "last_attempt_at", "reason", "run_id", "updated_at"]


def load_gaps(store: Store, source: str) -> dict[date, dict[str, Any]]:
    """Current gap rows (FINAL) of ``source`` by local day, in day order (one row per day with a gap, ever)."""
    sql = "select * from {db:Identifier}.poll_gaps final where source = {source:String} order by day"
    params = {"source": source}
    frame = store.query_df(sql, params)
    rows: dict[date, dict[str, Any]] = {}
    for rec in frame.to_dict("records"):
        rec["missing"] = [to_utc(t) for t in rec["missing"]]
        rows[pd.Timestamp(rec["day"]).date()] = rec
    return rows


@dataclass
class GapUpdate:
    """The result of merging one read into the gap rows of the days it covered."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    open_missing: int = 0
    source_incomplete_missing: int = 0
    resolved_days: list[str] = field(default_factory=list)


def merge_gaps(
    previous: dict[date, dict[str, Any]],
    checked: list[tuple[Window, list[pd.Timestamp]]],
    *,
    source: str,
    now: datetime,
    run_id: str,
    max_attempts: int,
    retry_every: timedelta,
    ignore_fallback_gap: bool = True,
    updated_at: datetime | None = None,
    rejected: set[pd.Timestamp] | frozenset[pd.Timestamp] = frozenset(),
) -> GapUpdate:
    """New gap rows for the local days covered by ``checked`` = ``[(range read, missing in it)]`` (pure).

    Per day: missing = previous missing outside the ranges read now ∪ missing found now.  Nothing
    missing → ``resolved`` (written only when a gap row existed).  New missing quarter-hours →
    ``open`` with attempt 1; the same ones again → one more attempt once ``retry_every`` has passed
    since the last counted one; at ``max_attempts`` → ``source_incomplete`` (reported, not re-read;
    still resolved if a later read finds the values).  A row is written only when it changes.
    ``rejected``: instants the reads sent in records the parser refused (``rejected_records``): the reason says
    how many of the missing ones the source did send, so a record refused on every read is not reported as one
    the source lacks.
    """
    rejected_utc = {to_utc(t) for t in rejected}
    covered: dict[date, list[Window]] = {}
    found: dict[date, set[pd.Timestamp]] = {}
    for rng, missing in checked:
        for day in _days_of(rng):
            bounds = _day_bounds(day)
            covered.setdefault(day, []).append(Window(max(rng.start, bounds.start), min(rng.end, bounds.end)))
        for t in missing:
            found.setdefault(_local_day(t), set()).add(to_utc(t))
    out = GapUpdate()
    for day, parts in sorted(covered.items()):
        prev = previous.get(day)
        prev_missing = {to_utc(t) for t in prev["missing"]} if prev else set()
        carried = {t for t in prev_missing if not any(p.start <= t < p.end for p in parts)}
        now_missing = sorted(carried | found.get(day, set()))
        expected: set[pd.Timestamp] = set()
        for p in parts:
            expected |= set(expected_instants(p.start, p.end, ignore_fallback_gap=ignore_fallback_gap))
        bounds = _day_bounds(day)
        base = {"source": source, "day": day, "window_start": bounds.start, "window_end": bounds.end,
                "expected": len(expected), "missing": [t.to_pydatetime() for t in now_missing],
                "run_id": run_id, "updated_at": updated_at or now}
        if not now_missing:
            if prev is not None and prev["status"] != "resolved":
                out.rows.append({**base, "status": "resolved", "attempts": int(prev["attempts"]),
                                 "first_seen_at": _utc(prev["first_seen_at"]), "last_attempt_at": now,
                                 "reason": "every expected quarter-hour arrived"})
                out.resolved_days.append(day.isoformat())
            continue
        fresh = prev is None or prev["status"] == "resolved" or bool(set(now_missing) - prev_missing)
        if fresh or prev is None:
            attempts, first_seen, last_attempt = 1, now, now
        else:
            attempts, first_seen = int(prev["attempts"]), _utc(prev["first_seen_at"])
            last_attempt = _utc(prev["last_attempt_at"])
            if prev["status"] == "open" and now - last_attempt >= retry_every:
                attempts, last_attempt = attempts + 1, now
        status = "source_incomplete" if attempts >= max_attempts else "open"
        unchanged = (prev is not None and not fresh and prev["status"] == status
                     and int(prev["attempts"]) == attempts and prev_missing == set(now_missing))
        if not unchanged:
            reason = gap_reason(len(now_missing), attempts, len(rejected_utc.intersection(now_missing)), status)
            out.rows.append({**base, "status": status, "attempts": attempts, "first_seen_at": first_seen,
                             "last_attempt_at": last_attempt, "reason": reason})
        if status == "open":
            out.open_missing += len(now_missing)
        else:
            out.source_incomplete_missing += len(now_missing)
    return out


def gap_reason(missing: int, attempts: int, refused: int, status: str) -> str:
    """The reason of a gap row: ``missing`` quarter-hours after ``attempts`` reads, ``refused`` of them sent by
    the source in records PowerSense rejected (the rest it did not send)."""
    lacks = missing - refused
    parts = [f"{missing} quarter-hour(s) missing after {attempts} attempt(s)"]
    if refused:
        parts.append(f"{refused} sent by the source and rejected (see rejected_records)")
    if status == "source_incomplete":
        parts.append("no longer re-read" if not lacks else
                     ("the source lacks them, no longer re-read" if not refused
                      else f"the source lacks {lacks}, no longer re-read"))
    else:
        parts.append("re-read on later ticks")
    return "; ".join(parts)


def write_gaps(store: Store, rows: list[dict[str, Any]]) -> None:
    """Insert gap rows (they replace the previous row of their day: ReplacingMergeTree(updated_at))."""
    if not rows:
        return
    frame = pd.DataFrame(rows, columns=GAP_COLUMNS)
    for col in ("window_start", "window_end", "first_seen_at", "last_attempt_at", "updated_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    store.insert_df("poll_gaps", frame)


def _publish_gap_metrics(gaps: dict[date, dict[str, Any]]) -> None:
    """Missing quarter-hours per status over every gap row of the source (as written now)."""
    for status in ("open", "source_incomplete"):
        POLL_MISSING.labels(status).set(float(sum(len(g["missing"]) for g in gaps.values() if g["status"] == status)))


# --- the stage -------------------------------------------------------------------------------------------


def run_poll(
    store: Store,
    settings: Settings,
    run: Run,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    max_pages: int | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Run:
    """One poll invocation (cron: no options; backfill: ``start``/``end``; ``max_pages`` bounds it).

    Fills and returns ``run`` (shared/runs.py): run.rows_in (records fetched), run.rows_out (records
    landed and accepted) and run.details; sets run.status ``partial`` when a window stays incomplete
    (gap rows in ``poll_gaps``).
    Raises SourceError when the source fails after retries (pages landed before stay landed).
    Skips a scheduled run (no ``start``) while the history bootstrap is pending: its watermark would
    otherwise start after a hole between the history's end and now.
    """
    t0 = time.perf_counter()
    if start is not None and end is not None and end <= start:
        raise BadRequestError("end must be after start")
    if start is None and bootstrap_pending(store, settings):
        run.skip("history bootstrap has not completed yet (upsert-version loads it)")
        return run
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
        return run
    # A capped window (end before now + lookahead) means a backlog: later ticks continue from the new watermark.
    catching_up = start is None and end is None and window.end < now + timedelta(hours=settings.poll_lookahead_hours)
    run.details.update(window_start=window.start.isoformat(), window_end=window.end.isoformat(),
                       catching_up=catching_up)
    from shared.ingest.odre import OdreClient

    source = settings.source_dataset
    edge = _edge(now, settings)
    checked: list[tuple[Window, list[pd.Timestamp]]] = []
    gap_days_read: list[str] = []
    count_short: dict[str, Any] | None = None
    rereads = repeated = 0
    reader: _Reader | None = None
    known: dict[date, dict[str, Any]] | None = None  # this source's poll_gaps rows, read once per run
    try:
        with OdreClient.from_settings(settings, transport=transport) as client:
            # No page starts after the run's time budget, and the one under way (retries included) ends by its
            # budget plus one request's timeout: both below poll's exec_timeout, so a long catch-up ends as a
            # truncated run the next tick continues (pages landed stay landed), not as the watchdog's 504.
            page_deadline = time.monotonic() + settings.poll_time_budget_s
            client.deadline = page_deadline + settings.source_timeout_s
            reader = _Reader(store, settings, client, run, max_pages, deadline=page_deadline)
            first = reader.read(window)
            repeated += first.repeated_pages
            missing = _missing(first, edge, settings)
            short = first.total_count is not None and len(first.identities) < first.total_count
            # Re-read a short or shifted window: the missing runs, or the whole window when only the
            # count disagrees (a lost padding row or a second nature at an instant that has a row).
            for _ in range(settings.poll_reread_attempts):
                if reader.exhausted or not (missing or short):
                    break
                rereads += 1
                log_event(log, "poll_window_short", logging.WARNING, start=window.start, end=window.end,
                          missing=len(missing), received=len(first.identities), total_count=first.total_count)
                if missing:
                    for rng in _runs(missing):
                        again = reader.read(rng)
                        repeated += again.repeated_pages
                        first.instants |= again.instants
                        first.identities |= again.identities
                        if reader.exhausted:
                            break
                else:
                    again = reader.read(window)
                    repeated += again.repeated_pages
                    first.instants |= again.instants
                    first.identities |= again.identities
                    first.total_count = again.total_count
                missing = _missing(first, edge, settings)
                short = first.total_count is not None and len(first.identities) < first.total_count
            checked_end = _checked_end(first, edge)
            checked.append((Window(window.start, checked_end), missing))
            if short:
                count_short = {"received": len(first.identities), "total_count": first.total_count}
            # Gap-driven re-reads: recorded open gaps outside this window, oldest first, not only the
            # last 24 h (the overlap) — until they complete or reach max attempts.
            if settings.poll_gap_rereads_per_tick and not reader.exhausted:
                known = load_gaps(store, source)
                pending = [g for g in known.values()
                           if g["status"] == "open" and g["missing"] and not _inside(g, window, checked_end)]
                for gap in pending[: settings.poll_gap_rereads_per_tick]:
                    rng = Window(min(gap["missing"]).to_pydatetime(), (max(gap["missing"]) + GRID).to_pydatetime())
                    again = reader.read(rng)
                    repeated += again.repeated_pages
                    checked.append((Window(rng.start, _checked_end(again, edge)), _missing(again, edge, settings)))
                    gap_days_read.append(str(gap["day"]))
                    if reader.exhausted:
                        break
    finally:
        if reader is not None:
            run.rows_in = reader.records
            run.rows_out = reader.records - reader.rejected
            run.details.update(pages=reader.pages, records=reader.records, rejected=reader.rejected,
                               truncated=reader.exhausted)
        run.details.update(elapsed_s=round(time.perf_counter() - t0, 4))
    if known is None:
        known = load_gaps(store, source)
    update = merge_gaps(known, checked, source=source, now=clock.now(),
                        updated_at=landing_time(), run_id=run.run_id, max_attempts=settings.poll_gap_max_attempts,
                        retry_every=timedelta(minutes=settings.poll_gap_retry_min),
                        ignore_fallback_gap=settings.detect_ignore_fallback_gap,
                        rejected=reader.rejected_instants if reader is not None else frozenset())
    write_gaps(store, update.rows)
    _publish_gap_metrics({**known, **{pd.Timestamp(r["day"]).date(): r for r in update.rows}})
    gaps = [{"day": str(r["day"]), "status": r["status"], "missing": len(r["missing"]), "attempts": r["attempts"]}
            for r in update.rows]
    run.details.update(
        complete=not update.open_missing and count_short is None, rereads=rereads, repeated_pages=repeated,
        missing_open=update.open_missing, missing_source_incomplete=update.source_incomplete_missing,
        gaps=gaps, gap_days_reread=gap_days_read, count_short=count_short,
        checked_until=checked[0][0].end.isoformat() if checked else None,
    )
    if update.open_missing or count_short is not None:
        run.status = "partial"
        POLL_INCOMPLETE.inc()
        log_event(log, "poll_incomplete", logging.WARNING, missing_open=update.open_missing,
                  count_short=count_short, gaps=gaps)
    log_event(log, "poll_done", pages=run.details.get("pages"), records=run.rows_in,
              rejected=run.details.get("rejected"), window_start=window.start, window_end=window.end,
              status=run.status)
    return run


def _inside(gap: dict[str, Any], window: Window, checked_end: datetime) -> bool:
    """True when every missing quarter-hour of ``gap`` lies in the part of ``window`` just checked."""
    return all(window.start <= t < checked_end for t in gap["missing"])


def _days_of(rng: Window) -> list[date]:
    if rng.end <= rng.start:
        return []
    out, day = [], _local_day(rng.start)
    last = _local_day(rng.end - timedelta(microseconds=1))
    while day <= last:
        out.append(day)
        day += timedelta(days=1)
    return out
