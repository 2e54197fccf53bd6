"""Joins decisions with their rewards into training examples (pure logic, no I/O).

A decision waits in ``pending`` until it becomes an example:
  * aggregation "earliest": at its first in-window reward;
  * otherwise when its window closes: the sum of its in-window rewards ("sum"), or the
    policy's default reward when none came.
A window closes when the reward log is known to be complete past
``decision time + wait_seconds + grace``: the grace absorbs the few milliseconds between the
API's clock deciding a reward is in time and Redis appending it, and clock skew.
Late rewards (marked by the API) are counted and never learned; a reward for a decision
that already became an example is a duplicate.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from eventlog import RewardRecord, TrainingDecision
from exporter.spec import PackedWidths, RewardConfig

OUTCOMES = ("rewarded", "defaulted", "late", "duplicate")
NEVER = 2**62
"""A horizon after every reward window: close_windows(NEVER) completes every pending decision."""


@dataclasses.dataclass
class Examples:
    """A batch of joined examples. contexts: [n, d] float32; actions, rewards, propensities, weights: [n]."""

    event_ids: list[str]
    contexts: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    weights: np.ndarray
    terminals: np.ndarray
    """[n] bool: the reward was reported terminal (sequential policies)."""
    rewarded: np.ndarray
    """[n] bool: a reward came in time (False: the policy's default reward)."""
    reward_ts_ms: np.ndarray
    """[n] int64: time of the reward that completed the example (-1 when defaulted)."""
    context_categorical: np.ndarray | None = None
    """[n, m] str: named contexts' categorical values (None for plain vectors)."""
    action_features: np.ndarray | None = None
    """[n, n_a] float32: candidate sets, the chosen candidate's numeric features."""
    action_categorical: np.ndarray | None = None
    """[n, m_a] str: candidate sets with named features, the chosen candidate's categorical values."""

    def __len__(self) -> int:
        return len(self.event_ids)

    def packed(self) -> dict[str, np.ndarray]:
        """The inputs besides ``contexts`` as keyword arguments of Policy.learn."""
        return packed_inputs(self.context_categorical, self.action_features, self.action_categorical)


def packed_inputs(
    context_categorical: np.ndarray | None, action_features: np.ndarray | None, action_categorical: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The packed inputs besides the numeric contexts that a policy has, as keyword arguments
    (Policy.learn, LoadedVersion.decide, ope.evaluate_policy)."""
    extra = {
        "context_categorical": context_categorical,
        "action_features": action_features,
        "action_categorical": action_categorical,
    }
    return {k: v for k, v in extra.items() if v is not None}


@dataclasses.dataclass
class _Pending:
    ts_ms: int
    context: list[float]
    action: int
    propensity: float
    reward_sum: float = 0.0
    reward_count: int = 0
    reward_ts_ms: int = -1
    weight: float = 1.0
    terminal: bool = False
    context_categorical: list[str] | None = None
    action_features: list[float] | None = None
    action_categorical: list[str] | None = None


class RewardJoin:
    def __init__(self, reward: RewardConfig, inputs: PackedWidths | int, grace_seconds: float) -> None:
        """inputs: the widths of the packed inputs (PolicySpec.packed_widths), or for plain
        context vectors of a fixed set of actions just d."""
        self.reward = reward
        self.widths = inputs if isinstance(inputs, PackedWidths) else PackedWidths(inputs)
        self.context_dim = self.widths.context
        self.close_after_ms = int((reward.wait_seconds + grace_seconds) * 1000)
        self.pending: dict[str, _Pending] = {}
        self.outcomes: Counter[str] = Counter()
        self._ready: list[tuple[str, _Pending, float]] = []

    def add_decision(self, record: TrainingDecision) -> None:
        self.pending[record.event_id] = _Pending(
            record.ts_ms,
            record.context,
            record.action,
            record.propensity,
            weight=getattr(record, "weight", 1.0),
            context_categorical=record.context_categorical,
            action_features=getattr(record, "action_features", None),
            action_categorical=getattr(record, "action_categorical", None),
        )

    def add_reward(self, record: RewardRecord) -> None:
        """Counts a reward whose decision was already added (the caller guarantees that)."""
        if record.late:
            self.outcomes["late"] += 1
            return
        pending = self.pending.get(record.event_id)
        if pending is None:
            self.outcomes["duplicate"] += 1
            return
        pending.terminal = pending.terminal or record.terminal
        pending.reward_ts_ms = record.ts_ms
        if self.reward.aggregation == "earliest":
            del self.pending[record.event_id]
            self._emit(record.event_id, pending, record.reward, "rewarded")
        else:
            pending.reward_sum += record.reward
            pending.reward_count += 1

    def close_windows(self, horizon_ms: int) -> None:
        """Turns every decision whose window closed before ``horizon_ms`` into an example."""
        closed = []
        for event_id, pending in self.pending.items():  # in log order: stop at the first still open
            if pending.ts_ms + self.close_after_ms > horizon_ms:
                break
            closed.append(event_id)
        for event_id in closed:
            pending = self.pending.pop(event_id)
            if pending.reward_count:
                self._emit(event_id, pending, pending.reward_sum, "rewarded")
            else:
                self._emit(event_id, pending, self.reward.default, "defaulted")

    def _emit(self, event_id: str, pending: _Pending, reward: float, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self._ready.append((event_id, pending, reward))

    def take(self, reward_dtype: type = np.float32) -> Examples:
        """The examples completed since the last call (rewards as float32 for the learners;
        offline exports ask for float64, the rewards as logged)."""
        ready, self._ready = self._ready, []
        return Examples(
            event_ids=[e for e, _, _ in ready],
            contexts=np.array([p.context for _, p, _ in ready], np.float32).reshape(len(ready), self.context_dim),
            actions=np.array([p.action for _, p, _ in ready], np.int32),
            rewards=np.array([r for _, _, r in ready], reward_dtype),
            propensities=np.array([p.propensity for _, p, _ in ready], np.float32),
            weights=np.array([p.weight for _, p, _ in ready], np.float32),
            terminals=np.array([p.terminal for _, p, _ in ready], bool),
            rewarded=np.array([p.reward_ts_ms >= 0 for _, p, _ in ready], bool),
            reward_ts_ms=np.array([p.reward_ts_ms for _, p, _ in ready], np.int64),
            **self._packed([p for _, p, _ in ready]),
        )

    def _packed(self, pending: list[_Pending]) -> dict[str, np.ndarray]:
        """The named / candidate inputs of some pending decisions as arrays (only those the policy has)."""
        w = self.widths
        out: dict[str, np.ndarray] = {}
        if w.named_context:
            out["context_categorical"] = np.array([p.context_categorical for p in pending], np.str_).reshape(
                len(pending), w.context_categorical
            )
        if w.candidates:
            out["action_features"] = np.array([p.action_features for p in pending], np.float32).reshape(
                len(pending), w.action
            )
            out["action_categorical"] = np.array([p.action_categorical or [] for p in pending], np.str_).reshape(
                len(pending), w.action_categorical
            )
        return out

    # -- checkpointing --------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The pending decisions and outcome counts as arrays (examples not yet taken are not state)."""
        assert not self._ready, "take() the completed examples before saving the join state"
        items = list(self.pending.items())
        return {
            "event_ids": np.array([e for e, _ in items], dtype=np.str_),
            "ts_ms": np.array([p.ts_ms for _, p in items], np.int64),
            "contexts": np.array([p.context for _, p in items], np.float32).reshape(len(items), self.context_dim),
            "actions": np.array([p.action for _, p in items], np.int32),
            "propensities": np.array([p.propensity for _, p in items], np.float32),
            "reward_sums": np.array([p.reward_sum for _, p in items], np.float64),
            "reward_counts": np.array([p.reward_count for _, p in items], np.int64),
            "weights": np.array([p.weight for _, p in items], np.float32),
            "terminals": np.array([p.terminal for _, p in items], bool),
            "reward_ts_ms": np.array([p.reward_ts_ms for _, p in items], np.int64),
            "outcomes": np.array([self.outcomes[o] for o in OUTCOMES], np.int64),
            **self._packed([p for _, p in items]),
        }

    def restore(self, state: dict[str, Any]) -> None:
        n_pending = len(state["event_ids"])

        def column(name: str, default: Any) -> Any:
            return state[name] if name in state else [default] * n_pending

        self.pending = {
            str(e): _Pending(
                ts_ms=int(t),
                context=c.tolist(),
                action=int(a),
                propensity=float(p),
                reward_sum=float(s),
                reward_count=int(n),
                reward_ts_ms=int(rt),
                weight=float(w),
                terminal=bool(x),
                context_categorical=None if cc is None else [str(v) for v in cc],
                action_features=None if af is None else af.tolist(),
                action_categorical=None if ac is None else [str(v) for v in ac],
            )
            for e, t, c, a, p, s, n, rt, w, x, cc, af, ac in zip(
                state["event_ids"],
                state["ts_ms"],
                state["contexts"],
                state["actions"],
                state["propensities"],
                state["reward_sums"],
                state["reward_counts"],
                column("reward_ts_ms", -1),
                column("weights", 1.0),
                column("terminals", False),
                column("context_categorical", None),
                column("action_features", None),
                column("action_categorical", None),
                strict=True,
            )
        }
        self.outcomes = Counter(dict(zip(OUTCOMES, (int(v) for v in state["outcomes"]), strict=True)))
        self._ready = []
