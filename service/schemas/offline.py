"""Offline jobs (admin): retrain a candidate, evaluate it off-policy, promote it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from service.schemas.common import examples

LogTime = Annotated[StrictInt, Field(ge=0, le=2**53)]


class LogRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since_ms: LogTime | None = None
    """Only decisions logged at or after this Unix time in ms (Redis time of their entry)."""
    until_ms: LogTime | None = None
    """Only decisions logged before this Unix time in ms."""


class RetrainRequest(LogRange):
    model_config = examples({"from_live": False}, {"from_live": True, "since_ms": 0}, forbid_extra=True)

    from_live: StrictBool = False
    """Start from the live version's variables instead of a fresh model."""


class RetrainResponse(BaseModel):
    model_config = examples(
        {
            "policy": "homepage",
            "candidate_version": "4.0",
            "base_version": "3.117",
            "from_live": False,
            "examples": 120000,
            "rewarded": 80211,
        }
    )

    policy: str
    candidate_version: str
    """The new export '<export>.0', recorded as the candidate; not served until promoted."""
    base_version: str
    """The live version whose spec (and, with from_live, variables) the retrain started from."""
    from_live: bool
    examples: int
    """Decisions trained on."""
    rewarded: int
    """Of those, how many had a reward (the others learned the policy's default)."""


class EvaluateRequest(LogRange):
    model_config = examples({}, {"since_ms": 1795254571083, "auto_promote": True}, forbid_extra=True)

    auto_promote: StrictBool = False
    """Promote the candidate if its doubly robust lower bound beats the live version's estimate."""
    greedy: StrictBool = False
    """Evaluate the greedy (exploit-only) policies instead of the collect ones."""


class Interval(BaseModel):
    value: float | None
    low: float | None
    """null when the estimate is undefined in every bootstrap resample."""
    high: float | None


class OffPolicyEstimates(BaseModel):
    estimates: dict[str, Interval]
    """By estimator: ipw, snipw, dm, dr, sndr; low/high are a 95% bootstrap interval."""
    effective_sample_size: float
    max_importance_weight: float


def _estimates(value: float, low: float, high: float, effective_sample_size: float) -> dict[str, object]:
    """An example of OffPolicyEstimates."""
    return {
        "estimates": {"dr": {"value": value, "low": low, "high": high}},
        "effective_sample_size": effective_sample_size,
        "max_importance_weight": 76.0,
    }


class EvaluateResponse(BaseModel):
    model_config = examples(
        {
            "policy": "homepage",
            "examples": 10000,
            "rewarded": 10000,
            "candidate_version": "4.0",
            "live_version": "3.117",
            "logging_policy": {"value": 0.0038, "low": 0.0026, "high": 0.005},
            "candidate": _estimates(0.0047, 0.0031, 0.0064, 812.5),
            "live": _estimates(0.0036, 0.0021, 0.0052, 640.2),
            "promoted_version": None,
        }
    )

    policy: str
    examples: int
    rewarded: int
    candidate_version: str
    live_version: str
    """The live version when evaluated (before any promotion)."""
    logging_policy: Interval
    """On-policy value of the logged traffic: mean reward with a normal 95% interval."""
    candidate: OffPolicyEstimates
    live: OffPolicyEstimates
    baseline: OffPolicyEstimates | None = None
    """Always taking the policy's baseline action (when it names one; for candidate sets the
    first candidate), estimated on the same log with the same reward model."""
    promoted_version: str | None
    """With auto_promote: the new live version if the candidate was promoted, else null."""


class PromoteRequest(BaseModel):
    model_config = examples({}, {"version": "4.0"}, forbid_extra=True)

    version: Annotated[str, Field(pattern=r"^[0-9]{1,9}\.0$")] | None = None
    """Promote only if this is still the candidate (guards against a newer, unevaluated one)."""
