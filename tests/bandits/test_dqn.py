"""DQN: the Double DQN update and the target network against closed forms, exact epsilon-greedy
propensities and the epsilon schedule, deterministic training, checkpoint round trip, bounded
replay, the served epsilon after a hot swap, and learning CartPole-v1 the way the service feeds
it (export, determinism and read-only choice: tests/bandits/test_contract.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import bandits
from bandits import Transitions
from bandits.dqn import DQN, double_dqn_targets, huber, linear_epsilon, weighted_huber_loss
from exporter import loader, savedmodel
from exporter.spec import RewardConfig, resolve
from tests.bandits.test_contract import assert_served_like

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

D, K = 5, 3
SMALL = {"hidden_sizes": [16, 8], "batch_size": 16, "learning_starts": 32, "buffer_size": 1000}
"""A small network that trains in milliseconds, for the tests that are not about learning."""

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def build(**hyperparameters: Any) -> DQN:
    policy = bandits.build("dqn", D, K, SMALL | hyperparameters)
    assert isinstance(policy, DQN)
    return policy


def random_transitions(n: int, seed: int = 0) -> Columns:
    """contexts, actions, rewards, next_contexts, dones (bool, about 1 in 5), weights."""
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, D)).astype(np.float32),
        rng.integers(0, K, size=n).astype(np.int32),
        rng.normal(size=n).astype(np.float32),
        rng.normal(size=(n, D)).astype(np.float32),
        rng.random(n) < 0.2,
        rng.uniform(0.5, 2.0, size=n).astype(np.float32),
    )


def rows(transitions: Columns, start: int, stop: int) -> Columns:
    c, a, r, n, d, w = (column[start:stop] for column in transitions)
    return c, a, r, n, d, w


def update_in_chunks(policy: DQN, transitions: Columns, chunks: list[int]) -> None:
    start = 0
    for size in chunks:
        policy.update_transitions(Transitions.of(*(column[start : start + size] for column in transitions)))
        start += size


def variables(policy: bandits.Policy) -> dict[str, np.ndarray]:
    return {f"{i}:{v.name}": v.numpy().copy() for i, v in enumerate(policy.variables)}


def assert_same_variables(policy: bandits.Policy, expected: dict[str, np.ndarray], skip: str | None = None) -> None:
    actual = variables(policy)
    assert actual.keys() == expected.keys()
    for name, value in actual.items():
        if skip is None or skip not in name:
            np.testing.assert_array_equal(value, expected[name], err_msg=name)


def parameters(network: Any) -> list[np.ndarray]:
    return [p.numpy().astype(np.float64) for p in network.parameters]


# -- the math equals a closed form ---------------------------------------------------------------


def numpy_q(params: list[np.ndarray], contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A one-hidden-layer relu network [w0, b0, w_out, b_out]: (Q [n, K], pre-activation, hidden)."""
    w0, b0, w1, b1 = params
    pre = contexts.astype(np.float64) @ w0 + b0
    hidden = np.maximum(pre, 0.0)
    return hidden @ w1 + b1, pre, hidden


def test_huber_and_double_dqn_targets_equal_their_closed_forms() -> None:
    errors = np.array([-3.0, -0.5, 0.0, 0.2, 0.7, 2.5], np.float32)
    expected = np.where(np.abs(errors) <= 0.7, 0.5 * errors**2, 0.7 * (np.abs(errors) - 0.35))
    np.testing.assert_allclose(huber(errors, 0.7).numpy(), expected, rtol=1e-6)

    rng = np.random.default_rng(0)
    online, target = rng.normal(size=(50, K)).astype(np.float32), rng.normal(size=(50, K)).astype(np.float32)
    rewards, dones = rng.normal(size=50).astype(np.float32), (rng.random(50) < 0.3).astype(np.float32)
    picked = online.argmax(axis=1)
    assert (picked != target.argmax(axis=1)).sum() > 10, "double and plain DQN must differ here"
    expected = rewards + 0.9 * (1 - dones) * target[np.arange(50), picked]
    np.testing.assert_allclose(double_dqn_targets(online, target, rewards, dones, 0.9).numpy(), expected, rtol=1e-6)

    actions, weights = rng.integers(0, K, 50).astype(np.int32), rng.uniform(0.5, 2, 50).astype(np.float32)
    loss = weighted_huber_loss(online, actions, expected, weights, 1.0).numpy()
    errors = online[np.arange(50), actions] - expected
    huber_np = np.where(np.abs(errors) <= 1, 0.5 * errors**2, np.abs(errors) - 0.5)
    np.testing.assert_allclose(loss, np.mean(weights * huber_np), rtol=1e-5)


