"""Bandit algorithms as tf.Modules: pure TensorFlow math, no I/O (imports nothing of ours)."""

from __future__ import annotations

from typing import Any

from bandits.base import InvalidHyperparameter, Policy, config_from_dict
from bandits.dqn import DQN
from bandits.lints import LinearThompson
from bandits.linucb import LinUCB
from bandits.neural import NeuralEpsilonGreedy, NeuralLinear

ALGORITHMS: dict[str, type[Policy]] = {
    LinUCB.algorithm: LinUCB,
    LinearThompson.algorithm: LinearThompson,
    NeuralEpsilonGreedy.algorithm: NeuralEpsilonGreedy,
    NeuralLinear.algorithm: NeuralLinear,
    DQN.algorithm: DQN,
}


def build(algorithm: str, context_dim: int, num_actions: int, hyperparameters: dict[str, Any]) -> Policy:
    """A fresh policy of a registered algorithm; raises KeyError or InvalidHyperparameter."""
    policy_type = ALGORITHMS[algorithm]
    config = config_from_dict(policy_type.Config, hyperparameters)
    return policy_type(context_dim, num_actions, config)


__all__ = [
    "ALGORITHMS",
    "DQN",
    "InvalidHyperparameter",
    "LinUCB",
    "LinearThompson",
    "NeuralEpsilonGreedy",
    "NeuralLinear",
    "Policy",
    "build",
]
