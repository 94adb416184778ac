"""poll against the real replay app over HTTP (uvicorn on 127.0.0.1), with injected faults,
followed by upsert-version on the real chDB store; real eco2mix data throughout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from local_dev.functions import load_handler
from shared import clock
from shared.app import settings_dep, store_dep
from shared.errors import SourceError
from shared.ingest.poll import plan_window, read_watermark
from shared.settings import Settings
from shared.store import Store
from tests.fixtures_ingest import (
    ECO2MIX,
    Fault,
    ReplayServer,
    add_copy,
    content,
    drop_from_page,
    drop_instants,
    inflate_total_count,
    ingest_settings,
    other_database,
    physical_duplicates,
    poll_once,
    repeat_previous_page,
    requests_where,
    serve_replay,
    set_clock,
    set_field,
    upsert_once,
)

H = timedelta(hours=1)
MIN = timedelta(minutes=1)
D = timedelta(days=1)
MARCH1 = datetime(2023, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    with serve_replay() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(replay: ReplayServer) -> Iterator[None]:
    replay.faults.reset()
    set_clock(datetime(2023, 12, 31, tzinfo=UTC))
    yield
    replay.faults.reset()
    clock.install(None)


@pytest.fixture
def cfg(settings: Settings, replay: ReplayServer) -> Settings:
    return ingest_settings(settings, replay)


def iso(ts: datetime) -> str:
    """An instant as the source spells date_heure."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _backfill(store: Store, cfg: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    run = poll_once(store, cfg, start=start, end=end)
    upsert_once(store, cfg)
    return run


def _reference(cfg: Settings, replay: ReplayServer, **poll_options: Any) -> list[tuple[Any, ...]]:
    """Content after one clean poll + upsert-version in a separate database (no faults)."""
    saved = (replay.faults.faults, replay.faults.count)
    replay.faults.reset()
    with other_database(cfg) as (ref_store, ref_cfg):
        poll_once(ref_store, ref_cfg, **poll_options)
        upsert_once(ref_store, ref_cfg)
        result = content(ref_store)
    replay.faults.faults, replay.faults.count = saved
    return result


# --- planning (pure) -------------------------------------------------------------------------------


def test_window_starts_at_watermark_minus_overlap() -> None:
    now = datetime(2023, 3, 10, 12, tzinfo=UTC)
    w = plan_window(now - 2 * H, now, overlap=24 * H, lookahead=48 * H, max_window=31 * D)
    assert w is not None and (w.start, w.end) == (now - 26 * H, now + 48 * H)


def test_window_is_capped_for_catch_up() -> None:
    now = datetime(2023, 3, 10, tzinfo=UTC)
    w = plan_window(now - 90 * D, now, overlap=24 * H, lookahead=48 * H, max_window=31 * D)
    assert w is not None and w.end - w.start == 31 * D and w.start == now - 90 * D - 24 * H


def test_window_without_watermark_reaches_back_one_max_window() -> None:
    now = datetime(2023, 3, 10, tzinfo=UTC)
    w = plan_window(None, now, overlap=24 * H, lookahead=48 * H, max_window=2 * D)
    assert w is not None and (w.start, w.end) == (now - 2 * D, now)


def test_explicit_backfill_window_overrides_watermark() -> None:
    now = datetime(2023, 3, 10, tzinfo=UTC)
    w = plan_window(now, now, overlap=H, lookahead=H, max_window=31 * D, start=MARCH1, end=MARCH1 + D)
    assert w is not None and (w.start, w.end) == (MARCH1, MARCH1 + D)


# --- the real HTTP path ----------------------------------------------------------------------------


def test_each_page_is_landed_with_its_own_batch_id(store: Store, cfg: Settings) -> None:
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + 3 * D)
    assert run["details"]["pages"] == 3 and run["rows_in"] == 288
    batches = store.query_rows("select batch_id, n_records from {db:Identifier}.raw_batches order by batch_id")
    assert [n for _, n in batches] == [100, 100, 88]
    assert len({b for b, _ in batches}) == 3
    assert store.scalar("select count() from {db:Identifier}.raw_records") == 288


def test_raw_payload_is_the_record_as_received(store: Store, cfg: Settings) -> None:
    poll_once(store, cfg, start=MARCH1, end=MARCH1 + timedelta(minutes=15))
    payload = json.loads(store.scalar("select payload from {db:Identifier}.raw_records"))
    assert payload["date_heure"] == "2023-03-01T00:00:00+00:00"
    assert (payload["date"], payload["heure"]) == ("2023-03-01", "01:00")


