"""Experiment reports: each variant's completed decisions (joined with their rewards by the
trainer's rule), mean reward, lift, and the off-policy estimate of each variant's policy.

Blocking numpy and SavedModel work, run off the event loop; /act never imports this module."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from eventlog import DecisionRecord, RewardRecord, TrainingDecision
from exporter.spec import PolicySpec
from training.experiments import Experiment, lift, mean_interval
from training.join import RewardJoin


def _report_rows(
    experiment: Experiment, spec: PolicySpec, decisions: list[Any], rewards: list[Any], now_ms: int
) -> dict[str, Any]:
    """One policy's decisions of this experiment, joined with their rewards like the trainer does
    (decisions still inside their reward window without a reward are left out)."""
    join = RewardJoin(spec.reward, spec.packed_widths, grace_seconds=0.0)
    meta: dict[str, DecisionRecord] = {}
    for _, fields in decisions:
        record = DecisionRecord.from_fields(fields)
        if record.experiment == experiment.name:
            meta[record.event_id] = record
            join.add_decision(TrainingDecision.from_fields(fields))
    for _, fields in rewards:
        reward = RewardRecord.from_raw(fields)
        if reward.event_id in meta:
            join.add_reward(reward)
    join.close_windows(now_ms)
    examples = join.take()
    records = [meta[e] for e in examples.event_ids]
    return {
        "decided": {
            variant: sum(1 for r in meta.values() if r.variant == variant)
            for variant in {r.variant for r in meta.values()}
        },
        "variants": [r.variant for r in records],
        "records": records,
        "actions": examples.actions,
        "rewards": examples.rewards.astype(np.float64),
        "pscores": np.array([r.variant_probability * r.propensity for r in records], np.float64),
    }


def build_report(
    experiment: Experiment,
    specs: dict[str, PolicySpec],
    streams: dict[str, tuple[list[Any], list[Any]]],
    models: dict[str, Any],
    now_ms: int,
) -> dict[str, Any]:
    """{"variants": per variant counts, mean reward with a 95% interval, lift against the control,
    and the off-policy estimate of its policy on all of the experiment's completed traffic;
    "baseline": the off-policy estimate of always taking the control policy's baseline action
    (None when it names none)}.

    specs, streams, models: by policy name (models are LoadedVersions). Blocking: run off the loop.
    """
    parts = [_report_rows(experiment, specs[p], *streams[p], now_ms) for p in streams]
    variants = [v for part in parts for v in part["variants"]]
    rewards = np.concatenate([part["rewards"] for part in parts]) if parts else np.zeros(0)
    by_variant = {
        v.name: rewards[[i for i, name in enumerate(variants) if name == v.name]] for v in experiment.variants
    }
    decided: dict[str, int] = {}
    for part in parts:
        for name, count in part["decided"].items():
            decided[name] = decided.get(name, 0) + count
    control = by_variant[experiment.control]
    report: dict[str, Any] = {}
    for variant in experiment.variants:
        own = by_variant[variant.name]
        report[variant.name] = {
            "policy": variant.policy,
            "decisions": decided.get(variant.name, 0),
            "completed": len(own),
            "mean_reward": dataclasses.asdict(mean_interval(own)),
            "lift": None if variant.name == experiment.control else lift(own, control),
            "off_policy": _off_policy(variant.policy, parts, specs, models),
        }
    control_policy = experiment.variant(experiment.control).policy
    baseline = None
    if specs[control_policy].baseline is not None:
        baseline = {
            "action": specs[control_policy].baseline,
            "off_policy": _off_policy(control_policy, parts, specs, models, baseline=True),
        }
    return {"variants": report, "baseline": baseline}


def _off_policy(
    policy: str,
    parts: list[dict[str, Any]],
    specs: dict[str, PolicySpec],
    models: dict[str, Any],
    baseline: bool = False,
) -> dict[str, Any] | None:
    """The policy's off-policy value on every completed decision of the experiment (logged with
    the experiment's overall propensities; every variant's policy takes the same inputs), or
    with ``baseline`` the value of always taking that policy's baseline action."""
    from training import offline, ope  # noqa: PLC0415 - keeps service start-up free of the estimators

    if not parts or sum(len(p["actions"]) for p in parts) < 2:
        return None
    spec = specs[policy]
    inputs = offline.record_inputs(spec, [r for p in parts for r in p["records"]])
    contexts, masks = inputs.pop("contexts"), inputs.pop("masks")
    inputs = {k: v for k, v in inputs.items() if k in ("context_categorical", "action_features", "action_categorical")}
    logged = (
        contexts,
        np.concatenate([p["actions"] for p in parts]),
        np.concatenate([p["rewards"] for p in parts]),
        np.concatenate([p["pscores"] for p in parts]),
    )
    report = ope.evaluate_policy(
        models[policy], *logged, masks=masks, n_bootstrap=200, baseline=spec.baseline if baseline else None, **inputs
    )
    return report.to_dict()
