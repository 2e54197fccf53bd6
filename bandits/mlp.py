"""A multilayer perceptron with one reward output per action (or one output per candidate, for a
tower on a context and a candidate's features), and Adam, on plain tf.Variables.

No Keras: the weights and the optimizer's moments are tf.Variables of tf.Modules, so one
tf.train.Checkpoint of a policy holds them all and a SavedModel restores them by name.

Notation: hidden layers h_0 = x, h_i = f(h_{i-1} W_i + b_i) for i = 1..L; the representation
phi(x) = h_L; predicted rewards y_hat = phi(x) W_out + b_out, one column per action. For a
candidate tower the input is x = [context, candidate features] and there is one column.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from bandits.base import is_int, is_number, require

ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "relu": tf.nn.relu,
    "tanh": tf.nn.tanh,
    "elu": tf.nn.elu,
    "gelu": tf.nn.gelu,
    "swish": tf.nn.silu,
    "sigmoid": tf.nn.sigmoid,
    "softplus": tf.nn.softplus,
    "leaky_relu": tf.nn.leaky_relu,
}
"""Hidden-layer activations by the name a policy's config gives."""


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The fields every network-based config shares: the MLP, Adam, minibatches and the seed."""

    hidden_sizes: list[int] = dataclasses.field(default_factory=lambda: [64, 64])
    """Units of each hidden layer, input side first; the last one is the representation phi(x)."""
    activation: str = "relu"
    """Hidden-layer activation: relu, tanh, elu, gelu, swish, sigmoid, softplus or leaky_relu."""
    learning_rate: float = 1e-3
    """Adam's step size (beta_1 0.9, beta_2 0.999, epsilon 1e-8)."""
    batch_size: int = 64
    """Rows per minibatch, drawn uniformly with replacement from the replay ring."""
    buffer_size: int = 10_000
    """Replay ring capacity: it holds the last buffer_size rows."""
    training_steps: int = 100
    """Adam steps in each training round."""
    seed: int = 0
    """Seeds the initial weights and the minibatch draws."""

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, tuple):  # JSON gives a list; keep one form for equality
            object.__setattr__(self, "hidden_sizes", list(self.hidden_sizes))

    def validate(self) -> None:
        sizes = self.hidden_sizes
        require(
            isinstance(sizes, list) and 1 <= len(sizes) <= 8 and all(is_int(s) and 1 <= s <= 4096 for s in sizes),
            "hidden_sizes",
            "must be a list of 1 to 8 layer sizes, each an integer in [1, 4096]",
        )
        require(self.activation in ACTIVATIONS, "activation", f"must be one of {sorted(ACTIVATIONS)}")
        rate = self.learning_rate
        require(is_number(rate) and 0 < rate <= 1, "learning_rate", "must be a number in (0, 1]")
        require(is_int(self.batch_size) and 1 <= self.batch_size <= 4096, "batch_size", "must be in [1, 4096]")
        require(
            is_int(self.buffer_size) and 1 <= self.buffer_size <= 1_000_000,
            "buffer_size",
            "must be an integer in [1, 1000000]",
        )
        require(
            is_int(self.training_steps) and 0 <= self.training_steps <= 100_000,
            "training_steps",
            "must be an integer in [0, 100000]",
        )
        require(is_int(self.seed) and 0 <= self.seed < 2**63, "seed", "must be an integer in [0, 2^63)")


def parameter_count(sizes: Sequence[int]) -> int:
    """Weights and biases of an MLP whose layer widths (inputs first, outputs last) are ``sizes``."""
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))


class TrainingState(tf.Module):
    """Counters of a network policy's training (read-only for everyone but its update)."""

    def __init__(self) -> None:
        super().__init__(name="training_state")
        self.train_step = tf.Variable(0, dtype=tf.int64, name="train_step")
        """update calls, as for the linear policies (the export manifest reports it)."""
        self.last_loss = tf.Variable(float("nan"), dtype=tf.float32, name="last_loss")
        """Mean minibatch loss of the last training round (NaN before the first)."""

    def stats(self, optimizer: Adam) -> dict[str, Any]:
        """training_steps: Adam steps done; last_loss: mean minibatch loss of the last training
        round (None before the first)."""
        steps = int(optimizer.step.numpy())
        return {"training_steps": steps, "last_loss": float(self.last_loss.numpy()) if steps else None}


