"""Redis outages: /act keeps answering from the loaded models, writes wait in the local spool
(fsynced, in order) and reach Redis when it is back; a full spool refuses with 503."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from service.app import create_app
from service.embedded_redis import EmbeddedRedis
from service.settings import Settings
from tests.service.conftest import LINUCB

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

CONTEXT = [0.5, -1.0, 2.0, 0.25]


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of the test's own (it is stopped and started again), stopped at the end."""
    own = EmbeddedRedis(tmp_path / "own-redis")
    own.start()
    yield own
    own.stop()


def logged_event_ids(server: EmbeddedRedis) -> list[str]:
    """The event ids in the decision log of "shop", in log order."""
    client = redis.Redis.from_url(server.url)
    try:
        return [f[b"event_id"].decode() for _, f in client.xrange(eventlog.decisions_key("shop"))]
    finally:
        client.close()


def test_outage_spools_in_order_and_drains_when_redis_returns(
    server: EmbeddedRedis, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(redis_url=server.url)
    with TestClient(create_app(settings)) as client:
        assert client.post("/policies", json=LINUCB).status_code == 201
        before = [client.post("/act", json={"policy": "shop", "context": CONTEXT}).json() for _ in range(3)]
        client.post("/reward", json={"event_id": before[0]["event_id"], "reward": 1.0})
        server.stop()

        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        during = []
        for i in range(20):
            answer = client.post("/act", json={"policy": "shop", "context": CONTEXT, "event_id": f"out-{i}"})
            assert answer.status_code == 200, answer.text
            during.append(answer.json())
        rewarded = client.post("/reward", json={"event_id": "out-3", "reward": 2.5})
        assert rewarded.status_code == 202 and rewarded.json()["spooled"] is True
        late_for_before = client.post("/reward", json={"event_id": before[1]["event_id"], "reward": -1.0})
        assert late_for_before.status_code == 202
        assert (tmp_path / "spool-8000" / "spool.log").stat().st_size > 0
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
        assert 'serving_spooled_total{kind="decisions"} 20.0' in metrics

        server.start()  # same port, same data folder (AOF)
        wait_until(lambda: client.get("/readyz").json()["status"] == "ready")
        raw = redis.Redis.from_url(server.url)
        decisions = [eventlog.DecisionRecord.from_fields(f) for _, f in raw.xrange(eventlog.decisions_key("shop"))]
        assert [d.event_id for d in decisions] == [b["event_id"] for b in before + during]  # all, in order
        assert [d.action for d in decisions[3:]] == [b["action"] for b in during]
        rewards = [eventlog.RewardRecord.from_fields(f) for _, f in raw.xrange(eventlog.rewards_key("shop"))]
        assert [(r.event_id, r.reward) for r in rewards] == [
            (before[0]["event_id"], 1.0),
            ("out-3", 2.5),
            (before[1]["event_id"], -1.0),
        ]
        assert all(not r.late for r in rewards)
        assert (tmp_path / "spool-8000" / "spool.log").stat().st_size == 0
        # An idempotent retry of a spooled decision finds it in Redis now.
        again = client.post("/act", json={"policy": "shop", "context": CONTEXT, "event_id": "out-5"}).json()
        assert again == during[5]
        raw.close()


def test_a_full_spool_refuses_with_503_and_keeps_what_it_holds(
    server: EmbeddedRedis, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(redis_url=server.url, spool_max_bytes=8_000)
    with TestClient(create_app(settings)) as client:
        client.post("/policies", json=LINUCB)
        server.stop()
        answered, refused = [], None
        for i in range(200):
            response = client.post("/act", json={"policy": "shop", "context": CONTEXT, "event_id": f"e{i}"})
            if response.status_code != 200:
                refused = response
                break
            answered.append(response.json()["event_id"])
        assert refused is not None and answered, "the spool never filled"
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["retryable"] is True and "spool is full" in refused.json()["message"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        server.start()
        wait_until(lambda: client.get("/readyz").json()["status"] == "ready")
        raw = redis.Redis.from_url(server.url)
        logged = [f[b"event_id"].decode() for _, f in raw.xrange(eventlog.decisions_key("shop"))]
        assert logged == answered  # every answered decision, and not the refused one
        raw.close()


def test_a_spool_left_by_a_killed_process_drains_at_the_next_start(
    server: EmbeddedRedis, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(redis_url=server.url)
    client = TestClient(create_app(settings))
    client.__enter__()
    client.post("/policies", json=LINUCB)
    server.stop()
    spooled = [
        client.post("/act", json={"policy": "shop", "context": CONTEXT, "event_id": f"k{i}"}).json() for i in range(5)
    ]
    # What a SIGKILL leaves: the spool file, plus half an entry whose write was cut short.
    spool_log = tmp_path / "spool-8000" / "spool.log"
    with open(spool_log, "ab") as torn:
        torn.write(b'\x00\x00\x01\x00{"kind": "decis')
    app_state = client.app.state  # type: ignore[attr-defined]
    app_state.spool._task.cancel()  # this process's drain must not run: the next one does
    server.start()
    with TestClient(create_app(settings)) as second:
        wait_until(lambda: second.get("/readyz").json()["status"] == "ready")
        assert logged_event_ids(server) == [s["event_id"] for s in spooled]