def test_window_is_read_whole_by_keyset_pages_at_offset_zero(
    store: Store, replay: ReplayServer, settings: Settings
) -> None:
    # keyset paging always asks offset 0, so the API's offset + limit ≤ 10 000 cap never splits a window
    cfg = ingest_settings(settings, replay)
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + 3 * D)
    assert run["rows_in"] == 288
    assert store.scalar(
        "select uniqExact(JSONExtractString(payload, 'date_heure')) from {db:Identifier}.raw_records"
    ) == 288
    offsets = {dict(kv.split("=", 1) for kv in req["query"].split("&"))["offset"] for req in replay.faults.log}
    assert offsets == {"0"} and len(replay.faults.log) >= 3  # 288 records need at least three 100-record pages


def test_cron_window_follows_the_measurement_watermark(store: Store, cfg: Settings) -> None:
    _backfill(store, cfg, MARCH1, MARCH1 + 2 * D)
    set_clock(MARCH1 + 2 * D + 6 * H)
    run = poll_once(store, cfg)
    last = MARCH1 + 2 * D - timedelta(minutes=15)
    assert run["details"]["watermark"] == last.isoformat()
    assert run["details"]["window_start"] == (last - 24 * H).isoformat()
    assert run["details"]["catching_up"] is False


def test_watermark_falls_back_to_landed_pages(store: Store, cfg: Settings) -> None:
    poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert read_watermark(store, cfg) == MARCH1 + D - timedelta(minutes=15)


def test_replay_clock_hides_the_future(store: Store, cfg: Settings) -> None:
    set_clock(MARCH1 + 6 * H)
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert run["rows_in"] == 25  # 00:00 … 06:00 inclusive


# --- faults ------------------------------------------------------------------------------------------


def test_http_500_is_retried(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    replay.faults.reset(Fault(n=1, status=500), Fault(n=2, status=502))
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert run["status"] == "success" and run["rows_in"] == 96
    assert replay.faults.count == 3


def test_http_429_is_retried_honouring_retry_after(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    replay.faults.reset(Fault(n=1, status=429, headers={"Retry-After": "0"}))
    assert poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)["rows_in"] == 96


def test_timeout_is_retried(store: Store, replay: ReplayServer, settings: Settings) -> None:
    cfg = ingest_settings(settings, replay, source_timeout_s=0.3)
    replay.faults.reset(Fault(n=1, delay_s=1.5))
    assert poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)["rows_in"] == 96


