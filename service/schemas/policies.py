"""/policies: the definition of a policy, what GET shows of it, rollback and mode changes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from service.schemas.common import MAX_VECTOR, Finite, PolicyName, examples

HyperText = Annotated[str, Field(max_length=64)]
HyperList = Annotated[list[Annotated[StrictInt, Field(ge=1, le=4096)]], Field(max_length=16)]
Mode = Literal["online", "apprentice"]


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
    model_config = examples(
        {
            "name": "homepage",
            "algorithm": "linucb",
            "context_dim": 16,
            "num_actions": 10,
            "hyperparameters": {"alpha": 1.0, "ridge": 1.0},
            "exploration": {"epsilon": 0.05},
            "reward": {"wait_seconds": 600, "default": 0.0, "aggregation": "earliest"},
            "training": {"publish_every_examples": 1000, "publish_every_seconds": 1.0},
        },
        forbid_extra=True,
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
    mode: Mode = "online"
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
    model_config = examples(
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


class PolicyList(BaseModel):
    policies: list[PolicyInfo]


class RollbackRequest(BaseModel):
    model_config = examples({"to": "3.117"}, {"to": "2"}, forbid_extra=True)

    to: Annotated[str, Field(pattern=r"^[0-9]{1,9}(\.[0-9]{1,12})?$")]
    """A version '<export>.<checkpoint>', or '<export>' for the variables exported with it."""


class ModeRequest(BaseModel):
    model_config = examples({"mode": "online"}, forbid_extra=True)

    mode: Mode
    """online: the policy decides. apprentice: /act serves the baseline action while the policy
    learns and its agreement with the baseline is counted (GET /policies/{name}: apprentice)."""
