"""Recording a reward: find its decision, decide whether it is late, append it to the log.

While Redis is away (or older writes still wait in the spool) the reward is spooled with the
time it arrived and recorded by the same rules when the spool drains.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from eventlog import LogUnavailable, RewardRecord
from eventlog.aio import RedisLog
from service.auth import Grant
from service.errors import LateReward, NotFound
from service.metrics import Metrics
from service.registry import PolicyRegistry
from service.schemas.rewards import RewardResponse
from service.spool import Spool

KIND = "reward"


class Rewarder:
    def __init__(self, log: RedisLog, registry: PolicyRegistry, metrics: Metrics, spool: Spool) -> None:
        self.log = log
        self.registry = registry
        self.metrics = metrics
        self.spool = spool
        spool.register(KIND, self._replay)

    async def reward(self, event_id: str, reward: float, grant: Grant, terminal: bool = False) -> RewardResponse:
        """Records one /reward call; raises NotFound, LateReward, Forbidden or SpoolFull."""
        received_ms = int(time.time() * 1000)
        # The token makes the write idempotent: when Redis executed a direct attempt but its
        # reply was lost (a shutdown mid-reply), the spooled copy's replay finds the token and
        # writes nothing (found by tests/test_faults.py: 3 rewards logged twice under load).
        token = uuid.uuid4().hex
        if not self.spool.active:
            try:
                return await self.record(event_id, reward, received_ms, grant.policies, token, terminal=terminal)
            except LogUnavailable as error:
                reason = error.message
        else:
            reason = "older writes are still being written from the spool"
        entry = {
            "event_id": event_id,
            "reward": reward,
            "ts_ms": received_ms,
            "policies": _listed(grant.policies),
            "token": token,
            "terminal": terminal,
        }
        await self.spool.append(KIND, entry, reason)
        self.metrics.spooled.labels(KIND).inc()
        return RewardResponse(
            event_id=event_id,
            accepted=True,
            detail="spooled: the event log is unavailable; it is recorded when Redis is back",
            spooled=True,
        )

    async def record(
        self,
        event_id: str,
        reward: float,
        received_ms: int,
        policies: frozenset[str] | None,
        token: str = "",
        terminal: bool = False,
    ) -> RewardResponse:
        unknown = NotFound(f"event_id: no decision {event_id!r} (unknown, or expired)", "event_id")
        found = await self.log.decision_time(event_id)
        if found is None:
            raise unknown
        policy, decided_ms, experiment = found
        if policies is not None and policy not in policies:
            raise unknown  # a key restricted to other policies learns nothing about this event
        spec = (await self.registry.get(policy)).spec
        late = received_ms > decided_ms + spec.reward.wait_seconds * 1000
        record = RewardRecord(event_id, received_ms, reward, late, terminal=terminal)
        sequence = await self.log.record_reward(policy, record, spec.reward.aggregation, experiment, token)
        if sequence < 0:
            raise unknown
        if late:
            self.metrics.rewards.labels(policy, "late").inc()
            waited = (received_ms - decided_ms) / 1000
            raise LateReward(
                f"event_id: reward came {waited:.1f}s after the decision, past policy {policy!r}'s "
                f"{spec.reward.wait_seconds:g}s window; it is logged as late and not learned from",
                "event_id",
            )
        if spec.reward.aggregation == "sum":
            accepted, detail, outcome = True, f"reward {sequence} of this event, summed", "accepted"
        elif sequence == 1:
            accepted, detail, outcome = True, "first reward", "accepted"
        else:
            detail = f"duplicate: aggregation 'earliest' keeps the first of {sequence}"
            accepted, outcome = False, "duplicate"
        self.metrics.rewards.labels(policy, outcome).inc()
        return RewardResponse(event_id=event_id, accepted=accepted, detail=detail)

    async def _replay(self, entry: dict[str, Any]) -> None:
        policies = entry["policies"]
        allowed = None if policies is None else frozenset(policies)
        await self.record(
            entry["event_id"], entry["reward"], entry["ts_ms"], allowed, entry["token"], entry.get("terminal", False)
        )


def _listed(policies: frozenset[str] | None) -> list[str] | None:
    return None if policies is None else sorted(policies)
