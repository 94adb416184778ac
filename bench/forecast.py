"""Benchmark section ``forecast`` (``python -m bench forecast``).

Measured in a child interpreter (its own temporary chDB directory and artifact directory) through the
forecast stage's own code path (``shared.forecasting.service.run_forecast``), on the default
training window: the last ``forecast_train_days`` (4 years) of the shipped real data before
2024-01-01 00:20 UTC, loaded into measurements first (not timed).

* ``train_s`` — one training as the stage does it when due: fit on the window minus the holdout, learn the
  per-lead-day weights against seasonal naive, calibrate the intervals and score on the holdout
  (``train_and_calibrate``); ``holdout_naive_mape`` is seasonal naive on the same holdout.
* ``predict_s`` — one hourly forecast run without training, with an empty model cache: load the current
  model from the artifact store, read the series from chDB, predict 7 days, write the forecasts rows.
  ``predict_model_s`` is the model call alone (from a cached model).
* ``peak_rss_mb`` — peak resident memory of that process (ru_maxrss), chDB included; ``workers_peak_rss_mb`` the
  largest of its training worker processes (``POWERSENSE_FORECAST_TRAIN_PROCESSES``; the function's memory limit
  counts both, so the sum is what must stay under 3 GiB).
* ``import_s`` — import time of the forecast handler (the ML stack loads lazily, on first run).
* ``weather`` — the weather model's cost in its own fresh process (``python -m shared evaluate --weather
  --weather-resources``): one ``train_and_calibrate`` of the weather model on the 3 years before 2023 (shipped Enedis
  temperature, its holdout on simulated forecasts), the model through its artifact files, one origin issued with the
  weather known at it; ``train_s``, ``predict_s``, ``peak_rss_mb``. Not through ``run_forecast``: the shipped
  temperature is a realised series, so the store would need a weather-forecast history to run the stage's weather
  path end to end (the tests run that path on the replay, not timed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time
from datetime import UTC, datetime
import pandas as pd
sys.path.insert(0, os.environ["BENCH_REPO"])
sys.path.insert(0, os.path.join(os.environ["BENCH_REPO"], "tests"))
from shared.process_limits import peak_rss_bytes
from shared.settings import get_settings
from shared.store import get_store
from shared.artifacts import get_artifact_store
from fixtures_forecast import history, insert_measurements
settings = get_settings()
store = get_store(settings)
now = datetime(2024, 1, 1, 0, 20, tzinfo=UTC)
start = pd.Timestamp(now) - pd.Timedelta(days=settings.forecast_train_days)
rows = history(start.strftime("%Y-%m-%d %H:%M"), "2023-12-31 23:59:59")  # the shipped data ends there
insert_measurements(store, rows)
from shared.forecasting import service
from shared.forecasting import model as fm
artifacts = get_artifact_store(settings)
t = time.perf_counter()
res = service.run_forecast(store, settings, lambda: artifacts, now, "bench-train")
train_run_s = time.perf_counter() - t
assert res.quality == "model", res
service._cache.clear()
t = time.perf_counter()
res2 = service.run_forecast(store, settings, lambda: artifacts, now, "bench-predict")
predict_s = time.perf_counter() - t
assert res2.quality == "model" and res2.trained == {"trained": False}, res2
grid = service.load_grid(store, settings, pd.Timestamp(now) - pd.Timedelta(days=30), pd.Timestamp(now))
model = service.cached_model(artifacts, service.series_key(settings), res2.model_version)
t = time.perf_counter()
service.predict_current(model, grid, pd.Timestamp(now), settings)
predict_model_s = time.perf_counter() - t
# and the largest of the training's worker processes (POWERSENSE_FORECAST_TRAIN_PROCESSES), reaped after the fit
own_rss, workers_rss = peak_rss_bytes()
print("BENCH" + json.dumps({
    "train_s": res.trained["train_s"],
    "train_run_s": round(train_run_s, 2),
    "predict_s": round(predict_s, 2),
    "predict_model_s": round(predict_model_s, 2),
    "peak_rss_mb": round(own_rss / 2**20, 1),
    "workers_peak_rss_mb": round(workers_rss / 2**20, 1),
    "training_points": int(res.details["points"]),
    "holdout_mape": res.trained["holdout_mape"],
    "holdout_naive_mape": res.trained["naive_holdout_mape"],
    "rows_written": res2.rows,
}))
"""

IMPORT = r"""
import sys, time, importlib.util, os
t = time.perf_counter()
path = os.path.join(os.environ["BENCH_REPO"], "functions/forecast/handler.py")
spec = importlib.util.spec_from_file_location("h", path)
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
print("BENCH%.3f %s" % (time.perf_counter() - t, "torch" in sys.modules))
"""


def _run(args: list[str], env: dict[str, str]) -> str:
    """A child interpreter's stdout (``python`` + ``args``, in the repository); its stderr tail on failure."""
    out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=1200, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"forecast bench child ({' '.join(args)[:80]}) failed:\n{out.stderr[-4000:]}")
    return out.stdout


def _child(code: str, env: dict[str, str]) -> str:
    line = next(x for x in _run(["-c", code], env).splitlines() if x.startswith("BENCH"))
    return line[len("BENCH"):]


def _weather(env: dict[str, str], tmp: str) -> dict[str, Any]:
    """The weather model's training, prediction and peak RSS (``evaluate --weather --weather-resources``)."""
    _run(["-m", "shared", "evaluate", "--weather", "--weather-resources", "--years", "2023", "--out", tmp,
          "--no-progress"], env)
    res = json.loads((Path(tmp) / "forecast_eval_weather_2023.json").read_text())["forecast_process"]
    return {"train_s": res["train_seconds"], "train_cpu_s": res["train_cpu_seconds"],
            "predict_s": res["predict_seconds"], "peak_rss_mb": round(res["peak_rss_gib"] * 1024, 1),
            "workers_peak_rss_mb": round(res["workers_peak_rss_gib"] * 1024, 1),
            "train_processes": res["train_processes"],
            "train_window": res["train_window"]}


def run() -> dict[str, Any]:
    """Run the section in child interpreters and return its figures."""
    load_start = os.getloadavg()[0]  # the machine is shared: record how busy it was
    with tempfile.TemporaryDirectory(prefix="powersense-bench-fc-") as tmp:
        env = {**os.environ, "BENCH_REPO": str(REPO), "POWERSENSE_CHDB_PATH": f"{tmp}/chdb",
               "POWERSENSE_ARTIFACTS_DIR": f"{tmp}/artifacts", "POWERSENSE_CLICKHOUSE_DATABASE": "bench_forecast",
               "POWERSENSE_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
        env.pop("POWERSENSE_CLICKHOUSE_URL", None)
        env.pop("POWERSENSE_S3_ENDPOINT_URL", None)
        result: dict[str, Any] = json.loads(_child(CHILD, env))
        result["weather"] = _weather(env, tmp)
        imp, torch_loaded = _child(IMPORT, env).split()
        result["import_s"] = float(imp)
        result["import_loads_torch"] = torch_loaded == "True"
    result["targets"] = {"train_s": 120, "predict_s": 5, "peak_rss_mb": 3072}
    result["load_avg_1m_start"] = round(load_start, 2)
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return result
