"""Turns /act requests into logged decisions: validate, batch, call the SavedModel, log, answer."""

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
from bandits.features import FeatureError, FeatureSchema
from eventlog import DecisionRecord, LogUnavailable
from eventlog.aio import RedisLog
from exporter.spec import PolicySpec, baseline_actions
from service.batcher import MicroBatcher
from service.errors import Conflict, InvalidInput, ServiceError
from service.experiments import ExperimentRouter
from service.metrics import Metrics
from service.modes import PolicyModes
from service.registry import PolicyRegistry, ServedPolicy
from service.schemas import FLOAT32_MAX, ActRequest, Candidate
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
    """One validated /act request waiting in a batch, its inputs packed (bandits.features)."""

    event_id: str
    context: np.ndarray  # [n] float32: the vector, or the named numeric values in schema order
    mask: np.ndarray | None  # [K] bool (candidate sets: always set, False where excluded)
    greedy: bool
    unit_id: str | None
    experiment: str | None = None
    variant: str | None = None
    variant_probability: float = 1.0
    session_id: str | None = None
    context_categorical: list[str] | None = None
    """Named contexts: the categorical values in schema order."""
    candidate_ids: list[str] | None = None
    """Candidate sets: the ids, in request order."""
    action_features: np.ndarray | None = None  # [K, n_a] float32
    action_categorical: list[list[str]] | None = None  # [K][m_a]
    apprentice: bool = False
    """Serve the policy's baseline action; log the policy's own choice beside it."""


def _features(schema: FeatureSchema, values: list[float] | dict[str, Any], field: str) -> tuple[list[float], list[str]]:
    """Packs a vector or named values under a schema; FeatureError becomes a 422 naming the field."""
    try:
        if isinstance(values, dict):
            if not schema.named:
                raise FeatureError(field, f"expected a vector of {schema.dim} numbers, got named features")
            return schema.pack(values, field)
        return schema.pack_vector(values, field)
    except FeatureError as error:
        raise InvalidInput(str(error), error.field) from error


def validate_inputs(spec: PolicySpec, request: ActRequest) -> dict[str, Any]:
    """Checks the request against the policy's inputs; returns Row's input fields, packed."""
    name = request.policy or spec.name
    context, categorical = _features(spec.context_schema, request.context, "context")
    fields: dict[str, Any] = {
        "context": np.asarray(context, dtype=np.float32),
        "context_categorical": categorical if spec.context_schema.named else None,
    }
    if spec.takes_candidates:
        fields |= _candidates(spec, request, name)
        return fields
    if request.actions is not None:
        raise InvalidInput(
            f"actions: policy {name!r} has a fixed set of {spec.num_actions} actions; it takes no candidates", "actions"
        )
    mask = None
    if request.mask is not None:
        if len(request.mask) != spec.num_actions:
            raise InvalidInput(
                f"mask: expected {spec.num_actions} values for policy {name!r}, got {len(request.mask)}", "mask"
            )
        mask = np.asarray(request.mask, dtype=bool)
        if not mask.any():
            raise InvalidInput("mask: allows no action; at least one value must be true", "mask")
    if request.excluded:
        for value in request.excluded:
            if not (isinstance(value, int) and 0 <= value < spec.num_actions):
                raise InvalidInput(
                    f"excluded: {value!r} is not an action index of policy {name!r} (0 to {spec.num_actions - 1})",
                    "excluded",
                )
        mask = np.ones(spec.num_actions, bool) if mask is None else mask.copy()
        mask[[int(value) for value in request.excluded]] = False
        if not mask.any():
            raise InvalidInput("excluded: excludes every allowed action; at least one must remain", "excluded")
    fields["mask"] = mask
    return fields


def _candidates(spec: PolicySpec, request: ActRequest, name: str) -> dict[str, Any]:
    schema = spec.action_schema
    assert schema is not None
    if request.actions is None:
        raise InvalidInput(
            f"actions: policy {name!r} chooses among per-request candidates; give 1 to {spec.num_actions} actions",
            "actions",
        )
    if len(request.actions) > spec.num_actions:
        raise InvalidInput(
            f"actions: {len(request.actions)} candidates, policy {name!r} takes at most {spec.num_actions}", "actions"
        )
    if request.mask is not None:
        raise InvalidInput("mask: candidate sets name the candidates to leave out in excluded", "mask")
    ids = [candidate.id for candidate in request.actions]
    seen: set[str] = set()
    for i, candidate_id in enumerate(ids):
        if candidate_id in seen:
            raise InvalidInput(f"actions[{i}].id: {candidate_id!r} appears twice", f"actions[{i}].id")
        seen.add(candidate_id)
    numeric, categorical = _candidate_features(schema, request.actions)
    mask = np.ones(len(ids), bool)
    for value in request.excluded or ():
        if not isinstance(value, str) or value not in seen:
            raise InvalidInput(f"excluded: {value!r} is not the id of one of the actions", "excluded")
        mask[ids.index(value)] = False
    if not mask.any():
        raise InvalidInput("excluded: excludes every candidate; at least one must remain", "excluded")
    return {"mask": mask, "candidate_ids": ids, "action_features": numeric, "action_categorical": categorical}


