"""Interval-method bench: capture the inputs of the interval step once, then replay methods over them in seconds.

``python -m bench.intervals capture --years 2019 2020 …`` runs the production-mirroring backtest
(``shared.forecasting.evaluate``) once and saves, per test year, what
:func:`shared.forecasting.evaluate.adaptive_intervals` receives (the issued forecasts with each origin's fallback
calibration, the seed forecasts, the gated actual grid) plus the loop's retrain records, into
``var/cache/intervals/`` (gitignored). ``python -m bench.intervals replay`` scores interval methods over the
captured inputs (coverage per quarter × D+k, in band 75–85 %).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "var" / "cache" / "intervals"
SOURCES = ["shared/forecasting/model.py", "shared/forecasting/service.py", "shared/forecasting/baseline.py",
           "shared/forecasting/gate.py", "shared/features.py", "shared/forecasting/evaluate.py",
           "shared/forecasting/combine.py"]


def capture(years: list[int]) -> None:
    """Run the multi-year evaluate once, saving the interval step's inputs per year."""
    from shared.forecasting import evaluate

    CACHE.mkdir(parents=True, exist_ok=True)
    meta = {"sources": {p: hashlib.sha256((REPO / p).read_bytes()).hexdigest() for p in SOURCES},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # keep the exact source texts the capture ran with (to key a forecast cache on them later)
    (CACHE / "sources").mkdir(exist_ok=True)
    for p in SOURCES:
        (CACHE / "sources" / p.replace("/", "__")).write_bytes((REPO / p).read_bytes())
    (CACHE / "meta.json").write_text(json.dumps(meta, indent=1))
    orig = evaluate.adaptive_intervals
    captured: list[dict[str, Any]] = []

    def hook(fc: pd.DataFrame, seeds: pd.DataFrame | None, actual: pd.DataFrame, level: float,
             window_days: int) -> pd.DataFrame:
        captured.append({"fc": fc, "seeds": seeds, "actual": actual, "level": level, "window_days": window_days})
        return orig(fc, seeds, actual, level, window_days)

    evaluate.adaptive_intervals = hook  # type: ignore[assignment]
    out = CACHE / "reports"
    for y in years:
        rc = evaluate._main(["--years", str(y), "--out", str(out), "--no-progress"])
        if rc:
            sys.exit(rc)
        rep = json.loads((out / f"forecast_eval_{y}.json").read_text())
        item = captured.pop()
        item.update({k: rep[k] for k in ("retrains", "train_seconds", "degraded")})
        with open(CACHE / f"{y}.pkl", "wb") as fh:
            pickle.dump(item, fh)
        print(f"captured {y}", flush=True)


def replay(years: list[int], out: Path | None) -> dict[int, dict[str, Any]]:
    """The production interval step (:func:`shared.forecasting.evaluate.adaptive_intervals`, as the code is now)
    over each captured year; prints coverage per quarter × D+k and the in-band count. With ``out``: writes the
    evaluate reports with the PowerSense coverage (and the quarter checks) recomputed from the replayed intervals
    — every other figure (MAPEs, naive, RTE, retrains) is the captured run's, and the report says so."""
    from shared.forecasting import evaluate

    reports: dict[int, dict[str, Any]] = {}
    for y in years:
        # a year captured by another process (e.g. in a clean worktree) has its own meta beside it
        own = CACHE / f"{y}.meta.json"
        meta = json.loads((own if own.exists() else CACHE / "meta.json").read_text())
        with open(CACHE / f"{y}.pkl", "rb") as fh:
            item = pickle.load(fh)
        rep = json.loads((CACHE / "reports" / f"forecast_eval_{y}.json").read_text())
        t0 = time.perf_counter()
        fc = evaluate.adaptive_intervals(item["fc"], item["seeds"], item["actual"], item["level"],
                                         item["window_days"])
        secs = time.perf_counter() - t0
        ts0, ts1 = (pd.Timestamp(x) for x in rep["test_period"])
        tz = rep["calendar"]["timezone"]
        rep["models"]["powersense"] = evaluate.score(fc, item["actual"], ts0, ts1, tz=tz)
        qs = evaluate.score_quarters({"powersense": fc}, item["actual"], ts0, ts1, tz)
        inband = 0
        for q, res in qs.items():
            rep["quarters"][q]["powersense"] = res["powersense"]
            for d, m in res["powersense"].items():
                nm = rep["quarters"][q]["seasonal_naive"].get(d, {}).get("mape")
                rep["quarters"][q]["checks"][d] = {
                    "beats_naive": None if m["mape"] is None or nm is None else bool(m["mape"] <= nm),
                    "coverage_in_band": None if m["coverage"] is None else bool(0.75 <= m["coverage"] <= 0.85)}
                inband += bool(rep["quarters"][q]["checks"][d]["coverage_in_band"])
            print(q, " ".join(f"{m['coverage']:.3f}" for m in res["powersense"].values()))
        print(f"{y}: coverage in band {inband}/28 (interval step {secs:.1f} s)", flush=True)
        rep["intervals_replay"] = {
            "what": "PowerSense intervals recomputed by bench/intervals.py replay with the current "
                    "shared/forecasting/{combine,evaluate}.py over the issued forecasts of the captured run; "
                    "everything else is that run's",
            "captured": meta["started"], "captured_sources_sha256": meta["sources"]}
        reports[y] = rep
        if out is not None:
            from shared.forecasting import baseline

            step = pd.Timedelta(minutes=rep["resolution_min"])
            origins = pd.DatetimeIndex(fc["origin"].unique())
            naive = baseline.seasonal_naive_many(item["actual"], origins, int(fc.groupby("origin").size().max()), step,
                                                 tz)
            evaluate.plot({**rep, "_frames": {"powersense": fc, "seasonal_naive": naive, "actual": item["actual"]}},
                          out / f"forecast_eval_{y}.png")
            evaluate._write_json(out / f"forecast_eval_{y}.json", rep)
    if out is not None and len(reports) > 1:
        evaluate._write_json(out / "forecast_eval_years.json", evaluate.summarize_years(reports))
    return reports


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--years", nargs="+", type=int, default=[2019, 2020, 2021, 2022, 2023])
    r = sub.add_parser("replay")
    r.add_argument("--years", nargs="+", type=int, default=[2019, 2020, 2021, 2022, 2023])
    r.add_argument("--out", type=Path, default=None, help="write the replayed reports here")
    a = ap.parse_args()
    if a.cmd == "capture":
        capture(a.years)
    else:
        replay(a.years, a.out)


if __name__ == "__main__":
    main()
