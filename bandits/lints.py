"""Linear Thompson sampling (Agrawal & Goyal, ICML 2013) on the shared linear state.

Posterior per action: theta_k ~ N(theta_hat_k, v^2 A_k^-1). For one context x the sampled
score x.theta_k is N(x.theta_hat_k, v^2 x^T A_k^-1 x), so a row needs K scalar normals, not
K d-dimensional draws; the actions' posteriors are independent.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from bandits import linalg
from bandits.base import Decision, require, validate_ridge
from bandits.choice import DECISION_STREAM, PROPENSITY_STREAM, greedy_decision, independent_draws, sampled_decision
from bandits.linear import LinearPolicy


@dataclasses.dataclass(frozen=True)
class LinTSConfig:
    exploration_scale: float = 1.0
    """v: posterior standard deviation multiplier (v^2 A_k^-1 is the sampling covariance)."""
    ridge: float = 1.0
    """Ridge regularisation lambda: A_k starts as lambda * I."""
    propensity_samples: int = 256
    """Posterior draws per row used to estimate the collect policy's propensity in the graph."""

    def validate(self) -> None:
        require(self.exploration_scale > 0, "exploration_scale", "must be > 0")
        validate_ridge(self.ridge)
        require(1 <= self.propensity_samples <= 4096, "propensity_samples", "must be in [1, 4096]")


class LinearThompson(LinearPolicy):
    algorithm = "lints"
    Config = LinTSConfig

    def samples(self, context: tf.Tensor, seed: tf.Tensor, count: int, stream: int) -> tf.Tensor:
        """[batch, count, K] Thompson scores for context [batch, d] from the row's seed on ``stream``."""
        mean, width = self.mean_and_width(context)
        return independent_draws(mean, width, self.config.exploration_scale, seed, count, stream)

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        mean, _ = self.mean_and_width(context)
        return greedy_decision(mean, mask)

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        samples = self.samples(context, seed, self.config.propensity_samples, PROPENSITY_STREAM)
        return linalg.argmax_distribution(samples, mask)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        scores = self.samples(context, seed, 1, DECISION_STREAM)[:, 0, :]
        samples = self.samples(context, seed, self.config.propensity_samples, PROPENSITY_STREAM)
        return sampled_decision(scores, mask, samples)
