"""What defines a policy: its algorithm, input specs, hyperparameters and reward rules.

One frozen record, written into every export's manifest and into Redis, read by the
service (to validate requests) and by the trainer (to join rewards).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Literal

import numpy as np

import bandits
from bandits.features import FeatureSchema, Preprocessing

NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")


class InvalidSpec(ValueError):
    """A policy definition's field is invalid; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


Aggregation = Literal["earliest", "sum"]


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    wait_seconds: float = 600.0
    """How long after a decision its reward may arrive; later rewards are kept but marked late."""
    default: float = 0.0
    """Reward assumed for a decision whose window closes without one."""
    aggregation: Aggregation = "earliest"
    """How repeated rewards for one decision combine: the first one, or their sum."""


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    publish_every_examples: int = 1000
    """The trainer publishes a checkpoint after this many new examples ..."""
    publish_every_seconds: float = 1.0
    """... or this long after its last publish, whichever comes first (if anything changed)."""
    session_timeout_seconds: float = 30.0
    """Sequential policies: a session quiet for this long is closed without a terminal transition."""
    auto_promote: bool = False
    """Every offline evaluation promotes the candidate when its DR lower bound beats the live
    version's DR estimate (without it, only evaluations that ask for it do)."""


@dataclasses.dataclass(frozen=True)
class PackedWidths:
    """Widths of a policy's packed inputs, as logged (bandits.features.FeatureSchema.pack)."""

    context: int
    """Numeric context values (a plain vector: its length)."""
    context_categorical: int = 0
    action: int = 0
    """Numeric values per candidate (0: a fixed set of actions)."""
    action_categorical: int = 0
    named_context: bool = False
    candidates: bool = False


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    name: str
    algorithm: str
    context_dim: int
    num_actions: int
    hyperparameters: dict[str, Any]
    """Every hyperparameter of the algorithm's config, defaults filled in."""
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    shadow_of: str | None = None
    """A served policy this one shadows: it scores that policy's every decision (logged, never
    served) and learns from that policy's log with importance weights."""
    features: list[dict[str, Any]] | None = None
    """The context's feature schema (bandits.features), or None for a plain vector of
    context_dim numbers. With a schema, context_dim is the encoded width."""
    action_feature_dim: int = 0
    """0: a fixed set of num_actions actions. Otherwise every /act brings its candidates, each
    with features encoded to this width, and num_actions is the most candidates per call."""
    action_features: list[dict[str, Any]] | None = None
    """The candidates' feature schema, or None for plain vectors of action_feature_dim numbers."""
    baseline: int | None = None
    """The baseline action (what the app would do without the policy): an action index, or for
    candidate sets a position in each request's actions (0, the first, as in Personalizer).
    Apprentice mode serves it; off-policy reports estimate its value beside the policy's."""
    mode: Literal["online", "apprentice"] = "online"
    """The mode the policy is created in (service.modes keeps the current one)."""

    @property
    def takes_candidates(self) -> bool:
        return self.action_feature_dim > 0

    @functools.cached_property
    def context_schema(self) -> FeatureSchema:
        if self.features is None:
            return FeatureSchema.vector(self.context_dim)
        return FeatureSchema.parse(self.features, "features")

    @functools.cached_property
    def action_schema(self) -> FeatureSchema | None:
        if not self.takes_candidates:
            return None
        if self.action_features is None:
            return FeatureSchema.vector(self.action_feature_dim)
        return FeatureSchema.parse(self.action_features, "action_features")

    @property
    def packed_widths(self) -> PackedWidths:
        context, actions = self.context_schema, self.action_schema
        return PackedWidths(
            context.numeric_width,
            context.categorical_width,
            0 if actions is None else actions.numeric_width,
            0 if actions is None else actions.categorical_width,
            named_context=context.named,
            candidates=actions is not None,
        )

    @property
    def layout(self) -> Literal["vector", "named", "candidates"]:
        """The exported signatures' inputs (exporter.savedmodel.INPUTS)."""
        if self.takes_candidates:
            return "candidates"
        return "named" if self.features is not None else "vector"

    def inputs(self) -> tuple[Any, ...]:
        """Everything that fixes what the model reads and scores: two specs with equal inputs
        can serve the same requests and learn from the same log (shadows, experiments,
        rollbacks, promotions)."""
        return (self.context_dim, self.num_actions, self.features, self.action_feature_dim, self.action_features)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {
            "reward": dataclasses.asdict(self.reward),
            "training": dataclasses.asdict(self.training),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicySpec:
        fields = dict(data)
        fields["reward"] = RewardConfig(**fields.get("reward", {}))
        fields["training"] = TrainingConfig(**fields.get("training", {}))
        return cls(**fields)

    def build_policy(self) -> bandits.BanditLearner:
        """A fresh, untrained policy object for this spec (its preprocessing included)."""
        return bandits.build(
            self.algorithm,
            self.context_dim,
            self.num_actions,
            self.hyperparameters,
            self.action_feature_dim,
            Preprocessing(self.context_schema, self.action_schema),
        )


def resolve(
    name: str,
    algorithm: str,
    context_dim: int,
    num_actions: int,
    hyperparameters: dict[str, Any],
    reward: RewardConfig,
    training: TrainingConfig | None = None,
    shadow_of: str | None = None,
    features: list[dict[str, Any]] | None = None,
    action_feature_dim: int = 0,
    action_features: list[dict[str, Any]] | None = None,
    baseline: int | None = None,
    mode: Literal["online", "apprentice"] = "online",
) -> PolicySpec:
    """Validates a policy definition and fills in the algorithm's defaults.

    With a feature schema (``features``, ``action_features``) the encoded widths replace
    ``context_dim`` and ``action_feature_dim``; a policy with either candidate argument takes
    candidate sets of at most ``num_actions``. Raises KeyError for an unknown algorithm (or
    one without a candidate-set form), bandits.InvalidHyperparameter for a bad hyperparameter,
    bandits.FeatureError for a bad schema and InvalidSpec for another bad field.
    """
    if features is not None:
        context_dim = FeatureSchema.parse(features, "features").width
    if action_features is not None:
        action_feature_dim = FeatureSchema.parse(action_features, "action_features").width
    if baseline is None and action_feature_dim > 0:
        baseline = 0
    if baseline is not None and not 0 <= baseline < num_actions:
        raise InvalidSpec("baseline", f"must be an action index in [0, {num_actions})")
    if mode == "apprentice" and baseline is None:
        raise InvalidSpec("baseline", "apprentice mode serves the baseline action; name one")
    policy_type = bandits.policy_type(algorithm, action_feature_dim > 0)
    if policy_type.sequential and features is not None and FeatureSchema.parse(features, "features").categorical:
        raise InvalidSpec("features", f"{algorithm} takes numeric features only")
    config = bandits.config_from_dict(policy_type.Config, hyperparameters)
    hyperparameters = dataclasses.asdict(config)
    training = training or TrainingConfig()
    return PolicySpec(
        name,
        algorithm,
        context_dim,
        num_actions,
        hyperparameters,
        reward,
        training,
        shadow_of,
        features,
        action_feature_dim,
        action_features,
        baseline,
        mode,
    )


def baseline_actions(baseline: int, masks: np.ndarray) -> np.ndarray:
    """[n] the action a baseline policy takes in each row: the baseline where the row allows it,
    else the first allowed action after it, else the first allowed one (how apprentice mode
    serves). masks: [n, K] bool with at least one True per row."""
    masks = np.asarray(masks, bool)
    later = masks & (np.arange(masks.shape[1]) >= baseline)
    return np.where(later.any(axis=1), later.argmax(axis=1), masks.argmax(axis=1))
