"""Bearer tokens, checked one way everywhere: the query API's token (its dependency and its cache's fast path) and
the stages' admin token (shared/app.py stage_options). A token that is not configured, or blank, matches nothing
(fail closed); the comparison takes constant time; no token is ever logged or echoed."""

from __future__ import annotations

import hmac

from pydantic import SecretStr


def token_bytes(token: SecretStr | None) -> bytes:
    """The configured token as bytes, ``b""`` when none is configured (surrounding whitespace of a secret file
    dropped)."""
    return token.get_secret_value().strip().encode() if token is not None else b""


def bearer_matches(authorization: str | bytes | None, token: SecretStr | None) -> bool:
    """True when an ``Authorization`` header value is ``Bearer <token>`` (scheme in any case) and a token is
    configured."""
    secret = token_bytes(token)
    if not secret or not authorization:
        return False
    value = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
    scheme, _, given = value.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), secret)
