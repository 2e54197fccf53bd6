"""Stitches the joined examples of a sequential policy into transitions (pure logic, no I/O).

A session is an episode: its decisions, in log order, are steps s_0, s_1, ... The example of
step t (its context s_t, action a_t and reward r_t, from the reward join) becomes the
transition (s_t, a_t, r_t, s_{t+1}, done=False) once the session's next decision brings
s_{t+1}, or (s_t, a_t, r_t, 0, done=True) at once when r_t was reported terminal; the
terminal step ends the episode. A session without a new decision for ``timeout_ms`` (by the
log's own time: a later decision's timestamp, or how far the trainer has read) is closed
without a terminal transition: its steps still become transitions as their rewards arrive,
except the last one, which has no next state and is dropped (that is how a time-limit
cut-off, which must not be learned as terminal, ends). A later decision with the same
session id starts a new episode.

Episodes completed and the returns of the last 100 (the sum of their steps' rewards) are
kept for GET /policies/{name}.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import numpy as np

from eventlog import TrainingDecision
from training.join import Examples

RETURNS_KEPT = 100


@dataclasses.dataclass
class Transitions:
    """contexts, next_contexts: [n, d] float32; actions [n] int32; rewards, weights [n] float32; dones [n] bool."""

    contexts: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_contexts: np.ndarray
    dones: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.actions)


@dataclasses.dataclass
class _Step:
    event_id: str
    context: list[float]
    action: int
    weight: float
    reward: float | None = None
    terminal: bool = False
    next_context: list[float] | None = None


@dataclasses.dataclass
class _Session:
    session_id: str
    last_ms: int
    steps: list[_Step] = dataclasses.field(default_factory=list)
    """Steps not yet turned into a transition (or dropped), oldest first."""
    episode_return: float = 0.0
    """Rewards of this episode's steps already resolved."""
    episode_steps: int = 0
    closed: bool = False
    """Quiet for the timeout: no step joins it any more; waiting steps still resolve."""


