"""POST /act: a decision for a context."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.auth import require_client
from service.schemas import ActRequest, ActResponse

router = APIRouter(tags=["decisions"], dependencies=[Depends(require_client)])


@router.post(
    "/act",
    response_model=ActResponse,
    responses={404: {"description": "Unknown policy"}, 409: {"description": "event_id used by another policy"}},
)
async def act(body: ActRequest, request: Request) -> Response:
    """Chooses an action for a context. The response is sent only after its decision is logged."""
    payload = await request.app.state.decider.act(body)
    return Response(payload, media_type="application/json")
