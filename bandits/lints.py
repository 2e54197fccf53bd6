"""Linear Thompson sampling (Agrawal & Goyal, ICML 2013) on the shared linear state.

Posterior per action: theta_k ~ N(theta_hat_k, v^2 A_k^-1). For one context x the sampled
score x.theta_k is N(x.theta_hat_k, v^2 x^T A_k^-1 x), so a row needs K scalar normals, not
K d-dimensional draws; the actions' posteriors are independent.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from bandits import linalg, rng
from bandits.base import Decision, InvalidHyperparameter
from bandits.linear import LinearPolicy

_DECISION_STREAM = 0
_PROPENSITY_STREAM = 1


@dataclasses.dataclass(frozen=True)
class LinTSConfig:
    exploration_scale: float = 1.0
    """v: posterior standard deviation multiplier (v^2 A_k^-1 is the sampling covariance)."""
    ridge: float = 1.0
    """Ridge regularisation lambda: A_k starts as lambda * I."""
    propensity_samples: int = 256
    """Posterior draws per row used to estimate the collect policy's propensity in the graph."""

    def validate(self) -> None:
        if not self.exploration_scale > 0:
            raise InvalidHyperparameter("exploration_scale", "must be > 0")
        if not self.ridge > 0:
            raise InvalidHyperparameter("ridge", "must be > 0")
        if not 1 <= self.propensity_samples <= 4096:
            raise InvalidHyperparameter("propensity_samples", "must be in [1, 4096]")


class LinearThompson(LinearPolicy):
    algorithm = "lints"
    Config = LinTSConfig

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        mean, _ = self.mean_and_width(context)
        action = linalg.masked_argmax(mean, mask)
        return {"action": action, "propensity": tf.ones_like(mean[:, 0]), "scores": mean}

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        mean, width = self.mean_and_width(context)
        s, k = self.config.propensity_samples, self.num_actions
        noise = tf.reshape(rng.normal(seed, s * k, _PROPENSITY_STREAM), [-1, s, k])
        return linalg.sampled_argmax_distribution(mean, width, self.config.exploration_scale, mask, noise)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        mean, width = self.mean_and_width(context)
        scale = self.config.exploration_scale
        k = self.num_actions
        scores = mean + scale * width * rng.normal(seed, k, _DECISION_STREAM)
        action = linalg.masked_argmax(scores, mask)
        s = self.config.propensity_samples
        noise = tf.reshape(rng.normal(seed, s * k, _PROPENSITY_STREAM), [-1, s, k])
        propensity = linalg.sampled_argmax_frequency(mean, width, scale, mask, noise, action)
        return {"action": action, "propensity": propensity, "scores": scores}
