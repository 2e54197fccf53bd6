"""Pure linear-bandit math shared by LinUCB and linear Thompson sampling.

Notation (Li et al. 2010; Agrawal & Goyal 2013), per action k:
    A_k = ridge * I + sum_i x_i x_i^T     (``gram``)
    b_k = sum_i r_i x_i                   (``reward_sums``)
    theta_k = A_k^{-1} b_k                (ridge-regression estimate)
The sufficient statistics are kept in float64 so that any number of updates, in any
batching, gives the closed form to float tolerance; the serving tensors are float32.
"""

from __future__ import annotations

import tensorflow as tf


def accumulate(
    gram: tf.Tensor,
    reward_sums: tf.Tensor,
    counts: tf.Tensor,
    contexts: tf.Tensor,
    actions: tf.Tensor,
    rewards: tf.Tensor,
    weights: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Adds n weighted examples to the sufficient statistics.

    gram: [K, d, d] float64, reward_sums: [K, d] float64, counts: [K] float64.
    contexts: [n, d], actions: [n] int32, rewards: [n], weights: [n] (importance weights,
    1 for on-policy examples). Returns the new (gram, reward_sums, counts).
    """
    num_actions = tf.shape(gram)[0]
    x = tf.cast(contexts, tf.float64)
    w = tf.cast(weights, tf.float64)
    outer = (w[:, None, None] * x[:, :, None]) * x[:, None, :]  # [n, d, d]: w x x^T per example
    # Summed per action without a one-hot: n d^2 work instead of n K d^2.
    gram = gram + tf.math.unsorted_segment_sum(outer, actions, num_actions)
    weighted_rewards = (w * tf.cast(rewards, tf.float64))[:, None] * x  # [n, d]
    reward_sums = reward_sums + tf.math.unsorted_segment_sum(weighted_rewards, actions, num_actions)
    counts = counts + tf.math.unsorted_segment_sum(w, actions, num_actions)
    return gram, reward_sums, counts


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


def sampled_argmax_distribution(
    mean: tf.Tensor, width: tf.Tensor, scale: float, mask: tf.Tensor, noise: tf.Tensor
) -> tf.Tensor:
    """Share of posterior draws each action wins. mean, width: [batch, K]; mask: [batch, K] bool;
    noise: [batch, S, K] standard normal. Returns [batch, K] float32 summing to 1 per row."""
    return argmax_distribution(mean[:, None, :] + scale * width[:, None, :] * noise, mask)


def sampled_argmax_frequency(
    mean: tf.Tensor, width: tf.Tensor, scale: float, mask: tf.Tensor, noise: tf.Tensor, action: tf.Tensor
) -> tf.Tensor:
    """Estimated probability that a posterior draw picks ``action``.

    mean, width: [batch, K]; mask: [batch, K] bool; noise: [batch, S, K] standard normal;
    action: [batch] int32, itself the winner of one further draw. Returns [batch] float32,
    (1 + wins) / (S + 1): the decisive draw counts as one sample, so the estimate is never 0.
    """
    return argmax_frequency(mean[:, None, :] + scale * width[:, None, :] * noise, mask, action)


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