def glorot_uniform(fan_in: int, fan_out: int, seed: tf.Tensor) -> tf.Tensor:
    """[fan_in, fan_out] float32 weights ~ U(-l, l), l = sqrt(6 / (fan_in + fan_out)), from a
    stateless seed ([2] int64), so the same config always starts from the same network."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return tf.random.stateless_uniform([fan_in, fan_out], seed, -limit, limit, tf.float32, alg="philox")


class RewardNetwork(tf.Module):
    """An MLP from inputs [batch, d] to predicted rewards [batch, K]: d is the context width and
    K the number of actions, or, for a candidate tower, d = context + candidate width and K = 1."""

    def __init__(self, input_dim: int, num_outputs: int, hidden_sizes: Sequence[int], activation: str, seed: int):
        super().__init__(name="reward_network")
        self.activation = ACTIVATIONS[activation]
        sizes = [input_dim, *hidden_sizes]
        self.hidden_weights = []
        self.hidden_biases = []
        # Initial weights take seeds (seed, -1 - layer); minibatch draws take (seed, step >= 0).
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            seed_pair = tf.constant([seed, -1 - layer], tf.int64)
            self.hidden_weights.append(tf.Variable(glorot_uniform(fan_in, fan_out, seed_pair), name=f"w{layer}"))
            self.hidden_biases.append(tf.Variable(tf.zeros([fan_out]), name=f"b{layer}"))
        out_seed = tf.constant([seed, -1 - len(hidden_sizes)], tf.int64)
        self.output_weights = tf.Variable(glorot_uniform(sizes[-1], num_outputs, out_seed), name="w_out")
        self.output_bias = tf.Variable(tf.zeros([num_outputs]), name="b_out")
        self.representation_size = sizes[-1]

    @property
    def parameters(self) -> list[tf.Variable]:
        """Every trainable variable, in a fixed order (the optimizer's moments follow it)."""
        return [*self.hidden_weights, *self.hidden_biases, self.output_weights, self.output_bias]

    def representation(self, inputs: tf.Tensor) -> tf.Tensor:
        """phi(x): [batch, d] float32 -> the last hidden layer [batch, representation_size]."""
        hidden = inputs
        for weights, bias in zip(self.hidden_weights, self.hidden_biases, strict=True):
            hidden = self.activation(tf.matmul(hidden, weights) + bias)
        return hidden

    def predict(self, inputs: tf.Tensor) -> tf.Tensor:
        """[batch, d] float32 -> predicted reward of every output [batch, K]."""
        return tf.matmul(self.representation(inputs), self.output_weights) + self.output_bias


def weighted_squared_error(
    predictions: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor
) -> tf.Tensor:
    """mean_i w_i (y_hat_i[a_i] - r_i)^2: only the chosen action's output has a target.

    predictions: [n, K] float32, actions: [n] int32, rewards: [n], weights: [n] (importance
    weights: an example of weight w counts as w examples). Returns a float32 scalar.
    """
    chosen = tf.gather(predictions, actions, batch_dims=1)
    return tf.reduce_mean(weights * tf.square(chosen - rewards))


def adam_step(
    parameter: tf.Tensor,
    gradient: tf.Tensor,
    first_moment: tf.Tensor,
    second_moment: tf.Tensor,
    step: tf.Tensor,
    learning_rate: float,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One Adam update (Kingma & Ba, ICLR 2015, Algorithm 1) of one parameter tensor.

    parameter, gradient, first_moment (m), second_moment (v): the same shape, float32;
    step: t >= 1, float32. Returns the new (parameter, m, v).
    """
    m = beta_1 * first_moment + (1.0 - beta_1) * gradient
    v = beta_2 * second_moment + (1.0 - beta_2) * tf.square(gradient)
    m_hat = m / (1.0 - tf.pow(beta_1, step))  # bias corrections
    v_hat = v / (1.0 - tf.pow(beta_2, step))
    return parameter - learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon), m, v


class Adam(tf.Module):
    """Adam's state for a list of parameters: moments m and v per parameter and the step t."""

    def __init__(self, parameters: Sequence[tf.Variable], learning_rate: float) -> None:
        super().__init__(name="adam")
        self.learning_rate = learning_rate
        self.first_moments = [tf.Variable(tf.zeros_like(p), name=f"m{i}") for i, p in enumerate(parameters)]
        self.second_moments = [tf.Variable(tf.zeros_like(p), name=f"v{i}") for i, p in enumerate(parameters)]
        self.step = tf.Variable(0, dtype=tf.int64, name="step")

    def apply(self, parameters: Sequence[tf.Variable], gradients: Sequence[tf.Tensor]) -> None:
        """Assigns one Adam update to every parameter (inside the caller's tf.function)."""
        self.step.assign_add(1)
        step = tf.cast(self.step, tf.float32)
        for parameter, gradient, m, v in zip(
            parameters, gradients, self.first_moments, self.second_moments, strict=True
        ):
            new_parameter, new_m, new_v = adam_step(parameter, gradient, m, v, step, self.learning_rate)
            parameter.assign(new_parameter)
            m.assign(new_m)
            v.assign(new_v)
