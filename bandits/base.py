"""The one small interface every algorithm implements.

A policy is a tf.Module with explicit specs (``context_dim``, ``num_actions``), a frozen
config of hyperparameters, and three methods:

* ``greedy(context, mask, seed)`` and ``collect(context, mask, seed)`` choose actions and
  return ``{"action": [batch] int32, "propensity": [batch] float32, "scores": [batch, K]
  float32}``. They never write a variable; all randomness comes from the per-row ``seed``.
* ``update(contexts, actions, rewards, weights)`` trains on a batch of examples.

Policies that take candidate sets (``action_feature_dim`` > 0) score each candidate from its
own features: every method also takes ``action_features`` ([batch, K, f] float32 when
choosing, the chosen candidate's [n, f] when updating), K varies per call (padding is masked
out), and ``actions`` in ``update`` is ignored. Their class says ``takes_candidates``.

``preprocessing`` (bandits.features) turns named feature values into the vectors these
methods read; it is part of the policy's variables, so exports and checkpoints carry it.

The exporter turns greedy and collect into SavedModel signatures; nothing here does I/O.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import tensorflow as tf

from bandits.features import FeatureSchema, Preprocessing

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

    takes_candidates: ClassVar[bool] = False
    """True for the shared-parameter forms that score per-request candidate sets."""

    def __init__(
        self,
        context_dim: int,
        num_actions: int,
        config: Any,
        action_feature_dim: int = 0,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        """context_dim and action_feature_dim are the encoded widths the model reads; num_actions
        is K (the most candidates per call for candidate policies)."""
        super().__init__(name=self.algorithm)
        self.context_dim = int(context_dim)
        self.num_actions = int(num_actions)
        self.action_feature_dim = int(action_feature_dim)
        self.config = config
        if preprocessing is None:
            actions = FeatureSchema.vector(action_feature_dim) if self.takes_candidates else None
            preprocessing = Preprocessing(FeatureSchema.vector(context_dim), actions)
        assert preprocessing.context_width == self.context_dim and preprocessing.action_width == self.action_feature_dim
        self.preprocessing = preprocessing

    @abc.abstractmethod
    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        """The exploit-only choice. context: [batch, d] float32, mask: [batch, K] bool, seed: [batch] int64,
        action_features: [batch, K, f] float32 (candidate policies only)."""

    @abc.abstractmethod
    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        """The exploring choice whose propensity is logged. Same shapes as ``greedy``."""

    @abc.abstractmethod
    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        """[batch, K] float32: the collect policy's probability of every action (exact, or
        estimated by sampling where the policy samples). Used for off-policy evaluation."""

    def greedy_probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        """[batch, K] float32: the greedy policy's distribution, one-hot on its action."""
        action = self.greedy(context, mask, seed, action_features)["action"]
        return tf.one_hot(action, tf.shape(mask)[1], dtype=tf.float32)

    def compile(self) -> None:
        """Prepares anything the first update would otherwise build lazily (optional)."""

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """About how many bytes the policy's variables take (checked before one is built)."""
        return 4 * context_dim * num_actions

    def stats(self) -> dict[str, Any]:
        """Read-only training counters for observability (GET /policies/{name}); none by default."""
        return {}

    def learn(
        self,
        contexts: Any,
        actions: Any,
        rewards: Any,
        weights: Any,
        context_categorical: Any = None,
        action_features: Any = None,
        action_categorical: Any = None,
    ) -> None:
        """Trains on n examples as logged (packed, bandits.features): encodes them with the
        current preprocessing, updates, then adds their numeric values to the normalisation
        statistics. contexts: [n, n_numeric]; action_features: [n, n_a] the chosen candidates'."""
        context, candidates = self.preprocessing.encode(
            contexts, context_categorical, action_features, action_categorical
        )
        self.update(context, actions, rewards, weights, candidates)
        self.preprocessing.observe(contexts, action_features)

    @abc.abstractmethod
    def update(
        self,
        contexts: tf.Tensor,
        actions: tf.Tensor,
        rewards: tf.Tensor,
        weights: tf.Tensor,
        action_features: tf.Tensor | None = None,
    ) -> None:
        """Trains on n examples. contexts: [n, d], actions: [n] int32, rewards: [n], weights: [n],
        action_features: [n, f] the chosen candidates' (candidate policies only)."""
