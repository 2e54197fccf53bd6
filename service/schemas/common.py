"""What every router's schemas share: the error body, field types, body parsing, examples."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
)

from exporter.spec import NAME_PATTERN

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_VECTOR = 4096

PolicyName = Annotated[str, Field(pattern=NAME_PATTERN.pattern, description="A policy name, [a-z0-9_-]{1,64}.")]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
EventId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="Client-chosen id, [A-Za-z0-9_.:-]{1,128}.")
]
FeatureValue = Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictInt | Annotated[str, Field(max_length=256)]
NamedFeatures = Annotated[dict[Annotated[str, Field(max_length=64)], FeatureValue], Field(min_length=0, max_length=256)]
UNION_TAGS = ("<vector>", "<named>")
"""Tags of the vector-or-named unions; error locations leave them out (a feature name cannot
start with "<"), so a bad value is named "context.0" or "context.age"."""

Model = TypeVar("Model", bound=BaseModel)


def examples(*bodies: dict[str, Any], forbid_extra: bool = False) -> ConfigDict:
    """A model's config whose OpenAPI schema shows these example bodies; ``forbid_extra`` for
    request bodies, which refuse unknown fields."""
    config = ConfigDict(json_schema_extra={"examples": list(bodies)})
    if forbid_extra:
        config["extra"] = "forbid"
    return config


class Problem(BaseModel):
    field: str
    problem: str
    type: str


class ErrorBody(BaseModel):
    """The one shape of every error the API returns."""

    model_config = examples(
        {
            "error": "invalid_input",
            "message": "context: expected 16 values for policy 'demo', got 3",
            "field": "context",
            "retryable": False,
        }
    )

    error: str
    """A stable code: invalid_input, not_found, conflict, late_reward, unauthorized, forbidden,
    rate_limited, limit_reached, body_too_large, unavailable, http_error."""
    message: str
    """'<field>: <problem>'."""
    field: str | None
    retryable: bool
    """True when the same request may succeed later (503, 429)."""
    problems: list[Problem] | None = None
    """Every validation problem (422 only)."""


_COMMON_ERRORS = {
    401: "Missing or unknown key",
    403: "The key lacks the route's scope or may not use the policy",
    413: "Body larger than BANDIT_MAX_BODY_BYTES",
    422: "Invalid input; `field` names it",
    429: "Rate limit of the key exceeded (Retry-After)",
    503: "Event log unavailable and nothing could be done (Retry-After when the spool is full)",
}


def error_responses(specific: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: the errors every route can give, plus its own."""
    described = _COMMON_ERRORS | (specific or {})
    return {code: {"model": ErrorBody, "description": text} for code, text in sorted(described.items())}


def parse_body(model: type[Model], raw: bytes) -> Model:
    """Parses and validates a JSON body in one pass (pydantic's parser, not json + dict)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that parses its body with ``parse_body``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def check_float32(values: list[float]) -> list[float]:
    """Raises ValueError naming the first value that overflows float32."""
    array = np.asarray(values, dtype=np.float64)
    too_big = np.flatnonzero(np.abs(array) > FLOAT32_MAX)
    if too_big.size:
        raise ValueError(f"value at index {int(too_big[0])} overflows float32 (|x| > {FLOAT32_MAX:.6g})")
    return values


def vector_or_named(max_length: int, min_length: int) -> Any:
    """A field that is either a vector of finite numbers or named feature values."""
    return Annotated[
        Annotated[list[Finite], Field(min_length=min_length, max_length=max_length), Tag(UNION_TAGS[0])]
        | Annotated[NamedFeatures, Tag(UNION_TAGS[1])],
        Discriminator(lambda v: UNION_TAGS[1] if isinstance(v, dict) else UNION_TAGS[0]),
    ]
