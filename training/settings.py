"""Settings shared by every banditd process, and the trainer's own (environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Where the data lives. Every field is read from ``BANDIT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="BANDIT_", frozen=True, populate_by_name=True)

    data_dir: Path = Path("data")
    """Folder for the model store and, when embedded, Redis's data and AOF files."""
    model_store: Path | None = None
    """Where exported SavedModels and checkpoints live; defaults to <data_dir>/models."""
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "BANDIT_REDIS_URL"))
    """Redis to log to (REDIS_URL). Unset: `banditd up` starts an embedded redis-server."""
    log_level: str = "INFO"
    """Python logging level."""

    @property
    def store(self) -> Path:
        return self.model_store if self.model_store is not None else self.data_dir / "models"


class TrainerSettings(CommonSettings):
    """Settings of the trainer process."""

    trainer_metrics_port: int = 9101
    """Port of the trainer's Prometheus /metrics endpoint (0: none)."""
    trainer_poll_seconds: float = 0.05
    """Pause between trainer steps when the log has nothing new."""
    trainer_read_batch: int = 5000
    """Most stream entries read per Redis call."""
    trainer_lease_seconds: float = 10.0
    """A trainer that stops renewing its lease on a policy loses it after this long."""
    join_grace_seconds: float = 2.0
    """Extra wait after a reward window before a decision without reward gets the default."""
    keep_checkpoints: int = 200
    """Checkpoints kept per export (the newest; older ones are deleted; 0 keeps all). Rollback
    can reach only what is kept."""
    stream_retention_seconds: float = 0.0
    """After each publish the trainer drops decision and reward log entries older than this
    that its checkpoint covers (0: keep the log forever). Offline export, retrain and
    experiment reports see only what is kept."""
    trainer_policies: str = ""
    """Comma-separated policies this trainer may train (shard); empty: all."""
