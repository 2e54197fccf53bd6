"""The event log's async client (the API's): policy specs, live pointers, decisions, rewards.

Redis errors become ``LogUnavailable`` (503, retryable) here.
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

from eventlog import keys, scripts
from eventlog.errors import LogUnavailable
from eventlog.records import DecisionRecord, RewardRecord, text
from exporter.spec import PolicySpec

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
            raise LogUnavailable(f"event log unavailable: {error.__class__.__name__}") from error

    return wrapper


class RedisLog:
    def __init__(self, client: aioredis.Redis, event_ttl_margin_seconds: float) -> None:
        self._redis = client
        self._margin_ms = int(event_ttl_margin_seconds * 1000)
        self._record_decisions = client.register_script(scripts.RECORD_DECISIONS_LUA)
        self._record_reward = client.register_script(scripts.RECORD_REWARD_LUA)
        self._move_live = client.register_script(scripts.MOVE_LIVE_LUA)

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
        await self._redis.aclose()

    @_storage_errors
    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    # -- policies ---------------------------------------------------------------------

    @_storage_errors
    async def add_policy(self, spec: PolicySpec, live_version: str) -> bool:
        """Stores a new policy; False if the name is taken."""
        added = await self._redis.hsetnx(keys.POLICIES, spec.name, orjson.dumps(spec.to_dict()))
        if added:
            await self._redis.hset(keys.LIVE, spec.name, live_version)
            await self._redis.hset(keys.MODES, spec.name, spec.mode)
        return bool(added)

    @_storage_errors
    async def mode(self, name: str) -> str:
        """The policy's serving mode (records.MODE_VALUES); online when none was recorded."""
        raw = await self._redis.hget(keys.MODES, name)
        return "online" if raw is None else text(raw)

    @_storage_errors
    async def set_mode(self, name: str, mode: str) -> None:
        await self._redis.hset(keys.MODES, name, mode)

    @_storage_errors
    async def policy(self, name: str) -> tuple[PolicySpec, str] | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.POLICIES, name)
            pipe.hget(keys.LIVE, name)
            raw_spec, live = await pipe.execute()
        if raw_spec is None:
            return None
        return PolicySpec.from_dict(orjson.loads(raw_spec)), text(live or "1.0")

    @_storage_errors
    async def policy_names(self) -> list[str]:
        names: list[Any] = await self._redis.hkeys(keys.POLICIES)
        return sorted(text(name) for name in names)

    @_storage_errors
    async def stats(self, name: str) -> dict[str, int]:
        raw: dict[Any, Any] = await self._redis.hgetall(keys.stats_key(name))
        return {text(k): int(v) for k, v in raw.items()}

    @_storage_errors
    async def live_versions(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self._redis.hgetall(keys.LIVE)
        return {text(k): text(v) for k, v in raw.items()}

    @_storage_errors
    async def move_live(self, name: str, expected: str, version: str) -> bool:
        """Moves the live pointer from ``expected`` to ``version`` and announces it; False when
        the live version is no longer ``expected`` (scripts.MOVE_LIVE_LUA)."""
        call_keys, args = scripts.move_live_call(name, expected, version)
        return int(await self._move_live(keys=call_keys, args=args)) == scripts.MOVED

    @_storage_errors
    async def next_checkpoint(self, name: str) -> int:
        return int(await self._redis.incr(keys.checkpoint_seq_key(name)))

    @_storage_errors
    async def trainer_stats(self, name: str) -> dict[str, str]:
        """The trainer's view of a policy, plus "holder": the trainer holding its lease, if any."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.trainer_key(name))
            pipe.get(keys.lease_key(name))
            raw, holder = await pipe.execute()
        stats = {text(k): text(v) for k, v in raw.items()}
        if holder is not None:
            stats["holder"] = text(holder)
        return stats

    # -- experiments ------------------------------------------------------------------

    @_storage_errors
    async def add_experiment(self, name: str, definition: dict[str, Any], change: dict[str, Any]) -> bool:
        """Stores a new experiment and its first change-log entry; False if the name is taken."""
        if not await self._redis.hsetnx(keys.EXPERIMENTS, name, orjson.dumps(definition)):
            return False
        await self._redis.rpush(keys.experiment_changes_key(name), orjson.dumps(change))
        return True

    @_storage_errors
    async def update_experiment(self, name: str, definition: dict[str, Any], change: dict[str, Any]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.EXPERIMENTS, name, orjson.dumps(definition))
            pipe.rpush(keys.experiment_changes_key(name), orjson.dumps(change))
            await pipe.execute()

    @_storage_errors
    async def experiment(self, name: str) -> dict[str, Any] | None:
        raw: Any = await self._redis.hget(keys.EXPERIMENTS, name)
        return None if raw is None else orjson.loads(raw)

    @_storage_errors
    async def experiment_names(self) -> list[str]:
        names: list[Any] = await self._redis.hkeys(keys.EXPERIMENTS)
        return sorted(text(n) for n in names)

    @_storage_errors
    async def experiment_changes(self, name: str) -> list[dict[str, Any]]:
        raw: list[Any] = await self._redis.lrange(keys.experiment_changes_key(name), 0, -1)
        return [orjson.loads(item) for item in raw]

    @_storage_errors
    async def experiment_stats(self, name: str) -> dict[str, tuple[float, float, float]]:
        """{variant: (count, sum, sum of squares)} of the experiment's first in-time rewards."""
        raw: dict[Any, Any] = await self._redis.hgetall(keys.experiment_stats_key(name))
        return keys.variant_stats({text(k): float(v) for k, v in raw.items()})

    @_storage_errors
    async def read_streams(self, policy: str) -> tuple[list[Any], list[Any]]:
        """Every decision and reward entry of a policy (for reports): (decisions, rewards)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(keys.decisions_key(policy))
            pipe.xrange(keys.rewards_key(policy))
            decisions, rewards = await pipe.execute()
        return decisions, rewards

    async def announcements(self) -> AsyncIterator[tuple[str, str]]:
        """Yields (policy, version) for every live-version announcement; LogUnavailable on failure."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.ANNOUNCE)
            async for message in pubsub.listen():
                name, _, version = text(message["data"]).partition(" ")
                yield name, version
        except RedisError as error:
            raise LogUnavailable(f"event log unavailable: {error.__class__.__name__}") from error
        finally:
            await pubsub.aclose()

    # -- decisions and rewards --------------------------------------------------------

    @_storage_errors
    async def record_decisions(
        self, records: list[DecisionRecord], responses: list[bytes], wait_seconds: float
    ) -> list[tuple[str, bytes] | None]:
        """Writes a batch of decisions of one policy with one script call.

        Returns, per row, None when it was recorded, or (policy, response) of an earlier
        decision that already holds its event id (nothing is written for that row).
        """
        ttl_ms = int(wait_seconds * 1000) + self._margin_ms
        call_keys, args = scripts.record_decisions_call(records, responses, ttl_ms)
        return scripts.recorded_decisions(await self._record_decisions(keys=call_keys, args=args))

    @_storage_errors
    async def find_decision(self, event_id: str) -> tuple[str, bytes] | None:
        """(policy, response JSON) of a known event id, else None."""
        values: list[Any] = await self._redis.hmget(keys.event_key(event_id), [keys.EVENT_POLICY, keys.EVENT_RESPONSE])
        policy, response = values
        return None if response is None else (text(policy), response)

    @_storage_errors
    async def decision_time(self, event_id: str) -> tuple[str, int, str | None] | None:
        """(policy, decision time in ms, experiment or None) of a known event id, else None."""
        values: list[Any] = await self._redis.hmget(
            keys.event_key(event_id), [keys.EVENT_POLICY, keys.EVENT_TS_MS, keys.EVENT_EXPERIMENT]
        )
        policy, ts_ms, experiment = values
        if policy is None:
            return None
        return text(policy), int(ts_ms), None if experiment is None else text(experiment)

    @_storage_errors
    async def record_reward(
        self,
        policy: str,
        record: RewardRecord,
        aggregation: str,
        experiment: str | None = None,
        token: str = "",
    ) -> int:
        """Appends a reward; returns its sequence number for the event, or -1 if the event expired.
        A non-empty ``token`` makes the call idempotent (spool replays)."""
        call_keys, args = scripts.record_reward_call(policy, record, aggregation, experiment, token)
        return int(await self._record_reward(keys=call_keys, args=args))
