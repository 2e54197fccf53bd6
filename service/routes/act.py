"""POST /act: a decision for a context."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import ActBody, DeciderDep
from service.schemas.act import ActRequest, ActResponse
from service.schemas.common import error_responses, json_body

router = APIRouter(tags=["decisions"], responses=error_responses())


@router.post(
    "/act",
    response_model=ActResponse,
    openapi_extra=json_body(ActRequest),
    responses=error_responses({404: "Unknown policy or experiment", 409: "event_id used by another policy"}),
)
async def act(body: ActBody, decider: DeciderDep) -> Response:
    """Chooses an action for a context. The response is sent only after its decision is logged."""
    return Response(await decider.act(body), media_type="application/json")
