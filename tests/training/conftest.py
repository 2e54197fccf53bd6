"""Fixtures for the learning loop: an in-process app and trainer objects on the real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventlog.sync import LogClient
from service.app import create_app
from service.settings import Settings
from training.metrics import TrainerMetrics
from training.settings import TrainerSettings
from training.trainer import PolicyTrainer, Trainer


@pytest.fixture()
def app_client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, demo_policy=False, live_poll_seconds=0.05)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture()
def log_client(redis_url: str) -> Iterator[LogClient]:
    client = LogClient(redis_url)
    yield client
    client.close()


@pytest.fixture()
def policy_trainer(log_client: LogClient, tmp_path: Path) -> Callable[..., PolicyTrainer]:
    def make(name: str, holder: str | None = "test-trainer", grace_seconds: float = 0.1) -> PolicyTrainer:
        if holder is not None:
            assert log_client.hold_lease(name, holder, 60_000)
        return PolicyTrainer(log_client, tmp_path / "models", name, TrainerMetrics(), grace_seconds, 1000, holder)

    return make


@pytest.fixture()
def trainer_settings(redis_url: str, tmp_path: Path) -> Callable[..., TrainerSettings]:
    def make(**overrides: Any) -> TrainerSettings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "data_dir": tmp_path,
            "trainer_metrics_port": 0,
            "join_grace_seconds": 0.1,
        }
        return TrainerSettings(**(values | overrides))

    return make


@pytest.fixture()
def trainers() -> Iterator[list[Trainer]]:
    made: list[Trainer] = []
    yield made
    for trainer in made:
        trainer.log.close()
