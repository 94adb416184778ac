"""poll: fetch ODRÉ eco2mix-national-tr records since the watermark and land them (wiring only).

Cron (empty body) computes its window from watermarks in ClickHouse; an HTTP call may pass a
backfill window and a page budget.  Logic: shared/ingest/poll.py.
"""

from __future__ import annotations

from datetime import datetime
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
from shared.ingest.poll import run_poll
from shared.settings import Settings
from shared.store import Store

app = create_app("poll", description="Fetch ODRÉ eco2mix-national-tr records and land them raw")


class PollRequest(StageRequest):
    """Optional parameters; an empty body (cron) polls the window after the watermark."""

    start: AwareDatetime | None = Field(default=None, description="backfill window start (UTC offset required)")
    end: AwareDatetime | None = Field(default=None, description="backfill window end, exclusive")
    max_pages: int | None = Field(default=None, ge=1, description="stop after this many pages")


@app.post("/", response_model=RunResponse)
def invoke(
    request: Request,
    body: PollRequest | None = Body(default=None),
    store: Store = Depends(store_dep),
    settings: Settings = Depends(settings_dep),
) -> dict[str, Any]:
    """Run one poll."""
    opts = stage_options(request, body, PollRequest)  # options need the admin token
    start: datetime | None = opts.start
    end: datetime | None = opts.end
    return invoke_stage(
        request, store, "poll",
        lambda run: run_poll(store, settings, run, start=start, end=end, max_pages=opts.max_pages),
    )


handler = LambdaHandler(app)  # Mangum; a failed scheduled run fails the Lambda invocation
