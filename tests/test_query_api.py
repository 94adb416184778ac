"""The query API on real shipped data (December 2023 eco2mix, version 1), through the ASGI app."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from local_dev.functions import load_handler
from local_dev.gateway import create_gateway_app
from shared.artifacts import get_artifact_store
from shared.ingest.versioning import ukey_of
from shared.query.api import cache as query_cache
from shared.query.cache import QueryCache
from shared.query.metrics import CACHE_REQUESTS, RESPONSES, count_responses
from shared.runs import stage_run
from shared.settings import REPO_ROOT, Settings, get_settings
from shared.store import Store
from tests.fixtures_query import SOURCE, anomaly_row, insert_forecast_run, load_history, utc

TOKEN = "query-test-token-4f1c"


@pytest.fixture
def client(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The query app with a token configured and strict read-your-writes (watermark read per request)."""
    monkeypatch.setenv("POWERSENSE_QUERY_TOKEN", TOKEN)
    monkeypatch.setenv("POWERSENSE_QUERY_CACHE_TTL_S", "0")
    get_settings.cache_clear()
    app = load_handler("query").app
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


@pytest.fixture
def december(store: Store) -> pd.DataFrame:
    """Real eco2mix data, 2023-12-01 … 2023-12-31 (15-min), stored as version 1."""
    return load_history(store, "2023-12-01", "2024-01-01")


def test_raw_day_matches_shipped_file(client: TestClient, december: pd.DataFrame) -> None:
    r = client.get("/measurements", params={"metric": "consommation", "start": "2023-12-15", "end": "2023-12-16"})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = december[(december.ts >= "2023-12-15") & (december.ts < "2023-12-16")]
    assert body["count"] == len(expected) == 96
    assert [p["value"] for p in body["points"]] == expected["consommation"].astype(float).tolist()
    assert body["points"][0]["ts"] == "2023-12-15T00:00:00Z"
    assert body["points"][0]["version"] == 1 and body["next_cursor"] is None


