"""upsert-version and bootstrap: crash safety, serialization and bootstrap == upsert semantics,
on the real chDB store with pages polled from the real replay over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from local_dev.functions import load_handler
from shared import clock
from shared.app import settings_dep, store_dep
from shared.ingest import bootstrap as bootstrap_mod
from shared.ingest import versioning
from shared.ingest.bootstrap import bootstrap
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import utc_datetime
from tests.fixtures_ingest import (
    ECO2MIX,
    Fault,
    ReplayServer,
    content,
    ingest_settings,
    other_database,
    physical_duplicates,
    poll_once,
    serve_replay,
    set_clock,
    set_field,
    upsert_once,
)

D = timedelta(days=1)
JAN1 = datetime(2023, 1, 1, tzinfo=UTC)
MARCH1 = datetime(2023, 3, 1, tzinfo=UTC)
FILE_2023 = ECO2MIX / "eco2mix_national_2023.csv.gz"


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    with serve_replay() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(replay: ReplayServer) -> Iterator[None]:
    replay.faults.reset()
    set_clock(datetime(2023, 12, 31, tzinfo=UTC))
    yield
    clock.install(None)


@pytest.fixture
def cfg(settings: Settings, replay: ReplayServer) -> Settings:
    return ingest_settings(settings, replay)


def _revise(doc: dict[str, Any], n: int) -> dict[str, Any]:
    """What a later poll sees: some consumption values revised, some forecasts withdrawn."""
    for i, rec in enumerate(doc["results"]):
        if i % 7 == 0 and rec["consommation"] is not None:
            rec["consommation"] += 10
        if i % 11 == 0:
            rec["prevision_j"] = None
    return doc


def _land_revised_pages(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    """Three days polled twice (the second poll sees revisions), i.e. six pending pages."""
    poll_once(store, cfg, start=MARCH1, end=MARCH1 + 3 * D)
    replay.faults.reset(Fault(transform=_revise))
    try:
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + 3 * D)
    finally:
        replay.faults.reset()


def _clean_content(cfg: Settings, replay: ReplayServer) -> list[tuple[Any, ...]]:
    with other_database(cfg) as (ref, ref_cfg):
        _land_revised_pages(ref, ref_cfg, replay)
        upsert_once(ref, ref_cfg)
        return content(ref)


def _versions_are_contiguous(store: Store) -> bool:
    bad = store.scalar(
        """
        select count() from (
            select ukey, groupArray(version) as vs from (
                select ukey, version from {db:Identifier}.measurements final order by ukey, version)
            group by ukey having vs != arrayMap(i -> toUInt64(i), range(1, length(vs) + 1)))
        """
    )
    return bad == 0


class Crash(RuntimeError):
    """Injected failure."""


def test_crash_between_insert_and_marking_converges(
    store: Store, cfg: Settings, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _clean_content(cfg, replay)
    _land_revised_pages(store, cfg, replay)
    real_mark = versioning.mark_batch_done
    calls = {"n": 0}

    def crash_on_second_mark(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash("killed between insert and marking")
        real_mark(*args, **kwargs)

    monkeypatch.setattr(versioning, "mark_batch_done", crash_on_second_mark)
    with pytest.raises(Crash):
        upsert_once(store, cfg)
    monkeypatch.setattr(versioning, "mark_batch_done", real_mark)
    rerun = upsert_once(store, cfg)
    assert any(version == 2 for _, version, *_ in expected)
    assert rerun["details"]["batches"] == 5  # the first page was marked before the crash
    assert content(store) == expected
    assert physical_duplicates(store) == 0


def test_crash_mid_batch_converges(
    store: Store, cfg: Settings, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _clean_content(cfg, replay)
    _land_revised_pages(store, cfg, replay)
    real_insert = versioning._insert_chunk
    calls = {"n": 0}

    def crash_on_third_chunk(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash("killed mid-batch")
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(versioning, "_insert_chunk", crash_on_third_chunk)
    with pytest.raises(Crash):
        upsert_once(store, cfg, chunk_rows=50)
    monkeypatch.setattr(versioning, "_insert_chunk", real_insert)
    upsert_once(store, cfg, chunk_rows=50)
    assert content(store) == expected
    assert _versions_are_contiguous(store)


def test_crash_between_insert_and_reflag_still_flags_the_batch(
    store: Store, cfg: Settings, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a pod killed after the measurements insert and before reflag: the retry found the values stored, wrote nothing
    # and never judged them, so a 0 MW glitch was served as a real value for good
    glitch = MARCH1 + timedelta(hours=6)
    replay.faults.reset(Fault(transform=set_field({glitch.isoformat(): 0})))
    try:  # one page: no later batch of the retry judges its neighbourhood
        poll_once(store, cfg, start=MARCH1, end=MARCH1 + timedelta(hours=12))
    finally:
        replay.faults.reset()

    def killed(*args: Any, **kwargs: Any) -> int:
        raise Crash("killed between insert and reflag")

    monkeypatch.setattr(versioning, "reflag", killed)
    with pytest.raises(Crash):
        upsert_once(store, cfg)
    monkeypatch.undo()
    upsert_once(store, cfg)  # the retry
    reasons = store.query_rows(
        "select argMax(reason, flagged_at) from {db:Identifier}.measurement_flags "
        "where metric = 'consommation' and ts = {t:DateTime64(3, 'UTC')} group by ukey, version",
        {"t": glitch})
    assert reasons == [("non_positive",)]


def test_second_concurrent_invocation_is_skipped(
    store: Store, cfg: Settings, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _clean_content(cfg, replay)
    _land_revised_pages(store, cfg, replay)
    entered, release = threading.Event(), threading.Event()
    real_pending = versioning.pending_batches

    def slow_pending(*args: Any, **kwargs: Any) -> pd.DataFrame:
        entered.set()
        assert release.wait(30)
        return real_pending(*args, **kwargs)

    monkeypatch.setattr(versioning, "pending_batches", slow_pending)
    first: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: first.update(upsert_once(store, cfg)))
    worker.start()
    try:
        assert entered.wait(30)
        app = load_handler("upsert-version").app
        app.dependency_overrides[settings_dep] = lambda: cfg
        app.dependency_overrides[store_dep] = lambda: store
        try:
            with TestClient(app) as client:
                second = client.post("/", headers={"X-Connector": "cron-connector"}).json()
        finally:
            app.dependency_overrides.clear()
    finally:
        release.set()
        worker.join(60)
    assert second["status"] == "skipped"
    assert "running" in second["details"]["skip_reason"]
    assert first["status"] == "success"
    assert content(store) == expected
    assert _versions_are_contiguous(store) and physical_duplicates(store) == 0


def test_revisions_across_pending_pages_are_applied_in_landing_order(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    _land_revised_pages(store, cfg, replay)
    run = upsert_once(store, cfg)
    assert run["details"]["batches"] == 6
    t = datetime(2023, 3, 1, tzinfo=UTC)  # record 0 of the first page: revised by +10 on the second poll
    rows = store.query_rows(
        """select version, value from {db:Identifier}.measurements final
           where metric = 'consommation' and ts = {t:DateTime64(3, 'UTC')} order by version""",
        {"t": t},
    )
    assert len(rows) == 2 and rows[1] == (2, rows[0][1] + 10)
    withdrawn = store.query_rows(
        """select version, value from {db:Identifier}.measurements final
           where metric = 'prevision_j' and ts = {t:DateTime64(3, 'UTC')} order by version""",
        {"t": t},
    )
    assert [v for v, _ in withdrawn] == [1, 2] and withdrawn[1][1] is None


# --- bootstrap -----------------------------------------------------------------------------------------


def _history_cfg(cfg: Settings, until: str = "2023-01-08T00:00:00Z") -> Settings:
    return cfg.model_copy(update={"history_files": [FILE_2023], "history_until": until, "poll_bootstrap": True})


def test_bootstrap_equals_upsert_of_the_same_data(store: Store, cfg: Settings) -> None:
    hcfg = _history_cfg(cfg)
    result = bootstrap(store, hcfg, progress=False)
    assert result["status"] == "done" and result["records"] == 7 * 96
    with other_database(cfg) as (ref, ref_cfg):
        poll_once(ref, ref_cfg, start=JAN1, end=datetime(2023, 1, 8, tzinfo=UTC))
        upsert_once(ref, ref_cfg)
        polled = [r[:4] for r in content(ref)]
    assert [r[:4] for r in content(store)] == polled


def test_bootstrap_loads_only_non_null_values_before_until(store: Store, cfg: Settings) -> None:
    hcfg = _history_cfg(cfg)
    bootstrap(store, hcfg, progress=False)
    history = pd.read_csv(FILE_2023)
    history = history[pd.to_datetime(history["date_heure"], utc=True) < pd.Timestamp("2023-01-08T00:00Z")]
    expected = int(history[["consommation", "prevision_j1", "prevision_j"]].notna().sum().sum())
    assert store.scalar("select count() from {db:Identifier}.measurements") == expected
    assert store.scalar("select max(ts) from {db:Identifier}.measurements") == datetime(2023, 1, 7, 23, 45)


def test_bootstrap_runs_once(store: Store, cfg: Settings) -> None:
    hcfg = _history_cfg(cfg)
    bootstrap(store, hcfg, progress=False)
    again = bootstrap(store, hcfg, progress=False)
    assert again["status"] == "skipped" and "already" in again["reason"]


def test_bootstrap_resumes_after_a_crash(store: Store, cfg: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    hcfg = _history_cfg(cfg).model_copy(update={"upsert_chunk_rows": 500})
    with other_database(cfg) as (ref, ref_cfg):
        bootstrap(ref, hcfg.model_copy(update={"clickhouse_database": ref_cfg.clickhouse_database}), progress=False)
        expected = content(ref)
    real_insert = versioning._insert_chunk
    calls = {"n": 0}

    def crash_on_third_chunk(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash("killed during bootstrap")
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(versioning, "_insert_chunk", crash_on_third_chunk)
    with pytest.raises(Crash):
        bootstrap(store, hcfg, progress=False)
    monkeypatch.setattr(versioning, "_insert_chunk", real_insert)
    assert versioning.bootstrap_pending(store, hcfg)
    resumed = bootstrap(store, hcfg, progress=False)
    assert resumed["resumed"] is True
    assert content(store) == expected


def test_upsert_loads_a_pending_bootstrap_before_the_landed_pages(store: Store, cfg: Settings) -> None:
    hcfg = _history_cfg(cfg)
    poll_once(store, hcfg, start=MARCH1, end=MARCH1 + D)  # a backfill lands pages even while it is pending
    assert upsert_once(store, hcfg, bootstrap=False)["details"]["skip_reason"].startswith("history bootstrap")
    run = upsert_once(store, hcfg)
    assert run["status"] == "success" and run["details"]["bootstrap"]["status"] == "done"
    assert run["rows_out"] == run["details"]["bootstrap"]["rows_out"] + store.scalar(
        "select count() from {db:Identifier}.measurements where batch_id != 'bootstrap'")
    with other_database(cfg) as (ref, ref_cfg):  # the same content as history first, pages after
        bootstrap(ref, hcfg.model_copy(update={"clickhouse_database": ref_cfg.clickhouse_database}), progress=False)
        poll_once(ref, ref_cfg, start=MARCH1, end=MARCH1 + D)
        upsert_once(ref, ref_cfg)
        assert [r[:4] for r in content(store)] == [r[:4] for r in content(ref)]


def test_poll_waits_for_the_bootstrap_upsert_loads_it_then_poll_starts_after_the_history(
    store: Store, cfg: Settings
) -> None:
    hcfg = _history_cfg(cfg)
    set_clock(datetime(2023, 1, 8, 6, tzinfo=UTC))
    run = poll_once(store, hcfg)
    assert run["status"] == "skipped" and "bootstrap" in run["details"]["skip_reason"]
    assert not store.scalar("select count() from {db:Identifier}.raw_batches")
    boot = upsert_once(store, hcfg)  # the owner of measurements loads the history (no page landed yet)
    assert boot["status"] == "success" and boot["details"]["bootstrap"]["status"] == "done"
    assert boot["rows_out"] == boot["details"]["bootstrap"]["rows_out"] > 0
    run = poll_once(store, hcfg)
    assert run["details"]["watermark"] == "2023-01-07T23:45:00+00:00"
    upsert = upsert_once(store, hcfg)
    assert upsert["status"] == "success" and "bootstrap" not in upsert["details"]
    last = store.scalar("select max(ts) from {db:Identifier}.measurements where metric = 'consommation'")
    assert last == datetime(2023, 1, 8, 6, 0)


def test_bootstrap_cli(store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POWERSENSE_HISTORY_FILES", json.dumps([str(FILE_2023)]))
    from shared.settings import get_settings

    get_settings.cache_clear()
    assert bootstrap_mod.main(["--until", "2023-01-02T00:00:00Z", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "done" and out["records"] == 96


@pytest.mark.slow
def test_full_history_bootstrap(store: Store, settings: Settings) -> None:
    from shared.ingest.history import LOAD_COLUMNS, read_history

    result = bootstrap(store, settings.model_copy(update={"poll_bootstrap": True}), progress=False)
    history = read_history(settings.history_files)
    assert result["rows_out"] == int(history[list(LOAD_COLUMNS)].notna().sum().sum())
    # Definitive 2012–2019 consumption is half-hourly: no :15/:45 consumption was invented. (The 4
    # real-time rows of 2019-12-31T23:xxZ come from RTE's API, which is quarter-hourly.)
    quarter = store.scalar(
        """select count() from {db:Identifier}.measurements
           where metric = 'consommation' and nature = 'Données définitives'
             and toYear(ts) between 2012 and 2019 and toMinute(ts) in (15, 45)"""
    )
    assert quarter == 0
    assert store.scalar("select max(version) from {db:Identifier}.measurements") == 1


def _hide_records(store: Store, batch_id: str, keep: int) -> list[tuple[Any, ...]]:
    """What a lagging replica shows: the page's header, and only its first ``keep`` records."""
    hidden = store.query_rows(
        "select batch_id, record_no, fetched_at, source_url, payload from {db:Identifier}.raw_records final "
        "where batch_id = {b:String} and record_no >= {k:UInt32} order by record_no", {"b": batch_id, "k": keep})
    store.command("delete from {db:Identifier}.raw_records where batch_id = {b:String} and record_no >= {k:UInt32}",
                  {"b": batch_id, "k": keep})
    return hidden