def test_one_training_step_is_double_dqn_with_huber_loss_and_adam() -> None:
    # One hidden layer, target weights unlike the online ones, one Adam step on one minibatch:
    # the loss and the new weights equal a numpy forward and backward pass.
    n, batch, gamma, delta, lr = 40, 24, 0.9, 0.5, 0.01
    schedule = {"learning_starts": n, "train_every_transitions": n, "training_steps": 1, "batch_size": batch}
    no_copy = {"target_update": "periodic", "target_update_period": 1000}  # the target stays put
    policy = build(hidden_sizes=[6], discount=gamma, huber_delta=delta, learning_rate=lr, **schedule, **no_copy)
    rng = np.random.default_rng(3)
    for online_p, target_p in zip(policy.network.parameters, policy.target_network.parameters, strict=True):
        online_p.assign(rng.normal(size=online_p.shape).astype(np.float32))
        target_p.assign(rng.normal(size=target_p.shape).astype(np.float32))
    online, target = parameters(policy.network), parameters(policy.target_network)
    contexts, actions, rewards, next_contexts, dones, weights = random_transitions(n, seed=4)
    rewards = rewards * 3  # TD errors on both sides of delta

    policy.update_transitions(
        Transitions.of(contexts[:-1], actions[:-1], rewards[:-1], next_contexts[:-1], dones[:-1], weights[:-1])
    )
    assert policy.stats()["training_steps"] == 0, "trained before learning_starts"
    policy.update_transitions(
        Transitions.of(contexts[-1:], actions[-1:], rewards[-1:], next_contexts[-1:], dones[-1:], weights[-1:])
    )
    assert policy.stats()["training_steps"] == 1

    # The minibatch: slots drawn as documented, uniform with replacement keyed on (seed, step 0).
    slots = tf.random.stateless_uniform([batch], [0, 0], 0, n, tf.int64, alg="philox").numpy()
    s, a, r, s2 = contexts[slots], actions[slots], rewards[slots], next_contexts[slots]
    done, w = dones[slots].astype(np.float64), weights[slots].astype(np.float64)
    next_online, _, _ = numpy_q(online, s2)
    next_target, _, _ = numpy_q(target, s2)
    y = r + gamma * (1 - done) * next_target[np.arange(batch), next_online.argmax(axis=1)]
    q, pre, hidden = numpy_q(online, s)
    errors = q[np.arange(batch), a] - y
    assert (np.abs(errors) > delta).any() and (np.abs(errors) < delta).any()
    loss = np.mean(w * np.where(np.abs(errors) <= delta, 0.5 * errors**2, delta * (np.abs(errors) - delta / 2)))
    assert policy.stats()["last_loss"] == pytest.approx(loss, rel=1e-5)

    # Backward pass, then Adam's first step: m_hat = g, v_hat = g^2, so p <- p - lr g / (|g| + 1e-8).
    grad_q = np.zeros_like(q)
    grad_q[np.arange(batch), a] = w * np.clip(errors, -delta, delta) / batch
    grad_pre = (grad_q @ online[2].T) * (pre > 0)
    gradients = [s.T @ grad_pre, grad_pre.sum(axis=0), hidden.T @ grad_q, grad_q.sum(axis=0)]
    for name, new, old, g in zip(
        ["w0", "b0", "w_out", "b_out"], parameters(policy.network), online, gradients, strict=True
    ):
        np.testing.assert_allclose(new, old - lr * g / (np.abs(g) + 1e-8), rtol=1e-4, atol=1e-6, err_msg=name)
    for new, old in zip(parameters(policy.target_network), target, strict=True):
        np.testing.assert_array_equal(new, old.astype(np.float32))  # the period is not reached


