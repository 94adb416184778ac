"""Real-data fixtures for the ops tests (dashboards and dbt models run against chDB).

The measurements are the shipped eco2mix history, written the way upsert-version writes them
(shared.ingest.versioning: ukeys, version 1). The forecasts table is filled with RTE's own published
forecasts from the same files (prevision_j1 = a day-ahead forecast, prevision_j = an intraday one),
so accuracy figures computed in the tests are real ones: the accuracy of RTE's forecasts.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd

from shared.ingest.history import read_history
from shared.ingest.versioning import compute_versions, make_ukeys, wide_to_long
from shared.store import Store

DATA = Path(__file__).resolve().parent.parent / "data" / "eco2mix"
SOURCE = "eco2mix_national"
METRICS = ("consommation", "prevision_j1", "prevision_j")


def _files(start: str, end: str) -> list[Path]:
    """The yearly history files covering [start, end)."""
    last = (pd.Timestamp(end) - pd.Timedelta(seconds=1)).year
    return [DATA / f"eco2mix_national_{y}.csv.gz" for y in range(pd.Timestamp(start).year, last + 1)]


def load_measurements(store: Store, start: str, end: str) -> int:
    """Insert the shipped history between ``start`` and ``end`` (UTC) as version-1 measurements."""
    wide = read_history(_files(start, end), start=start, end=end)
    long = wide_to_long(wide, METRICS)
    long["ukey"] = make_ukeys(long["ts"], long["metric"], long["nature"], long["perimetre"])
    rows = compute_versions(long, pd.DataFrame(columns=["ukey", "version", "value"]))
    rows["source"] = SOURCE
    rows["batch_id"] = f"history-{start}"
    return store.insert_df("measurements", rows[["ts", "source", "metric", "nature", "value", "ukey", "version",
                                                  "batch_id"]])


def load_rte_forecasts(store: Store, start: str, end: str, interval_halfwidth: float = 0.03) -> int:
    """Store RTE's published forecasts as forecast runs, one run per Paris day and horizon.

    prevision_j1 (published the day before) → horizon_day 1; prevision_j (same day) → horizon_day 0.
    Only :00/:30 steps are kept (the series' 30-min resolution). RTE publishes no interval: the
    80 % bounds are ±``interval_halfwidth`` of the forecast, enough to exercise the interval SQL.
    """
    wide = read_history(_files(start, end), start=start, end=end)
    wide = wide[wide["ts"].dt.minute.isin([0, 30])]
    frames = []
    for metric, horizon_day in (("prevision_j1", 1), ("prevision_j", 0)):
        f = wide[["ts", metric]].dropna().rename(columns={metric: "yhat"})
        local_day = f["ts"].dt.tz_convert("Europe/Paris").dt.normalize()
        issue_day = local_day - pd.Timedelta(days=horizon_day)
        # issued at 06:00 Paris time of the issue day (RTE's J-1 forecast is published by then)
        f = f.assign(issued_at=(issue_day + pd.Timedelta(hours=6)).dt.tz_convert("UTC"), horizon_day=horizon_day)
        f["origin"] = f.groupby("issued_at")["ts"].transform("min")
        f["horizon_steps"] = ((f["ts"] - f["origin"]) / pd.Timedelta(minutes=30)).astype(int) + 1
        f["run_id"] = f"rte-{metric}-" + f["issued_at"].dt.strftime("%Y%m%dT%H%M")
        f["model_version"] = f"rte_{metric}"
        frames.append(f)
    fc = pd.concat(frames, ignore_index=True)
    fc["source"] = SOURCE
    fc["metric"] = "consommation"
    fc["lower"] = fc["yhat"] * (1 - interval_halfwidth)
    fc["upper"] = fc["yhat"] * (1 + interval_halfwidth)
    fc["interval_level"] = 0.8
    fc["quality"] = "model"
    fc["fallback_reason"] = ""
    cols = ["run_id", "model_version", "issued_at", "origin", "source", "metric", "ts", "horizon_steps",
            "horizon_day", "yhat", "lower", "upper", "interval_level", "quality", "fallback_reason"]
    return store.insert_df("forecasts", fc[cols])


def load_pipeline_runs(store: Store, start: datetime) -> int:
    """A day of stage runs (success, one failure, one skip) written through shared.runs.stage_run."""
    from shared.runs import stage_run

    written = 0
    for function, rows_out in (("poll", 96), ("upsert-version", 288), ("forecast", 672)):
        with stage_run(store, function, trigger="cron") as run:
            run.rows_in, run.rows_out = rows_out, rows_out
            run.details = {"window_start": start.isoformat()}
        written += 1
    try:
        with stage_run(store, "detect", trigger="cron"):
            raise RuntimeError("model artifact missing")
    except RuntimeError:
        written += 1
    with stage_run(store, "featurize", trigger="http") as run:
        run.skip("no new measurements")
    written += 1
    return written


def load_rejected_record(store: Store, rejected_at: datetime) -> int:
    """One dead-letter row: a real ODRÉ record whose local heure does not match its date_heure.

    The record comes from the shipped API response; only its ``heure`` is altered, and the reason is
    the one shared.ingest.parse gives.
    """
    from shared.ingest.parse import parse_records

    record = dict(json.loads((DATA / "odre_sample_response.json").read_text())["results"][0])
    record["heure"] = "03:15"
    rejection = parse_records([record]).rejections[0]
    row = pd.DataFrame([{"batch_id": "ops-fixture", "record_no": rejection.record_no, "stage": "poll",
                         "reason": rejection.reason, "payload": rejection.payload, "rejected_at": rejected_at}])
    return store.insert_df("rejected_records", row)
