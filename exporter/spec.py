"""What defines a policy: its algorithm, input specs, hyperparameters and reward rules.

One frozen record, written into every export's manifest and into Redis, read by the
service (to validate requests) and by the trainer (to join rewards).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

import bandits

NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicySpec:
        fields = dict(data)
        fields["reward"] = RewardConfig(**fields.get("reward", {}))
        fields["training"] = TrainingConfig(**fields.get("training", {}))
        return cls(**fields)

    def build_policy(self) -> bandits.Policy:
        """A fresh, untrained policy object for this spec."""
        return bandits.build(self.algorithm, self.context_dim, self.num_actions, self.hyperparameters)


def resolve(
    name: str,
    algorithm: str,
    context_dim: int,
    num_actions: int,
    hyperparameters: dict[str, Any],
    reward: RewardConfig,
    training: TrainingConfig | None = None,
    shadow_of: str | None = None,
) -> PolicySpec:
    """Validates a policy definition and fills in the algorithm's defaults.

    Raises KeyError for an unknown algorithm and bandits.InvalidHyperparameter for a bad
    hyperparameter.
    """
    policy_type = bandits.ALGORITHMS[algorithm]
    config = bandits.config_from_dict(policy_type.Config, hyperparameters)
    hyperparameters = dataclasses.asdict(config)
    training = training or TrainingConfig()
    return PolicySpec(name, algorithm, context_dim, num_actions, hyperparameters, reward, training, shadow_of)
