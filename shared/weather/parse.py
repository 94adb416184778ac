"""Pure functions over Open-Meteo responses and DataFrames: stations, parse, aggregate, blend.

Response shape (Open-Meteo forecast API documentation, https://open-meteo.com/en/docs, and the
historical API, https://open-meteo.com/en/docs/historical-weather-api): one JSON object per location
with ``latitude``, ``longitude`` (the grid point used), ``generationtime_ms``, ``utc_offset_seconds``,
``timezone``, ``timezone_abbreviation``, ``elevation``, ``hourly_units`` and ``hourly`` =
``{"time": ["2023-12-01T00:00", …], "temperature_2m": [4.1, …]}``.  "Multiple coordinates can be comma
separated … To return data for multiple locations the JSON output changes to a list of structures"
(docs, ``latitude, longitude``), in the order requested.  With several ``models`` each variable is
suffixed with the model name (``temperature_2m_ecmwf_ifs025``); with one model it is not.  Hours a
model does not cover (beyond its forecast length) are ``null``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.errors import ConfigurationError
from shared.ingest.parse import Rejection  # one dead-letter shape for every source

VARIABLE = "temperature_2m"
# Plausible 2 m temperature over metropolitan France (records: −41 °C in 1985, 46 °C in 2019); a value
# outside is not a temperature in °C (a unit or encoding error) and is dead-lettered, not stored.
MIN_DEGC, MAX_DEGC = -60.0, 60.0


# --- stations --------------------------------------------------------------------------------------


def load_stations(path: Path) -> pd.DataFrame:
    """Weighted locations: ``id, name, longitude, latitude, weight`` (weight > 0 only), weights summing to 1.

    The file is RTE's format (``ID;Nom;longitude;latitude;Poids``). Stations with weight 0 are left
    out (nothing to request).  Raises ConfigurationError on a file that is not usable.
    """
    try:
        raw = pd.read_csv(path, sep=";", dtype={"ID": str})
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"POWERSENSE_WEATHER_STATIONS_FILE: cannot read {path}: {exc}") from exc
    missing = {"ID", "Nom", "longitude", "latitude", "Poids"} - set(raw.columns)
    if missing:
        raise ConfigurationError(f"POWERSENSE_WEATHER_STATIONS_FILE: {path} lacks columns {sorted(missing)}")
    frame = pd.DataFrame({
        "id": raw["ID"].astype(str).str.strip(),
        "name": raw["Nom"].astype(str).str.strip(),
        "longitude": pd.to_numeric(raw["longitude"], errors="coerce"),
        "latitude": pd.to_numeric(raw["latitude"], errors="coerce"),
        "weight": pd.to_numeric(raw["Poids"], errors="coerce"),
    })
    bad = frame[frame[["longitude", "latitude", "weight"]].isna().any(axis=1) | (frame["weight"] < 0)
                | ~frame["latitude"].between(-90, 90) | ~frame["longitude"].between(-180, 180)]
    if not bad.empty:
        raise ConfigurationError(f"POWERSENSE_WEATHER_STATIONS_FILE: invalid rows for stations {bad['id'].tolist()}")
    frame = frame[frame["weight"] > 0].reset_index(drop=True)
    if frame.empty:
        raise ConfigurationError(f"POWERSENSE_WEATHER_STATIONS_FILE: no station with a positive weight in {path}")
    # RTE's weights sum to 1 up to rounding; normalising keeps the mean a mean for any edited file.
    frame["weight"] = frame["weight"] / frame["weight"].sum()
    return frame


# --- parse -----------------------------------------------------------------------------------------


@dataclass
class Parsed:
    """Long rows ``station, model, ts, value`` and the rejections."""

    rows: pd.DataFrame
    rejections: list[Rejection] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # stations the answer held no location object for


class ResponseShapeError(ValueError):
    """The body is not an Open-Meteo answer for the locations asked (the whole response is unusable)."""


def response_locations(body: Any, n_locations: int, allow_fewer: bool = False) -> list[dict[str, Any]]:
    """The per-location objects of a response (a list for several locations, an object for one); with
    ``allow_fewer``, at least one and at most ``n_locations`` of them."""
    if isinstance(body, dict) and body.get("error"):
        raise ResponseShapeError(f"Open-Meteo error: {body.get('reason', body)}")
    items = body if isinstance(body, list) else [body]
    count_ok = 1 <= len(items) <= n_locations if allow_fewer else len(items) == n_locations
    if not count_ok or not all(isinstance(i, dict) for i in items):
        raise ResponseShapeError(f"expected {n_locations} location object(s), got {type(body).__name__} "
                                 f"of {len(items) if isinstance(body, list) else 1}")
    return items


def _value_key(hourly: dict[str, Any], model: str, models: list[str]) -> str | None:
    for key in (f"{VARIABLE}_{model}", VARIABLE if len(models) == 1 else None):
        if key is not None and key in hourly:
            return key
    return None


# A response's grid point lies within half a model grid cell of the coordinate asked (0.25° models: ≤ 0.18°); a
# location object farther than this from its station answers for another place.
LOCATION_TOLERANCE_DEG = 0.5
# Open-Meteo applies utc_offset_seconds to its wall times; real offsets lie within ±14 h (UTC−12 … UTC+14).
MAX_UTC_OFFSET_S = 14 * 3600
UNIT = "°C"


def _distance_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Planar distance in degrees of latitude (longitude scaled by cos(latitude)): enough to tell stations apart."""
    scale = math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(a[0] - b[0], (a[1] - b[1]) * scale)


