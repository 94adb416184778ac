"""Parsing and normalization of ODRÉ records (pure functions, real sample response)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as settings_h
from hypothesis import strategies as st

from shared.ingest.parse import NUMERIC_FIELDS, local_time_problem, parse_records, to_number
from shared.ingest.versioning import make_ukeys, ukey_of
from shared.settings import Settings
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


@pytest.mark.parametrize("raw", [None, "", "ND", "nd", "N/D", "NA", "n/a"])
def test_null_placeholders_become_null(raw: object) -> None:
    assert to_number(raw) is None


@pytest.mark.parametrize(("raw", "expected"), [("1586", 1586.0), ("-7", -7.0), ("+7", 7.0), ("12.5", 12.5),
                                               (".5", 0.5), ("1e3", 1000.0), ("-2.5E-1", -0.25), (3, 3.0),
                                               (-4.5, -4.5), ("0", 0.0)])
def test_numbers_as_strings_or_numbers(raw: object, expected: float) -> None:
    assert to_number(raw) == expected


# Everything Python's float() reads although it is not a plain decimal number, plus non-finite JSON
# numbers (json.loads decodes the non-standard literals NaN/Infinity): never a NULL, always a reason.
NOT_NUMBERS: list[object] = [
    "Infinity", "-Infinity", "inf", "-inf", "+inf", "NaN", "nan", "-nan", "1_586", "1_5.8_6",
    "\u0661\u0665\u0668\u0666",  # Arabic-Indic ١٥٨٦
    "\u06f1\u06f5",  # extended Arabic-Indic ۱۵
    "\uff11\uff15\uff18\uff16",  # full-width １５８６
    " 12.5 ", " 1586", "1586\n", "\u20031586", " ", "\t", "1e999", "-1e999", "0x10", "1,5", "12 MW", "NaT",
    "null", "None", float("nan"), float("inf"), float("-inf"), True, [1], {"v": 1},
]


@pytest.mark.parametrize("raw", NOT_NUMBERS, ids=repr)
def test_what_float_accepts_but_is_not_a_plain_number_is_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        to_number(raw)


@pytest.mark.parametrize("raw", ["Infinity", "-inf", "NaN", "1_586", "\u0661\u0665\u0668\u0666", " 12 "], ids=repr)
def test_non_numbers_dead_letter_the_record_never_a_null(raw: str) -> None:
    # Issue 9: "Infinity" used to become NULL (a withdrawal of the stored value), "1_586" and
    # Arabic-Indic digits were read as 1586.
    parsed = parse_records([_record(consommation=raw)])
    assert parsed.accepted == 0 and parsed.rows.empty
    assert "consommation" in parsed.rejections[0].reason and repr(raw) in parsed.rejections[0].reason


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


# --- vocabulary and grid (issue 9: a Bretagne record became national load; 12:00:30 shared the 12:00 ukey)


def test_real_sample_spells_perimetre_and_nature_as_configured(settings: Settings) -> None:
    assert {r["perimetre"] for r in SAMPLE} == {settings.source_perimeter} == {"France"}
    assert {r["nature"] for r in SAMPLE} <= set(settings.source_natures)


def test_foreign_perimetre_is_dead_lettered_with_reason() -> None:
    parsed = parse_records([_record(), _record(perimetre="Bretagne", consommation=5)])
    assert parsed.accepted == 1 and set(parsed.rows["perimetre"]) == {"France"}
    assert parsed.rejections[0].record_no == 1
    assert "perimetre 'Bretagne'" in parsed.rejections[0].reason


def test_missing_perimetre_or_nature_is_dead_lettered() -> None:
    no_perimetre, no_nature = _record(), _record()
    del no_perimetre["perimetre"]
    del no_nature["nature"]
    reasons = [r.reason for r in parse_records([no_perimetre, no_nature]).rejections]
    assert reasons[0].startswith("perimetre None") and reasons[1].startswith("nature None")


@pytest.mark.parametrize("nature", ["Données provisoires", "", "données temps réel", "Données temps réel "])
def test_unknown_nature_is_dead_lettered(nature: str) -> None:
    parsed = parse_records([_record(nature=nature)])
    assert parsed.accepted == 0 and f"nature {nature!r}" in parsed.rejections[0].reason


def test_configured_perimeter_is_honoured() -> None:
    parsed = parse_records([_record(), _record(perimetre="Bretagne")], perimeter="Bretagne",
                           natures=["Données temps réel"])
    assert [r.record_no for r in parsed.rejections] == [0] and set(parsed.rows["perimetre"]) == {"Bretagne"}


@pytest.mark.parametrize("date_heure", ["2023-09-12T16:15:30+00:00", "2023-09-12T16:15:00.500+00:00",
                                        "2023-09-12T16:20:00+00:00", "2023-09-12T16:16:00+00:00",
                                        "2023-09-12T21:50:00+05:30"])
def test_off_grid_instant_is_dead_lettered(date_heure: str) -> None:
    parsed = parse_records([_record(date_heure=date_heure)])
    assert parsed.accepted == 0 and parsed.rejections[0].reason.startswith("off-grid")


def test_on_grid_instant_with_another_offset_is_the_same_instant() -> None:
    # 18:15+02:00 is 16:15Z: on the grid, same ukey as the +00:00 spelling.
    rows = parse_records([_record(date_heure="2023-09-12T18:15:00+02:00")]).rows
    assert rows["ts"].iloc[0] == pd.Timestamp("2023-09-12T16:15:00Z")


def test_off_grid_record_cannot_replace_the_grid_value() -> None:
    # The issue's case: 12:00:30 sent after the real 12:00 record; only the 12:00 record survives.
    real = _record(date="2023-09-12", heure="14:00", date_heure="2023-09-12T12:00:00+00:00", consommation=50000)
    late = _record(date="2023-09-12", heure="14:00", date_heure="2023-09-12T12:00:30+00:00", consommation=5)
    parsed = parse_records([real, late])
    assert parsed.rows["value"].tolist() == [50000.0]
    assert [r.record_no for r in parsed.rejections] == [1]


def test_numeric_date_heure_is_not_read_as_unix_time() -> None:
    parsed = parse_records([_record(date_heure=1694535300)])
    assert parsed.accepted == 0 and "date_heure" in parsed.rejections[0].reason


@pytest.mark.parametrize("date_heure", ["1694535300", "1694535300000", "20230912T161500+00:00"])
def test_digit_string_date_heure_is_not_read_as_unix_time(date_heure: str) -> None:
    # pydantic reads a string of digits as Unix seconds or milliseconds: 2023-09-12T16:15Z both times
    parsed = parse_records([_record(date_heure=date_heure, date=None, heure=None)])
    assert parsed.accepted == 0 and "ISO-8601 date and time" in parsed.rejections[0].reason


def test_integer_too_large_for_a_float_is_rejected_not_raised() -> None:
    parsed = parse_records([_record(consommation=10**400), _record(date_heure="2023-09-12T16:30:00+00:00",
                                                                   heure="18:30")])
    assert [r.record_no for r in parsed.rejections] == [0] and "out of range" in parsed.rejections[0].reason
    assert parsed.accepted == 1


@pytest.mark.parametrize("date_heure", ["2300-01-01T00:00:00+00:00", "9999-12-31T23:45:00+00:00",
                                        "0001-01-01T00:00:00+00:00", "1850-06-01T12:00:00+00:00"])
def test_instant_outside_the_sources_era_is_rejected_not_raised(date_heure: str) -> None:
    # pandas' nanosecond timestamps end at 1677 and 2262: these used to raise OutOfBoundsDatetime for the page
    parsed = parse_records([_record(date_heure=date_heure, date=None, heure=None), _record()])
    assert [r.record_no for r in parsed.rejections] == [0]
    assert parsed.rows["ts"].tolist() == [pd.Timestamp("2023-09-12T16:15Z")]


FETCHED = datetime(2023, 9, 12, 16, 20, tzinfo=UTC)


def test_measured_value_dated_after_the_fetch_is_rejected() -> None:
    later = _record(date_heure="2023-09-13T08:00:00+00:00", date="2023-09-13", heure="10:00")
    parsed = parse_records([later], now=FETCHED)
    assert parsed.accepted == 0 and "after the fetch" in parsed.rejections[0].reason


def test_forecast_published_ahead_is_accepted() -> None:
    # tomorrow's day-ahead forecast, consommation not measured yet: what the source publishes every day
    ahead = _record(date_heure="2023-09-13T20:00:00+00:00", date="2023-09-13", heure="22:00", consommation=None,
                    prevision_j1=52000)
    parsed = parse_records([ahead], now=FETCHED)
    assert parsed.rejections == []
    assert parsed.rows.set_index("metric")["value"]["prevision_j1"] == 52000.0


def test_value_of_the_quarter_hour_after_the_fetch_is_accepted() -> None:
    # clock skew between the source and this host: one quarter-hour of tolerance
    parsed = parse_records([_record(date_heure="2023-09-12T16:30:00+00:00", heure="18:30")], now=FETCHED)
    assert parsed.accepted == 1


def test_instant_beyond_the_publication_horizon_is_rejected() -> None:
    far = _record(date_heure="2023-09-20T20:00:00+00:00", date="2023-09-20", heure="22:00", consommation=None,
                  prevision_j1=52000)
    parsed = parse_records([far], now=FETCHED, lookahead=timedelta(hours=48))
    assert parsed.accepted == 0 and "publication horizon" in parsed.rejections[0].reason


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_values_for_one_instant_in_one_response_reject_both(order: tuple[int, int]) -> None:
    # the API orders records of one date_heure arbitrarily: "last wins" flipped the stored value between reads
    pair = [_record(), _record(consommation=50083)]
    parsed = parse_records([pair[k] for k in order])
    assert parsed.accepted == 0 and parsed.rows.empty
    assert [r.record_no for r in parsed.rejections] == [0, 1]
    assert all("conflicting duplicate" in r.reason for r in parsed.rejections)


def test_the_same_record_twice_in_one_response_is_accepted() -> None:
    parsed = parse_records([_record(), _record()])
    assert parsed.rejections == [] and parsed.accepted == 2


def test_a_conflict_leaves_the_other_records_of_the_response() -> None:
    other = _record(date_heure="2023-09-12T16:30:00+00:00", heure="18:30", consommation=47500)
    parsed = parse_records([_record(), other, _record(consommation=50083)])
    assert [r.record_no for r in parsed.rejections] == [0, 2]
    assert parsed.rows[["record_no", "value"]].values.tolist() == [[1, 47500.0]]


def test_record_without_the_consommation_field_is_another_schema() -> None:
    # a renamed field used to store only the forecasts and report the instant received
    rec = _record(prevision_j1=47000, prevision_j=47100)
    rec["consumption"] = rec.pop("consommation")
    parsed = parse_records([rec])
    assert parsed.accepted == 0 and "no 'consommation' field" in parsed.rejections[0].reason


# --- the ukey invariant, attacked with hypothesis over mutations of the real sample ------------------

_OFFSETS = ["+00:00", "Z", "+02:00", "-03:30", "+05:45", "+14:00", "-12:00"]


@st.composite
def _mutated_records(draw: st.DrawFn) -> dict[str, object]:
    rec = dict(draw(st.sampled_from(SAMPLE)))
    base = datetime.fromisoformat(str(rec["date_heure"]))
    # shift by whole and partial quarter-hours, seconds and microseconds, then respell with any offset
    # mostly whole quarter-hours close together (so instants collide across records), sometimes anything
    minutes = draw(st.one_of(st.integers(-8, 8).map(lambda k: 15 * k), st.integers(-13_000, 13_000).map(
        lambda k: 15 * k), st.integers(-200_000, 200_000)))
    shift = timedelta(minutes=minutes,
                      seconds=draw(st.sampled_from([0, 0, 0, 1, 30, 59])),
                      microseconds=draw(st.sampled_from([0, 0, 0, 1, 500_000])))
    instant = base + shift
    offset = draw(st.sampled_from(_OFFSETS))
    if offset == "Z":
        text = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
            f".{instant.microsecond:06d}" if instant.microsecond else "") + "Z"
    else:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
        text = instant.astimezone(tz).isoformat()
    rec["date_heure"] = text
    local = instant.astimezone(ZoneInfo("Europe/Paris"))
    if draw(st.booleans()):  # keep date/heure consistent (the usual case) or drop them
        rec["date"], rec["heure"] = local.strftime("%Y-%m-%d"), local.strftime("%H:%M")
    else:
        rec.pop("date"), rec.pop("heure")
    rec["perimetre"] = draw(st.sampled_from(["France", "France", "France", "Bretagne", "france", "", None]))
    rec["nature"] = draw(st.sampled_from([*DEFAULT_NATURES, "Données provisoires", "", None]))
    rec["consommation"] = draw(st.one_of(st.integers(-100_000, 100_000), st.none(),
                                         st.sampled_from(["47083", "Infinity", "1_586", "ND"])))
    return rec


DEFAULT_NATURES = ("Données temps réel", "Données consolidées", "Données définitives",
                   "Données temps réel (API RTE short_term)")


@settings_h(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutated_records(), min_size=1, max_size=25))
def test_ukey_determines_source_metric_ts(records: list[dict[str, object]]) -> None:
    parsed = parse_records(records, perimeter="France", natures=DEFAULT_NATURES)
    rows = parsed.rows
    assert parsed.accepted + len(parsed.rejections) == len(records)
    event("accepted rows" if not rows.empty else "nothing accepted")
    if rows.empty:
        return
    assert set(rows["perimetre"]) == {"France"} and set(rows["nature"]) <= set(DEFAULT_NATURES)
    rows = rows.assign(ukey=make_ukeys(rows["ts"], rows["metric"], rows["nature"], rows["perimetre"]))
    # same ukey ⇒ same (metric, ts) (the source is the configured one for every polled row)
    assert (rows.groupby("ukey")[["metric", "ts"]].nunique() == 1).all().all()
    # distinct (metric, ts) ⇒ distinct ukey; per (metric, ts) one ukey per nature, nothing else
    per_instant = rows.groupby(["metric", "ts"]).agg(ukeys=("ukey", "nunique"), natures=("nature", "nunique"))
    assert (per_instant["ukeys"] == per_instant["natures"]).all()
    # and ts can be rebuilt exactly from the ukey (no sub-minute part lost)
    for key, ts in zip(rows["ukey"], rows["ts"], strict=True):
        k = json.loads(key)
        assert pd.Timestamp(f"{k['date']}T{k['time']}:00Z") == ts
        assert ts.second == 0 and ts.microsecond == 0 and ts.minute % 15 == 0
