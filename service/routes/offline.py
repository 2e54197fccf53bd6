"""Offline jobs on a policy (admin): retrain a candidate, evaluate it, promote it.

The work is training.offline's, run by service.offline_jobs in a worker thread; these handlers
say which job, and serve a new live version on this replica at once.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends

from eventlog.sync import LogClient
from service.deps import OfflineJobsDep, PolicyViewsDep, require_admin_policy
from service.schemas.common import error_responses
from service.schemas.offline import EvaluateRequest, EvaluateResponse, PromoteRequest, RetrainRequest, RetrainResponse
from service.schemas.policies import PolicyInfo
from training import offline

router = APIRouter(
    prefix="/policies",
    tags=["offline"],
    dependencies=[Depends(require_admin_policy)],
    responses=error_responses(
        {
            404: "Unknown policy",
            409: "No candidate (or not the one named)",
            422: "No decisions in the range, or a log that does not fit the policy",
        }
    ),
)


@router.post("/{name}/retrain")
async def retrain(name: str, body: RetrainRequest, jobs: OfflineJobsDep) -> RetrainResponse:
    """Trains the policy on its joined log (from scratch or from the live variables) and
    records the result as its candidate version; nothing serves it until promoted."""

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

    return await jobs.run(name, job)


@router.post("/{name}/evaluate")
async def evaluate(name: str, body: EvaluateRequest, jobs: OfflineJobsDep) -> EvaluateResponse:
    """Off-policy estimates of the candidate and of the live version on the joined log; with
    auto_promote, promotes the candidate when its DR lower bound beats the live DR estimate."""

    def job(store: Path, log: LogClient) -> EvaluateResponse:
        joined = offline.read_joined_log(log, name, body.since_ms, body.until_ms)
        result = offline.evaluate(store, log, name, joined, greedy=body.greedy)
        auto = body.auto_promote or offline.auto_promote_configured(log, name)
        promoted = offline.promote_if_better(store, log, name, result) if auto else None
        return EvaluateResponse(**result, promoted_version=promoted)

    response = await jobs.run(name, job)
    if response.promoted_version is not None:
        await jobs.serve(name, response.promoted_version)
    return response


@router.post("/{name}/promote")
async def promote(name: str, body: PromoteRequest, jobs: OfflineJobsDep, views: PolicyViewsDep) -> PolicyInfo:
    """Serves the candidate on every replica. Its variables go into a new checkpoint number
    with the trainer's current log position (like a rollback), so the trainer goes on from
    them; the candidate is cleared."""
    version = await jobs.run(name, lambda store, log: offline.promote(store, log, name, body.version))
    await jobs.serve(name, version)
    return await views.describe(name)
