"""Pure weather functions: Open-Meteo response parsing, weighted aggregation, model blend, stations, planning.

The responses here are in the shape Open-Meteo documents (https://open-meteo.com/en/docs: one object per
location, a JSON list for several comma-separated coordinates, variables suffixed with the model when
several models are asked); their values are synthetic, as these are unit tests of edge cases.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.errors import ConfigurationError
from shared.settings import REPO_ROOT
from shared.weather.parse import ResponseShapeError, aggregate, blend, load_stations, parse_response
from shared.weather.service import plan_past_days

STATIONS_FILE = REPO_ROOT / "data" / "weather" / "stations_meteo_rte_poids.csv"


def _location(lat: float, lon: float, values: dict[str, list[Any]], times: list[str] | None = None) -> dict[str, Any]:
    """One location object as the forecast API documents it (``timezone=UTC``)."""
    times = times or ["2023-12-01T00:00", "2023-12-01T01:00", "2023-12-01T02:00"]
    return {
        "latitude": lat, "longitude": lon, "generationtime_ms": 0.105, "utc_offset_seconds": 0,
        "timezone": "UTC", "timezone_abbreviation": "UTC", "elevation": 38.0,
        "hourly_units": {"time": "iso8601", **{k: "°C" for k in values}},
        "hourly": {"time": times, **values},
    }


MODELS = ["meteofrance_seamless", "ecmwf_ifs025"]
DOC = [
    _location(48.82, 2.34, {"temperature_2m_meteofrance_seamless": [4.1, 3.9, 3.6],
                            "temperature_2m_ecmwf_ifs025": [4.4, 4.0, 3.5]}),
    _location(45.76, 4.84, {"temperature_2m_meteofrance_seamless": [1.2, 0.8, None],
                            "temperature_2m_ecmwf_ifs025": [1.0, 0.6, 0.1]}),
]


def test_parse_documented_multi_location_multi_model_response() -> None:
    parsed = parse_response(DOC, ["156", "481"], MODELS)
    assert parsed.rejections == []
    rows = parsed.rows
    assert len(rows) == 11  # 12 values, one null (the model does not cover that hour: no row, no rejection)
    assert rows["ts"].dt.tz is not None
    assert rows["ts"].min() == pd.Timestamp("2023-12-01T00:00Z")
    assert rows["ts"].max() == pd.Timestamp("2023-12-01T02:00Z")
    one = rows[(rows.station == "481") & (rows.model == "ecmwf_ifs025")].sort_values("ts")
    assert one["value"].tolist() == [1.0, 0.6, 0.1]


def test_single_location_single_model_is_an_object_without_suffix() -> None:
    doc = _location(48.82, 2.34, {"temperature_2m": [4.1, 3.9, 3.6]})
    parsed = parse_response(doc, ["156"], ["best_match"])
    assert parsed.rows["value"].tolist() == [4.1, 3.9, 3.6]
    assert set(parsed.rows["model"]) == {"best_match"}


def test_offset_times_are_converted_to_utc() -> None:
    doc = _location(48.82, 2.34, {"temperature_2m": [4.1]}, times=["2023-12-01T01:00"])
    doc["utc_offset_seconds"] = 3600  # a caller that forgot timezone=UTC gets local times: still one instant
    parsed = parse_response(doc, ["156"], ["best_match"])
    assert parsed.rows["ts"].tolist() == [pd.Timestamp("2023-12-01T00:00Z")]


def test_malformed_values_become_rejections_with_reasons() -> None:
    doc = copy.deepcopy(DOC)
    doc[0]["hourly"]["temperature_2m_meteofrance_seamless"] = ["4.1", float("nan"), 999.0]
    doc[1]["hourly"]["time"][2] = "not-a-time"
    del doc[1]["hourly"]["temperature_2m_ecmwf_ifs025"]
    parsed = parse_response(doc, ["156", "481"], MODELS)
    reasons = sorted(r.reason for r in parsed.rejections)
    assert len(parsed.rejections) == 4
    assert any("not a number: str" in r for r in reasons)
    assert any("not finite" in r for r in reasons)
    assert any("outside [-60, 60]" in r for r in reasons)
    assert any("no temperature_2m list for model ecmwf_ifs025" in r for r in reasons)
    # 'not-a-time' carries a null for meteofrance at location 2: nothing to reject there
    assert len(parsed.rows) == 3 + 2  # station 156 ecmwf (3) + station 481 meteofrance (2 non-null)
    assert all(r.payload.startswith("{") for r in parsed.rejections)


def test_unreadable_time_with_a_value_is_rejected() -> None:
    doc = _location(48.82, 2.34, {"temperature_2m": [4.1, 3.0]}, times=["2023-12-01T00:00", "garbage"])
    parsed = parse_response(doc, ["156"], ["best_match"])
    assert [r.reason for r in parsed.rejections] == ["unreadable time 'garbage'"]
    assert len(parsed.rows) == 1


@pytest.mark.parametrize("body", [DOC[:1], {"error": True, "reason": "Latitude must be in range of -90 to 90°."},
                                  "nonsense", [DOC[0], DOC[1], DOC[1]]])
def test_response_not_for_the_locations_asked_is_a_shape_error(body: Any) -> None:
    with pytest.raises(ResponseShapeError):
        parse_response(body, ["156", "481"], MODELS)


def test_location_block_without_hourly_is_one_rejection() -> None:
    doc = copy.deepcopy(DOC)
    del doc[1]["hourly"]
    parsed = parse_response(doc, ["156", "481"], MODELS)
    assert len(parsed.rejections) == 1 and "hourly.time" in parsed.rejections[0].reason
    assert set(parsed.rows["station"]) == {"156"}


# --- a hostile or glitchy source (a review drove each through run_poll_weather; these are the parse's cases) ---
COORDS = [(48.82, 2.34), (45.76, 4.84)]  # the stations asked, in request order (DOC's grid points)


def test_values_in_fahrenheit_are_refused_not_read_as_celsius() -> None:
    # winter °F values (40–45) lie inside the plausible °C range: a 36 °C error reached the model's regressor
    doc = copy.deepcopy(DOC)
    doc[0]["hourly_units"]["temperature_2m_ecmwf_ifs025"] = "°F"
    doc[0]["hourly"]["temperature_2m_ecmwf_ifs025"] = [39.9, 39.2, 38.3]
    parsed = parse_response(doc, ["156", "481"], MODELS, COORDS)
    assert [r.reason for r in parsed.rejections] == ["temperature_2m_ecmwf_ifs025 given in '°F', not °C"]
    assert parsed.rows[(parsed.rows.station == "156") & (parsed.rows.model == "ecmwf_ifs025")].empty


def test_locations_in_another_order_are_matched_by_their_coordinates() -> None:
    # the i-th object was taken for the i-th station: each station's weight went to another's temperature
    parsed = parse_response(list(reversed(DOC)), ["156", "481"], MODELS, COORDS)
    one = parsed.rows[(parsed.rows.station == "481") & (parsed.rows.model == "ecmwf_ifs025")].sort_values("ts")
    assert parsed.rejections == [] and one["value"].tolist() == [1.0, 0.6, 0.1]


def test_an_answer_missing_a_station_keeps_the_others_and_says_which() -> None:
    # one object short failed the whole run, the other stations' values unused
    parsed = parse_response([DOC[1]], ["156", "481"], MODELS, COORDS)
    assert [r.reason for r in parsed.rejections] == ["no location object for this station in the answer"]
    assert '"156"' in parsed.rejections[0].payload and set(parsed.rows["station"]) == {"481"}


def test_locations_far_from_every_station_asked_are_a_shape_error() -> None:
    doc = copy.deepcopy(DOC)
    doc[1]["latitude"], doc[1]["longitude"] = 43.6, 1.44  # Toulouse, asked for Lyon
    with pytest.raises(ResponseShapeError, match="do not match the coordinates asked"):
        parse_response(doc, ["156", "481"], MODELS, COORDS)


def test_an_hour_given_twice_in_one_block_is_refused_both_times() -> None:
    # the last copy won: a 55 °C glitch replaced the real 5.4 °C without a word
    doc = _location(48.82, 2.34, {"temperature_2m": [4.1, 3.9, 55.0]},
                    times=["2023-12-01T00:00", "2023-12-01T01:00", "2023-12-01T01:00"])
    parsed = parse_response(doc, ["156"], ["best_match"])
    assert [r.reason for r in parsed.rejections] == ["hour given more than once in one answer"] * 2
    assert parsed.rows["value"].tolist() == [4.1]


def test_a_time_off_the_hour_is_refused() -> None:
    # a :15 value is never overwritten by a later hourly run, and the forecast's grid interpolated through it
    doc = _location(48.82, 2.34, {"temperature_2m": [4.1, 30.0]}, times=["2023-12-01T00:00", "2023-12-01T00:15"])
    parsed = parse_response(doc, ["156"], ["best_match"])
    assert [r.reason for r in parsed.rejections] == ["time not on the hour"]
    assert parsed.rows["value"].tolist() == [4.1]


def test_an_integer_beyond_a_float_is_a_rejection_not_a_crash() -> None:
    # valid JSON: np.array(..., float64) raised OverflowError and the whole answer was lost
    doc = _location(48.82, 2.34, {"temperature_2m": [4.1, 10**400, 3.6]})
    parsed = parse_response(doc, ["156"], ["best_match"])
    assert [r.reason for r in parsed.rejections] == ["value is not finite"]
    assert parsed.rows["value"].tolist() == [4.1, 3.6]


def test_times_with_and_without_an_offset_in_one_block_are_each_read_as_they_say() -> None:
    # a "Z" next to a "+01:00" made pandas return objects and .dt raise AttributeError
    doc = _location(48.82, 2.34, {"temperature_2m": [4.1, 3.9, 3.6]},
                    times=["2023-12-01T00:00Z", "2023-12-01T02:00+01:00", "2023-12-01T02:00"])
    parsed = parse_response(doc, ["156"], ["best_match"])
    assert parsed.rejections == []
    assert parsed.rows["ts"].tolist() == [pd.Timestamp("2023-12-01T00:00Z"), pd.Timestamp("2023-12-01T01:00Z"),
                                          pd.Timestamp("2023-12-01T02:00Z")]


def test_an_absurd_utc_offset_refuses_the_block() -> None:
    # 10**13 s raised OutOfBoundsTimedelta and the whole answer was lost
    doc = copy.deepcopy(DOC)
    doc[1]["utc_offset_seconds"] = 10**13
    parsed = parse_response(doc, ["156", "481"], MODELS, COORDS)
    assert len(parsed.rejections) == 1 and "within ±14 h" in parsed.rejections[0].reason
    assert set(parsed.rows["station"]) == {"156"}


def _stations(weights: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(weights), "name": list(weights), "longitude": 0.0, "latitude": 45.0,
                         "weight": list(weights.values())})


def test_weighted_mean_and_missing_station_renormalised() -> None:
    stations = _stations({"a": 0.5, "b": 0.3, "c": 0.2})
    t0, t1 = pd.Timestamp("2023-12-01T00:00Z"), pd.Timestamp("2023-12-01T01:00Z")
    rows = pd.DataFrame({
        "station": ["a", "b", "c", "a", "b"],
        "model": "m",
        "ts": [t0, t0, t0, t1, t1],
        "value": [10.0, 0.0, 5.0, 10.0, 2.0],
    })
    out = aggregate(rows, stations, min_weight_share=0.8).set_index("ts")
    assert out.loc[t0, "value"] == pytest.approx(0.5 * 10 + 0.3 * 0 + 0.2 * 5)
    assert out.loc[t0, "weight_share"] == pytest.approx(1.0)
    # c missing at t1: the mean of what is known, weights renormalised over a and b (0.8 of the weight)
    assert out.loc[t1, "value"] == pytest.approx((0.5 * 10 + 0.3 * 2) / 0.8)
    assert out.loc[t1, "weight_share"] == pytest.approx(0.8)
    assert out.loc[t1, "stations"] == 2


def test_hour_below_the_weight_share_is_left_out() -> None:
    stations = _stations({"a": 0.5, "b": 0.3, "c": 0.2})
    t0 = pd.Timestamp("2023-12-01T00:00Z")
    rows = pd.DataFrame({"station": ["a", "c"], "model": "m", "ts": [t0, t0], "value": [10.0, 5.0]})
    assert aggregate(rows, stations, min_weight_share=0.8).empty  # 0.7 of the weight present
    assert len(aggregate(rows, stations, min_weight_share=0.7)) == 1


def test_blend_takes_the_first_model_that_covers_each_hour() -> None:
    ts = pd.date_range("2023-12-01", periods=3, freq="h", tz="UTC")
    stations = _stations({"a": 0.6, "b": 0.4})
    rows = pd.DataFrame({
        "station": ["a", "b"] * 5,
        "model": ["ecmwf_ifs025"] * 6 + ["meteofrance_seamless"] * 4,
        "ts": [t for t in ts for _ in "ab"] + [t for t in ts[:2] for _ in "ab"],
        "value": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 10.0, 10.0, 20.0, 20.0],
    })
    out = blend(rows, stations, MODELS, min_weight_share=0.8)
    assert out["value"].tolist() == pytest.approx([10.0, 20.0, 3.0])
    assert out["model"].tolist() == ["meteofrance_seamless", "meteofrance_seamless", "ecmwf_ifs025"]


def test_blend_fills_a_station_the_first_model_lacks_from_the_next_one() -> None:
    """An hour Météo-France covers for only some stations (synthetic): the missing station takes ECMWF's value
    and its own weight, instead of a Météo-France mean renormalised over the stations it has."""
    stations = _stations({"a": 0.5, "b": 0.3, "c": 0.2})
    t0 = pd.Timestamp("2023-12-01T00:00Z")
    rows = pd.DataFrame({
        "station": ["a", "b", "a", "b", "c"],
        "model": ["meteofrance_seamless"] * 2 + ["ecmwf_ifs025"] * 3,
        "ts": t0,
        "value": [10.0, 0.0, 11.0, 1.0, 14.0],  # c (a warm region) is only in ECMWF's answer
    })
    out = blend(rows, stations, MODELS, min_weight_share=0.8)
    assert out["value"].tolist() == pytest.approx([0.5 * 10 + 0.3 * 0 + 0.2 * 14])
    assert out["model"].tolist() == ["meteofrance_seamless"]  # 0.8 of the weight
    renormalised = aggregate(rows[rows["model"] == "meteofrance_seamless"], stations, 0.8)["value"].iloc[0]
    assert renormalised == pytest.approx((0.5 * 10) / 0.8)  # what the national blend used to take: 1.55 °C colder


def test_shipped_stations_file() -> None:
    stations = load_stations(STATIONS_FILE)
    assert len(stations) == 32  # 35 stations, 3 with weight 0 (REIMS, ST-BRIEUX, PARIS-ORLY) left out
    assert stations["weight"].sum() == pytest.approx(1.0)
    paris = stations.set_index("id").loc["156"]
    assert paris["name"] == "PARIS-MONTSOURIS" and paris["weight"] == pytest.approx(0.1125)
    assert np.isclose(stations.set_index("id").loc["145", "weight"], 0.1125)


def test_bad_stations_file_fails_with_the_setting_name(tmp_path: Path) -> None:
    bad = tmp_path / "s.csv"
    bad.write_text("ID;Nom;longitude;latitude;Poids\n001;X;abc;45;0.5\n")
    with pytest.raises(ConfigurationError, match="POWERSENSE_WEATHER_STATIONS_FILE"):
        load_stations(bad)
    with pytest.raises(ConfigurationError, match="POWERSENSE_WEATHER_STATIONS_FILE"):
        load_stations(tmp_path / "missing.csv")


def test_past_days_from_the_watermark() -> None:
    now = datetime(2023, 12, 5, 10, tzinfo=UTC)
    assert plan_past_days(None, now, 3) == 3
    assert plan_past_days(datetime(2023, 12, 5, 9, tzinfo=UTC), now, 3) == 0
    assert plan_past_days(datetime(2023, 12, 4, 23, tzinfo=UTC), now, 3) == 1
    assert plan_past_days(datetime(2023, 11, 1, tzinfo=UTC), now, 3) == 3


def test_to_grid_on_real_data_and_gaps() -> None:
    from local_dev.weather_replay import hourly_temperature
    from shared.weather.parse import to_grid

    # real: the shipped Enedis 2023 series on the hour, put on the 30-min grid, against its own :30 values
    shipped = pd.read_csv(REPO_ROOT / "data" / "weather" / "enedis_temperature_lissee_nationale_2023.csv.gz")
    actual = pd.Series(shipped["temperature_realisee_lissee_degc"].to_numpy(float),
                       index=pd.to_datetime(shipped["horodate"], utc=True))
    hourly = hourly_temperature(str(REPO_ROOT / "data" / "weather"))
    hourly = hourly[(hourly.index >= "2023-01-01") & (hourly.index < "2024-01-01")]
    grid = to_grid(pd.DataFrame({"ts": hourly.index, "value": hourly.to_numpy()}),
                   pd.Timestamp("2023-01-01T00:00Z"), pd.Timestamp("2024-01-01T00:00Z"), 30).set_index("ts")["value"]
    half = grid[grid.index.minute == 30].dropna()
    err = (half - actual.reindex(half.index)).abs()
    assert len(half) == 8759  # the last :30 (23:30 on 31 December) has no later hour: not extrapolated
    assert err.mean() < 0.05 and err.max() < 0.5  # the series is smoothed: linear in time is close
    assert (grid[grid.index.minute == 0] == hourly.reindex(grid.index[grid.index.minute == 0])).all()
    # synthetic edge case: a missing hour leaves its neighbours' half-hours empty
    ts = pd.date_range("2023-12-01", periods=4, freq="h", tz="UTC")
    out = to_grid(pd.DataFrame({"ts": ts, "value": [1.0, 2.0, np.nan, 4.0]}), ts[0], ts[-1] + pd.Timedelta("1h"), 30)
    assert out["value"].tolist()[:4] == [1.0, 1.5, 2.0, pytest.approx(np.nan, nan_ok=True)]
    assert np.isnan(out["value"].iloc[4]) and np.isnan(out["value"].iloc[5]) and out["value"].iloc[6] == 4.0
    assert np.isnan(out["value"].iloc[7])
