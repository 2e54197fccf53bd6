"""What routes get from the app, as typed dependencies (``Annotated`` aliases).

The app's resources are opened by its lifespan (service.app) and kept on ``app.state``; this
module is the only reader of ``app.state``, so every route body is typed. Authorisation is one
kind of dependency: ``require(scope)`` checks the caller's key, its scope and its rate limit
(counting refusals in serving_refused_requests_total); routes that name a policy in the path
also check the key may use it; /act and /reward authorise first, then parse their body (the
policy or experiment /act names is checked against the key).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from eventlog.aio import RedisLog
from eventlog.sync import LogClient
from service.auth import Grant, Keyring, bearer
from service.decisions import Decider
from service.errors import Forbidden, RateLimited, Unauthorized
from service.experiments import ExperimentRouter
from service.metrics import Metrics
from service.modes import PolicyModes
from service.offline_jobs import OfflineJobs
from service.policy_info import PolicyViews
from service.registry import PolicyRegistry
from service.rewards import Rewarder
from service.schemas.act import ActRequest
from service.schemas.common import parse_body
from service.schemas.rewards import RewardRequest
from service.settings import Settings
from service.spool import Spool

T = TypeVar("T")


def _resource(name: str, kind: type[T]) -> Callable[[Request], T]:
    """A dependency giving the resource ``name`` that the app (or its lifespan) opened."""

    def get(request: Request) -> T:
        resource = getattr(request.app.state, name)
        assert isinstance(resource, kind)
        return resource

    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Settings, Depends(_resource("settings", Settings))]
MetricsDep = Annotated[Metrics, Depends(_resource("metrics", Metrics))]
KeyringDep = Annotated[Keyring, Depends(_resource("keyring", Keyring))]
LogDep = Annotated[RedisLog, Depends(_resource("log", RedisLog))]
"""The async event-log client of the API."""
JobsLogDep = Annotated[LogClient, Depends(_resource("jobs_log", LogClient))]
"""The sync event-log client of the offline jobs (used from worker threads)."""
RegistryDep = Annotated[PolicyRegistry, Depends(_resource("registry", PolicyRegistry))]
DeciderDep = Annotated[Decider, Depends(_resource("decider", Decider))]
RewarderDep = Annotated[Rewarder, Depends(_resource("rewarder", Rewarder))]
ExperimentsDep = Annotated[ExperimentRouter, Depends(_resource("experiments", ExperimentRouter))]
ModesDep = Annotated[PolicyModes, Depends(_resource("modes", PolicyModes))]
SpoolDep = Annotated[Spool, Depends(_resource("spool", Spool))]


def get_policy_views(registry: RegistryDep, log: LogDep, modes: ModesDep) -> PolicyViews:
    return PolicyViews(registry, log, modes)


def get_offline_jobs(registry: RegistryDep, jobs_log: JobsLogDep) -> OfflineJobs:
    return OfflineJobs(registry, jobs_log)


PolicyViewsDep = Annotated[PolicyViews, Depends(get_policy_views)]
OfflineJobsDep = Annotated[OfflineJobs, Depends(get_offline_jobs)]


def require(scope: str, policy_in_path: bool = False) -> Callable[[Request, Keyring, Metrics], Awaitable[Grant]]:
    """A dependency giving the caller's grant for ``scope`` (and, for /policies/{name}...,
    checking the key may use that policy); raises 401, 403 or 429."""

    async def dependency(request: Request, keyring: KeyringDep, metrics: MetricsDep) -> Grant:
        host = request.client.host if request.client else "unknown"
        try:
            grant = keyring.authorize(bearer(request), scope, host)
        except (Unauthorized, Forbidden, RateLimited) as error:
            metrics.refused.labels(error.code).inc()
            raise
        if policy_in_path:
            grant.check_policy(request.path_params["name"])
        return grant

    dependency.__name__ = f"require_{scope}" + ("_policy" if policy_in_path else "")
    return dependency


require_act = require("act")
require_reward = require("reward")
require_read = require("read")
require_admin = require("admin")
require_read_policy = require("read", policy_in_path=True)
require_admin_policy = require("admin", policy_in_path=True)

ActGrant = Annotated[Grant, Depends(require_act)]
RewardGrant = Annotated[Grant, Depends(require_reward)]
ReadGrant = Annotated[Grant, Depends(require_read)]
AdminGrant = Annotated[Grant, Depends(require_admin)]
ReadPolicyGrant = Annotated[Grant, Depends(require_read_policy)]
AdminPolicyGrant = Annotated[Grant, Depends(require_admin_policy)]


async def act_body(request: Request, grant: ActGrant, experiments: ExperimentsDep) -> ActRequest:
    """The /act body of an authorised caller, parsed in one pass; 403 when the key may not use
    the policy it names, or every policy the experiment it names may route to."""
    body = parse_body(ActRequest, await request.body())
    if body.policy is not None:
        grant.check_policy(body.policy)
    elif grant.policies is not None:
        assert body.experiment is not None
        experiment = await experiments.get(body.experiment)
        grant.check_policies(v.policy for v in experiment.variants)
    return body


async def reward_body(request: Request, grant: RewardGrant) -> RewardRequest:
    """The /reward body of an authorised caller (the event's policy is checked when it is found)."""
    return parse_body(RewardRequest, await request.body())


ActBody = Annotated[ActRequest, Depends(act_body)]
RewardBody = Annotated[RewardRequest, Depends(reward_body)]
