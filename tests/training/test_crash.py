"""SIGKILL the trainer process at random points while events stream in: nothing is lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from eventlog.sync import LogClient
from tests.bandits.test_linear import closed_form
from training import checkpoints
from training.metrics import TrainerMetrics
from training.trainer import NEVER, PolicyTrainer

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

POLICY = {
    "name": "shop",
    "algorithm": "linucb",
    "context_dim": 4,
    "num_actions": 3,
    "reward": {"wait_seconds": 1.0, "aggregation": "sum", "default": -0.5},
    "training": {"publish_every_examples": 25, "publish_every_seconds": 0.2},
}
NEURAL = POLICY | {
    "algorithm": "neural_linear",
    "hyperparameters": {"hidden_sizes": [16], "buffer_size": 50_000, "train_every_examples": 64, "training_steps": 5},
}
DQN = POLICY | {
    "algorithm": "dqn",
    "hyperparameters": {"hidden_sizes": [16], "buffer_size": 50_000, "learning_starts": 64, "training_steps": 1},
    "training": POLICY["training"] | {"session_timeout_seconds": 0.5},
}


def start_trainer(redis_url: str, data_dir: Path) -> subprocess.Popen:
    env = os.environ | {
        "REDIS_URL": redis_url,
        "BANDIT_DATA_DIR": str(data_dir),
        "BANDIT_TRAINER_METRICS_PORT": "0",
        "BANDIT_TRAINER_LEASE_SECONDS": "1",
        "BANDIT_JOIN_GRACE_SECONDS": "0.2",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    with open(data_dir / "trainer.log", "ab") as log:  # the child has its own descriptor
        return subprocess.Popen([sys.executable, "-m", "service.cli", "train"], env=env, stdout=log, stderr=log)


def stream_events(client: TestClient, stop: threading.Event, sent: list[int], sessions: bool = False) -> None:
    """Decisions with 0, 1 or 2 rewards each, until told to stop. With sessions: episodes of 1
    to 6 steps, most ending with a terminal reward, the others just stopping (timed out)."""
    rng = np.random.default_rng(7)
    episode, left = 0, 0
    while not stop.is_set():
        if left == 0:
            episode, left = episode + 1, int(rng.integers(1, 7))
        left -= 1
        x = rng.normal(size=4).round(3).tolist()
        act = {"policy": "shop", "context": x} | ({"session_id": f"ep{episode}"} if sessions else {})
        body = client.post("/act", json=act).json()
        terminal = sessions and left == 0 and rng.random() < 0.7
        for _ in range(rng.integers(0, 3)):
            r = round(float(x[body["action"]] + rng.normal()), 3)
            reward = {"event_id": body["event_id"], "reward": r, "terminal": bool(terminal)}
            assert client.post("/reward", json=reward).status_code == 202
        sent[0] += 1
        time.sleep(0.002)


def buffer_rows(policy: object) -> np.ndarray:
    """The replay buffer's examples (or transitions) as sorted rows of all their columns."""
    columns = [t.numpy().reshape(len(t.numpy()), -1) for t in policy.replay.contents()]  # type: ignore[attr-defined]
    rows = np.hstack(columns).astype(np.float64)
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("policy", [POLICY, NEURAL, DQN], ids=["linucb", "neural_linear", "dqn"])
def test_sigkill_at_random_points_applies_every_event_exactly_once(
    policy: dict, app_client: TestClient, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    assert app_client.post("/policies", json=policy).status_code == 201
    chooser = random.Random(2024)
    stop, sent = threading.Event(), [0]
    streamer = threading.Thread(target=stream_events, args=(app_client, stop, sent, policy is DQN))
    streamer.start()
    kills = 0
    try:
        trainer = start_trainer(redis_url, tmp_path)
        while kills < 6:
            # Let it take the lease and publish at least once, then kill it at a random moment.
            live_before = redis_client.hget(eventlog.LIVE, "shop")
            deadline = time.monotonic() + 120  # a cold start imports TensorFlow; the machine may be busy
            while redis_client.hget(eventlog.LIVE, "shop") == live_before:
                assert time.monotonic() < deadline, (tmp_path / "trainer.log").read_text()[-3000:]
                time.sleep(0.01)
            time.sleep(chooser.uniform(0.0, 0.6))
            trainer.send_signal(signal.SIGKILL)
            trainer.wait()
            kills += 1
            trainer = start_trainer(redis_url, tmp_path)
        stop.set()
        streamer.join()
        decisions = redis_client.xlen(eventlog.decisions_key("shop"))
        assert decisions == sent[0] > 200
        # Let the last trainer close every window (1 s + 0.2 s grace) and publish.
        deadline = time.monotonic() + 90
        while True:
            live = redis_client.hget(eventlog.LIVE, "shop").decode()
            state = checkpoints.read_state(tmp_path / "models", "shop", *eventlog.parse_version(live))
            if state.applied == decisions:
                break
            assert time.monotonic() < deadline, (live, state.applied, decisions)
            time.sleep(0.1)
    finally:
        stop.set()
        streamer.join()
        trainer.send_signal(signal.SIGTERM)
        trainer.wait(timeout=30)
    live = redis_client.hget(eventlog.LIVE, "shop").decode()

    # The live checkpoint, written by a trainer killed 6 times ...
    log = LogClient(redis_url)
    try:
        resumed = PolicyTrainer(log, tmp_path / "models", "shop", TrainerMetrics(), 0.2, 1000, holder=None)
        assert resumed.live == live and not resumed.join.pending
        # ... equals an uninterrupted replay of the same log from version 1.0.
        replay = PolicyTrainer(log, tmp_path / "models", "shop", TrainerMetrics(), 0.2, 1000, None, start_from="1.0")
        replay.drain()
    finally:
        log.close()
    assert replay.state.applied == resumed.state.applied == decisions
    assert resumed.join.outcomes == replay.join.outcomes
    if policy is NEURAL:
        # Every decision is in the replay buffer exactly once, as in the replay. (The networks
        # differ: minibatch order depends on how the log was cut into steps.)
        assert int(resumed.policy.replay.examples_seen.numpy()) == decisions  # type: ignore[attr-defined]
        np.testing.assert_allclose(buffer_rows(resumed.policy), buffer_rows(replay.policy), rtol=1e-6)
        return
    if policy is DQN:
        # Every transition once: the same (s, a, r, s', done, w) rows as the uninterrupted replay.
        assert resumed.sessions is not None and replay.sessions is not None
        resumed.sessions.close_quiet(NEVER)  # the replay closed every session at the end of the log
        assert len(resumed.sessions.take()) == 0  # closing drops last steps, it adds no transition
        seen = int(resumed.policy.replay.transitions_seen.numpy())  # type: ignore[attr-defined]
        assert seen == int(replay.policy.replay.transitions_seen.numpy()) > decisions / 2  # type: ignore[attr-defined]
        np.testing.assert_allclose(buffer_rows(resumed.policy), buffer_rows(replay.policy), rtol=1e-6)
        assert resumed.sessions.episodes == replay.sessions.episodes > 0
        return
    for name in ("gram", "reward_sums", "counts", "theta", "gram_inverse"):
        np.testing.assert_allclose(
            getattr(resumed.policy.state, name).numpy(),
            getattr(replay.policy.state, name).numpy(),
            rtol=1e-4,
            atol=1e-4,
        )
    assert resumed.policy.state.counts.numpy().sum() == decisions  # every decision exactly once
    assert resumed.join.outcomes == replay.join.outcomes
    assert kills == 6 and checkpoints.exists(tmp_path / "models", "shop", *eventlog.parse_version(live))


def test_replay_matches_the_closed_form_of_the_joined_log(
    app_client: TestClient, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    app_client.post("/policies", json=POLICY | {"reward": {"aggregation": "sum", "wait_seconds": 600, "default": -0.5}})
    rng = np.random.default_rng(3)
    expected: dict[str, tuple[list[float], int, float]] = {}
    for i in range(40):
        x = rng.normal(size=4).round(3).tolist()
        body = app_client.post("/act", json={"policy": "shop", "context": x}).json()
        rewards = [round(float(v), 3) for v in rng.normal(size=i % 3)]
        for r in rewards:
            app_client.post("/reward", json={"event_id": body["event_id"], "reward": r})
        expected[body["event_id"]] = (x, body["action"], sum(rewards) if rewards else -0.5)
    log = LogClient(redis_url)
    try:
        replay = PolicyTrainer(log, tmp_path / "models", "shop", TrainerMetrics(), 0.2, 7, None, start_from="1.0")
        replay.drain()  # read in batches of 7: many partial reads
    finally:
        log.close()
    contexts = np.array([v[0] for v in expected.values()], np.float32)
    actions = np.array([v[1] for v in expected.values()])
    rewards = np.array([v[2] for v in expected.values()], np.float32)
    for k in range(3):
        theta, _ = closed_form(contexts, actions, rewards, 1.0, k)
        np.testing.assert_allclose(replay.policy.state.theta.numpy()[k], theta, rtol=1e-4, atol=1e-5)
