"""Load the shipped eco2mix history into an empty store, through the upsert-version code path.

The history files are read one at a time (progress bar: tqdm) and upserted with
:func:`~shared.ingest.versioning.upsert_wide`: reshaped to one row per (instant, metric), versioned
by the same pure :func:`~shared.ingest.versioning.compute_versions` as polled pages, and inserted
in large chunks with content-derived dedup tokens.  So a bootstrap is exactly an upsert of the history: a value
already present is not written again, and a bootstrap that crashed half-way resumes where it
stopped.  It is marked done by a ``batch_versions`` row with batch id ``bootstrap``.

Owner: the writer of ``measurements``.  upsert-version runs it (under the measurements-writer lease it
already holds) when the store has neither the history nor polled measurements; poll waits (skips) until
then, so no two stages write ``measurements`` and poll never needs the lease.  One-shot alternatives:
the CLI below, and ``make demo`` before it serves the functions.

CLI: ``python -m shared bootstrap [--until ISO] [--no-progress] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from shared.errors import BadRequestError, ConfigurationError
from shared.ingest.history import FRANCE_FORMATS, LOAD_COLUMNS, history_format, read_history
from shared.ingest.versioning import (
    BOOTSTRAP_BATCH,
    bootstrap_done,
    has_polled_measurements,
    mark_batch_done,
    upsert_wide,
)
from shared.lease import MEASUREMENTS_WRITER, Lease
from shared.logs import log_event
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import iso_instant

log = logging.getLogger(__name__)

# How long the one-shot bootstrap waits for the measurements-writer lease: an upsert-version invocation
# holds it for one run (and runs the pending bootstrap itself), so a short wait is enough.
LEASE_WAIT_S = 15.0


def bootstrap(
    store: Store,
    settings: Settings,
    until: datetime | str | pd.Timestamp | None = None,
    progress: bool = True,
    *,
    force: bool = False,
    run_id: str = "",
) -> dict[str, Any]:
    """Load ``settings.history_files`` (rows strictly before ``until`` or ``settings.history_until``).

    Runs only when not yet done and the store holds no polled measurements (``force`` re-runs it;
    being an upsert, a re-run writes only what is missing).  Holds the measurements-writer lease
    (:mod:`shared.lease`, renewed between files); skips when another writer keeps it longer than
    ``LEASE_WAIT_S``.  Returns a summary: status (``done`` | ``skipped``), files, records, rows_out, seconds.
    The one-shot entry point (``python -m shared bootstrap``, ``make demo``); upsert-version, which
    already holds the lease, calls :func:`load_history` instead.
    """
    if not settings.history_files:
        return {"status": "skipped", "reason": "no history files configured"}
    # Fast path without the lease: an upsert may hold it.
    if not force and (reason := _already_loaded(store)):
        return {"status": "skipped", "reason": reason}
    lease = Lease(store, MEASUREMENTS_WRITER, ttl_s=settings.upsert_lease_ttl_s)
    if not lease.acquire(wait_s=LEASE_WAIT_S):
        return {"status": "skipped", "reason": f"another writer holds the {lease.describe_other()}"}
    with lease:
        return load_history(store, settings, lease, until, progress, force=force, run_id=run_id)


def _already_loaded(store: Store) -> str | None:
    """Why the bootstrap has nothing to do (None when it has)."""
    if bootstrap_done(store):
        return "history already loaded"
    if has_polled_measurements(store):
        return "store already holds polled measurements"
    return None


def check_history_files(files: list[Path]) -> None:
    """Refuse history files the store's series cannot hold, before anything is written.

    The store's load series is France's national load, polled from ODRÉ (``source_perimeter``); a bootstrap
    writes its files under the same source and metrics, so another operator's file (NESO, ENTSO-E) or a generic
    ``timestamp,value`` CSV would silently become France's history. Such files are evaluated with
    ``python -m shared evaluate --data``, never loaded. A missing or unreadable file is named too.
    """
    for path in files:
        if not path.is_file():
            raise ConfigurationError(f"POWERSENSE_HISTORY_FILES: {path} does not exist")
        try:
            fmt = history_format(path)
        except BadRequestError as exc:
            raise ConfigurationError(f"POWERSENSE_HISTORY_FILES: {exc}") from exc
        if fmt not in FRANCE_FORMATS:
            raise ConfigurationError(
                f"POWERSENSE_HISTORY_FILES: {path.name} is a {fmt} file, not France's national load: the bootstrap "
                "loads only eco2mix, ODRÉ or RTE files (the series the poller polls); evaluate another series with "
                "`python -m shared evaluate --data FILE`")


def check_bootstrap_settings(settings: Settings) -> None:
    """upsert-version's start-up check: the history files it would bootstrap from exist and hold France's national
    load (:func:`check_history_files`), so a wrong ``POWERSENSE_HISTORY_FILES`` stops the function when it is
    deployed instead of failing its first run. Nothing to check when the bootstrap is off or has no files."""
    if settings.poll_bootstrap and settings.history_files:
        check_history_files([Path(f) for f in settings.history_files])


def load_history(
    store: Store,
    settings: Settings,
    lease: Lease,
    until: datetime | str | pd.Timestamp | None = None,
    progress: bool = False,
    *,
    force: bool = False,
    run_id: str = "",
) -> dict[str, Any]:
    """The bootstrap itself, run by a writer that holds the measurements-writer ``lease`` (renewed
    between files): :func:`bootstrap`, or upsert-version when the bootstrap is pending. Files that are not
    France's national load are refused first (:func:`check_history_files`), with nothing written."""
    t0 = time.perf_counter()
    files = [Path(f) for f in settings.history_files]
    until = until if until is not None else settings.history_until
    if not files:
        return {"status": "skipped", "reason": "no history files configured"}
    if not force and (reason := _already_loaded(store)):
        return {"status": "skipped", "reason": reason}
    check_history_files(files)
    resume = bool(store.scalar("select count() from (select 1 from {db:Identifier}.measurements limit 1)"))
    records = rows_out = 0
    bar = tqdm(files, desc="bootstrap", unit="file", disable=not progress, file=sys.stderr)
    for path in bar:
        lease.keep_alive()  # renews between files; stops if the lease was lost
        # One file (one UTC year) at a time: bounded memory, and a natural progress unit.
        frame = read_history([path], end=until)
        _, written = upsert_wide(store, frame, LOAD_COLUMNS, source=settings.series_source,
                                 batch_id=BOOTSTRAP_BATCH, chunk_rows=settings.upsert_chunk_rows, rejudge=resume)
        records += len(frame)
        rows_out += written
        bar.set_postfix(rows=rows_out)
        log_event(log, "bootstrap_file", file=path.name, records=len(frame), rows_out=written)
        if rejected := frame.attrs["rejections"]:
            # records of an ODRÉ export / RTE download the poller's validation refused: loaded nowhere, said here
            log_event(log, "history_records_rejected", logging.WARNING, file=path.name, rejected=rejected)
    mark_batch_done(store, BOOTSTRAP_BATCH, records, rows_out, run_id)
    summary: dict[str, Any] = {
        "status": "done", "files": len(files), "records": records, "rows_out": rows_out, "resumed": resume,
        "until": str(until) if until is not None else None, "seconds": round(time.perf_counter() - t0, 3),
    }
    log_event(log, "bootstrap_done", **summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m shared bootstrap``: load the history into the configured store."""
    parser = argparse.ArgumentParser(prog="python -m shared bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument("--until", type=iso_instant, help="load rows strictly before this ISO timestamp "
                        "(default: POWERSENSE_HISTORY_UNTIL)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true", help="run even if already done (writes only what is missing)")
    args = parser.parse_args(argv)
    from shared.logs import configure_logging
    from shared.settings import get_settings
    from shared.store import get_store

    settings = get_settings()
    configure_logging(settings.log_level)
    result = bootstrap(get_store(settings), settings, until=args.until, progress=not args.no_progress, force=args.force)
    print(json.dumps(result, default=str))
    return 0
