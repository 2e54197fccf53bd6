"""Process settings, read from environment variables (documented in the README)."""

from __future__ import annotations

from training.settings import CommonSettings


class Settings(CommonSettings):
    """Settings of the API process. Every field is read from ``BANDIT_<NAME>``."""

    host: str = "127.0.0.1"
    """Interface the API listens on."""
    port: int = 8000
    """Port the API listens on."""
    api_keys: str = ""
    """Comma-separated keys accepted on /act and /reward as `Authorization: Bearer <key>`. Empty: open."""
    admin_key: str = ""
    """Key required on admin routes (POST /policies). Empty: admin routes are open."""
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

    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())
