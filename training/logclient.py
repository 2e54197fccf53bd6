"""The trainer's door to Redis (synchronous): reads the log, holds leases, publishes versions.

Key names, record formats and scripts come from training.eventlog.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from exporter.spec import PolicySpec
from training import eventlog


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LogClient:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, health_check_interval=30)
        self._lease = self.client.register_script(eventlog.LEASE_LUA)
        self._publish = self.client.register_script(eventlog.PUBLISH_LUA)

    def close(self) -> None:
        self.client.close()

    def server_time_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # -- policies -------------------------------------------------------------------

    def policy_names(self) -> list[str]:
        names: list[Any] = self.client.hkeys(eventlog.POLICIES)  # type: ignore[assignment]
        return sorted(_str(n) for n in names)

    def spec(self, name: str) -> PolicySpec | None:
        raw: Any = self.client.hget(eventlog.POLICIES, name)
        return None if raw is None else PolicySpec.from_dict(orjson.loads(raw))

    def live(self, name: str) -> str | None:
        raw: Any = self.client.hget(eventlog.LIVE, name)
        return None if raw is None else _str(raw)

    def next_checkpoint(self, name: str) -> int:
        return int(self.client.incr(eventlog.checkpoint_seq_key(name)))  # type: ignore[arg-type]

    # -- the log --------------------------------------------------------------------

    def read_decisions(
        self, name: str, after: str, count: int, shadow: str | None = None
    ) -> list[tuple[str, eventlog.TrainingDecision]]:
        """Decisions of ``name`` after a stream entry; read for ``shadow`` they carry its weights."""
        entries: Any = self.client.xrange(eventlog.decisions_key(name), min=f"({after}", max="+", count=count)
        return [(entry.decode(), eventlog.TrainingDecision.from_fields(fields, shadow)) for entry, fields in entries]

    def read_rewards(self, name: str, after: str, count: int) -> list[tuple[str, eventlog.RewardRecord]]:
        entries: Any = self.client.xrange(eventlog.rewards_key(name), min=f"({after}", max="+", count=count)
        return [(entry.decode(), eventlog.RewardRecord.from_raw(fields)) for entry, fields in entries]

    def trim(self, name: str, decisions_before: str, rewards_before: str) -> None:
        """Drops the policy's stream entries older than the given entry ids."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xtrim(eventlog.decisions_key(name), minid=decisions_before, approximate=False)
            pipe.xtrim(eventlog.rewards_key(name), minid=rewards_before, approximate=False)
            pipe.execute()

    # -- leases and publishing ------------------------------------------------------

    def hold_lease(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Takes or renews the policy's trainer lease; False while another trainer holds it."""
        return bool(self._lease(keys=[eventlog.lease_key(name)], args=[holder, ttl_ms]))

    def release_lease(self, name: str, holder: str) -> None:
        if _str(self.client.get(eventlog.lease_key(name)) or b"") == holder:
            self.client.delete(eventlog.lease_key(name))

    def publish(self, name: str, holder: str, expected: str, version: str) -> int:
        """1: live and announced; 0: the lease is lost; -1: the live version changed meanwhile."""
        keys = [eventlog.lease_key(name), eventlog.LIVE]
        return int(self._publish(keys=keys, args=[holder, name, expected, version, eventlog.ANNOUNCE]))

    def write_trainer_stats(self, name: str, stats: dict[str, Any], decisions_of: str | None = None) -> int:
        """Stores the trainer's view of a policy; returns the number of decisions logged so far
        (in ``decisions_of``'s log: a shadow learns from the policy it shadows)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(eventlog.trainer_key(name), mapping={k: str(v) for k, v in stats.items()})
            pipe.hget(eventlog.stats_key(decisions_of or name), eventlog.STAT_DECISIONS)
            _, decisions = pipe.execute()
        return int(decisions or 0)
