"""Bearer-token authentication of the query API.

The OpenFaaS gateway protects only ``/system/*``; ``/function/*`` is open, so the function checks
callers itself. The token is the OpenFaaS secret ``query_token`` (``/var/openfaas/secrets/query_token``,
read by ``Settings.query_token``). Without a configured token every protected request is refused
(fail closed). The token is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import logging

from fastapi import Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import AuthError
from shared.logs import log_event
from shared.settings import get_settings
from shared.tokens import bearer_matches, token_bytes

log = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="queryToken",
    description="The query token (OpenFaaS secret `query_token`): `Authorization: Bearer <token>`.",
)
WWW_AUTHENTICATE = 'Bearer realm="powersense-query"'
_warned_unconfigured = False


async def require_token(credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme)) -> None:
    """FastAPI dependency: pass with a valid bearer token, else raise AuthError (401)."""
    global _warned_unconfigured
    expected = get_settings().query_token
    if not token_bytes(expected):
        if not _warned_unconfigured:
            log_event(log, "query_token_not_configured", logging.WARNING,
                      hint="create the OpenFaaS secret query_token (make demo does this locally)")
            _warned_unconfigured = True
        raise AuthError("authentication required")
    if credentials is None:
        raise AuthError("missing bearer token")
    if not bearer_matches(f"Bearer {credentials.credentials}".encode(), expected):
        raise AuthError("invalid bearer token")


async def auth_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """401 with a WWW-Authenticate challenge (RFC 6750); the body never echoes the credential."""
    log_event(log, "request_unauthorized", logging.WARNING, path=request.url.path, reason=str(exc))
    return JSONResponse(
        {"error": "AuthError", "detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": WWW_AUTHENTICATE}
    )