def test_target_copy_after_every_period_and_polyak_mixing() -> None:
    transitions = random_transitions(20, seed=6)
    # One Adam step per transition from the 8th: the target equals the online network right
    # after steps 4, 8 and 12 (the period), and differs right after any other.
    policy = build(learning_starts=8, target_update="periodic", target_update_period=4)
    for i in range(20):
        update_in_chunks(policy, rows(transitions, i, i + 1), [1])
        step = policy.stats()["training_steps"]
        same = all(
            np.array_equal(o, t)
            for o, t in zip(parameters(policy.network), parameters(policy.target_network), strict=True)
        )
        assert same == (step % 4 == 0), (i, step)

    # Polyak: theta^- <- tau theta + (1 - tau) theta^- after every step.
    policy = build(learning_starts=8, target_update="polyak", polyak_tau=0.1)
    update_in_chunks(policy, transitions, [10])
    online, target = parameters(policy.network), parameters(policy.target_network)
    update_in_chunks(policy, rows(transitions, 10, 11), [1])
    for new_target, new_online, old_target in zip(
        parameters(policy.target_network), parameters(policy.network), target, strict=True
    ):
        np.testing.assert_allclose(new_target, 0.1 * new_online + 0.9 * old_target, rtol=1e-5, atol=1e-7)
    assert not np.allclose(online[0], parameters(policy.network)[0])


def test_update_is_one_step_episodes() -> None:
    contexts, actions, rewards, _, _, weights = random_transitions(64, seed=7)
    one, two = build(), build()
    one.update(contexts, actions, rewards, weights)
    two.update_transitions(Transitions.of(contexts, actions, rewards, contexts * 0, np.ones(64, bool), weights))
    assert_same_variables(one, variables(two))
    np.testing.assert_array_equal(one.replay.dones.numpy()[:64], 1.0)


def test_replay_buffer_holds_exactly_the_last_transitions_oldest_first() -> None:
    transitions = random_transitions(137, seed=8)
    policy = build(buffer_size=50, learning_starts=10**6)
    update_in_chunks(policy, transitions, [30, 60, 1, 46])  # one chunk larger than the buffer
    assert int(policy.replay.transitions_seen.numpy()) == 137
    for column, expected in zip(policy.replay.contents(), transitions, strict=True):
        np.testing.assert_array_equal(column.numpy(), np.asarray(expected[-50:], column.dtype.as_numpy_dtype))


# -- choosing: exact propensities and the epsilon schedule ----------------------------------------


def test_epsilon_decays_linearly_with_the_transitions_seen_and_propensities_are_exact() -> None:
    policy = build(epsilon_start=0.9, epsilon_end=0.1, epsilon_decay_transitions=200, learning_starts=50)
    transitions = random_transitions(300, seed=9)
    n = 512
    mask = np.tile([True, False, True], (n, 1))
    context, seeds = random_transitions(n, seed=10)[0], tf.range(n, dtype=tf.int64)
    seen = 0
    for chunk in [0, 1, 49, 50, 37, 63, 100]:
        update_in_chunks(policy, rows(transitions, seen, seen + chunk), [chunk])
        seen += chunk
        epsilon = 0.9 + (0.1 - 0.9) * min(1.0, seen / 200)
        assert policy.stats()["epsilon"] == pytest.approx(epsilon, abs=1e-6)
        out = policy.collect(context, mask, seeds)
        scores = out.scores.numpy()
        np.testing.assert_allclose(scores, policy.network.predict(context).numpy(), rtol=1e-6)
        best = np.where(mask, scores, -np.inf).argmax(axis=1)
        chosen = out.action.numpy()
        closed_form = np.where(chosen == best, 1 - epsilon + epsilon / 2, epsilon / 2)
        np.testing.assert_allclose(out.propensity.numpy(), closed_form, rtol=1e-5)
        assert mask[np.arange(n), chosen].all(), "a masked action was chosen"
        explored = (chosen != best).mean()
        assert abs(explored - epsilon / 2) < 4 * np.sqrt(epsilon / 2 / n) + 1e-3, (seen, explored, epsilon)
        probabilities = policy.probabilities(context, mask, seeds).numpy()
        np.testing.assert_allclose(probabilities[np.arange(n), chosen], out.propensity.numpy(), rtol=1e-5)
        greedy = policy.greedy(context, mask, seeds)
        np.testing.assert_array_equal(greedy.action.numpy(), best)
        np.testing.assert_array_equal(greedy.propensity.numpy(), 1.0)
    assert seen == 300 and policy.stats()["epsilon"] == pytest.approx(0.1)
    assert linear_epsilon(tf.constant(5, tf.int64), 1.0, 0.2, 0).numpy() == pytest.approx(0.2)


