"""upsert-version: turn landed ODRÉ pages into versioned measurement rows.

Semantics (the same for polled batches and for the bootstrap from shipped history):

* one measurement row per (record, numeric field); ``ukey`` = canonical JSON of
  ``{"date": UTC date, "metric", "nature", "perimetre", "time": UTC HH:MM}`` (UTC because the local
  fall-back hour is ambiguous);
* a ukey never seen before gets version 1 when its value is not NULL (a NULL for an unknown ukey
  creates nothing); the same value again creates nothing; a different value (including a value
  becoming NULL) creates version = latest + 1.  Older versions are kept.

Plan → compute → write: :func:`compute_versions` is a pure function over DataFrames; the thin I/O
around it reads the latest versions (``measurements_latest FINAL`` restricted to the batch's
source, metrics and time range), inserts with an ``insert_deduplication_token`` and marks each
batch done in ``batch_versions``.

Crash safety: batches are applied one at a time in landing order, and a batch is marked done only
after its rows are inserted.  Re-running after a crash anywhere (mid-batch, or between insert and
marking) recomputes the unmarked batch against the latest versions, which already hold whatever
was inserted, so only the missing rows are written and the content converges to what an
uninterrupted run writes.  A page is versioned only once all of its landed records are readable
(:func:`readable_prefix`: on a cluster a replica may not have fetched them yet), never from part of it.

Serialization: versions are assigned by read-latest-then-insert, so two writers at once could
assign the same version twice or skip one.  Writers (upsert-version and bootstrap) hold the
``measurements-writer`` lease in ClickHouse (:mod:`shared.lease`), which excludes writers in other
threads, processes, pods and hosts alike and expires when a holder crashes.  A second upsert-version
invocation that finds it held returns status ``skipped`` at once (the next cron tick picks the work up).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from shared import clock
from shared.ingest.parse import parse_records, source_rules
from shared.lease import MEASUREMENTS_WRITER, Lease
from shared.logs import log_event
from shared.plausibility import PlausibilityParams, plausibility_flags
from shared.runs import Run
from shared.series import NO_END, NO_START, VERDICTS_SQL
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import to_utc

log = logging.getLogger(__name__)

BOOTSTRAP_BATCH = "bootstrap"
MEASUREMENT_COLUMNS = ["ts", "source", "metric", "nature", "value", "ukey", "version", "batch_id"]
FLAG_COLUMNS = ["ts", "source", "metric", "nature", "ukey", "version", "value", "reason", "flagged_at"]


# --- pure functions ------------------------------------------------------------------------------


def make_ukeys(ts: pd.Series, metric: pd.Series, nature: pd.Series, perimetre: pd.Series | str) -> pd.Series:
    """Canonical JSON keys (sorted keys, no spaces, UTF-8) identifying one value of one instant.

    Vectorized: the (metric, nature, perimetre) middle part is JSON-encoded once per combination,
    and the UTC date/time text comes from numpy (about 1 s per million rows).
    """
    if len(ts) == 0:
        return pd.Series([], dtype=object, index=ts.index)
    stamps = np.datetime_as_string(
        ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[m]"), unit="m"
    ).tolist()
    per = pd.Series(perimetre, index=ts.index) if isinstance(perimetre, str) else perimetre
    m_codes, m_uniq = pd.factorize(metric.to_numpy(dtype=object))
    n_codes, n_uniq = pd.factorize(nature.to_numpy(dtype=object))
    p_codes, p_uniq = pd.factorize(per.to_numpy(dtype=object))
    codes = (m_codes * len(n_uniq) + n_codes) * len(p_uniq) + p_codes
    mids = [
        '","metric":' + json.dumps(m, ensure_ascii=False) + ',"nature":' + json.dumps(n, ensure_ascii=False)
        + ',"perimetre":' + json.dumps(p, ensure_ascii=False) + ',"time":"'
        for m in m_uniq for n in n_uniq for p in p_uniq
    ]
    keys = [f'{{"date":"{s[:10]}{mids[c]}{s[11:16]}"}}' for s, c in zip(stamps, codes.tolist(), strict=True)]
    return pd.Series(keys, index=ts.index, dtype=object)


def ukey_of(ts: datetime, metric: str, nature: str, perimetre: str = "France") -> str:
    """The ukey of one value (reference implementation used by tests and docs)."""
    utc = ts.astimezone(UTC)
    return json.dumps(
        {"date": utc.strftime("%Y-%m-%d"), "metric": metric, "nature": nature, "perimetre": perimetre,
         "time": utc.strftime("%H:%M")},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )


def wide_to_long(frame: pd.DataFrame, metrics: Sequence[str], perimetre: str = "France") -> pd.DataFrame:
    """History rows (``ts``, ``nature``, one column per metric) → long rows with ukeys.

    NULL cells are kept (they matter when a known value is withdrawn); compute_versions ignores a
    NULL for an unknown ukey.
    """
    metrics = [m for m in metrics if m in frame.columns]
    n = len(frame)
    naive_utc = frame["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    long = pd.DataFrame(
        {
            "ts": np.tile(naive_utc, len(metrics)),
            "nature": np.tile(frame["nature"].to_numpy(dtype=object), len(metrics)),
            "metric": np.repeat(np.array(metrics, dtype=object), n),
            "value": np.concatenate([pd.to_numeric(frame[m], errors="coerce").to_numpy("float64") for m in metrics])
            if metrics else np.array([], dtype="float64"),
        }
    )
    long["ts"] = long["ts"].dt.tz_localize("UTC")
    long["perimetre"] = perimetre
    return long


def compute_versions(observed: pd.DataFrame, latest: pd.DataFrame, *, dedupe: bool = True) -> pd.DataFrame:
    """New measurement rows for ``observed`` given the ``latest`` stored versions.

    ``observed``: ``ts, metric, nature, value, ukey`` (later rows win for a repeated ukey).
    ``latest``: ``ukey, version, value`` — the latest stored version of (at least) those ukeys.
    Returns ``ts, metric, nature, value, ukey, version`` for new ukeys with a value (version 1) and
    changed values (version + 1); unchanged values yield nothing.
    """
    obs = observed.drop_duplicates("ukey", keep="last") if dedupe else observed
    cols = ["ts", "metric", "nature", "value", "ukey"]
    if latest.empty:
        out = obs.loc[obs["value"].notna(), cols].copy()
        out["version"] = np.ones(len(out), dtype="uint64")
        return out.reset_index(drop=True)
    prev = latest.drop_duplicates("ukey", keep="last").set_index("ukey")
    prev_version = prev["version"].reindex(obs["ukey"]).to_numpy(dtype="float64")
    prev_value = pd.to_numeric(prev["value"], errors="coerce").reindex(obs["ukey"]).to_numpy(dtype="float64")
    value = obs["value"].to_numpy(dtype="float64")
    known = ~np.isnan(prev_version)
    same = (value == prev_value) | (np.isnan(value) & np.isnan(prev_value))
    keep = np.where(known, ~same, ~np.isnan(value))
    out = obs.loc[keep, cols].copy()
    out["version"] = np.where(known[keep], prev_version[keep] + 1, 1).astype("uint64")
    return out.reset_index(drop=True)


def chunk_token(batch_id: str, chunk_no: int, rows: pd.DataFrame) -> str:
    """insert_deduplication_token for one chunk: batch id, chunk number and a content digest.

    The digest matters: a re-run after a partial insert produces a different (smaller) chunk under
    the same number, which must not be discarded as a duplicate of the earlier block.
    """
    h = hashlib.blake2b(digest_size=12)
    h.update(rows["ts"].to_numpy(dtype="datetime64[ns]").view("int64").tobytes())
    h.update(rows["version"].to_numpy(dtype="uint64").tobytes())
    h.update(rows["value"].to_numpy(dtype="float64").tobytes())
    # Text columns: their distinct values and the first/last key (hashing 10^6 strings costs seconds).
    for col in ("metric", "nature"):
        h.update("\x1f".join(map(str, pd.unique(rows[col]))).encode())
    if len(rows):
        h.update(f"{rows['ukey'].iloc[0]}\x1f{rows['ukey'].iloc[-1]}\x1f{len(rows)}".encode())
    return f"{batch_id}:{chunk_no}:{h.hexdigest()}"


# --- thin I/O -------------------------------------------------------------------------------------


def load_latest(store: Store, source: str, metrics: Iterable[str], ts_min: datetime, ts_max: datetime) -> pd.DataFrame:
    """Latest version (``ukey, version, value``) of every value of ``metrics`` with ts in range."""
    df = store.query_df(
        """
        select ukey, version, value
        from {db:Identifier}.measurements_latest final
        where source = {source:String} and metric in {metrics:Array(String)}
          and ts >= {lo:DateTime64(3, 'UTC')} and ts <= {hi:DateTime64(3, 'UTC')}
        """,
        {"source": source, "metrics": sorted(set(metrics)), "lo": ts_min, "hi": ts_max},
    )
    if df.empty:
        return pd.DataFrame({"ukey": pd.Series(dtype=object), "version": pd.Series(dtype="uint64"),
                             "value": pd.Series(dtype="float64")})
    df["ukey"] = df["ukey"].astype(object)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    return df


def has_versions_in_range(
    store: Store, source: str, metrics: Iterable[str], ts_min: datetime, ts_max: datetime
) -> bool:
    """True when any version of ``metrics`` is stored with ts in range (cheap: stops at one row)."""
    return bool(store.scalar(
        """
        select count() from (
            select 1 from {db:Identifier}.measurements_latest
            where source = {source:String} and metric in {metrics:Array(String)}
              and ts >= {lo:DateTime64(3, 'UTC')} and ts <= {hi:DateTime64(3, 'UTC')}
            limit 1)
        """,
        {"source": source, "metrics": sorted(set(metrics)), "lo": ts_min, "hi": ts_max},
    ))


def upsert_wide(
    store: Store, frame: pd.DataFrame, metrics: Sequence[str], *, source: str, batch_id: str, chunk_rows: int,
    inserted_at: datetime | None = None, rejudge: bool = False,
) -> tuple[int, int]:
    """Upsert history-shaped rows (``ts``, ``nature``, one column per metric); returns (values, rows written).

    The bulk path of bootstrap (and of the benchmark): when the frame's time range holds no stored
    version at all, every ukey is new, so NULLs are dropped before building keys and the lookup
    is skipped; otherwise the latest versions of that range are read as for a polled batch.
    ``rejudge`` (a resumed bootstrap): values of the range already stored are judged again too, since a run
    killed between its insert and its plausibility reflag left them unjudged and writes nothing for them now.
    """
    if frame.empty:
        return 0, 0
    long = wide_to_long(frame, metrics)
    if long.empty:
        return 0, 0
    lo, hi = frame["ts"].min(), frame["ts"].max()
    stored = has_versions_in_range(store, source, long["metric"].unique(), lo, hi)
    if not stored:  # a NULL for an unknown ukey creates nothing
        long = long[long["value"].notna()]
    long["ukey"] = make_ukeys(long["ts"], long["metric"], long["nature"], long["perimetre"])
    latest = load_latest(store, source, long["metric"].unique(), lo, hi) if stored else long.iloc[0:0][["ukey"]]
    if not stored:
        latest = latest.assign(version=pd.Series(dtype="uint64"), value=pd.Series(dtype="float64"))
    rows = compute_versions(long, latest, dedupe=not frame["ts"].is_unique)
    written = write_versions(store, rows, source, batch_id, chunk_rows, inserted_at=inserted_at)
    if rejudge and stored:  # reflag appends changed verdicts only: values judged before are left as they are
        reflag(store, source, long, PlausibilityParams.from_settings(store.settings), flagged_at=inserted_at)
    return len(long), written


def write_versions(
    store: Store, rows: pd.DataFrame, source: str, batch_id: str, chunk_rows: int,
    *, inserted_at: datetime | None = None,
) -> int:
    """Insert new measurement rows in chunks (each with a content-derived dedup token), then
    re-evaluate the plausibility of their neighbourhood (:func:`reflag`).

    ``inserted_at`` (default: the product's clock, ``shared.clock.now()`` — simulated in the demo,
    real in production) is when the versions became known; ``as_of`` reads compare with it, so it
    must come from the same clock as every other "now" of the product, not the server's wall clock.
    """
    if rows.empty:
        return 0
    known_at = _naive_utc(inserted_at or clock.now())
    # Naive UTC datetime64 takes the driver's fast path (tz-aware values are converted one by one).
    utc = rows["ts"].dt.tz_convert("UTC").dt.tz_localize(None) if rows["ts"].dt.tz is not None else rows["ts"]
    frame = rows.assign(ts=utc, source=source, batch_id=batch_id)[MEASUREMENT_COLUMNS]
    frame["inserted_at"] = np.full(len(frame), np.datetime64(known_at, "ms"))
    written = 0
    for chunk_no, start in enumerate(range(0, len(frame), chunk_rows)):
        chunk = frame.iloc[start:start + chunk_rows]
        # The token hashes the content, not inserted_at: a retried chunk is the same block.
        written += _insert_chunk(store, chunk, chunk_token(batch_id, chunk_no, chunk))
    reflag(store, source, rows, PlausibilityParams.from_settings(store.settings), flagged_at=known_at)
    return written


def reflag_history(store: Store, settings: Settings) -> dict[str, int]:
    """Judge every stored value of the plausibility metrics, one UTC year at a time (idempotent).

    The upgrade path of a store whose values were versioned before plausibility flags existed
    (``python -m shared reflag``); afterwards every write re-evaluates its own neighbourhood.
    """
    params = PlausibilityParams.from_settings(settings)
    source = settings.series_source
    bind = {"source": source, "metrics": list(params.metrics)}
    years = [int(r[0]) for r in store.query_rows(
        """
        select distinct toYear(ts) as y from {db:Identifier}.measurements_latest
        where source = {source:String} and metric in {metrics:Array(String)} order by y
        """, bind)]
    written = 0
    for year in years:
        rows = store.query_df(
            """
            select ts, metric, nature from {db:Identifier}.measurements_latest final
            where source = {source:String} and metric in {metrics:Array(String)}
              and ts >= {lo:DateTime64(3, 'UTC')} and ts < {hi:DateTime64(3, 'UTC')}
            """,
            {**bind, "lo": datetime(year, 1, 1), "hi": datetime(year + 1, 1, 1)},
        )
        written += reflag(store, source, rows, params)
    flagged = int(store.scalar(
        """
        select countIf(reason != '') from """ + VERDICTS_SQL + """
        """, {"source": source, "metric": "", "start": NO_START, "end": NO_END, "as_of": NO_END}) or 0)
    return {"years": len(years), "verdicts_written": written, "flagged": flagged}


def reflag_main(argv: list[str] | None = None) -> int:
    """``python -m shared reflag``: flag the implausible values already stored (after an upgrade)."""
    import argparse

    argparse.ArgumentParser(prog="python -m shared reflag", description=reflag_main.__doc__).parse_args(argv)
    from shared.logs import configure_logging
    from shared.settings import get_settings
    from shared.store import get_store

    settings = get_settings()
    configure_logging(settings.log_level)
    print(json.dumps(reflag_history(get_store(settings), settings)))
    return 0


def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def reflag(
    store: Store, source: str, rows: pd.DataFrame, params: PlausibilityParams, *, flagged_at: datetime | None = None
) -> int:
    """Re-evaluate the plausibility of the values around ``rows`` (just written); returns verdicts written.

    Per (metric, nature) touched by ``rows`` and checked by ``params``: the latest version of every
    value within ``params.context()`` of the written window is read back and judged as one series
    (:func:`shared.plausibility.plausibility_flags`), so a neighbour that arrives later and proves a
    jump flags the earlier value, and a revision that makes a value plausible leaves its new version
    unflagged (verdicts are per version).  Only verdicts that differ from the latest stored one are
    appended to ``measurement_flags`` (reason '' clears a flag), and only for values within
    ``max_excursion_hours`` of the window: values further out are judged on truncated context.
    """
    if rows.empty:
        return 0
    known_at = _naive_utc(flagged_at or clock.now())
    ts_all = pd.to_datetime(rows["ts"], utc=True)
    ctx = params.context()
    reach = pd.Timedelta(hours=params.max_excursion_hours)
    out: list[pd.DataFrame] = []
    for metric, idx in rows.groupby("metric", sort=False).groups.items():
        if not params.applies_to(str(metric)):
            continue
        ts = ts_all.loc[idx]
        lo, hi = ts.min(), ts.max()
        natures = sorted(set(rows.loc[idx, "nature"].astype(str)))
        values = store.query_df(
            """
            select ts, nature, ukey, version, value
            from {db:Identifier}.measurements_latest final
            where source = {source:String} and metric = {metric:String} and nature in {natures:Array(String)}
              and ts >= {lo:DateTime64(3, 'UTC')} and ts <= {hi:DateTime64(3, 'UTC')}
            order by nature, ts
            """,
            {"source": source, "metric": str(metric), "natures": natures, "lo": lo - ctx, "hi": hi + ctx},
        )
        if values.empty:
            continue
        # every verdict stored so far ([lo, hi] inclusive: the view's end is exclusive, instants are whole ms)
        stored = store.query_df(
            "select ukey, version, reason from " + VERDICTS_SQL,
            {"source": source, "metric": str(metric), "start": lo - reach,
             "end": hi + reach + pd.Timedelta(milliseconds=1), "as_of": NO_END},
        )
        if not stored.empty:
            stored = stored.assign(ukey=stored["ukey"].astype(str), version=stored["version"].astype("uint64"),
                                   reason=stored["reason"].astype(str))
        for _, series in values.groupby("nature", sort=False):
            series = series.reset_index(drop=True)
            series["value"] = pd.to_numeric(series["value"], errors="coerce").astype("float64")
            reasons = plausibility_flags(series[["ts", "value"]], params)
            near = (series["ts"] >= lo - reach) & (series["ts"] <= hi + reach)
            # the latest stored verdict of each version ('' = none): a vectorised lookup, since the bulk
            # path (bootstrap) judges millions of values and most have no verdict at all
            if stored.empty:
                before = pd.Series("", index=series.index)
            else:
                keys = series[["ukey", "version"]].astype({"ukey": str, "version": "uint64"})
                before = pd.Series(keys.merge(stored, on=["ukey", "version"], how="left")["reason"]
                                   .fillna("").to_numpy(), index=series.index)
            changed = near & (reasons != before)
            if changed.any():
                out.append(series.loc[changed].assign(metric=str(metric), reason=reasons[changed]))
    if not out:
        return 0
    verdicts = pd.concat(out, ignore_index=True)
    verdicts["ts"] = verdicts["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    verdicts = verdicts.assign(source=source, flagged_at=known_at)[FLAG_COLUMNS]
    n = store.insert_df("measurement_flags", verdicts)
    log_event(log, "plausibility_verdicts", source=source, written=n,
              flagged=int((verdicts["reason"] != "").sum()), cleared=int((verdicts["reason"] == "").sum()))
    return n


def _insert_chunk(store: Store, chunk: pd.DataFrame, token: str) -> int:
    # One function per insert so tests can inject a crash between two chunks.
    return store.insert_df("measurements", chunk, dedup_token=token)


def mark_batch_done(store: Store, batch_id: str, rows_in: int, rows_out: int, run_id: str) -> None:
    """Record that ``batch_id`` is versioned (after its rows are inserted)."""
    store.insert_df(
        "batch_versions",
        pd.DataFrame([{"batch_id": batch_id, "versioned_at": clock.now(), "rows_in": rows_in,
                       "rows_out": rows_out, "run_id": run_id}]),
    )


def pending_batches(store: Store, limit: int) -> pd.DataFrame:
    """Complete landed pages (with a raw_batches header) not yet versioned, oldest first."""
    return store.query_df(
        """
        select batch_id, fetched_at, n_records
        from {db:Identifier}.raw_batches final
        where batch_id not in (select batch_id from {db:Identifier}.batch_versions)
        order by fetched_at, batch_id
        limit {limit:UInt32}
        """,
        {"limit": limit},
    )


def bootstrap_done(store: Store) -> bool:
    """True when the history bootstrap has completed (its marker is in batch_versions)."""
    return bool(store.scalar(
        "select count() from {db:Identifier}.batch_versions where batch_id = {b:String}", {"b": BOOTSTRAP_BATCH}
    ))


def has_polled_measurements(store: Store) -> bool:
    """True when measurements hold rows written by upsert-version (anything but the bootstrap)."""
    return bool(store.scalar(
        "select count() from (select 1 from {db:Identifier}.measurements where batch_id != {b:String} limit 1)",
        {"b": BOOTSTRAP_BATCH},
    ))


def bootstrap_pending(store: Store, settings: Settings) -> bool:
    """True while a configured history bootstrap has not completed and nothing else was versioned.

    upsert-version then loads the history first (under its lease) and poll waits (skips), so the
    bootstrap is never interleaved with versioning of polled pages and polling starts after the history.
    """
    if not settings.poll_bootstrap or not settings.history_files:
        return False
    return not bootstrap_done(store) and not has_polled_measurements(store)


# --- the stage ------------------------------------------------------------------------------------


def run_upsert(
    store: Store,
    settings: Settings,
    run: Run,
    *,
    max_batches: int | None = None,
    chunk_rows: int | None = None,
    bootstrap: bool = True,
) -> Run:
    """Version every pending landed batch (up to ``max_batches``), in landing order.

    While the history bootstrap is pending (``bootstrap_pending``) it is loaded first, in this run
    (``bootstrap=False``: skip instead).  Skips (status ``skipped``) when another writer holds the
    measurements lease, or when nothing is pending.  Fills and returns ``run`` (shared/runs.py):
    run.rows_in (records read), run.rows_out (measurement rows written) and run.details.
    """
    lease = Lease(store, MEASUREMENTS_WRITER, ttl_s=settings.upsert_lease_ttl_s)
    if not lease.acquire():
        run.skip(f"another upsert-version, bootstrap or featurize is running ({lease.describe_other()})")
        log_event(log, "upsert_skipped_concurrent", lease_holder=lease.describe_other())
        return run
    with lease:  # released on every exit; a crash leaves it to expire
        _run_upsert_locked(store, settings, run, max_batches or settings.upsert_max_batches,
                           chunk_rows or settings.upsert_chunk_rows, bootstrap, lease)
    return run


def _run_upsert_locked(
    store: Store, settings: Settings, run: Run, max_batches: int, chunk_rows: int, bootstrap: bool,
    lease: Lease,
) -> None:
    t0 = time.perf_counter()
    loaded, bootstrapped = 0, False
    if bootstrap_pending(store, settings):
        if not bootstrap:
            run.skip("history bootstrap has not completed yet")
            return
        from shared.ingest.bootstrap import load_history  # imports this module

        result = load_history(store, settings, lease, run_id=run.run_id)
        run.details["bootstrap"] = result
        loaded, bootstrapped = int(result.get("rows_out", 0)), result.get("status") == "done"
    batches = pending_batches(store, max_batches)
    if batches.empty:
        if bootstrapped:  # the history was this run's work (a resumed one may add no row)
            run.rows_out = loaded
        else:
            run.skip("no landed batches to version")
        return
    ids = batches["batch_id"].astype(str).tolist()
    raw = store.query_df(
        """
        select batch_id, record_no, fetched_at, payload
        from {db:Identifier}.raw_records final
        where batch_id in {ids:Array(String)}
        order by batch_id, record_no
        """,
        {"ids": ids},
    )
    ids, held = readable_prefix(batches, raw, clock.now())
    if held is not None:
        run.details["held_batch"] = held
        log_event(log, "upsert_batch_incomplete", logging.WARNING, **held)
        if not ids:
            run.skip(f"landed page {held['batch_id']} is not fully readable yet ({held['readable']}/"
                     f"{held['n_records']} records); it and the pages after it wait for the next run")
            return
        raw = raw[raw["batch_id"].isin(ids)]
    # a page of no records (HTTP 200, empty results) has no raw rows; it is still marked done below
    groups = raw.groupby("batch_id", sort=False) if not raw.empty else ()
    source = settings.series_source
    per_batch: dict[str, pd.DataFrame] = {}
    rejected = 0
    records = 0
    for batch_id, group in groups:
        payloads = [json.loads(p) for p in group["payload"]]
        # as of the page's fetch, as poll read it: a replay later accepts and rejects the same records
        parsed = parse_records(payloads, now=to_utc(group["fetched_at"].iloc[0]).to_pydatetime(),
                               **source_rules(settings))
        # Rejections were dead-lettered by poll when it landed the page; here they are only counted.
        rejected += len(parsed.rejections)
        records += len(payloads)
        rows = parsed.rows
        rows = rows.assign(ukey=make_ukeys(rows["ts"], rows["metric"], rows["nature"], rows["perimetre"]))
        per_batch[str(batch_id)] = rows
    all_rows = [r for r in per_batch.values() if not r.empty]
    state: dict[str, tuple[int, float]] = {}
    if all_rows:
        union = pd.concat(all_rows, ignore_index=True)
        latest = load_latest(store, source, union["metric"].unique(), union["ts"].min(), union["ts"].max())
        state = dict(zip(latest["ukey"], zip(latest["version"].astype(int), latest["value"], strict=True), strict=True))
    written = 0
    versions: dict[str, int] = {"new": 0, "revised": 0}
    for batch_id in ids:
        if lease is not None:
            lease.keep_alive()  # renews after a third of the TTL; stops here if the lease was lost
        obs = per_batch.get(batch_id)
        new_rows = pd.DataFrame()
        if obs is not None and not obs.empty:
            new_rows = compute_versions(obs, _latest_frame(state, obs["ukey"]))
            written += write_versions(store, new_rows, source, batch_id, chunk_rows)
            if new_rows.empty and _written_before(store, source, batch_id, obs):
                # a run killed between this batch's insert and its reflag: the retry finds every value stored and
                # writes nothing, so write_versions judges nothing; judge them here (reflag appends changed
                # verdicts only, so a batch judged before is left as it is)
                reflag(store, source, obs, PlausibilityParams.from_settings(settings))
            for ukey, version, value in zip(new_rows["ukey"], new_rows["version"], new_rows["value"], strict=True):
                state[ukey] = (int(version), value)
            n_new = int((new_rows["version"] == 1).sum()) if not new_rows.empty else 0
            versions["new"] += n_new
            versions["revised"] += len(new_rows) - n_new
        mark_batch_done(store, batch_id, 0 if obs is None else len(obs), len(new_rows), run.run_id)
    run.rows_in = records
    run.rows_out = loaded + written  # measurement rows this run wrote: the history's, then the pages'
    run.details.update(
        batches=len(ids), records=records, rejected_records=rejected, new_ukeys=versions["new"],
        revised=versions["revised"], more_pending=len(ids) == max_batches,
        elapsed_s=round(time.perf_counter() - t0, 4),
    )
    log_event(log, "upsert_done", batches=len(ids), records=records, rows_out=written, **versions)


# How long a landed page whose records are not all readable is waited for before what is readable is
# versioned. On one server it never happens (poll inserts a page's records before its header). On a
# cluster the records and the header are separate inserts, sharded apart, each acknowledged by one replica
# of its shard; a read through the Distributed table may reach the other replica before it has fetched the
# records' part (ClickHouse's own alarm for a lagging replica is 300 s: max_replica_delay_for_distributed_
# queries). An hour is far beyond replication lag: a page still short then has lost records for good (a TTL,
# a manual delete), and holding it longer would stop versioning for ever.
RAW_READ_GRACE_S = 3600


def readable_prefix(
    batches: pd.DataFrame, raw: pd.DataFrame, now: datetime, grace_s: float = RAW_READ_GRACE_S,
) -> tuple[list[str], dict[str, object] | None]:
    """The pending batches to version now, in landing order, and the first one held back (or None).

    A batch is versioned once all ``n_records`` of its raw records are readable, or once it is older than
    ``grace_s`` (then with what is readable, and reported). Versions follow landing order, so the pages
    after a held one wait with it: versioning them first would give a later revision a lower version.
    """
    readable = raw.groupby("batch_id")["record_no"].nunique() if not raw.empty else pd.Series(dtype=int)
    ready: list[str] = []
    for batch_id, fetched_at, n_records in zip(
        batches["batch_id"].astype(str), batches["fetched_at"], batches["n_records"], strict=True
    ):
        got = int(readable.get(batch_id, 0))
        if got < int(n_records):
            age_s = (to_utc(now) - to_utc(fetched_at)).total_seconds()
            held = {"batch_id": batch_id, "n_records": int(n_records), "readable": got,
                    "age_s": round(age_s, 1)}
            if age_s < grace_s:
                return ready, held
            log_event(log, "upsert_batch_short", logging.ERROR, **held)
        ready.append(batch_id)
    return ready, None


def _written_before(store: Store, source: str, batch_id: str, obs: pd.DataFrame) -> bool:
    """Whether an earlier run stored measurements of ``batch_id`` (read within the batch's time range)."""
    ts = pd.to_datetime(obs["ts"], utc=True)
    return bool(store.scalar(
        """
        select count() from (
            select 1 from {db:Identifier}.measurements
            where source = {source:String} and batch_id = {batch:String}
              and ts >= {lo:DateTime64(3, 'UTC')} and ts <= {hi:DateTime64(3, 'UTC')}
            limit 1)
        """,
        {"source": source, "batch": batch_id, "lo": ts.min().to_pydatetime(), "hi": ts.max().to_pydatetime()},
    ))


def _latest_frame(state: dict[str, tuple[int, float]], ukeys: pd.Series) -> pd.DataFrame:
    """The in-memory latest versions of ``ukeys`` as compute_versions expects them."""
    hits = [(u, *state[u]) for u in pd.unique(ukeys) if u in state]
    if not hits:
        return pd.DataFrame({"ukey": pd.Series(dtype=object), "version": pd.Series(dtype="uint64"),
                             "value": pd.Series(dtype="float64")})
    return pd.DataFrame(hits, columns=["ukey", "version", "value"])
