"""Benchmark section ``query``: the query function under load, through the embedded gateway.

A server subprocess loads the shipped 2022–2023 eco2mix history into a temporary chDB, stores a
week of hourly seasonal-naive forecast runs computed from that data, times the bare ClickHouse query
behind each benchmarked endpoint (same SQL through the Store, many iterations), then serves the
gateway (``local_dev.gateway``) with uvicorn (one worker) on 127.0.0.1. ``wrk`` drives it with 20
connections for 30 s per endpoint:

* ``measurements_7d_30min``: ``GET /function/query/measurements?metric=consommation&interval=30min``
  (the latest 7 days of consumption at 30 min, 336 points)
* ``forecast_latest``: ``GET /function/query/forecasts`` (the latest run, 336 steps with intervals)

A second, shorter pass runs with the response cache disabled (``POWERSENSE_QUERY_CACHE_ENTRIES=0``)
so the cost of a cache miss is on record too. Needs ``wrk`` (Debian: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CONNECTIONS = 20
DURATION_S = 30
UNCACHED_DURATION_S = 10
BARE_ITERATIONS = 300
ENDPOINTS = {
    "measurements_7d_30min": "/function/query/measurements?metric=consommation&interval=30min",
    "forecast_latest": "/function/query/forecasts",
}
TARGETS = {"p99_ms_max": 50.0, "errors": 0, "overhead_ratio_p50_max": 3.0}

LUA = """
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"max_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}\\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# --- server subprocess -------------------------------------------------------------------------------
def _p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def _serve(workdir: Path, port: int) -> None:
    """Load real data, time the bare queries, then serve the gateway until killed."""
    sys.path.insert(0, str(REPO))
    import uvicorn

    from shared.query import service
    from shared.query.models import ForecastParams, MeasurementsParams
    from shared.store import get_store
    from tests.fixtures_query import load_history, seasonal_naive_run

    store = get_store()
    t0 = time.perf_counter()
    history = load_history(store, "2022-01-01", "2024-01-01", years=[2022, 2023])
    last = history["ts"].max()
    runs = [seasonal_naive_run(history, (last - __import__("pandas").Timedelta(hours=h)).to_pydatetime())
            for h in range(0, 7 * 24)]
    for run in runs:
        store.insert_df("forecasts", run)
    rows = int(store.scalar("select count() from {db:Identifier}.measurements"))
    load_s = time.perf_counter() - t0

    known = service.known_series(store)
    m_sql, m_params, _, _ = service.resolve_measurements(store, MeasurementsParams(metric="consommation",
                                                                                   interval="30min"), known)
    f_params = ForecastParams()
    bare: dict[str, Any] = {}
    for name, sql, params in (
        ("measurements_7d_30min", m_sql, m_params),
        ("forecast_latest", service.FORECAST_RUN_SQL,
         {"source": f_params.source, "metric": f_params.metric, "run_id": ""}),
    ):
        store.query_rows(sql, params)  # warm
        samples = []
        for _ in range(BARE_ITERATIONS):
            t = time.perf_counter()
            out = store.query_rows(sql, params)
            samples.append(time.perf_counter() - t)
        bare[name] = {"bare_query_p50_ms": _p50_ms(samples), "bare_rows": len(out)}
    info = {"bare": bare, "measurement_rows": rows, "forecast_runs": len(runs),
            "forecast_rows": sum(len(r) for r in runs), "load_s": round(load_s, 2)}
    (workdir / "server.json").write_text(json.dumps(info))

    from local_dev.gateway import create_gateway_app

    app = create_gateway_app(functions=["query"], with_replay=False)
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


