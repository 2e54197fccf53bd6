"""GET /healthz and /readyz."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.schemas.common import examples


class Health(BaseModel):
    model_config = examples({"status": "ready", "detail": {"policies": 3}})

    status: str
    detail: dict[str, Any] = {}
