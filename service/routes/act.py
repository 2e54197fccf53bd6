"""POST /act: a decision for a context."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.auth import authorize
from service.schemas.act import ActRequest, ActResponse
from service.schemas.common import error_responses, json_body, parse_body

router = APIRouter(tags=["decisions"], responses=error_responses())


@router.post(
    "/act",
    response_model=ActResponse,
    openapi_extra=json_body(ActRequest),
    responses=error_responses({404: "Unknown policy or experiment", 409: "event_id used by another policy"}),
)
async def act(request: Request) -> Response:
    """Chooses an action for a context. The response is sent only after its decision is logged."""
    grant = await authorize(request, "act")
    body = parse_body(ActRequest, await request.body())
    if body.policy is not None:
        grant.check_policy(body.policy)
    elif grant.policies is not None:
        assert body.experiment is not None
        experiment = await request.app.state.experiments.get(body.experiment)
        grant.check_policies(v.policy for v in experiment.variants)
    payload = await request.app.state.decider.act(body)
    return Response(payload, media_type="application/json")
