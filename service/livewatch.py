"""Keeps a replica on the live versions: Redis pub/sub announcements, plus polling as a fallback."""

from __future__ import annotations

import asyncio
import logging

from eventlog import LogUnavailable
from eventlog.aio import RedisLog
from service.errors import ServiceError
from service.metrics import Metrics
from service.registry import PolicyRegistry

logger = logging.getLogger(__name__)


class LiveWatch:
    def __init__(self, registry: PolicyRegistry, log: RedisLog, poll_seconds: float, metrics: Metrics) -> None:
        self.metrics = metrics
        self._refused: dict[str, str] = {}
        self.registry = registry
        self.log = log
        self.poll_seconds = poll_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._poll())]

    async def close(self) -> None:
        # redis-py may turn a cancellation inside a blocking read into a ConnectionError, which
        # the listener would retry: the flag stops it, and the wait is bounded regardless.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)

    async def _apply(self, name: str, version: str) -> None:
        try:
            if name not in self.registry.loaded():
                # Created on another replica: load it now (a shadow must score from its first decision).
                await self.registry.get(name)
                return
            await self.registry.apply(name, version)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # A tampered or partial export fails its checksums, a broken checkpoint its restore:
            # the previous version keeps serving, and the refusal is logged and counted once.
            if self._refused.get(name) != version:
                self._refused[name] = version
                self.metrics.refused_versions.labels(name).inc()
                logger.error("policy %s: refusing version %s, still serving the previous one: %s", name, version, error)

    async def _listen(self) -> None:
        while not self._closing:
            try:
                async for name, _ in self.log.announcements():
                    # Serve what the pointer says now: an announcement may arrive after a newer one.
                    found = await self.log.policy(name)
                    if found is not None:
                        await self._apply(name, found[1])
            except (LogUnavailable, ServiceError) as error:
                if self._closing:
                    return
                logger.warning("announcements interrupted (%s); polling covers the gap", error)
                await asyncio.sleep(1.0)

    async def _poll(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll_seconds)
            try:
                live = await self.log.live_versions()
            except (LogUnavailable, ServiceError):
                continue
            for name, version in live.items():
                await self._apply(name, version)