def match_locations(items: list[dict[str, Any]], coords: list[tuple[float, float]]) -> list[int | None]:
    """For each requested station (``coords`` in request order), the index of its location object, or None when the
    answer has none for it. In request order when there is one object per station and each lies within
    :data:`LOCATION_TOLERANCE_DEG` of its station (the documented order); otherwise each object is given its
    nearest station, which must make a one-to-one match within the tolerance (an answer missing a station keeps
    the others: the weight-share rule of :func:`aggregate` then decides each hour). ResponseShapeError when
    neither holds: the i-th object was taken for the i-th station, so an answer in another order gave each
    station's weight to another station's temperature. An object without numeric ``latitude``/``longitude``
    is taken in request order (positions only)."""
    where: list[tuple[float, float] | None] = []
    for item in items:
        lat, lon = item.get("latitude"), item.get("longitude")
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lat, lon))
        where.append((float(lat), float(lon)) if ok else None)  # type: ignore[arg-type]
    if len(items) == len(coords) and all(
            w is None or _distance_deg(w, c) <= LOCATION_TOLERANCE_DEG for w, c in zip(where, coords, strict=True)):
        return list(range(len(items)))
    known = [w for w in where if w is not None]
    if len(known) != len(where):
        raise ResponseShapeError("location objects are not at the coordinates asked, and some carry none")

    def closest(w: tuple[float, float]) -> int:
        return min(range(len(coords)), key=lambda j: _distance_deg(w, coords[j]))

    nearest = [closest(w) for w in known]
    if len(set(nearest)) != len(nearest) or any(
            _distance_deg(w, coords[j]) > LOCATION_TOLERANCE_DEG for w, j in zip(known, nearest, strict=True)):
        raise ResponseShapeError("location objects do not match the coordinates asked (neither in request "
                                 "order nor one per station)")
    order: list[int | None] = [None] * len(coords)
    for i, j in enumerate(nearest):
        order[j] = i
    return order


_EXPLICIT_OFFSET = r"(?:Z|[+-]\d\d(?::?\d\d)?)$"


