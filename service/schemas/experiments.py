"""/experiments: definitions, changes, what GET shows, and the report."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from service.schemas.common import PolicyName, examples

Weight = Annotated[StrictFloat, Field(gt=0, le=1e6)]


class VariantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PolicyName
    policy: PolicyName
    weight: Weight = 1.0
    """Share of units (fixed allocation); ignored by the Thompson allocator."""


EXAMPLE: dict[str, Any] = {
    "name": "homepage-ab",
    "variants": [
        {"name": "incumbent", "policy": "homepage", "weight": 0.8},
        {"name": "candidate", "policy": "homepage-v2", "weight": 0.2},
    ],
    "allocation": "fixed",
    "control": "incumbent",
}


class ExperimentCreate(BaseModel):
    model_config = examples(EXAMPLE, forbid_extra=True)

    name: PolicyName
    variants: Annotated[list[VariantSettings], Field(min_length=2, max_length=16)]
    allocation: Literal["fixed", "thompson"] = "fixed"
    control: PolicyName
    """The variant the others are compared with; paused or ended experiments serve only it."""


class ExperimentPatch(BaseModel):
    model_config = examples({"status": "paused"}, {"weights": {"candidate": 0.5}}, forbid_extra=True)

    status: Literal["running", "paused", "ended"] | None = None
    weights: dict[str, Weight] | None = None
    """New weights by variant name (fixed allocation)."""


class ExperimentInfo(BaseModel):
    model_config = examples(
        EXAMPLE
        | {
            "status": "running",
            "created_ms": 1795254571083,
            "changes": [{"ts_ms": 1795254571083, "change": "created"}],
        }
    )

    name: str
    variants: list[dict[str, Any]]
    allocation: str
    control: str
    status: str
    created_ms: int
    changes: list[dict[str, Any]]
    """Every change with its time, oldest first."""


class ExperimentReport(BaseModel):
    model_config = examples(
        {
            "experiment": "homepage-ab",
            "status": "running",
            "variants": {
                "incumbent": {
                    "policy": "homepage",
                    "decisions": 800,
                    "completed": 790,
                    "mean_reward": {"n": 790, "mean": 0.11, "low": 0.09, "high": 0.13},
                    "lift": None,
                    "off_policy": {
                        "n": 1000,
                        "estimates": {"snipw": {"value": 0.12, "low": 0.1, "high": 0.14}},
                    },
                }
            },
        }
    )

    experiment: str
    status: str
    variants: dict[str, dict[str, Any]]
    """Per variant: decisions, completed (reward known or window closed), mean reward with a 95%
    interval, lift against the control (difference, interval, relative, p-value) and the
    off-policy estimate of its policy on all the experiment's logged traffic."""
    baseline: dict[str, Any] | None = None
    """When the control policy names a baseline action: {action, off_policy}, the off-policy
    estimate of always taking it on the same traffic (what the app would get without a bandit)."""
