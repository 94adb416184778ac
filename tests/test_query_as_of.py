"""The query API's as-of reads at their edges: revisions and verdicts known at as_of for version=all and latest,
the nature filter of version=all, and the best nature over a later version (each test fails on a plausible one-line
change of the SQL that every other test let through)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from local_dev.functions import load_handler
from shared.ingest.versioning import ukey_of
from shared.settings import get_settings
from shared.store import Store
from tests.fixtures_query import SOURCE, load_history, utc

TOKEN = "query-test-token-4f1c"
TS = utc(2023, 12, 20, 12, 0)
WINDOW = {"metric": "consommation", "start": "2023-12-20T12:00:00Z", "end": "2023-12-20T12:15:00Z"}


@pytest.fixture
def client(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("POWERSENSE_QUERY_TOKEN", TOKEN)
    monkeypatch.setenv("POWERSENSE_QUERY_CACHE_TTL_S", "0")
    get_settings.cache_clear()
    with TestClient(load_handler("query").app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


@pytest.fixture
def december(store: Store) -> pd.DataFrame:
    return load_history(store, "2023-12-15", "2023-12-22")


def _row(ts, nature, value, version, inserted_at, batch="revision"):  # noqa: ANN001, ANN202
    return {"ts": ts, "source": SOURCE, "metric": "consommation", "nature": nature, "value": value,
            "ukey": ukey_of(ts, "consommation", nature), "version": version, "batch_id": batch,
            "inserted_at": inserted_at}


def _first_known(store: Store) -> pd.Timestamp:
    return pd.Timestamp(store.scalar("select max(inserted_at) from {db:Identifier}.measurements")).tz_localize("UTC")


def test_version_all_as_of_hides_revisions_inserted_later(client: TestClient, store: Store,
                                                          december: pd.DataFrame) -> None:
    """version=all as of T lists the revisions inserted at or before T, none after."""
    nature = december.loc[december.ts == TS, "nature"].iloc[0]
    original = float(december.loc[december.ts == TS, "consommation"].iloc[0])
    revised_at = _first_known(store) + timedelta(hours=1)
    store.insert_df("measurements", pd.DataFrame([_row(TS, nature, original + 1234.0, 2, revised_at)]))
    before = client.get("/measurements", params={**WINDOW, "version": "all",
                                                  "as_of": (revised_at - timedelta(minutes=30)).isoformat()})
    at = client.get("/measurements", params={**WINDOW, "version": "all", "as_of": revised_at.isoformat()})
    assert [(p["version"], p["value"]) for p in before.json()["points"]] == [(1, original)]
    assert [(p["version"], p["value"]) for p in at.json()["points"]] == [(1, original), (2, original + 1234.0)]


def _flag(store: Store, nature: str, value: float, reason: str, at: pd.Timestamp) -> None:
    store.insert_df("measurement_flags", pd.DataFrame([{
        "ts": TS, "source": SOURCE, "metric": "consommation", "nature": nature,
        "ukey": ukey_of(TS, "consommation", nature), "version": 1, "value": value, "reason": reason,
        "flagged_at": at.tz_localize(None)}]))


@pytest.mark.parametrize("version", ["latest", "all"])
def test_a_verdict_is_read_as_known_at_as_of(client: TestClient, store: Store, december: pd.DataFrame,
                                             version: str) -> None:
    """Version 1 flagged at F1 and cleared at F2: as_of between them reads it flagged, now reads it cleared."""
    nature = december.loc[december.ts == TS, "nature"].iloc[0]
    value = float(december.loc[december.ts == TS, "consommation"].iloc[0])
    f1 = _first_known(store) + timedelta(hours=1)
    f2 = f1 + timedelta(hours=1)
    _flag(store, nature, value, "impossible_jump", f1)
    _flag(store, nature, value, "", f2)
    between = client.get("/measurements", params={**WINDOW, "version": version,
                                                   "as_of": (f1 + timedelta(minutes=30)).isoformat()})
    now = client.get("/measurements", params={**WINDOW, "version": version})
    assert [(p["value"], p["flag"]) for p in between.json()["points"]] == [(None, "impossible_jump")]
    assert [(p["value"], p["flag"]) for p in now.json()["points"]] == [(value, "")]


def test_version_all_with_a_nature_returns_only_that_nature(client: TestClient, store: Store,
                                                            december: pd.DataFrame) -> None:
    """version=all honours the nature filter."""
    nature = december.loc[december.ts == TS, "nature"].iloc[0]
    store.insert_df("measurements", pd.DataFrame([_row(TS, "Données consolidées", 50_000.0, 1,
                                                       _first_known(store))]))
    pts = client.get("/measurements", params={**WINDOW, "version": "all", "nature": nature}).json()["points"]
    assert [p["nature"] for p in pts] == [nature]


def test_the_best_nature_wins_over_a_later_version_or_insertion_of_a_lower_one(
        client: TestClient, store: Store, december: pd.DataFrame) -> None:
    """A real-time value revised to version 3 after a consolidated version 1 still yields to it (versions of
    different natures are not comparable: the nature is part of the ukey)."""
    nature = december.loc[december.ts == TS, "nature"].iloc[0]
    assert nature.startswith("Données temps réel")
    t0 = _first_known(store)
    store.insert_df("measurements", pd.DataFrame([
        _row(TS, "Données consolidées", 50_000.0, 1, t0 + timedelta(minutes=1)),
        _row(TS, nature, 51_000.0, 2, t0 + timedelta(minutes=2)),
        _row(TS, nature, 52_000.0, 3, t0 + timedelta(minutes=3)),
    ]))
    pts = client.get("/measurements", params=WINDOW).json()["points"]
    assert [(p["value"], p["nature"], p["version"]) for p in pts] == [(50_000.0, "Données consolidées", 1)]
