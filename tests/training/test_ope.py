"""Off-policy evaluation: the Open Bandit Pipeline's own numbers, policies of known value, and an
exported policy evaluated on a uniformly logged simulator log."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter import loader, savedmodel
from exporter.spec import RewardConfig, resolve
from tests.data.obp_reference.make_compact import COMPACT, REFERENCE, rebuild
from training import estimators, ope
from training.reward_models import fit_reward_model
from training.simulators import LinearSimulator

REL = 1e-9


@pytest.fixture(scope="module")
def obd() -> dict[str, np.ndarray]:
    """obp's estimator inputs on the Open Bandit Dataset sample: [n, 80, 3] arrays, zeros at the
    positions that were not logged (tests/data/obp_reference/README.md)."""
    with np.load(COMPACT) as data:
        return rebuild({name: data[name] for name in data.files})


def logged(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: arrays[name] for name in ("reward", "action", "pscore", "action_dist", "position")}


def modelled(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**logged(arrays), "estimated_rewards_by_reg_model": arrays["estimated_rewards_by_reg_model"]}


def for_dm(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: arrays[name] for name in ("action_dist", "estimated_rewards_by_reg_model", "position")}


# -- the Open Bandit Pipeline's numbers ------------------------------------------------------------


def test_reproduces_the_open_bandit_pipeline(obd: dict[str, np.ndarray]) -> None:
    reference = json.loads(REFERENCE.read_text())["estimates"]
    assert estimators.ipw(**logged(obd)) == pytest.approx(reference["ipw"], rel=REL, abs=0)
    assert estimators.snipw(**logged(obd)) == pytest.approx(reference["snipw"], rel=REL, abs=0)
    assert estimators.dm(**for_dm(obd)) == pytest.approx(reference["dm"], rel=REL, abs=0)
    assert estimators.dr(**modelled(obd)) == pytest.approx(reference["dr"], rel=REL, abs=0)


def test_sndr_equals_its_definition(obd: dict[str, np.ndarray]) -> None:
    rows, action, position = np.arange(len(obd["reward"])), obd["action"], obd["position"]
    w = obd["action_dist"][rows, action, position] / obd["pscore"]
    q_hat = obd["estimated_rewards_by_reg_model"][rows, :, position]
    model_value = np.einsum("ik,ik->i", obd["action_dist"][rows, :, position], q_hat).mean()
    expected = model_value + np.sum(w * (obd["reward"] - q_hat[rows, action])) / np.sum(w)
    assert estimators.sndr(**modelled(obd)) == pytest.approx(expected, rel=REL, abs=0)
    assert estimators.sndr(**modelled(obd)) != pytest.approx(estimators.dr(**modelled(obd)), rel=1e-6)


def test_only_the_logged_position_is_read(obd: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    rows, position = np.arange(len(obd["reward"])), obd["position"]
    noisy = dict(obd)
    for name in ("action_dist", "estimated_rewards_by_reg_model"):
        junk = rng.random(obd[name].shape)
        junk[rows, :, position] = obd[name][rows, :, position]
        noisy[name] = junk
    assert estimators.ipw(**logged(noisy)) == estimators.ipw(**logged(obd))
    assert estimators.snipw(**logged(noisy)) == estimators.snipw(**logged(obd))
    assert estimators.dm(**for_dm(noisy)) == estimators.dm(**for_dm(obd))
    assert estimators.dr(**modelled(noisy)) == estimators.dr(**modelled(obd))
    assert estimators.sndr(**modelled(noisy)) == estimators.sndr(**modelled(obd))


def test_one_position_arrays_need_no_position(obd: dict[str, np.ndarray]) -> None:
    rows, position = np.arange(len(obd["reward"])), obd["position"]
    flat = {
        **obd,
        "position": None,
        "action_dist": obd["action_dist"][rows, :, position],
        "estimated_rewards_by_reg_model": obd["estimated_rewards_by_reg_model"][rows, :, position],
    }
    assert estimators.dr(**modelled(flat)) == estimators.dr(**modelled(obd))
    assert estimators.dm(**for_dm(flat)) == estimators.dm(**for_dm(obd))
    with pytest.raises(ValueError, match="position"):
        estimators.ipw(**{**logged(flat), "position": position})


# -- policies of known value ----------------------------------------------------------------------------


def tabular_bandit(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """4 context values (one-hot), K = 5, Bernoulli rewards with a fixed table of means, uniform
    logging (pscore 0.2), a softmax evaluation policy. -> (arrays, one-hot contexts, true value)."""
    table_rng = np.random.default_rng(1234)
    num_contexts, num_actions = 4, 5
    mean_reward = table_rng.uniform(0.1, 0.9, size=(num_contexts, num_actions))
    logits = 4.0 * mean_reward
    policy = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    true_value = float(np.mean(np.sum(policy * mean_reward, axis=1)))  # contexts are uniform

    rng = np.random.default_rng(seed)
    context = rng.integers(0, num_contexts, n)
    action = rng.integers(0, num_actions, n)
    reward = (rng.random(n) < mean_reward[context, action]).astype(np.float64)
    arrays = {
        "reward": reward,
        "action": action,
        "pscore": np.full(n, 1 / num_actions),
        "action_dist": policy[context],
        "position": None,
    }
    return arrays, np.eye(num_contexts)[context], true_value


def test_estimates_bracket_the_true_value() -> None:
    arrays, contexts, true_value = tabular_bandit(20_000, seed=0)
    arrays["estimated_rewards_by_reg_model"] = fit_reward_model(contexts, arrays["action"], arrays["reward"], 5)
    report = estimators.evaluate_arrays(**arrays, n_bootstrap=1000)
    for name in ("ipw", "snipw", "dr", "sndr"):
        estimate = report.estimates[name]
        assert estimate.low < true_value < estimate.high, (name, estimate, true_value)
        assert estimate.low < estimate.value < estimate.high
        assert 0.002 < estimate.high - estimate.low < 0.05, (name, estimate)
    # IPW's interval is about the normal one: 2 * 1.96 * std(w r) / sqrt(n).
    w = estimators.importance_weights(
        action=arrays["action"], pscore=arrays["pscore"], action_dist=arrays["action_dist"]
    )
    normal_width = 2 * 1.96 * np.std(w * arrays["reward"]) / np.sqrt(20_000)
    ipw_width = report.estimates["ipw"].high - report.estimates["ipw"].low
    assert ipw_width == pytest.approx(normal_width, rel=0.15)
    # DR's model removes most of the reward's variance from IPW.
    assert report.estimates["dr"].high - report.estimates["dr"].low < 0.8 * ipw_width
    # The reward model is right (tabular means), so DM is close.
    assert report.estimates["dm"].value == pytest.approx(true_value, abs=0.01)


def test_intervals_cover_the_true_value_about_95_percent_of_the_time() -> None:
    hits = {"ipw": 0, "dr": 0}
    replications = 200
    for seed in range(replications):
        arrays, contexts, true_value = tabular_bandit(500, seed=100 + seed)
        arrays["estimated_rewards_by_reg_model"] = fit_reward_model(contexts, arrays["action"], arrays["reward"], 5)
        for name in hits:
            inputs = logged(arrays) if name == "ipw" else modelled(arrays)
            low, high = estimators.bootstrap_interval(
                getattr(estimators, name), n_bootstrap=400, random_state=seed, **inputs
            )
            hits[name] += low < true_value < high
    for name, count in hits.items():
        assert 0.88 <= count / replications <= 0.99, (name, count)


def per_resample(estimator: Callable[..., float]) -> Callable[..., float]:
    """The same estimator, as a callable bootstrap_interval does not know: called once per resample."""

    def call(**arrays: Any) -> float:
        return estimator(**arrays)

    return call


def test_bootstrap_of_any_callable_matches_the_vectorised_one() -> None:
    arrays, contexts, _ = tabular_bandit(300, seed=7)
    arrays["estimated_rewards_by_reg_model"] = fit_reward_model(contexts, arrays["action"], arrays["reward"], 5)
    inputs = {"ipw": logged, "snipw": logged, "dm": for_dm}
    for name in estimators.ESTIMATORS:
        estimator, arguments = getattr(estimators, name), inputs.get(name, modelled)(arrays)
        fast = estimators.bootstrap_interval(estimator, n_bootstrap=200, random_state=3, **arguments)
        slow = estimators.bootstrap_interval(per_resample(estimator), n_bootstrap=200, random_state=3, **arguments)
        np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_report_agrees_with_the_functions_and_is_deterministic() -> None:
    arrays, contexts, _ = tabular_bandit(2000, seed=1)
    arrays["estimated_rewards_by_reg_model"] = fit_reward_model(contexts, arrays["action"], arrays["reward"], 5)
    report = estimators.evaluate_arrays(**arrays, n_bootstrap=300, random_state=5)
    assert report == estimators.evaluate_arrays(**arrays, n_bootstrap=300, random_state=5)
    assert report != estimators.evaluate_arrays(**arrays, n_bootstrap=300, random_state=6)
    for name in estimators.ESTIMATORS:
        estimator = getattr(estimators, name)
        inputs = {"ipw": logged, "snipw": logged, "dm": for_dm}.get(name, modelled)(arrays)
        estimate = report.estimates[name]
        assert estimate.value == pytest.approx(estimator(**inputs), rel=1e-12)
        interval = estimators.bootstrap_interval(estimator, n_bootstrap=300, random_state=5, **inputs)
        np.testing.assert_allclose((estimate.low, estimate.high), interval, rtol=1e-12)
    as_dict = report.to_dict()
    assert set(as_dict["estimates"]) == set(estimators.ESTIMATORS)
    assert as_dict["n"] == 2000 and as_dict["estimates"]["dr"]["value"] == report.estimates["dr"].value
    json.dumps(as_dict)


# -- weights and the reward model --------------------------------------------------------------------------


def test_effective_sample_size_and_largest_weight() -> None:
    assert estimators.effective_sample_size(np.ones(4)) == 4.0
    assert estimators.effective_sample_size(np.array([2.0, 0.0, 0.0, 0.0])) == 1.0
    assert estimators.effective_sample_size(np.array([1.0, 2.0, 3.0])) == pytest.approx(36 / 14)
    assert estimators.effective_sample_size(np.zeros(3)) == 0.0

    action_dist = np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    arrays = {"action": np.array([0, 1, 1]), "pscore": np.array([0.5, 0.5, 0.25]), "action_dist": action_dist}
    weights = estimators.importance_weights(**arrays)
    np.testing.assert_allclose(weights, [1.0, 0.0, 3.2])
    report = estimators.evaluate_arrays(
        reward=np.array([1.0, 0.0, 1.0]), **arrays, estimated_rewards_by_reg_model=np.zeros((3, 2)), n_bootstrap=50
    )
    assert report.max_importance_weight == pytest.approx(3.2)
    assert report.effective_sample_size == pytest.approx(4.2**2 / (1 + 3.2**2))
    assert report.estimates["ipw"].value == pytest.approx((1.0 + 3.2) / 3)
    assert report.estimates["snipw"].value == pytest.approx((1.0 + 3.2) / 4.2)
    # Self-normalizing needs some weight: none at all gives NaN, not a warning.
    never = {"action": np.array([1, 1]), "pscore": np.full(2, 0.5), "action_dist": np.array([[1.0, 0.0], [1.0, 0.0]])}
    assert np.isnan(estimators.snipw(reward=np.ones(2), **never))


def test_reward_model_is_cross_fitted_ridge() -> None:
    rng = np.random.default_rng(0)
    n, d, num_actions, ridge = 400, 3, 4, 2.0
    contexts = rng.normal(size=(n, d))
    actions = rng.integers(0, num_actions, n)
    rewards = contexts @ rng.normal(size=d) + rng.normal(size=n)
    q_hat = fit_reward_model(contexts, actions, rewards, num_actions, ridge=ridge, n_folds=2, random_state=3)
    assert q_hat.shape == (n, num_actions)

    # Changing row 0's reward changes only the predictions of the other fold: no row sees its own reward.
    moved = rewards.copy()
    moved[0] += 100.0
    changed = fit_reward_model(contexts, actions, moved, num_actions, ridge=ridge, n_folds=2, random_state=3)
    other_fold = np.any(changed != q_hat, axis=1)
    assert not other_fold[0] and 0.4 < other_fold.mean() < 0.6

    # Row 0's fold is predicted by closed-form ridge on the other fold, per action, with an intercept.
    phi = np.hstack([contexts, np.ones((n, 1))])
    for a in range(num_actions):
        train = other_fold & (actions == a)
        theta = np.linalg.solve(phi[train].T @ phi[train] + ridge * np.eye(d + 1), phi[train].T @ rewards[train])
        np.testing.assert_allclose(q_hat[~other_fold, a], phi[~other_fold] @ theta, rtol=1e-10, atol=1e-12)

    with pytest.raises(ValueError, match="n_folds"):
        fit_reward_model(contexts, actions, rewards, num_actions, n_folds=1)


# -- an exported policy ------------------------------------------------------------------------------------------


def test_exported_policy_beats_uniform_on_a_uniform_log(tmp_path: Path) -> None:
    d, num_actions = 6, 4
    simulator = LinearSimulator(context_dim=d, num_actions=num_actions, seed=0)
    rng = np.random.default_rng(1)

    spec = resolve("p", "linucb", d, num_actions, {}, RewardConfig())
    policy = spec.build_policy()
    train_contexts = simulator.contexts(2000)
    train_actions = rng.integers(0, num_actions, 2000).astype(np.int32)
    train_rewards = simulator.rewards(train_contexts, train_actions)
    policy.update(train_contexts, train_actions, train_rewards, np.ones(2000, np.float32))
    savedmodel.export(policy, spec, tmp_path)
    model = loader.load(tmp_path, "p", 1)

    # A fresh log of uniformly random decisions.
    n = 4000
    contexts = simulator.contexts(n)
    actions = rng.integers(0, num_actions, n)
    rewards = simulator.rewards(contexts, actions)
    pscores = np.full(n, 1 / num_actions)
    expected = simulator.expected_rewards(contexts)
    uniform_value = float(expected.mean())

    seeds = np.arange(n, dtype=np.int64)
    everything = np.ones((n, num_actions), bool)
    for greedy in (True, False):
        report = ope.evaluate_policy(model, contexts, actions, rewards, pscores, greedy=greedy, n_bootstrap=500)
        true_value = float(np.mean(np.sum(model.probabilities(greedy, contexts, everything, seeds) * expected, axis=1)))
        assert report.n == n
        for name in ("ipw", "dr", "sndr"):
            estimate = report.estimates[name]
            assert estimate.low < true_value < estimate.high, (greedy, name, estimate, true_value)
            assert estimate.low > uniform_value + 0.3, (greedy, name, estimate, uniform_value)
        assert report.estimates["dm"].value == pytest.approx(true_value, abs=0.05)
        if greedy:  # one-hot distribution: w is K where the policy agrees with the log, else 0
            assert report.max_importance_weight == num_actions
            assert report.effective_sample_size == pytest.approx(n / num_actions, rel=0.1)