class SessionJoin:
    def __init__(self, context_dim: int, timeout_seconds: float) -> None:
        self.context_dim = context_dim
        self.timeout_ms = int(timeout_seconds * 1000)
        self.sessions: dict[str, _Session] = {}
        """Open sessions, least recently active first."""
        self._waiting: dict[str, _Session] = {}
        """event id -> the session (open or closed) of a step not yet resolved."""
        self.episodes = 0
        self.returns: deque[float] = deque(maxlen=RETURNS_KEPT)
        self._ready: list[tuple[_Step, list[float] | None]] = []

    def add_decision(self, record: TrainingDecision) -> None:
        """A new step of its session. Decisions arrive in log order, and the log's own time
        closes the sessions that went quiet before it (so a replay closes the same ones)."""
        self.close_quiet(record.ts_ms - 1)
        session_id = record.session_id or record.event_id  # no session: a one-step episode
        session = self.sessions.pop(session_id, None) or _Session(session_id, record.ts_ms)
        self.sessions[session_id] = session  # most recently active last
        session.last_ms = max(session.last_ms, record.ts_ms)
        if session.steps:
            session.steps[-1].next_context = record.context
        session.steps.append(_Step(record.event_id, record.context, record.action, record.weight))
        self._waiting[record.event_id] = session
        self._resolve(session)

    def add_examples(self, examples: Examples) -> None:
        """The rewards of steps (examples of the reward join)."""
        for i, event_id in enumerate(examples.event_ids):
            session = self._waiting.get(event_id)
            if session is None:
                continue
            step = next(s for s in session.steps if s.event_id == event_id)
            step.reward = float(examples.rewards[i])
            step.terminal = bool(examples.terminals[i])
            self._resolve(session)

    def _resolve(self, session: _Session) -> None:
        """Emits (or, for the last step of a closed session, drops) the leading steps whose
        outcome is known."""
        while session.steps:
            step = session.steps[0]
            if step.reward is None:
                break
            if step.terminal:
                self._ready.append((step, None))
            elif step.next_context is not None:
                self._ready.append((step, step.next_context))
            elif not session.closed:
                break  # waits for the next decision
            session.steps.pop(0)
            del self._waiting[step.event_id]
            session.episode_return += step.reward
            session.episode_steps += 1
            if step.terminal:
                self._end_episode(session)
        if session.closed and not session.steps and session.episode_steps:
            self._end_episode(session)

    def _end_episode(self, session: _Session) -> None:
        self.episodes += 1
        self.returns.append(session.episode_return)
        session.episode_return, session.episode_steps = 0.0, 0

    def close_quiet(self, horizon_ms: int) -> None:
        """Closes every open session whose last decision is older than ``horizon_ms - timeout``."""
        while self.sessions:
            session = next(iter(self.sessions.values()))
            if session.last_ms + self.timeout_ms > horizon_ms:
                return
            del self.sessions[session.session_id]
            session.closed = True
            self._resolve(session)

    def take(self) -> Transitions:
        """The transitions completed since the last call, in the order they completed."""
        ready, self._ready = self._ready, []
        zeros = [0.0] * self.context_dim
        return Transitions(
            contexts=np.array([s.context for s, _ in ready], np.float32).reshape(-1, self.context_dim),
            actions=np.array([s.action for s, _ in ready], np.int32),
            rewards=np.array([s.reward for s, _ in ready], np.float32),
            next_contexts=np.array([n if n is not None else zeros for _, n in ready], np.float32).reshape(
                -1, self.context_dim
            ),
            dones=np.array([n is None for _, n in ready], bool),
            weights=np.array([s.weight for s, _ in ready], np.float32),
        )

    def mean_return(self) -> float | None:
        return float(np.mean(self.returns)) if self.returns else None

    # -- checkpointing --------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        assert not self._ready, "take() the completed transitions before saving the session state"
        closed = {id(s): s for s in self._waiting.values() if s.closed}
        sessions = [*self.sessions.values(), *closed.values()]
        steps = [(i, step) for i, session in enumerate(sessions) for step in session.steps]
        zeros = [0.0] * self.context_dim
        return {
            "session_ids": np.array([s.session_id for s in sessions], dtype=np.str_),
            "last_ms": np.array([s.last_ms for s in sessions], np.int64),
            "episode_returns": np.array([s.episode_return for s in sessions], np.float64),
            "episode_steps": np.array([s.episode_steps for s in sessions], np.int64),
            "closed": np.array([s.closed for s in sessions], bool),
            "step_sessions": np.array([i for i, _ in steps], np.int64),
            "step_event_ids": np.array([s.event_id for _, s in steps], dtype=np.str_),
            "step_contexts": np.array([s.context for _, s in steps], np.float32).reshape(-1, self.context_dim),
            "step_actions": np.array([s.action for _, s in steps], np.int32),
            "step_weights": np.array([s.weight for _, s in steps], np.float32),
            "step_rewards": np.array([np.nan if s.reward is None else s.reward for _, s in steps], np.float64),
            "step_terminals": np.array([s.terminal for _, s in steps], bool),
            "step_has_next": np.array([s.next_context is not None for _, s in steps], bool),
            "step_next_contexts": np.array(
                [s.next_context if s.next_context is not None else zeros for _, s in steps], np.float32
            ).reshape(-1, self.context_dim),
            "episodes": np.array([self.episodes], np.int64),
            "returns": np.array(list(self.returns), np.float64),
        }

    def restore(self, state: dict[str, Any]) -> None:
        sessions = [
            _Session(str(s), int(t), [], float(r), int(n), bool(c))
            for s, t, r, n, c in zip(
                state["session_ids"],
                state["last_ms"],
                state["episode_returns"],
                state["episode_steps"],
                state["closed"],
                strict=True,
            )
        ]
        self.sessions = {s.session_id: s for s in sessions if not s.closed}
        self._waiting = {}
        for i, event_id, context, action, weight, reward, terminal, has_next, next_context in zip(
            state["step_sessions"],
            state["step_event_ids"],
            state["step_contexts"],
            state["step_actions"],
            state["step_weights"],
            state["step_rewards"],
            state["step_terminals"],
            state["step_has_next"],
            state["step_next_contexts"],
            strict=True,
        ):
            step = _Step(
                str(event_id),
                context.tolist(),
                int(action),
                float(weight),
                None if np.isnan(reward) else float(reward),
                bool(terminal),
                next_context.tolist() if has_next else None,
            )
            sessions[int(i)].steps.append(step)
            self._waiting[step.event_id] = sessions[int(i)]
        self.episodes = int(state["episodes"][0])
        self.returns = deque((float(r) for r in state["returns"]), maxlen=RETURNS_KEPT)
        self._ready = []
