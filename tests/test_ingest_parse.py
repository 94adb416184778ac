"""Parsing and normalization of ODRÉ records (pure functions, real sample response)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from shared.ingest.parse import NUMERIC_FIELDS, local_time_problem, parse_records, to_number
from shared.ingest.versioning import make_ukeys, ukey_of
from tests.fixtures_ingest import ECO2MIX

SAMPLE = json.loads((ECO2MIX / "odre_sample_response.json").read_text())["results"]


def _record(**overrides: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "perimetre": "France", "nature": "Données temps réel", "date": "2023-09-12", "heure": "18:15",
        "date_heure": "2023-09-12T16:15:00+00:00", "consommation": 47083,
    }
    rec.update(overrides)
    return rec


def test_real_sample_response_is_fully_accepted() -> None:
    parsed = parse_records(SAMPLE)
    assert parsed.rejections == []
    assert parsed.accepted == len(SAMPLE) == 10


def test_sample_string_numbers_become_floats() -> None:
    rows = parse_records(SAMPLE[:1]).rows.set_index("metric")["value"]
    assert SAMPLE[0]["eolien_terrestre"] == "1586"
    assert rows["eolien_terrestre"] == 1586.0
    assert rows["stockage_batterie"] == -7.0
    assert rows["consommation"] == 47083.0


def test_sample_nulls_are_kept_as_null_rows() -> None:
    rows = parse_records(SAMPLE[:1]).rows.set_index("metric")["value"]
    assert SAMPLE[0]["ech_comm_angleterre"] is None
    assert math.isnan(rows["ech_comm_angleterre"])


@pytest.mark.parametrize("raw", [None, "", " ", "ND", "nd", "NaN", "nan", "NA", "NaT", "null", float("nan"),
                                 float("inf")])
def test_null_placeholders_become_null(raw: object) -> None:
    assert to_number(raw) is None


@pytest.mark.parametrize(("raw", "expected"), [("1586", 1586.0), ("-7", -7.0), (" 12.5 ", 12.5), (3, 3.0)])
def test_numbers_as_strings_or_numbers(raw: object, expected: float) -> None:
    assert to_number(raw) == expected


def test_unparseable_number_is_rejected_with_reason() -> None:
    parsed = parse_records([_record(consommation="beaucoup"), _record(date_heure="2023-09-12T16:30:00+00:00",
                                                                      heure="18:30")])
    assert parsed.accepted == 1
    assert len(parsed.rejections) == 1
    assert parsed.rejections[0].record_no == 0
    assert "consommation" in parsed.rejections[0].reason and "beaucoup" in parsed.rejections[0].reason


def test_boolean_is_not_a_number() -> None:
    parsed = parse_records([_record(consommation=True)])
    assert "consommation" in parsed.rejections[0].reason


def test_naive_date_heure_is_rejected() -> None:
    parsed = parse_records([_record(date_heure="2023-09-12T16:15:00")])
    assert "date_heure" in parsed.rejections[0].reason


def test_missing_date_heure_is_rejected() -> None:
    rec = _record()
    del rec["date_heure"]
    assert "date_heure" in parse_records([rec]).rejections[0].reason


def test_non_object_record_is_rejected_not_crashing() -> None:
    parsed = parse_records(["not a record", 42, None])
    assert [r.record_no for r in parsed.rejections] == [0, 1, 2]
    assert parsed.rows.empty


def test_absent_field_is_not_observed() -> None:
    rows = parse_records([_record()]).rows
    assert set(rows["metric"]) == {"consommation"}


def test_all_sample_fields_are_known_numeric_fields() -> None:
    numeric = {k for k in SAMPLE[0] if k not in ("perimetre", "nature", "date", "heure", "date_heure")}
    assert numeric == set(NUMERIC_FIELDS)


def test_date_heure_is_the_instant_and_heure_is_paris_local() -> None:
    rows = parse_records([_record()]).rows
    assert rows["ts"].iloc[0] == pd.Timestamp("2023-09-12T16:15:00Z")


def test_spring_forward_padding_row_is_rejected_with_reason() -> None:
    # ODRÉ lists 02:00 on 2023-03-26 although that wall time does not exist; its instant is 03:00 local.
    phantom = _record(date="2023-03-26", heure="02:00", date_heure="2023-03-26T01:00:00+00:00", consommation=None)
    real = _record(date="2023-03-26", heure="03:00", date_heure="2023-03-26T01:00:00+00:00", consommation=51000)
    parsed = parse_records([phantom, real])
    assert parsed.accepted == 1
    assert parsed.rejections[0].record_no == 0
    assert parsed.rejections[0].reason.startswith("spring-forward padding")


def test_inconsistent_local_time_is_rejected() -> None:
    parsed = parse_records([_record(heure="19:15")])
    assert "does not match date_heure" in parsed.rejections[0].reason


@pytest.mark.parametrize("utc_text", ["2023-10-29T00:00:00+00:00", "2023-10-29T01:00:00+00:00"])
def test_autumn_ambiguous_local_hour_is_accepted(utc_text: str) -> None:
    # Local 02:00 occurs twice on the fall-back day (CEST then CET); date_heure tells them apart.
    assert local_time_problem("2023-10-29", "02:00", datetime.fromisoformat(utc_text)) is None


def test_ukey_uses_utc_date_and_time_not_local() -> None:
    # 2023-09-12T22:30Z is 2023-09-13 00:30 in Paris; the ukey keeps the UTC date.
    rows = parse_records([_record(date="2023-09-13", heure="00:30", date_heure="2023-09-12T22:30:00+00:00")]).rows
    key = make_ukeys(rows["ts"], rows["metric"], rows["nature"], rows["perimetre"]).iloc[0]
    assert json.loads(key) == {"date": "2023-09-12", "metric": "consommation", "nature": "Données temps réel",
                               "perimetre": "France", "time": "22:30"}


def test_vectorized_ukeys_match_the_canonical_json() -> None:
    rows = parse_records(SAMPLE).rows
    keys = make_ukeys(rows["ts"], rows["metric"], rows["nature"], rows["perimetre"])
    expected = [ukey_of(ts.to_pydatetime(), m, n, p)
                for ts, m, n, p in zip(rows["ts"], rows["metric"], rows["nature"], rows["perimetre"], strict=True)]
    assert keys.tolist() == expected
    assert keys.iloc[0] == ukey_of(datetime(2023, 9, 12, 16, 15, tzinfo=UTC), "consommation", "Données temps réel")
    assert " " not in keys.iloc[0].replace("Données temps réel", "")
