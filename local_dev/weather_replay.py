"""An Open-Meteo-compatible replay for the embedded runtime and the tests: ``/v1/forecast``, ``/v1/archive``.

**What the values are — read this before looking at a curve.** No archived weather *forecasts* ship
with PowerSense, so both endpoints serve the shipped **realised** national temperature (Enedis
smoothed realised temperature, ``data/weather/enedis_temperature_lissee_nationale_*.csv.gz``, the
on-the-hour values of the 30-min series), **identical at every location and for every model**.
The "forecast" of this replay is therefore the temperature that actually happened (a perfect
forecast): it exercises the data path — request, shape, versioning, as-of reads — and never
measures what a weather forecast is worth.  Hours after the shipped data (2023-12-31T23:00Z) are
``null``, as Open-Meteo answers for hours a model does not cover.

The response shape follows Open-Meteo's documentation (https://open-meteo.com/en/docs, "API
Documentation" and "JSON Return Object"; https://open-meteo.com/en/docs/historical-weather-api):

* one object per location — ``latitude``, ``longitude``, ``generationtime_ms``, ``utc_offset_seconds``,
  ``timezone``, ``timezone_abbreviation``, ``elevation`` (``null`` here: the replay has no terrain
  model), ``hourly_units`` and ``hourly`` = ``{"time": ["YYYY-MM-DDTHH:MM", …], "temperature_2m": […]}``;
  several comma-separated coordinates → a JSON **list** of such objects in the order asked;
* ``models=a,b`` → one array per model, suffixed ``temperature_2m_a``, ``temperature_2m_b``; one model →
  ``temperature_2m`` (no suffix);
* forecast: "time always starts at 0:00 today" (in ``timezone``; only ``UTC``/``GMT`` are served),
  ``past_days`` days before it, ``forecast_days`` days (default 7, ≤ 16).  Each model covers hours up to
  its documented forecast length after the current hour (Météo-France seamless 4 days, ECMWF IFS 15
  days, ICON 7.5, GFS 16; best_match 16) and ``null`` after, like the real API;
* archive: ``start_date``…``end_date`` (inclusive days); hours newer than the documented delay (5 days
  for ERA5-based best_match/era5/era5_land, 2 days for ecmwf_ifs) are ``null``;
* errors: HTTP 400 ``{"error": true, "reason": "…"}``.

"Today" and "now" are ``shared.clock.now()``: with the demo's simulated clock the forecast moves on
as simulated time passes.
"""

from __future__ import annotations

import time
from collections.abc import Container
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared import clock
from shared.settings import REPO_ROOT
from shared.weather.enedis import read_enedis_dir

WEATHER_DIR = REPO_ROOT / "data" / "weather"

# Forecast length in hours per model (Open-Meteo docs: generic forecast page's model table,
# meteofrance-api "Forecast Length 4 days", ecmwf-api "up to 15 days").
FORECAST_HOURS: dict[str, int] = {
    "best_match": 16 * 24,
    "meteofrance_seamless": 4 * 24,
    "meteofrance_arpege_europe": 4 * 24,
    "ecmwf_ifs025": 15 * 24,
    "ecmwf_ifs": 15 * 24,
    "icon_seamless": 180,
    "gfs_seamless": 16 * 24,
}
# Archive delay in hours (historical-weather-api: ERA5/ERA5-Land "daily with 5 days delay", ECMWF IFS 2 days).
ARCHIVE_DELAY_HOURS: dict[str, int] = {"best_match": 5 * 24, "era5": 5 * 24, "era5_land": 5 * 24, "ecmwf_ifs": 2 * 24}


@lru_cache(maxsize=4)
def hourly_temperature(weather_dir: str) -> pd.Series:
    """The shipped realised national temperature on the hour (UTC index, °C; the one reader of the series,
    :mod:`shared.weather.enedis`)."""
    df = read_enedis_dir(weather_dir)
    series = pd.Series(df["realised"].to_numpy("float64"), index=pd.DatetimeIndex(df["ts"]))
    return series[(series.index.minute == 0) & (series.index.second == 0)]


def _error(reason: str) -> JSONResponse:
    return JSONResponse({"error": True, "reason": reason}, status_code=400)


def _floats(text: str | None, name: str, lo: float, hi: float) -> list[float]:
    if not text:
        raise ValueError(f"Parameter '{name}' is required")
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"Parameter '{name}' must be a list of floating point numbers") from exc
    if not all(lo <= v <= hi for v in values):
        raise ValueError(f"Parameter '{name}' must be within {lo:g} and {hi:g}")
    return values


