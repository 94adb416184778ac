"""The store layer on the embedded engine."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shared import store as store_mod
from shared.errors import StoreError
from shared.settings import Settings
from shared.store import DDL_DIR, Store


def _tables(store: Store) -> set[str]:
    return {r[0] for r in store.query_rows("select name from system.tables where database = {db:String}")}


def test_schema_is_idempotent(store: Store) -> None:
    before = _tables(store)
    store.command("drop table {db:Identifier}.schema_fingerprints")  # as a server initialised before it existed
    applied = store.apply_schema()
    assert applied > 0 and store.apply_schema() == 0
    assert _tables(store) == before
    assert {"measurements", "measurements_latest", "raw_records", "rejected_records", "pipeline_runs"} <= before


def test_a_current_schema_is_not_applied_again(store: Store) -> None:
    # the fixture's store applied it at start-up: a second process (the next cold start) runs nothing
    assert store.apply_schema() == 0
    rows = store.query_rows("select fingerprint, statements from {db:Identifier}.schema_fingerprints")
    assert len(rows) == 1 and len(rows[0][0]) == 64 and rows[0][1] > 0


def test_a_dropped_object_applies_the_schema_again(store: Store) -> None:
    store.command("drop table {db:Identifier}.anomalies")
    assert "anomalies" not in _tables(store)
    assert store.apply_schema() > 0
    assert "anomalies" in _tables(store)
    assert store.apply_schema() == 0


def _changed_ddl(tmp_path: Path) -> Path:
    """The shipped DDL plus one table: another release's schema."""
    ddl = tmp_path / "init"
    shutil.copytree(DDL_DIR, ddl)
    (ddl / "050.extra.sql").write_text("create table if not exists electricity.extra (x UInt8) engine = MergeTree "
                                       "order by x;\n")
    return ddl


def test_a_changed_ddl_is_applied(store: Store, tmp_path: Path) -> None:
    ddl = _changed_ddl(tmp_path)
    assert store.apply_schema(ddl) > 0
    assert "extra" in _tables(store)
    assert store.apply_schema(ddl) == 0
    rows = store.query_rows("select fingerprint from {db:Identifier}.schema_fingerprints")
    assert len({r[0] for r in rows}) == 2  # the shipped DDL's and the changed one's


def test_rolling_forward_after_a_roll_back_applies_the_schema_again(store: Store, tmp_path: Path) -> None:
    # another release's DDL applied last (a roll-back) replaced views with its bodies: the DDL recorded earlier is no
    # longer what the server holds, though its fingerprint is still in the table
    assert store.apply_schema(_changed_ddl(tmp_path)) > 0
    assert store.apply_schema() > 0  # the shipped DDL again, though it was recorded before the roll-back
    assert store.apply_schema() == 0


def test_nan_becomes_null(store: Store) -> None:
    df = pd.DataFrame(
        {
            "ts": [datetime(2023, 1, 1, tzinfo=UTC)] * 3,
            "source": ["s"] * 3,
            "metric": ["m"] * 3,
            "nature": ["n"] * 3,
            "value": [1.0, math.nan, float("inf")],
            "ukey": ["a", "b", "c"],
            "version": [1, 1, 1],
            "batch_id": ["b"] * 3,
        }
    )
    store.insert_df("measurements", df)
    rows = store.query_rows("select ukey, value from {db:Identifier}.measurements order by ukey")
    assert rows == [("a", 1.0), ("b", None), ("c", None)]


def test_parameters_are_bound_server_side(store: Store) -> None:
    hostile = "x'; drop table measurements; --"
    assert store.scalar("select {v:String}", {"v": hostile}) == hostile
    assert store.scalar("select count() from system.tables where database = {db:String} and name = 'measurements'") == 1


def test_a_failed_schema_apply_is_tried_again_by_the_next_call(settings: Settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # the process store used to be kept before its schema was applied: after one failure (a cluster host down, a
    # server restarting) every later call in that process ran on whatever schema the server held
    calls = []
    real = Store.apply_schema

    def flaky(self: Store, *args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise StoreError("ClickHouse command failed: Code: 159. Watching task is executing longer than "
                             "distributed_ddl_task_timeout")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "apply_schema", flaky)
    with pytest.raises(StoreError):
        store_mod.get_store(settings)
    store = store_mod.get_store(settings)
    assert len(calls) == 2 and "measurements" in _tables(store)
    assert store_mod.get_store(settings) is store and len(calls) == 2
