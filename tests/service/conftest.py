"""An in-process app on the session's real Redis and a temporary model store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cache import Clock
from service.settings import Settings

ClientFactory = Callable[..., TestClient]

LINUCB = {"name": "shop", "algorithm": "linucb", "context_dim": 4, "num_actions": 3}


@pytest.fixture()
def settings_factory(redis_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"redis_url": redis_url, "data_dir": tmp_path, "demo_policy": False}
        return Settings(**(values | overrides))

    return make


@pytest.fixture()
def client_factory(settings_factory: Callable[..., Settings]) -> Iterator[ClientFactory]:
    """make(clock=..., **settings) -> a client of a new app (a replica) on the same Redis."""
    with ExitStack() as stack:

        def make(clock: Clock = time.monotonic, **overrides: Any) -> TestClient:
            return stack.enter_context(TestClient(create_app(settings_factory(**overrides), clock=clock)))

        yield make


class SkipClock:
    """time.monotonic plus the seconds a test skipped: what a replica caches for a second
    expires at once after ``skip(1.05)``, without waiting for it."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped

    def skip(self, seconds: float) -> None:
        self.skipped += seconds


@pytest.fixture()
def clock() -> SkipClock:
    return SkipClock()


@pytest.fixture()
def client(client_factory: ClientFactory) -> TestClient:
    return client_factory()


@pytest.fixture()
def shop(client: TestClient) -> TestClient:
    """A client whose app serves the LinUCB policy "shop" (d=4, K=3)."""
    response = client.post("/policies", json=LINUCB)
    assert response.status_code == 201, response.text
    return client
