"""Policies: create (admin), list, inspect."""

from __future__ import annotations

import asyncio
import dataclasses

from fastapi import APIRouter, Depends, Request

import bandits
from eventlog import parse_version
from exporter import savedmodel
from exporter import spec as policy_spec
from exporter.spec import PolicySpec
from service.auth import require_admin, require_admin_policy, require_read, require_read_policy
from service.errors import Conflict, InvalidInput, LimitReached, NotFound
from service.registry import PolicyRegistry
from service.schemas.common import error_responses
from service.schemas.policies import ModeRequest, PolicyCreate, PolicyInfo, PolicyList, RollbackRequest
from training import checkpoints
from training.trainer import MODEL_STAT

router = APIRouter(prefix="/policies", tags=["policies"], responses=error_responses())


def _spec_from(body: PolicyCreate, max_candidates: int) -> policy_spec.PolicySpec:
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
        return policy_spec.resolve(
            body.name,
            body.algorithm,
            body.context_dim or 0,
            num_actions,
            body.hyperparameters | exploration,
            policy_spec.RewardConfig(**body.reward.model_dump()),
            policy_spec.TrainingConfig(**body.training.model_dump()),
            body.shadow_of,
            features=body.features,
            action_feature_dim=body.action_feature_dim or 0,
            action_features=body.action_features,
            baseline=body.baseline,
            mode=body.mode,
        )
    except (bandits.FeatureError, policy_spec.InvalidSpec) as error:
        raise InvalidInput(str(error), error.field) from error
    except bandits.InvalidHyperparameter as error:
        section = "exploration" if error.field in exploration else "hyperparameters"
        field = f"{section}.{error.field}"
        raise InvalidInput(f"{field}: {str(error).split(': ', 1)[1]} (algorithm {body.algorithm!r})", field) from error


async def _info(request: Request, name: str) -> PolicyInfo:
    registry: PolicyRegistry = request.app.state.registry
    served = await registry.get(name)
    stats = await request.app.state.log.stats(name)
    trainer = await request.app.state.log.trainer_stats(name)
    spec = served.spec
    applied = int(trainer.get("applied", 0))
    decisions = stats.get("decisions", 0)
    published_ms = int(trainer.get("last_publish_ms", 0))
    return PolicyInfo(
        name=spec.name,
        algorithm=spec.algorithm,
        context_dim=spec.context_dim,
        num_actions=spec.num_actions,
        features=spec.features,
        action_feature_dim=spec.action_feature_dim,
        action_features=spec.action_features,
        baseline=spec.baseline,
        mode=await request.app.state.modes.get(name),
        apprentice=_apprentice(trainer),
        hyperparameters=spec.hyperparameters,
        reward=dataclasses.asdict(spec.reward),
        training=dataclasses.asdict(spec.training),
        shadow_of=spec.shadow_of,
        live_version=served.version,
        versions=registry.versions(name),
        decisions=decisions,
        rewards=stats.get("rewards", 0),
        late_rewards=stats.get("late_rewards", 0),
        duplicate_rewards=stats.get("duplicate_rewards", 0),
        trainer=trainer.get("holder"),
        applied_examples=applied,
        pending_joins=int(trainer.get("pending", 0)),
        defaulted_rewards=int(trainer.get("defaulted", 0)),
        trainer_lag=max(0, decisions - applied),
        last_publish_time=published_ms / 1000 if published_ms else None,
        mean_reward=float(trainer["reward_sum"]) / applied if applied else None,
        model={k[len(MODEL_STAT) :]: _number(v) for k, v in trainer.items() if k.startswith(MODEL_STAT)},
    )


def _apprentice(trainer: dict[str, str]) -> dict[str, float | int | None]:
    decisions = int(trainer.get("apprentice_decisions", 0))
    if not decisions:
        return {}
    matches = int(trainer.get("apprentice_matches", 0))
    return {"decisions": decisions, "matches": matches, "match_rate": matches / decisions}


def _number(text: str) -> float | int | None:
    if not text:
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