def _stamps(time_list: list[Any], offset: int) -> pd.Series:
    """UTC instants of a location's ``hourly.time``: wall times less ``offset``, a time with its own offset (Z,
    +01:00) as it says (a mix of both used to raise AttributeError); NaT for anything unreadable."""
    texts = pd.Series([t if isinstance(t, str) else None for t in time_list], dtype=object)
    explicit = texts.str.contains(_EXPLICIT_OFFSET, regex=True, na=False)
    if not explicit.any():  # the documented answer: wall times, vectorised
        wall = pd.to_datetime(texts, errors="coerce", format="ISO8601")
        return (wall - pd.Timedelta(seconds=offset)).dt.tz_localize("UTC")
    # one by one: pandas gives a naive time after "+01:00" that offset (checked: 02:00 became 01:00 UTC)
    return pd.Series([_one_stamp(t, offset) for t in texts], dtype="datetime64[ns, UTC]")


def _one_stamp(text: str | None, offset: int) -> pd.Timestamp:
    """One ISO time as a UTC instant (a wall time less ``offset``); NaT when it does not read."""
    if not text:
        return pd.NaT
    try:
        value = pd.Timestamp(datetime.fromisoformat(text))
    except ValueError:
        return pd.NaT
    return value.tz_convert("UTC") if value.tzinfo else (value - pd.Timedelta(seconds=offset)).tz_localize("UTC")


