"""The ODRÉ-compatible replay of the shipped data (local_dev/replay.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from local_dev.replay import create_replay_app
from shared import clock
from tests.fixtures_ingest import ECO2MIX, set_clock

URL = "/api/explore/v2.1/catalog/datasets/eco2mix-national-tr/records"
SAMPLE = json.loads((ECO2MIX / "odre_sample_response.json").read_text())


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_replay_app([ECO2MIX / "eco2mix_national_2023.csv.gz"])) as c:
        yield c


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    set_clock(datetime(2023, 12, 31, tzinfo=UTC))
    yield
    clock.install(None)


def _get(client: TestClient, **params: Any) -> Any:
    return client.get(URL, params=params)


def test_records_have_the_shape_of_the_real_response(client: TestClient) -> None:
    body = _get(client, where='date_heure = "2023-09-12T16:15:00+00:00"').json()
    assert set(body) == set(SAMPLE) == {"total_count", "results"}
    rec = body["results"][0]
    real = SAMPLE["results"][0]
    assert list(rec)[:5] == list(real)[:5] == ["perimetre", "nature", "date", "heure", "date_heure"]
    assert {k: rec[k] for k in ("perimetre", "date", "heure", "date_heure")} == {
        k: real[k] for k in ("perimetre", "date", "heure", "date_heure")}
    assert set(rec) <= set(real)
    assert isinstance(rec["consommation"], int)


def test_local_day_filter_on_the_spring_forward_day_includes_the_padding(client: TestClient) -> None:
    body = _get(client, where='date = "2023-03-26"', limit=100, order_by="date_heure").json()
    assert body["total_count"] == 96  # 92 real quarter-hours + 4 padding rows, as ODRÉ lists them
    heures = [r["heure"] for r in body["results"]]
    assert heures.count("02:00") == 1 and heures.count("03:00") == 1
    phantom = next(r for r in body["results"] if r["heure"] == "02:00")
    assert phantom["date_heure"] == "2023-03-26T01:00:00+00:00" and phantom["consommation"] is None


def test_limit_above_100_is_refused_like_odre(client: TestClient) -> None:
    resp = _get(client, limit=101)
    assert resp.status_code == 400 and resp.json()["error_code"] == "InvalidRESTParameterError"


def test_offset_plus_limit_above_10000_is_refused_like_odre(client: TestClient) -> None:
    resp = _get(client, offset=9901, limit=100)
    assert resp.status_code == 400
    assert resp.json()["message"].startswith("Invalid value for sum of offset + limit API parameter: 10001")
    assert _get(client, offset=9900, limit=100).status_code == 200


def test_clock_hides_rows_after_now(client: TestClient) -> None:
    set_clock(datetime(2023, 1, 1, 0, 30, tzinfo=UTC))
    body = _get(client, where='date_heure >= "2023-01-01T00:00:00+00:00"').json()
    assert body["total_count"] == 3


def test_order_desc_and_select(client: TestClient) -> None:
    body = _get(client, where="date_heure < '2023-01-01T01:00:00Z'", order_by="date_heure desc",
                select="date_heure,consommation", limit=2).json()
    assert [r["date_heure"] for r in body["results"]] == ["2023-01-01T00:45:00+00:00", "2023-01-01T00:30:00+00:00"]
    assert set(body["results"][0]) == {"date_heure", "consommation"}


def test_unsupported_where_is_a_400(client: TestClient) -> None:
    resp = _get(client, where="consommation > 3")
    assert resp.status_code == 400 and resp.json()["error_code"] == "ODSQLError"


def test_unknown_dataset_is_a_404(client: TestClient) -> None:
    assert client.get("/api/explore/v2.1/catalog/datasets/nope/records").status_code == 404


def test_keyset_where_serves_the_next_page_and_its_total(client: TestClient) -> None:
    # poll's keyset paging: `date_heure > last` at offset 0; total_count = what is left.
    day = 'date_heure >= "2023-03-01T00:00:00+00:00" and date_heure < "2023-03-02T00:00:00+00:00"'
    first = _get(client, where=day, order_by="date_heure", limit=10).json()
    last = first["results"][-1]["date_heure"]
    nxt = _get(client, where=f'date_heure > "{last}" and date_heure < "2023-03-02T00:00:00+00:00"',
               order_by="date_heure", limit=10).json()
    assert (first["total_count"], nxt["total_count"]) == (96, 86)
    assert nxt["results"][0]["date_heure"] == "2023-03-01T02:30:00+00:00"


def test_instant_where_returns_every_record_sharing_it(client: TestClient) -> None:
    # Spring-forward day: the padding row (heure 02:00) and the real row (03:00) share 01:00Z.
    body = _get(client, where='date_heure = "2023-03-26T01:00:00+00:00"', order_by="date_heure").json()
    assert body["total_count"] == 2
    assert [r["heure"] for r in body["results"]] == ["02:00", "03:00"]
