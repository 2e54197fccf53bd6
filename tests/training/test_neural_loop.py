"""Neural bandits through the service and the trainer: declared in the policy JSON, trained
from the joined log, hot-swapped, with their counters in GET /policies/{name}."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.training.test_trainer import play, wait_for_version
from training.trainer import PolicyTrainer

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

NEURAL = {
    "name": "shop",
    "algorithm": "neural_linear",
    "context_dim": 4,
    "num_actions": 3,
    "hyperparameters": {
        "hidden_sizes": [16, 8],
        "activation": "tanh",
        "mode": "ucb",
        "train_every_examples": 32,
        "training_steps": 10,
        "buffer_size": 100,
    },
    "exploration": {"epsilon": 0.0},
}


def test_a_neural_policy_is_declared_trained_and_served(
    app_client: TestClient, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    created = app_client.post("/policies", json=NEURAL)
    assert created.status_code == 201, created.text
    hyper = created.json()["hyperparameters"]
    assert hyper["hidden_sizes"] == [16, 8] and hyper["mode"] == "ucb" and hyper["epsilon"] == 0.0
    bad = app_client.post("/policies", json=NEURAL | {"name": "bad", "hyperparameters": {"activation": "cubic"}})
    assert bad.status_code == 422 and bad.json()["field"] == "hyperparameters.activation"
    before = app_client.post("/act", json={"policy": "shop", "context": [1.0, 2.0, 3.0, 4.0], "greedy": True}).json()
    trainer = policy_trainer("shop")
    play(app_client, 150)
    assert trainer.step() >= 150
    version = trainer.publish()
    served = wait_for_version(app_client, version)
    assert not np.allclose(served["scores"], before["scores"])  # the hot swap changed the answer
    local = trainer.policy.greedy(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32), np.ones((1, 3), bool), np.zeros(1))
    np.testing.assert_allclose(served["scores"], local.scores.numpy()[0], rtol=1e-5, atol=1e-6)
    model = app_client.get("/policies/shop").json()["model"]
    assert model["training_steps"] == 10 * (trainer.state.applied // 32) > 0
    assert isinstance(model["last_loss"], float) and np.isfinite(model["last_loss"])
