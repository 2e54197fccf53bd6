"""Turns /act requests into logged decisions: batch, call the SavedModel, log, answer.

Checking and packing a request's inputs is service.inputs'."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson

import bandits
from eventlog import DecisionRecord, LogUnavailable
from eventlog.aio import RedisLog
from exporter.spec import baseline_actions
from service.batcher import MicroBatcher
from service.errors import Conflict, InvalidInput, ServiceError
from service.experiments import ExperimentRouter
from service.inputs import PackedInputs, batch_inputs, validate_inputs
from service.metrics import Metrics
from service.modes import PolicyModes
from service.registry import PolicyRegistry, ServedPolicy
from service.schemas.act import ActRequest
from service.spool import Spool

logger = logging.getLogger(__name__)

KIND = "decisions"
"""The spool entry kind of a batch of decisions."""
_SEED_MASK = (1 << 63) - 1


def seed_for(event_id: str) -> int:
    """The RNG seed of a decision: a stable hash of its event id, so a retry decides alike."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") & _SEED_MASK


@dataclasses.dataclass(frozen=True)
class Row:
    """One validated /act request waiting in a batch."""

    event_id: str
    inputs: PackedInputs
    greedy: bool
    unit_id: str | None
    experiment: str | None = None
    variant: str | None = None
    variant_probability: float = 1.0
    session_id: str | None = None
    apprentice: bool = False
    """Serve the policy's baseline action; log the policy's own choice beside it."""


