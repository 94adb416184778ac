"""Benchmark section ``ingest`` (``python -m bench ingest``).

Measured in a child interpreter with its own temporary chDB directory (chDB allows one data
directory per process), on the full shipped history (data/eco2mix, 2000–2023):

* ``upsert_rows_per_s`` — the upsert path of bootstrap (``upsert_wide``: wide → long rows, ukeys,
  latest-version lookup, version assignment, chunked inserts with dedup tokens) over the whole
  history, one UTC year at a time, into an empty database; ``bare_insert_rows_per_s`` — a plain
  ``insert_df`` of the very rows it writes (same order, same per-year batches, built untimed; CSV
  reading excluded from both) into another empty database on the same engine;
  ``upsert_vs_insert_ratio`` = bare / upsert throughput (target ≤ 2.5); best of 3 interleaved
  rounds each.  ``upsert_noop_s``: the same upsert again on the populated store (nothing changes;
  the lookups of 2 M latest versions dominate).
* ``bootstrap_s`` — ``shared.ingest.bootstrap.bootstrap`` of the full history, CSV reading included.
* ``poll_cycle_s`` — one steady-state cron cycle (poll + upsert-version through their handlers,
  pipeline_runs bookkeeping included) for one new quarter-hour: the store holds the history up to
  2023-12-01, the replay (real HTTP, uvicorn on 127.0.0.1) serves the shipped data, and the
  simulated clock advances 15 minutes per cycle; median of 5 cycles (all in ``poll_cycles_s``).
* ``raw_records_mb_per_day`` — what a day of the production schedule (288 polls, one every 5 minutes, each with
  its upsert-version) adds to ``raw_records``, the landing table kept with no TTL as the audit copy: bytes of the
  table's merged parts on disk (LZ4, ClickHouse's default codec), and ``raw_records_uncompressed_mb_per_day``,
  ``raw_records_rows_per_day``. ``python -m bench.ingest --landing`` runs only this and ``poll_cycle_s``.
* ``import_s`` — import time of the poll and upsert-version handlers, each in a fresh interpreter
  (best of 5; ``import_s_median`` too), and whether torch/neuralprophet got imported (must not).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HANDLERS = ("poll", "upsert-version")
HEAVY = ("torch", "neuralprophet")
POLL_FROM = datetime(2023, 12, 1, tzinfo=UTC)
IMPORT_RUNS = 5
THROUGHPUT_ROUNDS = 3

_IMPORT_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from local_dev.functions import load_handler
load_handler(sys.argv[1])
print(json.dumps({"s": time.perf_counter() - t0, "heavy": [m for m in %r if m in sys.modules]}))
"""


