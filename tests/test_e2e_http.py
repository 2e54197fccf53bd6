"""End to end over HTTP: the service and its trainer as processes, 8 concurrent clients playing
the linear simulator for 10,000 rounds through /act and /reward."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.embedded_redis import free_port
from tests.processes import start_banditd, wait_ready, wait_until
from training.simulators import LinearSimulator

pytestmark = pytest.mark.slow  # real banditd processes

ROUNDS, WORKERS = 10_000, 8
POLICY = {
    "name": "sim",
    "algorithm": "linucb",
    "context_dim": 16,
    "num_actions": 10,
    "hyperparameters": {"alpha": 0.5},
    "training": {"publish_every_examples": 10, "publish_every_seconds": 0.1},
}


def play(url: str, sim: LinearSimulator, contexts: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Plays every round once, WORKERS at a time; returns the chosen actions and served versions."""
    actions = np.full(len(contexts), -1)
    versions = [""] * len(contexts)
    expected = sim.expected_rewards(contexts)
    next_round = iter(range(len(contexts)))
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                with lock:
                    i = next(next_round, None)
                if i is None:
                    return
                act = client.post("/act", json={"policy": "sim", "context": contexts[i].tolist()})
                if act.status_code != 200:
                    failures.append(act.text)
                    return
                body = act.json()
                actions[i], versions[i] = body["action"], body["version"]
                reward = float(expected[i, body["action"]] + noise[i])
                if client.post("/reward", json={"event_id": body["event_id"], "reward": reward}).status_code != 202:
                    failures.append("reward")
                    return

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    return actions, versions


def wait_for_trainer(url: str, timeout: float = 120.0) -> None:
    """Plays only once the trainer process holds the policy (a cold start imports TensorFlow)."""
    wait_until(lambda: httpx.get(f"{url}/policies/sim").json()["trainer"] is not None, timeout, "a trainer holds sim")


def test_linucb_over_http_has_at_most_a_tenth_of_uniform_regret(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = start_banditd("up", port, tmp_path, redis_url)
    try:
        wait_ready(url, service)
        assert httpx.post(f"{url}/policies", json=POLICY, timeout=60).status_code == 201
        wait_for_trainer(url)
        sim = LinearSimulator(seed=0)
        contexts = sim.contexts(ROUNDS)
        noise = sim.noise * sim.rng.normal(size=ROUNDS)
        actions, versions = play(url, sim, contexts, noise)
        info = httpx.get(f"{url}/policies/sim").json()
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
    regret = sim.regret(contexts, actions).sum()
    uniform = sim.uniform_regret(contexts).sum()
    early = sim.regret(contexts[:1000], actions[:1000]).sum()
    print(
        f"LinUCB over HTTP: regret {regret:.1f}, uniform {uniform:.1f}, ratio {regret / uniform:.4f}, "
        f"{len(set(versions))} versions served, regret of the first 1,000 rounds {early:.1f}"
    )
    assert (actions >= 0).all()
    assert regret <= 0.10 * uniform, (regret, uniform)
    assert len(set(versions)) > 20, "the served versions should move as the trainer publishes"
    assert info["applied_examples"] > 0.9 * ROUNDS
