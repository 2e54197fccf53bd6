"""Bandit algorithms as tf.Modules: pure TensorFlow math, no I/O (imports nothing of ours)."""

from __future__ import annotations

from typing import Any

from bandits.base import (
    BanditLearner,
    Decision,
    Examples,
    InvalidHyperparameter,
    Policy,
    SequentialLearner,
    Transitions,
    config_from_dict,
)
from bandits.dqn import DQN
from bandits.features import FeatureError, FeatureSchema, Preprocessing
from bandits.lints import LinearThompson
from bandits.linucb import LinUCB
from bandits.neural import CandidateNeuralEpsilonGreedy, NeuralEpsilonGreedy
from bandits.neural_linear import CandidateNeuralLinear, NeuralLinear
from bandits.shared_linear import SharedLinearThompson, SharedLinUCB

ALGORITHMS: dict[str, type[BanditLearner]] = {
    LinUCB.algorithm: LinUCB,
    LinearThompson.algorithm: LinearThompson,
    NeuralEpsilonGreedy.algorithm: NeuralEpsilonGreedy,
    NeuralLinear.algorithm: NeuralLinear,
    DQN.algorithm: DQN,
}
"""Policies over a fixed set of K actions."""

CANDIDATE_ALGORITHMS: dict[str, type[BanditLearner]] = {
    SharedLinUCB.algorithm: SharedLinUCB,
    SharedLinearThompson.algorithm: SharedLinearThompson,
    CandidateNeuralEpsilonGreedy.algorithm: CandidateNeuralEpsilonGreedy,
    CandidateNeuralLinear.algorithm: CandidateNeuralLinear,
}
"""Policies that score per-request candidate sets from each candidate's features (same names)."""


def policy_type(algorithm: str, candidates: bool = False) -> type[BanditLearner]:
    """The class of a registered algorithm in its fixed-action or candidate-set form; KeyError if none."""
    return (CANDIDATE_ALGORITHMS if candidates else ALGORITHMS)[algorithm]


def build(
    algorithm: str,
    context_dim: int,
    num_actions: int,
    hyperparameters: dict[str, Any],
    action_feature_dim: int = 0,
    preprocessing: Preprocessing | None = None,
) -> BanditLearner:
    """A fresh policy of a registered algorithm (the candidate-set form when action_feature_dim
    > 0); raises KeyError or InvalidHyperparameter. context_dim and action_feature_dim are the
    encoded widths; ``preprocessing`` (default: plain vectors) encodes named features."""
    kind = policy_type(algorithm, action_feature_dim > 0)
    config = config_from_dict(kind.Config, hyperparameters)
    return kind(context_dim, num_actions, config, action_feature_dim=action_feature_dim, preprocessing=preprocessing)


__all__ = [
    "ALGORITHMS",
    "CANDIDATE_ALGORITHMS",
    "DQN",
    "BanditLearner",
    "Decision",
    "Examples",
    "FeatureError",
    "FeatureSchema",
    "InvalidHyperparameter",
    "LinUCB",
    "LinearThompson",
    "NeuralEpsilonGreedy",
    "NeuralLinear",
    "Policy",
    "Preprocessing",
    "SequentialLearner",
    "SharedLinUCB",
    "SharedLinearThompson",
    "Transitions",
    "build",
    "policy_type",
]
