"""Ukeys and the latest-version lookup at their edges: UTC keys across the fall-back hour, one source's versions
never read as another's."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from shared.ingest.versioning import compute_versions, load_latest, make_ukeys, ukey_of, write_versions
from shared.store import Store


def _obs(stamps: list[str], values: list[float], nature: str = "Données temps réel") -> pd.DataFrame:
    ts = pd.Series(pd.to_datetime(stamps, utc=True))
    df = pd.DataFrame({"ts": ts, "metric": "consommation", "nature": nature, "perimetre": "France", "value": values})
    df["ukey"] = make_ukeys(df["ts"], df["metric"], df["nature"], df["perimetre"])
    return df


def test_ukeys_are_utc_so_the_repeated_fall_back_hour_keeps_both_instants() -> None:
    """00:30Z and 01:30Z on 2023-10-29 are both 02:30 in Paris: UTC keys keep both values."""
    obs = _obs(["2023-10-29T00:30Z", "2023-10-29T01:30Z"], [48_000.0, 47_000.0])
    assert obs["ukey"].tolist() == [ukey_of(t.to_pydatetime(), "consommation", "Données temps réel") for t in obs["ts"]]
    empty = pd.DataFrame({"ukey": pd.Series(dtype=object), "version": pd.Series(dtype="uint64"),
                          "value": pd.Series(dtype="float64")})
    assert compute_versions(obs, empty)["value"].tolist() == [48_000.0, 47_000.0]


def test_the_latest_version_of_another_source_is_not_this_sources(store: Store) -> None:
    """The ukey does not name the source: load_latest must filter on it."""
    obs = _obs(["2023-01-02T10:00Z"], [50_000.0])
    empty = pd.DataFrame({"ukey": pd.Series(dtype=object), "version": pd.Series(dtype="uint64"),
                          "value": pd.Series(dtype="float64")})
    write_versions(store, compute_versions(obs, empty), "other_source", "b0", chunk_rows=10)
    lo, hi = datetime(2023, 1, 2, tzinfo=UTC), datetime(2023, 1, 3, tzinfo=UTC)
    assert load_latest(store, "eco2mix_national", ["consommation"], lo, hi).empty
    # so the same value from this source is its version 1, not "unchanged"
    rows = compute_versions(obs, load_latest(store, "eco2mix_national", ["consommation"], lo, hi))
    assert rows["version"].tolist() == [1]
