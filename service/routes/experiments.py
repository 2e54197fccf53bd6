"""Experiments: create (admin), list, inspect, change (admin), report."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from fastapi import APIRouter

from eventlog.aio import RedisLog
from service.auth import Grant
from service.deps import AdminGrant, ExperimentsDep, LogDep, ReadGrant, RegistryDep, SettingsDep
from service.errors import Conflict, InvalidInput, LimitReached
from service.experiments import ExperimentRouter
from service.reports import build_report
from service.schemas.common import error_responses
from service.schemas.experiments import ExperimentCreate, ExperimentInfo, ExperimentPatch, ExperimentReport
from training.experiments import Experiment, Variant

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=error_responses())
UNKNOWN = error_responses({404: "Unknown experiment"})


async def _allowed(name: str, grant: Grant, experiments: ExperimentRouter) -> Experiment:
    """The experiment (read now), if the caller's key may use every policy it routes to (else 403)."""
    experiment = await experiments.get(name, fresh=True)
    grant.check_policies(v.policy for v in experiment.variants)
    return experiment


async def _info(log: RedisLog, experiment: Experiment) -> ExperimentInfo:
    data = experiment.to_dict()
    data.pop("salt")
    return ExperimentInfo(**data, changes=await log.experiment_changes(experiment.name))


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.post(
    "",
    status_code=201,
    responses=error_responses({409: "Name taken, or BANDIT_MAX_EXPERIMENTS reached", 422: "Invalid definition"}),
)
async def create_experiment(
    body: ExperimentCreate, grant: AdminGrant, settings: SettingsDep, log: LogDep
) -> ExperimentInfo:
    """Splits traffic between variants, each served by an existing policy."""
    grant.check_policies(v.policy for v in body.variants)
    limit = settings.max_experiments
    if len(await log.experiment_names()) >= limit:
        raise LimitReached(f"name: the service holds {limit} experiments (BANDIT_MAX_EXPERIMENTS)", "name")
    names = [v.name for v in body.variants]
    if len(set(names)) != len(names):
        raise InvalidInput("variants: variant names must be unique", "variants")
    if body.control not in names:
        raise InvalidInput(f"control: {body.control!r} is not one of the variants {names}", "control")
    shapes = []
    for i, variant in enumerate(body.variants):
        found = await log.policy(variant.policy)
        if found is None:
            raise InvalidInput(f"variants.{i}.policy: no policy named {variant.policy!r}", f"variants.{i}.policy")
        shapes.append(found[0].inputs())
    if any(shape != shapes[0] for shape in shapes):
        raise InvalidInput("variants: every variant's policy must take the same context and actions", "variants")
    now_ms = _now_ms()
    variants = tuple(Variant(v.name, v.policy, v.weight) for v in body.variants)
    experiment = Experiment(
        body.name, variants, body.allocation, body.control, salt=secrets.token_hex(8), created_ms=now_ms
    )
    change = {"ts_ms": now_ms, "change": "created", "definition": body.model_dump()}
    if not await log.add_experiment(body.name, experiment.to_dict(), change):
        raise Conflict(f"name: an experiment named {body.name!r} already exists", "name")
    return await _info(log, experiment)


@router.get("")
async def list_experiments(grant: ReadGrant, log: LogDep, experiments: ExperimentsDep) -> list[ExperimentInfo]:
    """Every experiment whose policies the key may use."""
    allowed = grant.policies
    found = [await experiments.get(n, fresh=True) for n in await log.experiment_names()]
    return [await _info(log, e) for e in found if allowed is None or all(v.policy in allowed for v in e.variants)]


@router.get("/{name}", responses=UNKNOWN)
async def get_experiment(name: str, grant: ReadGrant, log: LogDep, experiments: ExperimentsDep) -> ExperimentInfo:
    return await _info(log, await _allowed(name, grant, experiments))


@router.patch("/{name}", responses=error_responses({404: "Unknown experiment", 409: "The experiment has ended"}))
async def change_experiment(
    name: str, body: ExperimentPatch, grant: AdminGrant, log: LogDep, experiments: ExperimentsDep
) -> ExperimentInfo:
    """Pauses, resumes, ends or re-weights an experiment; every change is logged with its time."""
    experiment = await _allowed(name, grant, experiments)
    changed: dict[str, Any] = {}
    if experiment.status == "ended":
        raise Conflict(f"status: experiment {name!r} has ended and cannot change", "status")
    if body.weights:
        unknown = sorted(set(body.weights) - {v.name for v in experiment.variants})
        if unknown:
            raise InvalidInput(f"weights: no variant named {unknown[0]!r}", "weights")
        variants = tuple(Variant(v.name, v.policy, body.weights.get(v.name, v.weight)) for v in experiment.variants)
        experiment = Experiment(**{**experiment.__dict__, "variants": variants})
        changed["weights"] = body.weights
    if body.status is not None:
        experiment = Experiment(**{**experiment.__dict__, "status": body.status})
        changed["status"] = body.status
    if not changed:
        raise InvalidInput("body: nothing to change; give status or weights", "body")
    await log.update_experiment(name, experiment.to_dict(), {"ts_ms": _now_ms(), "change": "updated", **changed})
    return await _info(log, await experiments.get(name, fresh=True))


@router.get("/{name}/report", responses=UNKNOWN)
async def report(
    name: str, grant: ReadGrant, log: LogDep, experiments: ExperimentsDep, registry: RegistryDep
) -> ExperimentReport:
    """Per variant: counts, mean reward (95% interval), lift against the control with its interval
    and p-value, and the off-policy estimate of each variant's policy on all the traffic."""
    experiment = await _allowed(name, grant, experiments)
    policies = sorted({v.policy for v in experiment.variants})
    served = {p: await registry.get(p) for p in policies}
    streams = {p: await log.read_streams(p) for p in policies}
    specs = {p: s.spec for p, s in served.items()}
    models = {p: s.slot.model for p, s in served.items()}
    report = await asyncio.to_thread(build_report, experiment, specs, streams, models, _now_ms())
    return ExperimentReport(experiment=name, status=experiment.status, **report)