def _landed(store: Store) -> list[str]:
    return [b for (b,) in store.query_rows(
        "select batch_id from {db:Identifier}.raw_batches final order by fetched_at, batch_id")]


def test_a_page_not_fully_readable_waits_with_the_pages_after_it(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    expected = _clean_content(cfg, replay)
    _land_revised_pages(store, cfg, replay)
    first, second = _landed(store)[:2]
    hidden = _hide_records(store, second, keep=10)
    waiting = upsert_once(store, cfg)
    assert waiting["details"]["held_batch"]["batch_id"] == second
    assert waiting["details"]["batches"] == 1  # the first page only: no version from part of a page
    done = {b for (b,) in store.query_rows("select batch_id from {db:Identifier}.batch_versions")}
    assert done == {first}
    cols = ["batch_id", "record_no", "fetched_at", "source_url", "payload"]
    store.insert_df("raw_records", pd.DataFrame(hidden, columns=cols))  # the replica caught up
    upsert_once(store, cfg)
    assert content(store) == expected


def test_a_page_still_short_after_the_grace_is_versioned_with_what_is_readable(
    store: Store, cfg: Settings, replay: ReplayServer
) -> None:
    _land_revised_pages(store, cfg, replay)
    landed = _landed(store)
    _hide_records(store, landed[1], keep=10)
    fetched = store.scalar("select max(fetched_at) from {db:Identifier}.raw_batches")
    set_clock(utc_datetime(fetched) + timedelta(seconds=versioning.RAW_READ_GRACE_S + 1))
    run = upsert_once(store, cfg)
    assert "held_batch" not in run["details"]
    assert run["details"]["batches"] == len(landed)  # versioning does not stop for good behind a lost record


def test_a_resumed_bootstrap_judges_the_values_a_killed_run_left_unjudged(
    store: Store, cfg: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # killed between a file's insert and its reflag, the resumed bootstrap found the file stored, wrote nothing
    # and judged nothing: a 0 MW glitch of the history was served as a real value
    week = pd.read_csv(FILE_2023)
    week = week[pd.to_datetime(week["date_heure"], utc=True) < pd.Timestamp("2023-01-08T00:00Z")].copy()
    glitch = "2023-01-03T06:00:00Z"
    week.loc[week["date_heure"] == glitch, "consommation"] = 0  # a real week, one value zeroed as RTE once sent
    path = tmp_path / FILE_2023.name
    week.to_csv(path, index=False)
    hcfg = _history_cfg(cfg).model_copy(update={"history_files": [path]})

    def killed(*args: Any, **kwargs: Any) -> int:
        raise Crash("killed between insert and reflag")

    monkeypatch.setattr(versioning, "reflag", killed)
    with pytest.raises(Crash):
        bootstrap(store, hcfg, progress=False)
    monkeypatch.undo()
    assert bootstrap(store, hcfg, progress=False)["resumed"] is True
    reasons = store.query_rows(
        "select argMax(reason, flagged_at) from {db:Identifier}.measurement_flags "
        "where metric = 'consommation' and ts = {t:DateTime64(3, 'UTC')} group by ukey, version",
        {"t": datetime(2023, 1, 3, 6, tzinfo=UTC)})
    assert reasons == [("non_positive",)]
