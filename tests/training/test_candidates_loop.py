"""Candidate sets and named features through the whole loop: /act with per-request candidates,
the log, the trainer's exact update on joint features, publish, and the served model."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from training.simulators import CandidateSimulator
from training.trainer import PolicyTrainer

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

CONTEXT_FEATURES = [
    {"name": "age", "type": "numeric", "normalize": True},
    {"name": "segment", "type": "categorical", "vocabulary": ["new", "regular", "vip"], "default": "new"},
    {"name": "city", "type": "categorical", "hash_buckets": 4, "default": ""},
]
ITEM_FEATURES = [
    {"name": "price", "type": "numeric", "normalize": True},
    {"name": "brand", "type": "categorical", "hash_buckets": 3},
]


def candidates_of(ids: np.ndarray, features: np.ndarray) -> list[dict]:
    return [
        {"id": f"item-{i}", "features": [round(float(v), 5) for v in z]} for i, z in zip(ids, features, strict=True)
    ]


def joint(contexts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """vec([1, x] [1, z]^T) per row, in numpy."""
    x = np.concatenate([np.ones((len(contexts), 1)), contexts], axis=1)
    z = np.concatenate([np.ones((len(candidates), 1)), candidates], axis=1)
    return (x[:, :, None] * z[:, None, :]).reshape(len(x), -1)


def wait_for(client: TestClient, body: dict, version: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served = client.post("/act", json=body | {"greedy": True}).json()
        if served["version"] == version:
            return served
        time.sleep(0.02)
    raise AssertionError(f"the app never served {version}")


def assert_serves_the_trainers_model(
    client: TestClient, trainer: PolicyTrainer, sim: CandidateSimulator, version: str
) -> None:
    """A fresh round's candidates: the replicas serve ``version`` with the trainer's scores."""
    x, ids, z = sim.round()
    probe = {"policy": trainer.name, "context": x.round(5).tolist(), "actions": candidates_of(ids, z)}
    served = wait_for(client, probe, version)
    features = np.array([c["features"] for c in probe["actions"]], np.float32)
    local = trainer.policy.greedy(
        np.array([probe["context"]], np.float32), np.ones((1, len(ids)), bool), np.zeros(1, np.int64), features[None]
    )
    np.testing.assert_allclose(served["scores"], local.scores.numpy()[0], rtol=1e-5, atol=1e-6)


def test_candidate_linucb_learns_the_ridge_solution_on_joint_features_and_serves_it(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer], redis_client: redis.Redis
) -> None:
    sim = CandidateSimulator(context_dim=3, item_feature_dim=2, pool_size=30, candidates=6, seed=5)
    created = app_client.post(
        "/policies",
        json={"name": "shelf", "algorithm": "linucb", "context_dim": 3, "action_feature_dim": 2, "max_candidates": 8},
    )
    assert created.status_code == 201, created.text
    info = created.json()
    assert (info["num_actions"], info["action_feature_dim"]) == (8, 2)
    contexts, chosen, rewards = [], [], []
    for t in range(80):
        x, ids, z = sim.round()
        x = x.round(5)
        sent = candidates_of(ids, z)
        excluded = [sent[t % 6]["id"]]
        body = app_client.post(
            "/act", json={"policy": "shelf", "context": x.tolist(), "actions": sent, "excluded": excluded}
        )
        assert body.status_code == 200, body.text
        decision = body.json()
        index = decision["action_index"]
        assert decision["action"] == sent[index]["id"] and decision["action"] != excluded[0]
        assert len(decision["scores"]) == 6
        features = np.array(sent[index]["features"])
        reward = round(sim.reward(x, features), 5)
        assert app_client.post("/reward", json={"event_id": decision["event_id"], "reward": reward}).status_code == 202
        contexts.append(x)
        chosen.append(features)
        rewards.append(reward)
    # The log keeps every candidate's id and features and the exclusion.
    _, fields = redis_client.xrange(eventlog.decisions_key("shelf"), count=1)[0]
    record = eventlog.DecisionRecord.from_fields(fields)
    assert record.candidates is not None and len(record.candidates) == 6 and record.mask is not None
    assert record.mask.count(False) == 1 and record.action_features is not None and len(record.action_features[0]) == 2

    trainer = policy_trainer("shelf")
    assert trainer.step() == 80
    phi = joint(np.array(contexts), np.array(chosen))
    theta = np.linalg.solve(np.eye(phi.shape[1]) + phi.T @ phi, phi.T @ np.array(rewards))
    np.testing.assert_allclose(trainer.policy.state.theta.numpy()[0], theta, rtol=1e-4, atol=1e-5)
    assert_serves_the_trainers_model(app_client, trainer, sim, trainer.publish())


def test_named_features_are_packed_encoded_and_learned_alike(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    created = app_client.post(
        "/policies",
        json={
            "name": "named",
            "algorithm": "lints",
            "features": CONTEXT_FEATURES,
            "action_features": ITEM_FEATURES,
            "training": {"publish_every_examples": 10},
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["context_dim"] == 1 + 3 + 4 and created.json()["action_feature_dim"] == 1 + 3
    rng = np.random.default_rng(0)
    items = [{"id": f"i{k}", "features": {"price": float(10 + 5 * k), "brand": f"b{k % 4}"}} for k in range(5)]
    sent = []
    for t in range(40):
        context = {"age": float(rng.integers(18, 80)), "segment": ["new", "regular", "vip"][t % 3]}
        if t % 2:
            context["city"] = f"c{t % 7}"
        body = app_client.post("/act", json={"policy": "named", "context": context, "actions": items}).json()
        assert app_client.post("/reward", json={"event_id": body["event_id"], "reward": float(t % 3)}).status_code
        sent.append(context)
    trainer = policy_trainer("named")
    assert trainer.step() == 40
    ages = np.array([c["age"] for c in sent])
    context_encoder = trainer.policy.preprocessing.context
    assert context_encoder.count.numpy() == 40
    np.testing.assert_allclose(context_encoder.mean.numpy(), [ages.mean()], rtol=1e-12)
    np.testing.assert_allclose(context_encoder.m2.numpy(), [((ages - ages.mean()) ** 2).sum()], rtol=1e-9)
    version = trainer.publish()
    # The served graph encodes like the trainer: same normalisation, one-hot and hashing.
    probe = {"policy": "named", "context": {"age": 33.0, "segment": "vip", "city": "c3"}, "actions": items}
    served = wait_for(app_client, probe, version)
    from exporter import loader  # noqa: PLC0415

    model = loader.load(trainer.store, "named", int(version.split(".")[0]))
    from training import checkpoints  # noqa: PLC0415

    export, checkpoint = eventlog.parse_version(version)
    checkpoints.restore_variables(model.collect_model, trainer.store, "named", export, checkpoint)
    numeric = np.array([[33.0]], np.float32)
    categorical = np.array([["vip", "c3"]], object)
    action_numeric = np.array([[[it["features"]["price"]] for it in items]], np.float32)
    action_categorical = np.array([[[it["features"]["brand"]] for it in items]], object)
    encoded = model.encode(
        numeric, context_categorical=categorical, action_features=action_numeric, action_categorical=action_categorical
    )
    local_context, local_actions = trainer.policy.preprocessing.encode(
        numeric, categorical, action_numeric, action_categorical
    )
    np.testing.assert_allclose(encoded["context_vector"], local_context.numpy(), rtol=1e-6)
    np.testing.assert_allclose(encoded["action_vectors"], local_actions.numpy(), rtol=1e-6)
    std = ages.std()
    np.testing.assert_allclose(encoded["context_vector"][0, 0], (33.0 - ages.mean()) / std, rtol=1e-5)
    np.testing.assert_array_equal(encoded["context_vector"][0, 1:4], [0, 0, 1])  # vip, one-hot
    assert encoded["context_vector"][0, 4:].sum() == 1  # city hashed into one of 4 buckets
    local = trainer.policy.greedy(local_context, np.ones((1, 5), bool), np.zeros(1, np.int64), local_actions)
    np.testing.assert_allclose(served["scores"], local.scores.numpy()[0], rtol=1e-5, atol=1e-6)


def test_apprentice_mode_learns_from_the_baseline_and_counts_agreement(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    sim = CandidateSimulator(context_dim=3, item_feature_dim=2, pool_size=30, candidates=6, seed=8)
    created = app_client.post(
        "/policies",
        json={"name": "appr", "algorithm": "linucb", "context_dim": 3, "action_feature_dim": 2, "mode": "apprentice"},
    )
    assert created.status_code == 201, created.text
    contexts, served, rewards, agreed = [], [], [], 0
    for _ in range(60):
        x, ids, z = sim.round()
        x = x.round(5)
        sent = candidates_of(ids, z)
        decision = app_client.post("/act", json={"policy": "appr", "context": x.tolist(), "actions": sent}).json()
        assert decision["action"] == sent[0]["id"]  # the baseline: the first candidate
        features = np.array(sent[0]["features"])
        reward = round(sim.reward(x, features), 5)
        app_client.post("/reward", json={"event_id": decision["event_id"], "reward": reward})
        contexts.append(x)
        served.append(features)
        rewards.append(reward)
    trainer = policy_trainer("appr")
    assert trainer.step() == 60
    phi = joint(np.array(contexts), np.array(served))
    theta = np.linalg.solve(np.eye(phi.shape[1]) + phi.T @ phi, phi.T @ np.array(rewards))
    np.testing.assert_allclose(trainer.policy.state.theta.numpy()[0], theta, rtol=1e-4, atol=1e-5)
    trainer.publish()
    info = app_client.get("/policies/appr").json()
    assert info["mode"] == "apprentice" and info["apprentice"]["decisions"] == 60
    # Untrained, the policy's UCB scores tie on nothing: it agrees with the baseline only sometimes.
    agreed = info["apprentice"]["matches"]
    assert 0 <= agreed < 60 and info["apprentice"]["match_rate"] == agreed / 60


def test_pending_candidate_decisions_survive_a_trainer_restart(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    """Decisions still waiting for their reward are checkpointed with every candidate's packed
    features (numeric and categorical); a new trainer learns them when the rewards come."""
    body = {"name": "wait", "algorithm": "linucb", "features": CONTEXT_FEATURES, "action_features": ITEM_FEATURES}
    assert app_client.post("/policies", json=body).status_code == 201
    items = [{"id": f"i{k}", "features": {"price": float(3 * k), "brand": f"b{k}"}} for k in range(4)]
    events = []
    for t in range(12):
        context = {"age": float(20 + t), "segment": "regular", "city": f"c{t}"}
        events.append(app_client.post("/act", json={"policy": "wait", "context": context, "actions": items}).json())
    first = policy_trainer("wait")
    assert first.step() == 0 and len(first.join.pending) == 12
    first.publish()
    for t, event in enumerate(events):
        assert app_client.post("/reward", json={"event_id": event["event_id"], "reward": t / 12}).status_code == 202
    resumed = policy_trainer("wait")  # from the published checkpoint: the pending joins come back
    assert len(resumed.join.pending) == 12
    assert resumed.step() == 12
    # The same examples learned without a restart give the same model.
    replay = policy_trainer("wait", holder=None)
    replay.resume("1.0")
    replay.drain()
    np.testing.assert_allclose(
        resumed.policy.state.theta.numpy(), replay.policy.state.theta.numpy(), rtol=1e-5, atol=1e-6
    )
    assert resumed.policy.preprocessing.context.count.numpy() == 12


def test_neural_candidate_policies_learn_through_the_loop_and_serve_what_they_learned(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    small = {"hidden_sizes": [16, 8], "batch_size": 16, "training_steps": 10, "train_every_examples": 32}
    body = {"name": "tower", "algorithm": "neural_linear", "context_dim": 3, "action_feature_dim": 2}
    assert app_client.post("/policies", json=body | {"hyperparameters": small}).status_code == 201
    sim = CandidateSimulator(context_dim=3, item_feature_dim=2, pool_size=30, candidates=5, nonlinear=True, seed=2)
    for _ in range(70):
        x, ids, z = sim.round()
        sent = candidates_of(ids, z)
        decision = app_client.post("/act", json={"policy": "tower", "context": x.round(5).tolist(), "actions": sent})
        chosen = np.array(sent[decision.json()["action_index"]]["features"])
        app_client.post("/reward", json={"event_id": decision.json()["event_id"], "reward": sim.reward(x, chosen)})
    trainer = policy_trainer("tower")
    assert trainer.step() == 70
    assert trainer.policy.stats()["training_steps"] == 20  # two rounds: at 32 and 64 examples
    assert_serves_the_trainers_model(app_client, trainer, sim, trainer.publish())
    resumed = policy_trainer("tower")  # the replay buffer, candidate features included, is in the checkpoint
    np.testing.assert_array_equal(
        resumed.policy.replay.action_features.numpy(), trainer.policy.replay.action_features.numpy()
    )
