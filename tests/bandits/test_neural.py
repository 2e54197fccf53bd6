"""Neural bandits: closed forms, learning on a nonlinear simulator, exact and estimated
propensities, deterministic training, checkpoint round trip, bounded replay (export, hot swap
and read-only seeded choice: tests/bandits/test_contract.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import bandits
from bandits.linalg import per_action_statistics
from bandits.neural_linear import NeuralLinear
from exporter.spec import RewardConfig, resolve
from training.simulators import NonlinearSimulator

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

D, K = 5, 4
SMALL = {"hidden_sizes": [16, 8], "batch_size": 32, "training_steps": 20, "train_every_examples": 64}
"""A small network that trains in milliseconds, for the tests that are not about learning."""
VARIANTS = [  # epsilon large enough that 32 rows explore under any seeds
    ("neural_epsilon_greedy", {"epsilon": 0.3}),
    ("neural_linear", {"mode": "ts"}),
    ("neural_linear", {"mode": "ucb", "epsilon": 0.3}),
]


def build(algorithm: str, **hyperparameters: Any) -> Any:
    return bandits.build(algorithm, D, K, SMALL | hyperparameters)


def random_examples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, D)).astype(np.float32),
        rng.integers(0, K, size=n).astype(np.int32),
        rng.normal(size=n).astype(np.float32),
        rng.uniform(0.5, 2.0, size=n).astype(np.float32),
    )


def update_in_chunks(policy: bandits.Policy, examples: tuple[np.ndarray, ...], chunks: list[int]) -> None:
    start = 0
    for size in chunks:
        policy.update(*(column[start : start + size] for column in examples))
        start += size


def variables(policy: bandits.Policy) -> dict[str, np.ndarray]:
    return {f"{i}:{v.name}": v.numpy().copy() for i, v in enumerate(policy.variables)}


def numpy_features(policy: NeuralLinear, contexts: np.ndarray) -> np.ndarray:
    """z = [relu MLP representation, 1] in float64, from the policy's weights."""
    hidden = contexts.astype(np.float64)
    for weights, bias in zip(policy.network.hidden_weights, policy.network.hidden_biases, strict=True):
        hidden = np.maximum(hidden @ weights.numpy().astype(np.float64) + bias.numpy(), 0.0)
    return np.concatenate([hidden, np.ones((len(hidden), 1))], axis=1)


