"""Shadow mode: a policy scores every decision of a served one, is never served, and learns
from the served policy's log with importance weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from exporter import loader
from training import checkpoints, ope
from training.simulators import LinearSimulator
from training.trainer import PolicyTrainer

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

D, K = 6, 4


def test_shadow_logs_its_choice_is_never_served_and_learns(
    app_client: TestClient, redis_client: redis.Redis, policy_trainer: Callable[..., PolicyTrainer], tmp_path: Path
) -> None:
    served = {
        "name": "served",
        "algorithm": "linucb",
        "context_dim": D,
        "num_actions": K,
        "exploration": {"epsilon": 1.0},
    }
    assert app_client.post("/policies", json=served).status_code == 201
    shadow = {"name": "shadow", "algorithm": "linucb", "context_dim": D, "num_actions": K, "shadow_of": "served"}
    created = app_client.post("/policies", json=shadow)
    assert created.status_code == 201 and created.json()["shadow_of"] == "served"
    bad = app_client.post("/policies", json=shadow | {"name": "other", "context_dim": D + 1})
    assert bad.status_code == 422 and bad.json()["field"] == "shadow_of"

    sim = LinearSimulator(context_dim=D, num_actions=K, noise=0.3, seed=4)
    contexts = sim.contexts(400)
    for x in contexts:
        body = app_client.post("/act", json={"policy": "served", "context": x.tolist()}).json()
        assert body["policy"] == "served" and "shadows" not in body
        reward = float(sim.rewards(x[None], np.array([body["action"]]))[0])
        app_client.post("/reward", json={"event_id": body["event_id"], "reward": reward})
    assert redis_client.xlen(eventlog.decisions_key("shadow")) == 0  # a shadow never decides for anyone

    records = [eventlog.DecisionRecord.from_fields(f) for _, f in redis_client.xrange(eventlog.decisions_key("served"))]
    assert len(records) == 400
    for record in records:
        mine = record.shadows["shadow"]
        assert mine["version"] == "1.0" and 0 <= mine["action"] < K and 0 < mine["propensity"] <= 1
        assert record.propensity == np.float32(0.25)  # epsilon 1: the served policy logs uniformly

    trainer = policy_trainer("shadow")
    assert trainer.step() == 400
    weights = np.array([r.shadows["shadow"]["served_action_probability"] / r.propensity for r in records])
    np.testing.assert_allclose(trainer.policy.state.counts.numpy().sum(), weights.sum(), rtol=1e-5)
    assert trainer.publish() == "1.1"

    # Its off-policy value on the served policy's log improves from what it started with.
    store = tmp_path / "models"
    actions = np.array([r.action for r in records])
    rewards = np.array([float(sim.expected_rewards(np.array([r.context]))[0, r.action]) for r in records])
    logged = np.array([r.context for r in records], np.float32)
    pscores = np.array([r.propensity for r in records])
    estimates = {}
    for version in ("1.0", "1.1"):
        model = loader.load(store, "shadow", 1)
        for saved in (model.greedy_model, model.collect_model):
            checkpoints.restore_variables(saved, store, "shadow", *eventlog.parse_version(version))
        report = ope.evaluate_policy(model, logged, actions, rewards, pscores, n_bootstrap=200)
        estimates[version] = report.estimates["snipw"]
    assert estimates["1.1"].value > estimates["1.0"].value + 0.2, estimates
    assert estimates["1.1"].low > estimates["1.0"].value
