"""The baseline for bench/candidates_act.py: a bare FastAPI POST /act over candidate sets.

It parses the body exactly as the service's /act does (pydantic's JSON parser on the raw
bytes, ``model_validate_json``) into a self-contained copy of service.schemas.ActRequest and
Candidate: same fields, same constraints (vector-or-named unions, lengths, patterns, finite
and float32 checks). It then scores the candidates with the shared-parameter LinUCB of
bandits/shared_linear.py in numpy, with the same Kronecker contraction (a row costs
D^2 + K (f+1)^2, not K D^2):

    x~ = [1, x], z~_k = [1, z_k], u = Theta^T x~, M = x~^T A^-1 x~ (contracted over the
    context index), score_k = z~_k . u + alpha sqrt(z~_k^T M z~_k)

with a fixed random theta [289] and a fixed SPD A^-1 [289, 289] (context 16, 16 features per
candidate), takes the argmax and answers with a body of the service's shape (event_id,
action = the chosen id, action_index, propensity, policy, version, scores), serialised with
orjson. No model server, no batching, no Redis, no middleware, no auth.

    python bench/bare_candidates_app.py --port 8002   (or: python -m bench.bare_candidates_app)

Served by uvicorn with the options `banditd serve` uses.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

CONTEXT_DIM = 16
FEATURE_DIM = 16
ROWS, COLS = CONTEXT_DIM + 1, FEATURE_DIM + 1
JOINT_DIM = ROWS * COLS  # 289
ALPHA, EPSILON = 1.0, 0.05  # LinUCBConfig's defaults

_rng = np.random.default_rng(0)
THETA = _rng.standard_normal(JOINT_DIM).astype(np.float32)
_b = _rng.standard_normal((JOINT_DIM, JOINT_DIM)) / np.sqrt(JOINT_DIM)
GRAM_INVERSE = (_b @ _b.T / JOINT_DIM + 0.1 * np.eye(JOINT_DIM)).astype(np.float32)  # symmetric positive definite
THETA_MATRIX = THETA.reshape(ROWS, COLS)  # Theta[i, a]
INVERSE_BY_ROW = GRAM_INVERSE.reshape(ROWS, COLS * ROWS * COLS)  # A^-1[(i, a), (j, c)] as [i, (a, j, c)]

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_VECTOR = 4096

# -- a copy of the request models of service/schemas.py -------------------------------------------

PolicyName = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
FeatureValue = Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictInt | Annotated[str, Field(max_length=256)]
NamedFeatures = Annotated[dict[Annotated[str, Field(max_length=64)], FeatureValue], Field(min_length=0, max_length=256)]
CandidateId = Annotated[str, Field(min_length=1, max_length=128)]
UNION_TAGS = ("<vector>", "<named>")


def _check_float32(values: list[float]) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    too_big = np.flatnonzero(np.abs(array) > FLOAT32_MAX)
    if too_big.size:
        raise ValueError(f"value at index {int(too_big[0])} overflows float32 (|x| > {FLOAT32_MAX:.6g})")
    return values


def _vector_or_named(max_length: int, min_length: int) -> Any:
    return Annotated[
        Annotated[list[Finite], Field(min_length=min_length, max_length=max_length), Tag(UNION_TAGS[0])]
        | Annotated[NamedFeatures, Tag(UNION_TAGS[1])],
        Discriminator(lambda v: UNION_TAGS[1] if isinstance(v, dict) else UNION_TAGS[0]),
    ]


class Candidate(BaseModel):
    """Same fields and constraints as service.schemas.Candidate."""

    model_config = ConfigDict(extra="forbid")

    id: CandidateId
    features: _vector_or_named(MAX_VECTOR, 0)  # type: ignore[valid-type]


class ActRequest(BaseModel):
    """Same fields and constraints as service.schemas.ActRequest."""

    model_config = ConfigDict(extra="forbid")

    policy: PolicyName | None = None
    experiment: PolicyName | None = None
    context: _vector_or_named(MAX_VECTOR, 1)  # type: ignore[valid-type]
    actions: Annotated[list[Candidate], Field(min_length=1, max_length=MAX_VECTOR)] | None = None
    excluded: Annotated[list[CandidateId | StrictInt], Field(max_length=MAX_VECTOR)] | None = None
    mask: Annotated[list[StrictBool], Field(min_length=1, max_length=MAX_VECTOR)] | None = None
    unit_id: Annotated[str, Field(max_length=256)] | None = None
    event_id: EventId | None = None
    session_id: EventId | None = None
    greedy: StrictBool = False

    _float32 = field_validator("context")(lambda v: _check_float32(v) if isinstance(v, list) else v)

    @model_validator(mode="after")
    def _one_target(self) -> ActRequest:
        if (self.policy is None) == (self.experiment is None):
            raise ValueError("give exactly one of policy and experiment")
        return self


# -- scoring ----------------------------------------------------------------------------------------


def ucb_scores(context: np.ndarray, features: np.ndarray) -> np.ndarray:
    """score_k = z~_k . u + alpha sqrt(z~_k^T M z~_k); context [16], features [K, 16] -> [K] float32."""
    x = np.concatenate([np.ones(1, np.float32), context])  # [17]
    z = np.concatenate([np.ones((features.shape[0], 1), np.float32), features], axis=1)  # [K, 17]
    u = x @ THETA_MATRIX  # [17]
    m = (x @ INVERSE_BY_ROW).reshape(COLS, ROWS, COLS)  # sum_i x_i A^-1[(i, a), (j, c)] -> [a, j, c]
    m = np.einsum("ajc,j->ac", m, x)  # [a, c]
    quad = np.einsum("ka,ka->k", z @ m, z)
    return (z @ u + ALPHA * np.sqrt(np.maximum(quad, 0.0))).astype(np.float32)


app = FastAPI(title="bare /act baseline over candidate sets")


@app.post("/act")
async def act(request: Request) -> Response:
    try:
        body = ActRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise HTTPException(422, error.errors(include_url=False, include_context=False)) from None
    if (
        not isinstance(body.context, list)
        or len(body.context) != CONTEXT_DIM
        or not body.actions
        or any(not isinstance(c.features, list) or len(c.features) != FEATURE_DIM for c in body.actions)
    ):
        raise HTTPException(422, f"expected a context of {CONTEXT_DIM} and candidates of {FEATURE_DIM} numbers")
    context = np.asarray(body.context, dtype=np.float32)
    values = np.asarray([c.features for c in body.actions], dtype=np.float64)  # float32 range: one pass, as the service
    if (np.abs(values) > FLOAT32_MAX).any():
        raise HTTPException(422, "actions: a feature overflows float32")
    features = values.astype(np.float32)
    scores = ucb_scores(context, features)
    index = int(np.argmax(scores))
    response = {
        "event_id": body.event_id or uuid.uuid4().hex,
        "action": body.actions[index].id,
        "action_index": index,
        "propensity": 1.0 - EPSILON + EPSILON / len(body.actions),
        "policy": body.policy,
        "version": "bare",
        "scores": scores,
    }
    return Response(orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main(argv: list[str] | None = None) -> None:
    import uvicorn  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
