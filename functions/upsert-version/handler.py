"""upsert-version: version landed pages into measurements (wiring only).

Single-flight: a second invocation while one runs returns status "skipped".  On a store with neither
the shipped history nor polled measurements it loads the history first (the bootstrap's owner).
Logic: shared/ingest/versioning.py, shared/ingest/bootstrap.py.
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
from shared.ingest.bootstrap import check_bootstrap_settings
from shared.ingest.versioning import run_upsert
from shared.settings import Settings
from shared.store import Store

app = create_app("upsert-version", description="Turn landed ODRÉ pages into versioned measurements",
                 checks=[check_bootstrap_settings])


class UpsertRequest(StageRequest):
    """Optional parameters; an empty body (cron) versions every pending page."""

    max_batches: int | None = Field(default=None, ge=1, description="landed pages to version in this call")
    bootstrap: bool = Field(default=True, description="load the shipped history first while it is pending "
                            "(false: skip instead)")


@app.post("/", response_model=RunResponse)
def invoke(
    request: Request,
    body: UpsertRequest | None = Body(default=None),
    store: Store = Depends(store_dep),
    settings: Settings = Depends(settings_dep),
) -> dict[str, Any]:
    """Run one upsert-version."""
    opts = stage_options(request, body, UpsertRequest)  # options need the admin token
    return invoke_stage(
        request, store, "upsert-version",
        lambda run: run_upsert(store, settings, run, max_batches=opts.max_batches, bootstrap=opts.bootstrap),
    )


handler = LambdaHandler(app)  # Mangum; a failed scheduled run fails the Lambda invocation