def _as_float(v: Any) -> float:
    """A JSON number as a float; NaN for anything else (a boolean, a string, an integer beyond a float's range)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    try:
        return float(v)
    except OverflowError:  # a 400-digit integer: valid JSON, no temperature
        return math.nan


def parse_response(body: Any, station_ids: list[str], models: list[str],
                   coords: list[tuple[float, float]] | None = None) -> Parsed:
    """Long rows (``station, model, ts`` UTC, ``value`` °C) of one response; bad values become rejections.

    ``station_ids`` are in request order, ``coords`` their (latitude, longitude): each location object is
    matched to its station by the coordinates it reports (:func:`match_locations`). Per location:
    ``hourly.time`` must be a list of ISO times (``utc_offset_seconds``, within ±14 h, applies to wall times: the
    product asks ``timezone=UTC``, so it is 0); the unit a model's values are given in (``hourly_units``) must be
    °C where it is stated (Fahrenheit winter values lie inside the plausible range). Per value: ``null`` = the model
    does not cover that hour (no row, not a rejection); a number outside [−60, 60] °C, a non-number (``"12.3"``
    strings are refused too: the API sends numbers), NaN, a time that does not parse, a time not on the hour (a
    :15 value was never overwritten by a later hourly run and was interpolated through) and an hour given twice
    in one block (the last copy used to win) are rejections. A location block without a usable ``hourly`` is
    one rejection, and so is a station the answer holds no object for (``coords`` given: the others are kept).
    ResponseShapeError when the body does not hold one object per location (with ``coords``: at most one, each
    matching a station)."""
    items = response_locations(body, len(station_ids), allow_fewer=coords is not None)
    order: list[int | None] = (match_locations(items, coords) if coords is not None
                               else list(range(len(items))))
    frames: list[pd.DataFrame] = []
    rejections: list[Rejection] = []
    missing: list[str] = []
    record_no = 0
    for station, index in zip(station_ids, order, strict=True):
        if index is None:  # the answer has no object for it (the run used to fail, the other stations unused)
            rejections.append(Rejection(record_no, "no location object for this station in the answer",
                                        _dump({"station": station})))
            missing.append(station)
            record_no += 1
            continue
        item = items[index]
        hourly = item.get("hourly")
        offset = item.get("utc_offset_seconds", 0)
        time_list = hourly.get("time") if isinstance(hourly, dict) else None
        if (not isinstance(time_list, list) or not isinstance(offset, int) or isinstance(offset, bool)
                or abs(offset) > MAX_UTC_OFFSET_S):
            rejections.append(Rejection(record_no, "location block without hourly.time list or utc_offset_seconds "
                                        f"within ±{MAX_UTC_OFFSET_S // 3600} h",
                                        _dump({"station": station, "block": _head(item)})))
            record_no += 1
            continue
        stamps = _stamps(time_list, offset)
        # the block's times, judged once for all its models
        bad_time = stamps.isna().to_numpy()
        off_hour = ~bad_time & (stamps != stamps.dt.floor("h")).to_numpy()
        repeated = ~bad_time & stamps.duplicated(keep=False).to_numpy()
        usable_time = ~(bad_time | off_hour | repeated)
        declared = item.get("hourly_units")
        units: dict[str, Any] = declared if isinstance(declared, dict) else {}
        assert isinstance(hourly, dict)
        for model in models:
            key = _value_key(hourly, model, models)
            series = hourly.get(key) if key else None
            if not isinstance(series, list) or len(series) != len(time_list):
                rejections.append(Rejection(
                    record_no, f"no {VARIABLE} list for model {model} of the length of hourly.time",
                    _dump({"station": station, "model": model, "key": key,
                           "length": len(series) if isinstance(series, list) else None, "times": len(time_list)})))
                record_no += 1
                continue
            unit = units.get(key) if key else None
            if unit is not None and unit != UNIT:
                rejections.append(Rejection(record_no, f"{key} given in {unit!r}, not {UNIT}",
                                            _dump({"station": station, "model": model, "unit": unit})))
                record_no += 1
                continue
            # Vectorised for the usual answer (numbers and nulls); per-value reasons only where needed.
            present = np.fromiter((v is not None for v in series), dtype=bool, count=len(series))
            arr = np.fromiter((_as_float(v) if v is not None else math.nan for v in series), dtype="float64",
                              count=len(series))
            with np.errstate(invalid="ignore"):
                good = present & usable_time & np.isfinite(arr) & (arr >= MIN_DEGC) & (arr <= MAX_DEGC)
            for i in np.flatnonzero(present & ~good):
                v = series[i]
                reason = ("time not on the hour" if off_hour[i] else
                          "hour given more than once in one answer" if repeated[i] else
                          _reason(bool(bad_time[i]), time_list[i], v))
                rejections.append(Rejection(record_no, reason, _dump(
                    {"station": station, "model": model, "time": time_list[i], "value": v})))
                record_no += 1
            frames.append(pd.DataFrame({"station": station, "model": model, "ts": stamps[good].to_numpy(),
                                        "value": arr[good]}))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"station": pd.Series(dtype=object), "model": pd.Series(dtype=object),
         "ts": pd.Series(dtype="datetime64[ns, UTC]"), "value": pd.Series(dtype="float64")})
    rows["ts"] = pd.to_datetime(rows["ts"], utc=True)
    return Parsed(rows.reset_index(drop=True), rejections, missing)


def _reason(bad_time: bool, t_raw: Any, v: Any) -> str:
    """Why one non-null value is refused."""
    if bad_time:
        return f"unreadable time {t_raw!r}"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return f"value is not a number: {type(v).__name__}"
    if not math.isfinite(_as_float(v)):
        return "value is not finite"
    return f"value {v} outside [{MIN_DEGC:g}, {MAX_DEGC:g}] °C"


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str, allow_nan=True)


def _head(item: Any) -> Any:
    """A short view of a malformed block for the dead letter (not the whole 200-hour arrays)."""
    if not isinstance(item, dict):
        return repr(item)[:500]
    return {k: (v if not isinstance(v, list | dict) else f"<{type(v).__name__} of {len(v)}>") for k, v in item.items()}


# --- aggregate ---------------------------------------------------------------------------------------


def aggregate(rows: pd.DataFrame, stations: pd.DataFrame, min_weight_share: float) -> pd.DataFrame:
    """National temperature per (``model``, ``ts``): the weighted mean over the stations with a value.

    Missing stations: the weights of the stations present are renormalised (the mean of what is
    known), and an hour is kept only when the present stations hold at least ``min_weight_share``
    of the total weight — below that the mean would lean on one region's climate, so the hour is
    left out (nothing is written for it; an earlier run's value stays the latest version).
    Returns ``model, ts, value, weight_share, stations``.
    """
    cols = ["model", "ts", "value", "weight_share", "stations"]
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            cols, [object, "datetime64[ns, UTC]", "float64", "float64", "int64"], strict=True)})
    w = stations.set_index("id")["weight"]
    frame = rows.assign(weight=rows["station"].map(w).astype("float64"))
    frame = frame[frame["weight"].notna()]
    frame = frame.assign(wv=frame["weight"] * frame["value"])
    grouped = frame.groupby(["model", "ts"], sort=True).agg(
        wsum=("weight", "sum"), wv=("wv", "sum"), stations=("station", "nunique"))
    total = float(w.sum())
    out = grouped.reset_index()
    out["value"] = out["wv"] / out["wsum"]
    out["weight_share"] = out["wsum"] / total
    out = out[out["weight_share"] >= min_weight_share - 1e-9]
    return out[cols].reset_index(drop=True)


def blend(rows: pd.DataFrame, stations: pd.DataFrame, priority: list[str],
          min_weight_share: float) -> pd.DataFrame:
    """The national forecast: per station and ``ts`` the value of the first model of ``priority`` that has one,
    then averaged over the stations by :func:`aggregate`; ``ts, value, model`` (``model``: the one that gave the largest
    share of that hour's weight).

    Why a priority and not a mean: Météo-France's seamless forecast (AROME 0.01–0.025° for 2 days,
    ARPEGE after) is the finer model over France but stops after 4 days; ECMWF IFS runs 15 days
    (Open-Meteo docs, meteofrance-api and ecmwf-api pages).  The product needs D+7, so the national
    forecast is Météo-France's while it lasts, then ECMWF's.  Why per station: an hour a model covers for only
    some stations would otherwise be that model's mean over the stations it has, its weights renormalised —
    leaning toward their regions' climate — while the next model has the others; a station is filled from the
    next model instead, so the national mean keeps the same stations and weights at every hour.
    """
    rank = {m: i for i, m in enumerate(priority)}
    frame = rows[rows["model"].isin(rank)] if not rows.empty else rows
    best = (frame.assign(rank=frame["model"].map(rank)).sort_values(["station", "ts", "rank"], kind="stable")
            .drop_duplicates(["station", "ts"], keep="first"))
    national = aggregate(best.assign(model="blend"), stations, min_weight_share)
    if national.empty:  # no rows, or no hour with enough of the weight
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "value": pd.Series(dtype="float64"),
                             "model": pd.Series(dtype=object)})
    w = stations.set_index("id")["weight"]
    share = best.assign(weight=best["station"].map(w).astype("float64")).groupby(["ts", "model"])["weight"].sum()
    main = share.reset_index().sort_values(["ts", "weight"], ascending=[True, False], kind="stable")
    main = main.drop_duplicates("ts", keep="first").set_index("ts")["model"]
    out = national[["ts", "value"]].assign(model=national["ts"].map(main).to_numpy())
    return out.reset_index(drop=True)



def to_grid(hourly: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, resolution_min: int) -> pd.DataFrame:
    """Hourly ``ts, value`` on the ``resolution_min`` grid over ``[start, end)``: linear in time between two
    known hours (2 m temperature is an instantaneous, smooth quantity), NaN where either neighbour is
    missing — never extrapolated past the last known hour."""
    grid = pd.date_range(start.ceil(f"{resolution_min}min"), end, freq=f"{resolution_min}min", inclusive="left")
    known = hourly.dropna(subset=["value"]).set_index("ts")["value"].sort_index()
    if known.empty:
        return pd.DataFrame({"ts": grid, "value": np.full(len(grid), np.nan)})
    x = known.index.as_unit("ns").asi8.astype("float64")
    g = grid.as_unit("ns").asi8.astype("float64")
    values = np.interp(g, x, known.to_numpy("float64"), left=np.nan, right=np.nan)
    # a grid point between two known hours that are more than one hour apart lies in a gap: NaN
    pos = np.searchsorted(x, g, side="right")
    exact = np.isin(g, x)
    lo = np.clip(pos - 1, 0, len(x) - 1)
    hi = np.clip(pos, 0, len(x) - 1)
    gap = (x[hi] - x[lo]) > 3600e9
    values[gap & ~exact] = np.nan
    return pd.DataFrame({"ts": grid, "value": values})
