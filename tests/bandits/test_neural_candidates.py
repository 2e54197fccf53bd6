"""The candidate-set forms of the neural bandits: closed forms of the tower and the shared last
layer, learning on a nonlinear candidate simulator with a changing pool, one traced graph for
any number of candidates, propensities, deterministic training, checkpoint round trip, and the
fixed-action forms left as they were (export, determinism and read-only choice:
tests/bandits/test_contract.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import bandits
from bandits.neural import CandidateNeuralEpsilonGreedy, NeuralEpsilonGreedy, candidate_inputs, per_candidate
from bandits.neural_config import NeuralEpsilonGreedyConfig, NeuralLinearConfig
from bandits.neural_linear import CandidateNeuralLinear, NeuralLinear, shared_posterior_scores
from tests.bandits.test_neural import numpy_features, update_in_chunks, variables, weighted_ridge
from training.simulators import CandidateSimulator

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

D, F, K_MAX = 5, 3, 12
SMALL = {"hidden_sizes": [16, 8], "batch_size": 32, "training_steps": 20, "train_every_examples": 64}
"""A small tower that trains in milliseconds, for the tests that are not about learning."""
VARIANTS = [  # epsilon large enough that 32 rows explore under any seeds
    ("neural_epsilon_greedy", {"epsilon": 0.3}),
    ("neural_linear", {"mode": "ts"}),
    ("neural_linear", {"mode": "ucb", "epsilon": 0.3}),
]


def build(algorithm: str, **hyperparameters: Any) -> Any:
    return bandits.build(algorithm, D, K_MAX, SMALL | hyperparameters, action_feature_dim=F)


def random_examples(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """contexts [n, D], actions [n], rewards [n], weights [n], chosen candidates' features [n, F]."""
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, D)).astype(np.float32),
        rng.integers(0, K_MAX, size=n).astype(np.int32),
        rng.normal(size=n).astype(np.float32),
        rng.uniform(0.5, 2.0, size=n).astype(np.float32),
        rng.normal(size=(n, F)).astype(np.float32),
    )


