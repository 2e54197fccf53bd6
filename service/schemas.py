"""Request and response bodies, one pydantic model per direction."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.spec import NAME_PATTERN

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_VECTOR = 4096

PolicyName = Annotated[str, Field(pattern=NAME_PATTERN.pattern, description="A policy name, [a-z0-9_-]{1,64}.")]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
EventId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="Client-chosen id, [A-Za-z0-9_.:-]{1,128}.")
]


HyperText = Annotated[str, Field(max_length=64)]
HyperList = Annotated[list[Annotated[StrictInt, Field(ge=1, le=4096)]], Field(max_length=16)]

Model = TypeVar("Model", bound=BaseModel)


class Problem(BaseModel):
    field: str
    problem: str
    type: str


class ErrorBody(BaseModel):
    """The one shape of every error the API returns."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid_input",
                    "message": "context: expected 16 values for policy 'demo', got 3",
                    "field": "context",
                    "retryable": False,
                }
            ]
        }
    )

    error: str
    """A stable code: invalid_input, not_found, conflict, late_reward, unauthorized, forbidden,
    rate_limited, limit_reached, body_too_large, unavailable, http_error."""
    message: str
    """'<field>: <problem>'."""
    field: str | None
    retryable: bool
    """True when the same request may succeed later (503, 429)."""
    problems: list[Problem] | None = None
    """Every validation problem (422 only)."""


_COMMON_ERRORS = {
    401: "Missing or unknown key",
    403: "The key lacks the route's scope or may not use the policy",
    413: "Body larger than BANDIT_MAX_BODY_BYTES",
    422: "Invalid input; `field` names it",
    429: "Rate limit of the key exceeded (Retry-After)",
    503: "Event log unavailable and nothing could be done (Retry-After when the spool is full)",
}


def error_responses(specific: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: the errors every route can give, plus its own."""
    described = _COMMON_ERRORS | (specific or {})
    return {code: {"model": ErrorBody, "description": text} for code, text in sorted(described.items())}


def parse_body(model: type[Model], raw: bytes) -> Model:
    """Parses and validates a JSON body in one pass (pydantic's parser, not json + dict)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that parses its body with ``parse_body``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _check_float32(values: list[float]) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    too_big = np.flatnonzero(np.abs(array) > FLOAT32_MAX)
    if too_big.size:
        raise ValueError(f"value at index {int(too_big[0])} overflows float32 (|x| > {FLOAT32_MAX:.6g})")
    return values


FeatureValue = Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictInt | Annotated[str, Field(max_length=256)]
NamedFeatures = Annotated[dict[Annotated[str, Field(max_length=64)], FeatureValue], Field(min_length=0, max_length=256)]
CandidateId = Annotated[str, Field(min_length=1, max_length=128)]
UNION_TAGS = ("<vector>", "<named>")
"""Tags of the vector-or-named unions; error locations leave them out (a feature name cannot
start with "<"), so a bad value is named "context.0" or "context.age"."""


def _vector_or_named(max_length: int, min_length: int) -> Any:
    """A field that is either a vector of finite numbers or named feature values."""
    return Annotated[
        Annotated[list[Finite], Field(min_length=min_length, max_length=max_length), Tag(UNION_TAGS[0])]
        | Annotated[NamedFeatures, Tag(UNION_TAGS[1])],
        Discriminator(lambda v: UNION_TAGS[1] if isinstance(v, dict) else UNION_TAGS[0]),
    ]


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: CandidateId
    """The candidate's id (an item, an article); the response's ``action`` when it is chosen."""
    features: _vector_or_named(MAX_VECTOR, 0)  # type: ignore[valid-type]
    """Its features: a vector of the policy's action_feature_dim numbers, or {name: value}
    under the policy's action_features schema. (Their float32 range is checked for all
    candidates at once when the request is validated against the policy.)"""


class ActRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "policy": "demo",
                    "context": [0.1, -0.3, 1.2, 0.0, 0.5, -1.1, 0.7, 0.2, 0.0, 0.4, -0.2, 0.9, 1.0, -0.5, 0.3, 0.1],
                    "mask": [True, True, False, True, True, True, True, True, True, True],
                    "unit_id": "user-42",
                }
            ]
        },
    )

    policy: PolicyName | None = None
    """The policy to decide with; give this or ``experiment``."""
    experiment: PolicyName | None = None
    """An experiment that picks the variant (and so the policy) for this call."""
    context: _vector_or_named(MAX_VECTOR, 1)  # type: ignore[valid-type]
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

    _float32 = field_validator("context")(lambda v: _check_float32(v) if isinstance(v, list) else v)

    @model_validator(mode="after")
    def _one_target(self) -> ActRequest:
        if (self.policy is None) == (self.experiment is None):
            raise ValueError("give exactly one of policy and experiment")
        return self


class ActResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "6f1c2a9e0b7d4c55a3f1e2d3c4b5a697",
                    "action": 3,
                    "propensity": 0.955,
                    "policy": "demo",
                    "version": "1.0",
                    "scores": [0.1, 0.0, 0.2, 0.9, 0.1, 0.0, 0.3, 0.2, 0.1, 0.0],
                }
            ]
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


class ModeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"mode": "online"}]})

    mode: Literal["online", "apprentice"]
    """online: the policy decides. apprentice: /act serves the baseline action while the policy
    learns and its agreement with the baseline is counted (GET /policies/{name}: apprentice)."""


class RewardRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"event_id": "6f1c2a9e0b7d4c55a3f1e2d3c4b5a697", "reward": 1.0}]},
    )

    event_id: EventId
    reward: Finite
    """The observed reward; a finite number."""
    terminal: StrictBool = False
    """Sequential policies: the episode ended with this reward (not for a time-limit cut-off)."""

    _float32 = field_validator("reward")(lambda v: _check_float32([v])[0])


class RewardResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"event_id": "6f1c2a9e0b7d4c55a3f1e2d3c4b5a697", "accepted": True, "detail": "first reward"}]
        }
    )

    event_id: str
    accepted: bool
    """Whether this reward counts for learning under the policy's aggregation rule."""
    detail: str
    spooled: bool = False
    """True when Redis was unavailable: the reward waits in the local spool and is checked
    (unknown event, late, duplicate) when it is written to Redis."""


class ExplorationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epsilon: Annotated[StrictFloat, Field(ge=0, le=1)] | None = None
    """LinUCB, neural_linear (UCB), neural_epsilon_greedy: share of traffic spread uniformly
    over the allowed actions."""
    propensity_samples: Annotated[StrictInt, Field(ge=1, le=4096)] | None = None
    """Thompson sampling: posterior draws used to estimate a propensity (default 256)."""


class RewardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_seconds: Annotated[StrictFloat, Field(gt=0, le=30 * 86400)] = 600.0
    """How long after a decision its reward may arrive."""
    default: Finite = 0.0
    """Reward learned for a decision whose window closes without one."""
    aggregation: Literal["earliest", "sum"] = "earliest"
    """How repeated rewards for one decision combine."""


class TrainingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    publish_every_examples: Annotated[StrictInt, Field(ge=1, le=10_000_000)] = 1000
    """The trainer publishes new variables after this many new examples ..."""
    publish_every_seconds: Annotated[StrictFloat, Field(gt=0, le=86400)] = 1.0
    """... or this long after its last publish, whichever comes first."""
    auto_promote: StrictBool = False
    """Offline evaluations promote the candidate when its DR lower bound beats the live DR."""
    session_timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=86400)] = 30.0
    """Sequential policies (dqn): a session without a new decision for this long is closed
    without a terminal transition."""


class PolicyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "homepage",
                    "algorithm": "linucb",
                    "context_dim": 16,
                    "num_actions": 10,
                    "hyperparameters": {"alpha": 1.0, "ridge": 1.0},
                    "exploration": {"epsilon": 0.05},
                    "reward": {"wait_seconds": 600, "default": 0.0, "aggregation": "earliest"},
                    "training": {"publish_every_examples": 1000, "publish_every_seconds": 1.0},
                }
            ]
        },
    )

    name: PolicyName
    algorithm: str
    """One of the registered algorithms: "linucb" or "lints"."""
    context_dim: Annotated[StrictInt, Field(ge=1, le=MAX_VECTOR)] | None = None
    """Length of the context vector; give this or ``features``."""
    features: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=256)] | None = None
    """A feature schema for named contexts (README, "Named features"): a list of
    {name, type: numeric, default?, normalize?} and {name, type: categorical, default?,
    vocabulary | hash_buckets}."""
    num_actions: Annotated[StrictInt, Field(ge=2, le=MAX_VECTOR)] | None = None
    """A fixed set of actions 0..num_actions-1; give this, or candidate features below."""
    action_feature_dim: Annotated[StrictInt, Field(ge=1, le=MAX_VECTOR)] | None = None
    """Candidate sets: every /act brings its candidates, each with a vector of this many features."""
    action_features: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=256)] | None = None
    """Candidate sets with named candidate features: their schema (as ``features``)."""
    max_candidates: Annotated[StrictInt, Field(ge=1, le=MAX_VECTOR)] | None = None
    """Candidate sets: the most candidates per /act (default BANDIT_MAX_CANDIDATES, 256)."""
    baseline: Annotated[StrictInt, Field(ge=0, le=MAX_VECTOR)] | None = None
    """The baseline action (what the app does today): an action index, or for candidate sets a
    position in each request's actions (default 0: the first, as in Personalizer). Apprentice
    mode serves it; evaluations and experiment reports estimate its value."""
    mode: Literal["online", "apprentice"] = "online"
    """online: the policy decides. apprentice: /act serves the baseline action while the policy
    learns from it and logs what it would have chosen (switch with PUT /policies/{name}/mode)."""
    hyperparameters: dict[str, Finite | StrictInt | HyperText | HyperList] = {}
    """Algorithm hyperparameters (README, "Algorithms"): e.g. linucb {alpha, ridge}; neural_linear
    {hidden_sizes: [64, 64], activation: "relu", mode: "ts", ...}; dqn {discount, ...}."""
    exploration: ExplorationSettings = ExplorationSettings()
    reward: RewardSettings = RewardSettings()
    training: TrainingSettings = TrainingSettings()
    shadow_of: PolicyName | None = None
    """Shadow this served policy: score its every decision (logged beside it, never served) and
    learn from its log with importance weights. Same context_dim and num_actions required."""


class PolicyInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "homepage",
                    "algorithm": "linucb",
                    "context_dim": 16,
                    "num_actions": 10,
                    "hyperparameters": {"alpha": 1.0, "ridge": 1.0, "epsilon": 0.05},
                    "reward": {"wait_seconds": 600.0, "default": 0.0, "aggregation": "earliest"},
                    "training": {"publish_every_examples": 1000, "publish_every_seconds": 1.0},
                    "live_version": "1.117",
                    "versions": [1],
                    "decisions": 120000,
                    "rewards": 80211,
                    "late_rewards": 12,
                    "duplicate_rewards": 3,
                    "applied_examples": 119040,
                    "pending_joins": 960,
                    "defaulted_rewards": 38810,
                    "trainer_lag": 960,
                    "last_publish_time": 1795254571.083,
                    "mean_reward": 0.213,
                }
            ]
        }
    )

    name: str
    algorithm: str
    context_dim: int
    """Width of the encoded context the model reads."""
    num_actions: int
    """K, or for candidate sets the most candidates per call."""
    features: list[dict[str, Any]] | None = None
    action_feature_dim: int = 0
    """0 for a fixed set of actions; else the encoded width of a candidate's features."""
    action_features: list[dict[str, Any]] | None = None
    baseline: int | None = None
    mode: str = "online"
    """online or apprentice (serving the baseline while learning)."""
    apprentice: dict[str, float | int | None] = {}
    """Decisions the policy has made in apprentice mode, and how many matched the baseline
    (counted by the trainer): {decisions, matches, match_rate}."""
    hyperparameters: dict[str, Any]
    reward: dict[str, Any]
    training: dict[str, Any]
    shadow_of: str | None = None
    live_version: str
    """'<export>.<checkpoint>' served now."""
    versions: list[int]
    """Exports on disk."""
    decisions: int
    """Decisions logged."""
    rewards: int
    """Rewards logged (including late and duplicate ones)."""
    late_rewards: int
    duplicate_rewards: int
    trainer: str | None = None
    """The trainer process holding this policy's lease; null when none is training it."""
    applied_examples: int
    """Examples the trainer has applied (in its last published or in-memory state)."""
    pending_joins: int
    """Decisions the trainer holds waiting for their reward window."""
    defaulted_rewards: int
    """Examples learned with the default reward because none came in time."""
    trainer_lag: int
    """Decisions logged but not yet applied (pending joins included)."""
    last_publish_time: float | None
    """Unix time of the trainer's last publish; null before the first."""
    mean_reward: float | None
    """Running mean reward of the applied examples; null before the first."""
    model: dict[str, float | int | None] = {}
    """The trainer's model counters: neural policies {training_steps, last_loss}; dqn also
    {epsilon, episodes, mean_return_100} (episodes completed, mean return of the last 100)."""


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"to": "3.117"}, {"to": "2"}]})

    to: Annotated[str, Field(pattern=r"^[0-9]{1,9}(\.[0-9]{1,12})?$")]
    """A version '<export>.<checkpoint>', or '<export>' for the variables exported with it."""


