"""The shared-parameter linear bandits over candidate sets: the closed form on joint features,
the Kronecker scoring against the direct one, and learning items never seen before."""

from __future__ import annotations

import numpy as np
import pytest

import bandits
from bandits.shared_linear import joint_features
from training.simulators import CandidateSimulator

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out


def joint(contexts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    x = np.concatenate([np.ones((len(contexts), 1)), contexts], axis=1)
    z = np.concatenate([np.ones((len(candidates), 1)), candidates], axis=1)
    return (x[:, :, None] * z[:, None, :]).reshape(len(x), -1)


@pytest.mark.parametrize("algorithm", ["linucb", "lints"])
def test_update_is_the_weighted_ridge_solution_on_joint_features_and_scores_are_exact(algorithm: str) -> None:
    d, f, n = 3, 2, 200
    rng = np.random.default_rng(1)
    contexts, candidates = rng.normal(size=(n, d)), rng.normal(size=(n, f))
    rewards, weights = rng.normal(size=n), rng.uniform(0.5, 2.0, size=n)
    policy = bandits.build(algorithm, d, 8, {"ridge": 0.5}, action_feature_dim=f)
    for chunk in np.array_split(np.arange(n), 3):  # any batching gives the same statistics
        policy.update(
            contexts[chunk].astype(np.float32),
            np.zeros(len(chunk), np.int32),
            rewards[chunk].astype(np.float32),
            weights[chunk].astype(np.float32),
            candidates[chunk].astype(np.float32),
        )
    phi = joint(contexts.astype(np.float32), candidates.astype(np.float32))
    np.testing.assert_allclose(
        joint_features(contexts.astype(np.float32), candidates.astype(np.float32)), phi, rtol=1e-6
    )
    gram = 0.5 * np.eye(phi.shape[1]) + (phi * weights[:, None]).T @ phi
    theta = np.linalg.solve(gram, phi.T @ (weights * rewards))
    np.testing.assert_allclose(policy.state.theta.numpy()[0], theta, rtol=1e-4, atol=1e-5)
    # Kronecker-structured scoring equals phi . theta and sqrt(phi^T A^-1 phi) per candidate.
    x, z = rng.normal(size=(1, d)).astype(np.float32), rng.normal(size=(1, 9, f)).astype(np.float32)
    mean, width = policy.mean_and_width(x, z)
    phis = joint(np.repeat(x, 9, axis=0), z[0])
    np.testing.assert_allclose(mean.numpy()[0], phis @ theta, rtol=1e-4, atol=1e-5)
    inverse = np.linalg.inv(gram)
    np.testing.assert_allclose(width.numpy()[0], np.sqrt(np.einsum("ki,ij,kj->k", phis, inverse, phis)), rtol=1e-4)


def test_thompson_scores_are_correlated_draws_of_one_theta() -> None:
    """Two identical candidates get identical sampled scores (one theta draw scores both)."""
    policy = bandits.build("lints", 2, 8, {}, action_feature_dim=2)
    z = np.tile(np.array([[[0.3, -1.0]]], np.float32), (64, 2, 1))
    out = policy.collect(np.ones((64, 2), np.float32), np.ones((64, 2), bool), np.arange(64, dtype=np.int64), z)
    np.testing.assert_array_equal(out.scores.numpy()[:, 0], out.scores.numpy()[:, 1])
    assert np.std(out.scores.numpy()[:, 0]) > 0.1  # ... and they do vary between draws


@pytest.mark.parametrize("algorithm", ["linucb", "lints"])
def test_learns_items_it_has_never_seen(algorithm: str) -> None:
    """Online on a changing pool (2% of items replaced every round), then greedy on a pool of
    items no policy has seen: regret far below uniform's."""
    sim = CandidateSimulator(seed=3)
    policy = bandits.build(algorithm, sim.context_dim, 64, {}, action_feature_dim=sim.item_feature_dim)
    k = sim.candidates
    batch: list[tuple[np.ndarray, np.ndarray, float]] = []
    for t in range(1500):
        x, _, z = sim.round()
        out = policy.collect(x[None], np.ones((1, k), bool), np.array([t], np.int64), z[None])
        chosen = z[int(out.action[0])]
        batch.append((x, chosen, sim.reward(x, chosen)))
        if len(batch) == 50:
            xs, zs, rs = (np.array(v) for v in zip(*batch, strict=True))
            policy.update(xs, np.zeros(50, np.int32), rs.astype(np.float32), np.ones(50, np.float32), zs)
            batch = []
    sim.fresh_pool()
    regret, uniform = [], []
    for t in range(300):
        x, _, z = sim.round()
        expected = sim.expected_rewards(x, z)
        action = int(policy.greedy(x[None], np.ones((1, k), bool), np.array([t], np.int64), z[None]).action[0])
        regret.append(expected.max() - expected[action])
        uniform.append(expected.max() - expected.mean())
    ratio = float(np.mean(regret) / np.mean(uniform))
    print(
        f"\n{algorithm}: regret on never-seen items {np.mean(regret):.4f}, uniform {np.mean(uniform):.4f}, "
        f"ratio {ratio:.4f}"
    )
    assert ratio < 0.05
