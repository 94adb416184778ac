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

import logging
from datetime import date
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from shared.errors import SourceError
from shared.ingest.odre import SOURCE_REQUESTS, RetryableSourceError, _retry_after  # one retry vocabulary
from shared.logs import log_event
from shared.settings import Settings

log = logging.getLogger(__name__)


def _coords(values: list[float]) -> str:
    # 5 decimals ≈ 1 m: the API snaps to its grid anyway; shorter URLs for 35 locations.
    return ",".join(f"{v:.5f}" for v in values)


class OpenMeteoClient:
    """GETs JSON from the forecast and archive endpoints with retries."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.forecast_url = f"{settings.weather_url.rstrip('/')}/forecast"
        self.archive_url = f"{settings.weather_archive_url.rstrip('/')}/archive"
        self.retries = settings.source_retries
        self.backoff_s = settings.source_backoff_s
        self.backoff_max_s = settings.source_backoff_max_s
        self.retry_budget_s = settings.source_retry_budget_s
        self._http = httpx.Client(timeout=httpx.Timeout(settings.source_timeout_s), transport=transport,
                                  headers={"accept": "application/json", "user-agent": "powersense-poll-weather/0.1"})

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> OpenMeteoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _wait(self, state: Any) -> float:
        exp = wait_exponential_jitter(initial=self.backoff_s, max=self.backoff_max_s, jitter=self.backoff_s)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableSourceError) and exc.retry_after is not None:
            return min(max(exc.retry_after, exp), self.backoff_max_s)
        return float(exp)

    def _get_json(self, url: str, params: dict[str, str]) -> tuple[Any, str]:
        def _log_retry(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            SOURCE_REQUESTS.labels("retry").inc()
            log_event(log, "weather_source_retry", logging.WARNING, attempt=state.attempt_number, url=url,
                      error=str(exc))

        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1) | stop_after_delay(self.retry_budget_s),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, RetryableSourceError)),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            result: tuple[Any, str] = retrying(self._get, url, params)
        except RetryableSourceError as exc:
            SOURCE_REQUESTS.labels("failed").inc()
            raise SourceError(f"{url} failed after retries: {exc}") from exc
        SOURCE_REQUESTS.labels("ok").inc()
        return result

    def _get(self, url: str, params: dict[str, str]) -> tuple[Any, str]:
        try:
            resp = self._http.get(url, params=params)
        except httpx.TimeoutException as exc:
            raise RetryableSourceError(f"timeout: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSourceError(f"transport error: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise RetryableSourceError(f"HTTP {resp.status_code}: {resp.text[:200]}", _retry_after(resp))
        if resp.status_code >= 400:
            raise SourceError(f"HTTP {resp.status_code} from {resp.request.url}: {resp.text[:500]}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise RetryableSourceError(f"response is not valid JSON ({len(resp.content)} bytes): {exc}") from exc
        return body, str(resp.request.url)
