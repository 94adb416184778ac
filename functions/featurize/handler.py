"""featurize: put the latest series on the grid and write lag/rolling/calendar/temperature features
for the window new or revised data affects (wiring only; logic: shared/features.py)."""

from __future__ import annotations

from typing import Any

from fastapi import Body, Depends, Request

from shared.app import (
    LambdaHandler,
    RunResponse,
    StageRequest,
    create_app,
    invoke_stage,
    settings_dep,
    store_dep,
)
from shared.features import run_featurize
from shared.settings import Settings
from shared.store import Store

app = create_app("featurize", description="Incremental features of the forecast series on a regular grid")


class FeaturizeRequest(StageRequest):
    """No options (the watermark decides the window): an empty body, ``{}`` or ``null``; any key is refused."""


@app.post("/", response_model=RunResponse)
def invoke(
    request: Request,
    body: FeaturizeRequest | None = Body(default=None),
    store: Store = Depends(store_dep),
    settings: Settings = Depends(settings_dep),
) -> dict[str, Any]:
    """Run one featurize pass (cron or HTTP; no parameters: the watermark decides the window)."""
    return invoke_stage(request, store, "featurize", lambda run: run_featurize(store, settings, run))


handler = LambdaHandler(app)  # Mangum; a failed scheduled run fails the Lambda invocation
