"""The query API's HTTP contract (issue 9 "API contract slips", issue 8 Swagger UI behind the prefix):
errors always ``{"error", "detail"}``, no trailing-slash redirects, open docs served without a CDN
and working under the gateway's ``/function/query`` prefix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from local_dev.functions import load_handler
from local_dev.gateway import create_gateway_app
from shared.settings import get_settings
from shared.store import Store

TOKEN = "contract-test-token-77a0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app_client(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The query app served directly at / (as a test or ``uvicorn`` without a prefix would)."""
    monkeypatch.setenv("POWERSENSE_QUERY_TOKEN", TOKEN)
    get_settings.cache_clear()
    with TestClient(load_handler("query").app, follow_redirects=False) as c:
        yield c


@pytest.fixture
def gateway(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The query app behind the embedded gateway, at /function/query."""
    monkeypatch.setenv("POWERSENSE_QUERY_TOKEN", TOKEN)
    get_settings.cache_clear()
    with TestClient(create_gateway_app(functions=["query"], with_replay=False), follow_redirects=False) as c:
        yield c


def _is_error(body: object) -> bool:
    return isinstance(body, dict) and set(body) == {"error", "detail"}


@pytest.mark.parametrize("headers", [{}, AUTH])
def test_unknown_route_is_404_in_the_error_shape(app_client: TestClient, headers: dict[str, str]) -> None:
    r = app_client.get("/no/such/route", headers=headers)
    assert r.status_code == 404 and _is_error(r.json())
    assert r.json()["error"] == "NotFoundError"


def test_wrong_method_is_405_in_the_error_shape(app_client: TestClient) -> None:
    r = app_client.post("/measurements?metric=consommation", headers=AUTH)
    assert r.status_code == 405 and _is_error(r.json())
    assert r.headers["allow"] == "GET"


@pytest.mark.parametrize("path", ["/measurements/?metric=consommation", "/runs/", "/health/", "/docs/"])
def test_trailing_slash_is_not_redirected(app_client: TestClient, gateway: TestClient, path: str) -> None:
    # A 307 to http://<Host header>/measurements lost the /function/query prefix and echoed Host.
    for client, prefix in ((app_client, ""), (gateway, "/function/query")):
        r = client.get(prefix + path, headers={**AUTH, "Host": "evil.example"})
        assert r.status_code == 404, (prefix, path, r.status_code)
        assert "location" not in r.headers and "evil.example" not in r.text
        assert _is_error(r.json())


def test_limit_over_the_maximum_is_400_and_unknown_parameters_422(app_client: TestClient) -> None:
    over = app_client.get("/runs", params={"limit": 1001}, headers=AUTH)
    assert over.status_code == 400 and over.json()["error"] == "BadRequestError"
    unknown = app_client.get("/runs", params={"limt": 10}, headers=AUTH)
    assert unknown.status_code == 422 and _is_error(unknown.json())


def test_docs_and_openapi_are_open_and_redoc_is_not_served(app_client: TestClient) -> None:
    assert app_client.get("/docs").status_code == 200
    spec = app_client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "PowerSense query API"
    assert spec.json()["servers"] == []  # served at /: paths are absolute from the host
    forwarded = app_client.get("/openapi.json", headers={"X-Forwarded-Host": "gateway:8080"})
    assert forwarded.json()["servers"] == [{"url": "/function/query"}]  # OpenFaaS strips the prefix
    proxied = app_client.get("/openapi.json", headers={"X-Forwarded-Prefix": "/api/query"})
    assert proxied.json()["servers"] == [{"url": "/api/query"}]
    assert app_client.get("/redoc").status_code == 404  # no offline ReDoc bundle: not served
    assert app_client.get("/runs").status_code == 401  # data still needs the token


def _referenced_urls(html: str) -> list[str]:
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    urls += re.findall(r"url: '([^']+)'", html)
    return urls


def test_swagger_ui_works_behind_the_gateway_prefix_without_a_cdn(gateway: TestClient) -> None:
    page_url = "http://testserver/function/query/docs"
    page = gateway.get(page_url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    urls = _referenced_urls(page.text)
    assert len(urls) >= 3 and any(u.endswith("openapi.json") for u in urls)
    for url in urls:
        absolute = urljoin(page_url, url)
        assert urlsplit(absolute).netloc == "testserver", f"{url} is not same-origin"
        assert urlsplit(absolute).path.startswith("/function/query/"), f"{url} escapes the prefix"
        r = gateway.get(absolute)
        assert r.status_code == 200, (url, r.status_code)
        if url.endswith(".js"):
            assert "SwaggerUIBundle" in r.text
    spec = gateway.get("/function/query/openapi.json").json()
    assert spec["servers"] == [{"url": "/function/query"}]  # "Try it out" calls through the prefix
    assert "/measurements" in spec["paths"]
    assert gateway.get("/function/query/docs-static/no-such-file.js").json()["error"] == "NotFoundError"
