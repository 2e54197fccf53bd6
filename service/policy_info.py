"""What GET /policies/{name} shows of a policy: its definition, the version it serves, its log
counters, and the trainer's progress and model counters."""

from __future__ import annotations

import dataclasses

from eventlog import keys
from eventlog.aio import RedisLog
from service.modes import PolicyModes
from service.registry import PolicyRegistry
from service.schemas.policies import PolicyInfo


class PolicyViews:
    def __init__(self, registry: PolicyRegistry, log: RedisLog, modes: PolicyModes) -> None:
        self.registry, self.log, self.modes = registry, log, modes

    async def describe(self, name: str) -> PolicyInfo:
        """GET /policies/{name}; raises NotFound."""
        served = await self.registry.get(name)
        stats = await self.log.stats(name)
        trainer = await self.log.trainer_stats(name)
        spec = served.spec
        applied = int(trainer.get("applied", 0))
        decisions = stats.get("decisions", 0)
        published_ms = int(trainer.get("last_publish_ms", 0))
        return PolicyInfo(
            name=spec.name,
            algorithm=spec.algorithm,
            context_dim=spec.context_dim,
            num_actions=spec.num_actions,
            features=spec.features,
            action_feature_dim=spec.action_feature_dim,
            action_features=spec.action_features,
            baseline=spec.baseline,
            mode=await self.modes.get(name),
            apprentice=_apprentice(trainer),
            hyperparameters=spec.hyperparameters,
            reward=dataclasses.asdict(spec.reward),
            training=dataclasses.asdict(spec.training),
            shadow_of=spec.shadow_of,
            live_version=served.version,
            versions=self.registry.versions(name),
            decisions=decisions,
            rewards=stats.get("rewards", 0),
            late_rewards=stats.get("late_rewards", 0),
            duplicate_rewards=stats.get("duplicate_rewards", 0),
            trainer=trainer.get("holder"),
            applied_examples=applied,
            pending_joins=int(trainer.get("pending", 0)),
            defaulted_rewards=int(trainer.get("defaulted", 0)),
            trainer_lag=max(0, decisions - applied),
            last_publish_time=published_ms / 1000 if published_ms else None,
            mean_reward=float(trainer["reward_sum"]) / applied if applied else None,
            model={
                k.removeprefix(keys.TRAINER_MODEL_PREFIX): _number(v)
                for k, v in trainer.items()
                if k.startswith(keys.TRAINER_MODEL_PREFIX)
            },
        )


def _apprentice(trainer: dict[str, str]) -> dict[str, float | int | None]:
    decisions = int(trainer.get("apprentice_decisions", 0))
    if not decisions:
        return {}
    matches = int(trainer.get("apprentice_matches", 0))
    return {"decisions": decisions, "matches": matches, "match_rate": matches / decisions}


def _number(text: str) -> float | int | None:
    if not text:
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value