def test_probabilities_sum_to_one_over_the_mask_and_masked_actions_are_never_chosen() -> None:
    policy = build(epsilon_decay_transitions=10**6)  # epsilon about 1: mostly exploring
    update_in_chunks(policy, random_transitions(100, seed=11), [100])
    rng = np.random.default_rng(0)
    mask = rng.random((256, K)) < 0.5
    mask[np.arange(256), rng.integers(0, K, 256)] = True
    context, seeds = random_transitions(256, seed=12)[0], tf.range(256, dtype=tf.int64)
    probabilities = policy.probabilities(context, mask, seeds).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities[~mask] == 0).all() and (probabilities[mask] > 0).all()
    for choose in (policy.collect, policy.greedy):
        chosen = choose(context, mask, seeds).action.numpy()
        assert mask[np.arange(256), chosen].all(), "a masked action was chosen"


# -- training is deterministic and survives a checkpoint -----------------------------------------


@pytest.mark.parametrize("target_update", ["polyak", "periodic"])
def test_same_transitions_give_identical_variables_however_they_are_batched(target_update: str) -> None:
    transitions = random_transitions(300, seed=14)
    settings = {"train_every_transitions": 3, "training_steps": 2}
    one, batched, ragged = (build(target_update=target_update, target_update_period=7, **settings) for _ in range(3))
    update_in_chunks(one, transitions, [10] * 30)
    update_in_chunks(batched, transitions, [300])
    update_in_chunks(ragged, transitions, [1, 2, 31, 100, 1, 1, 64, 100])
    assert one.stats()["training_steps"] == 2 * 90  # rounds after 33, 36, ..., 300 transitions
    expected = variables(one)
    assert_same_variables(batched, expected, skip="train_step")  # counts update calls
    assert_same_variables(ragged, expected, skip="train_step")


def test_checkpoint_restore_then_continue_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # The trainer's exactly-once guarantee: both networks, Adam's moments, the replay buffer and
    # the counters are all variables, so a restored policy continues exactly as the original.
    transitions = random_transitions(400, seed=15)
    head, tail = rows(transitions, 0, 170), rows(transitions, 170, 400)
    original = build(buffer_size=128)
    update_in_chunks(original, head, [70, 100])
    prefix = tf.train.Checkpoint(root=original).write(str(tmp_path / "variables"))
    restored = build(buffer_size=128)
    restored.compile()
    tf.train.Checkpoint(root=restored).read(prefix).assert_consumed()
    assert restored.stats() == original.stats()
    for policy in (original, restored):
        update_in_chunks(policy, tail, [30, 100, 100])
    assert original.stats()["training_steps"] == 400 - 32 + 1
    assert_same_variables(restored, variables(original))
    assert restored.stats() == original.stats()


# -- export, load, hot swap ----------------------------------------------------------------------


def test_served_epsilon_follows_the_transitions_seen_after_a_hot_swap(store: Path, tmp_path: Path) -> None:
    spec = resolve("dqn", "dqn", D, K, SMALL | {"epsilon_decay_transitions": 400}, RewardConfig())
    policy = spec.build_policy()
    assert isinstance(policy, DQN)
    update_in_chunks(policy, random_transitions(100, seed=16), [100])
    loaded = loader.load(store, "dqn", savedmodel.export(policy, spec, store))
    rng = np.random.default_rng(1)
    context = rng.normal(size=(64, D)).astype(np.float32)
    mask = rng.random((64, K)) < 0.7
    mask[:, 2] = True
    seed = np.arange(64, dtype=np.int64) * 31
    # The trainer's checkpoint restores into the loaded SavedModels, epsilon included.
    everything = np.ones((64, K), bool)
    for seen in (100, 400):
        if seen == 400:
            update_in_chunks(policy, random_transitions(300, seed=17), [300])
            prefix = tf.train.Checkpoint(root=policy).write(str(tmp_path / "variables"))
            for model in (loaded.greedy_model, loaded.collect_model):
                tf.train.Checkpoint(root=model).read(prefix).expect_partial()
            assert_served_like(policy, loaded, (context, mask, seed, {}))
        epsilon = 1.0 - 0.95 * seen / 400
        served = loaded.probabilities(False, context, everything, seed).max(axis=1)
        np.testing.assert_allclose(served, 1 - epsilon + epsilon / K, rtol=1e-5)


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_sizes", []),
        ("hidden_sizes", [64, 0]),
        ("activation", "softmax"),
        ("learning_rate", 0),
        ("batch_size", 0),
        ("discount", 1.5),
        ("discount", "0.99"),
        ("huber_delta", 0.0),
        ("buffer_size", 0),
        ("learning_starts", -1),
        ("train_every_transitions", 0),
        ("training_steps", -1),
        ("target_update", "soft"),
        ("target_update_period", 0),
        ("polyak_tau", 0.0),
        ("polyak_tau", 1.5),
        ("epsilon_start", 1.2),
        ("epsilon_end", -0.1),
        ("epsilon_decay_transitions", -5),
        ("epsilon_decay_transitions", 2.5),
        ("seed", True),
        ("gamma", 0.9),
    ],
)
def test_invalid_hyperparameter_names_its_field(field: str, value: Any) -> None:
    with pytest.raises(bandits.InvalidHyperparameter) as error:
        bandits.build("dqn", D, K, {field: value})
    assert error.value.field == field


