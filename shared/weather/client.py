"""HTTP client of Open-Meteo's forecast (``/v1/forecast``) and historical (``/v1/archive``) APIs.

The same code talks to the real APIs (free, no key) and to the local replay
(``local_dev/weather_replay.py``); only the base URLs differ.  Retries follow the ODRÉ client's
policy and its settings (``POWERSENSE_SOURCE_RETRIES``, ``…_BACKOFF_S``, ``…_BACKOFF_MAX_S``,
``…_RETRY_BUDGET_S``, ``…_TIMEOUT_S``): timeouts, transport errors, 429 (``Retry-After`` honoured),
5xx and bodies that are not JSON are retried with exponential backoff (tenacity); other 4xx — Open-Meteo
answers 400 ``{"error": true, "reason": …}`` for a bad parameter — fail at once with a SourceError.

Parameters (Open-Meteo docs, https://open-meteo.com/en/docs): ``latitude``/``longitude`` comma-separated
lists (several locations in one call; the answer is then a JSON list in the same order),
``hourly=temperature_2m``, ``models`` comma-separated, ``timezone=UTC`` (times in UTC, offset 0),
``forecast_days`` (≤ 16), ``past_days`` (≤ 92); archive: ``start_date``/``end_date`` (ISO dates, inclusive).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx

from shared.ingest.http import RetryingJsonClient  # one retry policy, metric and log shape for every source
from shared.settings import Settings


def _coords(values: list[float]) -> str:
    # 5 decimals ≈ 1 m: the API snaps to its grid anyway; shorter URLs for 35 locations.
    return ",".join(f"{v:.5f}" for v in values)


class OpenMeteoClient(RetryingJsonClient):
    """GETs JSON from the forecast and archive endpoints with retries."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(user_agent="powersense-poll-weather/0.1", transport=transport, **self.policy(settings))
        self.forecast_url = f"{settings.weather_url.rstrip('/')}/forecast"
        self.archive_url = f"{settings.weather_archive_url.rstrip('/')}/archive"

    def forecast(self, latitudes: list[float], longitudes: list[float], models: list[str], *,
                 forecast_days: int, past_days: int) -> tuple[Any, str]:
        """The forecast answer for the locations (JSON body, URL asked)."""
        params = {"latitude": _coords(latitudes), "longitude": _coords(longitudes), "hourly": "temperature_2m",
                  "models": ",".join(models), "timezone": "UTC", "forecast_days": str(forecast_days),
                  "past_days": str(past_days)}
        return self._get_json(self.forecast_url, params)

    def archive(self, latitudes: list[float], longitudes: list[float], model: str, *,
                start: date, end: date) -> tuple[Any, str]:
        """The archive answer for the locations over ``[start, end]`` (dates inclusive, UTC)."""
        params = {"latitude": _coords(latitudes), "longitude": _coords(longitudes), "hourly": "temperature_2m",
                  "models": model, "timezone": "UTC", "start_date": start.isoformat(), "end_date": end.isoformat()}
        return self._get_json(self.archive_url, params)

    def _get_json(self, url: str, params: dict[str, str]) -> tuple[Any, str]:
        return self.retried(self._get, url, params, url=url, event="weather_source_retry")

    def _get(self, url: str, params: dict[str, str]) -> tuple[Any, str]:
        body, resp = self.get_json(url, params)
        return body, str(resp.request.url)
