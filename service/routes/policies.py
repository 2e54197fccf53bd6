"""Policies: create (admin), list, inspect, roll back and switch modes (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.deps import (
    AdminGrant,
    LogDep,
    MetricsDep,
    ModesDep,
    PolicyViewsDep,
    ReadGrant,
    RegistryDep,
    SettingsDep,
    require_admin_policy,
    require_read_policy,
)
from service.errors import InvalidInput, LimitReached
from service.policy_spec import check_shadow, spec_from
from service.schemas.common import error_responses
from service.schemas.policies import ModeRequest, PolicyCreate, PolicyInfo, PolicyList, RollbackRequest

router = APIRouter(prefix="/policies", tags=["policies"], responses=error_responses())


@router.post(
    "",
    status_code=201,
    responses=error_responses({409: "Name taken, or BANDIT_MAX_POLICIES reached", 422: "Invalid definition"}),
)
async def create_policy(
    body: PolicyCreate,
    grant: AdminGrant,
    settings: SettingsDep,
    log: LogDep,
    registry: RegistryDep,
    metrics: MetricsDep,
    views: PolicyViewsDep,
) -> PolicyInfo:
    """Builds the policy, exports version 1 and serves it."""
    grant.check_policies([body.name] + ([body.shadow_of] if body.shadow_of else []))
    if len(await log.policy_names()) >= settings.max_policies:
        raise LimitReached(f"name: the service holds {settings.max_policies} policies (BANDIT_MAX_POLICIES)", "name")
    spec = spec_from(body, settings)
    await check_shadow(spec, log)
    served = await registry.create(spec)
    metrics.set_live(served.spec.name, served.version)
    return await views.describe(body.name)


@router.post(
    "/{name}/rollback",
    dependencies=[Depends(require_admin_policy)],
    responses=error_responses({404: "Unknown policy or version", 422: "Incompatible version"}),
)
async def rollback(name: str, body: RollbackRequest, registry: RegistryDep, views: PolicyViewsDep) -> PolicyInfo:
    """Serves the variables of an earlier version on every replica; the trainer goes on from them.

    The old variables are copied into a new checkpoint number, so served versions keep
    increasing and each names exactly its variables.
    """
    await registry.roll_back(name, body.to)
    return await views.describe(name)


@router.put(
    "/{name}/mode",
    dependencies=[Depends(require_admin_policy)],
    responses=error_responses({404: "Unknown policy", 422: "The policy has no baseline to serve"}),
)
async def set_mode(
    name: str, body: ModeRequest, registry: RegistryDep, modes: ModesDep, views: PolicyViewsDep
) -> PolicyInfo:
    """Switches between apprentice mode (serve the baseline, learn, count agreement) and online
    mode (the policy decides); every replica follows within a second."""
    served = await registry.get(name)
    if body.mode == "apprentice" and served.spec.baseline is None:
        raise InvalidInput(f"mode: policy {name!r} names no baseline action to serve", "mode")
    await modes.set(name, body.mode)
    return await views.describe(name)


@router.get("")
async def list_policies(grant: ReadGrant, log: LogDep, views: PolicyViewsDep) -> PolicyList:
    """Every policy the key may use."""
    names = [n for n in await log.policy_names() if grant.policies is None or n in grant.policies]
    return PolicyList(policies=[await views.describe(name) for name in names])


@router.get("/{name}", dependencies=[Depends(require_read_policy)], responses=error_responses({404: "Unknown policy"}))
async def get_policy(name: str, views: PolicyViewsDep) -> PolicyInfo:
    return await views.describe(name)
