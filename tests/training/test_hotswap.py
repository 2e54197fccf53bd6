"""Hot swap under concurrent /act load: every response 2xx, its scores are exactly its version's."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from eventlog import parse_version
from eventlog.sync import LogClient
from exporter.spec import PolicySpec
from service.app import create_app
from service.settings import Settings
from training import checkpoints
from training.metrics import TrainerMetrics
from training.trainer import PolicyTrainer

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

POLICY = {"name": "shop", "algorithm": "linucb", "context_dim": 4, "num_actions": 3}
PUBLISHES = 60


def train_and_publish(redis_url: str, store: Path, stop: threading.Event, published: list[str]) -> None:
    log = LogClient(redis_url)
    try:
        assert log.hold_lease("shop", "swap-test", 60_000)
        trainer = PolicyTrainer(log, store, "shop", TrainerMetrics(), 0.1, 1000, holder="swap-test")
        while not stop.is_set() and len(published) < PUBLISHES:
            if trainer.step():
                version = trainer.publish()
                assert version is not None
                published.append(version)
            stop.wait(0.02)
    finally:
        log.close()


def test_hot_swaps_under_load_never_mix_variables(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, demo_policy=False, live_poll_seconds=0.05)
    app = create_app(settings)
    responses: list[tuple[int, list[float], dict]] = []
    published: list[str] = []

    async def worker(client: httpx.AsyncClient, seed: int, stop: threading.Event) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            x = rng.normal(size=4).round(3).tolist()
            act = await client.post("/act", json={"policy": "shop", "context": x})
            responses.append((act.status_code, x, act.json()))
            if act.status_code == 200:
                reward = float(x[act.json()["action"]])
                got = await client.post("/reward", json={"event_id": act.json()["event_id"], "reward": reward})
                assert got.status_code == 202

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await client.post("/policies", json=POLICY)).status_code == 201
                stop = threading.Event()
                trainer = threading.Thread(target=train_and_publish, args=(redis_url, settings.store, stop, published))
                trainer.start()
                workers = [asyncio.create_task(worker(client, seed, stop)) for seed in range(8)]
                while trainer.is_alive():
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # the last publish reaches the replica
                stop.set()
                await asyncio.gather(*workers)

    asyncio.run(main())
    assert len(published) == PUBLISHES
    assert all(status == 200 for status, _, _ in responses), {s for s, _, _ in responses}
    order = [parse_version(body["version"]) for _, _, body in responses]
    assert order == sorted(order), "a response carried an older version than one answered before it"
    served_versions = {body["version"] for _, _, body in responses}
    assert len(served_versions) >= 10, f"only {len(served_versions)} versions were served"

    # Recompute every response's scores from the checkpoint its version names.
    spec = PolicySpec.from_dict({**POLICY, "hyperparameters": {"alpha": 1.0, "ridge": 1.0, "epsilon": 0.05}})
    by_version: dict[str, list[tuple[list[float], list[float]]]] = {}
    for _, x, body in responses:
        by_version.setdefault(body["version"], []).append((x, body["scores"]))
    for version, rows in by_version.items():
        policy = spec.build_policy()
        checkpoints.restore_variables(policy, settings.store, "shop", *parse_version(version))
        contexts = np.array([x for x, _ in rows], np.float32)
        expected = policy.collect(contexts, np.ones((len(rows), 3), bool), np.zeros(len(rows), np.int64)).scores
        np.testing.assert_allclose(
            np.array([s for _, s in rows]), expected.numpy(), rtol=1e-5, atol=1e-6, err_msg=version
        )
