"""The measurements-writer lease (shared/lease.py): single-flight through ClickHouse, with expiry.

Two independent writers: every test that races uses two separate ``Store`` objects (each its own
connection-level lock, no Python lock in common) and two ``Lease`` objects with their own holder ids,
competing only through SQL on the real chDB engine, as two pods compete through a ClickHouse server.

Limitation (stated, not hidden): chDB allows one process per data directory, so the two writers are
two threads of one process rather than two OS processes or pods; the protocol they follow is the
same statements a server receives (a claim insert with a deduplication token, then a read-back).
A barrier makes both writers read the lease as free before either claims, which is the interleaving
a per-process lock could not exclude across pods.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from shared import clock
from shared.ingest import versioning
from shared.lease import MEASUREMENTS_WRITER, Lease, LeaseHeldError, LeaseLostError, LeaseState, state_from_rows
from shared.settings import REPO_ROOT, Settings
from shared.store import Store
from tests.fixtures_ingest import (
    Fault,
    ReplayServer,
    content,
    ingest_settings,
    other_database,
    physical_duplicates,
    poll_once,
    serve_replay,
    set_clock,
    upsert_once,
)
from tests.fixtures_topology import load_sam

LONG = 3600.0  # a TTL no test outlives
TINY = 0.001  # a TTL that has passed by the next statement (a crashed holder)


def _second_store(store: Store) -> Store:
    """An independent writer on the same database: its own Store, nothing shared in Python."""
    return Store(store.settings)


def _race(monkeypatch: pytest.MonkeyPatch, n: int = 2) -> None:
    """Make the first ``n`` lease-state reads wait for each other: all see the same state, then claim."""
    barrier = threading.Barrier(n, timeout=30)
    real_state = Lease.state
    left = {"n": n}
    guard = threading.Lock()

    def state(self: Lease) -> LeaseState:
        result = real_state(self)
        with guard:
            wait = left["n"] > 0
            left["n"] -= 1
        if wait:
            barrier.wait()
        return result

    monkeypatch.setattr(Lease, "state", state)


def _in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls concurrently; results (or the exception raised) in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            results[i] = call()
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _claims(store: Store, epoch: int) -> int:
    return int(store.scalar(
        "select count() from {db:Identifier}.leases where name = {n:String} and epoch = {e:UInt64} and kind = 'claim'",
        {"n": MEASUREMENTS_WRITER, "e": epoch},
    ))


# --- the pure state rule ---------------------------------------------------------------------------


def test_state_rule() -> None:
    t = datetime(2026, 1, 1)
    assert state_from_rows([]).free and state_from_rows([]).epoch == 0
    held = state_from_rows([(3, "claim", "A", t, 0)])
    assert not held.free and held.claimable_by("A") and not held.claimable_by("B") and held.epoch == 3
    assert state_from_rows([(3, "claim", "A", t, 1)]).free  # expired on the server's clock
    assert state_from_rows([(3, "claim", "A", t, 0), (3, "release", "A", t, 0)]).free
    # a release by anyone but the holder frees nothing
    assert not state_from_rows([(3, "claim", "A", t, 0), (3, "release", "B", t, 0)]).free


# --- two writers ---------------------------------------------------------------------------------


def test_concurrent_claims_of_one_epoch_have_exactly_one_winner(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    other = _second_store(store)
    a, b = Lease(store, MEASUREMENTS_WRITER, ttl_s=LONG), Lease(other, MEASUREMENTS_WRITER, ttl_s=LONG)
    _race(monkeypatch)
    won = _in_threads(a.try_acquire, b.try_acquire)
    assert sorted(won) == [False, True], won  # both saw the lease free, one claim landed
    assert _claims(store, 1) == 1  # the loser's claim block was deduplicated away
    winner, loser = (a, b) if won[0] else (b, a)
    assert winner.held and winner.epoch == 1 and not loser.held
    assert winner.holder in loser.describe_other()


def test_held_lease_refuses_others_until_released(store: Store) -> None:
    a, b = Lease(store, MEASUREMENTS_WRITER, ttl_s=LONG), Lease(_second_store(store), MEASUREMENTS_WRITER, ttl_s=LONG)
    assert a.acquire()
    assert not b.acquire()
    with pytest.raises(LeaseHeldError, match=re.escape(a.holder)):
        b.__enter__()
    a.release()
    assert not a.held and b.acquire() and b.epoch == 2


def test_renewal_moves_to_the_next_epoch_and_keeps_others_out(store: Store) -> None:
    a, b = Lease(store, MEASUREMENTS_WRITER, ttl_s=LONG), Lease(_second_store(store), MEASUREMENTS_WRITER, ttl_s=LONG)
    assert a.acquire() and a.epoch == 1
    a.renew()
    assert a.epoch == 2 and a.held
    assert not b.acquire()
    state = b.state()
    assert state.epoch == 2 and state.holder == a.holder and not state.free
    a.keep_alive()  # within the first third of the TTL: nothing to do
    assert a.epoch == 2


def test_a_crashed_holder_expires_and_cannot_renew_after_a_takeover(store: Store) -> None:
    crashed = Lease(store, MEASUREMENTS_WRITER, ttl_s=TINY)
    assert crashed.acquire()  # … and never releases
    successor = Lease(_second_store(store), MEASUREMENTS_WRITER, ttl_s=LONG)
    assert successor.acquire(wait_s=30)
    assert successor.epoch == 2
    with pytest.raises(LeaseLostError):
        crashed.renew()  # a holder that comes back late learns it lost, and must stop writing
    with pytest.raises(LeaseLostError):
        crashed.keep_alive()
    assert successor.state().holder == successor.holder


def test_a_late_renewal_racing_a_takeover_has_one_winner(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    late = Lease(store, MEASUREMENTS_WRITER, ttl_s=TINY)
    assert late.acquire()
    other = Lease(_second_store(store), MEASUREMENTS_WRITER, ttl_s=LONG)
    for _ in range(100_000):  # until the server's clock says epoch 1 expired (1 ms)
        if other.state().free:
            break
    _race(monkeypatch)
    renewed, taken = _in_threads(late.renew, other.try_acquire)
    assert (renewed is None) != (taken is True), (renewed, taken)  # exactly one owns epoch 2
    if renewed is not None:
        assert isinstance(renewed, LeaseLostError)
    assert _claims(store, 2) == 1


def test_context_manager_releases_on_error(store: Store) -> None:
    lease = Lease(store, MEASUREMENTS_WRITER, ttl_s=LONG)
    with pytest.raises(RuntimeError), lease:
        assert lease.held
        raise RuntimeError("stage failed")
    assert lease.state().free and not lease.held


# --- two concurrent upserts --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    with serve_replay() as server:
        yield server


@pytest.fixture
def cfg(settings: Settings, replay: ReplayServer) -> Iterator[Settings]:
    replay.faults.reset()
    set_clock(datetime(2023, 12, 31, tzinfo=UTC))
    yield ingest_settings(settings, replay)
    clock.install(None)


def _revise(doc: dict[str, Any], n: int) -> dict[str, Any]:
    for i, rec in enumerate(doc["results"]):
        if i % 5 == 0 and rec["consommation"] is not None:
            rec["consommation"] += 7
    return doc


def _land_overlapping_pages(store: Store, cfg: Settings, replay: ReplayServer) -> None:
    """The same two days polled twice (the second poll revises values): pending pages that overlap in ukeys."""
    start = datetime(2023, 3, 1, tzinfo=UTC)
    poll_once(store, cfg, start=start, end=start + timedelta(days=2))
    replay.faults.reset(Fault(transform=_revise))
    try:
        poll_once(store, cfg, start=start + timedelta(days=1), end=start + timedelta(days=3))
    finally:
        replay.faults.reset()


def _versions_contiguous(store: Store) -> bool:
    return store.scalar(
        """
        select count() from (
            select ukey, groupArray(version) as vs from (
                select ukey, version from {db:Identifier}.measurements final order by ukey, version)
            group by ukey having vs != arrayMap(i -> toUInt64(i), range(1, length(vs) + 1)))
        """
    ) == 0


def test_two_concurrent_upserts_never_duplicate_or_skip_a_version(
    store: Store, cfg: Settings, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with other_database(cfg) as (ref, ref_cfg):
        _land_overlapping_pages(ref, ref_cfg, replay)
        upsert_once(ref, ref_cfg)
        expected = content(ref)
    assert any(version == 2 for _, version, *_ in expected)  # the overlap revises values
    _land_overlapping_pages(store, cfg, replay)
    other = _second_store(store)
    _race(monkeypatch)
    # overlapping work: one writer takes two pages per invocation, the other every pending page
    first = _in_threads(lambda: upsert_once(store, cfg, max_batches=2), lambda: upsert_once(other, cfg))
    statuses = sorted(r["status"] for r in first)
    assert statuses == ["skipped", "success"], first
    assert "running" in next(r for r in first if r["status"] == "skipped")["details"]["skip_reason"]
    for _ in range(10):  # both writers keep ticking concurrently until nothing is pending
        runs = _in_threads(lambda: upsert_once(store, cfg, max_batches=2), lambda: upsert_once(other, cfg))
        if all(r["status"] == "skipped" and "no landed" in r["details"].get("skip_reason", "") for r in runs):
            break
    assert versioning.pending_batches(store, 100).empty
    assert content(store) == expected
    assert _versions_contiguous(store) and physical_duplicates(store) == 0
    assert Lease(store, MEASUREMENTS_WRITER, ttl_s=LONG).state().free  # every invocation released it


def test_bootstrap_skips_while_another_writer_holds_the_lease(store: Store, cfg: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.ingest import bootstrap as bootstrap_mod

    monkeypatch.setattr(bootstrap_mod, "LEASE_WAIT_S", 0.0)
    holder = Lease(_second_store(store), MEASUREMENTS_WRITER, ttl_s=LONG)
    assert holder.acquire()
    result = bootstrap_mod.bootstrap(store, cfg.model_copy(update={"history_until": "2023-01-02T00:00:00Z"}),
                                     progress=False)
    assert result["status"] == "skipped" and holder.holder in result["reason"]
    assert not versioning.bootstrap_done(store)
    holder.release()
    done = bootstrap_mod.bootstrap(store, cfg.model_copy(update={"history_until": "2023-01-02T00:00:00Z"}),
                                   progress=False)
    assert done["status"] == "done" and versioning.bootstrap_done(store)


# --- configuration ----------------------------------------------------------------------------------


def _seconds(go_duration: str | int) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(go_duration).strip())
    assert m, go_duration
    return float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m[2]]


def test_default_ttl_exceeds_every_writer_timeout() -> None:
    """A lease must outlive an invocation of each stage that holds one with this TTL (upsert-version, which also
    loads the history; featurize, under the same lease; poll-weather's weather-writer lease; detect's)."""
    ttl = Settings.model_fields["upsert_lease_ttl_s"].default
    stack = yaml.safe_load((REPO_ROOT / "openfaas-stack.yml").read_text())
    holders = {"upsert-version", "poll-weather", "featurize", "detect"}
    for name in holders:
        env = stack["functions"][name]["environment"]
        assert ttl > _seconds(env["exec_timeout"]), name
    sam = (REPO_ROOT / "template.yaml").read_text()
    timeouts = {m[1]: float(m[2]) for m in
                re.finditer(r"STAGE: (poll-weather|upsert-version|featurize|detect)\n(?:.*\n)*?\s+Timeout: (\d+)",
                            sam)}
    assert set(timeouts) == holders
    assert all(ttl > t for t in timeouts.values()), timeouts


def test_a_clickhouse_statement_gives_up_before_its_function_times_out() -> None:
    # 300 s before: a ClickHouse that accepted and never answered held every statement, and query's /health, past
    # each exec_timeout, so the watchdog's 504 came instead of the typed 503
    default = Settings.model_fields["clickhouse_timeout_s"].default
    stack = yaml.safe_load((REPO_ROOT / "openfaas-stack.yml").read_text())
    for name, fn in stack["functions"].items():
        env = fn["environment"]
        assert float(env.get("POWERSENSE_CLICKHOUSE_TIMEOUT_S", default)) < _seconds(env["exec_timeout"]), name
    sam = load_sam()
    shared_env = sam["Globals"]["Function"]["Environment"]["Variables"]
    for fn in (r for r in sam["Resources"].values() if r["Type"] == "AWS::Serverless::Function"):
        env = {**shared_env, **fn["Properties"].get("Environment", {}).get("Variables", {})}
        assert float(env.get("POWERSENSE_CLICKHOUSE_TIMEOUT_S", default)) < fn["Properties"]["Timeout"]
