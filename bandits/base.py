"""The small interfaces every algorithm implements, and the named values they exchange.

A ``Policy`` is a tf.Module with explicit specs (``context_dim``, ``num_actions``), a frozen
config of hyperparameters, and the serving side:

* ``greedy(context, mask, seed)`` and ``collect(context, mask, seed)`` choose actions and
  return a ``Decision`` (action, propensity, scores). They never write a variable; all
  randomness comes from the per-row ``seed``.
* ``probabilities(context, mask, seed)``: the collect policy's whole distribution (for OPE).

A ``BanditLearner`` (every registered algorithm) also learns from ``Examples`` (context,
action, reward, weight): ``update_examples(examples)``. A ``SequentialLearner`` (dqn) learns
from ``Transitions`` (s, a, r, s', done, weight): ``update_transitions(transitions)``; its
examples are one-step episodes.

Policies that take candidate sets (``action_feature_dim`` > 0) score each candidate from its
own features: the choosing methods also take ``action_features`` ([batch, K, f] float32), K
varies per call (padding is masked out), and they learn from the chosen candidates' features
(``Examples.action_features`` [n, f]; ``actions`` is ignored). Their class says
``takes_candidates``. A fixed-action policy's examples carry [n, 0] action features.

``preprocessing`` (bandits.features) turns named feature values into the vectors these
methods read; it is part of the policy's variables, so exports and checkpoints carry it.

The exporter turns greedy and collect into SavedModel signatures; nothing here does I/O.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import tensorflow as tf

from bandits.features import FeatureSchema, Preprocessing


class Decision(NamedTuple):
    """What greedy and collect return for a batch of rows (as TF-Agents' PolicyStep). The
    exported signatures return it as a dict of these names (``._asdict()``)."""

    action: tf.Tensor
    """[batch] int32: the chosen action (or candidate position)."""
    propensity: tf.Tensor
    """[batch] float32: the probability with which the policy chose that action."""
    scores: tf.Tensor
    """[batch, K] float32: the scores the choice was made on."""


class Examples(NamedTuple):
    """n examples (a context, the action taken, its reward and importance weight)."""

    contexts: tf.Tensor
    """[n, d] float32: the encoded contexts."""
    actions: tf.Tensor
    """[n] int32: the actions taken (ignored by candidate policies)."""
    rewards: tf.Tensor
    """[n] float32."""
    weights: tf.Tensor
    """[n] float32: importance weights (an example of weight w counts as w examples)."""
    action_features: tf.Tensor
    """[n, f] float32: the chosen candidates' encoded features ([n, 0] for fixed actions)."""

    @classmethod
    def of(
        cls, contexts: Any, actions: Any, rewards: Any, weights: Any, action_features: Any | None = None
    ) -> Examples:
        """Columns (arrays or tensors) as tensors of the documented dtypes."""
        contexts = tf.convert_to_tensor(contexts, tf.float32)
        if action_features is None:
            action_features = tf.zeros([tf.shape(contexts)[0], 0], tf.float32)
        return cls(
            contexts,
            tf.convert_to_tensor(actions, tf.int32),
            tf.convert_to_tensor(rewards, tf.float32),
            tf.convert_to_tensor(weights, tf.float32),
            tf.convert_to_tensor(action_features, tf.float32),
        )


class Transitions(NamedTuple):
    """n transitions (s, a, r, s', done) of sequential decisions, with importance weights."""

    contexts: tf.Tensor
    """[n, d] float32: s."""
    actions: tf.Tensor
    """[n] int32: a."""
    rewards: tf.Tensor
    """[n] float32: r."""
    next_contexts: tf.Tensor
    """[n, d] float32: s' (unused where done)."""
    dones: tf.Tensor
    """[n] float32: 1 where s' is terminal (its value is not counted), else 0."""
    weights: tf.Tensor
    """[n] float32: importance weights."""

    @classmethod
    def of(cls, contexts: Any, actions: Any, rewards: Any, next_contexts: Any, dones: Any, weights: Any) -> Transitions:
        """Columns as tensors of the documented dtypes; dones may be bool or 0/1."""
        return cls(
            tf.convert_to_tensor(contexts, tf.float32),
            tf.convert_to_tensor(actions, tf.int32),
            tf.convert_to_tensor(rewards, tf.float32),
            tf.convert_to_tensor(next_contexts, tf.float32),
            tf.cast(tf.convert_to_tensor(dones), tf.float32),
            tf.convert_to_tensor(weights, tf.float32),
        )


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


def validate_ridge(ridge: Any) -> None:
    """The prior precision of every ridge regression here: > 0."""
    require(is_number(ridge) and ridge > 0, "ridge", "must be > 0")


class Policy(tf.Module, abc.ABC):
    """The serving side of every algorithm: choosing actions. Subclasses set ``algorithm`` and
    ``Config``. ``action_features`` is given to candidate policies only."""

    algorithm: ClassVar[str]
    Config: ClassVar[type]
    sequential: ClassVar[bool] = False
    """True for policies of sequential decisions (SequentialLearner): /act needs a session_id,
    and the trainer learns from transitions stitched from each session's decisions."""

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
        action = self.greedy(context, mask, seed, action_features).action
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


class BanditLearner(Policy):
    """A policy that learns from examples: every registered algorithm."""

    @abc.abstractmethod
    def update_examples(self, examples: Examples) -> None:
        """Trains on n encoded examples (see Examples)."""

    def update(
        self, contexts: Any, actions: Any, rewards: Any, weights: Any, action_features: Any | None = None
    ) -> None:
        """update_examples on columns: contexts [n, d], actions [n], rewards [n], weights [n] and,
        for candidate policies, the chosen candidates' action_features [n, f]."""
        assert action_features is not None or not self.takes_candidates, (
            "a candidate policy learns from the chosen candidates' features"
        )
        self.update_examples(Examples.of(contexts, actions, rewards, weights, action_features))

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


class SequentialLearner(BanditLearner):
    """A policy of sequential decisions that learns from transitions (s, a, r, s', done)."""

    sequential: ClassVar[bool] = True

    @abc.abstractmethod
    def update_transitions(self, transitions: Transitions) -> None:
        """Trains on n encoded transitions (see Transitions)."""

    def update_examples(self, examples: Examples) -> None:
        """One-step episodes: every example a terminal transition (s' unused)."""
        contexts = examples.contexts
        dones = tf.ones_like(examples.rewards)
        self.update_transitions(
            Transitions(contexts, examples.actions, examples.rewards, tf.zeros_like(contexts), dones, examples.weights)
        )

    def learn_transitions(
        self, contexts: Any, actions: Any, rewards: Any, next_contexts: Any, dones: Any, weights: Any
    ) -> None:
        """Trains on n transitions as logged (packed numeric values: sequential policies take
        numeric features only): encodes s and s' with the current preprocessing, updates, then
        adds the contexts to the normalisation statistics."""
        encode = self.preprocessing.context.encode
        self.update_transitions(
            Transitions.of(encode(contexts, None), actions, rewards, encode(next_contexts, None), dones, weights)
        )
        self.preprocessing.observe(contexts)
