"""Offline jobs on a policy (admin): retrain a candidate, evaluate it, promote it.

The work is training.offline's, run in a worker thread with the app's synchronous
event-log client; these handlers validate, call it, and apply a new live version locally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastapi import APIRouter, Depends, Request

from eventlog.sync import LogClient
from service.auth import require_admin_policy
from service.errors import Conflict, InvalidInput, NotFound, ServiceError, Unavailable
from service.registry import PolicyRegistry
from service.routes.policies import _info
from service.schemas.common import error_responses
from service.schemas.offline import EvaluateRequest, EvaluateResponse, PromoteRequest, RetrainRequest, RetrainResponse
from service.schemas.policies import PolicyInfo
from training import offline

router = APIRouter(prefix="/policies", tags=["offline"], responses=error_responses())

T = TypeVar("T")


def _service_error(error: offline.OfflineError) -> ServiceError:
    if isinstance(error, offline.UnknownPolicy):
        return NotFound(error.message, error.field)
    if isinstance(error, offline.NoCandidate):
        return Conflict(error.message, error.field)
    if isinstance(error, offline.Busy):
        return Unavailable(error.message, error.field)
    return InvalidInput(error.message, error.field)


async def _run(request: Request, job: Callable[[Path, LogClient], T]) -> T:
    """Runs job(store, log) in a worker thread with the app's synchronous event-log client;
    its errors become the service's (LogUnavailable is a 503 already)."""
    registry: PolicyRegistry = request.app.state.registry
    try:
        return await asyncio.to_thread(job, registry.store, request.app.state.jobs_log)
    except offline.OfflineError as error:
        raise _service_error(error) from error


_ERRORS = error_responses(
    {
        404: "Unknown policy",
        409: "No candidate (or not the one named)",
        422: "No decisions in the range, or a log that does not fit the policy",
    }
)


@router.post(
    "/{name}/retrain",
    response_model=RetrainResponse,
    dependencies=[Depends(require_admin_policy)],
    responses=_ERRORS,
)
async def retrain(name: str, body: RetrainRequest, request: Request) -> RetrainResponse:
    """Trains the policy on its joined log (from scratch or from the live variables) and
    records the result as its candidate version; nothing serves it until promoted."""
    await request.app.state.registry.get(name)  # 404 for an unknown policy

    def job(store: Path, log: LogClient) -> RetrainResponse:
        joined = offline.read_joined_log(log, name, body.since_ms, body.until_ms)
        base = log.live(name) or ""
        export = offline.retrain(store, log, name, joined, from_live=body.from_live)
        return RetrainResponse(
            policy=name,
            candidate_version=f"{export}.0",
            base_version=base,
            from_live=body.from_live,
            examples=len(joined),
            rewarded=int(joined.rewarded.sum()),
        )

    return await _run(request, job)


@router.post(
    "/{name}/evaluate",
    response_model=EvaluateResponse,
    dependencies=[Depends(require_admin_policy)],
    responses=_ERRORS,
)
async def evaluate(name: str, body: EvaluateRequest, request: Request) -> EvaluateResponse:
    """Off-policy estimates of the candidate and of the live version on the joined log; with
    auto_promote, promotes the candidate when its DR lower bound beats the live DR estimate."""
    await request.app.state.registry.get(name)

    def job(store: Path, log: LogClient) -> EvaluateResponse:
        joined = offline.read_joined_log(log, name, body.since_ms, body.until_ms)
        result = offline.evaluate(store, log, name, joined, greedy=body.greedy)
        auto = body.auto_promote or offline.auto_promote_configured(log, name)
        promoted = offline.promote_if_better(store, log, name, result) if auto else None
        return EvaluateResponse(**result, promoted_version=promoted)

    response = await _run(request, job)
    if response.promoted_version is not None:
        await request.app.state.registry.apply(name, response.promoted_version)
    return response


@router.post(
    "/{name}/promote",
    response_model=PolicyInfo,
    dependencies=[Depends(require_admin_policy)],
    responses=_ERRORS,
)
async def promote(name: str, body: PromoteRequest, request: Request) -> PolicyInfo:
    """Serves the candidate on every replica. Its variables go into a new checkpoint number
    with the trainer's current log position (like a rollback), so the trainer goes on from
    them; the candidate is cleared."""
    await request.app.state.registry.get(name)
    version = await _run(request, lambda store, log: offline.promote(store, log, name, body.version))
    await request.app.state.registry.apply(name, version)
    return await _info(request, name)
