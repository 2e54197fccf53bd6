"""The `banditd` command as a user runs it: real processes, embedded Redis, restart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from service.embedded_redis import free_port
from service.version import __version__
from tests.processes import BANDITD, clean_env, stop, wait_ready


def test_version() -> None:
    out = subprocess.run([BANDITD, "version"], capture_output=True, text=True, check=True, env=clean_env())
    assert out.stdout.strip() == f"banditd {__version__}"


def test_serve_without_redis_url_explains_itself() -> None:
    out = subprocess.run([BANDITD, "serve"], check=False, capture_output=True, text=True, env=clean_env(), timeout=60)
    assert out.returncode == 2 and "REDIS_URL" in out.stderr


@pytest.mark.slow
def test_up_embeds_redis_serves_the_demo_and_survives_a_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [BANDITD, "up", "--port", str(port), "--data-dir", str(tmp_path)]
    first = subprocess.Popen(command, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, first)
        decided = httpx.post(f"{url}/act", json={"policy": "demo", "context": [0.1] * 16, "greedy": True}).json()
        assert decided["version"] == "1.0" and len(decided["scores"]) == 10
        assert httpx.post(f"{url}/reward", json={"event_id": decided["event_id"], "reward": 1.0}).status_code == 202
    finally:
        stop(first)
    assert (tmp_path / "redis" / "appendonly.aof").exists() or (tmp_path / "redis" / "appendonlydir").exists()
    assert (tmp_path / "models" / "demo" / "1" / "manifest.json").is_file()
    # Settings from the environment this time, not flags.
    second = subprocess.Popen([BANDITD, "up"], env=clean_env(BANDIT_PORT=str(port), BANDIT_DATA_DIR=str(tmp_path)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_ready(url, second)
        info = httpx.get(f"{url}/policies/demo").json()
        assert (info["decisions"], info["rewards"], info["versions"]) == (1, 1, [1])
        again = httpx.post(f"{url}/act", json={"policy": "demo", "context": [0.1] * 16, "greedy": True}).json()
        assert again["scores"] == decided["scores"]
    finally:
        stop(second)
