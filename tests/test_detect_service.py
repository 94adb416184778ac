"""detect stage on real eco2mix data in chDB: each anomaly kind, a clean DST + holiday week, idempotency,
resolution after a revision, forecast-based expectation, drift, data quality, the HTTP handler."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixtures_detect import (
    frozen_clock,
    query_client,
    real_load,
    upsert_load,
    utc,
    write_forecasts,
    write_measurements,
)

from shared.detection.service import FORECAST_MAX_LEAD_HOURS, load_forecasts, run_detect
from shared.forecasting.service import forecast_rows
from shared.runs import stage_run
from shared.settings import Settings
from shared.store import Store

HISTORY = ("2022-08-10", "2022-11-18")
T0 = utc("2022-11-16 10:00")  # a Wednesday morning, clean in the real data
WINDOW = (utc("2022-11-15"), utc("2022-11-17"))
NOW = WINDOW[1] + pd.Timedelta(minutes=4)


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    """Real 2022 consumption (real-time nature), late summer to mid-November."""
    return real_load(*HISTORY)


def inject(df: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """A copy of ``df`` with one anomaly of ``kind`` starting at T0; returns (frame, first, last) ts."""
    out = df.copy()
    steps = {"spike": 1, "dip": 2, "level_shift": 32, "flatline": 8, "missing": 12}[kind]
    last = T0 + pd.Timedelta(minutes=15 * (steps - 1))
    span = (out["ts"] >= T0) & (out["ts"] <= last)
    if kind == "spike":
        out.loc[span, "value"] *= 1.06
    elif kind == "dip":
        out.loc[span, "value"] *= 0.94
    elif kind == "level_shift":
        out.loc[span, "value"] *= 1.05
    elif kind == "flatline":
        out.loc[span, "value"] = float(out.loc[out["ts"] == T0 - pd.Timedelta(minutes=15), "value"].iloc[0])
    else:
        out = out[~span]
    return out, T0, last


def detect(store: Store, settings: Settings, now: pd.Timestamp = NOW, window: tuple[Any, Any] = WINDOW) -> dict:
    with frozen_clock(now), stage_run(store, "detect") as run:
        return run_detect(store, settings, run, start=window[0], end=window[1]).details


def anomalies(store: Store) -> pd.DataFrame:
    return store.query_df("select * from {db:Identifier}.anomalies final order by ts")


def test_a_detect_run_while_another_runs_is_skipped(store: Store, settings: Settings, history: pd.DataFrame,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # a manual run next to the cron one wrote a second set of drift outputs and retrain requests and counted each
    # new anomaly twice in powersense_anomalies_raised_total
    from shared.detection import service
    from shared.lease import Lease

    write_measurements(store, history)
    monkeypatch.setattr(service, "LEASE_WAIT_S", 0.0)
    other = Lease(store, service.DETECT_LEASE, ttl_s=60)
    assert other.acquire()
    try:
        with frozen_clock(NOW), stage_run(store, "detect") as run:
            run_detect(store, settings, run, start=WINDOW[0], end=WINDOW[1])
    finally:
        other.release()
    assert run.status == "skipped" and "another detect invocation is running" in run.details["skip_reason"]
    assert store.scalar("select count() from {db:Identifier}.data_quality") == 0
    detect(store, settings)  # the lease released: the next run works
    assert store.scalar("select count() from {db:Identifier}.data_quality") > 0


@pytest.mark.parametrize("kind", ["spike", "dip", "level_shift", "flatline", "missing"])
def test_each_kind_is_detected_on_real_data(store: Store, settings: Settings, history: pd.DataFrame, kind: str) -> None:
    data, first, last = inject(history, kind)
    write_measurements(store, data)
    detect(store, settings)
    found = anomalies(store)
    hit = found[(found["kind"] == kind) & (found["status"] == "open") & (found["ts"] >= first) & (found["ts"] <= last)]
    assert first in set(hit["ts"]), found[["ts", "kind", "status"]].to_string()


def test_clean_week_with_dst_change_and_public_holiday_raises_nothing(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    # 2022-10-30: fall-back DST day (its first 02:00 local hour is absent from RTE's data);
    # 2022-11-01: All Saints' Day, a public holiday.
    write_measurements(store, history)
    window = (utc("2022-10-27"), utc("2022-11-03"))
    figures = detect(store, settings, now=window[1] + pd.Timedelta(minutes=4), window=window)
    assert figures["detector"] == "residual"
    assert anomalies(store).empty


def test_rerun_over_the_same_window_adds_no_rows(store: Store, settings: Settings, history: pd.DataFrame) -> None:
    write_measurements(store, inject(history, "spike")[0])
    detect(store, settings)
    count = store.scalar("select count() from {db:Identifier}.anomalies")
    detect(store, settings)
    detect(store, settings, now=NOW + pd.Timedelta(minutes=15))
    assert count > 0
    assert store.scalar("select count() from {db:Identifier}.anomalies") == count


def test_anomaly_explained_by_a_revised_value_is_resolved_not_deleted(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    write_measurements(store, inject(history, "spike")[0])
    detect(store, settings)
    assert anomalies(store).set_index("ts").loc[T0, "status"] == "open"
    # the source revises the glitch back to the real value (same nature, version 2)
    write_measurements(store, history[history["ts"] == T0], version=2)
    detect(store, settings, now=NOW + pd.Timedelta(minutes=15))
    row = anomalies(store).set_index("ts").loc[T0]
    assert (row["status"], row["resolution"].startswith("revised value")) == ("resolved", True)
    assert (
        store.scalar("select count() from {db:Identifier}.anomalies where ts = {t:DateTime64(3, 'UTC')}", {"t": T0})
        == 2
    )


def test_expectation_comes_from_the_latest_forecast_issued_before_the_point(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    write_measurements(store, inject(history, "spike")[0])
    write_forecasts(store, history, WINDOW[0] - pd.Timedelta(days=3), WINDOW[1], factor=1.01)
    detect(store, settings)
    row = anomalies(store).set_index("ts").loc[T0]
    # the 10:00 run starts at 10:00, so the step 09:45 -> 10:00 comes from the 09:00 run
    assert (row["kind"], row["model_version"], row["forecast_run_id"]) == ("spike", "test-model", "run-2022111609")


def test_forecast_accuracy_breach_writes_a_retrain_request(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    write_measurements(store, history)
    write_forecasts(store, history, NOW - pd.Timedelta(days=7), WINDOW[1], factor=1.10)  # 10 % too high
    detect(store, settings)
    mm = store.query_df("select * from {db:Identifier}.model_metrics")
    request = mm[(mm["kind"] == "retrain_request") & (mm["name"] == "mape")]
    assert len(request) == 1 and request["value"].iloc[0] == pytest.approx(0.10, abs=0.005)


def test_completeness_finds_the_real_fall_back_day_complete(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    write_measurements(store, history)
    detect(store, settings, now=utc("2022-11-01 12:00"), window=(utc("2022-10-30"), utc("2022-11-01 12:00")))
    dq = store.query_df("select * from {db:Identifier}.data_quality where check = 'completeness'").set_index("scope")
    # RTE never publishes the first 02:00-02:45 local hour of that day, which is not expected (poll's gap proof, dbt
    # and the coverage panel count the same 96): it was 96 of 100 here, a warning every autumn
    row = dq.loc["2022-10-30"]
    assert (row["expected"], row["value"], row["status"]) == (96.0, 1.0, "ok")


def test_freshness_fails_when_the_feed_stops(store: Store, settings: Settings, history: pd.DataFrame) -> None:
    write_measurements(store, history[history["ts"] < T0])
    later = T0 + pd.Timedelta(hours=4)
    detect(store, settings, now=later, window=(T0 - pd.Timedelta(days=1), later))
    dq = store.query_df("select * from {db:Identifier}.data_quality where check = 'freshness'")
    # the newest value is T0 − 15 min: 4 h 15 min old, measured from its timestamp as /health and the gauge do
    assert (dq["status"].iloc[0], dq["value"].iloc[0]) == ("fail", 255.0)


def test_freshness_fails_where_health_calls_the_data_stale(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    # 3 h 05 min after the newest value /health says degraded (query_max_data_age_s); detect measured the age from
    # the end of that value's quarter-hour, 2 h 50 min, and only warned: two answers to "is the data fresh?"
    write_measurements(store, history[history["ts"] < T0])
    later = T0 - pd.Timedelta(minutes=15) + pd.Timedelta(hours=3, minutes=5)
    detect(store, settings, now=later, window=(T0 - pd.Timedelta(days=1), later))
    dq = store.query_df("select * from {db:Identifier}.data_quality where check = 'freshness'")
    assert (dq["status"].iloc[0], dq["value"].iloc[0]) == ("fail", 185.0)


def test_handler_runs_detect_for_a_backfill_window(store: Store, history: pd.DataFrame,
                                                   admin_headers: dict[str, str]) -> None:
    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler
    from shared.app import store_dep

    write_measurements(store, inject(history, "spike")[0])
    module = load_handler("detect")
    module.app.dependency_overrides[store_dep] = lambda: store
    try:
        resp = TestClient(module.app).post("/", json={"start": WINDOW[0].isoformat(), "end": WINDOW[1].isoformat()},
                                           headers=admin_headers)
    finally:
        module.app.dependency_overrides.clear()
    assert resp.status_code == 200 and resp.json()["details"]["anomalies_new_open"] >= 1


def test_lasting_breach_requests_one_retrain_per_cooldown(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    write_measurements(store, history)
    write_forecasts(store, history, NOW - pd.Timedelta(days=7), WINDOW[1], factor=1.10)
    detect(store, settings)
    detect(store, settings, now=NOW + pd.Timedelta(hours=2))  # drift is due again, the breach lasts
    n = store.scalar(
        "select count() from {db:Identifier}.model_metrics where kind = 'retrain_request' and name = 'mape'"
    )
    assert n == 1


def test_cron_run_starts_from_the_last_watermark(store: Store, settings: Settings, history: pd.DataFrame) -> None:
    write_measurements(store, history)
    detect(store, settings)
    with frozen_clock(NOW + pd.Timedelta(minutes=15)), stage_run(store, "detect") as run:
        figures = run_detect(store, settings, run).details
    # the previous run ended at WINDOW[1]; the next re-examines the overlap before it
    expected_start = WINDOW[1] - pd.Timedelta(hours=settings.detect_overlap_hours)
    assert (pd.Timestamp(figures["window_start"]), pd.Timestamp(figures["window_end"])) == (
        expected_start,
        NOW + pd.Timedelta(minutes=15),
    )


# --- implausible values and backfills (issue 9: Why 4–5, Deliver 3–4) ---------------------------------------
# A labelled synthetic glitch on the real data: a day and a half of zeros inside the window.
ZEROS = (utc("2022-11-15 06:00"), utc("2022-11-16 18:00"))


def test_zero_glitch_is_surfaced_as_implausible_and_healed_by_the_revision(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    span = (history["ts"] >= ZEROS[0]) & (history["ts"] < ZEROS[1])
    glitched = history.copy()
    glitched.loc[span, "value"] = 0.0
    with frozen_clock(NOW - pd.Timedelta(minutes=1)):
        upsert_load(store, glitched)
    detect(store, settings)
    found = anomalies(store)
    implausible = found[found["kind"] == "implausible"]
    assert len(implausible) == span.sum() == 144
    assert (implausible["status"] == "open").all() and (implausible["value"] == 0).all()
    # the zeros are not reported as missing values either: the source sent values, only impossible ones
    assert not found[(found["kind"] == "missing") & found["ts"].between(*ZEROS)].size
    dq = store.query_df("select * from {db:Identifier}.data_quality where check = 'implausible'")
    assert (dq["status"].iloc[0], dq["value"].iloc[0]) == ("fail", 144.0)
    with query_client(store) as client:
        listed = client.get("/anomalies", params={"kind": "implausible", "start": "2022-11-14", "end": "2022-11-18"})
        failed = client.get("/data-quality", params={"status": "fail"})
    assert listed.status_code == 200 and listed.json()["count"] == 144, listed.text
    assert "implausible" in {c["check"] for c in failed.json()["items"]}

    with frozen_clock(NOW + pd.Timedelta(minutes=10)):
        upsert_load(store, history)  # the source revises the zeros to the real values
    detect(store, settings, now=NOW + pd.Timedelta(minutes=15))
    healed = anomalies(store)
    healed = healed[healed["kind"] == "implausible"]
    assert len(healed) == 144 and (healed["status"] == "resolved").all()
    assert healed["resolution"].str.startswith("plausible (version 2)").all()
    dq = store.query_df("select * from {db:Identifier}.data_quality where check = 'implausible' "
                        "order by checked_at desc limit 1")
    assert (dq["status"].iloc[0], dq["value"].iloc[0]) == ("ok", 0.0)


def test_backfill_of_an_old_window_leaves_the_latest_data_quality_view_alone(
    store: Store, settings: Settings, history: pd.DataFrame
) -> None:
    write_measurements(store, history)
    with frozen_clock(NOW), stage_run(store, "detect", trigger="cron") as run:
        run_detect(store, settings, run)  # the scheduled run: the days before now are complete
    detect(store, settings, now=NOW + pd.Timedelta(minutes=5), window=(utc("2022-09-01"), utc("2022-09-03")))
    with query_client(store) as client:
        r = client.get("/data-quality", params={"check": "completeness"})
    assert r.status_code == 200, r.text
    days = {c["scope"]: c["value"] for c in r.json()["items"]}
    assert days == {"2022-11-15": 1.0, "2022-11-16": 1.0, "2022-11-17": 1.0}
    # the backfill's own checks describe its window: as of its end, complete days too
    backfill = store.query_df("select scope, value from {db:Identifier}.data_quality "
                              "where check = 'completeness' and checked_at = '2022-09-03 00:00:00'")
    assert sorted(backfill["scope"]) == ["2022-09-01", "2022-09-02", "2022-09-03"]  # Paris days up to its end
    assert (backfill["value"] > 0.9).all()


# --- the forecasts detect reads: the bound on issued_at alone prunes the table, the rows stay the same ------------


def _forecasts(settings: Settings, issued: list[pd.Timestamp], ts: list[pd.Timestamp], prefix: str) -> pd.DataFrame:
    """One ``forecasts`` row per (issued_at, ts) pair, each its own run (``<prefix>-<i>``), shaped by the product."""
    n = len(ts)
    fc = pd.DataFrame({"ts": pd.DatetimeIndex(ts), "yhat": 50_000.0, "lower": 48_500.0, "upper": 51_500.0})
    rows = forecast_rows(fc, run_id="", model_version="test-model", issued_at=issued[0], settings=settings,
                         quality="model")
    return rows.assign(issued_at=pd.DatetimeIndex(issued), origin=pd.DatetimeIndex(ts),
                       run_id=[f"{prefix}-{i}" for i in range(n)])


def test_detect_reads_a_forecast_issued_at_the_longest_lead(store: Store, settings: Settings) -> None:
    # load_forecasts bounds issued_at alone to [start - lead, end) so that the table's partitions (months of
    # issued_at) and key skip older issues: it must keep every row its per-row bound admits (issued at most the lead
    # before the target, not after it), the edges included; a bound off by the lead (issued_at >= start) or by the
    # end (issued_at < end - lead) drops the first or the last of these
    start, end = WINDOW
    lead, ms, step = pd.Timedelta(hours=FORECAST_MAX_LEAD_HOURS), pd.Timedelta(milliseconds=1), pd.Timedelta("30min")
    cases = {  # run → (issued_at, target), read or not
        "longest-lead": ((start - lead, start), True),  # the earliest admissible issue, for the window's first point
        "longest-lead-inside": ((start - lead + step, start + step), True),
        "at-its-target": ((end - step, end - step), True),  # the latest admissible issue, for the window's last point
        "a-lead-too-old": ((start - lead - ms, start), False),
        "after-its-target": ((end - step + ms, end - step), False),
        "target-before-the-window": ((start - lead, start - step), False),
        "target-at-the-end": ((end - step, end), False),
    }
    rows = pd.concat([_forecasts(settings, [i], [t], name) for name, ((i, t), _) in cases.items()], ignore_index=True)
    store.insert_df("forecasts", rows.assign(run_id=list(cases)))
    got = load_forecasts(store, "eco2mix_national", "consommation", start, end)
    assert sorted(got["run_id"]) == sorted(name for name, (_, read) in cases.items() if read)

    # and at random instants around the window's edges: exactly the rows of the definition
    rng = np.random.default_rng(7)
    span_ms = int((end - start + 2 * lead) / ms)
    ts = start - lead + pd.to_timedelta(rng.integers(0, span_ms, 3000), unit="ms")
    issued = ts - pd.to_timedelta(rng.integers(-int(lead / ms) // 4, int(2 * lead / ms), 3000), unit="ms")
    random_rows = _forecasts(settings, list(issued), list(ts), "random")
    store.insert_df("forecasts", random_rows)
    got = load_forecasts(store, "eco2mix_national", "consommation", start, end)
    r = random_rows
    want = r[(r["ts"] >= start) & (r["ts"] < end) & (r["issued_at"] <= r["ts"]) & (r["issued_at"] >= r["ts"] - lead)]
    assert 500 < len(want) < 2500  # both kinds are well represented
    assert set(got["run_id"][got["run_id"].str.startswith("random")]) == set(want["run_id"])


def test_detect_skips_forecasts_issued_before_the_window(store: Store, settings: Settings) -> None:
    # without the bound on issued_at, every detect run read every forecast ever issued (9.7 million rows on three
    # years of production, growing by 8,900 a day): issues older than the window are now pruned, not read
    start, end = WINDOW
    old = pd.date_range(start - pd.Timedelta(days=400), periods=15_000, freq="30min")  # 400 to 88 days before
    store.insert_df("forecasts", _forecasts(settings, list(old), list(old + pd.Timedelta(hours=1)), "old"))
    store.insert_df("forecasts", _forecasts(settings, [start], [start + pd.Timedelta(hours=1)], "recent"))
    selected = "select value from system.events where event = 'SelectedRows'"
    before = int(store.scalar(selected))
    got = load_forecasts(store, "eco2mix_national", "consommation", start, end)
    read = int(store.scalar(selected)) - before
    assert list(got["run_id"]) == ["recent-0"]
    assert read < 1_000, f"{read} rows read for one forecast: the old issues were scanned"