class PolicyList(BaseModel):
    policies: list[PolicyInfo]


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready", "detail": {"policies": 3}}]})

    status: str
    detail: dict[str, Any] = {}


class VariantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PolicyName
    policy: PolicyName
    weight: Annotated[StrictFloat, Field(gt=0, le=1e6)] = 1.0
    """Share of units (fixed allocation); ignored by the Thompson allocator."""


_EXPERIMENT_EXAMPLE: dict[str, Any] = {
    "name": "homepage-ab",
    "variants": [
        {"name": "incumbent", "policy": "homepage", "weight": 0.8},
        {"name": "candidate", "policy": "homepage-v2", "weight": 0.2},
    ],
    "allocation": "fixed",
    "control": "incumbent",
}


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [_EXPERIMENT_EXAMPLE]},
    )

    name: PolicyName
    variants: Annotated[list[VariantSettings], Field(min_length=2, max_length=16)]
    allocation: Literal["fixed", "thompson"] = "fixed"
    control: PolicyName
    """The variant the others are compared with; paused or ended experiments serve only it."""


class ExperimentPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "paused"}, {"weights": {"candidate": 0.5}}]}
    )

    status: Literal["running", "paused", "ended"] | None = None
    weights: dict[str, Annotated[StrictFloat, Field(gt=0, le=1e6)]] | None = None
    """New weights by variant name (fixed allocation)."""


class ExperimentInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                _EXPERIMENT_EXAMPLE
                | {
                    "status": "running",
                    "created_ms": 1795254571083,
                    "changes": [{"ts_ms": 1795254571083, "change": "created"}],
                }
            ]
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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
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
            ]
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


# -- offline jobs (admin) ------------------------------------------------------------------

LogTime = Annotated[StrictInt, Field(ge=0, le=2**53)]


class LogRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since_ms: LogTime | None = None
    """Only decisions logged at or after this Unix time in ms (Redis time of their entry)."""
    until_ms: LogTime | None = None
    """Only decisions logged before this Unix time in ms."""


class RetrainRequest(LogRange):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"from_live": False}, {"from_live": True, "since_ms": 0}]}
    )

    from_live: StrictBool = False
    """Start from the live version's variables instead of a fresh model."""


class RetrainResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "policy": "homepage",
                    "candidate_version": "4.0",
                    "base_version": "3.117",
                    "from_live": False,
                    "examples": 120000,
                    "rewarded": 80211,
                }
            ]
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
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{}, {"since_ms": 1795254571083, "auto_promote": True}]}
    )

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


class EvaluateResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "policy": "homepage",
                    "examples": 10000,
                    "rewarded": 10000,
                    "candidate_version": "4.0",
                    "live_version": "3.117",
                    "logging_policy": {"value": 0.0038, "low": 0.0026, "high": 0.005},
                    "candidate": {
                        "estimates": {"dr": {"value": 0.0047, "low": 0.0031, "high": 0.0064}},
                        "effective_sample_size": 812.5,
                        "max_importance_weight": 76.0,
                    },
                    "live": {
                        "estimates": {"dr": {"value": 0.0036, "low": 0.0021, "high": 0.0052}},
                        "effective_sample_size": 640.2,
                        "max_importance_weight": 76.0,
                    },
                    "promoted_version": None,
                }
            ]
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
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}, {"version": "4.0"}]})

    version: Annotated[str, Field(pattern=r"^[0-9]{1,9}\.0$")] | None = None
    """Promote only if this is still the candidate (guards against a newer, unevaluated one)."""
