"""Values a replica reads from the event log and reuses briefly (experiment definitions and
reward statistics, serving modes), so that /act does not ask Redis for them on every call."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from eventlog import LogUnavailable

V = TypeVar("V")

Clock = Callable[[], float]
"""Seconds from an arbitrary start, never going back (time.monotonic)."""

CACHE_SECONDS = 1.0
"""How long a replica reuses what it read; a change made elsewhere reaches it within this."""


class BriefCache(Generic[V]):
    """Values by key, each reused for ``seconds`` after it was read; while Redis is away the
    last value read is kept (a replica routes by what it last knew)."""

    def __init__(self, seconds: float = CACHE_SECONDS, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._values: dict[str, tuple[float, V]] = {}

    async def get(self, key: str, read: Callable[[], Awaitable[V]], fresh: bool = False) -> V:
        """The cached value, or ``read()``'s (``fresh``: always read); raises LogUnavailable only
        when Redis is away and nothing was read before."""
        cached = self._values.get(key)
        if cached is not None and not fresh and self._clock() - cached[0] < self.seconds:
            return cached[1]
        try:
            value = await read()
        except LogUnavailable:
            if cached is None:
                raise
            return cached[1]
        self.put(key, value)
        return value

    def put(self, key: str, value: V) -> None:
        self._values[key] = (self._clock(), value)
