"""query: the read-only HTTP API over ClickHouse (and the model registry), behind the gateway.

Routes live in ``shared.query.api``; this file only wires them. Every route except /health, /metrics,
/docs and /openapi.json needs ``Authorization: Bearer <query_token>``. No ML import here: the app starts fast.
"""

from __future__ import annotations

from mangum import Mangum

from shared.app import create_app, startup_settings
from shared.errors import AuthError
from shared.query.api import install_fast_path, protected, public
from shared.query.auth import auth_error_handler
from shared.query.metrics import count_responses

DESCRIPTION = """Read-only access to PowerSense: measurements (with every revision and as-of reads), forecasts
with prediction intervals, forecast-vs-actual, anomalies, data quality, pipeline runs and the model registry.

Authenticate with `Authorization: Bearer <token>` (OpenFaaS secret `query_token`); `/health`, `/metrics`,
`/docs` and `/openapi.json` are open. Timestamps are ISO 8601 (no offset = UTC); ranges are [start, end).
Errors are always `{"error", "detail"}`: unknown or missing parameters 422; refused values (malformed, not
one of the choices, over a maximum, start after end, unknown metric, bad cursor) 400; no token 401."""

# /health and /metrics are the query API's own (data freshness, scrape-time store gauges).
app = create_app("query", title="PowerSense query API", description=DESCRIPTION, health=False, metrics=False,
                 root_path=startup_settings("query").query_root_path)
app.add_exception_handler(AuthError, auth_error_handler)
app.include_router(public)
app.include_router(protected)
install_fast_path(app)
count_responses(app)  # outermost: every response, fast-path hits included

handler = Mangum(app)
