"""The learning loop in one process: join, exact update, publish, hot swap, rollback, lease."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

import eventlog
from eventlog.sync import LogClient
from exporter import savedmodel
from exporter.spec import PolicySpec
from service.app import create_app
from service.settings import Settings
from tests.bandits.test_linear import closed_form
from training import checkpoints
from training.metrics import TrainerMetrics
from training.settings import TrainerSettings
from training.trainer import PolicyTrainer, Trainer

POLICY = {"name": "shop", "algorithm": "linucb", "context_dim": 4, "num_actions": 3}


def play(
    client: TestClient, rounds: int, seed: int = 0, reward: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Acts and rewards `rounds` times; returns the contexts, actions and rewards sent."""
    rng = np.random.default_rng(seed)
    weights = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    contexts, actions, rewards = [], [], []
    for _ in range(rounds):
        x = rng.normal(size=4).round(4)
        body = client.post("/act", json={"policy": "shop", "context": x.tolist()}).json()
        r = float(np.round(weights[body["action"]] @ x + rng.normal(scale=0.1), 4))
        if reward:
            assert client.post("/reward", json={"event_id": body["event_id"], "reward": r}).status_code == 202
        contexts.append(x)
        actions.append(body["action"])
        rewards.append(r)
    return np.array(contexts, np.float32), np.array(actions), np.array(rewards, np.float32)


