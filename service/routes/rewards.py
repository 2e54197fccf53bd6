"""POST /reward: how a decision went."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from service.auth import require_client
from service.errors import LateReward, NotFound
from service.schemas import RewardRequest, RewardResponse, json_body, parse_body
from training.eventlog import RewardRecord

router = APIRouter(tags=["decisions"])


@router.post(
    "/reward",
    status_code=202,
    response_model=RewardResponse,
    openapi_extra=json_body(RewardRequest),
    responses={404: {"description": "Unknown or expired event_id"}, 409: {"description": "Reward after the window"}},
)
async def reward(request: Request) -> RewardResponse:
    """Reports the reward of a decision. Late rewards are logged (marked late) and answered 409."""
    await require_client(request)
    body = parse_body(RewardRequest, await request.body())
    log = request.app.state.log
    unknown = NotFound(f"event_id: no decision {body.event_id!r} (unknown, or expired)", "event_id")
    found = await log.decision_time(body.event_id)
    if found is None:
        raise unknown
    policy, decided_ms, experiment = found
    spec = (await request.app.state.registry.get(policy)).spec
    now_ms = int(time.time() * 1000)
    late = now_ms > decided_ms + spec.reward.wait_seconds * 1000
    record = RewardRecord(body.event_id, now_ms, body.reward, late)
    sequence = await log.record_reward(policy, record, spec.reward.aggregation, experiment)
    if sequence < 0:
        raise unknown
    metrics = request.app.state.metrics
    if late:
        metrics.rewards.labels(policy, "late").inc()
        waited = (now_ms - decided_ms) / 1000
        raise LateReward(
            f"event_id: reward came {waited:.1f}s after the decision, past policy {policy!r}'s "
            f"{spec.reward.wait_seconds:g}s window; it is logged as late and not learned from",
            "event_id",
        )
    if spec.reward.aggregation == "sum":
        accepted, detail, outcome = True, f"reward {sequence} of this event, summed", "accepted"
    elif sequence == 1:
        accepted, detail, outcome = True, "first reward", "accepted"
    else:
        accepted, detail, outcome = (
            False,
            f"duplicate: aggregation 'earliest' keeps the first of {sequence}",
            "duplicate",
        )
    metrics.rewards.labels(policy, outcome).inc()
    return RewardResponse(event_id=body.event_id, accepted=accepted, detail=detail)
