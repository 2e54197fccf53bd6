"""LinUCB and linear Thompson sampling over candidate sets: one linear model on joint features.

Per request every candidate k carries features z_k [f]; the context is x [d]. One ridge
regression over the joint features

    phi(x, z) = vec(x~ z~^T),   x~ = [1, x],  z~ = [1, z],   D = (d + 1)(f + 1)

(bias, the context's and the candidate's main effects, and every context x candidate cross)
learns one theta for all candidates, so a candidate never seen before is scored from its
features, and different contexts rank the same candidates differently. This is the shared
part of Li, Chu, Langford, Schapire (WWW 2010)'s hybrid model, whose z_{t,a} is the outer
product of user and article features, and TF-Agents' per-arm linear agents.

    A = ridge I + sum_i w_i phi_i phi_i^T,   b = sum_i w_i r_i phi_i,   theta = A^-1 b

Scoring K candidates uses the Kronecker structure instead of K products with a D x D matrix.
With Theta = theta as a [d+1, f+1] matrix and A^-1 as [d+1, f+1, d+1, f+1]:

    u(x)      = Theta^T x~                                  [f+1]
    M(x)[a,c] = sum_ij x~_i x~_j A^-1[(i,a), (j,c)]         [f+1, f+1], once per row
    mean_k    = z~_k . u(x),   width_k^2 = z~_k^T M(x) z~_k

so a row costs D^2 + K (f+1)^2, not K D^2. For Thompson sampling, theta ~ N(theta_hat, v^2 A^-1)
makes u ~ N(u(x), v^2 M(x)) and the candidates' sampled scores z~_k . u are correlated through
the shared theta: a draw is u(x) + v M(x)^{1/2} e with e ~ N(0, I_{f+1}), exact, not K
independent normals.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from bandits import linalg, rng
from bandits.base import BanditLearner, Decision, Examples
from bandits.choice import (
    DECISION_STREAM,
    PROPENSITY_STREAM,
    epsilon_greedy_decision,
    greedy_decision,
    sampled_decision,
)
from bandits.linear import LinearState, apply_examples, trace_update
from bandits.lints import LinTSConfig
from bandits.linucb import LinUCBConfig


def with_bias(values: tf.Tensor) -> tf.Tensor:
    """[..., n] -> [..., n + 1] with a leading 1."""
    return tf.concat([tf.ones_like(values[..., :1]), values], axis=-1)


def joint_features(contexts: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """phi(x, z) = vec(x~ z~^T). contexts: [n, d], candidates: [n, f] -> [n, (d+1)(f+1)] float32."""
    x, z = with_bias(contexts), with_bias(candidates)
    return tf.reshape(x[:, :, None] * z[:, None, :], [tf.shape(x)[0], -1])


def candidate_posterior(
    context: tf.Tensor, candidates: tf.Tensor, theta: tf.Tensor, gram_inverse: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """u(x) [batch, f+1], M(x) [batch, f+1, f+1] and z~ [batch, K, f+1] for every row.

    context: [batch, d], candidates: [batch, K, f], theta: [D], gram_inverse: [D, D], float32.
    """
    x = with_bias(context)
    z = with_bias(candidates)
    rows, cols = tf.shape(x)[1], tf.shape(z)[2]
    u = tf.matmul(x, tf.reshape(theta, [rows, cols]))
    inverse = tf.reshape(gram_inverse, [rows, cols, rows, cols])
    m = tf.einsum("bi,iajc,bj->bac", x, inverse, x)
    return u, m, z


def mean_and_width(
    context: tf.Tensor, candidates: tf.Tensor, theta: tf.Tensor, gram_inverse: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Posterior mean phi_k . theta and width sqrt(phi_k^T A^-1 phi_k) of every candidate.

    Shapes as in candidate_posterior; returns (mean [batch, K], width [batch, K]) float32.
    """
    u, m, z = candidate_posterior(context, candidates, theta, gram_inverse)
    mean = tf.einsum("bka,ba->bk", z, u)
    quad = tf.einsum("bka,bac,bkc->bk", z, m, z)
    return mean, tf.sqrt(tf.maximum(quad, 0.0))


