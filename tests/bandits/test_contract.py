"""What every registered algorithm must satisfy, in its fixed-action and candidate-set forms:
export then load gives identical decisions and probabilities (and a trainer's checkpoint
hot-swaps into the loaded models), a fixed seed gives the same decisions, a row depends on its
own seed only, and choosing writes no variable (in the policy object and in the served graph)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import bandits
from exporter import loader, savedmodel
from exporter.spec import RewardConfig, resolve

D, F, K = 5, 3, 4
NETWORK = {"hidden_sizes": [16, 8], "batch_size": 16, "training_steps": 10}
VARIANTS: dict[str, list[dict[str, Any]]] = {
    # Exploration large enough that 32 rows explore under any seeds.
    "linucb": [{"epsilon": 0.3}],
    "lints": [{}],
    "neural_epsilon_greedy": [NETWORK | {"epsilon": 0.3, "train_every_examples": 32}],
    "neural_linear": [
        NETWORK | {"mode": "ts", "train_every_examples": 32},
        NETWORK | {"mode": "ucb", "epsilon": 0.3, "train_every_examples": 32},
    ],
    "dqn": [NETWORK | {"learning_starts": 32, "epsilon_end": 0.3, "epsilon_decay_transitions": 64}],
}
"""Small, fast hyperparameters of every registered algorithm (every mode that chooses differently)."""

CASES = [
    pytest.param(
        algorithm, candidates, hyperparameters, id=f"{algorithm}-{'candidates' if candidates else 'fixed'}-{i}"
    )
    for candidates, registry in ((False, bandits.ALGORITHMS), (True, bandits.CANDIDATE_ALGORITHMS))
    for algorithm in registry
    for i, hyperparameters in enumerate(VARIANTS[algorithm])
]

WRITING_OPS = {"AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp", "ResourceScatterNdUpdate"}


def test_every_registered_algorithm_has_a_contract_case() -> None:
    assert set(VARIANTS) == set(bandits.ALGORITHMS) | set(bandits.CANDIDATE_ALGORITHMS)


def train(policy: bandits.BanditLearner, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    candidates = rng.normal(size=(n, F)).astype(np.float32) if policy.takes_candidates else None
    policy.update(
        rng.normal(size=(n, D)).astype(np.float32),
        rng.integers(0, K, n).astype(np.int32),
        rng.normal(size=n).astype(np.float32),
        rng.uniform(0.5, 2.0, n).astype(np.float32),
        candidates,
    )


def requests(policy: bandits.Policy, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """context, mask (at least one allowed per row), seed and, for candidate sets, the candidates'
    features (zero where masked, as the service pads them)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((batch, K)) < 0.7
    mask[np.arange(batch), rng.integers(0, K, batch)] = True
    seeds = np.arange(batch, dtype=np.int64) * 31 + seed
    extra = {}
    if policy.takes_candidates:
        extra["action_features"] = rng.normal(size=(batch, K, F)).astype(np.float32) * mask[:, :, None]
    return rng.normal(size=(batch, D)).astype(np.float32), mask, seeds, extra


def build(algorithm: str, candidates: bool, hyperparameters: dict[str, Any]) -> bandits.BanditLearner:
    return bandits.build(algorithm, D, K, hyperparameters, action_feature_dim=F if candidates else 0)


def variables(policy: tf.Module) -> dict[str, np.ndarray]:
    return {f"{i}:{v.name}": v.numpy().copy() for i, v in enumerate(policy.variables)}