class Decider:
    def __init__(
        self,
        registry: PolicyRegistry,
        log: RedisLog,
        metrics: Metrics,
        batch_max_size: int,
        batch_max_wait_seconds: float,
        experiments: ExperimentRouter,
        spool: Spool,
        modes: PolicyModes,
    ) -> None:
        self.experiments = experiments
        self.modes = modes
        self.spool = spool
        spool.register(KIND, self._replay)
        self.registry = registry
        self.log = log
        self.metrics = metrics
        self._max_size = batch_max_size
        self._max_wait = batch_max_wait_seconds
        self._batchers: dict[str, MicroBatcher[Row, bytes | ServiceError]] = {}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="savedmodel")

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._executor.shutdown(wait=False)

    async def act(self, request: ActRequest) -> bytes:
        """The JSON body of the /act response, returned once its decision is in Redis."""
        if request.event_id is not None and not self.spool.active:
            try:
                earlier = await self.log.find_decision(request.event_id)
            except LogUnavailable:
                earlier = None  # the spool drain still refuses a second decision for the event id
            if earlier is not None:
                return self._repeat(request, *earlier)
        event_id = request.event_id or uuid.uuid4().hex
        assignment = None
        if request.experiment is not None:
            assignment = await self.experiments.assign(request.experiment, request.unit_id, seed_for(event_id))
            policy = assignment.variant.policy
        else:
            assert request.policy is not None
            policy = request.policy
        served = await self.registry.get(policy)
        inputs = validate_inputs(served.spec, request)
        if request.session_id is None and bandits.ALGORITHMS[served.spec.algorithm].sequential:
            raise InvalidInput(
                f"session_id: policy {policy!r} ({served.spec.algorithm}) learns from episodes; give a session_id",
                "session_id",
            )
        row = Row(
            event_id=event_id,
            inputs=inputs,
            greedy=request.greedy,
            unit_id=request.unit_id,
            session_id=request.session_id,
            apprentice=served.spec.baseline is not None and await self.modes.get(policy) == "apprentice",
        )
        if assignment is not None:
            row = dataclasses.replace(
                row,
                experiment=assignment.experiment.name,
                variant=assignment.variant.name,
                variant_probability=assignment.probability,
            )
        batcher = self._batchers.get(policy)
        if batcher is None:
            batcher = MicroBatcher(self._batch_processor(policy), self._max_size, self._max_wait)
            self._batchers[policy] = batcher
        result = await batcher.submit(row)
        if isinstance(result, ServiceError):
            raise result
        return result

    @staticmethod
    def _repeat(request: ActRequest, policy: str, response: bytes) -> bytes:
        if request.experiment is not None:
            if orjson.loads(response).get("experiment") != request.experiment:
                raise Conflict("event_id: already used by a decision outside this experiment", "event_id")
        elif policy != request.policy:
            raise Conflict(f"event_id: already used by a decision of policy {policy!r}", "event_id")
        return response

    def _batch_processor(self, policy: str):  # type: ignore[no-untyped-def]
        async def process(rows: list[Row]) -> Awaitable[list[bytes | ServiceError]]:
            return await self._decide(await self.registry.get(policy), rows)

        return process

    async def _decide(self, served: ServedPolicy, rows: list[Row]) -> Awaitable[list[bytes | ServiceError]]:
        """Stage one: the model call. Returns stage two, which logs the batch and answers."""
        spec = served.spec
        name = spec.name
        self.metrics.batch_size.labels(name).observe(len(rows))
        now_ms = int(time.time() * 1000)
        loop = asyncio.get_running_loop()
        decided: list[dict[str, np.ndarray] | None] = [None] * len(rows)
        slot = served.slot
        slot.users += 1  # the registry does not restore into a copy while a batch uses it
        try:
            for greedy in (False, True):
                index = [i for i, row in enumerate(rows) if row.greedy is greedy]
                if not index:
                    continue
                context, mask, extra = batch_inputs(spec, [rows[i].inputs for i in index])
                seed = np.array([seed_for(rows[i].event_id) for i in index], dtype=np.int64)
                decide = functools.partial(slot.model.decide, greedy, context, mask, seed, **extra)
                out = await loop.run_in_executor(self._executor, decide)
                self.metrics.model_calls.labels(name, "greedy" if greedy else "collect").inc()
                for j, i in enumerate(index):
                    decided[i] = {key: value[j] for key, value in out.items()}
        finally:
            slot.users -= 1
        shadows = await self._shadow(served, rows, decided)
        return self._record(served, rows, decided, now_ms, shadows)

    async def _shadow(
        self, served: ServedPolicy, rows: list[Row], decided: list[dict[str, np.ndarray] | None]
    ) -> list[dict[str, dict[str, Any]] | None]:
        """Every shadow of the policy scores the batch: its own collect choice and its probability
        of the served action, logged with the decision and never returned."""
        shadows = self.registry.shadows_of(served.spec.name)
        if not shadows:
            return [None] * len(rows)
        context, mask, extra = batch_inputs(served.spec, [row.inputs for row in rows])
        seed = np.array([seed_for(row.event_id) for row in rows], dtype=np.int64)
        served_actions = np.array([int(d["action"]) for d in decided if d is not None])
        loop = asyncio.get_running_loop()
        per_row: list[dict[str, dict[str, Any]]] = [{} for _ in rows]
        for shadow in shadows:
            slot = shadow.slot
            slot.users += 1
            try:
                decide = functools.partial(slot.model.decide, False, context, mask, seed, **extra)
                distribution = functools.partial(slot.model.probabilities, False, context, mask, seed, **extra)
                out = await loop.run_in_executor(self._executor, decide)
                probs = await loop.run_in_executor(self._executor, distribution)
            finally:
                slot.users -= 1
            for i, row_shadows in enumerate(per_row):
                row_shadows[shadow.spec.name] = {
                    "version": shadow.version,
                    "action": int(out["action"][i]),
                    "propensity": float(out["propensity"][i]),
                    "served_action_probability": float(probs[i, served_actions[i]]),
                }
        return list(per_row)

    async def _record(
        self,
        served: ServedPolicy,
        rows: list[Row],
        decided: list[dict[str, np.ndarray] | None],
        now_ms: int,
        shadows: list[dict[str, dict[str, Any]] | None],
    ) -> list[bytes | ServiceError]:
        """Stage two: logs the batch's decisions, then builds each caller's answer."""
        spec = served.spec
        name = spec.name
        answered = [
            _answer(served, row, decision, now_ms, shadow)
            for row, decision, shadow in zip(rows, decided, shadows, strict=True)
        ]
        records = [record for record, _ in answered]
        responses = [response for _, response in answered]
        earlier = await self._log(records, responses, spec.reward.wait_seconds)
        results: list[bytes | ServiceError] = []
        for row, response, prior in zip(rows, responses, earlier, strict=True):
            if prior is None:
                self.metrics.decisions.labels(name, "greedy" if row.greedy else "collect").inc()
                results.append(response)
            elif prior[0] != name:
                results.append(Conflict(f"event_id: already used by a decision of policy {prior[0]!r}", "event_id"))
            else:
                results.append(prior[1])  # a concurrent repeat of the same event id won the race
        return results

    async def _log(
        self, records: list[DecisionRecord], responses: list[bytes], wait_seconds: float
    ) -> list[tuple[str, bytes] | None]:
        """Writes to Redis, or (Redis away, or older writes still spooled) to the spool."""
        if not self.spool.active:
            try:
                return await self.log.record_decisions(records, responses, wait_seconds)
            except LogUnavailable as error:
                reason = error.message
        else:
            reason = "older writes are still being written from the spool"
        entry = {
            "wait_seconds": wait_seconds,
            "records": [record.to_fields() for record in records],
            "responses": [response.decode() for response in responses],
        }
        await self.spool.append(KIND, entry, reason)  # SpoolFull: every caller of the batch gets 503
        self.metrics.spooled.labels(KIND).inc(len(records))
        return [None] * len(records)

    async def _replay(self, entry: dict[str, Any]) -> None:
        records = [DecisionRecord.from_fields(fields) for fields in entry["records"]]
        responses = [response.encode() for response in entry["responses"]]
        earlier = await self.log.record_decisions(records, responses, entry["wait_seconds"])
        for record, prior in zip(records, earlier, strict=True):
            if prior is not None:  # its event id was taken meanwhile: the spooled answer was a second one
                logger.warning("spool: event id %s was already decided; spooled decision dropped", record.event_id)


