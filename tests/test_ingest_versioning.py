"""Version assignment (pure function) and its thin I/O on the real chDB store."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from shared.ingest.versioning import (
    chunk_token,
    compute_versions,
    load_latest,
    make_ukeys,
    wide_to_long,
    write_versions,
)
from shared.store import Store

T0 = datetime(2023, 1, 2, 10, 0, tzinfo=UTC)


def _obs(values: list[float | None], metric: str = "consommation") -> pd.DataFrame:
    ts = pd.Series(pd.date_range(T0, periods=len(values), freq="15min"))
    df = pd.DataFrame({"ts": ts, "metric": metric, "nature": "Données temps réel", "perimetre": "France",
                       "value": pd.Series(values, dtype="float64")})
    df["ukey"] = make_ukeys(df["ts"], df["metric"], df["nature"], df["perimetre"])
    return df


def _latest(obs: pd.DataFrame, versions: list[int], values: list[float | None]) -> pd.DataFrame:
    return pd.DataFrame({"ukey": obs["ukey"].iloc[: len(versions)].tolist(), "version": versions,
                         "value": pd.Series(values, dtype="float64")})


EMPTY = pd.DataFrame({"ukey": pd.Series(dtype=object), "version": pd.Series(dtype="uint64"),
                      "value": pd.Series(dtype="float64")})


def test_new_ukey_with_value_gets_version_1() -> None:
    out = compute_versions(_obs([50000.0]), EMPTY)
    assert out["version"].tolist() == [1]
    assert out["value"].tolist() == [50000.0]


def test_null_for_unknown_ukey_creates_nothing() -> None:
    assert compute_versions(_obs([None]), EMPTY).empty


def test_unchanged_value_creates_nothing() -> None:
    obs = _obs([50000.0])
    assert compute_versions(obs, _latest(obs, [3], [50000.0])).empty


def test_changed_value_gets_next_version() -> None:
    obs = _obs([50100.0])
    out = compute_versions(obs, _latest(obs, [3], [50000.0]))
    assert out["version"].tolist() == [4]
    assert out["value"].tolist() == [50100.0]


def test_value_withdrawn_to_null_is_a_new_version() -> None:
    obs = _obs([None])
    out = compute_versions(obs, _latest(obs, [1], [50000.0]))
    assert out["version"].tolist() == [2]
    assert math.isnan(out["value"].iloc[0])


def test_null_again_after_null_creates_nothing() -> None:
    obs = _obs([None])
    assert compute_versions(obs, _latest(obs, [2], [None])).empty


def test_value_after_null_is_a_new_version() -> None:
    obs = _obs([49000.0])
    assert compute_versions(obs, _latest(obs, [2], [None]))["version"].tolist() == [3]


def test_repeated_ukey_in_one_batch_keeps_the_last_record() -> None:
    obs = pd.concat([_obs([1.0]), _obs([2.0])], ignore_index=True)
    out = compute_versions(obs, EMPTY)
    assert out["value"].tolist() == [2.0]


def test_mixed_batch() -> None:
    obs = _obs([1.0, 2.0, None, 4.0])
    out = compute_versions(obs, _latest(obs, [1, 1], [1.0, 20.0]))
    assert list(zip(out["ukey"], out["version"], strict=True)) == [(obs["ukey"][1], 2), (obs["ukey"][3], 1)]


def test_wide_history_to_long_keeps_nulls_for_versioning() -> None:
    wide = pd.DataFrame({"ts": pd.to_datetime(["2015-01-01T00:00Z", "2015-01-01T00:15Z"], utc=True),
                         "nature": ["Données définitives"] * 2, "consommation": [71506.0, np.nan],
                         "prevision_j1": [69900.0, 70250.0]})
    long = wide_to_long(wide, ["consommation", "prevision_j1", "prevision_j"])
    assert len(long) == 4
    assert long["value"].isna().sum() == 1


def test_chunk_token_depends_on_content() -> None:
    a = compute_versions(_obs([1.0, 2.0]), EMPTY)
    assert chunk_token("b", 0, a) == chunk_token("b", 0, a.copy())
    assert chunk_token("b", 0, a) != chunk_token("b", 0, a.iloc[1:])


def test_written_versions_are_the_latest_lookup(store: Store) -> None:
    obs = _obs([1.0, 2.0, 3.0])
    write_versions(store, compute_versions(obs, EMPTY), "eco2mix_national", "b1", chunk_rows=2)
    revised = _obs([1.0, 5.0, 3.0])
    write_versions(store, compute_versions(revised, load_latest(store, "eco2mix_national", ["consommation"],
                                                                T0, T0.replace(hour=11))), "eco2mix_national",
                   "b2", chunk_rows=2)
    latest = load_latest(store, "eco2mix_national", ["consommation"], T0, T0.replace(hour=11))
    got = dict(zip(latest["ukey"], zip(latest["version"], latest["value"], strict=True), strict=True))
    assert got == {obs["ukey"][0]: (1, 1.0), obs["ukey"][1]: (2, 5.0), obs["ukey"][2]: (1, 3.0)}
    assert store.scalar("select count() from {db:Identifier}.measurements") == 4


def test_identical_retry_of_an_insert_is_deduplicated(store: Store) -> None:
    rows = compute_versions(_obs([1.0, 2.0]), EMPTY)
    write_versions(store, rows, "eco2mix_national", "b1", chunk_rows=10)
    write_versions(store, rows, "eco2mix_national", "b1", chunk_rows=10)
    assert store.scalar("select count() from {db:Identifier}.measurements") == 2