def sampled_scores(
    context: tf.Tensor, candidates: tf.Tensor, theta: tf.Tensor, gram_inverse: tf.Tensor, scale: float, noise: tf.Tensor
) -> tf.Tensor:
    """Candidates' scores under S posterior draws of theta. noise: [batch, S, f+1] standard
    normal. Returns [batch, S, K] float32."""
    u, m, z = candidate_posterior(context, candidates, theta, gram_inverse)
    # M(x)^{1/2} by eigendecomposition: robust where float32 rounding leaves M barely positive.
    eigenvalues, eigenvectors = tf.linalg.eigh(m)
    root = eigenvectors * tf.sqrt(tf.maximum(eigenvalues, 0.0))[:, None, :]  # root root^T = M
    draws = u[:, None, :] + scale * tf.einsum("bac,bsc->bsa", root, noise)
    return tf.einsum("bka,bsa->bsk", z, draws)


class SharedLinearPolicy(BanditLearner):
    """One ridge regression on joint features; ``state`` is a LinearState with K = 1."""

    takes_candidates = True

    def __init__(self, context_dim: int, num_actions: int, config: Any, **inputs: Any) -> None:
        super().__init__(context_dim, num_actions, config, **inputs)
        self.state = LinearState(self.joint_dim(context_dim, self.action_feature_dim), 1, config.ridge)

    @staticmethod
    def joint_dim(context_dim: int, action_feature_dim: int) -> int:
        return (context_dim + 1) * (action_feature_dim + 1)

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """gram (float64), gram_inverse (float32) and an update's copies: about 24 D^2 bytes."""
        d = cls.joint_dim(context_dim, action_feature_dim)
        return 24 * d * d

    def compile(self) -> None:
        trace_update()

    def update_examples(self, examples: Examples) -> None:
        """Learns from the chosen candidates' joint features, all on the one regression
        (``actions`` is not used)."""
        phi = joint_features(examples.contexts, examples.action_features)
        apply_examples(self.state, phi, tf.zeros_like(examples.actions), examples.rewards, examples.weights)

    def mean_and_width(self, context: tf.Tensor, action_features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """[batch, K] posterior mean and width for context [batch, d], action_features [batch, K, f]."""
        return mean_and_width(context, action_features, self.state.theta[0], self.state.gram_inverse[0])


class SharedLinUCB(SharedLinearPolicy):
    """LinUCB on joint features: score_k = phi_k . theta + alpha sqrt(phi_k^T A^-1 phi_k), mixed
    with epsilon uniform exploration over the allowed candidates (exact propensities)."""

    algorithm = "linucb"
    Config = LinUCBConfig

    def ucb_scores(self, context: tf.Tensor, action_features: tf.Tensor | None) -> tf.Tensor:
        assert action_features is not None, "a candidate policy scores the candidates' features"
        mean, width = self.mean_and_width(context, action_features)
        return mean + self.config.alpha * width

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return greedy_decision(self.ucb_scores(context, action_features), mask)

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        return linalg.epsilon_greedy_probabilities(self.ucb_scores(context, action_features), mask, self.config.epsilon)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return epsilon_greedy_decision(self.ucb_scores(context, action_features), mask, seed, self.config.epsilon)


class SharedLinearThompson(SharedLinearPolicy):
    """Thompson sampling on joint features: one draw of theta scores every candidate; the
    propensity is the share of ``propensity_samples`` further draws the chosen one wins."""

    algorithm = "lints"
    Config = LinTSConfig

    def samples(
        self, context: tf.Tensor, action_features: tf.Tensor | None, seed: tf.Tensor, count: int, stream: int
    ) -> tf.Tensor:
        """[batch, count, K] Thompson scores of the candidates from the row's seed on ``stream``."""
        assert action_features is not None, "a candidate policy scores the candidates' features"
        width = self.action_feature_dim + 1
        noise = tf.reshape(rng.normal(seed, count * width, stream), [-1, count, width])
        s = self.state
        return sampled_scores(
            context, action_features, s.theta[0], s.gram_inverse[0], self.config.exploration_scale, noise
        )

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        assert action_features is not None, "a candidate policy scores the candidates' features"
        mean, _ = self.mean_and_width(context, action_features)
        return greedy_decision(mean, mask)

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        samples = self.samples(context, action_features, seed, self.config.propensity_samples, PROPENSITY_STREAM)
        return linalg.argmax_distribution(samples, mask)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        scores = self.samples(context, action_features, seed, 1, DECISION_STREAM)[:, 0, :]
        samples = self.samples(context, action_features, seed, self.config.propensity_samples, PROPENSITY_STREAM)
        return sampled_decision(scores, mask, samples)