@router.post(
    "",
    status_code=201,
    response_model=PolicyInfo,
    dependencies=[Depends(require_admin)],
    responses=error_responses({409: "Name taken, or BANDIT_MAX_POLICIES reached", 422: "Invalid definition"}),
)
async def create_policy(body: PolicyCreate, request: Request) -> PolicyInfo:
    """Builds the policy, exports version 1 and serves it."""
    request.state.grant.check_policies([body.name] + ([body.shadow_of] if body.shadow_of else []))
    settings = request.app.state.settings
    if len(await request.app.state.log.policy_names()) >= settings.max_policies:
        raise LimitReached(f"name: the service holds {settings.max_policies} policies (BANDIT_MAX_POLICIES)", "name")
    spec = _spec_from(body, settings.max_candidates)
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
    if spec.shadow_of is not None:
        found = await request.app.state.log.policy(spec.shadow_of)
        if found is None:
            raise InvalidInput(f"shadow_of: no policy named {spec.shadow_of!r}", "shadow_of")
        target = found[0]
        if target.shadow_of is not None:
            raise InvalidInput(f"shadow_of: {spec.shadow_of!r} is itself a shadow", "shadow_of")
        if target.inputs() != spec.inputs():
            raise InvalidInput("shadow_of: the shadowed policy has other inputs or actions", "shadow_of")
    served = await request.app.state.registry.create(spec)
    request.app.state.metrics.set_live(served.spec.name, served.version)
    return await _info(request, body.name)


@router.post(
    "/{name}/rollback",
    response_model=PolicyInfo,
    dependencies=[Depends(require_admin_policy)],
    responses=error_responses({404: "Unknown policy or version", 422: "Incompatible version"}),
)
async def rollback(name: str, body: RollbackRequest, request: Request) -> PolicyInfo:
    """Serves the variables of an earlier version on every replica; the trainer goes on from them.

    The old variables are copied into a new checkpoint number, so served versions keep
    increasing and each names exactly its variables.
    """
    registry: PolicyRegistry = request.app.state.registry
    log = request.app.state.log
    served = await registry.get(name)
    target = parse_version(body.to)
    if not checkpoints.exists(registry.store, name, *target):
        raise NotFound(f"to: policy {name!r} has no version {body.to!r}", "to")
    target_spec = PolicySpec.from_dict(savedmodel.read_manifest(registry.store, name, target[0])["spec"])
    if target_spec.inputs() != served.spec.inputs():
        raise InvalidInput(f"to: version {body.to!r} has other input or action dimensions than the live one", "to")
    found = await log.policy(name)
    live = found[1] if found is not None else served.version
    checkpoint = await log.next_checkpoint(name)
    current = parse_version(live)
    await asyncio.to_thread(checkpoints.copy_for_rollback, registry.store, name, target, current, checkpoint)
    version = f"{target[0]}.{checkpoint}"
    if not await log.move_live(name, live, version):
        raise Conflict(f"to: the live version of policy {name!r} changed while rolling back; try again", "to")
    await registry.apply(name, version)
    return await _info(request, name)


@router.put(
    "/{name}/mode",
    response_model=PolicyInfo,
    dependencies=[Depends(require_admin_policy)],
    responses=error_responses({404: "Unknown policy", 422: "The policy has no baseline to serve"}),
)
async def set_mode(name: str, body: ModeRequest, request: Request) -> PolicyInfo:
    """Switches between apprentice mode (serve the baseline, learn, count agreement) and online
    mode (the policy decides); every replica follows within a second."""
    served = await request.app.state.registry.get(name)
    if body.mode == "apprentice" and served.spec.baseline is None:
        raise InvalidInput(f"mode: policy {name!r} names no baseline action to serve", "mode")
    await request.app.state.modes.set(name, body.mode)
    return await _info(request, name)


@router.get("", response_model=PolicyList, dependencies=[Depends(require_read)])
async def list_policies(request: Request) -> PolicyList:
    """Every policy the key may use."""
    allowed = request.state.grant.policies
    names = [n for n in await request.app.state.log.policy_names() if allowed is None or n in allowed]
    return PolicyList(policies=[await _info(request, name) for name in names])


@router.get(
    "/{name}",
    response_model=PolicyInfo,
    dependencies=[Depends(require_read_policy)],
    responses=error_responses({404: "Unknown policy"}),
)
async def get_policy(name: str, request: Request) -> PolicyInfo:
    return await _info(request, name)
