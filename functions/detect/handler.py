"""detect: anomalies from forecast residuals, data-quality checks, drift and model metrics (wiring only).

Cron (empty body, every 15 min) examines the window after the last run's watermark; an HTTP call may
pass a backfill window. Logic: shared/detection/service.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, Depends, Request
from pydantic import AwareDatetime, Field

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
from shared.detection.service import run_detect
from shared.settings import Settings
from shared.store import Store

app = create_app("detect", description="Flag anomalies, check data quality, track drift and model accuracy")


class DetectRequest(StageRequest):
    """Optional parameters; an empty body (cron) examines the window after the watermark."""

    start: AwareDatetime | None = Field(default=None, description="backfill window start (UTC offset required)")
    end: AwareDatetime | None = Field(default=None, description="backfill window end, exclusive")


@app.post("/", response_model=RunResponse)
def invoke(
    request: Request,
    body: DetectRequest | None = Body(default=None),
    store: Store = Depends(store_dep),
    settings: Settings = Depends(settings_dep),
) -> dict[str, Any]:
    """Run one detect pass."""
    opts = stage_options(request, body, DetectRequest)  # options need the admin token
    return invoke_stage(request, store, "detect", lambda run: run_detect(store, settings, run, start=opts.start,
                                                                          end=opts.end))


handler = LambdaHandler(app)  # Mangum; a failed scheduled run fails the Lambda invocation
