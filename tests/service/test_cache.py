"""The brief cache of experiment definitions, reward statistics and modes."""

from __future__ import annotations

import asyncio

import pytest

from eventlog import LogUnavailable
from service.cache import BriefCache
from tests.service.conftest import SkipClock


def test_reads_once_per_lifetime_and_keeps_the_last_value_while_redis_is_away() -> None:
    clock = SkipClock()
    cache: BriefCache[int] = BriefCache(1.0, clock)
    reads: list[int] = []
    redis_away = False

    async def read() -> int:
        if redis_away:
            raise LogUnavailable("event log unavailable: ConnectionError")
        reads.append(len(reads) + 1)
        return reads[-1]

    async def scenario() -> list[int]:
        nonlocal redis_away
        seen = [await cache.get("k", read), await cache.get("k", read)]  # one read
        clock.skip(1.01)
        seen.append(await cache.get("k", read))  # expired: read again
        seen.append(await cache.get("k", read, fresh=True))  # fresh: read now
        redis_away = True
        clock.skip(5)
        seen.append(await cache.get("k", read))  # the last value read
        with pytest.raises(LogUnavailable):
            await cache.get("never-read", read)
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2, 3, 3]
    assert reads == [1, 2, 3]
