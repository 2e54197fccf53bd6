"""POST /reward: how a decision went, and whether the reward counts."""

from __future__ import annotations

from pydantic import BaseModel, StrictBool, field_validator

from service.schemas.common import EventId, Finite, check_float32, examples

EVENT_ID = "6f1c2a9e0b7d4c55a3f1e2d3c4b5a697"


class RewardRequest(BaseModel):
    model_config = examples({"event_id": EVENT_ID, "reward": 1.0}, forbid_extra=True)

    event_id: EventId
    reward: Finite
    """The observed reward; a finite number."""
    terminal: StrictBool = False
    """Sequential policies: the episode ended with this reward (not for a time-limit cut-off)."""

    _float32 = field_validator("reward")(lambda v: check_float32([v])[0])


class RewardResponse(BaseModel):
    model_config = examples({"event_id": EVENT_ID, "accepted": True, "detail": "first reward"})

    event_id: str
    accepted: bool
    """Whether this reward counts for learning under the policy's aggregation rule."""
    detail: str
    spooled: bool = False
    """True when Redis was unavailable: the reward waits in the local spool and is checked
    (unknown event, late, duplicate) when it is written to Redis."""
