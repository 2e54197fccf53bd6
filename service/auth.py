"""Who may call what: bearer keys with scopes, optional policy restrictions, per-key rate limits.

Scopes: ``act`` (POST /act), ``reward`` (POST /reward), ``read`` (GET /policies...,
/experiments...), ``admin`` (everything, including creating and changing policies and
experiments). With no key configured at all every route is open (development); as soon as
one is, every route except /healthz, /readyz and /metrics needs a key holding its scope.

Keys never leave this module: a key is identified elsewhere (rate-limit buckets) by a short
digest, and no message, log line or metric label carries it. Routes get the caller's grant
through the dependencies of service.deps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import time
from collections.abc import Iterable

from fastapi import Request

from service.errors import Forbidden, RateLimited, Unauthorized
from service.settings import Settings

SCOPES = ("act", "reward", "read", "admin")
CLIENT_SCOPES = frozenset({"act", "reward", "read"})


@dataclasses.dataclass(frozen=True)
class Grant:
    """What one key may do. ``policies`` None: every policy."""

    key_id: str
    scopes: frozenset[str]
    policies: frozenset[str] | None = None
    rate_per_second: float = 0.0

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def check_policy(self, name: str) -> None:
        """Raises Forbidden when the key is restricted to other policies."""
        if self.policies is not None and name not in self.policies:
            raise Forbidden(f"authorization: this key may not use policy {name!r}")

    def check_policies(self, names: Iterable[str]) -> None:
        for name in names:
            self.check_policy(name)


OPEN = Grant("open", frozenset(SCOPES))
"""The grant of every caller when no key is configured."""


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Keyring:
    """The configured keys and their rate-limit buckets (per process)."""

    def __init__(self, settings: Settings) -> None:
        self._keys: list[tuple[bytes, Grant]] = []
        default_rate = settings.rate_limit_per_second
        for key in settings.api_key_set():
            self._keys.append((key.encode(), Grant(key_id(key), CLIENT_SCOPES, None, default_rate)))
        if admin := settings.admin_key.get_secret_value():
            self._keys.append((admin.encode(), Grant(key_id(admin), frozenset(SCOPES))))
        for scoped in settings.scoped_keys:
            secret = scoped.key.get_secret_value()
            rate = scoped.rate_per_second if scoped.rate_per_second is not None else default_rate
            policies = None if scoped.policies is None else frozenset(scoped.policies)
            grant = Grant(key_id(secret), frozenset(scoped.scopes), policies, rate)
            self._keys.append((secret.encode(), grant))
        self.open = not self._keys
        self._burst_seconds = settings.rate_limit_burst_seconds
        self.open_rate = default_rate
        self._buckets: dict[str, TokenBucket] = {}

    def grant(self, token: str | None) -> Grant:
        """The grant of a bearer token; raises Unauthorized."""
        if self.open:
            return OPEN
        if token is None:
            raise Unauthorized("authorization: missing bearer key")
        found: Grant | None = None
        candidate = token.encode()
        for key, grant in self._keys:  # compare with every key so timing does not reveal which one matched
            if hmac.compare_digest(candidate, key) and found is None:
                found = grant
        if found is None:
            raise Unauthorized("authorization: key not accepted")
        return found

    def authorize(self, token: str | None, scope: str, client_host: str) -> Grant:
        """The grant of a bearer token for ``scope``, after taking a token from its rate limit
        (per key; per client address when no key is configured). Raises 401, 403 or 429."""
        grant = self.grant(token)
        if not grant.allows(scope):
            raise Forbidden(f"authorization: this key does not have the {scope!r} scope")
        if self.open:
            self.throttle(f"open:{client_host}", self.open_rate)
        else:
            self.throttle(grant.key_id, grant.rate_per_second)
        return grant

    def throttle(self, bucket: str, rate: float) -> None:
        """Raises RateLimited when the bucket is empty; rate 0 means unlimited."""
        if rate <= 0:
            return
        tokens = self._buckets.get(bucket)
        if tokens is None:
            tokens = self._buckets[bucket] = TokenBucket(rate, max(1.0, rate * self._burst_seconds))
        wait = tokens.take()
        if wait > 0:
            raise RateLimited(
                f"authorization: rate limit of {rate:g} requests/s for this key exceeded", math.ceil(wait)
            )


def bearer(request: Request) -> str | None:
    """The request's bearer token, if it sends one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