def test_default_window_is_latest_7_days_at_30min(client: TestClient, december: pd.DataFrame) -> None:
    r = client.get("/measurements", params={"metric": "consommation", "interval": "30min"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["end"] == "2024-01-01T00:00:00Z" and body["start"] == "2023-12-25T00:00:00Z"
    assert body["count"] == 7 * 48
    assert body["points"][-1]["ts"] == "2023-12-31T23:30:00Z"


@pytest.mark.parametrize("agg", ["mean", "min", "max"])
def test_hourly_resampling_matches_pandas(client: TestClient, december: pd.DataFrame, agg: str) -> None:
    r = client.get("/measurements", params={"metric": "consommation", "start": "2023-12-10", "end": "2023-12-11",
                                            "interval": "1h", "agg": agg})
    assert r.status_code == 200, r.text
    day = december[(december.ts >= "2023-12-10") & (december.ts < "2023-12-11")].set_index("ts")["consommation"]
    expected = day.astype(float).resample("1h").agg(agg)
    points = r.json()["points"]
    got = pd.Series([p["value"] for p in points], index=pd.to_datetime([p["ts"] for p in points]))
    assert got.index.equals(expected.index)
    assert got.to_numpy() == pytest.approx(expected.to_numpy())
    assert {p["n"] for p in r.json()["points"]} == {4}


def test_daily_resampling_spans_a_month_of_paris_days(client: TestClient, december: pd.DataFrame) -> None:
    r = client.get("/measurements", params={"metric": "prevision_j1", "start": "2023-12-01T00:00:00+01:00",
                                            "end": "2024-01-01T00:00:00+01:00", "interval": "1d", "agg": "max"})
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    assert [p["ts"] for p in points[:2]] == ["2023-11-30T23:00:00Z", "2023-12-01T23:00:00Z"]
    assert len(points) == 31
    second_day = december.set_index("ts")["prevision_j1"]["2023-12-01 23:00":"2023-12-02 22:59"]
    assert points[1]["value"] == second_day.max() and points[1]["n"] == len(second_day) == 96


def test_daily_buckets_follow_the_25_hour_day(client: TestClient, store: Store) -> None:
    # 2023-10-29 (fall back) is a Paris day of 25 hours, 22:00 to 23:00 UTC (eco2mix's file lacks its repeated
    # hour, so it holds 96 values, as many as its neighbours)
    history = load_history(store, "2023-10-27T22:00:00Z", "2023-10-30T23:00:00Z")
    r = client.get("/measurements", params={"metric": "consommation", "start": "2023-10-28T00:00:00+02:00",
                                            "end": "2023-10-31T00:00:00+01:00", "interval": "1d"})
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    local = history.set_index("ts")["consommation"].astype(float)
    by_day = local.groupby(local.index.tz_convert("Europe/Paris").date)
    assert [p["ts"] for p in points] == ["2023-10-27T22:00:00Z", "2023-10-28T22:00:00Z", "2023-10-29T23:00:00Z"]
    assert [p["n"] for p in points] == by_day.count().tolist()
    assert [p["value"] for p in points] == pytest.approx(by_day.mean().tolist())


def test_daily_default_window_ends_at_the_next_paris_midnight(client: TestClient, december: pd.DataFrame) -> None:
    # the newest value is 2023-12-31 23:45 UTC, already in Paris's 1 January: its day ends at 2024-01-01 23:00 UTC
    r = client.get("/measurements", params={"metric": "consommation", "interval": "1d"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["end"] == "2024-01-01T23:00:00Z"
    assert body["points"][-1]["ts"] == "2023-12-31T23:00:00Z" and body["points"][-1]["n"] == 4


def test_as_of_returns_the_value_known_then(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    ts = utc(2023, 12, 20, 12, 0)
    nature = december.loc[december.ts == ts, "nature"].iloc[0]
    original = float(december.loc[december.ts == ts, "consommation"].iloc[0])
    first_known = store.scalar("select max(inserted_at) from {db:Identifier}.measurements")
    revised_at = pd.Timestamp(first_known).tz_localize("UTC") + timedelta(hours=1)
    store.insert_df("measurements", pd.DataFrame([{
        "ts": ts, "source": SOURCE, "metric": "consommation", "nature": nature, "value": original + 1234.0,
        "ukey": ukey_of(ts, "consommation", nature), "version": 2, "batch_id": "revision", "inserted_at": revised_at,
    }]))
    window = {"metric": "consommation", "start": "2023-12-20T12:00:00Z", "end": "2023-12-20T12:15:00Z"}

    latest = client.get("/measurements", params=window).json()["points"]
    before = client.get("/measurements", params={**window, "as_of": (revised_at - timedelta(minutes=30)).isoformat()})
    after = client.get("/measurements", params={**window, "as_of": revised_at.isoformat()}).json()["points"]
    every = client.get("/measurements", params={**window, "version": "all"}).json()["points"]

    assert [(p["value"], p["version"]) for p in latest] == [(original + 1234.0, 2)]
    assert [(p["value"], p["version"]) for p in before.json()["points"]] == [(original, 1)]
    assert [(p["value"], p["version"]) for p in after] == [(original + 1234.0, 2)]
    assert [(p["value"], p["version"]) for p in every] == [(original, 1), (original + 1234.0, 2)]


def _revise(store: Store, december: pd.DataFrame, stamps: dict[str, float | None]) -> None:
    """Store version 2 of December values (``None`` = withdrawn by the source) and judge them as upsert-version does."""
    from shared.ingest.versioning import reflag_history

    rows = []
    for ts, value in stamps.items():
        nature = december.loc[december.ts == pd.Timestamp(ts), "nature"].iloc[0]
        rows.append({"ts": pd.Timestamp(ts), "source": SOURCE, "metric": "consommation", "nature": nature,
                     "value": value, "ukey": ukey_of(pd.Timestamp(ts), "consommation", nature), "version": 2,
                     "batch_id": "revision", "inserted_at": pd.Timestamp("2024-01-02T00:00Z")})
    store.insert_df("measurements", pd.DataFrame(rows))
    reflag_history(store, get_settings())


def test_a_raw_point_says_why_its_value_is_missing(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    # before: both read {"value": null}, so a consumer could not tell a value the source withdrew from one the
    # plausibility checks left out (a 0 MW glitch), nor see what was received
    _revise(store, december, {"2023-12-20T12:00Z": 0.0, "2023-12-20T12:15Z": None})
    window = {"metric": "consommation", "start": "2023-12-20T11:45:00Z", "end": "2023-12-20T12:30:00Z"}
    points = client.get("/measurements", params=window).json()["points"]
    kept = float(december.loc[december.ts == pd.Timestamp("2023-12-20T11:45Z"), "consommation"].iloc[0])
    assert [(p["value"], p["raw_value"], p["flag"], p["version"]) for p in points] == [
        (kept, kept, "", 1), (None, 0.0, "non_positive", 2), (None, None, "", 2)]


def test_every_revision_carries_its_verdict(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    # before: version=all returned the 0 MW glitch as a value, against the field's own definition
    _revise(store, december, {"2023-12-20T12:00Z": 0.0})
    window = {"metric": "consommation", "start": "2023-12-20T12:00:00Z", "end": "2023-12-20T12:15:00Z",
              "version": "all"}
    points = client.get("/measurements", params=window).json()["points"]
    first = float(december.loc[december.ts == pd.Timestamp("2023-12-20T12:00Z"), "consommation"].iloc[0])
    assert [(p["version"], p["value"], p["raw_value"], p["flag"]) for p in points] == [
        (1, first, first, ""), (2, None, 0.0, "non_positive")]


def test_csv_measurements_carry_the_raw_value_and_the_flag(client: TestClient, store: Store,
                                                           december: pd.DataFrame) -> None:
    _revise(store, december, {"2023-12-20T12:00Z": 0.0})
    r = client.get("/measurements", params={"metric": "consommation", "start": "2023-12-20T12:00:00Z",
                                            "end": "2023-12-20T12:15:00Z", "format": "csv"})
    assert r.text.splitlines() == ["ts,value,nature,version,inserted_at,raw_value,flag",
                                   f"2023-12-20T12:00:00Z,,{_nature(december, '2023-12-20T12:00Z')},2,"
                                   "2024-01-02T00:00:00Z,0.0,non_positive"]


def _nature(december: pd.DataFrame, ts: str) -> str:
    return str(december.loc[december.ts == pd.Timestamp(ts), "nature"].iloc[0])


def test_a_lower_case_z_is_utc(client: TestClient, december: pd.DataFrame) -> None:
    # RFC 3339 allows "z"; it was a 400
    window = {"metric": "consommation", "start": "2023-12-20T00:00:00{z}", "end": "2023-12-20T01:00:00{z}"}
    lower = client.get("/measurements", params={k: v.format(z="z") for k, v in window.items()})
    upper = client.get("/measurements", params={k: v.format(z="Z") for k, v in window.items()})
    assert lower.status_code == 200 and lower.json()["points"] == upper.json()["points"] != []


def test_the_csv_forecast_header_writes_its_instant_as_the_body_does(client: TestClient, store: Store,
                                                                     december: pd.DataFrame) -> None:
    insert_forecast_run(store, december, utc(2023, 12, 21, 6, 5))
    r = client.get("/forecasts", params={"format": "csv"})
    assert r.headers["X-Issued-At"] == "2023-12-21T06:05:00Z"  # was +00:00 beside the body's Z


def test_as_of_before_any_insert_is_empty(client: TestClient, december: pd.DataFrame) -> None:
    r = client.get("/measurements", params={"metric": "consommation", "start": "2023-12-20", "end": "2023-12-21",
                                            "as_of": "2020-01-01T00:00:00Z"})
    assert r.status_code == 200 and r.json()["count"] == 0


@pytest.mark.parametrize("version", ["latest", "all"])
def test_cursor_pages_cover_the_range_exactly_once(client: TestClient, december: pd.DataFrame, version: str) -> None:
    params = {"metric": "consommation", "start": "2023-12-01", "end": "2023-12-03", "limit": 50, "version": version}
    pages, cursor = [], None
    while True:
        r = client.get("/measurements", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        pages.append(r.json()["points"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    stamps = [p["ts"] for page in pages for p in page]
    assert len(pages) == 4 and len(stamps) == 192 == len(set(stamps))
    assert stamps == sorted(stamps)


def test_daily_pages_chain_paris_days_exactly_once(client: TestClient, december: pd.DataFrame) -> None:
    params = {"metric": "consommation", "start": "2023-12-01T00:00:00+01:00", "end": "2024-01-01T00:00:00+01:00",
              "interval": "1d", "limit": 7}
    stamps, cursor = [], None
    while True:
        r = client.get("/measurements", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        stamps += [p["ts"] for p in r.json()["points"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    days = pd.date_range("2023-12-01", "2023-12-31", freq="D", tz="Europe/Paris").tz_convert("UTC")
    assert stamps == [d.strftime("%Y-%m-%dT%H:%M:%SZ") for d in days]


def test_csv_by_parameter_and_by_accept_header(client: TestClient, december: pd.DataFrame) -> None:
    params = {"metric": "consommation", "start": "2023-12-15", "end": "2023-12-16", "interval": "1h"}
    by_param = client.get("/measurements", params={**params, "format": "csv"})
    by_header = client.get("/measurements", params=params, headers={"Accept": "text/csv"})
    assert by_param.headers["content-type"].startswith("text/csv")
    assert by_param.text == by_header.text
    lines = by_param.text.strip().splitlines()
    assert lines[0] == "ts,value,n" and len(lines) == 25 and lines[1].startswith("2023-12-15T00:00:00Z,")


def test_csv_page_carries_the_next_cursor_header(client: TestClient, december: pd.DataFrame) -> None:
    r = client.get("/measurements", params={"metric": "consommation", "start": "2023-12-15", "end": "2023-12-16",
                                            "limit": 10, "format": "csv"})
    assert r.status_code == 200 and len(r.text.strip().splitlines()) == 11
    assert r.headers["x-next-cursor"]


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"metric": "consommation", "start": "2023-12-10", "end": "2023-12-09"}, 400, "must be before end"),
        ({"metric": "consommation", "start": "yesterday"}, 400, "not an ISO 8601 instant"),
        ({"metric": "consommation", "start": "2023-13-45T99:00"}, 400, "not an ISO 8601 instant"),
        ({"metric": "consommation", "start": "1066-10-14"}, 400, "between"),
        # digits were read as Unix time (1700000000 → 2023-11-14T22:13:20Z), the API says ISO 8601
        ({"metric": "consommation", "start": "1700000000"}, 400, "not an ISO 8601 instant"),
        ({"metric": "consommation", "end": "1703030400000"}, 400, "not an ISO 8601 instant"),
        ({"metric": "consommation", "start": "20231101"}, 400, "not an ISO 8601 instant"),
        # an unencoded '+02:00' arrives as ' 02:00': the generic message did not say why
        ({"metric": "consommation", "start": "2023-12-20T14:00 01:00"}, 400, "send it as %2B"),
        ({"metric": "consommation", "start": "2023-12-20 14:00 01:00"}, 400, "send it as %2B"),
        ({"metric": "consommation", "start": "2023-12-20T14:00:00 01"}, 400, "send it as %2B"),
        ({"metric": "consommation", "start": "2023-12-21", "end": "2023-12-20"}, 400,
         "start (2023-12-21T00:00:00Z) must be before end (2023-12-20T00:00:00Z)"),
        # instants past datetime's own range once converted to UTC (a fuzzer's find): a 400, not an overflow
        ({"metric": "consommation", "start": "9999-12-31T23:00:00-05:00"}, 400, "between"),
        ({"metric": "consommation", "start": "0001-01-01T00:00:00+05:00"}, 400, "between"),
        ({"metric": "nucleaire_fusion"}, 400, "unknown metric"),
        # the source is the unknown one (it was reported as an unknown metric)
        ({"metric": "consommation", "source": "bogus"}, 400, "unknown source 'bogus'; known sources: "),
        ({"metric": "consommation", "start": "2020-01-01", "end": "2023-12-01"}, 400, "maximum of 366 days"),
        ({"metric": "consommation", "limit": 10_001}, 400, "less than or equal"),
        ({"metric": "consommation", "limit": 0}, 400, "greater than or equal"),
        ({"metric": "consommation", "metrc": "x"}, 422, "Extra inputs are not permitted"),
        ({"metric": "consommation", "cursor": "bm90LWEtY3Vyc29y"}, 400, "invalid cursor"),
        ({"metric": "consommation", "version": "all", "interval": "1h"}, 400, "cannot be resampled"),
        ({"metric": "consommation", "agg": "max"}, 400, "agg=max aggregates resampled buckets"),  # was dropped
        # an unknown nature answered 200 with no rows
        ({"metric": "consommation", "nature": "Données provisoires"}, 400,
         "unknown nature 'Données provisoires' for eco2mix_national/consommation; known natures: "),
        ({"metric": "consommation", "interval": "7min"}, 400, "interval"),
        ({"metric": "conso'; drop table measurements; --"}, 400, "pattern"),
        ({"metric": "consommation", "metrc": "x", "limit": 10_001}, 422, "Extra inputs are not permitted"),
        ({}, 422, "metric"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    client: TestClient, december: pd.DataFrame, params: dict[str, object], status: int, fragment: str
) -> None:
    r = client.get("/measurements", params=params)
    assert r.status_code == status, r.text
    assert fragment in r.text
    assert r.json()["error"] == "BadRequestError"


def test_hostile_nature_value_is_bound_not_executed(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    r = client.get("/measurements", params={"metric": "consommation", "nature": "x' or 1=1 --",
                                            "start": "2023-12-20", "end": "2023-12-21"})
    # compared as a value (no stored nature is that text), never spliced into the SQL
    assert r.status_code == 400 and "unknown nature \"x' or 1=1 --\"" in r.json()["detail"], r.text
    assert store.scalar("select count() from {db:Identifier}.measurements") > 0


def test_forecasts_404_until_a_run_exists(client: TestClient, december: pd.DataFrame) -> None:
    r = client.get("/forecasts")
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError"
    assert client.get("/forecasts/runs").json() == {"source": SOURCE, "metric": "consommation", "count": 0, "runs": []}


def test_series_defaults_are_the_configured_series(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                   december: pd.DataFrame) -> None:
    # POWERSENSE_SERIES_METRIC is a documented setting: the parameters' defaults were the class's own
    # (consommation), so /forecasts/runs answered another series than the deployment forecasts
    monkeypatch.setenv("POWERSENSE_SERIES_METRIC", "prevision_j")
    get_settings.cache_clear()
    runs = client.get("/forecasts/runs").json()
    assert (runs["source"], runs["metric"]) == (SOURCE, "prevision_j")


def test_latest_forecast_run_with_intervals_and_horizon_filter(
    client: TestClient, store: Store, december: pd.DataFrame
) -> None:
    older = insert_forecast_run(store, december, utc(2023, 12, 20, 6, 5))
    newer = insert_forecast_run(store, december, utc(2023, 12, 21, 6, 5))
    latest = client.get("/forecasts").json()
    assert latest["run_id"] == newer["run_id"].iloc[0] and latest["steps"] == latest["count"] == 336
    first = latest["points"][0]
    assert first["ts"] == "2023-12-21T06:30:00Z" and first["horizon_steps"] == 1
    assert first["yhat"] == pytest.approx(float(december.set_index("ts").loc[utc(2023, 12, 14, 6, 30), "consommation"]))
    assert first["lower"] <= first["yhat"] <= first["upper"]

    by_id = client.get("/forecasts", params={"run_id": older["run_id"].iloc[0], "horizon_day": 1}).json()
    assert by_id["run_id"] == older["run_id"].iloc[0]
    assert {p["horizon_day"] for p in by_id["points"]} == {1} and by_id["count"] == 48
    assert client.get("/forecasts", params={"max_horizon_steps": 4}).json()["count"] == 4
    runs = client.get("/forecasts/runs").json()["runs"]
    assert [r["run_id"] for r in runs] == [newer["run_id"].iloc[0], older["run_id"].iloc[0]]
    assert client.get("/forecasts", params={"run_id": "no-such-run"}).status_code == 404


def test_forecast_vs_actual_matches_the_stored_values(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    run = insert_forecast_run(store, december, utc(2023, 12, 18, 0, 0))
    r = client.get("/forecasts/vs-actual", params={"start": "2023-12-18", "end": "2023-12-19"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"]["n"] == len(body["points"]) == 48
    actual = december.set_index("ts")["consommation"].astype(float)
    expected = run.set_index("ts")["yhat"]["2023-12-18":"2023-12-18 23:59"] - actual.reindex(
        run.set_index("ts")["2023-12-18":"2023-12-18 23:59"].index)
    assert body["summary"]["mae"] == pytest.approx(expected.abs().mean(), abs=1e-3)
    assert 0 <= body["summary"]["interval_coverage"] <= 1
    csv = client.get("/forecasts/vs-actual", params={"start": "2023-12-18", "end": "2023-12-19", "format": "csv"})
    assert csv.text.splitlines()[0].startswith("ts,actual,yhat") and len(csv.text.strip().splitlines()) == 49


def test_detect_outputs_answer_empty_before_detect_has_run(client: TestClient, december: pd.DataFrame) -> None:
    # the DDL has created every table; the stages that fill them have not run: empty answers, not errors
    anomalies = client.get("/anomalies").json()
    assert (anomalies["count"], anomalies["items"]) == (0, [])
    quality = client.get("/data-quality").json()
    assert (quality["run_id"], quality["status_counts"], quality["items"]) == (None, {}, [])
    assert client.get("/models/metrics").json()["items"] == []
    assert client.get("/forecasts/runs").json()["runs"] == []
    assert client.get("/forecasts/vs-actual").json()["points"] == []


def test_uninitialised_database_answers_503_naming_the_missing_tables(client: TestClient, store: Store) -> None:
    # a read-only user on a server no writer has initialised: one clear error, not empty answers
    for table in ("anomalies", "forecasts"):
        store.command(f"drop table {store.database}.{table}")
    r = client.get("/anomalies")
    assert r.status_code == 503 and r.json()["error"] == "SchemaError"
    assert "missing anomalies, forecasts" in r.json()["detail"] and store.database in r.json()["detail"]
    health = client.get("/health")
    assert health.status_code == 503 and "missing anomalies, forecasts" in health.json()["detail"]
    store.apply_schema()  # a writer stage initialises the server: the API recovers without a restart
    assert client.get("/anomalies").status_code == 200
    assert client.get("/health").json()["status"] == "degraded"  # reachable, no data yet


def test_anomalies_filtered_by_window_kind_severity_and_latest_state(client: TestClient, store: Store) -> None:
    t = utc(2023, 12, 20, 18, 0)
    store.insert_df("anomalies", pd.DataFrame([
        anomaly_row(t, "dip", "high"),
        anomaly_row(t + timedelta(minutes=15), "spike", "low"),
        anomaly_row(t - timedelta(days=40), "flatline", "medium"),
    ]))
    store.insert_df("anomalies", pd.DataFrame([  # a later state of the dip: resolved by a revised value
        anomaly_row(t, "dip", "high", status="resolved", resolved_at=t + timedelta(hours=2), resolution="revised value",
                 updated_at=t + timedelta(hours=2)),
    ]))
    window = {"start": "2023-12-01", "end": "2024-01-01"}
    every = client.get("/anomalies", params=window).json()
    assert [(a["kind"], a["status"]) for a in every["items"]] == [("spike", "open"), ("dip", "resolved")]
    assert client.get("/anomalies", params={**window, "severity": "high"}).json()["items"][0]["resolution"] == (
        "revised value")
    assert client.get("/anomalies", params={**window, "kind": "spike", "status": "open"}).json()["count"] == 1
    assert client.get("/anomalies", params={**window, "detector": "zscore"}).json()["count"] == 0
    assert client.get("/anomalies", params={"start": "2023-11-01", "end": "2023-11-30"}).json()["count"] == 1


def test_anomalies_page_with_a_cursor_instead_of_stopping_at_the_limit(client: TestClient, store: Store) -> None:
    # the first `limit` rows were all there was, with nothing saying so (anomaly triage review D7)
    t = utc(2023, 12, 20, 18, 0)
    store.insert_df("anomalies", pd.DataFrame(
        [anomaly_row(t, kind, "low") for kind in ("dip", "flatline", "missing")]  # three at one instant
        + [anomaly_row(t - timedelta(minutes=15 * k), "spike", "low") for k in (1, 2)]))
    window = {"start": "2023-12-01", "end": "2024-01-01", "limit": 2}
    seen, cursor, pages = [], None, 0
    while True:
        page = client.get("/anomalies", params={**window, **({"cursor": cursor} if cursor else {})}).json()
        seen += [(a["ts"], a["kind"]) for a in page["items"]]
        pages, cursor = pages + 1, page["next_cursor"]
        if cursor is None:
            break
    every = client.get("/anomalies", params={**window, "limit": 10}).json()
    assert every["next_cursor"] is None and pages == 3
    assert seen == [(a["ts"], a["kind"]) for a in every["items"]] and len(set(seen)) == 5
    assert client.get("/anomalies", params={**window, "cursor": "not-a-cursor"}).status_code == 400
    first = client.get("/anomalies", params=window).json()["items"]
    assert client.get("/anomalies", params={**window, "cursor": ""}).json()["items"] == first  # it answered none


def test_anomalies_export_as_csv_with_the_next_page_in_a_header(client: TestClient, store: Store) -> None:
    # an analyst's export: format=csv was refused, as a misspelt detector is now (it answered 0 rows)
    t = utc(2023, 12, 20, 18, 0)
    store.insert_df("anomalies", pd.DataFrame([anomaly_row(t - timedelta(minutes=15 * k), "spike", "low")
                                               for k in range(3)]))
    window = {"start": "2023-12-01", "end": "2024-01-01", "limit": 2}
    r = client.get("/anomalies", params={**window, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("ts,source,metric,kind,detector,severity,value") and len(lines) == 3
    assert lines[1].startswith("2023-12-20T18:00:00Z,eco2mix_national,consommation,spike,residual,low,")
    rest = client.get("/anomalies", params={**window, "format": "csv", "cursor": r.headers["X-Next-Cursor"]})
    assert len(rest.text.strip().splitlines()) == 2 and "X-Next-Cursor" not in rest.headers
    wrong = client.get("/anomalies", params={**window, "detector": "residuals"})
    assert wrong.status_code == 400 and "detector" in wrong.text


def test_data_quality_returns_the_latest_detect_run(client: TestClient, store: Store) -> None:
    def checks(run_id: str, at: datetime, completeness: float) -> list[dict[str, object]]:
        return [
            {"checked_at": at, "run_id": run_id, "source": SOURCE, "metric": "consommation", "check": "completeness",
             "scope": "2023-12-20", "value": completeness, "expected": 96.0,
             "status": "ok" if completeness == 96 else "fail", "details": '{"missing": []}'},
            {"checked_at": at, "run_id": run_id, "source": SOURCE, "metric": "consommation", "check": "freshness",
             "scope": "window", "value": 20.0, "expected": 90.0, "status": "ok", "details": "{}"},
        ]
    store.insert_df("data_quality", pd.DataFrame(checks("d1", utc(2023, 12, 20, 22), 90.0)
                                                 + checks("d2", utc(2023, 12, 20, 23), 96.0)))
    latest = client.get("/data-quality").json()
    assert latest["run_id"] == "d2" and latest["status_counts"] == {"ok": 2} and latest["count"] == 2
    older = client.get("/data-quality", params={"run_id": "d1", "status": "fail"}).json()
    assert [(c["check"], c["value"]) for c in older["items"]] == [("completeness", 90.0)]
    assert older["items"][0]["details"] == {"missing": []}


def test_data_quality_of_an_unknown_run_is_404(client: TestClient, store: Store) -> None:
    # it answered 200 with no checks, while /forecasts?run_id= of an unknown run is a 404
    r = client.get("/data-quality", params={"run_id": "nonexistent"})
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError", r.text


def test_model_metrics_latest_value_per_measure(client: TestClient, store: Store) -> None:
    def row(at: datetime, value: float) -> dict[str, object]:
        return {"computed_at": at, "run_id": "detect-9", "source": SOURCE, "metric": "consommation",
                "kind": "accuracy", "name": "mape", "horizon_day": 1, "scope": "all", "model_version": "v3",
                "window_start": at - timedelta(days=7), "window_end": at, "value": value, "threshold": 0.05,
                "n": 336, "breached": int(value > 0.05), "details": "{}"}
    store.insert_df("model_metrics", pd.DataFrame([row(utc(2023, 12, 20), 0.031), row(utc(2023, 12, 21), 0.062)]))
    items = client.get("/models/metrics", params={"kind": "accuracy"}).json()["items"]
    assert [(m["name"], m["horizon_day"], m["value"], m["breached"]) for m in items] == [("mape", 1, 0.062, True)]
    # a measure last computed long before the others keeps its newest value (each measure's newest computation is
    # found first, then only those rows are read)
    store.insert_df("model_metrics", pd.DataFrame([{**row(utc(2022, 3, 1), 0.02), "horizon_day": 7},
                                                   {**row(utc(2022, 3, 2), 0.04), "horizon_day": 7}]))
    items = client.get("/models/metrics", params={"kind": "accuracy"}).json()["items"]
    assert [(m["horizon_day"], m["value"]) for m in items] == [(1, 0.062), (7, 0.04)]


def test_a_forecast_runs_page_reaches_back_as_far_as_it_must(client: TestClient, store: Store,
                                                             december: pd.DataFrame) -> None:
    run = insert_forecast_run(store, december, utc(2023, 12, 21, 6, 5))
    for i, issued in enumerate((utc(2023, 12, 21, 5, 5), utc(2023, 11, 10, 6, 5), utc(2023, 6, 1, 6, 5))):
        store.insert_df("forecasts", run.assign(issued_at=issued, run_id=f"older-{i}"))  # the same steps, older
    runs = client.get("/forecasts/runs", params={"limit": 3}).json()["runs"]
    assert [r["issued_at"] for r in runs] == ["2023-12-21T06:05:00Z", "2023-12-21T05:05:00Z", "2023-11-10T06:05:00Z"]


def test_models_registry_is_a_clear_empty_result_without_models(client: TestClient) -> None:
    r = client.get("/models", params={"series": f"never_trained.{uuid.uuid4().hex[:8]}"})
    assert r.status_code == 200, r.text
    assert r.json()["available"] is False and r.json()["models"] == [] and r.json()["current"] is None


def test_models_registry_lists_versions_and_the_current_pointer(client: TestClient, settings: Settings) -> None:
    series = f"eco2mix_national.consommation.{uuid.uuid4().hex[:8]}"
    registry = get_artifact_store(settings)
    for version, mape in (("v1", 0.031), ("v2", 0.027)):
        meta = {"trained_at": "2023-12-01T00:00:00+00:00", "training_window": ["2021-12-01", "2023-12-01"],
                "backtest_metrics": {"mape": mape}}
        registry.save_version(series, version, {"model.json": b"{}"}, meta)
    registry.set_current(series, "v2")
    body = client.get("/models", params={"series": series}).json()
    assert body["available"] is True and [m["version"] for m in body["models"]] == ["v1", "v2"]
    assert body["current"]["version"] == "v2" and body["current"]["backtest_metrics"] == {"mape": 0.027}
    assert [m["current"] for m in body["models"]] == [False, True]


def test_runs_history_and_latest_per_function(client: TestClient, store: Store) -> None:
    for function in ("poll", "poll", "forecast"):
        with stage_run(store, function, "cron", None, None) as run:
            run.rows_out = 7
    runs = client.get("/runs").json()
    assert runs["count"] == 3 and {r["status"] for r in runs["runs"]} == {"success"}
    assert client.get("/runs", params={"function": "poll"}).json()["count"] == 2
    assert client.get("/runs", params={"status": "failed"}).json()["count"] == 0
    latest = client.get("/runs/latest").json()["runs"]
    assert [r["function"] for r in latest] == ["forecast", "poll"] and latest[0]["rows_out"] == 7


def _past_runs(store: Store, spec: list[tuple[str, float, str]]) -> None:
    """Runs of ``function`` started ``days`` ago: a running row, then the final one with ``status``."""
    from shared.runs import Run, _write

    now = datetime.now(UTC)
    for i, (function, days, status) in enumerate(spec):
        run = Run(function=function, run_id=f"r{i:03d}", trigger="cron", started_at=now - timedelta(days=days))
        _write(store, run)
        run.status, run.finished_at = status, run.started_at + timedelta(seconds=5)
        _write(store, run)


def test_a_runs_page_reaches_back_as_far_as_it_must(client: TestClient, store: Store) -> None:
    # /runs reads a window back from the newest run, widened until the page is full: the page is still the newest
    # runs, in order, when they are spread over months, and a filter on a rare status still finds an old one
    _past_runs(store, [("poll", 0.1, "success"), ("poll", 0.2, "success"), ("poll", 10, "success"),
                       ("poll", 100, "success"), ("poll", 400, "failed"), ("detect", 500, "success")])
    page = client.get("/runs", params={"limit": 4}).json()["runs"]
    assert [r["run_id"] for r in page] == ["r000", "r001", "r002", "r003"]
    assert [r["status"] for r in page] == ["success"] * 4  # each run's final row, not its running one
    failed = client.get("/runs", params={"status": "failed"}).json()["runs"]
    assert [r["run_id"] for r in failed] == ["r004"]
    latest = client.get("/runs/latest").json()["runs"]
    assert [(r["function"], r["run_id"], r["status"]) for r in latest] == [("detect", "r005", "success"),
                                                                            ("poll", "r000", "success")]


def test_one_run_is_found_by_its_run_id(client: TestClient, store: Store) -> None:
    # the run_id of a log line, an alert's Recent failures row or a rejected record's batch, old or new
    _past_runs(store, [("poll", 0.1, "success"), ("poll", 400, "failed"), ("detect", 500, "success")])
    [run] = client.get("/runs", params={"run_id": "r001"}).json()["runs"]
    assert (run["function"], run["status"]) == ("poll", "failed")
    assert client.get("/runs", params={"run_id": "nothing-like-it"}).json()["count"] == 0
    assert client.get("/runs", params={"run_id": "r001'; drop"}).status_code == 400


def test_a_status_filter_answers_with_each_runs_final_status(client: TestClient, store: Store) -> None:
    # the filter first narrows to runs with a row of that status; the run's final row still decides: a run that
    # passed through a status (every run was 'running' once) is not listed under it
    _past_runs(store, [("poll", 0.1, "success"), ("poll", 0.2, "failed"), ("detect", 40, "failed")])
    from shared.runs import Run, _write

    still = Run(function="featurize", run_id="r-open", trigger="cron", started_at=datetime.now(UTC))
    _write(store, still)  # started, never ended
    failed = client.get("/runs", params={"status": "failed"}).json()["runs"]
    assert [r["run_id"] for r in failed] == ["r001", "r002"]
    running = client.get("/runs", params={"status": "running"}).json()["runs"]
    assert [r["run_id"] for r in running] == ["r-open"]


def test_the_newest_value_per_series_reads_recent_rows_each_scrape_and_the_whole_table_hourly(
        store: Store, december: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.query import metrics as query_metrics

    now = datetime.now(UTC)
    first = query_metrics._latest(store, "measurements", "ts", now)  # the whole table: December 2023 is old
    assert first[(SOURCE, "consommation")] == utc(2023, 12, 31, 23, 45)
    fresh = pd.Timestamp(now).floor("15min") - pd.Timedelta(hours=1)
    row = {"ts": fresh, "source": SOURCE, "metric": "consommation", "nature": "Données temps réel", "value": 50_000.0,
           "ukey": ukey_of(fresh, "consommation", "Données temps réel"), "version": 1, "batch_id": "t",
           "inserted_at": pd.Timestamp(now)}
    # and a backfilled series whose newest value is older than the recent window
    store.insert_df("measurements", pd.DataFrame([row, {**row, "metric": "hydraulique", "ts": utc(2023, 6, 1),
                                                        "ukey": "old"}]))
    second = query_metrics._latest(store, "measurements", "ts", now)
    assert second[(SOURCE, "consommation")] == fresh  # a new value: seen at once (the recent window)
    assert (SOURCE, "hydraulique") not in second  # old data written now: at the next whole read (hourly)
    monkeypatch.setattr(query_metrics, "WHOLE_TABLE_EVERY_S", 0.0)
    third = query_metrics._latest(store, "measurements", "ts", now)
    assert third == {**second, (SOURCE, "hydraulique"): utc(2023, 6, 1)}


def test_health_is_open_and_reports_stale_data(client: TestClient, december: pd.DataFrame) -> None:
    r = client.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200
    body = r.json()
    assert body["store"] is True and body["latest_ts"] == "2023-12-31T23:45:00Z"
    assert body["status"] == "degraded" and body["data_fresh"] is False  # shipped data ends in 2023


def test_a_feed_stuck_on_an_implausible_value_is_not_fresh(client: TestClient, store: Store,
                                                           december: pd.DataFrame) -> None:
    # two hours of 0 MW after the real data: /health and the freshness gauge counted them as fresh data (the newest
    # stored timestamp) while detect's cleaned series saw none; all now read the newest valid value
    from shared.ingest.versioning import make_ukeys, reflag_history

    ts = pd.date_range("2024-01-01T00:00Z", periods=8, freq="15min")
    zeros = pd.DataFrame({"ts": ts, "source": SOURCE, "metric": "consommation", "nature": "Données temps réel",
                          "value": 0.0, "version": 1, "inserted_at": pd.Timestamp("2024-01-01T02:00Z")})
    zeros["ukey"] = make_ukeys(zeros["ts"], zeros["metric"], zeros["nature"], "France")
    store.insert_df("measurements", zeros)
    reflag_history(store, get_settings())  # the product's plausibility verdicts (upsert-version's, after an upgrade)
    body = client.get("/health", headers={"Authorization": ""}).json()
    assert body["latest_ts"] == "2023-12-31T23:45:00Z"
    text = client.get("/metrics", headers={"Authorization": ""}).text
    line = next(x for x in text.splitlines()
                if x.startswith('powersense_data_freshness_seconds{metric="consommation",source="eco2mix_national"}'))
    age = float(line.split()[-1])
    assert abs(age - body["data_age_s"]) < 60  # the same instant, read a moment apart


def test_the_open_anomalies_gauge_counts_the_span_detect_re_examines(client: TestClient, store: Store) -> None:
    # every open anomaly ever counted: nothing closes one once detect has moved past it, so the gauge (and
    # PowerSenseAnomaliesOpen) never went back to 0 after the first spike
    from shared import clock

    now = pd.Timestamp(clock.now())
    row = {"source": SOURCE, "metric": "consommation", "kind": "spike", "detector": "residual", "severity": "high",
           "value": 1.0, "value_version": 1, "model_version": "", "forecast_run_id": "", "detected_at": now,
           "run_id": "d", "status": "open", "resolution": ""}
    store.insert_df("anomalies", pd.DataFrame([{**row, "ts": now - pd.Timedelta(hours=1)},
                                               {**row, "ts": now - pd.Timedelta(hours=72)}]))
    text = client.get("/metrics", headers={"Authorization": ""}).text
    counts = [float(x.split()[-1]) for x in text.splitlines() if x.startswith("powersense_anomalies_open{")]
    assert counts == [1.0]


def test_the_open_anomaly_events_gauge_counts_runs_by_their_highest_severity(client: TestClient,
                                                                             store: Store) -> None:
    # what PowerSenseAnomaliesOpen counts: a two-hour level shift is one anomaly, not eight (counting points of every
    # severity, the alert fired for 44 % of the hours of a real month; anomaly triage review D8)
    from shared import clock

    now = pd.Timestamp(clock.now()).floor("15min")
    row = {"source": SOURCE, "metric": "consommation", "detector": "residual", "value": 1.0, "value_version": 1,
           "model_version": "", "forecast_run_id": "", "detected_at": now, "run_id": "d", "status": "open",
           "resolution": ""}
    shift = [{**row, "kind": "level_shift", "severity": sev, "ts": now - pd.Timedelta(minutes=15 * k)}
             for k, sev in zip(range(3, 0, -1), ["low", "high", "medium"], strict=True)]
    later = {**row, "kind": "level_shift", "severity": "low", "ts": now - pd.Timedelta(hours=3)}  # a gap: another one
    flat = {**row, "kind": "flatline", "severity": "low", "ts": now - pd.Timedelta(hours=2)}
    store.insert_df("anomalies", pd.DataFrame([*shift, later, flat]))
    text = client.get("/metrics", headers={"Authorization": ""}).text
    events = {line.split("{")[1].split("}")[0]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("powersense_anomaly_events_open{")}
    assert events == {
        'kind="level_shift",metric="consommation",severity="high",source="eco2mix_national"': 1.0,
        'kind="level_shift",metric="consommation",severity="low",source="eco2mix_national"': 1.0,
        'kind="flatline",metric="consommation",severity="low",source="eco2mix_national"': 1.0,
    }


def test_metrics_expose_store_gauges(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    insert_forecast_run(store, december, utc(2023, 12, 24, 0, 0))
    with stage_run(store, "detect", "cron", None, None):
        pass
    text = client.get("/metrics", headers={"Authorization": ""}).text
    assert 'powersense_data_freshness_seconds{metric="consommation",source="eco2mix_national"}' in text
    assert 'powersense_forecast_age_seconds{metric="consommation",source="eco2mix_national"}' in text
    assert 'powersense_forecast_mape_ratio{horizon_day="1",metric="consommation",source="eco2mix_national"}' in text
    assert 'powersense_last_run_status{function="detect",status="success"} 1.0' in text


def _responses(code: str) -> float:
    return RESPONSES.labels(code)._value.get()


def test_the_open_routes_do_not_describe_an_unreachable_store(client: TestClient,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # /health and /metrics are open: they answered the driver's message (user, server version, internal URL)
    from shared import store as store_mod

    try:
        with monkeypatch.context() as unreachable:
            unreachable.setenv("POWERSENSE_CLICKHOUSE_URL", "http://powersense_reader@127.0.0.1:1")
            get_settings.cache_clear()
            store_mod.reset_store()
            answers = {path: client.get(path, headers={"Authorization": ""}) for path in ("/health", "/metrics")}
    finally:  # back to the test's database before its teardown drops it
        get_settings.cache_clear()
        store_mod.reset_store()
    for path, r in answers.items():
        assert r.status_code == 503, path
        assert r.json()["detail"] == "the store is unavailable (details in the query function's log)", path
        assert "127.0.0.1" not in r.text and "powersense_reader" not in r.text, path


def test_an_unauthorised_request_never_builds_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # the cache's fast path runs on the event loop: building the store there (a connection) blocked every
    # request while ClickHouse was slow, before the token was even checked
    from shared import store as store_mod
    from shared.query import api

    store_mod.reset_store()
    monkeypatch.setattr(store_mod, "get_store", lambda *a: pytest.fail("the fast path built the store"))
    assert api._current_database() is None


def test_every_response_is_counted_by_status_class(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    # the query-errors alert reads this counter where no gateway counts invocations (plain compose)
    before = {code: _responses(code) for code in ("2xx", "4xx", "5xx")}
    day = {"metric": "consommation", "start": "2023-12-15", "end": "2023-12-16"}
    assert client.get("/measurements", params=day).status_code == 200
    assert client.get("/measurements", params=day, headers={"Authorization": ""}).status_code == 401
    assert client.get("/measurements", params={**day, "interval": "7min"}).status_code in (400, 422)
    store.command(f"drop table {store.database}.anomalies")
    assert client.get("/anomalies").status_code == 503
    store.apply_schema()
    assert {code: _responses(code) - n for code, n in before.items()} == {"2xx": 1, "4xx": 2, "5xx": 1}
    text = client.get("/metrics", headers={"Authorization": ""}).text
    assert 'powersense_query_responses_total{code="5xx"}' in text


def test_a_request_that_raises_counts_as_a_server_error() -> None:
    # no response started: the server answers 500, and the counter says so
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def boom(request: object) -> None:
        raise RuntimeError("unexpected")

    app = Starlette(routes=[Route("/", boom)])
    count_responses(app)
    before = _responses("5xx")
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/").status_code == 500
    assert _responses("5xx") - before == 1


def test_new_data_is_visible_on_the_next_request(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    params = {"metric": "consommation", "start": "2023-12-20", "end": "2023-12-21", "version": "all"}
    before = client.get("/measurements", params=params).json()["count"]
    ts = utc(2023, 12, 20, 1, 0)
    store.insert_df("measurements", pd.DataFrame([{
        "ts": ts, "source": SOURCE, "metric": "consommation", "nature": "Données consolidées", "value": 50000.0,
        "ukey": ukey_of(ts, "consommation", "Données consolidées"), "version": 1, "batch_id": "b2"}]))
    after = client.get("/measurements", params=params).json()["count"]
    assert after == before + 1


def test_best_nature_wins_per_timestamp(client: TestClient, store: Store, december: pd.DataFrame) -> None:
    ts = utc(2023, 12, 20, 1, 0)
    store.insert_df("measurements", pd.DataFrame([{
        "ts": ts, "source": SOURCE, "metric": "consommation", "nature": "Données consolidées", "value": 50000.0,
        "ukey": ukey_of(ts, "consommation", "Données consolidées"), "version": 1, "batch_id": "b2"}]))
    window = {"metric": "consommation", "start": "2023-12-20T01:00:00Z", "end": "2023-12-20T01:15:00Z"}
    best = client.get("/measurements", params=window).json()["points"]
    realtime = client.get("/measurements", params={**window, "nature": december["nature"].iloc[0]}).json()["points"]
    assert [(p["value"], p["nature"]) for p in best] == [(50000.0, "Données consolidées")]
    assert realtime[0]["nature"].startswith("Données temps réel")


def test_handler_import_pulls_no_ml_stack(settings: Settings) -> None:
    code = (
        "import sys; from local_dev.functions import load_handler; load_handler('query'); "
        "bad = [m for m in ('torch', 'neuralprophet', 'lightning', 'pytorch_lightning') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_identical_concurrent_requests_run_the_query_once(client: TestClient, december: pd.DataFrame) -> None:
    app = load_handler("query").app
    params = {"metric": "consommation", "start": "2023-12-05", "end": "2023-12-06", "interval": "1h"}

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://query",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            return await asyncio.gather(*(c.get("/measurements", params=params) for _ in range(12)))

    misses = CACHE_REQUESTS.labels("miss")._value.get()
    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {200} and len({r.content for r in responses}) == 1
    assert CACHE_REQUESTS.labels("miss")._value.get() - misses == 1


def test_fast_path_serves_repeats_until_new_data(
    client: TestClient, store: Store, december: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERSENSE_QUERY_CACHE_TTL_S", "60")
    get_settings.cache_clear()
    params = {"metric": "consommation", "start": "2023-12-20", "end": "2023-12-21", "version": "all"}
    first = client.get("/measurements", params=params)
    fast_hits = CACHE_REQUESTS.labels("fast_hit")._value.get()
    repeat = client.get("/measurements", params=params)
    csv = client.get("/measurements", params=params, headers={"Accept": "text/csv"})
    assert repeat.content == first.content and repeat.headers["content-type"] == "application/json"
    assert csv.headers["content-type"].startswith("text/csv")
    assert CACHE_REQUESTS.labels("fast_hit")._value.get() == fast_hits + 1
    ts = utc(2023, 12, 20, 1, 0)
    store.insert_df("measurements", pd.DataFrame([{
        "ts": ts, "source": SOURCE, "metric": "consommation", "nature": "Données consolidées", "value": 50000.0,
        "ukey": ukey_of(ts, "consommation", "Données consolidées"), "version": 1, "batch_id": "b2"}]))
    query_cache().clear()  # stands in for the 60 s TTL elapsing: the watermark is re-read
    assert client.get("/measurements", params=params).json()["count"] == first.json()["count"] + 1


def test_through_the_embedded_gateway(client: TestClient, december: pd.DataFrame) -> None:
    gateway = create_gateway_app(functions=["query"], with_replay=False)
    with TestClient(gateway) as gw:
        url = "/function/query/measurements?metric=consommation&interval=30min"
        assert gw.get(url).status_code == 401
        r = gw.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["count"] == 336
        assert gw.get("/function/query/health").json()["store"] is True


def test_response_cache_is_bounded_in_bytes() -> None:
    c = QueryCache(ttl_s=1.0, max_entries=10, max_entry_bytes=50, max_total_bytes=100)
    for key in ("a", "b", "c"):
        c.put(key, key, size=40)
    c.put("huge", "huge", size=51)
    assert [c.get(k) for k in ("a", "b", "c", "huge")] == [None, "b", "c", None]


def test_forecast_points_say_which_source_each_lead_day_used(
    client: TestClient, store: Store, december: pd.DataFrame
) -> None:
    run = insert_forecast_run(store, december, utc(2023, 12, 21, 6, 5))
    # as forecast writes a blended run: lead day 1 from the model alone, day 2 a blend, the rest naive
    weight = run["horizon_day"].map(lambda d: 1.0 if d == 1 else 0.4 if d == 2 else 0.0)
    source = run["horizon_day"].map(lambda d: "model" if d == 1 else "blend" if d == 2 else "seasonal_naive")
    store.command(f"truncate table {store.settings.clickhouse_database}.forecasts")
    store.insert_df("forecasts", run.assign(model_weight=weight, yhat_source=source))
    points = client.get("/forecasts").json()["points"]
    by_day = {p["horizon_day"]: (p["yhat_source"], p["model_weight"]) for p in points}
    assert by_day[1] == ("model", 1.0) and by_day[2] == ("blend", 0.4) and by_day[5] == ("seasonal_naive", 0.0)
    csv_text = client.get("/forecasts", params={"horizon_day": 2, "format": "csv"}).text
    assert csv_text.splitlines()[0].endswith("yhat_source,model_weight") and ",blend,0.4" in csv_text


@pytest.mark.parametrize("path", ["/forecasts", "/forecasts/runs", "/forecasts/vs-actual", "/anomalies"])
@pytest.mark.parametrize(("params", "fragment"), [
    ({"metric": "conso"}, "unknown metric 'conso'; known metrics for eco2mix_national: "),
    ({"source": "eco2mix"}, "unknown source 'eco2mix'; known sources: "),
])
def test_a_misspelt_series_is_a_400_on_every_endpoint_that_takes_one(
    client: TestClient, december: pd.DataFrame, path: str, params: dict[str, str], fragment: str
) -> None:
    # only /measurements checked: the others answered 200 with nothing (an empty BI tile) or a misleading 404
    r = client.get(path, params={**params, "start": "2023-12-20", "end": "2023-12-21"} if "vs" in path or
                   "anomalies" in path else params)
    assert r.status_code == 400 and r.json()["error"] == "BadRequestError", r.text
    assert fragment in r.json()["detail"]


def test_the_default_daily_window_is_seven_whole_local_days_across_a_dst_change(client: TestClient,
                                                                                 store: Store) -> None:
    # reckoned as 7 × 24 h back from the end, a week holding the fall-back day began an hour into a local day: its
    # first "day" held 92 quarter-hours and a wrong mean
    load_history(store, "2023-10-19T22:00:00Z", "2023-10-30T23:00:00Z")
    body = client.get("/measurements", params={"metric": "consommation", "interval": "1d"}).json()
    assert (body["start"], body["end"]) == ("2023-10-23T22:00:00Z", "2023-10-30T23:00:00Z")
    assert len(body["points"]) == 7 and {p["n"] for p in body["points"]} == {96}


def test_a_resampled_window_cut_inside_buckets_is_widened_to_whole_ones(client: TestClient,
                                                                        december: pd.DataFrame) -> None:
    # naive dates are UTC midnights, 01:00 in Paris: the first "day" had 4 values and was stamped before start
    daily = client.get("/measurements", params={"metric": "consommation", "interval": "1d",
                                                 "start": "2023-12-05", "end": "2023-12-08"}).json()
    # [05 01:00, 08 01:00) Paris touches the local days 5 to 8: all four, whole
    assert (daily["start"], daily["end"]) == ("2023-12-04T23:00:00Z", "2023-12-08T23:00:00Z")
    assert [p["n"] for p in daily["points"]] == [96, 96, 96, 96]
    hourly = client.get("/measurements", params={"metric": "consommation", "interval": "1h",
                                                  "start": "2023-12-05T00:30:00Z",
                                                  "end": "2023-12-05T03:10:00Z"}).json()
    assert (hourly["start"], hourly["end"]) == ("2023-12-05T00:00:00Z", "2023-12-05T04:00:00Z")
    assert [p["n"] for p in hourly["points"]] == [4, 4, 4, 4]


@pytest.mark.parametrize("params", [{"metric": "consommation"},
                                    {"metric": "consommation", "nature": "Données temps réel"}])
def test_a_new_install_answers_no_data_yet_not_a_server_error(client: TestClient, params: dict[str, str]) -> None:
    # with no measurement stored, the series check let the request through and reading its natures raised KeyError: 500
    r = client.get("/measurements", params=params)
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError", r.text
