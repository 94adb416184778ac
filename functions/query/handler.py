"""query: the read-only HTTP API over ClickHouse (and the model registry), behind the gateway.

Routes live in ``shared.query.api``; this file only wires them. Every route except /health and
/metrics needs ``Authorization: Bearer <query_token>``. No ML import here: the app starts fast.
"""

from __future__ import annotations

from mangum import Mangum

from shared.app import create_app
from shared.errors import AuthError
from shared.query.api import install_fast_path, protected, public
from shared.query.auth import auth_error_handler

DESCRIPTION = """Read-only access to PowerSense: measurements (with every revision and as-of reads), forecasts
with prediction intervals, forecast-vs-actual, anomalies, data quality, pipeline runs and the model registry.

Authenticate with `Authorization: Bearer <token>` (OpenFaaS secret `query_token`); `/health` and `/metrics`
are open. Timestamps are ISO 8601 (no offset = UTC); ranges are [start, end). Bad input is a 4xx with
`{"error", "detail"}`; unknown parameters are rejected (422)."""

# /health and /metrics are the query API's own (data freshness, scrape-time store gauges).
app = create_app("query", title="PowerSense query API", description=DESCRIPTION, health=False, metrics=False)
app.add_exception_handler(AuthError, auth_error_handler)
app.include_router(public)
app.include_router(protected)
install_fast_path(app)

handler = Mangum(app)
