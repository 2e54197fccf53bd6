"""Serving modes of policies (online or apprentice), cached briefly per replica.

The mode lives in Redis (training.eventlog.MODES); a change reaches every replica within
CACHE_SECONDS. In apprentice mode /act serves the policy's baseline action, logged with
propensity 1, and the policy's own choice is logged beside it (DecisionRecord.apprentice): the
trainer learns from the baseline's outcomes and counts how often the policy agreed.
"""

from __future__ import annotations

import time

from eventlog import LogUnavailable
from eventlog.aio import RedisLog

CACHE_SECONDS = 1.0


class PolicyModes:
    def __init__(self, log: RedisLog) -> None:
        self.log = log
        self._cached: dict[str, tuple[float, str]] = {}

    async def get(self, name: str) -> str:
        cached = self._cached.get(name)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            mode = await self.log.mode(name)
        except LogUnavailable:
            return cached[1] if cached is not None else "online"  # Redis away: the last known mode
        self._cached[name] = (time.monotonic(), mode)
        return mode

    async def set(self, name: str, mode: str) -> None:
        await self.log.set_mode(name, mode)
        self._cached[name] = (time.monotonic(), mode)