def wait_for_version(client: TestClient, version: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.post("/act", json={"policy": "shop", "context": [1.0, 2.0, 3.0, 4.0], "greedy": True}).json()
        if body["version"] == version:
            return body
        time.sleep(0.02)
    raise AssertionError(f"the app never served {version}")


@pytest.mark.slow
def test_trainer_applies_the_joined_log_exactly_and_replicas_serve_it(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    assert app_client.post("/policies", json=POLICY | {"training": {"publish_every_examples": 50}}).status_code == 201
    contexts, actions, rewards = play(app_client, 60)
    trainer = policy_trainer("shop")
    assert trainer.step() == 60 and trainer.due()
    for k in range(3):
        theta, _ = closed_form(contexts, actions, rewards, 1.0, k)
        np.testing.assert_allclose(trainer.policy.state.theta.numpy()[k], theta, rtol=1e-4, atol=1e-5)
    version = trainer.publish()
    assert version == "1.1" and not trainer.due()
    served = wait_for_version(app_client, "1.1")
    local = trainer.policy.greedy(
        np.array([[1.0, 2.0, 3.0, 4.0]], np.float32), np.ones((1, 3), bool), np.zeros(1, np.int64)
    )
    np.testing.assert_allclose(served["scores"], local.scores.numpy()[0], rtol=1e-6)
    info = app_client.get("/policies/shop").json()
    assert info["live_version"] == "1.1"
    assert (info["applied_examples"], info["pending_joins"], info["trainer"]) == (60, 0, "test-trainer")
    assert info["trainer_lag"] == info["decisions"] - 60 >= 1  # the greedy probes are not applied yet
    assert info["mean_reward"] == pytest.approx(float(rewards.astype(np.float64).mean()), rel=1e-6)
    assert info["last_publish_time"] == pytest.approx(time.time(), abs=30)
    metrics = app_client.get("/metrics").text
    assert 'serving_live_checkpoint{policy="shop"} 1.0' in metrics


def test_decisions_without_reward_learn_the_default(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    app_client.post("/policies", json=POLICY | {"reward": {"wait_seconds": 0.3, "default": -2.0}})
    play(app_client, 5, reward=False)
    trainer = policy_trainer("shop", grace_seconds=0.1)
    assert trainer.step() == 0 and len(trainer.join.pending) == 5
    time.sleep(0.5)
    assert trainer.step() == 5
    assert trainer.join.outcomes["defaulted"] == 5
    assert trainer.policy.state.counts.numpy().sum() == 5
    np.testing.assert_allclose(trainer.state.reward_sum, -10.0)


def test_a_checkpoint_restores_variables_position_and_pending_joins(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer], log_client: LogClient
) -> None:
    app_client.post("/policies", json=POLICY | {"reward": {"aggregation": "sum"}})
    play(app_client, 20)
    first = policy_trainer("shop")
    first.step()
    assert len(first.join.pending) == 20  # sum: nothing is final before the window closes
    first.publish()
    second = policy_trainer("shop")
    assert second.live == first.live == "1.1"
    assert second.state.decisions_position == first.state.decisions_position
    assert second.state.rewards_position == first.state.rewards_position
    assert list(second.join.pending) == list(first.join.pending)
    assert [p.reward_sum for p in second.join.pending.values()] == [p.reward_sum for p in first.join.pending.values()]
    for name in ("gram", "reward_sums", "counts", "theta"):
        np.testing.assert_array_equal(
            getattr(first.policy.state, name).numpy(), getattr(second.policy.state, name).numpy()
        )


@pytest.mark.slow
def test_rollback_serves_old_variables_and_the_trainer_goes_on_from_them(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    app_client.post("/policies", json=POLICY)
    play(app_client, 30, seed=1)
    trainer = policy_trainer("shop")
    trainer.step()
    assert trainer.publish() == "1.1"
    at_1 = wait_for_version(app_client, "1.1")["scores"]
    play(app_client, 30, seed=2)
    trainer.step()
    assert trainer.publish() == "1.2"
    assert wait_for_version(app_client, "1.2")["scores"] != at_1
    applied = trainer.state.applied

    rolled = app_client.post("/policies/shop/rollback", json={"to": "1.1"})
    assert rolled.status_code == 200 and rolled.json()["live_version"] == "1.3"
    assert wait_for_version(app_client, "1.3")["scores"] == at_1
    trainer.follow_live()
    assert trainer.live == "1.3" and trainer.state.applied == applied  # nothing re-learned
    before = trainer.policy.state.counts.numpy().copy()
    play(app_client, 10, seed=3)
    assert trainer.step() == 10  # the greedy probes of wait_for_version wait for their window
    assert trainer.publish() == "1.4"
    assert trainer.policy.state.counts.numpy().sum() == before.sum() + 10

    assert app_client.post("/policies/shop/rollback", json={"to": "1.0"}).json()["live_version"] == "1.5"
    missing = app_client.post("/policies/shop/rollback", json={"to": "7.1"})
    assert missing.status_code == 404 and missing.json()["field"] == "to"
    assert app_client.post("/policies/shop/rollback", json={"to": "one"}).status_code == 422


def test_only_one_trainer_holds_a_policy_and_the_other_takes_over(
    app_client: TestClient, trainer_settings: Callable[..., TrainerSettings], trainers: list[Trainer]
) -> None:
    app_client.post("/policies", json=POLICY | {"training": {"publish_every_examples": 1}})
    first = Trainer(trainer_settings(trainer_lease_seconds=0.5))
    second = Trainer(trainer_settings(trainer_lease_seconds=0.5))
    trainers.extend([first, second])
    play(app_client, 10)
    assert first.run_once() == 10 and "shop" in first.trainers
    assert second.run_once() == 0 and "shop" not in second.trainers
    play(app_client, 5)
    time.sleep(0.7)  # the first trainer stops renewing (as if it died)
    assert second.run_once() == 5 and "shop" in second.trainers
    assert second.trainers["shop"].state.applied == 15
    first.run_once()  # it notices the lease is gone and drops the policy without publishing
    assert "shop" not in first.trainers
    metrics = generate_latest(second.metrics.registry).decode()
    assert 'trainer_examples_applied_total{policy="shop"} 5.0' in metrics  # this process applied 5
    assert 'trainer_join_outcomes_total{outcome="rewarded",policy="shop"}' in metrics
    assert 'trainer_published_checkpoint{policy="shop"}' in metrics and "trainer_publish_seconds_count" in metrics
    assert 'trainer_lag_events{policy="shop"} 0.0' in metrics


def test_old_checkpoints_are_pruned(app_client: TestClient, log_client: LogClient, tmp_path: Path) -> None:
    app_client.post("/policies", json=POLICY)
    assert log_client.hold_lease("shop", "pruner", 60_000)
    trainer = PolicyTrainer(
        log_client, tmp_path / "models", "shop", TrainerMetrics(), 0.1, 1000, holder="pruner", keep_checkpoints=2
    )
    for seed in range(4):
        play(app_client, 3, seed=seed)
        trainer.step()
        trainer.publish()
    assert checkpoints.list_checkpoints(tmp_path / "models", "shop", 1) == [3, 4]
    assert trainer.live == "1.4"


def test_a_restarted_replica_serves_the_live_checkpoint(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer], redis_url: str, tmp_path: Path
) -> None:
    app_client.post("/policies", json=POLICY)
    play(app_client, 20)
    trainer = policy_trainer("shop")
    trainer.step()
    assert trainer.publish() == "1.1"
    expected = wait_for_version(app_client, "1.1")["scores"]
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, demo_policy=False)
    with TestClient(create_app(settings)) as restarted:  # verifies the export, restores the checkpoint
        body = restarted.post("/act", json={"policy": "shop", "context": [1.0, 2.0, 3.0, 4.0], "greedy": True}).json()
    assert body["version"] == "1.1" and body["scores"] == expected


def test_a_tampered_export_is_refused_and_the_previous_version_keeps_serving(
    app_client: TestClient, redis_client: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app_client.post("/policies", json=POLICY)
    before = app_client.post("/act", json={"policy": "shop", "context": [1.0, 2.0, 3.0, 4.0], "greedy": True}).json()
    store = tmp_path / "models"
    spec = PolicySpec.from_dict(savedmodel.read_manifest(store, "shop", 1)["spec"])
    assert savedmodel.export(spec.build_policy(), spec, store) == 2
    victim = next((store / "shop" / "2" / "collect" / "variables").glob("*.data-*"))
    victim.write_bytes(victim.read_bytes()[:-1] + bytes([victim.read_bytes()[-1] ^ 0xFF]))
    redis_client.hset(eventlog.LIVE, "shop", "2.0")
    redis_client.publish(eventlog.ANNOUNCE, "shop 2.0")
    deadline = time.monotonic() + 10
    while 'serving_refused_versions_total{policy="shop"} 1.0' not in app_client.get("/metrics").text:
        assert time.monotonic() < deadline, "the replica never refused the tampered version"
        time.sleep(0.05)
    after = app_client.post("/act", json={"policy": "shop", "context": [1.0, 2.0, 3.0, 4.0], "greedy": True}).json()
    assert after["version"] == before["version"] == "1.0" and after["scores"] == before["scores"]
    assert any(
        "refusing version 2.0" in r.getMessage() and "does not match its manifest" in r.getMessage()
        for r in caplog.records
    )


def test_retention_trims_only_what_the_checkpoint_covers(
    app_client: TestClient, log_client: LogClient, tmp_path: Path, redis_url: str
) -> None:
    app_client.post("/policies", json=POLICY | {"reward": {"wait_seconds": 30.0}})
    assert log_client.hold_lease("shop", "trimmer", 60_000)
    trainer = PolicyTrainer(
        log_client, tmp_path / "models", "shop", TrainerMetrics(), 0.1, 1000, holder="trimmer", retention_seconds=0.001
    )
    contexts, actions, rewards = play(app_client, 20)
    waiting = app_client.post("/act", json={"policy": "shop", "context": [0.5, -1.0, 0.25, 2.0]}).json()
    assert trainer.step() == 20
    trainer.publish()
    raw = redis.Redis.from_url(redis_url)
    # Everything before the last entry the checkpoint covers is gone; the pending decision is in it.
    assert raw.xlen(eventlog.decisions_key("shop")) == 1 and raw.xlen(eventlog.rewards_key("shop")) == 1
    assert len(trainer.join.pending) == 1
    app_client.post("/reward", json={"event_id": waiting["event_id"], "reward": 1.5})
    restarted = PolicyTrainer(log_client, tmp_path / "models", "shop", TrainerMetrics(), 0.1, 1000, holder="trimmer")
    assert restarted.step() == 1  # the reward after the trim completes the pending join
    x = np.vstack([contexts, [[0.5, -1.0, 0.25, 2.0]]]).astype(np.float32)
    a = np.append(actions, waiting["action"])
    r = np.append(rewards, 1.5).astype(np.float32)
    for k in range(3):
        theta, _ = closed_form(x, a, r, 1.0, k)
        np.testing.assert_allclose(restarted.policy.state.theta.numpy()[k], theta, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "remove a file"])
def test_a_tampered_or_partial_checkpoint_is_refused_and_the_previous_version_keeps_serving(
    damage: str,
    app_client: TestClient,
    policy_trainer: Callable[..., PolicyTrainer],
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app_client.post("/policies", json=POLICY)
    trainer = policy_trainer("shop")
    play(app_client, 10)
    trainer.step()
    good = trainer.publish()
    served = wait_for_version(app_client, good)
    play(app_client, 10, seed=1)
    trainer.step()
    checkpoint = trainer.log.next_checkpoint("shop")
    trainer.state.join = trainer.join.state()
    folder = checkpoints.write(trainer.policy, trainer.state, tmp_path / "models", "shop", 1, checkpoint)
    victim = next(folder.glob("variables.data-*"))
    data = victim.read_bytes()
    if damage == "flip a byte":
        victim.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    else:
        victim.unlink()
    bad = f"1.{checkpoint}"
    redis_client.hset(eventlog.LIVE, "shop", bad)
    redis_client.publish(eventlog.ANNOUNCE, f"shop {bad}")
    deadline = time.monotonic() + 10
    while 'serving_refused_versions_total{policy="shop"} 1.0' not in app_client.get("/metrics").text:
        assert time.monotonic() < deadline, "the replica never refused the damaged checkpoint"
        time.sleep(0.05)
    after = app_client.post("/act", json={"policy": "shop", "context": [1.0, 2.0, 3.0, 4.0], "greedy": True}).json()
    assert after["version"] == good and after["scores"] == served["scores"]
    assert any(f"refusing version {bad}" in r.getMessage() and "digests" in r.getMessage() for r in caplog.records)
