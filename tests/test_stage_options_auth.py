"""A stage's request options need the admin token; the scheduler's empty body needs none.

OpenFaaS leaves /function/* open (its gateway authenticates /system/* only): without this, anyone who reached
the gateway could train models back to back (force_train), re-run the history bootstrap, or hold a stage's only
slot with backfills while the scheduler's ticks got 429 (reproduced by a review through the embedded gateway)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from local_dev.functions import load_handler
from shared.app import store_dep
from shared.store import Store


@pytest.fixture
def forecast(store: Store) -> Iterator[TestClient]:
    app = load_handler("forecast").app
    app.dependency_overrides[store_dep] = lambda: store
    try:
        yield TestClient(app)
    finally:
        app.dependency_overrides.clear()


def _runs(store: Store) -> int:
    return int(store.scalar("select uniqExact(run_id) from {db:Identifier}.pipeline_runs where function = 'forecast'"))


def test_options_without_the_admin_token_are_refused_before_any_work(
        forecast: TestClient, store: Store, admin_headers: dict[str, str]) -> None:
    r = forecast.post("/", json={"force_train": True})
    assert r.status_code == 401 and r.json()["error"] == "AuthError"
    assert "Authorization: Bearer <admin token>" in r.json()["detail"]
    assert _runs(store) == 0  # nothing ran: no training, no run recorded


def test_a_wrong_admin_token_is_refused(forecast: TestClient, store: Store, admin_headers: dict[str, str]) -> None:
    r = forecast.post("/", json={"force_train": True}, headers={"Authorization": "Bearer not-the-token"})
    assert r.status_code == 401 and _runs(store) == 0


def test_options_are_refused_while_no_admin_token_is_configured(
        forecast: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import get_settings

    monkeypatch.delenv("POWERSENSE_ADMIN_TOKEN", raising=False)
    get_settings.cache_clear()
    r = forecast.post("/", json={"train": False}, headers={"Authorization": "Bearer "})
    assert r.status_code == 401 and "none is configured (POWERSENSE_ADMIN_TOKEN" in r.json()["detail"]


@pytest.mark.parametrize("body", [b"", b"{}", b"null"])
def test_the_schedulers_call_needs_no_token(forecast: TestClient, store: Store, admin_headers: dict[str, str],
                                            body: bytes) -> None:
    # the cron-connector posts an empty body; an empty object asks for nothing either
    r = forecast.post("/", content=body, headers={"Content-Type": "application/json",
                                                   "X-Connector": "cron-connector"})
    assert r.status_code == 200, r.text
    assert _runs(store) == 1


@pytest.mark.parametrize(("function", "body"), [
    ("poll", {"strat": "2023-11-01T00:00:00Z"}), ("poll-weather", {"past": 3}), ("upsert-version", {"batch": "x"}),
    ("featurize", {"start": "2023-11-01T00:00:00Z"}), ("forecast", {"force_trian": True}),
    ("detect", {"start": "2023-11-01T00:00:00Z", "ned": "2023-11-02T00:00:00Z"}),
])
def test_an_unknown_option_is_refused_before_any_work(store: Store, admin_headers: dict[str, str], function: str,
                                                     body: dict[str, object]) -> None:
    # a misspelled backfill window ran the scheduled default without a word (and without asking for the token)
    app = load_handler(function).app
    app.dependency_overrides[store_dep] = lambda: store
    try:
        r = TestClient(app).post("/", json=body, headers=admin_headers)
    finally:
        app.dependency_overrides.clear()
    assert r.status_code == 422 and r.json()["error"] == "BadRequestError", r.text
    assert store.scalar("select count() from {db:Identifier}.pipeline_runs") == 0


@pytest.mark.parametrize("body", [b"", b"{}", b"null"])
def test_featurize_runs_on_the_schedulers_empty_body(store: Store, body: bytes) -> None:
    app = load_handler("featurize").app
    app.dependency_overrides[store_dep] = lambda: store
    try:
        r = TestClient(app).post("/", content=body, headers={"Content-Type": "application/json"})
    finally:
        app.dependency_overrides.clear()
    assert r.status_code == 200 and r.json()["function"] == "featurize", r.text
