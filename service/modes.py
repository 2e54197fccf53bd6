"""Serving modes of policies (online or apprentice), cached briefly per replica.

The mode lives in Redis (eventlog.MODES); a change reaches every replica within the cache's
lifetime (service.cache.CACHE_SECONDS). In apprentice mode /act serves the policy's baseline
action, logged with propensity 1, and the policy's own choice is logged beside it
(DecisionRecord.apprentice): the trainer learns from the baseline's outcomes and counts how
often the policy agreed.
"""

from __future__ import annotations

from eventlog import LogUnavailable
from eventlog.aio import RedisLog
from service.cache import BriefCache


class PolicyModes:
    def __init__(self, log: RedisLog, cache: BriefCache[str] | None = None) -> None:
        self.log = log
        self._cache: BriefCache[str] = cache if cache is not None else BriefCache()

    async def get(self, name: str) -> str:
        try:
            return await self._cache.get(name, lambda: self.log.mode(name))
        except LogUnavailable:
            return "online"  # Redis away and the mode never read: serve the policy

    async def set(self, name: str, mode: str) -> None:
        await self.log.set_mode(name, mode)
        self._cache.put(name, mode)