def weighted_ridge(features, actions, rewards, weights, ridge: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """mu_k = (ridge I + Z_k^T W Z_k)^-1 Z_k^T W y_k and the inverse, in numpy."""
    z, y, w = features[actions == k], rewards[actions == k].astype(np.float64), weights[actions == k]
    gram = ridge * np.eye(z.shape[1]) + (z * w[:, None]).T @ z
    return np.linalg.solve(gram, (z * w[:, None]).T @ y), np.linalg.inv(gram)


# -- the math equals a closed form ---------------------------------------------------------------


def test_per_action_statistics_equal_their_closed_form() -> None:
    features, actions, rewards, weights = random_examples(300, seed=1)
    actions[actions == 2] = 1  # an action without examples
    gram, reward_sums, counts = per_action_statistics(features, actions, rewards, weights, K)
    z, w, r = features.astype(np.float64), weights.astype(np.float64), rewards.astype(np.float64)
    for k in range(K):
        rows = actions == k
        np.testing.assert_allclose(gram.numpy()[k], (z[rows] * w[rows, None]).T @ z[rows], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(reward_sums.numpy()[k], z[rows].T @ (w[rows] * r[rows]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(counts.numpy()[k], w[rows].sum(), rtol=1e-12)
    assert counts.numpy()[2] == 0 and not gram.numpy()[2].any()


@pytest.mark.parametrize("chunks", [[40], [1] * 10 + [17, 13]])
def test_last_layer_between_training_rounds_is_weighted_ridge_on_the_representation(chunks: list[int]) -> None:
    examples = random_examples(sum(chunks), seed=len(chunks))
    policy = build("neural_linear", ridge=0.7, train_every_examples=1000)  # no training round: phi is fixed
    update_in_chunks(policy, examples, chunks)
    contexts, actions, rewards, weights = examples
    features = numpy_features(policy, contexts)
    for k in range(K):
        mean, inverse = weighted_ridge(features, actions, rewards, weights, 0.7, k)
        np.testing.assert_allclose(policy.last_layer.theta.numpy()[k], mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(policy.last_layer.gram_inverse.numpy()[k], inverse, rtol=1e-4, atol=1e-5)
    assert policy.stats() == {"training_steps": 0, "last_loss": None}


def test_training_round_recomputes_the_last_layer_from_the_buffer_with_the_new_representation() -> None:
    # 150 examples, buffer of 100, a round after 64 and 128: the last layer then covers the
    # buffer (examples 28..127) under the trained phi, plus examples 128..149 added exactly.
    examples = random_examples(150, seed=7)
    policy = build("neural_linear", ridge=1.3, buffer_size=100)
    untrained = numpy_features(policy, examples[0])
    update_in_chunks(policy, examples, [50, 50, 50])
    assert policy.stats()["training_steps"] == 2 * SMALL["training_steps"]
    contexts, actions, rewards, weights = examples
    features = numpy_features(policy, contexts)
    assert not np.allclose(features, untrained, atol=1e-3), "training did not change the representation"
    covered = slice(28, 150)
    for k in range(K):
        mean, inverse = weighted_ridge(features[covered], actions[covered], rewards[covered], weights[covered], 1.3, k)
        np.testing.assert_allclose(policy.last_layer.theta.numpy()[k], mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(policy.last_layer.gram_inverse.numpy()[k], inverse, rtol=1e-4, atol=1e-5)


def test_scores_are_the_posterior_mean_and_ucb() -> None:
    examples = random_examples(200, seed=2)
    policy = build("neural_linear", mode="ucb", alpha=0.6, ridge=1.0)
    update_in_chunks(policy, examples, [200])
    query = examples[0][:16]
    features = numpy_features(policy, query)
    mask = tf.ones([16, K], tf.bool)
    seeds = tf.range(16, dtype=tf.int64)
    greedy = policy.greedy(query, mask, seeds).scores.numpy()
    ucb = policy.probabilities(query, mask, seeds).numpy()
    for k in range(K):
        theta = policy.last_layer.theta.numpy()[k].astype(np.float64)
        inverse = policy.last_layer.gram_inverse.numpy()[k].astype(np.float64)
        np.testing.assert_allclose(greedy[:, k], features @ theta, rtol=1e-4, atol=1e-4)
        width = np.sqrt(np.einsum("bi,ij,bj->b", features, inverse, features))
        upper = features @ theta + 0.6 * width
        np.testing.assert_allclose(policy.collect(query, mask, seeds).scores.numpy()[:, k], upper, atol=1e-4)
    assert (ucb.argmax(axis=1) == policy.collect(query, mask, seeds).scores.numpy().argmax(axis=1)).all()


def test_replay_buffer_holds_exactly_the_last_examples_oldest_first() -> None:
    examples = random_examples(137, seed=3)
    policy = build("neural_epsilon_greedy", buffer_size=50, train_every_examples=10**6)
    update_in_chunks(policy, examples, [30, 60, 1, 46])  # one chunk larger than the buffer
    assert int(policy.replay.examples_seen.numpy()) == 137
    held = policy.replay.contents()
    for column, expected in zip(("contexts", "actions", "rewards", "weights"), examples, strict=True):
        np.testing.assert_array_equal(getattr(held, column).numpy(), expected[-50:])
    assert held.action_features.shape == (50, 0)  # fixed actions: no candidate features


# -- propensities --------------------------------------------------------------------------------


def test_epsilon_greedy_collect_propensity_is_exact() -> None:
    examples = random_examples(200, seed=4)
    policy = build("neural_epsilon_greedy", epsilon=0.2)
    update_in_chunks(policy, examples, [200])
    n = 256
    mask = np.tile([True, True, False, True], (n, 1))
    context = random_examples(n, seed=5)[0]
    out = policy.collect(context, mask, tf.range(n, dtype=tf.int64))
    scores = out.scores.numpy()
    np.testing.assert_allclose(scores, policy.network.predict(context).numpy(), rtol=1e-6)
    best = np.where(mask, scores, -np.inf).argmax(axis=1)
    chosen = out.action.numpy()
    np.testing.assert_allclose(out.propensity.numpy(), np.where(chosen == best, 0.8 + 0.2 / 3, 0.2 / 3), rtol=1e-6)
    assert mask[np.arange(n), chosen].all(), "a masked action was chosen"
    assert 0.08 < (chosen != best).mean() < 0.22, "exploration share far from 2/3 of epsilon"
    probabilities = policy.probabilities(context, mask, tf.range(n, dtype=tf.int64)).numpy()
    np.testing.assert_allclose(probabilities[np.arange(n), chosen], out.propensity.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(policy.greedy(context, mask, tf.zeros([n], tf.int64)).action.numpy(), best)


@pytest.mark.parametrize(("algorithm", "hyperparameters"), VARIANTS)
def test_probabilities_sum_to_one_over_the_mask(algorithm: str, hyperparameters: dict[str, Any]) -> None:
    policy = build(algorithm, **hyperparameters)
    update_in_chunks(policy, random_examples(100, seed=6), [100])
    rng = np.random.default_rng(0)
    mask = rng.random((64, K)) < 0.5
    mask[np.arange(64), rng.integers(0, K, 64)] = True
    context, seeds = random_examples(64, seed=8)[0], tf.range(64, dtype=tf.int64)
    probabilities = policy.probabilities(context, mask, seeds).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities[~mask] == 0).all()
    for choose in (policy.collect, policy.greedy):
        chosen = choose(context, mask, seeds).action.numpy()
        assert mask[np.arange(64), chosen].all(), "a masked action was chosen"


def test_thompson_propensity_matches_empirical_frequency() -> None:
    policy = build("neural_linear", mode="ts", noise=1.0, propensity_samples=256)
    update_in_chunks(policy, random_examples(40, seed=9), [40])
    draws = 4000
    row = np.repeat(random_examples(1, seed=10)[0], draws, axis=0)
    out = policy.collect(row, tf.ones([draws, K], tf.bool), tf.range(draws, dtype=tf.int64))
    chosen, propensity = out.action.numpy(), out.propensity.numpy()
    frequency = np.bincount(chosen, minlength=K) / draws
    assert (frequency > 0.02).sum() >= 2, "the test needs a context where several actions compete"
    for k in np.flatnonzero(frequency > 0):
        # As in test_linear: sd of the frequency <= 0.008, the (1 + wins)/(S + 1) bias <= 0.004.
        assert abs(propensity[chosen == k].mean() - frequency[k]) < 0.03, (k, frequency[k])
    assert (propensity > 0).all() and (propensity <= 1).all()


# -- training is deterministic -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["neural_epsilon_greedy", "neural_linear"])
def test_same_updates_give_identical_variables_however_they_are_batched(algorithm: str) -> None:
    examples = random_examples(300, seed=12)
    one, two, batched = build(algorithm), build(algorithm), build(algorithm)
    update_in_chunks(one, examples, [10] * 30)
    update_in_chunks(two, examples, [10] * 30)
    update_in_chunks(batched, examples, [300])
    assert one.stats()["training_steps"] == 4 * SMALL["training_steps"]
    expected = variables(one)
    for name, value in variables(two).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    for name, value in variables(batched).items():
        if "train_step" not in name:  # counts update() calls
            np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("algorithm", ["neural_epsilon_greedy", "neural_linear"])
def test_checkpoint_restore_then_continue_equals_an_uninterrupted_run(algorithm: str, tmp_path: Path) -> None:
    # The trainer's exactly-once guarantee: weights, Adam moments, replay buffer and counters
    # are all variables, so a policy restored from a checkpoint continues exactly as the original.
    examples = random_examples(400, seed=13)
    head, tail = (column[:170] for column in examples), (column[170:] for column in examples)
    head, tail = list(head), list(tail)
    original = build(algorithm, buffer_size=128)
    update_in_chunks(original, head, [70, 100])
    prefix = tf.train.Checkpoint(root=original).write(str(tmp_path / "variables"))
    restored = build(algorithm, buffer_size=128)
    restored.compile()
    tf.train.Checkpoint(root=restored).read(prefix).assert_consumed()
    for policy in (original, restored):
        update_in_chunks(policy, tail, [30, 100, 100])
    assert original.stats()["training_steps"] == 6 * SMALL["training_steps"]
    expected = variables(original)
    assert len(expected) == len(restored.variables)
    for name, value in variables(restored).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert restored.stats() == original.stats()


# -- learned behaviour on a seeded nonlinear simulator -------------------------------------------


def play(algorithm: str, hyperparameters: dict[str, Any], rounds: int = 5000, batch: int = 32) -> tuple[float, float]:
    """Cumulative expected regret of collect, updated after every batch, and of uniform play."""
    sim = NonlinearSimulator(seed=11)
    policy = bandits.build(algorithm, sim.context_dim, sim.num_actions, hyperparameters)
    mask = tf.ones([batch, sim.num_actions], tf.bool)
    regret = uniform = 0.0
    for step in range(rounds // batch):
        contexts = sim.contexts(batch)
        actions = policy.collect(contexts, mask, tf.range(step * batch, (step + 1) * batch, dtype=tf.int64))
        actions = actions.action.numpy()
        rewards = sim.rewards(contexts, actions)
        regret += sim.regret(contexts, actions).sum()
        uniform += sim.uniform_regret(contexts).sum()
        policy.update(contexts, actions, rewards, np.ones(batch, np.float32))
    return regret, uniform


NETWORK = {"hidden_sizes": [32, 32], "train_every_examples": 128, "training_steps": 100}


@pytest.fixture(scope="module")
def linucb_regret() -> float:
    return play("linucb", {})[0]


@pytest.mark.parametrize("mode", ["ts", "ucb"])
def test_neural_linear_has_at_most_half_linucb_regret_on_a_nonlinear_problem(mode: str, linucb_regret: float) -> None:
    regret, uniform = play("neural_linear", NETWORK | {"mode": mode})
    # measured (seed 11, 5000 rounds): ts 0.30, ucb 0.29 of LinUCB's 3878; LinUCB 0.65 of uniform's 5939
    assert regret <= 0.5 * linucb_regret, (regret, linucb_regret, uniform)


def test_neural_epsilon_greedy_far_better_than_uniform_on_a_nonlinear_problem() -> None:
    regret, uniform = play("neural_epsilon_greedy", NETWORK | {"epsilon": 0.1})
    assert regret < 0.4 * uniform, (regret, uniform)  # measured: 0.31


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "field", "value"),
    [
        ("neural_linear", "hidden_sizes", []),
        ("neural_linear", "hidden_sizes", [64, 0]),
        ("neural_linear", "hidden_sizes", "64"),
        ("neural_linear", "activation", "softmax"),
        ("neural_linear", "learning_rate", 0),
        ("neural_linear", "learning_rate", "0.01"),
        ("neural_linear", "batch_size", 0),
        ("neural_linear", "training_steps", -1),
        ("neural_linear", "train_every_examples", 0),
        ("neural_linear", "buffer_size", 2.5),
        ("neural_linear", "mode", "greedy"),
        ("neural_linear", "ridge", 0.0),
        ("neural_linear", "noise", -1.0),
        ("neural_linear", "epsilon", 1.5),
        ("neural_linear", "propensity_samples", 0),
        ("neural_epsilon_greedy", "epsilon", 0.0),
        ("neural_epsilon_greedy", "seed", True),
    ],
)
def test_invalid_hyperparameter_names_its_field(algorithm: str, field: str, value: Any) -> None:
    with pytest.raises(bandits.InvalidHyperparameter) as error:
        bandits.build(algorithm, D, K, {field: value})
    assert error.value.field == field


@pytest.mark.parametrize("algorithm", ["neural_epsilon_greedy", "neural_linear"])
def test_state_bytes_bounds_the_variables(algorithm: str) -> None:
    hyperparameters = {"hidden_sizes": [32, 16], "buffer_size": 500}
    policy = bandits.build(algorithm, D, K, hyperparameters)
    held = sum(v.numpy().nbytes for v in policy.variables)
    estimate = type(policy).state_bytes(D, K, policy.config)
    # The estimate also counts what an update holds besides the variables (neural_linear: the
    # last layer twice, the whole buffer's features), so it may exceed them, not by much.
    assert held <= estimate <= 5 * held, (held, estimate)


def test_hyperparameters_round_trip_through_json_form() -> None:
    spec = resolve("p", "neural_linear", D, K, {"hidden_sizes": (8, 4), "activation": "tanh"}, RewardConfig())
    assert spec.hyperparameters["hidden_sizes"] == [8, 4]
    assert spec.hyperparameters["mode"] == "ts"
    policy = spec.build_policy()
    assert [w.shape.as_list() for w in policy.network.hidden_weights] == [[D, 8], [8, 4]]
    assert policy.last_layer.theta.shape.as_list() == [K, 5]
