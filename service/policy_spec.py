"""A policy definition (POST /policies) turned into a spec: checked field by field (a 422 naming
the field) and against the service's limits (BANDIT_MAX_*), before anything is built."""

from __future__ import annotations

import bandits
from eventlog.aio import RedisLog
from exporter import spec as spec_module
from exporter.spec import PolicySpec
from service.errors import InvalidInput
from service.schemas.policies import PolicyCreate
from service.settings import Settings


def spec_from(body: PolicyCreate, settings: Settings) -> PolicySpec:
    """The spec the body defines, within the service's limits; raises InvalidInput."""
    spec = _resolve(body, settings.max_candidates)
    field = "features" if spec.features is not None else "context_dim"
    if spec.context_dim > settings.max_context_dim:
        raise InvalidInput(
            f"{field}: {spec.context_dim} encoded features, at most {settings.max_context_dim} "
            "(BANDIT_MAX_CONTEXT_DIM)",
            field,
        )
    if spec.action_feature_dim > settings.max_context_dim:
        raise InvalidInput(
            f"action_features: {spec.action_feature_dim} encoded features, at most {settings.max_context_dim} "
            "(BANDIT_MAX_CONTEXT_DIM)",
            "action_features",
        )
    if not spec.takes_candidates and spec.num_actions > settings.max_actions:
        raise InvalidInput(f"num_actions: at most {settings.max_actions} (BANDIT_MAX_ACTIONS)", "num_actions")
    if spec.takes_candidates and spec.num_actions > settings.max_candidates:
        raise InvalidInput(
            f"max_candidates: at most {settings.max_candidates} (BANDIT_MAX_CANDIDATES)", "max_candidates"
        )
    policy_type = bandits.policy_type(spec.algorithm, spec.takes_candidates)
    config = bandits.config_from_dict(policy_type.Config, spec.hyperparameters)
    size = policy_type.state_bytes(spec.context_dim, spec.num_actions, config, spec.action_feature_dim)
    if size > settings.max_model_bytes:
        raise InvalidInput(
            f"{field}: a {spec.algorithm} model of context_dim {spec.context_dim}, num_actions {spec.num_actions} "
            f"and action_feature_dim {spec.action_feature_dim} needs about {size / 2**20:.0f} MiB, over "
            "BANDIT_MAX_MODEL_BYTES",
            field,
        )
    return spec


async def check_shadow(spec: PolicySpec, log: RedisLog) -> None:
    """A shadow must shadow an existing policy that is no shadow itself and takes the same inputs."""
    if spec.shadow_of is None:
        return
    found = await log.policy(spec.shadow_of)
    if found is None:
        raise InvalidInput(f"shadow_of: no policy named {spec.shadow_of!r}", "shadow_of")
    target = found[0]
    if target.shadow_of is not None:
        raise InvalidInput(f"shadow_of: {spec.shadow_of!r} is itself a shadow", "shadow_of")
    if target.inputs() != spec.inputs():
        raise InvalidInput("shadow_of: the shadowed policy has other inputs or actions", "shadow_of")


def _resolve(body: PolicyCreate, max_candidates: int) -> PolicySpec:
    """The spec the body defines; 422 naming the field when it is not one."""
    if body.algorithm not in bandits.ALGORITHMS:
        known = ", ".join(sorted(bandits.ALGORITHMS))
        raise InvalidInput(f"algorithm: unknown algorithm {body.algorithm!r}; known: {known}", "algorithm")
    if (body.context_dim is None) == (body.features is None):
        raise InvalidInput("context_dim: give exactly one of context_dim and features", "context_dim")
    candidates = body.action_feature_dim is not None or body.action_features is not None
    if body.action_feature_dim is not None and body.action_features is not None:
        raise InvalidInput("action_features: give action_feature_dim or action_features, not both", "action_features")
    if candidates and body.algorithm not in bandits.CANDIDATE_ALGORITHMS:
        known = ", ".join(sorted(bandits.CANDIDATE_ALGORITHMS))
        raise InvalidInput(f"algorithm: {body.algorithm} takes no candidate sets; these do: {known}", "algorithm")
    if candidates and body.num_actions is not None:
        raise InvalidInput("num_actions: candidate sets use max_candidates, not num_actions", "num_actions")
    if not candidates and body.num_actions is None:
        raise InvalidInput("num_actions: give num_actions, or candidate features (action_feature_dim)", "num_actions")
    if not candidates and body.max_candidates is not None:
        raise InvalidInput("max_candidates: only for candidate sets (action_feature_dim)", "max_candidates")
    num_actions = (body.max_candidates or max_candidates) if candidates else body.num_actions
    assert num_actions is not None
    exploration = body.exploration.model_dump(exclude_none=True)
    overlap = set(exploration) & set(body.hyperparameters)
    if overlap:
        name = sorted(overlap)[0]
        raise InvalidInput(f"hyperparameters.{name}: set it under exploration only", f"hyperparameters.{name}")
    try:
        return spec_module.resolve(
            body.name,
            body.algorithm,
            body.context_dim or 0,
            num_actions,
            body.hyperparameters | exploration,
            spec_module.RewardConfig(**body.reward.model_dump()),
            spec_module.TrainingConfig(**body.training.model_dump()),
            body.shadow_of,
            features=body.features,
            action_feature_dim=body.action_feature_dim or 0,
            action_features=body.action_features,
            baseline=body.baseline,
            mode=body.mode,
        )
    except (bandits.FeatureError, spec_module.InvalidSpec) as error:
        raise InvalidInput(str(error), error.field) from error
    except bandits.InvalidHyperparameter as error:
        section = "exploration" if error.field in exploration else "hyperparameters"
        field = f"{section}.{error.field}"
        raise InvalidInput(f"{field}: {str(error).split(': ', 1)[1]} (algorithm {body.algorithm!r})", field) from error