def _int(text: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise ValueError(f"Parameter '{name}' must be an integer") from exc
    if not lo <= value <= hi:
        raise ValueError(f"Parameter '{name}' must be within {lo} and {hi}")
    return value


def _common(params: Any, known_models: Container[str]) -> tuple[list[float], list[float], list[str], list[str]]:
    """Locations, requested hourly variables and models (validated as the API does; ``known_models``: the
    models the endpoint serves)."""
    lat = _floats(params.get("latitude"), "latitude", -90, 90)
    lon = _floats(params.get("longitude"), "longitude", -180, 180)
    if len(lat) != len(lon):
        raise ValueError("Parameter 'latitude' and 'longitude' must have the same number of elements")
    hourly = [v for v in (params.get("hourly") or "").split(",") if v]
    unknown = [v for v in hourly if v != "temperature_2m"]
    if unknown:  # the replay holds temperature only; the real API knows many more variables
        raise ValueError(f"Cannot initialize ForecastVariable from invalid String value {unknown[0]}")
    tz = params.get("timezone") or "GMT"
    if tz not in ("UTC", "GMT"):
        raise ValueError("the replay serves timezone=UTC or GMT only")
    models = [m for m in (params.get("models") or "best_match").split(",") if m]
    bad = [m for m in models if m not in known_models]
    if bad:
        raise ValueError(f"Cannot initialize MultiDomains from invalid String value {bad[0]}")
    return lat, lon, hourly, models


def _body(lat: list[float], lon: list[float], hourly: list[str], models: list[str], times: pd.DatetimeIndex,
          per_model: dict[str, np.ndarray], tz: str, t0: float) -> Any:
    stamps = [t.strftime("%Y-%m-%dT%H:%M") for t in times]
    units: dict[str, str] = {"time": "iso8601"}
    block: dict[str, Any] = {"time": stamps}
    if hourly:
        for m in models:
            key = "temperature_2m" if len(models) == 1 else f"temperature_2m_{m}"
            units[key] = "°C"
            block[key] = [None if np.isnan(v) else round(float(v), 1) for v in per_model[m]]
    items = [{
        "latitude": round(a, 4), "longitude": round(o, 4),
        "generationtime_ms": round((time.perf_counter() - t0) * 1000, 3),
        "utc_offset_seconds": 0, "timezone": tz, "timezone_abbreviation": tz, "elevation": None,
        "hourly_units": units, "hourly": block,
    } for a, o in zip(lat, lon, strict=True)]
    return items if len(items) > 1 else items[0]


def create_weather_replay_app(weather_dir: Path = WEATHER_DIR) -> FastAPI:
    """The replay app: ``GET /v1/forecast`` and ``GET /v1/archive`` (mounted by the demo under
    ``/replay/open-meteo``; served on its own by the tests)."""
    app = FastAPI(title="Open-Meteo replay (realised temperature served as forecast)", openapi_url=None,
                  docs_url=None, redoc_url=None)

    @app.get("/v1/forecast")
    def forecast(request: Request) -> Any:
        t0 = time.perf_counter()
        params = request.query_params
        try:
            lat, lon, hourly, models = _common(params, FORECAST_HOURS)
            past = _int(params.get("past_days"), "past_days", 0, 0, 92)
            days = _int(params.get("forecast_days"), "forecast_days", 7, 0, 16)
        except ValueError as exc:
            return _error(str(exc))
        now = pd.Timestamp(clock.now())
        today = now.floor("D")
        times = pd.date_range(today - pd.Timedelta(days=past), today + pd.Timedelta(days=days),
                              freq="h", inclusive="left")
        values = hourly_temperature(str(weather_dir)).reindex(times).to_numpy("float64")
        per_model = {}
        for m in models:
            covered = times <= now.floor("h") + pd.Timedelta(hours=FORECAST_HOURS[m])
            per_model[m] = np.where(covered, values, np.nan)
        return JSONResponse(_body(lat, lon, hourly, models, times, per_model, params.get("timezone") or "GMT", t0))

    @app.get("/v1/archive")
    def archive(request: Request) -> Any:
        t0 = time.perf_counter()
        params = request.query_params
        try:
            lat, lon, hourly, models = _common(params, ARCHIVE_DELAY_HOURS)
            try:
                first = pd.Timestamp(params["start_date"], tz="UTC")
                last = pd.Timestamp(params["end_date"], tz="UTC")
            except (KeyError, ValueError) as exc:
                raise ValueError("Parameter 'start_date' and 'end_date' are required ISO dates") from exc
            if last < first:
                raise ValueError("End-date must be larger or equals than start-date")
        except ValueError as exc:
            return _error(str(exc))
        times = pd.date_range(first, last + pd.Timedelta(days=1), freq="h", inclusive="left")
        values = hourly_temperature(str(weather_dir)).reindex(times).to_numpy("float64")
        now = pd.Timestamp(clock.now())
        per_model = {m: np.where(times <= now - pd.Timedelta(hours=ARCHIVE_DELAY_HOURS[m]), values, np.nan)
                     for m in models}
        return JSONResponse(_body(lat, lon, hourly, models, times, per_model, params.get("timezone") or "GMT", t0))

    return app
