"""Bearer-token authentication of the query function (OpenFaaS secret file, constant-time check)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from local_dev.functions import load_handler
from shared.query.metrics import CACHE_REQUESTS
from shared.settings import get_settings
from shared.store import Store

SECRET = "s3cr3t-query-token-for-auth-tests"


@pytest.fixture
def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An OpenFaaS-style secrets directory holding query_token (with the trailing newline editors add)."""
    (tmp_path / "query_token").write_text(SECRET + "\n")
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("POWERSENSE_QUERY_TOKEN", raising=False)
    get_settings.cache_clear()
    return tmp_path


@pytest.fixture
def anonymous(store: Store, secrets_dir: Path) -> Iterator[TestClient]:
    """A client without credentials."""
    with TestClient(load_handler("query").app) as c:
        yield c


def _protected_paths(client: TestClient) -> list[str]:
    paths = client.get("/openapi.json").json()["paths"]
    return [p for p in paths if p not in ("/health", "/metrics")]


def test_missing_token_is_401_with_a_bearer_challenge(anonymous: TestClient) -> None:
    r = anonymous.get("/runs")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json() == {"error": "AuthError", "detail": "missing bearer token"}


def test_every_data_route_requires_the_token(anonymous: TestClient) -> None:
    paths = _protected_paths(anonymous)
    assert len(paths) >= 9
    assert {p: anonymous.get(p).status_code for p in paths} == {p: 401 for p in paths}


@pytest.mark.parametrize("header", [f"Bearer {SECRET}x", "Bearer ", f"Basic {SECRET}", SECRET, f"Bearer {SECRET[:-1]}"])
def test_invalid_credentials_are_401(anonymous: TestClient, header: str) -> None:
    r = anonymous.get("/runs", headers={"Authorization": header})
    assert r.status_code == 401
    assert SECRET not in r.text


def test_token_from_the_openfaas_secret_file_is_accepted(anonymous: TestClient) -> None:
    r = anonymous.get("/runs", headers={"Authorization": f"Bearer {SECRET}"})
    assert r.status_code == 200, r.text


def test_health_and_metrics_stay_open(anonymous: TestClient) -> None:
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/metrics").status_code == 200


def test_without_a_configured_token_everything_is_refused(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path))  # empty: no query_token file
    monkeypatch.delenv("POWERSENSE_QUERY_TOKEN", raising=False)
    get_settings.cache_clear()
    with TestClient(load_handler("query").app) as c:
        for header in ("Bearer ", "Bearer None", "Bearer null"):
            assert c.get("/runs", headers={"Authorization": header}).status_code == 401


def test_credentials_never_reach_logs_or_responses(anonymous: TestClient, capfd: pytest.CaptureFixture[str]) -> None:
    wrong = "wrong-" + SECRET
    anonymous.get("/runs", headers={"Authorization": f"Bearer {wrong}"})
    ok = anonymous.get("/runs", headers={"Authorization": f"Bearer {SECRET}"})
    anonymous.get("/metrics")
    out, err = capfd.readouterr()
    assert ok.status_code == 200
    for text in (out, err, ok.text, anonymous.get("/openapi.json").text):
        assert SECRET not in text and wrong not in text


@pytest.fixture
def cached_app(anonymous: TestClient, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """The same client with a long watermark TTL, so the ASGI fast path is in play."""
    monkeypatch.setenv("POWERSENSE_QUERY_CACHE_TTL_S", "60")
    get_settings.cache_clear()
    return anonymous


def test_fast_path_still_requires_the_token(cached_app: TestClient) -> None:
    good = {"Authorization": f"Bearer {SECRET}"}
    first = cached_app.get("/runs/latest", headers=good)
    assert first.status_code == 200
    fast_hits = CACHE_REQUESTS.labels("fast_hit")._value.get()
    assert cached_app.get("/runs/latest", headers=good).content == first.content
    assert CACHE_REQUESTS.labels("fast_hit")._value.get() == fast_hits + 1
    for headers in ({}, {"Authorization": f"Bearer {SECRET}x"}, {"Authorization": f"Basic {SECRET}"}):
        assert cached_app.get("/runs/latest", headers=headers).status_code == 401
