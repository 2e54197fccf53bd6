"""Bearer-key checks as FastAPI dependencies."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import Unauthorized
from service.settings import Settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str, keys: frozenset[str]) -> bool:
    found = False
    for key in keys:  # compare with every key so timing does not reveal which one matched
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


async def require_client(request: Request) -> None:
    """/act, /reward and reads: a key from BANDIT_API_KEYS (or the admin key) when keys are set."""
    settings: Settings = request.app.state.settings
    keys = request.app.state.api_keys
    if not keys:
        return
    token = _bearer(request)
    if token is None:
        raise Unauthorized("authorization: missing bearer key")
    allowed = keys | ({settings.admin_key} if settings.admin_key else set())
    if not _matches(token, frozenset(allowed)):
        raise Unauthorized("authorization: key not accepted")


async def require_admin(request: Request) -> None:
    """Admin routes: BANDIT_ADMIN_KEY whenever it is set."""
    settings: Settings = request.app.state.settings
    if not settings.admin_key:
        return
    token = _bearer(request)
    if token is None:
        raise Unauthorized("authorization: missing bearer key (admin route)")
    if not _matches(token, frozenset({settings.admin_key})):
        raise Unauthorized("authorization: key not accepted for admin routes")
