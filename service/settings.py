"""Process settings, read from environment variables (documented in the README)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from training.settings import CommonSettings


class ScopedKey(BaseModel):
    """One entry of BANDIT_SCOPED_KEYS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: SecretStr = Field(min_length=16)
    scopes: list[Literal["act", "reward", "read", "admin"]] = Field(min_length=1)
    policies: list[str] | None = None
    """Restrict the key to these policies (None: all)."""
    rate_per_second: float | None = Field(default=None, ge=0)
    """This key's rate limit (None: BANDIT_RATE_LIMIT_PER_SECOND)."""


class Settings(CommonSettings):
    """Settings of the API process. Every field is read from ``BANDIT_<NAME>``."""

    host: str = "127.0.0.1"
    """Interface the API listens on."""
    port: int = 8000
    """Port the API listens on."""
    api_keys: SecretStr = SecretStr("")
    """Comma-separated keys with the act, reward and read scopes (`Authorization: Bearer <key>`)."""
    admin_key: SecretStr = SecretStr("")
    """A key with every scope, the only one the admin routes accept besides admin scoped keys."""
    scoped_keys: list[ScopedKey] = Field(default_factory=list)
    """JSON list of keys with chosen scopes, optionally restricted to policies, optionally with
    their own rate limit: `[{"key": "...", "scopes": ["act"], "policies": ["demo"],
    "rate_per_second": 50}]`. With no key configured anywhere, every route is open."""
    rate_limit_per_second: float = 0.0
    """Requests per second each key may make (0: unlimited); beyond it, 429 with Retry-After.
    Counted per API process. With no keys configured, counted per client address."""
    rate_limit_burst_seconds: float = 2.0
    """How many seconds' worth of requests a key may save up and spend at once."""
    max_policies: int = 100
    """POST /policies refuses to create more (409)."""
    max_experiments: int = 100
    """POST /experiments refuses to create more (409)."""
    max_context_dim: int = 4096
    """Largest context_dim a policy may declare (at most 4096)."""
    max_actions: int = 1024
    """Largest num_actions a policy may declare (at most 4096)."""
    max_candidates: int = 256
    """Candidate sets: the default and the largest max_candidates a policy may declare (at most 4096)."""
    max_model_bytes: int = 1 << 30
    """Largest model state a policy may need (estimated from its shape before it is built; 422 beyond)."""
    spool_dir: Path | None = None
    """Where decisions and rewards wait while Redis is unreachable; default <data_dir>/spool-<port>.
    Each API process needs its own."""
    spool_max_bytes: int = 256 << 20
    """Spool size; when it is full, /act and /reward answer 503 with Retry-After."""
    max_body_bytes: int = 1 << 20
    """Larger request bodies are refused with 413."""
    batch_max_size: int = 64
    """Most /act rows coalesced into one SavedModel call."""
    batch_max_wait_ms: float = 0.0
    """How long a batch waits for more rows once the model is free (0: take what is queued)."""
    event_ttl_margin_seconds: float = 3600.0
    """How long past its reward window an event stays known (late rewards get 409, not 404)."""
    demo_policy: bool = True
    """At start-up, create the policy "demo" (LinUCB, d=16, K=10) if it does not exist."""
    live_poll_seconds: float = 1.0
    """How often a replica polls the live-version pointers (fallback for missed announcements)."""

    @property
    def spool_path(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.data_dir / f"spool-{self.port}"

    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())
