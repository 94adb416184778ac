"""forecast: train on schedule, keep the better model, write a 7-day forecast every run
(wiring only; logic: shared/forecasting/service.py, models as files: shared/forecasting/registry.py on the
byte store shared/artifacts.py).

Timeout: training (~1 min on 2 cores) plus prediction run well inside the stack's 300 s exec_timeout."""

from __future__ import annotations

from typing import Any

from fastapi import Body, Depends, Request
from pydantic import Field

from shared import clock
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
from shared.artifacts import get_artifact_store
from shared.settings import Settings
from shared.store import Store

app = create_app("forecast", description="7-day load forecasts from the current NeuralProphet model")


class ForecastRequest(StageRequest):
    """Optional parameters; an empty body (cron) trains only when due."""

    train: bool = Field(default=True, description="allow training in this run when due")
    force_train: bool = Field(default=False, description="train now even if the model is fresh")


@app.post("/", response_model=RunResponse)
def invoke(
    request: Request,
    body: ForecastRequest | None = Body(default=None),
    store: Store = Depends(store_dep),
    settings: Settings = Depends(settings_dep),
) -> dict[str, Any]:
    """Run one forecast (train if due, then predict or fall back)."""
    from shared.forecasting.service import run_forecast_stage  # the ML stack loads on first call, not at import

    opts = stage_options(request, body, ForecastRequest)  # options need the admin token
    return invoke_stage(request, store, "forecast", lambda run: run_forecast_stage(
        store, settings, run, artifacts_factory=lambda: get_artifact_store(settings), now=clock.now(),
        train=opts.train, force_train=opts.force_train))


handler = LambdaHandler(app)  # Mangum; a failed scheduled run fails the Lambda invocation
