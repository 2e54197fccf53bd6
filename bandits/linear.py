"""Per-action linear state shared by LinUCB, linear Thompson sampling, their candidate-set
forms (one regression on joint features) and neural_linear's last layer."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from bandits import linalg
from bandits.base import BanditLearner, Examples


class LinearState(tf.Module):
    """Learned state of K independent ridge regressions over d-dimensional features.

    gram [K, d, d] float64 and reward_sums [K, d] float64 are the exact sufficient
    statistics (A_k and b_k); counts [K] float64 the (weighted) examples per action;
    theta [K, d] and gram_inverse [K, d, d] are their float32 solution, used for serving.
    """

    def __init__(self, context_dim: int, num_actions: int, ridge: float) -> None:
        super().__init__(name="linear_state")
        eye = tf.eye(context_dim, batch_shape=[num_actions], dtype=tf.float64)
        self.gram = tf.Variable(ridge * eye, name="gram")
        self.reward_sums = tf.Variable(tf.zeros([num_actions, context_dim], tf.float64), name="reward_sums")
        self.counts = tf.Variable(tf.zeros([num_actions], tf.float64), name="counts")
        self.theta = tf.Variable(tf.zeros([num_actions, context_dim], tf.float32), name="theta")
        self.gram_inverse = tf.Variable(tf.cast(eye / ridge, tf.float32), name="gram_inverse")
        self.train_step = tf.Variable(0, dtype=tf.int64, name="train_step")


@tf.function(
    input_signature=[
        tf.TensorSpec([None, None, None], tf.float64),
        tf.TensorSpec([None, None], tf.float64),
        tf.TensorSpec([None], tf.float64),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.float32),
    ]
)
def _updated(
    gram: tf.Tensor,
    reward_sums: tf.Tensor,
    counts: tf.Tensor,
    features: tf.Tensor,
    regressions: tf.Tensor,
    rewards: tf.Tensor,
    weights: tf.Tensor,
) -> tuple[tf.Tensor, ...]:
    """The statistics plus n examples, and their float32 solution, in one compiled graph
    (outside the Module, so exports do not carry training ops). features: [n, d],
    regressions: [n] int32 (which of the K regressions each example updates)."""
    added = linalg.per_action_statistics(features, regressions, rewards, weights, tf.shape(gram)[0])
    gram, reward_sums, counts = gram + added.gram, reward_sums + added.reward_sums, counts + added.counts
    theta, gram_inverse = linalg.ridge_solution(gram, reward_sums)
    return gram, reward_sums, counts, tf.cast(theta, tf.float32), tf.cast(gram_inverse, tf.float32)


def trace_update() -> None:
    """Traces the update graph now (about a second), not on the first batch of examples."""
    _updated.get_concrete_function()


def apply_examples(
    state: LinearState, features: tf.Tensor, regressions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor
) -> None:
    """Adds n examples to a linear state and re-solves. features: [n, d] (the regressions'
    inputs), regressions: [n] int32 (which of the K regressions), rewards, weights: [n]."""
    s = state
    if features.shape[0]:
        gram, reward_sums, counts, theta, gram_inverse = _updated(
            s.gram.read_value(),  # tensors, not variables: one trace serves every shape
            s.reward_sums.read_value(),
            s.counts.read_value(),
            features,
            regressions,
            rewards,
            weights,
        )
        s.gram.assign(gram)
        s.reward_sums.assign(reward_sums)
        s.counts.assign(counts)
        s.theta.assign(theta)
        s.gram_inverse.assign(gram_inverse)
    s.train_step.assign_add(1)


class LinearPolicy(BanditLearner):
    """Shared update of the linear algorithms: exact sufficient statistics, then a fresh solve."""

    def __init__(self, context_dim: int, num_actions: int, config: Any, **inputs: Any) -> None:
        super().__init__(context_dim, num_actions, config, **inputs)
        self.state = LinearState(context_dim, num_actions, config.ridge)

    def update_examples(self, examples: Examples) -> None:
        apply_examples(self.state, examples.contexts, examples.actions, examples.rewards, examples.weights)

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """gram (float64) and gram_inverse (float32): K d x d matrices each, twice in an update."""
        return 2 * 12 * num_actions * context_dim * context_dim

    def compile(self) -> None:
        trace_update()

    def mean_and_width(self, context: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """[batch, K] posterior mean and confidence width for context [batch, d]."""
        return linalg.mean_and_width(context, self.state.theta, self.state.gram_inverse)
