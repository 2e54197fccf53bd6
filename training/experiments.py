"""Experiments that replace fixed A/B splits: allocation and report math (pure, numpy only).

An experiment routes each /act call to one of its variants, each served by a policy:
  * "fixed": by a stable salted hash of unit_id, so a unit keeps its variant across calls,
    restarts and replicas; the variant's probability is its weight share;
  * "thompson": a Thompson-sampling allocator over the variants' observed rewards decides
    per call; the probability of the chosen variant is estimated by sampling.
The overall propensity of a logged action is variant probability x action probability.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Literal

import numpy as np

Allocation = Literal["fixed", "thompson"]
Status = Literal["running", "paused", "ended"]
ALLOCATION_DRAWS = 1000


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    policy: str
    weight: float


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    allocation: Allocation
    control: str
    """The variant lifts are measured against; paused and ended experiments serve only it."""
    salt: str
    """Mixed into the unit hash, so two experiments split the same units independently."""
    status: Status = "running"
    created_ms: int = 0

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        fields = dict(data)
        fields["variants"] = tuple(Variant(**v) for v in fields["variants"])
        return cls(**fields)


def unit_position(salt: str, unit_id: str) -> float:
    """A unit's stable place in [0, 1): the first 8 bytes of SHA-256(salt:unit_id)."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_fixed(experiment: Experiment, unit_id: str) -> tuple[Variant, float]:
    """The unit's variant under the weights, and that variant's probability (its weight share)."""
    total = sum(v.weight for v in experiment.variants)
    point = unit_position(experiment.salt, unit_id) * total
    cumulative = 0.0
    for variant in experiment.variants:
        cumulative += variant.weight
        if point < cumulative:
            return variant, variant.weight / total
    last = experiment.variants[-1]
    return last, last.weight / total


def posterior(stats: dict[str, tuple[float, float, float]], variant: str) -> tuple[float, float]:
    """Mean and standard deviation of a variant's mean reward (normal approximation, with one
    pseudo-observation of reward 0 and variance 1 so that an unseen variant is explored).
    stats: {variant: (count, sum, sum of squares) of its rewards} (eventlog.keys.variant_stats)."""
    n, total, squares = stats.get(variant, (0.0, 0.0, 0.0))
    variance = max(squares / n - (total / n) ** 2, 1e-4) if n > 1 else 1.0
    return total / (n + 1.0), math.sqrt(variance / (n + 1.0))


def assign_thompson(
    experiment: Experiment, stats: dict[str, tuple[float, float, float]], seed: int
) -> tuple[Variant, float]:
    """One posterior draw per variant decides; the chosen variant's probability is the share of
    ALLOCATION_DRAWS further draws it wins, counting the decisive one: (1 + wins) / (draws + 1)."""
    params = np.array([posterior(stats, v.name) for v in experiment.variants])
    rng = np.random.default_rng(seed)
    draws = rng.normal(params[:, 0], params[:, 1], size=(ALLOCATION_DRAWS + 1, len(params)))
    chosen = int(np.argmax(draws[0]))
    wins = int((np.argmax(draws[1:], axis=1) == chosen).sum())
    return experiment.variants[chosen], (1.0 + wins) / (ALLOCATION_DRAWS + 1.0)


# -- the report ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MeanEstimate:
    n: int
    mean: float | None
    low: float | None
    high: float | None


def mean_interval(rewards: np.ndarray, z: float = 1.959964) -> MeanEstimate:
    """Mean with a normal 95% interval. rewards: [n]."""
    n = len(rewards)
    if n == 0:
        return MeanEstimate(0, None, None, None)
    mean = float(rewards.mean())
    half = z * float(rewards.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return MeanEstimate(n, mean, mean - half, mean + half)


def lift(treatment: np.ndarray, control: np.ndarray, z: float = 1.959964) -> dict[str, float | None]:
    """Difference of means with a Welch 95% interval and a two-sided p-value (normal approximation)."""
    if len(treatment) < 2 or len(control) < 2:
        return {"difference": None, "low": None, "high": None, "relative": None, "p_value": None}
    difference = float(treatment.mean() - control.mean())
    se = math.sqrt(treatment.var(ddof=1) / len(treatment) + control.var(ddof=1) / len(control))
    p_value = math.erfc(abs(difference) / se / math.sqrt(2)) if se > 0 else (0.0 if difference else 1.0)
    relative = difference / float(control.mean()) if control.mean() != 0 else None
    return {
        "difference": difference,
        "low": difference - z * se,
        "high": difference + z * se,
        "relative": relative,
        "p_value": p_value,
    }