def random_requests(batch: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """context [batch, D], mask [batch, k] (at least one allowed per row), seed [batch] int64,
    candidates [batch, k, F] with the masked ones zero, as the exporter pads them."""
    rng = np.random.default_rng(seed)
    mask = rng.random((batch, k)) < 0.6
    mask[np.arange(batch), rng.integers(0, k, batch)] = True
    candidates = rng.normal(size=(batch, k, F)).astype(np.float32) * mask[:, :, None]
    seeds = rng.integers(0, 2**62, size=batch, dtype=np.int64)
    return rng.normal(size=(batch, D)).astype(np.float32), mask, seeds, candidates


def tower_features(policy: CandidateNeuralLinear, contexts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """h = [phi([x, z]), 1] in float64 (numpy). contexts: [..., D], candidates: [..., F]."""
    inputs = np.concatenate([contexts, candidates], axis=-1)
    return numpy_features(policy, inputs.reshape(-1, D + F)).reshape(*inputs.shape[:-1], -1)


def shared_ridge(
    features: np.ndarray, rewards: np.ndarray, weights: np.ndarray, ridge: float
) -> tuple[np.ndarray, ...]:
    """The one regression's closed form: weighted ridge over every example (all on regression 0)."""
    return weighted_ridge(features, np.zeros(len(rewards), np.int32), rewards, weights, ridge, 0)


# -- the math equals a closed form ---------------------------------------------------------------


def test_candidate_inputs_pair_every_candidate_with_its_rows_context() -> None:
    contexts = np.arange(2 * D, dtype=np.float32).reshape(2, D)
    candidates = -np.arange(2 * 3 * F, dtype=np.float32).reshape(2, 3, F)
    inputs = candidate_inputs(tf.constant(contexts), tf.constant(candidates)).numpy()
    assert inputs.shape == (6, D + F)
    for b in range(2):
        for k in range(3):
            np.testing.assert_array_equal(inputs[3 * b + k], np.concatenate([contexts[b], candidates[b, k]]))
    back = per_candidate(tf.constant(inputs), tf.constant(candidates)).numpy()
    np.testing.assert_array_equal(back[:, :, D:], candidates)


@pytest.mark.parametrize("chunks", [[40], [1] * 10 + [17, 13]])
def test_shared_last_layer_between_rounds_is_one_weighted_ridge_over_every_candidate(chunks: list[int]) -> None:
    examples = random_examples(sum(chunks), seed=len(chunks))
    policy = build("neural_linear", ridge=0.7, train_every_examples=1000)  # no training round: phi is fixed
    update_in_chunks(policy, examples, chunks)
    contexts, _, rewards, weights, chosen = examples
    mean, inverse = shared_ridge(tower_features(policy, contexts, chosen), rewards, weights, 0.7)
    assert policy.last_layer.theta.shape.as_list() == [1, 9]  # one regression, on [phi, 1]
    np.testing.assert_allclose(policy.last_layer.theta.numpy()[0], mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(policy.last_layer.gram_inverse.numpy()[0], inverse, rtol=1e-4, atol=1e-5)
    assert policy.stats() == {"training_steps": 0, "last_loss": None}


def test_training_round_recomputes_the_shared_layer_from_the_buffer_with_the_new_representation() -> None:
    # 150 examples, buffer of 100, rounds after 64 and 128: the layer covers examples 28..149.
    examples = random_examples(150, seed=7)
    policy = build("neural_linear", ridge=1.3, buffer_size=100)
    update_in_chunks(policy, examples, [50, 50, 50])
    assert policy.stats()["training_steps"] == 2 * SMALL["training_steps"]
    assert np.isfinite(policy.stats()["last_loss"])
    contexts, _, rewards, weights, chosen = (column[28:] for column in examples)
    mean, inverse = shared_ridge(tower_features(policy, contexts, chosen), rewards, weights, 1.3)
    np.testing.assert_allclose(policy.last_layer.theta.numpy()[0], mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(policy.last_layer.gram_inverse.numpy()[0], inverse, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(policy.replay.contents().action_features.numpy(), examples[4][-100:])


def test_scores_are_the_towers_prediction_and_the_shared_posterior_mean_and_ucb() -> None:
    examples = random_examples(200, seed=2)
    context, mask, seeds, candidates = random_requests(16, 7, seed=3)
    greedy_policy = build("neural_epsilon_greedy")
    update_in_chunks(greedy_policy, examples, [200])
    inputs = np.concatenate([np.repeat(context[:, None], 7, axis=1), candidates], axis=-1).reshape(-1, D + F)
    predicted = greedy_policy.network.predict(inputs).numpy().reshape(16, 7)
    np.testing.assert_allclose(greedy_policy.greedy(context, mask, seeds, candidates).scores, predicted, rtol=1e-6)

    policy = build("neural_linear", mode="ucb", alpha=0.6)
    update_in_chunks(policy, examples, [200])
    features = tower_features(policy, np.repeat(context[:, None], 7, axis=1), candidates)  # [16, 7, p]
    theta = policy.last_layer.theta.numpy()[0].astype(np.float64)
    inverse = policy.last_layer.gram_inverse.numpy()[0].astype(np.float64)
    width = np.sqrt(np.einsum("bki,ij,bkj->bk", features, inverse, features))
    greedy = policy.greedy(context, mask, seeds, candidates).scores.numpy()
    np.testing.assert_allclose(greedy, features @ theta, rtol=1e-4, atol=1e-4)
    collect = policy.collect(context, mask, seeds, candidates).scores.numpy()
    np.testing.assert_allclose(collect, features @ theta + 0.6 * width, rtol=1e-4, atol=1e-4)


def test_thompson_draws_one_shared_weight_vector_so_candidates_scores_are_correlated() -> None:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(1, 3, 4)).astype(np.float32)
    theta = rng.normal(size=4).astype(np.float32)
    root = rng.normal(size=(4, 4))
    inverse = (root @ root.T / 4 + 0.1 * np.eye(4)).astype(np.float32)
    noise = rng.normal(size=(1, 40_000, 4)).astype(np.float32)
    scores = shared_posterior_scores(features, theta, inverse, 0.5, noise).numpy()[0]  # [S, K]
    h = features[0].astype(np.float64)
    np.testing.assert_allclose(scores.mean(axis=0), h @ theta, atol=0.02)
    covariance = 0.25 * h @ inverse @ h.T  # Cov(h_j.beta, h_k.beta): off the diagonal too
    np.testing.assert_allclose(np.cov(scores.T), covariance, atol=0.03 * np.abs(covariance).max())


def test_thompson_gives_identical_candidates_identical_sampled_scores() -> None:
    policy = build("neural_linear", mode="ts", noise=2.0)
    update_in_chunks(policy, random_examples(100, seed=5), [100])
    context, _, seeds, candidates = random_requests(64, 3, seed=6)
    candidates[:, 1] = candidates[:, 0]  # the same item twice: one draw of beta scores both alike
    scores = policy.collect(context, np.ones([64, 3], bool), seeds, candidates).scores.numpy()
    np.testing.assert_allclose(scores[:, 0], scores[:, 1], rtol=1e-6)
    assert not np.allclose(scores[:, 0], scores[:, 2], atol=1e-3)


# -- one traced graph serves any K; propensities -------------------------------------------------


@pytest.mark.parametrize(("algorithm", "hyperparameters"), VARIANTS)
def test_one_graph_serves_any_number_of_candidates_with_consistent_probabilities(
    algorithm: str, hyperparameters: dict[str, Any]
) -> None:
    policy = build(algorithm, **hyperparameters)
    update_in_chunks(policy, random_examples(100, seed=8), [100])
    signature = [
        tf.TensorSpec([None, D], tf.float32),
        tf.TensorSpec([None, None], tf.bool),
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None, None, F], tf.float32),
    ]
    greedy = tf.function(policy.greedy, input_signature=signature)
    collect = tf.function(policy.collect, input_signature=signature)
    probabilities_of = tf.function(policy.probabilities, input_signature=signature)
    samples = policy.config.propensity_samples if hyperparameters.get("mode") == "ts" else None
    for k in (1, 7, K_MAX):
        request = random_requests(64, k, seed=k)
        mask = request[1]
        probabilities = probabilities_of(*request).numpy()
        assert probabilities.shape == (64, k)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        assert (probabilities[~mask] == 0).all()
        out = collect(*request)
        chosen, propensity = out.action.numpy(), out.propensity.numpy()
        assert out.scores.shape == (64, k) and mask[np.arange(64), chosen].all(), "a masked candidate was chosen"
        if samples is None:  # exact
            np.testing.assert_allclose(propensity, probabilities[np.arange(64), chosen], rtol=1e-6)
        else:  # (1 + wins) / (S + 1) against wins / S over the same draws
            gap = np.abs(propensity - probabilities[np.arange(64), chosen])
            assert (gap <= 1 / (samples + 1) + 1e-6).all(), gap.max()
        best = greedy(*request)
        assert mask[np.arange(64), best.action.numpy()].all()
        np.testing.assert_array_equal(best.propensity.numpy(), 1.0)
        eager = policy.collect(*request)
        np.testing.assert_array_equal(eager.action.numpy(), chosen)
        np.testing.assert_allclose(eager.scores.numpy(), out.scores.numpy(), rtol=1e-5, atol=1e-6)
        if k == 1:
            np.testing.assert_array_equal(chosen, 0)
            np.testing.assert_allclose(propensity, 1.0)


def test_epsilon_greedy_collect_propensity_is_exact() -> None:
    policy = build("neural_epsilon_greedy", epsilon=0.2)
    update_in_chunks(policy, random_examples(200, seed=9), [200])
    n, k = 512, 4
    context, _, seeds, candidates = random_requests(n, k, seed=10)
    mask = np.tile([True, True, False, True], (n, 1))
    out = policy.collect(context, mask, seeds, candidates)
    best = np.where(mask, out.scores.numpy(), -np.inf).argmax(axis=1)
    chosen = out.action.numpy()
    expected = np.where(chosen == best, 0.8 + 0.2 / 3, 0.2 / 3)
    np.testing.assert_allclose(out.propensity.numpy(), expected, rtol=1e-6)
    assert 0.09 < (chosen != best).mean() < 0.2, "exploration share far from 2/3 of epsilon"
    np.testing.assert_array_equal(policy.greedy(context, mask, seeds, candidates).action.numpy(), best)


def test_thompson_propensity_matches_empirical_frequency() -> None:
    policy = build("neural_linear", mode="ts", noise=1.0, propensity_samples=256)
    update_in_chunks(policy, random_examples(40, seed=11), [40])
    draws, k = 4000, 5
    context, _, _, candidates = random_requests(1, k, seed=12)
    rows = (np.repeat(context, draws, axis=0), np.ones([draws, k], bool), np.arange(draws, dtype=np.int64))
    out = policy.collect(*rows, np.repeat(candidates, draws, axis=0))
    chosen, propensity = out.action.numpy(), out.propensity.numpy()
    frequency = np.bincount(chosen, minlength=k) / draws
    assert (frequency > 0.02).sum() >= 2, "the test needs a request where several candidates compete"
    for candidate in np.flatnonzero(frequency > 0):
        # sd of the frequency <= 0.008; the (1 + wins)/(S + 1) bias <= 0.004
        assert abs(propensity[chosen == candidate].mean() - frequency[candidate]) < 0.03, (candidate, frequency)
    assert (propensity > 0).all() and (propensity <= 1).all()


# -- training is deterministic -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["neural_epsilon_greedy", "neural_linear"])
def test_same_updates_give_identical_variables_however_batched_and_actions_are_ignored(algorithm: str) -> None:
    examples = random_examples(300, seed=14)
    other_actions = (examples[0], np.zeros(300, np.int32), *examples[2:])
    one, two, batched = build(algorithm), build(algorithm), build(algorithm)
    update_in_chunks(one, examples, [10] * 30)
    update_in_chunks(two, other_actions, [10] * 30)
    update_in_chunks(batched, examples, [300])
    assert one.stats()["training_steps"] == 4 * SMALL["training_steps"]
    expected = variables(one)
    for name, value in variables(two).items():
        if "actions" not in name:  # stored, never read
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    for name, value in variables(batched).items():
        if "train_step" not in name:  # counts update() calls
            np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(("algorithm", "hyperparameters"), VARIANTS)
def test_checkpoint_round_trip_gives_identical_scores_and_continues_identically(
    algorithm: str, hyperparameters: dict[str, Any], tmp_path: Path
) -> None:
    examples = random_examples(400, seed=15)
    head, tail = [column[:170] for column in examples], [column[170:] for column in examples]
    original = build(algorithm, buffer_size=128, **hyperparameters)
    update_in_chunks(original, head, [70, 100])
    prefix = tf.train.Checkpoint(root=original).write(str(tmp_path / "variables"))
    restored = build(algorithm, buffer_size=128, **hyperparameters)
    restored.compile()
    tf.train.Checkpoint(root=restored).read(prefix).assert_consumed()
    request = random_requests(32, 9, seed=16)
    for method in ("greedy", "collect"):
        for key in ("action", "propensity", "scores"):
            np.testing.assert_array_equal(
                getattr(getattr(restored, method)(*request), key).numpy(),
                getattr(getattr(original, method)(*request), key).numpy(),
            )
    np.testing.assert_array_equal(restored.probabilities(*request).numpy(), original.probabilities(*request).numpy())
    for policy in (original, restored):
        update_in_chunks(policy, tail, [30, 100, 100])
    expected = variables(original)
    for name, value in variables(restored).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert restored.stats() == original.stats()


# -- learned behaviour on a seeded nonlinear candidate simulator ---------------------------------


def play(algorithm: str, hyperparameters: dict[str, Any], rounds: int = 6000, batch: int = 32) -> dict[str, float]:
    """Trains collect online on a changing pool (an update after every batch of rounds), then
    plays greedy on a fresh pool of items never seen. Returns each phase's expected regret as a
    share of uniform play's."""
    sim = CandidateSimulator(nonlinear=True, seed=3)
    k, f = sim.candidates, sim.item_feature_dim
    policy = bandits.build(algorithm, sim.context_dim, k, hyperparameters, action_feature_dim=f)

    def regrets(contexts: np.ndarray, candidates: np.ndarray, actions: np.ndarray) -> tuple[float, float]:
        expected = np.stack([sim.expected_rewards(x, z) for x, z in zip(contexts, candidates, strict=True)])
        best = expected.max(axis=1)
        return (best - expected[np.arange(len(actions)), actions]).sum(), (best - expected.mean(axis=1)).sum()

    def requests(n: int) -> tuple[np.ndarray, np.ndarray]:
        played = [sim.round() for _ in range(n)]
        return np.stack([r[0] for r in played]), np.stack([r[2] for r in played])

    online = np.zeros(2)
    for step in range(rounds // batch):
        contexts, candidates = requests(batch)
        seeds = np.arange(step * batch, (step + 1) * batch, dtype=np.int64)
        actions = policy.collect(contexts, np.ones([batch, k], bool), seeds, candidates).action.numpy()
        chosen = candidates[np.arange(batch), actions]
        rewards = np.array([sim.reward(x, z) for x, z in zip(contexts, chosen, strict=True)], np.float32)
        online += regrets(contexts, candidates, actions)
        policy.update(contexts, actions, rewards, np.ones(batch, np.float32), chosen)
    sim.fresh_pool()
    contexts, candidates = requests(2000)
    actions = policy.greedy(contexts, np.ones([2000, k], bool), np.zeros(2000, np.int64), candidates).action
    fresh = regrets(contexts, candidates, actions.numpy())
    return {"online": online[0] / online[1], "fresh": fresh[0] / fresh[1]}


NETWORK = {"hidden_sizes": [32, 32], "train_every_examples": 128, "training_steps": 100, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def linucb() -> dict[str, float]:
    return play("linucb", {})


@pytest.mark.parametrize("mode", ["ts", "ucb"])
def test_neural_linear_learns_a_nonlinear_candidate_problem_and_beats_shared_linucb(
    mode: str, linucb: dict[str, float]
) -> None:
    result = play("neural_linear", NETWORK | {"mode": mode})
    # measured (seed 3, 6000 rounds), shares of uniform's regret: online ts 0.080, ucb 0.114;
    # fresh pool ts 0.020, ucb 0.025, against shared LinUCB's 0.102 online and 0.034 fresh
    # (over simulator seeds 0-4, neural_linear's fresh regret was 0.56-0.74 of LinUCB's).
    assert result["online"] < 0.5 and result["fresh"] < 0.1, result
    assert result["fresh"] < 0.85 * linucb["fresh"], (result, linucb)


def test_neural_epsilon_greedy_learns_a_nonlinear_candidate_problem() -> None:
    result = play("neural_epsilon_greedy", NETWORK | {"epsilon": 0.1})
    assert result["online"] < 0.5 and result["fresh"] < 0.1, result  # measured: 0.180 and 0.028


# -- registry, configuration, size ---------------------------------------------------------------


def test_candidate_forms_are_registered_under_the_same_names_and_configs() -> None:
    assert bandits.policy_type("neural_epsilon_greedy", candidates=True) is CandidateNeuralEpsilonGreedy
    assert bandits.policy_type("neural_linear", candidates=True) is CandidateNeuralLinear
    assert CandidateNeuralEpsilonGreedy.Config is NeuralEpsilonGreedyConfig
    assert CandidateNeuralLinear.Config is NeuralLinearConfig
    policy = build("neural_linear")
    assert policy.takes_candidates and policy.algorithm == "neural_linear"
    assert [w.shape.as_list() for w in policy.network.hidden_weights] == [[D + F, 16], [16, 8]]
    assert policy.network.output_weights.shape.as_list() == [8, 1]
    with pytest.raises(bandits.InvalidHyperparameter) as error:
        bandits.build("neural_linear", D, K_MAX, {"mode": "greedy"}, action_feature_dim=F)
    assert error.value.field == "mode"


def test_fixed_action_forms_build_unchanged(tmp_path: Path) -> None:
    # The fixed forms' classes, shapes and checkpoint layout, as before the candidate forms.
    for algorithm, kind in (("neural_epsilon_greedy", NeuralEpsilonGreedy), ("neural_linear", NeuralLinear)):
        policy = bandits.build(algorithm, D, 4, SMALL)
        assert type(policy) is kind and not policy.takes_candidates
        assert policy.network.output_weights.shape.as_list() == [8, 4]
        assert [w.shape.as_list() for w in policy.network.hidden_weights] == [[D, 16], [16, 8]]
        prefix = tf.train.Checkpoint(root=policy).write(str(tmp_path / algorithm / "variables"))
        names = {name.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE") for name, _ in tf.train.list_variables(prefix)}
        expected = {
            "_CHECKPOINTABLE_OBJECT_GRAPH",
            *(f"network/{weights}/{i}" for weights in ("hidden_weights", "hidden_biases") for i in range(2)),
            "network/output_weights",
            "network/output_bias",
            *(f"optimizer/{moment}/{i}" for moment in ("first_moments", "second_moments") for i in range(6)),
            "optimizer/step",
            *(f"replay/{column}" for column in ("contexts", "actions", "rewards", "weights", "examples_seen")),
            "state/train_step",
            "state/last_loss",
        }
        if algorithm == "neural_linear":
            statistics = ("gram", "reward_sums", "counts", "theta", "gram_inverse", "train_step")
            expected |= {f"last_layer/{name}" for name in statistics}
            assert policy.last_layer.theta.shape.as_list() == [4, 9]
        assert names == expected


@pytest.mark.parametrize(("algorithm", "bound"), [("neural_epsilon_greedy", 1.2), ("neural_linear", 5.0)])
def test_state_bytes_bounds_the_variables(algorithm: str, bound: float) -> None:
    policy = bandits.build(algorithm, D, K_MAX, {"hidden_sizes": [32, 16], "buffer_size": 500}, action_feature_dim=F)
    held = sum(v.numpy().nbytes for v in policy.variables)
    estimate = type(policy).state_bytes(D, K_MAX, policy.config, action_feature_dim=F)
    # neural_linear's estimate also counts what an update holds besides the variables (the last
    # layer twice, the whole buffer's features), as the fixed form's does.
    assert held <= estimate <= bound * held, (held, estimate)