def ops_in_saved_model(path: Path) -> set[str]:
    """Every op type in a SavedModel's graph and function library, except in the functions
    that save and restore its variables (which every SavedModel has)."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            if "_traced_save_" not in function.signature.name and "_traced_restore_" not in function.signature.name:
                ops.update(node.op for node in function.node_def)
    return ops


def assert_served_like(policy: bandits.Policy, loaded: loader.LoadedVersion, request: tuple) -> None:
    """The loaded SavedModels decide (both variants) and give probabilities exactly as the policy."""
    context, mask, seed, extra = request
    candidates = extra.get("action_features")
    for variant in savedmodel.VARIANTS:
        greedy = variant == "greedy"
        direct = getattr(policy, variant)(context, mask, seed, candidates)
        served = loaded.decide(greedy, context, mask, seed, **extra)
        for key, value in direct._asdict().items():
            np.testing.assert_allclose(served[key], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{variant} {key}")
        distribution = policy.greedy_probabilities if greedy else policy.probabilities
        np.testing.assert_allclose(
            loaded.probabilities(greedy, context, mask, seed, **extra),
            distribution(context, mask, seed, candidates).numpy(),
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "candidates", "hyperparameters"), CASES)
def test_export_load_and_hot_swap_give_identical_decisions(
    algorithm: str, candidates: bool, hyperparameters: dict[str, Any], store: Path, tmp_path: Path
) -> None:
    spec = resolve("p", algorithm, D, K, hyperparameters, RewardConfig(), action_feature_dim=F if candidates else 0)
    policy = spec.build_policy()
    train(policy, 100, seed=1)
    version = savedmodel.export(policy, spec, store)
    loaded = loader.load(store, "p", version)
    assert loaded.manifest["train_step"] == 1
    root = savedmodel.version_dir(store, "p", version)
    for variant in savedmodel.VARIANTS:  # no training graph in the served models
        ops = ops_in_saved_model(root / variant)
        assert not ops & WRITING_OPS, f"{variant} writes variables: {ops & WRITING_OPS}"
        assert "StatelessRandomUniformIntV2" not in ops, f"{variant} carries the minibatch sampler"

    # A trainer resuming from version <export>.0 restores every variable from the export itself.
    resumed = spec.build_policy()
    resumed.compile()
    tf.train.Checkpoint(root=resumed).read(str(root / "collect" / "variables" / "variables")).expect_partial()
    exported = variables(policy)
    for name, value in variables(resumed).items():
        np.testing.assert_array_equal(value, exported[name], err_msg=name)

    request = requests(policy, 32, seed=2)
    assert_served_like(policy, loaded, request)
    # Hot swap: the trainer's checkpoint of every variable restores into the loaded SavedModels.
    train(policy, 100, seed=3)
    prefix = tf.train.Checkpoint(root=policy).write(str(tmp_path / "variables"))
    for model in (loaded.greedy_model, loaded.collect_model):
        tf.train.Checkpoint(root=model).read(prefix).expect_partial()
    assert_served_like(policy, loaded, request)


@pytest.mark.parametrize(("algorithm", "candidates", "hyperparameters"), CASES)
def test_choosing_never_writes_a_variable_and_a_seed_fixes_the_decision(
    algorithm: str, candidates: bool, hyperparameters: dict[str, Any]
) -> None:
    policy = build(algorithm, candidates, hyperparameters)
    train(policy, 100, seed=4)
    before = variables(policy)
    context, mask, seeds, extra = requests(policy, 32, seed=5)
    candidates_ = extra.get("action_features")
    first = policy.collect(context, mask, seeds, candidates_)
    again = policy.collect(context, mask, seeds, candidates_)
    policy.greedy(context, mask, seeds, candidates_)
    policy.probabilities(context, mask, seeds, candidates_)
    policy.greedy_probabilities(context, mask, seeds, candidates_)
    policy.stats()
    after = variables(policy)
    for name, value in before.items():
        np.testing.assert_array_equal(value, after[name], err_msg=name)
    for key, value in first._asdict().items():
        np.testing.assert_array_equal(value.numpy(), getattr(again, key).numpy(), err_msg=key)
    assert mask[np.arange(32), first.action.numpy()].all(), "a masked action was chosen"

    # A row depends on its own seed only, not on its batch neighbours.
    row = slice(5, 6)
    alone = policy.collect(context[row], mask[row], seeds[row], None if candidates_ is None else candidates_[row])
    assert alone.action.numpy()[0] == first.action.numpy()[5]
    np.testing.assert_allclose(alone.propensity.numpy()[0], first.propensity.numpy()[5], rtol=1e-6)
    other = policy.collect(context, mask, seeds + 7919, candidates_)
    assert not np.array_equal(first.action.numpy(), other.action.numpy()), "the seed changes nothing"
    if candidates_ is not None:
        # Padding a row with masked candidates changes neither its decision nor its propensity.
        wider = policy.collect(
            context, np.pad(mask, [(0, 0), (0, 5)]), seeds, np.pad(candidates_, [(0, 0), (0, 5), (0, 0)])
        )
        np.testing.assert_array_equal(wider.action.numpy(), first.action.numpy())
        np.testing.assert_allclose(wider.propensity.numpy(), first.propensity.numpy(), rtol=1e-6)