# --- driver ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(workdir: Path, token: str, cache: bool) -> tuple[subprocess.Popen[bytes], int, dict[str, Any]]:
    port = _free_port()
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "POWERSENSE_CHDB_PATH": str(workdir / "chdb"),
        "POWERSENSE_CLICKHOUSE_DATABASE": "electricity",
        "POWERSENSE_SECRETS_DIR": str(secrets_dir),
        "POWERSENSE_ARTIFACTS_DIR": str(workdir / "artifacts"),
        "POWERSENSE_QUERY_TOKEN": token,
        "POWERSENSE_QUERY_CACHE_ENTRIES": "512" if cache else "0",
        "POWERSENSE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
    }
    env.pop("POWERSENSE_CLICKHOUSE_URL", None)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "bench.query", "serve", str(workdir), str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"query bench server exited: {(workdir / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/function/query/health", timeout=2).status_code == 200:
                return proc, port, json.loads((workdir / "server.json").read_text())
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("query bench server did not start within 300 s")


def _wrk(url: str, lua: Path, duration_s: int, connections: int = CONNECTIONS) -> dict[str, Any]:
    threads = min(2, os.cpu_count() or 1, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "5s", "-s", str(lua), url],
        capture_output=True, text=True, timeout=duration_s + 60, check=True,
    ).stdout
    raw = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON "))[9:])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "requests": raw["requests"],
        "errors": errors,
        "errors_by_kind": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
    }


def _check(port: int, path: str, token: str) -> int:
    """One request before the load: must be a 200; returns the body size."""
    r = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:300]}")
    return len(r.content)


def _handler_import_s() -> float:
    code = ("import time; t = time.perf_counter(); from local_dev.functions import load_handler; "
            "load_handler('query'); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return round(float(out.stdout.strip().splitlines()[-1]), 3)


def run() -> dict[str, Any]:
    """Run the section and return its figures (merged into bench/results.json by ``python -m bench``)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    token = secrets.token_urlsafe(24)
    section: dict[str, Any] = {
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "setup": (f"embedded chDB, gateway (local_dev.gateway) + query app under uvicorn, 1 worker, loopback; "
                  f"wrk {CONNECTIONS} connections x {DURATION_S} s per endpoint; bare query = same SQL via Store, "
                  f"{BARE_ITERATIONS} iterations, p50"),
        "targets": TARGETS,
        "handler_import_s": _handler_import_s(),
    }
    with tempfile.TemporaryDirectory(prefix="powersense-bench-query-") as tmp:
        workdir = Path(tmp)
        lua = workdir / "auth.lua"
        lua.write_text(LUA % token)
        lua.chmod(0o600)
        for cache in (True, False):
            sub = workdir / ("cached" if cache else "uncached")
            sub.mkdir()
            proc, port, info = _start_server(sub, token, cache)
            try:
                section.setdefault("data", {k: v for k, v in info.items() if k != "bare"})
                for name, path in ENDPOINTS.items():
                    size = _check(port, path, token)
                    url = f"http://127.0.0.1:{port}{path}"
                    bare = info["bare"][name]
                    if cache:
                        _wrk(url, lua, 3)  # warm-up
                        figures = _wrk(url, lua, DURATION_S)
                        figures.update(bare, response_bytes=size, path=path,
                                       overhead_ratio_p50=round(figures["p50_ms"] / bare["bare_query_p50_ms"], 2))
                        section[name] = figures
                        continue
                    # Response cache off: every request runs its query; 1 client = the cost of one miss,
                    # 20 clients = queueing on the chDB lock (identical misses still coalesce).
                    uncached: dict[str, Any] = {"bare_query_p50_ms": bare["bare_query_p50_ms"]}
                    for conns in (1, CONNECTIONS):
                        figures = _wrk(url, lua, UNCACHED_DURATION_S, conns)
                        figures["overhead_ratio_p50"] = round(figures["p50_ms"] / bare["bare_query_p50_ms"], 2)
                        uncached[f"c{conns}"] = figures
                    section.setdefault("cache_disabled", {})[name] = uncached
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    section["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    section["targets_met"] = all(
        section[n]["p99_ms"] <= TARGETS["p99_ms_max"] and section[n]["errors"] == 0
        and section[n]["overhead_ratio_p50"] <= TARGETS["overhead_ratio_p50_max"]
        for n in ENDPOINTS
    )
    return section


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        _serve(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        print(json.dumps(run(), indent=2))
