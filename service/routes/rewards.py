"""POST /reward: how a decision went."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.auth import authorize
from service.schemas import RewardRequest, RewardResponse, json_body, parse_body

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
    grant = await authorize(request, "reward")
    body = parse_body(RewardRequest, await request.body())
    return await request.app.state.rewarder.reward(body.event_id, body.reward, grant)
