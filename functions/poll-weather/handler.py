"""poll-weather: fetch Open-Meteo 2 m temperature forecasts for the weighted locations and version them
(wiring only).

Cron (empty body) plans ``past_days`` from the watermark in ClickHouse; an HTTP call may override
``past_days``/``forecast_days``.  Logic: shared/weather/service.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, Depends, Request
from pydantic import Field

from shared.app import (
    LambdaHandler,
    RunResponse,
    StageRequest,
    create_app,
    invoke_stage,
    settings_dep,
    stage_options,
    store_dep,
)
from shared.settings import Settings
from shared.store import Store
from shared.weather.service import check_stations_setting, run_poll_weather

app = create_app("poll-weather", description="Fetch Open-Meteo temperature forecasts and store them as versions",
                 checks=[check_stations_setting])


class PollWeatherRequest(StageRequest):
    """Optional parameters; an empty body (cron) uses the watermark and the configured horizon."""

    past_days: int | None = Field(default=None, ge=0, le=92, description="past days to ask again (catch-up)")
    forecast_days: int | None = Field(default=None, ge=1, le=16, description="forecast days to ask")


@app.post("/", response_model=RunResponse)
def invoke(
    request: Request,
    body: PollWeatherRequest | None = Body(default=None),
    store: Store = Depends(store_dep),
    settings: Settings = Depends(settings_dep),
) -> dict[str, Any]:
    """Run one poll-weather."""
    opts = stage_options(request, body, PollWeatherRequest)  # options need the admin token
    return invoke_stage(
        request, store, "poll-weather",
        lambda run: run_poll_weather(store, settings, run, past_days=opts.past_days,
                                     forecast_days=opts.forecast_days),
    )


handler = LambdaHandler(app)  # Mangum; a failed scheduled run fails the Lambda invocation
