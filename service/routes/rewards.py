"""POST /reward: how a decision went."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import RewardBody, RewarderDep, RewardGrant
from service.schemas.common import error_responses, json_body
from service.schemas.rewards import RewardRequest, RewardResponse

router = APIRouter(tags=["decisions"], responses=error_responses())


@router.post(
    "/reward",
    status_code=202,
    openapi_extra=json_body(RewardRequest),
    responses=error_responses({404: "Unknown or expired event_id", 409: "Reward after the window"}),
)
async def reward(body: RewardBody, grant: RewardGrant, rewarder: RewarderDep) -> RewardResponse:
    """Reports the reward of a decision. Late rewards are logged (marked late) and answered 409."""
    return await rewarder.reward(body.event_id, body.reward, grant, body.terminal)
