"""One export of a candidate-set policy serves any number of candidates: 1, 7 and the maximum;
masks (exclusions and padding) are honoured; the distribution sums to one over the candidates;
served decisions equal the policy object's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter import loader, savedmodel
from exporter.spec import RewardConfig, resolve

D, F, K_MAX = 4, 3, 16
SMALL = {"hidden_sizes": [16, 8], "batch_size": 16, "training_steps": 10, "train_every_examples": 32}
VARIANTS = [
    ("linucb", {}),
    ("lints", {}),
    ("neural_epsilon_greedy", SMALL | {"epsilon": 0.3}),
    ("neural_linear", SMALL | {"mode": "ts"}),
    ("neural_linear", SMALL | {"mode": "ucb", "epsilon": 0.3}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "hyperparameters"), VARIANTS)
def test_one_export_serves_1_7_and_max_candidates(store: Path, algorithm: str, hyperparameters: dict) -> None:
    spec = resolve("c", algorithm, D, K_MAX, hyperparameters, RewardConfig(), action_feature_dim=F)
    policy = spec.build_policy()
    rng = np.random.default_rng(0)
    n = 96
    policy.update(
        rng.normal(size=(n, D)).astype(np.float32),
        np.zeros(n, np.int32),
        rng.normal(size=n).astype(np.float32),
        np.ones(n, np.float32),
        rng.normal(size=(n, F)).astype(np.float32),
    )
    loaded = loader.load(store, "c", savedmodel.export(policy, spec, store))
    assert loaded.manifest["signatures"]["layout"] == "candidates"
    for k in (1, 7, K_MAX):
        batch = 24
        context = rng.normal(size=(batch, D)).astype(np.float32)
        features = rng.normal(size=(batch, k, F)).astype(np.float32)
        mask = rng.random((batch, k)) < 0.6
        mask[:, 0] |= ~mask.any(axis=1)
        features[~mask] = 0.0  # padding as the service sends it
        seed = np.arange(batch, dtype=np.int64) * 7 + k
        for greedy in (True, False):
            served = loaded.decide(greedy, context, mask, seed, action_features=features)
            direct = (policy.greedy if greedy else policy.collect)(context, mask, seed, features)
            np.testing.assert_array_equal(served["action"], direct.action.numpy(), err_msg=f"K={k}")
            np.testing.assert_allclose(served["scores"], direct.scores.numpy(), rtol=1e-5, atol=1e-6)
            assert served["scores"].shape == (batch, k)
            assert mask[np.arange(batch), served["action"]].all(), "a masked candidate was chosen"
            dist = loaded.probabilities(greedy, context, mask, seed, action_features=features)
            np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-5)
            assert (dist[~mask] == 0).all()
            picked = dist[np.arange(batch), served["action"]]
            if greedy or algorithm in ("linucb", "neural_epsilon_greedy") or hyperparameters.get("mode") == "ucb":
                np.testing.assert_allclose(picked, served["propensity"], rtol=1e-5)
            else:  # Thompson: both estimated from the same draws; the propensity counts the decisive one too
                np.testing.assert_allclose(picked, served["propensity"], atol=2 / 257)
        if k == 1:
            np.testing.assert_array_equal(
                loaded.decide(False, context, mask, seed, action_features=features)["action"], 0
            )
