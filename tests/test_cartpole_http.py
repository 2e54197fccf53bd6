"""CartPole-v1 played entirely over HTTP (/act with session_id, /reward with terminal) against
`banditd up` with a dqn policy: its greedy policy must reach a mean return of 150 over 20
evaluation episodes within 30,000 environment steps. bench/cartpole_http.py is the full run
(475, up to 100,000 steps, 3 seeds)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from bench import cartpole_http
from service.embedded_redis import free_port
from tests.processes import start_banditd, wait_ready

pytestmark = pytest.mark.slow  # real banditd processes


def test_dqn_learns_cartpole_over_http(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "banditd.log", "wb")
    service = start_banditd("up", port, tmp_path, redis_url, log)
    try:
        wait_ready(url, service)
        created = httpx.post(f"{url}/policies", json=cartpole_http.dqn_policy(seed=0), timeout=120)
        assert created.status_code == 201, created.text
        missing = httpx.post(f"{url}/act", json={"policy": "cartpole", "context": [0.0] * 4})
        assert missing.status_code == 422 and missing.json()["field"] == "session_id"
        result = cartpole_http.train(url, tmp_path / "models", seed=0, max_steps=30_000, eval_every=2_500, stop_at=150)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
        log.close()
    print(result["curve"], result["model"])
    assert not result["errors"], result["errors"]
    assert result["reached"]["steps"] is not None, f"greedy mean return never reached 150: {result['curve']}"
    assert result["reached"]["steps"] <= 30_000
    model = result["model"]
    assert model["episodes"] > 20 and model["training_steps"] > 0 and model["mean_return_100"] > 0
