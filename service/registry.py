"""The policies this replica serves, each loaded from its exported SavedModel.

Every policy has two loaded copies of its SavedModel: the active one answers requests, the
standby one receives the next checkpoint's variables. A swap restores into the standby
(once no batch is still using it), then replaces the reference, so no response mixes old
and new variables and no request waits for a swap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from collections.abc import Callable
from pathlib import Path

from eventlog import parse_version
from eventlog.aio import RedisLog
from exporter import loader, savedmodel
from exporter.spec import PolicySpec
from service.errors import Conflict, InvalidInput, NotFound
from training import checkpoints

logger = logging.getLogger(__name__)

ROLLBACK_ATTEMPTS = 5
"""How often a rollback retries when the live pointer moves under it (a trainer publishing)."""


@dataclasses.dataclass(eq=False)
class ModelSlot:
    """One loaded copy of a SavedModel; ``users`` counts the batches running on it."""

    model: loader.LoadedVersion
    users: int = 0


@dataclasses.dataclass(frozen=True)
class ServedPolicy:
    """What answers /act for one policy: a loaded copy and exactly the version it holds."""

    spec: PolicySpec
    slot: ModelSlot
    version: str


class PolicyRegistry:
    def __init__(self, store: Path, log: RedisLog, on_swap: Callable[[str, str], None] | None = None) -> None:
        self.store = Path(store)
        self.log = log
        self._on_swap = on_swap
        self._served: dict[str, ServedPolicy] = {}
        self._standby: dict[str, ModelSlot] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        """Loads every policy known to Redis."""
        for name in await self.log.policy_names():
            await self.get(name)

    def loaded(self) -> list[str]:
        return sorted(self._served)

    def shadows_of(self, name: str) -> list[ServedPolicy]:
        """The loaded policies that shadow ``name``."""
        return [served for served in self._served.values() if served.spec.shadow_of == name]

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def get(self, name: str) -> ServedPolicy:
        """The served policy, loading it on first use (another replica may have created it)."""
        served = self._served.get(name)
        if served is not None:
            return served
        async with self._lock(name):
            if name in self._served:
                return self._served[name]
            found = await self.log.policy(name)
            if found is None:
                raise NotFound(f"policy: no policy named {name!r}", "policy")
            _, version = found
            await self._load_export(name, version)
            return self._served[name]

    async def _load_export(self, name: str, version: str) -> None:
        """Loads both copies of a version's export (a new architecture) and serves them."""
        export, checkpoint = parse_version(version)

        def load_copy() -> ModelSlot:
            model = loader.load(self.store, name, export)
            if checkpoint:
                for saved in (model.greedy_model, model.collect_model):
                    checkpoints.restore_variables(saved, self.store, name, export, checkpoint)
            return ModelSlot(model)

        active = await asyncio.to_thread(load_copy)
        standby = await asyncio.to_thread(load_copy)
        # A loaded SavedModel is hundreds of thousands of long-lived Python objects; scanning
        # them made every full garbage collection a 200 ms pause (the p99 of /act). Freeze them.
        gc.freeze()
        self._standby[name] = standby
        self._publish(ServedPolicy(active.model.spec, active, version))

    def _publish(self, served: ServedPolicy) -> None:
        self._served[served.spec.name] = served
        if self._on_swap is not None:
            self._on_swap(served.spec.name, served.version)

    async def apply(self, name: str, version: str) -> None:
        """Serves ``version`` ('<export>.<checkpoint>') of a loaded policy, if it is not already."""
        async with self._lock(name):
            current = self._served.get(name)
            if current is None or current.version == version:
                return
            export, checkpoint = parse_version(version)
            if export != parse_version(current.version)[0]:
                await self._load_export(name, version)
            else:
                standby = self._standby[name]
                while standby.users:  # a batch from before the last swap is still running on it
                    await asyncio.sleep(0.001)

                def restore() -> None:
                    for saved in (standby.model.greedy_model, standby.model.collect_model):
                        checkpoints.restore_variables(saved, self.store, name, export, checkpoint)

                await asyncio.to_thread(restore)
                self._standby[name] = current.slot
                self._publish(ServedPolicy(current.spec, standby, version))
            logger.info("policy %s: now serving %s", name, version)

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
        async with self._lock(spec.name):
            await self._load_export(spec.name, version)
        logger.info("created policy %s (%s) at version %s", spec.name, spec.algorithm, version)
        return self._served[spec.name]

    async def roll_back(self, name: str, to: str) -> str:
        """Serves the variables of version ``to`` (copied into a new checkpoint number, so served
        versions keep increasing) on every replica, moving the live pointer only if no one
        moved it meanwhile; returns the new live version. Raises NotFound, InvalidInput, Conflict."""
        served = await self.get(name)
        target = parse_version(to)
        if not checkpoints.exists(self.store, name, *target):
            raise NotFound(f"to: policy {name!r} has no version {to!r}", "to")
        target_spec = PolicySpec.from_dict(savedmodel.read_manifest(self.store, name, target[0])["spec"])
        if target_spec.inputs() != served.spec.inputs():
            raise InvalidInput(f"to: version {to!r} has other input or action dimensions than the live one", "to")
        for _ in range(ROLLBACK_ATTEMPTS):
            found = await self.log.policy(name)
            live = found[1] if found is not None else served.version
            checkpoint = await self.log.next_checkpoint(name)
            current = parse_version(live)
            await asyncio.to_thread(checkpoints.copy_for_rollback, self.store, name, target, current, checkpoint)
            version = f"{target[0]}.{checkpoint}"
            if await self.log.move_live(name, live, version):
                await self.apply(name, version)
                return version
            logger.info("policy %s: the live version moved while rolling back; trying again", name)
        raise Conflict(f"to: the live version of policy {name!r} kept changing while rolling back; try again", "to")

    def versions(self, name: str) -> list[int]:
        return savedmodel.list_versions(self.store, name)