def test_state_bytes_bounds_the_variables_and_the_spec_round_trips() -> None:
    policy = bandits.build("dqn", D, K, {"hidden_sizes": [32, 16], "buffer_size": 500})
    held = sum(v.numpy().nbytes for v in policy.variables)
    assert held <= DQN.state_bytes(D, K, policy.config) <= 1.2 * held
    spec = resolve("p", "dqn", D, K, {"hidden_sizes": (8, 4), "target_update": "periodic"}, RewardConfig())
    assert spec.hyperparameters["hidden_sizes"] == [8, 4]
    assert spec.hyperparameters["discount"] == 0.99
    assert DQN.sequential and bandits.ALGORITHMS["dqn"] is DQN


# -- learned behaviour: CartPole-v1 as the service plays it --------------------------------------


def evaluate_cartpole(policy: DQN, episodes: int = 20) -> float:
    """Mean return of the greedy policy over CartPole-v1 episodes with seeds 10,000 + i."""
    import gymnasium as gym  # noqa: PLC0415

    greedy = tf.function(policy.greedy)
    envs = [gym.make("CartPole-v1") for _ in range(episodes)]
    observations = np.stack([env.reset(seed=10_000 + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    returns, alive = np.zeros(episodes), np.ones(episodes, bool)
    mask, seeds = tf.ones([episodes, 2], tf.bool), tf.zeros([episodes], tf.int64)
    while alive.any():
        actions = greedy(tf.constant(observations), mask, seeds).action.numpy()
        for i in np.flatnonzero(alive):
            observation, reward, terminated, truncated, _ = envs[i].step(int(actions[i]))
            observations[i], returns[i] = observation, returns[i] + reward
            alive[i] = not (terminated or truncated)
    return float(returns.mean())


def test_dqn_learns_cartpole_acting_from_a_lagging_copy_and_training_in_batches() -> None:
    # As the service runs it: collect() of a copy refreshed from the trained model every 200
    # steps; update_transitions with 50 transitions at a time; terminal only when the pole falls
    # (the last step of a truncated episode has no next decision, so it is dropped).
    seed, max_steps, eval_every = 0, 30_000, 2_500
    trained, acting = bandits.build("dqn", 4, 2, {"seed": seed}), bandits.build("dqn", 4, 2, {"seed": seed})
    assert isinstance(trained, DQN)
    specs = [tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 2], tf.bool), tf.TensorSpec([None], tf.int64)]
    collect = tf.function(acting.collect, input_signature=specs)
    env = gym.make("CartPole-v1")
    observation, _ = env.reset(seed=seed)
    pending: list[tuple[Any, ...]] = []
    curve = []
    for step in range(1, max_steps + 1):
        decision = collect(
            observation[None].astype(np.float32), tf.ones([1, 2], tf.bool), tf.constant([step], tf.int64)
        )
        action = int(decision.action.numpy()[0])
        next_observation, reward, terminated, truncated, _ = env.step(action)
        if terminated or not truncated:
            pending.append((observation, action, reward, next_observation, terminated))
        observation = env.reset()[0] if terminated or truncated else next_observation
        if len(pending) == 50:
            s, a, r, s2, done = (np.array(column) for column in zip(*pending, strict=True))
            weights = np.ones(len(a), np.float32)
            trained.update_transitions(
                Transitions.of(s.astype(np.float32), a.astype(np.int32), r.astype(np.float32), s2, done, weights)
            )
            pending.clear()
        if step % 200 == 0:
            for served, learned in zip(acting.variables, trained.variables, strict=True):
                served.assign(learned)
        if step % eval_every == 0:
            curve.append((step, evaluate_cartpole(trained)))
            if curve[-1][1] >= 150:
                break
    # A uniform policy's mean return is about 22.
    assert curve[-1][1] >= 150, curve
