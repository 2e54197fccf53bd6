"""Micro-batching: concurrent /act calls share SavedModel calls, each caller gets its own row."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import numpy as np

from exporter import loader
from service.app import create_app
from service.batcher import MicroBatcher
from service.decisions import seed_for
from service.settings import Settings


def test_batcher_coalesces_and_keeps_order() -> None:
    calls: list[list[int]] = []

    async def process(items: list[int]) -> asyncio.Future[list[int]]:
        calls.append(items)
        await asyncio.sleep(0.01)  # a slow model: the queue fills meanwhile
        finished: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        finished.set_result([item * 10 for item in items])
        return finished

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_size=8, max_wait_seconds=0.001)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(30)))
        await batcher.close()
        return list(results)

    assert asyncio.run(main()) == [i * 10 for i in range(30)]
    assert len(calls) < 30 and max(len(c) for c in calls) <= 8
    assert sorted(i for c in calls for i in c) == list(range(30))


def test_batcher_passes_errors_to_every_caller_of_the_batch() -> None:
    async def process(items: list[int]) -> asyncio.Future[list[int]]:
        raise RuntimeError("model failed")

    async def main() -> list[object]:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_size=4, max_wait_seconds=0.001)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
        await batcher.close()
        return list(results)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_concurrent_act_requests_share_model_calls(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(batch_max_size=64, batch_max_wait_ms=5)
    app = create_app(settings)
    n = 48
    rng = np.random.default_rng(0)
    contexts = rng.normal(size=(n, 4)).round(3).tolist()

    async def main() -> list[dict]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                created = await client.post(
                    "/policies", json={"name": "shop", "algorithm": "lints", "context_dim": 4, "num_actions": 3}
                )
                assert created.status_code == 201
                responses = await asyncio.gather(
                    *(
                        client.post("/act", json={"policy": "shop", "context": c, "event_id": f"e{i}"})
                        for i, c in enumerate(contexts)
                    )
                )
                assert all(r.status_code == 200 for r in responses)
                metrics = (await client.get("/metrics")).text
        calls = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("serving_model_calls_total{")
        )
        assert 1 <= calls < n, calls
        return [r.json() for r in responses]

    bodies = asyncio.run(main())
    # Each caller got the decision for its own context and seed (recomputed row by row).
    model = loader.load(settings.store, "shop", 1)
    for i, body in enumerate(bodies):
        assert body["event_id"] == f"e{i}"
        own = model.decide(
            False, np.array([contexts[i]], np.float32), np.ones((1, 3), bool), np.array([seed_for(f"e{i}")])
        )
        assert body["action"] == int(own["action"][0])
        np.testing.assert_allclose(body["scores"], own["scores"][0], rtol=1e-6)
        assert np.float32(body["propensity"]) == own["propensity"][0]
