"""Reads a policy's log from Redis into a JoinedLog, joined by the trainer's RewardJoin."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import eventlog
from eventlog.sync import LogClient
from exporter.spec import PolicySpec
from training.join import NEVER, Examples, RewardJoin
from training.offline.errors import UnknownPolicy
from training.offline.joinedlog import JoinedLog, padded_candidates
from training.offline.progress import NoProgress, Progress

logger = logging.getLogger(__name__)


# -- reading the log ---------------------------------------------------------------------


def policy_spec(log: LogClient, name: str) -> PolicySpec:
    spec = log.spec(name)
    if spec is None:
        raise UnknownPolicy(f"policy: no policy named {name!r}", "policy")
    return spec


def _counted(batches: Iterator[list[Any]], progress: Progress) -> Iterator[list[Any]]:
    for batch in batches:
        progress.advance(len(batch))
        yield batch


def read_joined_log(
    log: LogClient,
    name: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: Progress | None = None,
) -> JoinedLog:
    """The policy's decisions logged in [since_ms, until_ms) (by the Redis time of their
    stream entry), each joined with its rewards as the trainer would once every window closed.

    Rewards are read from ``since_ms`` to the end of the stream (a decision's reward comes
    after it) and matched to their decision by its stream entry (``decision_entry``).
    """
    progress = progress or NoProgress()
    spec = policy_spec(log, name)
    start = "-" if since_ms is None else str(int(since_ms))
    end = "+" if until_ms is None else str(int(until_ms) - 1)
    decisions: dict[str, eventlog.DecisionRecord] = {}
    total_decisions, total_rewards = log.stream_lengths(name)
    progress.start("read decisions", total_decisions)
    # An empty range (until <= since, or until 0: end "-1" is no stream id) reads nothing.
    if until_ms is None or (int(until_ms) > 0 and (since_ms is None or int(until_ms) > int(since_ms))):
        for batch in log.scan_decisions(name, start, end):
            decisions.update(batch)
            progress.advance(len(batch))
    progress.finish()

    # The trainer's join with every window closed: the same aggregation, late and duplicate rules.
    join = RewardJoin(spec.reward, spec.packed_widths, grace_seconds=0.0)
    for record in decisions.values():
        join.add_decision(record.for_training())
    progress.start("read rewards", total_rewards)
    if decisions:
        first = next(iter(decisions))  # rewards come after their decision
        for _, reward in itertools.chain.from_iterable(_counted(log.scan_rewards(name, first), progress)):
            if reward.decision_entry in decisions:  # others belong to decisions outside the range
                join.add_reward(reward)
    join.close_windows(horizon_ms=NEVER)
    examples = join.take(reward_dtype=np.float64)
    progress.finish()
    return _joined(spec, list(decisions.values()), examples)


def _joined(spec: PolicySpec, records: Sequence[eventlog.DecisionRecord], examples: Examples) -> JoinedLog:
    """The decisions (in log order) with the join's outcome of each."""
    outcome = {event_id: row for row, event_id in enumerate(examples.event_ids)}
    rows = np.array([outcome[r.event_id] for r in records], np.int64)
    inputs = record_inputs(spec, records)
    return JoinedLog(
        policy=spec.name,
        num_actions=inputs.pop("num_actions"),
        event_ids=np.array([r.event_id for r in records], dtype=object),
        ts_ms=np.array([r.ts_ms for r in records], np.int64),
        versions=np.array([r.version for r in records], dtype=object),
        contexts=inputs.pop("contexts"),
        masks=inputs.pop("masks"),
        actions=np.array([r.action for r in records], np.int32),
        propensities=np.array([r.variant_probability * r.propensity for r in records], np.float64),
        rewards=examples.rewards[rows],
        rewarded=examples.rewarded[rows],
        reward_ts_ms=examples.reward_ts_ms[rows],
        experiments=np.array([r.experiment for r in records], dtype=object),
        variants=np.array([r.variant for r in records], dtype=object),
        greedy=np.array([r.greedy for r in records], bool),
        **inputs,
    )


def record_inputs(spec: PolicySpec, records: Sequence[eventlog.DecisionRecord]) -> dict[str, Any]:
    """The decisions' model inputs as arrays: contexts [n, d], masks [n, K] (None when no row
    had one), num_actions K (for candidate sets the largest set), and for named features or
    candidate sets context_categorical, candidates, action_features, action_categorical."""
    widths = spec.packed_widths
    n, k = len(records), spec.num_actions
    out: dict[str, Any] = {
        "contexts": np.array([r.context for r in records], np.float32).reshape(n, widths.context),
        "num_actions": k,
        "masks": None,
    }
    if widths.named_context:
        out["context_categorical"] = np.array([r.context_categorical for r in records], dtype=object).reshape(
            n, widths.context_categorical
        )
    if widths.candidates:
        out["num_actions"] = k = max((len(r.candidates or ()) for r in records), default=1)
        out |= padded_candidates(
            [r.candidates or [] for r in records],
            [r.mask or [] for r in records],
            [[] if r.action_features is None else r.action_features for r in records],
            [r.action_categorical for r in records] if widths.action_categorical else None,
            widths,
            k,
        )
    elif any(r.mask is not None for r in records):
        out["masks"] = np.array([r.mask if r.mask is not None else [True] * k for r in records], bool).reshape(n, k)
    return out
