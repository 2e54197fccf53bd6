"""How a decision is drawn from scores: greedy, epsilon-greedy, and the winner of a posterior
draw. Every algorithm's greedy and collect end in one of these; none writes a variable, and
all randomness comes from the row's seed (bandits.rng)."""

from __future__ import annotations

import tensorflow as tf

from bandits import linalg, rng
from bandits.base import Decision

DECISION_STREAM = 0
"""The rng stream of the draw that decides."""
PROPENSITY_STREAM = 1
"""The rng stream of the further draws that estimate a sampled decision's propensity."""


def greedy_decision(scores: tf.Tensor, mask: tf.Tensor) -> Decision:
    """The best allowed action, propensity 1. scores: [batch, K], mask: [batch, K] bool."""
    action = linalg.masked_argmax(scores, mask)
    return Decision(action, tf.ones_like(scores[:, 0]), scores)


def epsilon_greedy_decision(
    scores: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, epsilon: float | tf.Tensor
) -> Decision:
    """Best allowed action with probability 1 - epsilon, else uniform over the allowed ones,
    drawn from the row's seed; the propensity is exact. scores: [batch, K], mask: [batch, K]
    bool, seed: [batch] int64."""
    probabilities = linalg.epsilon_greedy_probabilities(scores, mask, epsilon)
    action = linalg.sample_categorical(probabilities, rng.uniform(seed, 1, DECISION_STREAM)[:, 0])
    return Decision(action, tf.gather(probabilities, action, batch_dims=1), scores)


def independent_draws(
    mean: tf.Tensor, width: tf.Tensor, scale: float, seed: tf.Tensor, count: int, stream: int
) -> tf.Tensor:
    """[batch, count, K] scores under ``count`` draws of independent per-action posteriors
    N(mean, (scale width)^2) from the row's seed on ``stream``. mean, width: [batch, K] with K
    known when traced."""
    k = int(mean.shape[1])
    noise = tf.reshape(rng.normal(seed, count * k, stream), [-1, count, k])
    return linalg.independent_samples(mean, width, scale, noise)


def sampled_decision(scores: tf.Tensor, mask: tf.Tensor, samples: tf.Tensor) -> Decision:
    """Thompson sampling: the best allowed action under one posterior draw ``scores`` [batch, K];
    its propensity estimated from further draws ``samples`` [batch, S, K] as (1 + wins) / (S + 1)."""
    action = linalg.masked_argmax(scores, mask)
    return Decision(action, linalg.argmax_frequency(samples, mask, action), scores)
