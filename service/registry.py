"""The policies this replica serves, each loaded from its exported SavedModel."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from exporter import loader, savedmodel
from exporter.spec import PolicySpec
from service.errors import Conflict, NotFound
from service.redislog import RedisLog

logger = logging.getLogger(__name__)


def export_of(version: str) -> int:
    """The export number of a served version string '<export>.<checkpoint>'."""
    return int(version.split(".", 1)[0])


@dataclasses.dataclass(frozen=True)
class ServedPolicy:
    """What answers /act for one policy: the loaded version and its version string."""

    spec: PolicySpec
    model: loader.LoadedVersion
    version: str


class PolicyRegistry:
    def __init__(self, store: Path, log: RedisLog) -> None:
        self.store = Path(store)
        self.log = log
        self._served: dict[str, ServedPolicy] = {}
        self._loading: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        """Loads every policy known to Redis."""
        for name in await self.log.policy_names():
            await self.get(name)

    def loaded(self) -> list[str]:
        return sorted(self._served)

    async def get(self, name: str) -> ServedPolicy:
        """The served policy, loading it on first use (another replica may have created it)."""
        served = self._served.get(name)
        if served is not None:
            return served
        lock = self._loading.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self._served:
                return self._served[name]
            found = await self.log.policy(name)
            if found is None:
                raise NotFound(f"policy: no policy named {name!r}", "policy")
            spec, version = found
            model = await asyncio.to_thread(loader.load, self.store, name, export_of(version))
            served = ServedPolicy(spec, model, version)
            self._served[name] = served
            return served

    async def create(self, spec: PolicySpec) -> ServedPolicy:
        """Builds, exports (version 1 of a new name) and serves a policy."""
        if await self.log.policy(spec.name) is not None:
            raise Conflict(f"name: a policy named {spec.name!r} already exists", "name")

        def build_and_export() -> int:
            return savedmodel.export(spec.build_policy(), spec, self.store)

        export = await asyncio.to_thread(build_and_export)
        version = f"{export}.0"
        if not await self.log.add_policy(spec, version):
            raise Conflict(f"name: a policy named {spec.name!r} already exists", "name")
        model = await asyncio.to_thread(loader.load, self.store, spec.name, export)
        served = ServedPolicy(spec, model, version)
        self._served[spec.name] = served
        logger.info("created policy %s (%s) at version %s", spec.name, spec.algorithm, version)
        return served

    def versions(self, name: str) -> list[int]:
        return savedmodel.list_versions(self.store, name)
