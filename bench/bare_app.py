"""The baseline for bench/act_throughput.py: a bare FastAPI POST /act.

It parses the same JSON body as the service's /act (a self-contained copy of
service.schemas.ActRequest: same fields, same constraints, same float32 check), builds a
float32 context, scores it against a fixed random [10, 16] matrix, takes the numpy argmax and
answers with a body of the service's shape, serialised with orjson as the service does. No
model, no batching, no Redis, no middleware, no auth.

    python bench/bare_app.py --port 8001     (or: python -m bench.bare_app --port 8001)

Served by uvicorn with the options `banditd serve` uses.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Annotated

import numpy as np
import orjson
from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, field_validator

NUM_ACTIONS = 10
CONTEXT_DIM = 16
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_VECTOR = 4096
WEIGHTS = np.random.default_rng(0).standard_normal((NUM_ACTIONS, CONTEXT_DIM)).astype(np.float32)

PolicyName = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


def _check_float32(values: list[float]) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    too_big = np.flatnonzero(np.abs(array) > FLOAT32_MAX)
    if too_big.size:
        raise ValueError(f"value at index {int(too_big[0])} overflows float32 (|x| > {FLOAT32_MAX:.6g})")
    return values


class ActRequest(BaseModel):
    """Same fields and constraints as service.schemas.ActRequest."""

    model_config = ConfigDict(extra="forbid")

    policy: PolicyName
    context: Annotated[list[Finite], Field(min_length=1, max_length=MAX_VECTOR)]
    mask: Annotated[list[StrictBool], Field(min_length=1, max_length=MAX_VECTOR)] | None = None
    unit_id: Annotated[str, Field(max_length=256)] | None = None
    event_id: EventId | None = None
    greedy: StrictBool = False

    _float32 = field_validator("context")(_check_float32)


app = FastAPI(title="bare /act baseline")


@app.post("/act")
async def act(body: ActRequest) -> Response:
    context = np.asarray(body.context, dtype=np.float32)
    scores = WEIGHTS @ context if context.shape[0] == CONTEXT_DIM else np.zeros(NUM_ACTIONS, np.float32)
    if body.mask is not None and len(body.mask) == NUM_ACTIONS:
        scores = np.where(np.asarray(body.mask, dtype=bool), scores, -np.inf).astype(np.float32)
    response = {
        "event_id": body.event_id or uuid.uuid4().hex,
        "action": int(np.argmax(scores)),
        "propensity": 1.0,
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
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
