"""The event log's sync client (the trainer's and the batch jobs'): reads the log, holds
leases, moves the live pointer, imports logged data.

Redis errors become ``LogUnavailable`` here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import orjson
import redis
from redis.exceptions import RedisError

from eventlog import keys, scripts
from eventlog.errors import LogUnavailable
from eventlog.records import DecisionRecord, RewardRecord, TrainingDecision, text
from exporter.spec import PolicySpec

P = ParamSpec("P")
R = TypeVar("R")

READ_BATCH = 5000
"""Stream entries per round trip when a job scans a whole stream."""


def _storage_errors(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except RedisError as error:
            raise LogUnavailable(f"event log unavailable: {error.__class__.__name__}: {error}") from error

    return wrapper


def ping(url: str, timeout_seconds: float = 0.2) -> bool:
    """Whether a Redis server answers at ``url`` (False instead of an error)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


class LogClient:
    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, health_check_interval=30)
        self._lease = self._redis.register_script(scripts.LEASE_LUA)
        self._move_live = self._redis.register_script(scripts.MOVE_LIVE_LUA)
        self._record_decisions = self._redis.register_script(scripts.RECORD_DECISIONS_LUA)
        self._record_reward = self._redis.register_script(scripts.RECORD_REWARD_LUA)

    def close(self) -> None:
        self._redis.close()

    @_storage_errors
    def server_time_ms(self) -> int:
        seconds, micros = self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # -- policies -------------------------------------------------------------------

    @_storage_errors
    def policy_names(self) -> list[str]:
        names: Any = self._redis.hkeys(keys.POLICIES)
        return sorted(text(n) for n in names)

    @_storage_errors
    def spec(self, name: str) -> PolicySpec | None:
        raw: Any = self._redis.hget(keys.POLICIES, name)
        return None if raw is None else PolicySpec.from_dict(orjson.loads(raw))

    @_storage_errors
    def live(self, name: str) -> str | None:
        raw: Any = self._redis.hget(keys.LIVE, name)
        return None if raw is None else text(raw)

    @_storage_errors
    def candidate(self, name: str) -> str | None:
        """The policy's candidate version '<export>.0', if an offline retrain left one."""
        raw: Any = self._redis.hget(keys.CANDIDATES, name)
        return None if raw is None else text(raw)

    @_storage_errors
    def set_candidate(self, name: str, version: str) -> None:
        self._redis.hset(keys.CANDIDATES, name, version)

    @_storage_errors
    def next_checkpoint(self, name: str) -> int:
        return int(self._redis.incr(keys.checkpoint_seq_key(name)))  # type: ignore[arg-type]

    # -- the log --------------------------------------------------------------------

    @_storage_errors
    def read_decisions(
        self, name: str, after: str, count: int, shadow: str | None = None
    ) -> list[tuple[str, TrainingDecision]]:
        """Decisions of ``name`` after a stream entry; read for ``shadow`` they carry its weights."""
        entries: Any = self._redis.xrange(keys.decisions_key(name), min=f"({after}", max="+", count=count)
        return [(entry.decode(), TrainingDecision.from_fields(fields, shadow)) for entry, fields in entries]

    @_storage_errors
    def read_rewards(self, name: str, after: str, count: int) -> list[tuple[str, RewardRecord]]:
        entries: Any = self._redis.xrange(keys.rewards_key(name), min=f"({after}", max="+", count=count)
        return [(entry.decode(), RewardRecord.from_raw(fields)) for entry, fields in entries]

    @_storage_errors
    def stream_lengths(self, name: str) -> tuple[int, int]:
        """(decisions, rewards) entries in the policy's streams."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.decisions_key(name))
            pipe.xlen(keys.rewards_key(name))
            decisions, rewards = pipe.execute()
        return int(decisions), int(rewards)

    def scan_decisions(self, name: str, start: str = "-", end: str = "+") -> Iterator[list[tuple[str, DecisionRecord]]]:
        """Every decision between two entry ids (inclusive), READ_BATCH per round trip."""
        for batch in self._scan(keys.decisions_key(name), start, end):
            yield [(entry.decode(), DecisionRecord.from_fields(fields)) for entry, fields in batch]

    def scan_rewards(self, name: str, start: str = "-", end: str = "+") -> Iterator[list[tuple[str, RewardRecord]]]:
        """Every reward between two entry ids (inclusive), READ_BATCH per round trip."""
        for batch in self._scan(keys.rewards_key(name), start, end):
            yield [(entry.decode(), RewardRecord.from_raw(fields)) for entry, fields in batch]

    def _scan(self, key: str, start: str, end: str) -> Iterator[list[Any]]:
        low = start
        while True:
            try:
                entries: Any = self._redis.xrange(key, min=low, max=end, count=READ_BATCH)
            except RedisError as error:
                raise LogUnavailable(f"event log unavailable: {error.__class__.__name__}: {error}") from error
            if entries:
                yield entries
            if len(entries) < READ_BATCH:
                return
            low = f"({entries[-1][0].decode()}"

    @_storage_errors
    def trim(self, name: str, decisions_before: str, rewards_before: str) -> None:
        """Drops the policy's stream entries older than the given entry ids."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.xtrim(keys.decisions_key(name), minid=decisions_before, approximate=False)
            pipe.xtrim(keys.rewards_key(name), minid=rewards_before, approximate=False)
            pipe.execute()

    @_storage_errors
    def record_logged(
        self, decisions: Sequence[DecisionRecord], rewards: Sequence[float], aggregation: str, ttl_ms: int
    ) -> None:
        """Appends decisions of one policy that were made elsewhere, each with its reward, with
        the API's recording scripts (so the counters, event hashes and reward numbering are
        the API's); the rewards are in time and each its event's first."""
        call_keys, args = scripts.record_decisions_call(decisions, [b""] * len(decisions), ttl_ms)
        replies = self._record_decisions(keys=call_keys, args=args)
        if any(reply is not None for reply in scripts.recorded_decisions(replies)):
            raise ValueError("an imported decision reused a known event id")
        policy = decisions[0].policy
        with self._redis.pipeline(transaction=False) as pipe:
            for decision, reward in zip(decisions, rewards, strict=True):
                record = RewardRecord(decision.event_id, decision.ts_ms, float(reward), False)
                reward_keys, reward_args = scripts.record_reward_call(policy, record, aggregation, None, "")
                self._record_reward(keys=reward_keys, args=reward_args, client=pipe)
            pipe.execute()

    # -- leases and the live pointer ------------------------------------------------

    @_storage_errors
    def hold_lease(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Takes or renews the policy's trainer lease; False while another trainer holds it."""
        return bool(self._lease(keys=[keys.lease_key(name)], args=[holder, ttl_ms]))

    @_storage_errors
    def release_lease(self, name: str, holder: str) -> None:
        if text(self._redis.get(keys.lease_key(name)) or b"") == holder:
            self._redis.delete(keys.lease_key(name))

    @_storage_errors
    def move_live(self, name: str, expected: str, version: str, holder: str = "", candidate: str = "") -> int:
        """Moves the live pointer from ``expected`` to ``version`` and announces it, if the
        caller still holds the lease (``holder``) and the candidate is still ``candidate``
        (then cleared), when given; returns one of scripts.MOVED, LEASE_LOST, LIVE_CHANGED,
        CANDIDATE_CHANGED."""
        call_keys, args = scripts.move_live_call(name, expected, version, holder, candidate)
        return int(self._move_live(keys=call_keys, args=args))

    @_storage_errors
    def write_trainer_stats(self, name: str, stats: dict[str, Any], decisions_of: str | None = None) -> int:
        """Stores the trainer's view of a policy; returns the number of decisions logged so far
        (in ``decisions_of``'s log: a shadow learns from the policy it shadows)."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.trainer_key(name), mapping={k: str(v) for k, v in stats.items()})
            pipe.hget(keys.stats_key(decisions_of or name), keys.STAT_DECISIONS)
            _, decisions = pipe.execute()
        return int(decisions or 0)
