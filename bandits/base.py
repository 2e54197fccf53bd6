"""The one small interface every algorithm implements.

A policy is a tf.Module with explicit specs (``context_dim``, ``num_actions``), a frozen
config of hyperparameters, and three methods:

* ``greedy(context, mask, seed)`` and ``collect(context, mask, seed)`` choose actions and
  return ``{"action": [batch] int32, "propensity": [batch] float32, "scores": [batch, K]
  float32}``. They never write a variable; all randomness comes from the per-row ``seed``.
* ``update(contexts, actions, rewards, weights)`` trains on a batch of examples.

The exporter turns greedy and collect into SavedModel signatures; nothing here does I/O.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import tensorflow as tf

Decision = dict[str, tf.Tensor]


class InvalidHyperparameter(ValueError):
    """A hyperparameter is unknown or out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON true would pass isinstance(value, int))."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def require(ok: bool, field: str, message: str) -> None:
    """Raises InvalidHyperparameter(field, message) unless ok."""
    if not ok:
        raise InvalidHyperparameter(field, message)


def config_from_dict(config_type: type, values: dict[str, Any]) -> Any:
    """Builds a frozen config dataclass from a plain dict, rejecting unknown names."""
    known = {f.name: f for f in dataclasses.fields(config_type)}
    for name in values:
        if name not in known:
            raise InvalidHyperparameter(name, f"unknown hyperparameter; known: {sorted(known)}")
    config = config_type(**values)
    config.validate()
    return config


class Policy(tf.Module, abc.ABC):
    """Base of every algorithm. Subclasses set ``algorithm`` and ``Config``."""

    algorithm: ClassVar[str]
    Config: ClassVar[type]
    sequential: ClassVar[bool] = False
    """True for policies of sequential decisions (dqn): /act needs a session_id, and the trainer
    learns from transitions (``update_transitions``) stitched from each session's decisions."""

    def __init__(self, context_dim: int, num_actions: int, config: Any) -> None:
        super().__init__(name=self.algorithm)
        self.context_dim = int(context_dim)
        self.num_actions = int(num_actions)
        self.config = config

    @abc.abstractmethod
    def greedy(self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> Decision:
        """The exploit-only choice. context: [batch, d] float32, mask: [batch, K] bool, seed: [batch] int64."""

    @abc.abstractmethod
    def collect(self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> Decision:
        """The exploring choice whose propensity is logged. Same shapes as ``greedy``."""

    @abc.abstractmethod
    def probabilities(self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """[batch, K] float32: the collect policy's probability of every action (exact, or
        estimated by sampling where the policy samples). Used for off-policy evaluation."""

    def greedy_probabilities(self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """[batch, K] float32: the greedy policy's distribution, one-hot on its action."""
        action = self.greedy(context, mask, seed)["action"]
        return tf.one_hot(action, self.num_actions, dtype=tf.float32)

    def compile(self) -> None:
        """Prepares anything the first update would otherwise build lazily (optional)."""

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any) -> int:
        """About how many bytes the policy's variables take (checked before one is built)."""
        return 4 * context_dim * num_actions

    def stats(self) -> dict[str, Any]:
        """Read-only training counters for observability (GET /policies/{name}); none by default."""
        return {}

    @abc.abstractmethod
    def update(self, contexts: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor) -> None:
        """Trains on n examples. contexts: [n, d], actions: [n] int32, rewards: [n], weights: [n]."""