def _answer(
    served: ServedPolicy,
    row: Row,
    decision: dict[str, np.ndarray] | None,
    now_ms: int,
    shadows: dict[str, dict[str, Any]] | None,
) -> tuple[DecisionRecord, bytes]:
    """One row's decision record and the JSON body of its answer. Apprentice mode answers the
    baseline action (propensity 1) and records the policy's own choice beside it; an experiment
    multiplies the propensity by the variant's probability."""
    assert decision is not None
    spec, inputs = served.spec, row.inputs
    out: dict[str, Any] = dict(decision)
    index = int(out["action"])
    apprentice = None
    if row.apprentice:
        assert spec.baseline is not None
        apprentice = {"action": index, "propensity": float(out["propensity"])}
        out["propensity"] = np.float32(1.0)
        allowed = np.ones((1, len(out["scores"])), bool) if inputs.mask is None else inputs.mask[None]
        index = int(baseline_actions(spec.baseline, allowed)[0])
    body: dict[str, Any] = {"event_id": row.event_id, "action": index}
    scores = out["scores"]
    if inputs.candidate_ids is not None:
        scores = scores[: len(inputs.candidate_ids)]
        body = {"event_id": row.event_id, "action": inputs.candidate_ids[index], "action_index": index}
    body |= {"propensity": out["propensity"], "policy": spec.name, "version": served.version, "scores": scores}
    if row.apprentice:
        body["mode"] = "apprentice"
    if row.experiment is not None:
        body["propensity"] = np.float32(row.variant_probability * float(out["propensity"]))
        body["experiment"] = row.experiment
        body["variant"] = row.variant
        body["variant_probability"] = row.variant_probability
    record = DecisionRecord(
        event_id=row.event_id,
        ts_ms=now_ms,
        policy=spec.name,
        version=served.version,
        context=inputs.context.tolist(),
        mask=None if inputs.mask is None else inputs.mask.tolist(),
        action=index,
        propensity=float(out["propensity"]),
        scores=scores.tolist(),
        greedy=row.greedy,
        unit_id=row.unit_id,
        seed=seed_for(row.event_id),
        experiment=row.experiment,
        variant=row.variant,
        variant_probability=row.variant_probability,
        shadows=shadows,
        session_id=row.session_id,
        context_categorical=inputs.context_categorical,
        candidates=inputs.candidate_ids,
        action_features=inputs.action_features,  # orjson writes the array itself: no tolist()
        action_categorical=inputs.action_categorical,
        apprentice=apprentice,
    )
    return record, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
