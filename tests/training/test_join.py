"""Reward join semantics: earliest, sum, default after the window, late, duplicates, state."""

from __future__ import annotations

import numpy as np

from eventlog import RewardRecord, TrainingDecision
from exporter.spec import RewardConfig
from training.join import RewardJoin

WAIT_MS = 10_000


def decision(event_id: str, ts_ms: int, action: int = 0) -> TrainingDecision:
    return TrainingDecision(event_id, ts_ms, [float(ts_ms), 1.0], action, 0.5)


def reward(event_id: str, value: float, late: bool = False) -> RewardRecord:
    return RewardRecord(event_id, 0, value, late)


def make(aggregation: str = "earliest", default: float = -1.0) -> RewardJoin:
    return RewardJoin(RewardConfig(wait_seconds=WAIT_MS / 1000, default=default, aggregation=aggregation), 2, 1.0)  # type: ignore[arg-type]


def test_earliest_emits_at_the_first_reward_and_ignores_later_ones() -> None:
    join = make()
    join.add_decision(decision("a", 1000, action=1))
    join.add_reward(reward("a", 2.0))
    join.add_reward(reward("a", 5.0))
    examples = join.take()
    assert examples.event_ids == ["a"] and examples.rewards.tolist() == [2.0] and examples.actions.tolist() == [1]
    assert join.outcomes["rewarded"] == 1 and join.outcomes["duplicate"] == 1 and not join.pending


def test_sum_waits_for_the_window_and_adds_rewards() -> None:
    join = make("sum")
    join.add_decision(decision("a", 1000))
    join.add_reward(reward("a", 2.0))
    join.add_reward(reward("a", 0.5))
    join.close_windows(1000 + WAIT_MS + 999)  # window plus 1 s grace not yet over
    assert len(join.take()) == 0 and "a" in join.pending
    join.close_windows(1000 + WAIT_MS + 1000)
    assert join.take().rewards.tolist() == [2.5]
    assert join.outcomes["rewarded"] == 1 and join.outcomes["duplicate"] == 0


def test_default_reward_after_the_window() -> None:
    join = make(default=-1.0)
    join.add_decision(decision("a", 1000))
    join.add_decision(decision("b", 5000))
    join.close_windows(1000 + WAIT_MS + 1000)
    examples = join.take()
    assert examples.event_ids == ["a"] and examples.rewards.tolist() == [-1.0]
    assert list(join.pending) == ["b"] and join.outcomes["defaulted"] == 1
    join.add_reward(reward("a", 3.0))  # too late for the trainer: already learned with the default
    assert join.outcomes["duplicate"] == 1 and len(join.take()) == 0


def test_late_rewards_are_counted_not_learned() -> None:
    join = make()
    join.add_decision(decision("a", 1000))
    join.add_reward(reward("a", 9.0, late=True))
    assert len(join.take()) == 0 and join.outcomes["late"] == 1 and "a" in join.pending
    join.close_windows(10**9)
    assert join.take().rewards.tolist() == [-1.0]


def test_state_round_trip_resumes_identically() -> None:
    join = make("sum")
    for i, name in enumerate("abc"):
        join.add_decision(decision(name, 1000 * i))
    join.add_reward(reward("b", 1.5))
    join.add_reward(reward("x", 1.0))
    join.take()
    restored = make("sum")
    restored.restore({k: np.array(v) for k, v in join.state().items()})
    assert restored.outcomes == join.outcomes
    for j in (join, restored):
        j.add_reward(reward("c", 4.0))
        j.close_windows(10**9)
    a, b = join.take(), restored.take()
    assert a.event_ids == b.event_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(a.rewards, b.rewards)
    np.testing.assert_array_equal(a.contexts, b.contexts)
