"""The store layer on the embedded engine."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd

from shared.store import Store


def test_schema_is_idempotent(store: Store) -> None:
    first = store.apply_schema()
    second = store.apply_schema()
    assert first == second > 0
    tables = {r[0] for r in store.query_rows("select name from system.tables where database = {db:String}")}
    assert {"measurements", "measurements_latest", "raw_records", "rejected_records", "pipeline_runs"} <= tables


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
