"""Faults with real processes under load: a 10-second Redis outage, redis-server SIGKILLed,
the API SIGKILLed with and without a spool. Every decision and reward a client got a 2xx for
must be in the log afterwards, exactly once."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

import eventlog
from service.embedded_redis import EmbeddedRedis, free_port
from tests.processes import start_banditd, wait_ready, wait_until

pytestmark = pytest.mark.slow  # real banditd processes

POLICY = {
    "name": "sim",
    "algorithm": "linucb",
    "context_dim": 4,
    "num_actions": 3,
    "reward": {"wait_seconds": 120},
    "training": {"publish_every_seconds": 0.5},
}
CONTEXT = [0.5, -1.0, 2.0, 0.25]


class Load:
    """Clients in threads: /act with a chosen event id, then /reward for it; remembers what
    was acknowledged and every failure."""

    def __init__(self, url: str, prefix: str, workers: int = 4) -> None:
        self.url = url
        self.prefix = prefix
        self.workers = workers
        self.decided: list[str] = []
        self.rewarded: list[str] = []
        self.failures: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _work(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            i = 0
            while not self._stop.is_set():
                event_id = f"{self.prefix}-{worker}-{i}"
                i += 1
                try:
                    act = client.post("/act", json={"policy": "sim", "context": CONTEXT, "event_id": event_id})
                    if act.status_code != 200:
                        self.failures[f"act {act.status_code}"] += 1
                        continue
                    self.decided.append(event_id)
                    reward = client.post("/reward", json={"event_id": event_id, "reward": float(i % 3)})
                    if reward.status_code != 202:
                        self.failures[f"reward {reward.status_code}"] += 1
                        continue
                    self.rewarded.append(event_id)
                except httpx.HTTPError as error:  # the API process was killed
                    self.failures[type(error).__name__] += 1
                    time.sleep(0.05)  # a client's back-off before it retries, not a synchronisation

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._work, args=(w,), daemon=True) for w in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def wait_decided(self, more: int, timeout: float = 60.0) -> None:
        """Waits until ``more`` further decisions were acknowledged."""
        target = len(self.decided) + more
        wait_until(lambda: len(self.decided) >= target, timeout, f"{self.prefix}: {more} more decisions")


class Stack:
    """`banditd up` (API + trainer) against our own redis-server, restartable on the same port."""

    def __init__(self, tmp_path: Path) -> None:
        self.redis = EmbeddedRedis(tmp_path / "redis")
        self.redis.start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = open(tmp_path / "banditd.log", "ab")

    def start_api(self) -> None:
        self.process = start_banditd("up", self.port, self.data_dir, self.redis.url, self.log)
        wait_ready(self.url, self.process)

    def kill_api(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.redis.stop()
        self.log.close()

    def readiness(self) -> str:
        try:
            return str(httpx.get(f"{self.url}/readyz", timeout=5).json()["status"])
        except httpx.HTTPError:
            return "down"

    def wait_status(self, status: str, timeout: float = 60.0) -> None:
        wait_until(lambda: self.readiness() == status, timeout, f"readyz says {status!r}")

    def spool_bytes(self) -> float:
        """The API's serving_spool_bytes (what waits in its spool for Redis); -1 if it does not answer."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return -1
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("serving_spool_bytes "))

    def logged(self) -> tuple[Counter[str], Counter[str]]:
        """How often each event id is in the decision and the reward stream."""
        client = redis.Redis.from_url(self.redis.url)
        try:
            decisions = Counter(f[b"event_id"].decode() for _, f in client.xrange(eventlog.decisions_key("sim")))
            rewards = Counter(f[b"event_id"].decode() for _, f in client.xrange(eventlog.rewards_key("sim")))
        finally:
            client.close()
        return decisions, rewards


@contextmanager
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        running.start_api()
        assert httpx.post(f"{running.url}/policies", json=POLICY, timeout=60).status_code == 201  # exports a SavedModel
        yield running
    finally:
        running.close()


def assert_exactly_once(running: Stack, loads: list[Load]) -> None:
    # With the clients stopped, what is still in the spool (acknowledged, fsynced) reaches
    # Redis; under load readyz can say "ready" for a moment between two spooled batches, so
    # the spool itself must be empty.
    running.wait_status("ready")
    wait_until(lambda: running.spool_bytes() == 0, 60, "the spool drained")
    decisions, rewards = running.logged()
    for load in loads:
        assert load.decided, f"{load.prefix}: no decision was acknowledged"
        missing = [e for e in load.decided if decisions[e] != 1]
        assert not missing, f"{load.prefix}: {len(missing)} acknowledged decisions not logged once, e.g. {missing[:3]}"
        missing = [e for e in load.rewarded if rewards[e] != 1]
        assert not missing, f"{load.prefix}: {len(missing)} acknowledged rewards not logged once, e.g. {missing[:3]}"


def test_redis_outages_and_crashes_lose_no_acknowledged_event(tmp_path: Path) -> None:
    with stack(tmp_path) as running:
        # 1. Redis stopped for 10 s under load: /act and /reward keep answering (spooled).
        with Load(running.url, "outage") as outage:
            outage.wait_decided(20)
            running.redis.stop()
            running.wait_status("degraded", timeout=10)
            before = len(outage.decided)
            time.sleep(10)  # the outage's length: simulated time, not a synchronisation
            during = len(outage.decided) - before
            running.redis.start()
            running.wait_status("ready")
            outage.wait_decided(20)  # traffic goes on after Redis is back
        assert not outage.failures, outage.failures
        assert during > 50, f"only {during} decisions answered during the outage"
        assert_exactly_once(running, [outage])

        # The trainer came through the outage: it learns everything that was rewarded.
        wait_until(
            lambda: httpx.get(f"{running.url}/policies/sim").json()["applied_examples"] >= len(outage.rewarded),
            90,
            "the trainer caught up after the outage",
            interval=0.5,
        )

        # 2. redis-server SIGKILLed under load and restarted from its AOF (appendfsync everysec).
        with Load(running.url, "redis-kill") as redis_kill:
            redis_kill.wait_decided(20)
            running.redis.kill()
            running.wait_status("degraded", timeout=10)
            redis_kill.wait_decided(10)  # answered from the spool while Redis is dead
            running.redis.start()
            running.wait_status("ready")
            redis_kill.wait_decided(20)
        assert not redis_kill.failures, redis_kill.failures

        # 3. The API SIGKILLed under load, Redis up: what was answered is logged.
        with Load(running.url, "api-kill") as api_kill:
            api_kill.wait_decided(20)
            running.kill_api()
        running.start_api()

        # 4. The API SIGKILLed while its spool holds an outage's decisions: the next start drains it.
        running.redis.stop()
        with Load(running.url, "spool-kill") as spool_kill:
            running.wait_status("degraded", timeout=10)
            spool_kill.wait_decided(20)
            running.kill_api()
        assert spool_kill.decided
        running.redis.start()
        running.start_api()
        running.wait_status("ready")
        assert_exactly_once(running, [outage, redis_kill, api_kill, spool_kill])
        for load in (outage, redis_kill, api_kill, spool_kill):
            print(
                f"{load.prefix}: {len(load.decided)} decisions and {len(load.rewarded)} rewards acknowledged, "
                f"all logged once; failures {dict(load.failures)}"
            )
        print(f"outage: {during} decisions answered while Redis was stopped for 10 s")