def _env(tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERSENSE_")}
    env.update(
        POWERSENSE_CHDB_PATH=str(Path(tmp) / "chdb"),
        POWERSENSE_ARTIFACTS_DIR=str(Path(tmp) / "artifacts"),
        POWERSENSE_SECRETS_DIR=str(Path(tmp) / "secrets"),
        POWERSENSE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def run() -> dict[str, Any]:
    """Run the section; returns the figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="powersense-bench-ingest-") as tmp:
        env = _env(tmp)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.ingest", "--child"], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"bench ingest child failed:\n{proc.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        imports: dict[str, float] = {}
        imports_median: dict[str, float] = {}
        heavy: dict[str, list[str]] = {}
        for name in HANDLERS:
            samples = []
            for _ in range(IMPORT_RUNS):
                probe = subprocess.run(
                    [sys.executable, "-c", _IMPORT_PROBE % (HEAVY,), name], cwd=REPO, env=env, capture_output=True,
                    text=True, timeout=120, check=True,
                )
                out = json.loads(probe.stdout.strip().splitlines()[-1])
                samples.append(out["s"])
                heavy[name] = out["heavy"]
            # Best of N: on a shared machine the slower samples measure other processes (as timeit advises).
            imports[name] = round(min(samples), 3)
            imports_median[name] = round(statistics.median(samples), 3)
        result["import_s"] = imports
        result["import_s_median"] = imports_median
        result["import_heavy_modules"] = heavy
    result["targets"] = {"upsert_vs_insert_ratio_max": 2.5, "poll_cycle_s_max": 1.0, "import_s_max": 1.5}
    result["targets_met"] = bool(
        result["upsert_vs_insert_ratio"] <= 2.5 and result["poll_cycle_s"] < 1.0
        and all(v < 1.5 for v in imports.values()) and not any(heavy.values())
    )
    return result


# --- child: everything that touches chDB ---------------------------------------------------------


def _store_for(database: str) -> Any:
    from shared.settings import get_settings
    from shared.store import Store

    settings = get_settings().model_copy(update={"clickhouse_database": database})
    store = Store(settings)
    store.apply_schema()
    return store, settings


@contextmanager
def _no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _throughput() -> dict[str, Any]:
    import pandas as pd

    from shared.ingest.history import LOAD_COLUMNS, read_history
    from shared.ingest.versioning import (
        MEASUREMENT_COLUMNS,
        compute_versions,
        make_ukeys,
        upsert_wide,
        wide_to_long,
    )

    _, settings = _store_for("bench_scratch")
    history = read_history(settings.history_files)
    # The product's bulk path (bootstrap) upserts one UTC year at a time; so does this measurement.
    years = [g for _, g in history.groupby(history["ts"].dt.year, sort=True)]
    chunk = settings.upsert_chunk_rows
    source = settings.series_source

    def upsert(store: Any) -> int:
        return sum(upsert_wide(store, y, LOAD_COLUMNS, source=source, batch_id="bench", chunk_rows=chunk)[1]
                   for y in years)

    # The very rows upsert writes, in the same order and per-year batches (built untimed by the same
    # pure functions), for the bare insert into an empty database of the same engine.
    bare_batches = []
    for y in years:
        long = wide_to_long(y, LOAD_COLUMNS)
        long = long[long["value"].notna()]
        long["ukey"] = make_ukeys(long["ts"], long["metric"], long["nature"], long["perimetre"])
        rows = compute_versions(long, long.iloc[0:0][["ukey", "value"]].assign(version=pd.Series(dtype="uint64")))
        rows["ts"] = rows["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
        bare_batches.append(rows.assign(source=source, batch_id="bench")[MEASUREMENT_COLUMNS])
    bare_rows = sum(len(f) for f in bare_batches)

    def bare(store: Any) -> None:
        for frame in bare_batches:
            for start in range(0, len(frame), chunk):
                store.insert_df("measurements", frame.iloc[start:start + chunk])

    # Interleaved rounds on fresh databases; best of each (the machine is shared: slower samples
    # measure other processes).
    # Timed with the garbage collector off, as timeit does: the prebuilt bare rows keep millions of
    # objects alive, and collections walking them would be charged to whichever section runs.
    upsert_samples, bare_samples, noop_s, n, again = [], [], 0.0, 0, -1
    for k in range(THROUGHPUT_ROUNDS):
        store, _ = _store_for(f"bench_upsert_{k}")
        with _no_gc():
            t0 = time.perf_counter()
            n = upsert(store)
            upsert_samples.append(round(time.perf_counter() - t0, 3))
        if k == 0:
            with _no_gc():
                t0 = time.perf_counter()
                again = upsert(store)
                noop_s = time.perf_counter() - t0
        bare_store, _ = _store_for(f"bench_insert_{k}")
        with _no_gc():
            t0 = time.perf_counter()
            bare(bare_store)
            bare_samples.append(round(time.perf_counter() - t0, 3))
        for db in (store, bare_store):
            db.command("drop database if exists {db:Identifier}")
    upsert_s, bare_s = min(upsert_samples), min(bare_samples)
    return {
        "history_records": len(history),
        "measurement_rows": n,
        "bare_insert_rows": bare_rows,
        "noop_rerun_new_rows": again,
        "upsert_s": upsert_s,
        "upsert_s_samples": upsert_samples,
        "upsert_noop_s": round(noop_s, 3),
        "bare_insert_s": bare_s,
        "bare_insert_s_samples": bare_samples,
        "upsert_rows_per_s": round(n / upsert_s),
        "bare_insert_rows_per_s": round(bare_rows / bare_s),
        "upsert_vs_insert_ratio": round(upsert_s / bare_s, 3),
    }


def _bootstrap() -> dict[str, Any]:
    from shared.ingest.bootstrap import bootstrap

    store, settings = _store_for("bench_bootstrap")
    t0 = time.perf_counter()
    result = bootstrap(store, settings, progress=False)
    return {"bootstrap_s": round(time.perf_counter() - t0, 3), "bootstrap_rows": result["rows_out"]}


def _poll_cycle(landing_day: bool = True) -> dict[str, Any]:
    import threading

    import uvicorn
    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler
    from local_dev.replay import create_replay_app
    from shared import clock
    from shared.app import settings_dep, store_dep
    from shared.ingest.bootstrap import bootstrap

    store, settings = _store_for("bench_poll")
    bootstrap(store, settings, until=POLL_FROM.isoformat(), progress=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_replay_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    cfg = settings.model_copy(update={"source_url": f"http://127.0.0.1:{port}/api/explore/v2.1"})
    apps = [load_handler(name).app for name in HANDLERS]
    clients = []
    for app in apps:
        app.dependency_overrides[settings_dep] = lambda: cfg
        app.dependency_overrides[store_dep] = lambda: store
        clients.append(TestClient(app))
    cron = {"X-Connector": "cron-connector"}

    def cycle() -> list[dict[str, Any]]:
        return [c.post("/", headers=cron).raise_for_status().json() for c in clients]

    clock.install(clock.SimulatedClock(POLL_FROM, speed=0.0))
    cycle()  # catch up from the end of the bootstrapped history (not timed)
    times, new_rows = [], []
    for k in range(1, 6):
        clock.install(clock.SimulatedClock(POLL_FROM + timedelta(minutes=15 * k), speed=0.0))
        t0 = time.perf_counter()
        poll, upsert = cycle()
        times.append(round(time.perf_counter() - t0, 4))
        new_rows.append(upsert["rows_out"])
    result: dict[str, Any] = {"poll_cycle_s": statistics.median(times), "poll_cycles_s": times,
                              "poll_cycle_new_rows": new_rows, "poll_cycle_records_per_poll": poll["rows_in"]}
    if landing_day:
        result.update(_landing_day(store, cycle, POLL_FROM + timedelta(minutes=75)))
    server.should_exit = True
    return result


def _landing_bytes(store: Any) -> tuple[int, int, int]:
    """Rows, compressed and uncompressed bytes of raw_records' active parts, merged first (as a server does)."""
    store.command("optimize table {db:Identifier}.raw_records final")
    rows, compressed, uncompressed = store.query_rows(
        "select sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) from system.parts "
        "where database = {db:String} and table = 'raw_records' and active")[0]
    return int(rows), int(compressed), int(uncompressed)


def _landing_day(store: Any, cycle: Any, start: datetime) -> dict[str, Any]:
    """What one day of the production schedule (poll every 5 minutes) adds to raw_records, the audit copy that has
    no TTL: 288 cycles on the simulated clock, the table merged before and after."""
    from shared import clock

    before = _landing_bytes(store)
    for k in range(1, 289):
        clock.install(clock.SimulatedClock(start + timedelta(minutes=5 * k), speed=0.0))
        cycle()
    after = _landing_bytes(store)
    rows, compressed, uncompressed = (a - b for a, b in zip(after, before, strict=True))
    return {"raw_records_rows_per_day": rows, "raw_records_mb_per_day": round(compressed / 1e6, 2),
            "raw_records_uncompressed_mb_per_day": round(uncompressed / 1e6, 2)}


def _child() -> int:
    if "--landing" in sys.argv:
        print(json.dumps(_poll_cycle()))
        return 0
    result: dict[str, Any] = {"load_avg_1m_start": round(os.getloadavg()[0], 2)}
    result.update(_throughput())
    result.update(_bootstrap())
    result.update(_poll_cycle())
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(_child())
    if "--landing" in sys.argv:  # only the poll cycle and the landing day, in a child with its own chDB directory
        with tempfile.TemporaryDirectory(prefix="powersense-bench-landing-") as tmp:
            proc = subprocess.run([sys.executable, "-m", "bench.ingest", "--child", "--landing"], cwd=REPO,
                                  env=_env(tmp), capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            sys.exit(f"bench ingest --landing failed:\n{proc.stderr[-4000:]}")
        print(proc.stdout.strip().splitlines()[-1])
        sys.exit(0)
    print(json.dumps(run(), indent=2))
