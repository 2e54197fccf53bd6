"""Experiments as the API's hot path sees them: definitions from Redis (cached briefly) and the
choice of a variant for one /act call. Reports are service.reports'."""

from __future__ import annotations

import dataclasses

from eventlog.aio import RedisLog
from service.cache import BriefCache
from service.errors import InvalidInput, NotFound
from training.experiments import Experiment, Variant, assign_fixed, assign_thompson


@dataclasses.dataclass(frozen=True)
class Assignment:
    experiment: Experiment
    variant: Variant
    probability: float


class ExperimentRouter:
    def __init__(
        self,
        log: RedisLog,
        definitions: BriefCache[Experiment] | None = None,
        reward_stats: BriefCache[dict[str, tuple[float, float, float]]] | None = None,
    ) -> None:
        self.log = log
        self._definitions: BriefCache[Experiment] = definitions if definitions is not None else BriefCache()
        self._stats: BriefCache[dict[str, tuple[float, float, float]]] = (
            reward_stats if reward_stats is not None else BriefCache()
        )

    async def get(self, name: str, fresh: bool = False) -> Experiment:
        """The experiment's definition (``fresh``: read now); raises NotFound. While Redis is
        away, the last definition read is kept: routing goes on by it."""

        async def read() -> Experiment:
            data = await self.log.experiment(name)
            if data is None:
                raise NotFound(f"experiment: no experiment named {name!r}", "experiment")
            return Experiment.from_dict(data)

        return await self._definitions.get(name, read, fresh)

    async def assign(self, name: str, unit_id: str | None, seed: int) -> Assignment:
        """The variant for one /act call and the probability with which it was chosen."""
        experiment = await self.get(name)
        if experiment.status != "running":
            return Assignment(experiment, experiment.variant(experiment.control), 1.0)
        if experiment.allocation == "fixed":
            if unit_id is None:
                raise InvalidInput(f"unit_id: experiment {name!r} splits by unit; send unit_id", "unit_id")
            variant, probability = assign_fixed(experiment, unit_id)
        else:
            stats = await self._stats.get(name, lambda: self.log.experiment_stats(name))
            variant, probability = assign_thompson(experiment, stats, seed)
        return Assignment(experiment, variant, probability)