def test_persistent_failure_fails_the_run_clearly(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    replay.faults.reset(Fault(status=503))
    with pytest.raises(SourceError, match="HTTP 503"):
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    status, error = store.query_rows(
        "select status, error from {db:Identifier}.pipeline_runs final where function = 'poll'"
    )[0]
    assert status == "failed" and "SourceError" in error
    assert replay.faults.count == cfg.source_retries + 1


def test_retries_stop_at_the_time_budget(store: Store, replay: ReplayServer, settings: Settings) -> None:
    cfg = ingest_settings(settings, replay, source_retries=20, source_backoff_s=0.1, source_backoff_max_s=0.1,
                          source_retry_budget_s=0.3)
    replay.faults.reset(Fault(status=503))
    with pytest.raises(SourceError):
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert 2 <= replay.faults.count < 10


def test_a_retry_after_beyond_the_budget_ends_the_call_without_asking_again_early(
    store: Store, replay: ReplayServer, settings: Settings
) -> None:
    # Retry-After was capped at 30 s: the source, asking for 120 s, was asked again three times within the minute
    cfg = ingest_settings(settings, replay, source_retry_budget_s=5.0, source_backoff_max_s=30.0)
    replay.faults.reset(Fault(status=429, headers={"Retry-After": "120"}))
    with pytest.raises(SourceError, match="HTTP 429"):
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert replay.faults.count == 1


def test_no_attempt_outlasts_the_retry_budget(store: Store, replay: ReplayServer, settings: Settings) -> None:
    # each attempt had the full source timeout: a budget of 45 s ended after up to 65 s, past poll's exec_timeout
    cfg = ingest_settings(settings, replay, source_timeout_s=5.0, source_retry_budget_s=0.6, source_retries=5)
    replay.faults.reset(Fault(delay_s=3.0))
    with pytest.raises(SourceError, match="timeout"):
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert replay.faults.count == 1  # the one attempt was cut to the 0.6 s left; no retry could start after it


def test_a_catch_up_longer_than_the_run_budget_ends_truncated_and_the_next_tick_continues(
    store: Store, settings: Settings, replay: ReplayServer
) -> None:
    # nothing bounded a run's pages: a 31-day catch-up at 4 s a page ran 121 s against poll's 60 s exec_timeout
    cfg = ingest_settings(settings, replay, poll_max_window_days=3.0, poll_time_budget_s=0.5, source_page_size=96)
    set_clock(MARCH1 + 3 * D)
    replay.faults.reset(Fault(delay_s=0.3))
    first = poll_once(store, cfg)
    assert first["details"]["truncated"] is True and 1 <= first["details"]["pages"] < 4
    replay.faults.reset()
    second = poll_once(store, cfg)  # the next tick starts from what the first one landed
    assert second["details"]["window_start"] < first["details"]["window_end"]
    assert store.scalar("select count() from {db:Identifier}.raw_batches") > first["details"]["pages"]


def test_client_error_is_not_retried(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    replay.faults.reset(Fault(status=400))
    with pytest.raises(SourceError, match="HTTP 400"):
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert replay.faults.count == 1


def test_malformed_json_is_retried(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    replay.faults.reset(Fault(n=1, status=200, body=b'{"total_count": 96, "results": [{"perimetre": "Fra'))
    assert poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)["rows_in"] == 96


def test_json_without_results_fails_after_retries(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    replay.faults.reset(Fault(status=200, body=b'{"unexpected": true}'))
    with pytest.raises(SourceError, match="results"):
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert store.scalar("select count() from {db:Identifier}.raw_batches") == 0


def test_page_failing_halfway_keeps_landed_pages_and_next_tick_heals(
    store: Store, settings: Settings, replay: ReplayServer
) -> None:
    cfg = ingest_settings(settings, replay, poll_max_window_days=2.0)
    now = MARCH1 + 2 * D
    set_clock(now)
    expected = _reference(cfg, replay)
    attempts = cfg.source_retries + 1
    replay.faults.reset(*[Fault(n=2 + k, status=500) for k in range(attempts)])
    with pytest.raises(SourceError):
        poll_once(store, cfg)
    assert store.scalar("select count() from {db:Identifier}.raw_batches") == 1
    assert store.scalar("select count() from {db:Identifier}.raw_records") == 100
    replay.faults.reset()
    assert poll_once(store, cfg)["status"] == "success"  # the next cron tick
    upsert_once(store, cfg)
    # The healing tick's window reaches past the reference's end (now); compare the common range.
    assert [r for r in content(store) if r[4] < now.replace(tzinfo=None)] == expected


def test_duplicate_records_across_pages_create_one_version(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    expected = _reference(cfg, replay, start=MARCH1, end=MARCH1 + 2 * D)
    carried: dict[str, Any] = {}

    def repeat_last_record(doc: dict[str, Any], n: int) -> dict[str, Any]:
        if n == 1:
            carried["rec"] = doc["results"][-1]
        else:
            doc["results"] = [carried["rec"], *doc["results"]]
        return doc

    replay.faults.reset(Fault(transform=repeat_last_record))
    _backfill(store, cfg, MARCH1, MARCH1 + 2 * D)
    assert store.scalar("select count() from {db:Identifier}.raw_records") == 192 + 1
    assert content(store) == expected
    assert store.scalar("select max(version) from {db:Identifier}.measurements") == 1


def test_numbers_as_strings_from_the_source(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    expected = _reference(cfg, replay, start=MARCH1, end=MARCH1 + D)

    def stringify(doc: dict[str, Any], n: int) -> dict[str, Any]:
        for rec in doc["results"]:
            for k, v in rec.items():
                if isinstance(v, int | float):
                    rec[k] = str(v)
        return doc

    replay.faults.reset(Fault(transform=stringify))
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    assert content(store) == expected


def test_null_placeholders_from_the_source_create_no_rows(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    placeholders: list[Any] = [None, "ND", "", "N/A", "NA"]  # "NaN" is a dead letter now (issue 9)

    def blank(doc: dict[str, Any], n: int) -> dict[str, Any]:
        for rec, v in zip(doc["results"], placeholders, strict=False):
            rec["consommation"] = v
        return doc

    replay.faults.reset(Fault(transform=blank))
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    assert store.scalar("select count() from {db:Identifier}.rejected_records") == 0
    assert store.scalar("select count() from {db:Identifier}.measurements where metric = 'consommation'") == 91
    assert store.scalar("select count() from {db:Identifier}.measurements where metric = 'prevision_j1'") == 96


def test_unparseable_record_goes_to_dead_letter(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    def garble(doc: dict[str, Any], n: int) -> dict[str, Any]:
        doc["results"][0]["consommation"] = "beaucoup"
        doc["results"][1]["date_heure"] = "hier"
        return doc

    replay.faults.reset(Fault(transform=garble))
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    # The two instants have no usable record: dead letters with their reason, and (issue 9) a window
    # that is not complete — re-read in the run (the source garbles them again) and reported partial.
    assert run["status"] == "partial" and run["details"]["missing_open"] == 2
    assert run["details"]["rejected"] >= 2
    reasons = [r for (r,) in store.query_rows("select reason from {db:Identifier}.rejected_records order by record_no")]
    assert any("beaucoup" in r for r in reasons) and any(r.startswith("invalid record: date_heure") for r in reasons)
    upsert_once(store, cfg)
    assert store.scalar("select uniqExact(ts) from {db:Identifier}.measurements") == 94


# --- time ------------------------------------------------------------------------------------------


def test_spring_forward_day_has_92_quarter_hours_and_padding_is_rejected(store: Store, cfg: Settings) -> None:
    # Local day 2023-03-26 (Europe/Paris) = [2023-03-25T23:00Z, 2023-03-26T22:00Z): 23 hours.
    start, end = datetime(2023, 3, 25, 23, tzinfo=UTC), datetime(2023, 3, 26, 22, tzinfo=UTC)
    run = poll_once(store, cfg, start=start, end=end)
    upsert_once(store, cfg)
    assert run["rows_in"] == 96 and run["details"]["rejected"] == 4
    assert store.scalar(
        "select uniqExact(ts) from {db:Identifier}.measurements where metric = 'consommation'"
    ) == 92
    reasons = store.query_rows("select reason, payload from {db:Identifier}.rejected_records order by record_no")
    assert all(r.startswith("spring-forward padding") for r, _ in reasons)
    assert [json.loads(p)["heure"] for _, p in reasons] == ["02:00", "02:15", "02:30", "02:45"]


def test_refetched_bad_records_are_dead_lettered_once(store: Store, cfg: Settings) -> None:
    start, end = datetime(2023, 3, 25, 23, tzinfo=UTC), datetime(2023, 3, 26, 22, tzinfo=UTC)
    poll_once(store, cfg, start=start, end=end)
    again = poll_once(store, cfg, start=start, end=end)
    assert again["details"]["rejected"] == 4
    assert store.scalar("select sum(n_rejected) from {db:Identifier}.raw_batches") == 8
    assert store.scalar("select count() from {db:Identifier}.rejected_records") == 4


def test_fall_back_day_keeps_every_instant_of_the_data(store: Store, cfg: Settings) -> None:
    # Local day 2023-10-29 = [2023-10-28T22:00Z, 2023-10-29T23:00Z): 25 hours, 100 quarter-hours.
    start, end = datetime(2023, 10, 28, 22, tzinfo=UTC), datetime(2023, 10, 29, 23, tzinfo=UTC)
    slots = pd.date_range(start, end, freq="15min", inclusive="left")
    assert len(slots) == 100
    history = pd.read_csv(ECO2MIX / "eco2mix_national_2023.csv.gz", usecols=["date_heure", "consommation"])
    history["ts"] = pd.to_datetime(history["date_heure"], utc=True)
    in_day = history[(history["ts"] >= start) & (history["ts"] < end) & history["consommation"].notna()]
    _backfill(store, cfg, start, end)
    got = store.query_df(
        "select ts from {db:Identifier}.measurements where metric = 'consommation' order by ts"
    )["ts"]
    assert list(got) == list(in_day["ts"])
    # The data's documented hole: the first 02:xx hour (00:00–00:45Z) has no row; the second has.
    assert set(slots) - set(got) == set(pd.date_range("2023-10-29T00:00Z", periods=4, freq="15min"))
    assert store.scalar("select count() from {db:Identifier}.rejected_records") == 0


def test_30_minute_consumption_in_2015_is_not_filled(store: Store, cfg: Settings) -> None:
    start = datetime(2015, 6, 1, 22, tzinfo=UTC)
    _backfill(store, cfg, start, start + D)
    minutes = store.query_df(
        "select metric, toMinute(ts) as m, count() as n from {db:Identifier}.measurements group by metric, m"
    )
    cons = minutes[minutes["metric"] == "consommation"].set_index("m")["n"].to_dict()
    prev = minutes[minutes["metric"] == "prevision_j1"].set_index("m")["n"].to_dict()
    assert cons == {0: 24, 30: 24}
    assert prev == {0: 24, 15: 24, 30: 24, 45: 24}


# --- versions ----------------------------------------------------------------------------------------


def test_revised_value_creates_version_2_and_keeps_version_1(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    target = "2023-03-01T12:00:00+00:00"
    original: dict[str, float] = {}

    def revise(doc: dict[str, Any], n: int) -> dict[str, Any]:
        for rec in doc["results"]:
            if rec["date_heure"] == target:
                original["v"] = rec["consommation"]
                rec["consommation"] += 100
        return doc

    replay.faults.reset(Fault(transform=revise))
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    rows = store.query_rows(
        """select version, value from {db:Identifier}.measurements final
           where metric = 'consommation' and ts = {t:DateTime64(3, 'UTC')} order by version""",
        {"t": datetime.fromisoformat(target)},
    )
    assert rows == [(1, original["v"]), (2, original["v"] + 100)]
    latest = store.query_rows(
        """select version, value from {db:Identifier}.measurements_latest final
           where metric = 'consommation' and ts = {t:DateTime64(3, 'UTC')}""",
        {"t": datetime.fromisoformat(target)},
    )
    assert latest == [(2, original["v"] + 100)]


def test_running_poll_and_upsert_twice_changes_nothing(store: Store, cfg: Settings) -> None:
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    before = content(store)
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    second = upsert_once(store, cfg)
    assert run["rows_in"] == 96
    assert second["rows_out"] == 0 and second["details"]["batches"] == 1
    assert content(store) == before
    assert physical_duplicates(store) == 0
    assert upsert_once(store, cfg)["status"] == "skipped"


# --- through the handlers ------------------------------------------------------------------------------


def test_cron_invocation_with_empty_body(store: Store, cfg: Settings) -> None:
    set_clock(MARCH1 + 12 * H)
    apps = [load_handler("poll").app, load_handler("upsert-version").app]
    results = []
    for app in apps:
        app.dependency_overrides[settings_dep] = lambda: cfg
        app.dependency_overrides[store_dep] = lambda: store
        try:
            with TestClient(app) as client:
                resp = client.post("/", content=b"", headers={"X-Connector": "cron-connector"})
        finally:
            app.dependency_overrides.clear()
        assert resp.status_code == 200, resp.text
        results.append(resp.json())
    assert [r["status"] for r in results] == ["success", "success"]
    assert results[0]["trigger"] == "cron"
    assert results[1]["rows_out"] > 0


def test_backfill_body_through_the_handler(store: Store, cfg: Settings,
                                          admin_headers: dict[str, str]) -> None:
    app = load_handler("poll").app
    app.dependency_overrides[settings_dep] = lambda: cfg
    app.dependency_overrides[store_dep] = lambda: store
    try:
        with TestClient(app) as client:
            resp = client.post("/", json={"start": "2023-03-01T00:00:00Z", "end": "2023-03-03T00:00:00Z",
                                          "max_pages": 1}, headers=admin_headers)
    finally:
        app.dependency_overrides.clear()
    assert resp.status_code == 200, resp.text
    assert resp.json()["details"]["pages"] == 1 and resp.json()["details"]["truncated"] is True


# --- issue 9: trust nothing from the source ------------------------------------------------------------


def _history(start: datetime, end: datetime) -> pd.DataFrame:
    frame = pd.read_csv(ECO2MIX / "eco2mix_national_2023.csv.gz", usecols=["date_heure", "consommation"])
    frame["ts"] = pd.to_datetime(frame["date_heure"], utc=True)
    return frame[(frame["ts"] >= start) & (frame["ts"] < end)]


def _consumption(store: Store, ts: datetime) -> list[tuple[Any, ...]]:
    return store.query_rows(
        """select version, value, nature from {db:Identifier}.measurements final
           where metric = 'consommation' and ts = {t:DateTime64(3, 'UTC')} order by version""",
        {"t": ts},
    )


def _gaps(store: Store) -> list[tuple[Any, ...]]:
    return store.query_rows(
        "select day, status, length(missing), attempts from {db:Identifier}.poll_gaps final order by day"
    )


def test_foreign_perimeter_record_never_becomes_national_load(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    noon = MARCH1 + 12 * H
    replay.faults.reset(Fault(transform=add_copy(iso(noon), perimetre="Bretagne", consommation=5)))
    run = _backfill(store, cfg, MARCH1, MARCH1 + D)
    assert run["status"] == "success"
    rows = _consumption(store, noon)
    assert len(rows) == 1 and rows[0][1] == _history(noon, noon + 15 * MIN)["consommation"].iloc[0] != 5
    assert store.scalar("select uniqExact(ukey) from {db:Identifier}.measurements where ukey like '%Bretagne%'") == 0
    (reason,) = store.query_rows("select reason from {db:Identifier}.rejected_records")[0]
    assert reason == "perimetre 'Bretagne' is not the configured perimeter 'France'"


def test_off_grid_instant_cannot_replace_the_quarter_hour(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    noon = MARCH1 + 12 * H
    late = iso(noon).replace("12:00:00", "12:00:30")
    replay.faults.reset(Fault(transform=add_copy(iso(noon), date_heure=late, consommation=5)))
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    assert [r[1] for r in _consumption(store, noon)] == [_history(noon, noon + 15 * MIN)["consommation"].iloc[0]]
    assert store.scalar("select count() from {db:Identifier}.measurements where toSecond(ts) != 0") == 0
    (reason,) = store.query_rows("select reason from {db:Identifier}.rejected_records")[0]
    assert reason.startswith("off-grid: date_heure 2023-03-01T12:00:30+00:00")


def test_non_numbers_are_dead_letters_never_withdrawals(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    before = content(store)
    odd = {iso(MARCH1 + 12 * H): "Infinity", iso(MARCH1 + 12 * H + 15 * MIN): "-inf",
           iso(MARCH1 + 12 * H + 30 * MIN): "1_586", iso(MARCH1 + 12 * H + 45 * MIN): "\u0661\u0665\u0668\u0666",
           iso(MARCH1 + 13 * H): "NaN", iso(MARCH1 + 13 * H + 15 * MIN): " 47083 "}
    replay.faults.reset(Fault(transform=set_field(odd)))
    run = _backfill(store, cfg, MARCH1, MARCH1 + D)
    assert content(store) == before  # no NULL version, no 1586: nothing changed
    assert store.scalar("select max(version) from {db:Identifier}.measurements") == 1
    payloads = store.query_rows("select reason, payload from {db:Identifier}.rejected_records")
    assert {json.loads(p)["consommation"] for _, p in payloads} == set(odd.values())
    assert all(r.startswith("invalid record: consommation:") for r, _ in payloads)
    # the instants have no usable record in this read: reported, re-read later (issue 9)
    assert run["status"] == "partial" and run["details"]["missing_open"] == len(odd)


def test_repeated_page_during_a_31_day_catch_up_loses_nothing(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    # The case: during a 31-day catch-up the source answers one page twice (it rewrote rows
    # while we paged). Offset paging then skipped 100 instants and reported success.
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    set_clock(MARCH1 + 40 * D)
    replay.faults.reset(Fault(transform=repeat_previous_page(5)))
    run = poll_once(store, cfg)
    upsert_once(store, cfg)
    start, end = (datetime.fromisoformat(run["details"][k]) for k in ("window_start", "window_end"))
    assert end - start == 31 * D and run["details"]["catching_up"] is True
    got = store.query_df(
        """select distinct ts from {db:Identifier}.measurements
           where ts >= {a:DateTime64(3, 'UTC')} and ts < {b:DateTime64(3, 'UTC')} order by ts""",
        {"a": start, "b": end},
    )["ts"]
    assert list(got) == list(_history(start, end)["ts"])  # every instant of the window, in this same poll
    assert run["status"] == "success" and run["details"]["complete"] is True
    assert run["details"]["repeated_pages"] == 1
    assert _gaps(store) == []


def test_short_page_is_re_read_in_the_same_poll(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    replay.faults.reset(Fault(transform=drop_from_page(2, 10)))
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + 3 * D)
    upsert_once(store, cfg)
    assert store.scalar("select uniqExact(ts) from {db:Identifier}.measurements") == 288
    assert run["status"] == "success" and run["details"]["rereads"] == 1


def test_total_count_never_delivered_is_partial(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    replay.faults.reset(Fault(transform=inflate_total_count(3)))
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert run["status"] == "partial"
    assert run["details"]["count_short"] == {"received": 96, "total_count": 99}
    assert run["details"]["rereads"] == cfg.poll_reread_attempts


def test_keyset_paging_keeps_records_that_share_an_instant(
    store: Store, replay: ReplayServer, settings: Settings
) -> None:
    # Spring-forward day: the padding row of 01:00Z sorts right before the real one; a page of 9 ends
    # between them, and `date_heure > 01:00Z` alone would lose the real 01:00Z record.
    cfg = ingest_settings(settings, replay, source_page_size=9)
    start, end = datetime(2023, 3, 25, 23, tzinfo=UTC), datetime(2023, 3, 26, 22, tzinfo=UTC)
    run = poll_once(store, cfg, start=start, end=end)
    assert run["status"] == "success"
    assert store.scalar("select count() from {db:Identifier}.rejected_records") == 4  # the padding rows
    assert any(w == 'date_heure = "2023-03-26T01:00:00+00:00"' for w in requests_where(replay.faults))
    upsert_once(store, cfg)
    assert store.scalar(
        "select uniqExact(ts) from {db:Identifier}.measurements where metric = 'consommation'"
    ) == 92


def test_keyset_pages_never_use_offsets(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    poll_once(store, cfg, start=MARCH1, end=MARCH1 + 3 * D)
    wheres = requests_where(replay.faults)
    assert wheres[0].startswith('date_heure >= "2023-03-01T00:00:00+00:00"')
    assert wheres[1].startswith('date_heure > "2023-03-02T00:45:00+00:00"')
    assert all("offset=0" in e["query"] for e in replay.faults.log)


def test_dst_days_give_no_false_gaps(store: Store, cfg: Settings) -> None:
    for start, end in [(datetime(2023, 3, 25, 23, tzinfo=UTC), datetime(2023, 3, 26, 22, tzinfo=UTC)),
                       (datetime(2023, 10, 28, 22, tzinfo=UTC), datetime(2023, 10, 29, 23, tzinfo=UTC))]:
        run = poll_once(store, cfg, start=start, end=end)
        assert run["status"] == "success" and run["details"]["complete"] is True
    assert _gaps(store) == []


def test_real_source_gap_is_partial_then_source_incomplete(store: Store, cfg: Settings) -> None:
    # The shipped 2023 data lacks 94 quarter-hours of local day 2023-10-14 (data README): a real hole.
    start, end = datetime(2023, 10, 12, 22, tzinfo=UTC), datetime(2023, 10, 15, 22, tzinfo=UTC)
    now = datetime(2023, 12, 31, tzinfo=UTC)
    runs = []
    for k in range(cfg.poll_gap_max_attempts):
        set_clock(now + k * timedelta(minutes=cfg.poll_gap_retry_min))
        runs.append(poll_once(store, cfg, start=start, end=end))
        assert _gaps(store) == [(date(2023, 10, 14), "open" if k + 1 < cfg.poll_gap_max_attempts
                                 else "source_incomplete", 94, k + 1)]
    assert [r["status"] for r in runs] == ["partial"] * (cfg.poll_gap_max_attempts - 1) + ["success"]
    assert runs[-1]["details"]["missing_source_incomplete"] == 94
    # no spam: the known hole stays reported, later reads are success and write nothing new
    before = store.query_rows("select * from {db:Identifier}.poll_gaps final")
    set_clock(now + timedelta(days=1))
    assert poll_once(store, cfg, start=start, end=end)["status"] == "success"
    assert store.query_rows("select * from {db:Identifier}.poll_gaps final") == before
    from shared.ingest.poll import POLL_MISSING

    assert POLL_MISSING.labels("source_incomplete")._value.get() == 94.0


def test_a_record_rejected_on_every_read_is_not_reported_as_one_the_source_lacks(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    # the source sends 2023-03-01 12:00Z on every read, as "1_586": rejected each time (rejected_records). Its gap
    # ended "the source lacks them", sending the on-call engineer to the source instead of to rejected_records
    noon = MARCH1 + 12 * H
    replay.faults.reset(Fault(transform=set_field({iso(noon): "1_586"})))
    now = datetime(2023, 3, 10, tzinfo=UTC)
    for k in range(cfg.poll_gap_max_attempts):
        set_clock(now + k * timedelta(minutes=cfg.poll_gap_retry_min))
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    [(status, reason)] = store.query_rows("select status, reason from {db:Identifier}.poll_gaps final")
    assert status == "source_incomplete"
    assert "1 sent by the source and rejected (see rejected_records)" in reason and "lacks" not in reason


def test_open_gap_is_re_read_on_later_ticks_beyond_the_overlap(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    lost = {iso(MARCH1 + D + 12 * H + k * 15 * MIN) for k in range(8)}  # 2023-03-02 12:00–13:45Z
    set_clock(MARCH1 + 3 * D)
    replay.faults.reset(Fault(transform=drop_instants(lost)))
    first = poll_once(store, cfg)
    assert first["status"] == "partial" and first["details"]["missing_open"] == 8
    upsert_once(store, cfg)
    assert _gaps(store) == [(date(2023, 3, 2), "open", 8, 1)]
    # Days later the cron window (watermark − 24 h …) no longer covers 2023-03-02: the gap is re-read anyway.
    replay.faults.reset()
    set_clock(MARCH1 + 6 * D)
    poll_once(store, cfg)  # catches up to the new watermark first
    later = poll_once(store, cfg)
    assert datetime.fromisoformat(later["details"]["window_start"]) > MARCH1 + 2 * D
    assert _gaps(store) == [(date(2023, 3, 2), "resolved", 0, 1)]
    upsert_once(store, cfg)
    assert store.scalar(
        """select uniqExact(ts) from {db:Identifier}.measurements
           where ts in {ts:Array(DateTime64(3, 'UTC'))}""",
        {"ts": [datetime.fromisoformat(t) for t in lost]},
    ) == 8


def test_replaying_october_2023_flags_only_the_real_source_gap(store: Store, cfg: Settings) -> None:
    # A month of real data through cron catch-up ticks (fall-back day 2023-10-29 included): the only
    # gap is the source's own hole of 2023-10-14.
    _backfill(store, cfg, datetime(2023, 9, 30, 22, tzinfo=UTC), datetime(2023, 10, 1, 22, tzinfo=UTC))
    set_clock(datetime(2023, 11, 2, tzinfo=UTC))
    statuses = [poll_once(store, cfg)["status"] for _ in range(2)]
    assert statuses[0] == "partial"
    assert [(d, s, n) for d, s, n, _ in _gaps(store)] == [(date(2023, 10, 14), "open", 94)]


def test_dead_lettered_records_do_not_move_the_watermark(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    # A foreign-perimeter record dated weeks ahead, landed but dead-lettered, must not make the next
    # cron window skip ahead before upsert-version has run.
    noon = MARCH1 + 12 * H
    replay.faults.reset(Fault(transform=add_copy(iso(noon), perimetre="Bretagne", consommation=5,
                                                 date_heure=iso(MARCH1 + 20 * D), date=None, heure=None)))
    poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert store.scalar("select count() from {db:Identifier}.rejected_records") == 1
    assert read_watermark(store, cfg) == MARCH1 + D - timedelta(minutes=15)


# --- records that cannot be true when fetched ---------------------------------------------------------


def _empty(doc: dict[str, Any], n: int) -> dict[str, Any]:
    doc["results"], doc["total_count"] = [], 0
    return doc


def test_a_measured_value_dated_years_ahead_does_not_stop_the_polling(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    # One France copy dated 2031 used to become the watermark: every later window was empty ("skipped")
    _backfill(store, cfg, MARCH1, MARCH1 + D)
    set_clock(MARCH1 + D + 6 * H)
    replay.faults.reset(Fault(transform=add_copy(iso(MARCH1 + D + H), date_heure="2031-01-01T00:00:00+00:00",
                                                 date=None, heure=None)))
    poll_once(store, cfg)
    upsert_once(store, cfg)
    assert store.scalar("select count() from {db:Identifier}.rejected_records") == 1
    watermark = read_watermark(store, cfg)
    assert watermark is not None and watermark <= MARCH1 + D + 6 * H
    set_clock(MARCH1 + D + 7 * H)
    later = poll_once(store, cfg)
    assert later["status"] == "success" and later["rows_in"] > 0


@pytest.mark.parametrize("date_heure", [iso(MARCH1 + D + 20 * H), "2023-03-25T00:00:00"],
                         ids=["dated-after-its-fetch", "without-an-offset"])
def test_a_landed_record_upsert_version_will_reject_does_not_move_the_watermark(
    store: Store, cfg: Settings, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch, date_heure: str
) -> None:
    # before upsert-version runs, the watermark reads landed pages: the same rules as upsert-version's
    from shared.ingest import poll

    set_clock(MARCH1 + D + 2 * H)
    monkeypatch.setattr(poll, "_last_landing", None)  # fetched at this clock, not after an earlier test's
    replay.faults.reset(Fault(transform=add_copy(iso(MARCH1 + 12 * H), date_heure=date_heure,
                                                 date=None, heure=None)))
    poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    assert read_watermark(store, cfg) == MARCH1 + D - timedelta(minutes=15)


def test_a_page_with_an_unreadable_record_still_lands_the_others(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    # a 401-digit integer raised OverflowError out of parse_records: every poll of the window failed
    replay.faults.reset(Fault(transform=set_field({iso(MARCH1 + 12 * H): 10**400})))
    run = poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)
    upsert_once(store, cfg)
    assert run["details"]["rejected"] >= 1
    assert store.scalar("select count() from {db:Identifier}.rejected_records") == 1
    assert store.scalar("""select uniqExact(ts) from {db:Identifier}.measurements
                           where metric = 'consommation' and value is not null""") == 95


def test_an_empty_page_is_versioned_as_done(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    # HTTP 200 with no records: upsert-version used to fail on it (KeyError) at every run
    set_clock(MARCH1 + 2 * D)
    replay.faults.reset(Fault(transform=_empty))
    assert poll_once(store, cfg, start=MARCH1, end=MARCH1 + D)["status"] == "partial"
    run = upsert_once(store, cfg)
    assert run["status"] == "success" and run["details"]["batches"] >= 1
    assert store.scalar("""select count() from {db:Identifier}.raw_batches
                           where batch_id not in (select batch_id from {db:Identifier}.batch_versions)""") == 0


def test_a_watermark_after_now_still_re_reads_the_overlap() -> None:
    # a value stored ahead before instants were bounded by their fetch time must not stop the windows
    now = MARCH1 + 10 * D
    w = plan_window(now + 400 * D, now, overlap=24 * H, lookahead=48 * H, max_window=31 * D)
    assert w is not None and (w.start, w.end) == (now - 24 * H, now + 48 * H)


def test_the_run_budget_and_a_last_page_end_before_polls_exec_timeout() -> None:
    import yaml

    from shared.settings import REPO_ROOT

    exec_timeout = yaml.safe_load((REPO_ROOT / "openfaas-stack.yml").read_text())["functions"]["poll"]["environment"][
        "exec_timeout"]
    fields = Settings.model_fields
    worst = fields["poll_time_budget_s"].default + fields["source_timeout_s"].default
    assert worst < float(exec_timeout.rstrip("s")) - 5  # and time to record the run
