"""Pure linear-bandit math shared by LinUCB and linear Thompson sampling.

Notation (Li et al. 2010; Agrawal & Goyal 2013), per action k:
    A_k = ridge * I + sum_i x_i x_i^T     (``gram``)
    b_k = sum_i r_i x_i                   (``reward_sums``, per_action_statistics)
    theta_k = A_k^{-1} b_k                (ridge-regression estimate)
The sufficient statistics are kept in float64 so that any number of updates, in any
batching, gives the closed form to float tolerance; the serving tensors are float32.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class ArmStatistics(NamedTuple):
    """Each action's sufficient statistics of a weighted ridge regression (float64)."""

    gram: tf.Tensor
    """[K, p, p]: sum_i w_i z_i z_i^T over the action's examples (A_k without the prior)."""
    reward_sums: tf.Tensor
    """[K, p]: sum_i w_i r_i z_i (b_k)."""
    counts: tf.Tensor
    """[K]: sum_i w_i."""


def per_action_statistics(
    features: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor, num_actions: int | tf.Tensor
) -> ArmStatistics:
    """Each action's sums over n weighted examples: the one per-arm accumulation.

    features: [n, p] float32 (contexts, or a network's representation), actions: [n] int32 in
    [0, K) (which regression), rewards, weights: [n] float32. Returns ArmStatistics, float64.
    The rows are sorted by action once; each action's gram is then one matmul Z_k^T W_k Z_k on
    its contiguous rows: n p^2 work in all and no [n, p, p] intermediate (a whole replay buffer,
    or joint features with p in the thousands, are summed this way).
    """
    z = tf.cast(features, tf.float64)
    w = tf.cast(weights, tf.float64)
    weighted_rewards = w * tf.cast(rewards, tf.float64)
    reward_sums = tf.math.unsorted_segment_sum(weighted_rewards[:, None] * z, actions, num_actions)
    counts = tf.math.unsorted_segment_sum(w, actions, num_actions)
    order = tf.argsort(actions, stable=True)
    sorted_z, sorted_w = tf.gather(z, order), tf.gather(w, order)
    ends = tf.cumsum(tf.math.bincount(actions, minlength=num_actions, maxlength=num_actions))
    starts = tf.concat([[0], ends[:-1]], axis=0)
    grams = tf.TensorArray(tf.float64, size=num_actions, element_shape=[z.shape[1], z.shape[1]])
    for k in tf.range(num_actions):
        z_k = sorted_z[starts[k] : ends[k]]
        w_k = sorted_w[starts[k] : ends[k]]
        grams = grams.write(k, tf.matmul(z_k * w_k[:, None], z_k, transpose_a=True))  # Z_k^T W_k Z_k
    return ArmStatistics(grams.stack(), reward_sums, counts)


def ridge_solution(gram: tf.Tensor, reward_sums: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """theta_k = A_k^{-1} b_k and A_k^{-1} by Cholesky.

    gram: [K, d, d] float64 (positive definite), reward_sums: [K, d] float64.
    Returns (theta [K, d] float64, gram_inverse [K, d, d] float64).
    """
    chol = tf.linalg.cholesky(gram)
    eye = tf.eye(tf.shape(gram)[1], batch_shape=tf.shape(gram)[:1], dtype=gram.dtype)
    gram_inverse = tf.linalg.cholesky_solve(chol, eye)
    theta = tf.linalg.cholesky_solve(chol, reward_sums[:, :, None])[:, :, 0]
    return theta, gram_inverse


def mean_and_width(contexts: tf.Tensor, theta: tf.Tensor, gram_inverse: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Posterior mean x.theta_k and width sqrt(x^T A_k^{-1} x) for every row and action.

    contexts: [batch, d] float32, theta: [K, d] float32, gram_inverse: [K, d, d] float32.
    Returns (mean [batch, K], width [batch, K]), both float32.
    """
    mean = tf.matmul(contexts, theta, transpose_b=True)
    quad = tf.einsum("bi,kij,bj->bk", contexts, gram_inverse, contexts)
    return mean, tf.sqrt(tf.maximum(quad, 0.0))


def masked_argmax(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Index of the best allowed action (first on ties). scores: [batch, K], mask: [batch, K] bool.

    Returns [batch] int32.
    """
    lowest = tf.fill(tf.shape(scores), tf.constant(-float("inf"), scores.dtype))
    return tf.argmax(tf.where(mask, scores, lowest), axis=-1, output_type=tf.int32)


def epsilon_greedy_probabilities(scores: tf.Tensor, mask: tf.Tensor, epsilon: float) -> tf.Tensor:
    """(1 - epsilon) on the best allowed action plus epsilon spread over the allowed ones.

    scores: [batch, K] float32, mask: [batch, K] bool. Returns probabilities [batch, K] float32
    that are zero exactly on disallowed actions and sum to one per row.
    """
    allowed = tf.cast(mask, tf.float32)
    best = tf.one_hot(masked_argmax(scores, mask), tf.shape(scores)[1], dtype=tf.float32)
    uniform = allowed / tf.reduce_sum(allowed, axis=-1, keepdims=True)
    return (1.0 - epsilon) * best + epsilon * uniform


def sample_categorical(probabilities: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """Inverse-CDF draw. probabilities: [batch, K], u: [batch] uniform in (0, 1). Returns [batch] int32.

    The first index whose cumulative probability exceeds u; zero-probability actions are
    never chosen because their cumulative sum equals the previous one.
    """
    cumulative = tf.cumsum(probabilities, axis=-1)
    total = cumulative[:, -1:]
    above = cumulative > u[:, None] * total
    return tf.argmax(tf.cast(above, tf.int32), axis=-1, output_type=tf.int32)


def independent_samples(mean: tf.Tensor, width: tf.Tensor, scale: float, noise: tf.Tensor) -> tf.Tensor:
    """Scores under S draws of independent per-action posteriors N(mean, (scale width)^2).
    mean, width: [batch, K]; noise: [batch, S, K] standard normal. Returns [batch, S, K]."""
    return mean[:, None, :] + scale * width[:, None, :] * noise


def argmax_distribution(samples: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Share of sampled score vectors each action wins. samples: [batch, S, K]; mask: [batch, K]
    bool. Returns [batch, K] float32 summing to 1 per row."""
    mask_s = tf.broadcast_to(mask[:, None, :], tf.shape(samples))
    winners = masked_argmax(samples, mask_s)  # [batch, S]
    return tf.reduce_mean(tf.one_hot(winners, tf.shape(samples)[2], dtype=tf.float32), axis=1)


def argmax_frequency(samples: tf.Tensor, mask: tf.Tensor, action: tf.Tensor) -> tf.Tensor:
    """(1 + wins of ``action``) / (S + 1) over sampled score vectors samples: [batch, S, K];
    mask: [batch, K] bool; action: [batch] int32 (the winner of one further draw). Returns [batch]."""
    mask_s = tf.broadcast_to(mask[:, None, :], tf.shape(samples))
    winners = masked_argmax(samples, mask_s)  # [batch, S]
    wins = tf.reduce_sum(tf.cast(tf.equal(winners, action[:, None]), tf.float32), axis=-1)
    num_samples = tf.cast(tf.shape(samples)[1], tf.float32)
    return (1.0 + wins) / (num_samples + 1.0)