def _candidate_features(schema: FeatureSchema, actions: list[Candidate]) -> tuple[np.ndarray, list[list[str]] | None]:
    """Every candidate's packed features: numeric [K, n_a] float32 and, for named schemas, the
    categorical values. Plain vectors are checked for all candidates at once (one numpy pass,
    not one per candidate: at 256 candidates that was a quarter of the request's time)."""
    if schema.named:
        packed = [_features(schema, c.features, f"actions[{i}].features") for i, c in enumerate(actions)]
        numeric = np.asarray([values for values, _ in packed], np.float32).reshape(len(actions), schema.numeric_width)
        return numeric, [strings for _, strings in packed]
    for i, candidate in enumerate(actions):
        features = candidate.features
        if isinstance(features, dict) or len(features) != schema.dim:
            _features(schema, features, f"actions[{i}].features")  # raises the 422 that names the problem
    values = np.asarray([c.features for c in actions], np.float64).reshape(len(actions), schema.dim)
    too_big = np.argwhere(np.abs(values) > FLOAT32_MAX)
    if too_big.size:
        i, j = (int(v) for v in too_big[0])
        raise InvalidInput(
            f"actions[{i}].features: value at index {j} overflows float32 (|x| > {FLOAT32_MAX:.6g})",
            f"actions[{i}].features",
        )
    return values.astype(np.float32), None


def batch_inputs(spec: PolicySpec, rows: list[Row]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The rows as one SavedModel call: context [B, n], mask [B, K] and the layout's other inputs.

    Candidate sets are padded to the batch's largest K (padding masked out)."""
    context = np.stack([row.context for row in rows])
    extra: dict[str, np.ndarray] = {}
    if spec.context_schema.named:
        width = spec.context_schema.categorical_width
        extra["context_categorical"] = np.array([row.context_categorical for row in rows], object).reshape(
            len(rows), width
        )
    if not spec.takes_candidates:
        all_allowed = np.ones(spec.num_actions, bool)
        mask = np.stack([m if (m := row.mask) is not None else all_allowed for row in rows])
        return context, mask, extra
    schema = spec.action_schema
    assert schema is not None
    k = max(len(row.candidate_ids or ()) for row in rows)
    mask = np.zeros((len(rows), k), bool)
    features = np.zeros((len(rows), k, schema.numeric_width), np.float32)
    categorical = np.full((len(rows), k, schema.categorical_width), "", object)
    for i, row in enumerate(rows):
        assert row.mask is not None and row.action_features is not None
        size = len(row.mask)
        mask[i, :size] = row.mask
        features[i, :size] = row.action_features
        if row.action_categorical is not None:
            categorical[i, :size] = np.array(row.action_categorical, object).reshape(size, schema.categorical_width)
    return context, mask, extra | {"action_features": features, "action_categorical": categorical}


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
            greedy=request.greedy,
            unit_id=request.unit_id,
            session_id=request.session_id,
            apprentice=served.spec.baseline is not None and await self.modes.get(policy) == "apprentice",
            **inputs,
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
                context, mask, extra = batch_inputs(spec, [rows[i] for i in index])
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
        context, mask, extra = batch_inputs(served.spec, rows)
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
        records: list[DecisionRecord] = []
        responses: list[bytes] = []
        for row, decision, shadow in zip(rows, decided, shadows, strict=True):
            assert decision is not None
            out: dict[str, Any] = dict(decision)
            index = int(out["action"])
            apprentice = None
            if row.apprentice:
                assert spec.baseline is not None
                apprentice = {"action": index, "propensity": float(out["propensity"])}
                out["propensity"] = np.float32(1.0)
                allowed = np.ones((1, len(out["scores"])), bool) if row.mask is None else row.mask[None]
                index = int(baseline_actions(spec.baseline, allowed)[0])
            body: dict[str, Any] = {"event_id": row.event_id, "action": index}
            scores = out["scores"]
            if row.candidate_ids is not None:
                scores = scores[: len(row.candidate_ids)]
                body = {"event_id": row.event_id, "action": row.candidate_ids[index], "action_index": index}
            body |= {"propensity": out["propensity"], "policy": name, "version": served.version, "scores": scores}
            if row.apprentice:
                body["mode"] = "apprentice"
            if row.experiment is not None:
                body["propensity"] = np.float32(row.variant_probability * float(out["propensity"]))
                body["experiment"] = row.experiment
                body["variant"] = row.variant
                body["variant_probability"] = row.variant_probability
            responses.append(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
            records.append(
                DecisionRecord(
                    event_id=row.event_id,
                    ts_ms=now_ms,
                    policy=name,
                    version=served.version,
                    context=row.context.tolist(),
                    mask=None if row.mask is None else row.mask.tolist(),
                    action=index,
                    propensity=float(out["propensity"]),
                    scores=scores.tolist(),
                    greedy=row.greedy,
                    unit_id=row.unit_id,
                    seed=seed_for(row.event_id),
                    experiment=row.experiment,
                    variant=row.variant,
                    variant_probability=row.variant_probability,
                    shadows=shadow,
                    session_id=row.session_id,
                    context_categorical=row.context_categorical,
                    candidates=row.candidate_ids,
                    action_features=row.action_features,  # orjson writes the array itself: no tolist()
                    action_categorical=row.action_categorical,
                    apprentice=apprentice,
                )
            )
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
