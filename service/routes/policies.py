"""Policies: create (admin), list, inspect."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Depends, Request

import bandits
from exporter import spec as policy_spec
from service.auth import require_admin, require_client
from service.errors import InvalidInput
from service.registry import PolicyRegistry
from service.schemas import PolicyCreate, PolicyInfo, PolicyList

router = APIRouter(prefix="/policies", tags=["policies"])


def _spec_from(body: PolicyCreate) -> policy_spec.PolicySpec:
    if body.algorithm not in bandits.ALGORITHMS:
        known = ", ".join(sorted(bandits.ALGORITHMS))
        raise InvalidInput(f"algorithm: unknown algorithm {body.algorithm!r}; known: {known}", "algorithm")
    exploration = body.exploration.model_dump(exclude_none=True)
    overlap = set(exploration) & set(body.hyperparameters)
    if overlap:
        name = sorted(overlap)[0]
        raise InvalidInput(f"hyperparameters.{name}: set it under exploration only", f"hyperparameters.{name}")
    try:
        return policy_spec.resolve(
            body.name,
            body.algorithm,
            body.context_dim,
            body.num_actions,
            body.hyperparameters | exploration,
            policy_spec.RewardConfig(**body.reward.model_dump()),
        )
    except bandits.InvalidHyperparameter as error:
        section = "exploration" if error.field in exploration else "hyperparameters"
        field = f"{section}.{error.field}"
        raise InvalidInput(f"{field}: {str(error).split(': ', 1)[1]} (algorithm {body.algorithm!r})", field) from error


async def _info(request: Request, name: str) -> PolicyInfo:
    registry: PolicyRegistry = request.app.state.registry
    served = await registry.get(name)
    stats = await request.app.state.log.stats(name)
    spec = served.spec
    return PolicyInfo(
        name=spec.name,
        algorithm=spec.algorithm,
        context_dim=spec.context_dim,
        num_actions=spec.num_actions,
        hyperparameters=spec.hyperparameters,
        reward=dataclasses.asdict(spec.reward),
        live_version=served.version,
        versions=registry.versions(name),
        decisions=stats.get("decisions", 0),
        rewards=stats.get("rewards", 0),
        late_rewards=stats.get("late_rewards", 0),
        duplicate_rewards=stats.get("duplicate_rewards", 0),
    )


@router.post(
    "",
    status_code=201,
    response_model=PolicyInfo,
    dependencies=[Depends(require_admin)],
    responses={409: {"description": "Name taken"}, 422: {"description": "Invalid definition"}},
)
async def create_policy(body: PolicyCreate, request: Request) -> PolicyInfo:
    """Builds the policy, exports version 1 and serves it."""
    served = await request.app.state.registry.create(_spec_from(body))
    request.app.state.metrics.set_live(served.spec.name, served.version)
    return await _info(request, body.name)


@router.get("", response_model=PolicyList, dependencies=[Depends(require_client)])
async def list_policies(request: Request) -> PolicyList:
    names = await request.app.state.log.policy_names()
    return PolicyList(policies=[await _info(request, name) for name in names])


@router.get(
    "/{name}",
    response_model=PolicyInfo,
    dependencies=[Depends(require_client)],
    responses={404: {"description": "Unknown policy"}},
)
async def get_policy(name: str, request: Request) -> PolicyInfo:
    return await _info(request, name)
