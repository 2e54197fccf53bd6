"""training.offline's jobs (retrain, evaluate, promote) as the API runs them: in a worker
thread with the app's synchronous event-log client, their errors turned into the service's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from eventlog.sync import LogClient
from service.errors import Conflict, InvalidInput, NotFound, ServiceError, Unavailable
from service.registry import PolicyRegistry
from training import offline

T = TypeVar("T")


class OfflineJobs:
    def __init__(self, registry: PolicyRegistry, log: LogClient) -> None:
        self.registry = registry
        self.log = log

    async def run(self, name: str, job: Callable[[Path, LogClient], T]) -> T:
        """job(store, log) on policy ``name`` (NotFound when this replica does not know it), in a
        worker thread; its errors become the service's (LogUnavailable is a 503 already)."""
        await self.registry.get(name)
        try:
            return await asyncio.to_thread(job, self.registry.store, self.log)
        except offline.OfflineError as error:
            raise service_error(error) from error

    async def serve(self, name: str, version: str) -> None:
        """Serves a version a job made live on this replica now (the others follow its announcement)."""
        await self.registry.apply(name, version)


def service_error(error: offline.OfflineError) -> ServiceError:
    if isinstance(error, offline.UnknownPolicy):
        return NotFound(error.message, error.field)
    if isinstance(error, offline.NoCandidate):
        return Conflict(error.message, error.field)
    if isinstance(error, offline.Busy):
        return Unavailable(error.message, error.field)
    return InvalidInput(error.message, error.field)
