"""LinUCB and linear Thompson sampling: closed form, exact and estimated propensities, learning
(export, determinism and read-only choice: tests/bandits/test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import bandits
from bandits import linalg
from training.simulators import LinearSimulator

D, K = 5, 4


def closed_form(contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray, ridge: float, k: int):
    """Ridge regression per action in numpy: theta_k = (ridge I + X_k^T X_k)^-1 X_k^T y_k."""
    x = contexts[actions == k].astype(np.float64)
    y = rewards[actions == k].astype(np.float64)
    gram = ridge * np.eye(contexts.shape[1]) + x.T @ x
    return np.linalg.solve(gram, x.T @ y), np.linalg.inv(gram)


def random_examples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, D)).astype(np.float32),
        rng.integers(0, K, size=n).astype(np.int32),
        rng.normal(size=n).astype(np.float32),
    )


def update_in_chunks(policy: bandits.Policy, contexts, actions, rewards, chunks: list[int]) -> None:
    start = 0
    for size in chunks:
        sl = slice(start, start + size)
        policy.update(contexts[sl], actions[sl], rewards[sl], np.ones(size, np.float32))
        start += size


@pytest.mark.parametrize("algorithm", ["linucb", "lints"])
@pytest.mark.parametrize("chunks", [[1] * 30, [7, 13, 10], [300]])
def test_parameters_equal_ridge_closed_form(algorithm: str, chunks: list[int]) -> None:
    n = sum(chunks)
    contexts, actions, rewards = random_examples(n, seed=n)
    policy = bandits.build(algorithm, D, K, {"ridge": 0.5})
    update_in_chunks(policy, contexts, actions, rewards, chunks)
    for k in range(K):
        theta, inverse = closed_form(contexts, actions, rewards, 0.5, k)
        np.testing.assert_allclose(policy.state.theta.numpy()[k], theta, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(policy.state.gram_inverse.numpy()[k], inverse, rtol=1e-4, atol=1e-6)
        assert policy.state.counts.numpy()[k] == (actions == k).sum()


def test_batch_update_equals_sequential_updates() -> None:
    contexts, actions, rewards = random_examples(200, seed=3)
    batched, sequential = bandits.build("linucb", D, K, {}), bandits.build("linucb", D, K, {})
    update_in_chunks(batched, contexts, actions, rewards, [200])
    update_in_chunks(sequential, contexts, actions, rewards, [1] * 200)
    np.testing.assert_allclose(batched.state.gram.numpy(), sequential.state.gram.numpy(), rtol=1e-12)
    np.testing.assert_allclose(batched.state.theta.numpy(), sequential.state.theta.numpy(), rtol=1e-5, atol=1e-6)


def test_importance_weights_scale_the_statistics() -> None:
    contexts, actions, rewards = random_examples(50, seed=4)
    weighted, repeated = bandits.build("linucb", D, K, {}), bandits.build("linucb", D, K, {})
    weighted.update(contexts, actions, rewards, np.full(50, 2.0, np.float32))
    ones = np.ones(100, np.float32)
    repeated.update(np.concatenate([contexts] * 2), np.concatenate([actions] * 2), np.concatenate([rewards] * 2), ones)
    np.testing.assert_allclose(weighted.state.theta.numpy(), repeated.state.theta.numpy(), rtol=1e-5, atol=1e-6)


def test_linucb_scores_are_the_ucb_formula() -> None:
    contexts, actions, rewards = random_examples(100)
    policy = bandits.build("linucb", D, K, {"alpha": 0.7})
    policy.update(contexts, actions, rewards, np.ones(100, np.float32))
    query = contexts[:8]
    out = policy.greedy(query, tf.ones([8, K], tf.bool), tf.zeros([8], tf.int64))
    for k in range(K):
        theta, inverse = closed_form(contexts, actions, rewards, 1.0, k)
        expected = query @ theta + 0.7 * np.sqrt(np.einsum("bi,ij,bj->b", query, inverse, query))
        np.testing.assert_allclose(out.scores.numpy()[:, k], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out.action.numpy(), np.argmax(out.scores.numpy(), axis=1))
    np.testing.assert_array_equal(out.propensity.numpy(), 1.0)


def test_linucb_collect_propensity_is_exact_epsilon_mixture() -> None:
    contexts, actions, rewards = random_examples(100)
    policy = bandits.build("linucb", D, K, {"epsilon": 0.2})
    policy.update(contexts, actions, rewards, np.ones(100, np.float32))
    mask = np.array([[True, True, False, True]] * 64)
    out = policy.collect(contexts[:64], mask, tf.range(64, dtype=tf.int64))
    scores = np.where(mask, out.scores.numpy(), -np.inf)
    best = scores.argmax(axis=1)
    chosen = out.action.numpy()
    expected = np.where(chosen == best, 0.8 + 0.2 / 3, 0.2 / 3)
    np.testing.assert_allclose(out.propensity.numpy(), expected, rtol=1e-6)
    assert mask[np.arange(64), chosen].all(), "a masked action was chosen"
    assert (chosen != best).any(), "64 draws at epsilon 0.2 never explored"


def test_epsilon_probabilities_sum_to_one_and_respect_mask() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(100, 7)).astype(np.float32)
    mask = rng.random((100, 7)) < 0.5
    mask[:, 0] = True
    probs = linalg.epsilon_greedy_probabilities(scores, mask, 0.1).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert (probs[~mask] == 0).all() and (probs[mask] > 0).all()


def test_thompson_propensity_matches_empirical_frequency() -> None:
    contexts, actions, rewards = random_examples(40, seed=5)
    policy = bandits.build("lints", D, K, {"propensity_samples": 256})
    policy.update(contexts, actions, rewards, np.ones(40, np.float32))
    draws = 4000
    row = np.repeat(contexts[:1], draws, axis=0)
    out = policy.collect(row, tf.ones([draws, K], tf.bool), tf.range(draws, dtype=tf.int64))
    chosen = out.action.numpy()
    propensity = out.propensity.numpy()
    frequency = np.bincount(chosen, minlength=K) / draws
    assert (frequency > 0.02).sum() >= 2, "the test needs a context where several actions compete"
    for k in np.flatnonzero(frequency > 0):
        mean_estimate = propensity[chosen == k].mean()
        # Standard error of a 256-sample estimate averaged over many rows is tiny; the
        # empirical frequency over 4000 draws has sd <= 0.008; (1+wins)/(S+1) adds <= 0.004.
        assert abs(mean_estimate - frequency[k]) < 0.03, (k, mean_estimate, frequency[k])
    assert (propensity > 0).all() and (propensity <= 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["linucb", "lints"])
def test_learns_the_linear_simulator_far_better_than_uniform(algorithm: str) -> None:
    sim = LinearSimulator(seed=11)
    policy = bandits.build(algorithm, sim.context_dim, sim.num_actions, {})
    rounds, batch = 4000, 10
    regret = uniform = 0.0
    mask = tf.ones([batch, sim.num_actions], tf.bool)
    for step in range(rounds // batch):
        x = sim.contexts(batch)
        seeds = tf.range(step * batch, (step + 1) * batch, dtype=tf.int64)
        a = policy.collect(x, mask, seeds).action.numpy()
        r = sim.rewards(x, a)
        regret += sim.regret(x, a).sum()
        uniform += sim.uniform_regret(x).sum()
        policy.update(x, a, r, np.ones(batch, np.float32))
    assert regret < 0.2 * uniform, (regret, uniform)  # measured: linucb 0.105, lints 0.125
