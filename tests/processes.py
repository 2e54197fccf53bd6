"""Starting `banditd` as a user would, for the tests that need real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

BANDITD = str(Path(sys.executable).with_name("banditd"))


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any banditd setting (nor REDIS_URL), TensorFlow quiet, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDIT_") and k != "REDIS_URL"}
    return env | {"TF_CPP_MIN_LOG_LEVEL": "3"} | extra


def start_banditd(
    subcommand: str,
    port: int,
    data_dir: Path,
    redis_url: str,
    log: IO[bytes] | int = subprocess.DEVNULL,
    **settings: str,
) -> subprocess.Popen[bytes]:
    """`banditd <subcommand>` on ``port`` against ``redis_url``: no demo policy, no trainer
    metrics port, live pointers polled every 0.2 s, plus ``settings`` (BANDIT_* variables)."""
    env = clean_env(
        REDIS_URL=redis_url, BANDIT_DEMO_POLICY="false", BANDIT_TRAINER_METRICS_PORT="0", BANDIT_LIVE_POLL_SECONDS="0.2"
    )
    command = [BANDITD, subcommand, "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(command, env=env | settings, stdout=log, stderr=log)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Polls ``condition`` every ``interval`` seconds until it holds; AssertionError naming
    ``what`` after ``timeout`` seconds. Tests wait on what they can observe, never a fixed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(interval)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    def ready() -> bool:
        assert process.poll() is None, f"banditd exited with {process.returncode}"
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout, "banditd ready", interval=0.2)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
