"""POST /act: the request (a context, optionally candidates) and the decision it gets."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from service.schemas.common import MAX_VECTOR, EventId, PolicyName, check_float32, examples, vector_or_named

CandidateId = Annotated[str, Field(min_length=1, max_length=128)]


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: CandidateId
    """The candidate's id (an item, an article); the response's ``action`` when it is chosen."""
    features: vector_or_named(MAX_VECTOR, 0)  # type: ignore[valid-type]
    """Its features: a vector of the policy's action_feature_dim numbers, or {name: value}
    under the policy's action_features schema. (Their float32 range is checked for all
    candidates at once when the request is validated against the policy.)"""


class ActRequest(BaseModel):
    model_config = examples(
        {
            "policy": "demo",
            "context": [0.1, -0.3, 1.2, 0.0, 0.5, -1.1, 0.7, 0.2, 0.0, 0.4, -0.2, 0.9, 1.0, -0.5, 0.3, 0.1],
            "mask": [True, True, False, True, True, True, True, True, True, True],
            "unit_id": "user-42",
        },
        forbid_extra=True,
    )

    policy: PolicyName | None = None
    """The policy to decide with; give this or ``experiment``."""
    experiment: PolicyName | None = None
    """An experiment that picks the variant (and so the policy) for this call."""
    context: vector_or_named(MAX_VECTOR, 1)  # type: ignore[valid-type]
    """The context: a vector of the policy's context_dim numbers, or {name: value} for a policy
    with a feature schema (missing optional features take their declared defaults)."""
    actions: Annotated[list[Candidate], Field(min_length=1, max_length=MAX_VECTOR)] | None = None
    """The candidates to choose from, for a policy that takes candidate sets (1 to its
    max_candidates); the response's ``action`` is then the chosen candidate's id."""
    excluded: Annotated[list[CandidateId | StrictInt], Field(max_length=MAX_VECTOR)] | None = None
    """Actions not allowed in this call: candidate ids, or action indices for a policy with a
    fixed set of actions. At least one action must remain."""
    mask: Annotated[list[StrictBool], Field(min_length=1, max_length=MAX_VECTOR)] | None = None
    """Allowed actions (true = allowed); length num_actions; at least one true. Default: all.
    Fixed sets of actions only (candidate sets use ``excluded``)."""
    unit_id: Annotated[str, Field(max_length=256)] | None = None
    """The user or unit the decision is for (logged; used by experiments)."""
    event_id: EventId | None = None
    """Makes the call idempotent: a repeated event_id returns the first decision and logs nothing."""
    session_id: EventId | None = None
    """The episode this decision is a step of; required by sequential policies (dqn)."""
    greedy: StrictBool = False
    """Serve the greedy (exploit-only) policy instead of the exploring collect policy."""

    _float32 = field_validator("context")(lambda v: check_float32(v) if isinstance(v, list) else v)

    @model_validator(mode="after")
    def _one_target(self) -> ActRequest:
        if (self.policy is None) == (self.experiment is None):
            raise ValueError("give exactly one of policy and experiment")
        return self


class ActResponse(BaseModel):
    model_config = examples(
        {
            "event_id": "6f1c2a9e0b7d4c55a3f1e2d3c4b5a697",
            "action": 3,
            "propensity": 0.955,
            "policy": "demo",
            "version": "1.0",
            "scores": [0.1, 0.0, 0.2, 0.9, 0.1, 0.0, 0.3, 0.2, 0.1, 0.0],
        }
    )

    event_id: str
    action: int | str
    """Index of the chosen action, or for a candidate set the chosen candidate's id."""
    action_index: int | None = None
    """Candidate sets: the chosen candidate's position in the request's ``actions``."""
    propensity: float
    """Probability with which this action was chosen for this context: the policy's action
    probability, times the variant's probability when an experiment routed the call."""
    policy: str
    version: str
    """'<export>.<checkpoint>': exactly the variables that produced this decision."""
    scores: list[float]
    """The policy's score of every action or candidate, in request order (UCB, posterior mean
    or sampled score)."""
    experiment: str | None = None
    variant: str | None = None
    variant_probability: float | None = None
    """Present when an experiment routed the call."""
    mode: str | None = None
    """"apprentice" when the policy is in apprentice mode: ``action`` is its baseline."""
