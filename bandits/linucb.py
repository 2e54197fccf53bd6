"""LinUCB with disjoint linear models (Li, Chu, Langford, Schapire, WWW 2010, Algorithm 1)."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from bandits import linalg
from bandits.base import Decision, require, validate_ridge
from bandits.choice import epsilon_greedy_decision, greedy_decision
from bandits.linear import LinearPolicy


@dataclasses.dataclass(frozen=True)
class LinUCBConfig:
    alpha: float = 1.0
    """Confidence multiplier: score_k = x.theta_k + alpha * sqrt(x^T A_k^-1 x)."""
    ridge: float = 1.0
    """Ridge regularisation lambda: A_k starts as lambda * I."""
    epsilon: float = 0.05
    """Exploration share of the collect policy, spread uniformly over the allowed actions."""

    def validate(self) -> None:
        require(self.alpha >= 0, "alpha", "must be >= 0")
        validate_ridge(self.ridge)
        require(0 < self.epsilon <= 1, "epsilon", "must be in (0, 1]")


class LinUCB(LinearPolicy):
    algorithm = "linucb"
    Config = LinUCBConfig

    def ucb_scores(self, context: tf.Tensor) -> tf.Tensor:
        """[batch, K] upper confidence bounds for context [batch, d]."""
        mean, width = self.mean_and_width(context)
        return mean + self.config.alpha * width

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return greedy_decision(self.ucb_scores(context), mask)

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        return linalg.epsilon_greedy_probabilities(self.ucb_scores(context), mask, self.config.epsilon)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return epsilon_greedy_decision(self.ucb_scores(context), mask, seed, self.config.epsilon)
