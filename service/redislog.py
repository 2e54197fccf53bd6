"""The service's only door to Redis: policy specs, live pointers, decisions, rewards, stats.

Key names and record formats come from training.eventlog; Redis errors become
``Unavailable`` (503, retryable) here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from exporter.spec import PolicySpec
from service.errors import Unavailable
from training import eventlog

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _storage_errors(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except RedisError as error:
            logger.warning("redis error in %s: %s", method.__name__, error)
            raise Unavailable(f"event log unavailable: {error.__class__.__name__}") from error

    return wrapper


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flatten(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


class RedisLog:
    def __init__(self, client: aioredis.Redis, event_ttl_margin_seconds: float) -> None:
        self.client = client
        self._margin_ms = int(event_ttl_margin_seconds * 1000)
        self._record_decisions = client.register_script(eventlog.RECORD_DECISIONS_LUA)
        self._record_reward = client.register_script(eventlog.RECORD_REWARD_LUA)

    @classmethod
    def from_url(cls, url: str, event_ttl_margin_seconds: float) -> RedisLog:
        # Fail fast when Redis is away (the caller spools): one quick retry for a dropped
        # connection, not redis-py's default of seconds of backoff, and a bounded connect.
        client = aioredis.Redis.from_url(
            url,
            decode_responses=False,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            socket_connect_timeout=1.0,
        )
        return cls(client, event_ttl_margin_seconds)

    async def close(self) -> None:
        await self.client.aclose()

    @_storage_errors
    async def ping(self) -> bool:
        return bool(await self.client.ping())

    # -- policies ---------------------------------------------------------------------

    @_storage_errors
    async def add_policy(self, spec: PolicySpec, live_version: str) -> bool:
        """Stores a new policy; False if the name is taken."""
        added = await self.client.hsetnx(eventlog.POLICIES, spec.name, orjson.dumps(spec.to_dict()))
        if added:
            await self.client.hset(eventlog.LIVE, spec.name, live_version)
            await self.client.hset(eventlog.MODES, spec.name, spec.mode)
        return bool(added)

    @_storage_errors
    async def mode(self, name: str) -> str:
        """The policy's serving mode (eventlog.MODE_VALUES); online when none was recorded."""
        raw = await self.client.hget(eventlog.MODES, name)
        return "online" if raw is None else _str(raw)

    @_storage_errors
    async def set_mode(self, name: str, mode: str) -> None:
        await self.client.hset(eventlog.MODES, name, mode)

    @_storage_errors
    async def policy(self, name: str) -> tuple[PolicySpec, str] | None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(eventlog.POLICIES, name)
            pipe.hget(eventlog.LIVE, name)
            raw_spec, live = await pipe.execute()
        if raw_spec is None:
            return None
        return PolicySpec.from_dict(orjson.loads(raw_spec)), _str(live or "1.0")

    @_storage_errors
    async def policy_names(self) -> list[str]:
        names: list[Any] = await self.client.hkeys(eventlog.POLICIES)
        return sorted(_str(name) for name in names)

    @_storage_errors
    async def stats(self, name: str) -> dict[str, int]:
        raw: dict[Any, Any] = await self.client.hgetall(eventlog.stats_key(name))
        return {_str(k): int(v) for k, v in raw.items()}

    @_storage_errors
    async def live_versions(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self.client.hgetall(eventlog.LIVE)
        return {_str(k): _str(v) for k, v in raw.items()}

    @_storage_errors
    async def set_live(self, name: str, version: str) -> None:
        """Moves the live pointer and announces it (a rollback)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(eventlog.LIVE, name, version)
            pipe.publish(eventlog.ANNOUNCE, f"{name} {version}")
            await pipe.execute()

    @_storage_errors
    async def next_checkpoint(self, name: str) -> int:
        return int(await self.client.incr(eventlog.checkpoint_seq_key(name)))

    @_storage_errors
    async def trainer_stats(self, name: str) -> dict[str, str]:
        """The trainer's view of a policy, plus "holder": the trainer holding its lease, if any."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(eventlog.trainer_key(name))
            pipe.get(eventlog.lease_key(name))
            raw, holder = await pipe.execute()
        stats = {_str(k): _str(v) for k, v in raw.items()}
        if holder is not None:
            stats["holder"] = _str(holder)
        return stats

    # -- experiments ------------------------------------------------------------------

    @_storage_errors
    async def add_experiment(self, name: str, definition: dict[str, Any], change: dict[str, Any]) -> bool:
        """Stores a new experiment and its first change-log entry; False if the name is taken."""
        if not await self.client.hsetnx(eventlog.EXPERIMENTS, name, orjson.dumps(definition)):
            return False
        await self.client.rpush(eventlog.experiment_changes_key(name), orjson.dumps(change))
        return True

    @_storage_errors
    async def update_experiment(self, name: str, definition: dict[str, Any], change: dict[str, Any]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(eventlog.EXPERIMENTS, name, orjson.dumps(definition))
            pipe.rpush(eventlog.experiment_changes_key(name), orjson.dumps(change))
            await pipe.execute()

    @_storage_errors
    async def experiment(self, name: str) -> dict[str, Any] | None:
        raw: Any = await self.client.hget(eventlog.EXPERIMENTS, name)
        return None if raw is None else orjson.loads(raw)

    @_storage_errors
    async def experiment_names(self) -> list[str]:
        names: list[Any] = await self.client.hkeys(eventlog.EXPERIMENTS)
        return sorted(_str(n) for n in names)

    @_storage_errors
    async def experiment_changes(self, name: str) -> list[dict[str, Any]]:
        raw: list[Any] = await self.client.lrange(eventlog.experiment_changes_key(name), 0, -1)
        return [orjson.loads(item) for item in raw]

    @_storage_errors
    async def experiment_stats(self, name: str) -> dict[str, float]:
        raw: dict[Any, Any] = await self.client.hgetall(eventlog.experiment_stats_key(name))
        return {_str(k): float(v) for k, v in raw.items()}

    @_storage_errors
    async def read_streams(self, policy: str) -> tuple[list[Any], list[Any]]:
        """Every decision and reward entry of a policy (for reports): (decisions, rewards)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.xrange(eventlog.decisions_key(policy))
            pipe.xrange(eventlog.rewards_key(policy))
            decisions, rewards = await pipe.execute()
        return decisions, rewards

    async def announcements(self) -> AsyncIterator[tuple[str, str]]:
        """Yields (policy, version) for every live-version announcement; RedisError on failure."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(eventlog.ANNOUNCE)
            async for message in pubsub.listen():
                name, _, version = _str(message["data"]).partition(" ")
                yield name, version
        finally:
            await pubsub.aclose()

    # -- decisions and rewards --------------------------------------------------------

    @_storage_errors
    async def record_decisions(
        self, records: list[eventlog.DecisionRecord], responses: list[bytes], wait_seconds: float
    ) -> list[tuple[str, bytes] | None]:
        """Writes a batch of decisions of one policy with one script call.

        Returns, per row, None when it was recorded, or (policy, response) of an earlier
        decision that already holds its event id (nothing is written for that row).
        """
        policy = records[0].policy
        names = list(records[0].to_fields())
        keys = [eventlog.decisions_key(policy), eventlog.stats_key(policy)]
        ttl_ms = int(wait_seconds * 1000) + self._margin_ms
        positions = [names.index("experiment") + 1, names.index("variant") + 1]
        args: list[Any] = [policy, records[0].ts_ms, ttl_ms, len(names), *positions, *names]
        for record, response in zip(records, responses, strict=True):
            keys.append(eventlog.event_key(record.event_id))
            args.append(response)
            args.extend(record.to_fields().values())
        replies = await self._record_decisions(keys=keys, args=args)
        return [None if reply == 1 else (_str(reply[0]), reply[1]) for reply in replies]

    @_storage_errors
    async def find_decision(self, event_id: str) -> tuple[str, bytes] | None:
        """(policy, response JSON) of a known event id, else None."""
        values: list[Any] = await self.client.hmget(
            eventlog.event_key(event_id), [eventlog.EVENT_POLICY, eventlog.EVENT_RESPONSE]
        )
        policy, response = values
        return None if response is None else (_str(policy), response)

    @_storage_errors
    async def decision_time(self, event_id: str) -> tuple[str, int, str | None] | None:
        """(policy, decision time in ms, experiment or None) of a known event id, else None."""
        values: list[Any] = await self.client.hmget(
            eventlog.event_key(event_id), [eventlog.EVENT_POLICY, eventlog.EVENT_TS_MS, eventlog.EVENT_EXPERIMENT]
        )
        policy, ts_ms, experiment = values
        if policy is None:
            return None
        return _str(policy), int(ts_ms), None if experiment is None else _str(experiment)

    @_storage_errors
    async def record_reward(
        self,
        policy: str,
        record: eventlog.RewardRecord,
        aggregation: str,
        experiment: str | None = None,
        token: str = "",
    ) -> int:
        """Appends a reward; returns its sequence number for the event, or -1 if the event expired.
        A non-empty ``token`` makes the call idempotent (spool replays)."""
        keys = [eventlog.event_key(record.event_id), eventlog.rewards_key(policy), eventlog.stats_key(policy)]
        keys.append(eventlog.experiment_stats_key(experiment or policy))  # unused without an experiment
        args = ["1" if record.late else "0", aggregation, token, *_flatten(record.to_fields())]
        return int(await self._record_reward(keys=keys, args=args))
