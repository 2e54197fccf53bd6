"""Experiments: create (admin), list, inspect, change (admin), report."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from service.auth import require_admin, require_read
from service.errors import Conflict, InvalidInput, LimitReached
from service.experiments import build_report
from service.schemas.common import error_responses
from service.schemas.experiments import ExperimentCreate, ExperimentInfo, ExperimentPatch, ExperimentReport
from training.experiments import Experiment, Variant

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=error_responses())


async def _allowed(request: Request, name: str) -> Experiment:
    """The experiment, if the caller's key may use every policy it routes to (else 403)."""
    experiment = await request.app.state.experiments.get(name, fresh=True)
    request.state.grant.check_policies(v.policy for v in experiment.variants)
    return experiment


async def _info(request: Request, experiment: Experiment) -> ExperimentInfo:
    changes = await request.app.state.log.experiment_changes(experiment.name)
    data = experiment.to_dict()
    data.pop("salt")
    return ExperimentInfo(**data, changes=changes)


@router.post(
    "",
    status_code=201,
    response_model=ExperimentInfo,
    dependencies=[Depends(require_admin)],
    responses=error_responses({409: "Name taken, or BANDIT_MAX_EXPERIMENTS reached", 422: "Invalid definition"}),
)
async def create_experiment(body: ExperimentCreate, request: Request) -> ExperimentInfo:
    """Splits traffic between variants, each served by an existing policy."""
    request.state.grant.check_policies(v.policy for v in body.variants)
    limit = request.app.state.settings.max_experiments
    if len(await request.app.state.log.experiment_names()) >= limit:
        raise LimitReached(f"name: the service holds {limit} experiments (BANDIT_MAX_EXPERIMENTS)", "name")
    names = [v.name for v in body.variants]
    if len(set(names)) != len(names):
        raise InvalidInput("variants: variant names must be unique", "variants")
    if body.control not in names:
        raise InvalidInput(f"control: {body.control!r} is not one of the variants {names}", "control")
    shapes = []
    for i, variant in enumerate(body.variants):
        found = await request.app.state.log.policy(variant.policy)
        if found is None:
            raise InvalidInput(f"variants.{i}.policy: no policy named {variant.policy!r}", f"variants.{i}.policy")
        shapes.append(found[0].inputs())
    if any(shape != shapes[0] for shape in shapes):
        raise InvalidInput("variants: every variant's policy must take the same context and actions", "variants")
    now_ms = int(time.time() * 1000)
    experiment = Experiment(
        name=body.name,
        variants=tuple(Variant(v.name, v.policy, v.weight) for v in body.variants),
        allocation=body.allocation,
        control=body.control,
        salt=secrets.token_hex(8),
        created_ms=now_ms,
    )
    change = {"ts_ms": now_ms, "change": "created", "definition": body.model_dump()}
    if not await request.app.state.log.add_experiment(body.name, experiment.to_dict(), change):
        raise Conflict(f"name: an experiment named {body.name!r} already exists", "name")
    return await _info(request, experiment)


@router.get("", response_model=list[ExperimentInfo], dependencies=[Depends(require_read)])
async def list_experiments(request: Request) -> list[ExperimentInfo]:
    """Every experiment whose policies the key may use."""
    router_ = request.app.state.experiments
    allowed = request.state.grant.policies
    found = [await router_.get(n, fresh=True) for n in await request.app.state.log.experiment_names()]
    return [await _info(request, e) for e in found if allowed is None or all(v.policy in allowed for v in e.variants)]


@router.get(
    "/{name}",
    response_model=ExperimentInfo,
    dependencies=[Depends(require_read)],
    responses=error_responses({404: "Unknown experiment"}),
)
async def get_experiment(name: str, request: Request) -> ExperimentInfo:
    return await _info(request, await _allowed(request, name))


@router.patch(
    "/{name}",
    response_model=ExperimentInfo,
    dependencies=[Depends(require_admin)],
    responses=error_responses({404: "Unknown experiment", 409: "The experiment has ended"}),
)
async def change_experiment(name: str, body: ExperimentPatch, request: Request) -> ExperimentInfo:
    """Pauses, resumes, ends or re-weights an experiment; every change is logged with its time."""
    experiment = await _allowed(request, name)
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
    change = {"ts_ms": int(time.time() * 1000), "change": "updated", **changed}
    await request.app.state.log.update_experiment(name, experiment.to_dict(), change)
    return await _info(request, await request.app.state.experiments.get(name, fresh=True))


@router.get(
    "/{name}/report",
    response_model=ExperimentReport,
    dependencies=[Depends(require_read)],
    responses=error_responses({404: "Unknown experiment"}),
)
async def report(name: str, request: Request) -> ExperimentReport:
    """Per variant: counts, mean reward (95% interval), lift against the control with its interval
    and p-value, and the off-policy estimate of each variant's policy on all the traffic."""
    experiment = await _allowed(request, name)
    policies = sorted({v.policy for v in experiment.variants})
    registry = request.app.state.registry
    served = {p: await registry.get(p) for p in policies}
    streams = {p: await request.app.state.log.read_streams(p) for p in policies}
    report = await asyncio.to_thread(
        build_report,
        experiment,
        {p: s.spec for p, s in served.items()},
        streams,
        {p: s.slot.model for p, s in served.items()},
        int(time.time() * 1000),
    )
    return ExperimentReport(experiment=name, status=experiment.status, **report)
