"""Sessions become transitions: next state from the next decision, done from a terminal
reward, quiet sessions closed without a terminal transition; checkpointable."""

from __future__ import annotations

import numpy as np

from eventlog import TrainingDecision
from training.join import Examples
from training.sessions import SessionJoin


def decision(event_id: str, session: str, ts_ms: int, x: float, action: int = 0) -> TrainingDecision:
    return TrainingDecision(event_id, ts_ms, [x, -x], action, 0.5, session_id=session)


def rewarded(*rows: tuple[str, float, bool]) -> Examples:
    n = len(rows)
    return Examples(
        event_ids=[r[0] for r in rows],
        contexts=np.zeros((n, 2), np.float32),
        actions=np.zeros(n, np.int32),
        rewards=np.array([r[1] for r in rows], np.float32),
        propensities=np.ones(n, np.float32),
        weights=np.ones(n, np.float32),
        terminals=np.array([r[2] for r in rows], bool),
        rewarded=np.ones(n, bool),
        reward_ts_ms=np.zeros(n, np.int64),
    )


def test_steps_become_transitions_with_the_next_decision_or_a_terminal_reward() -> None:
    join = SessionJoin(context_dim=2, timeout_seconds=10)
    join.add_decision(decision("a0", "A", 0, 1.0, action=1))
    join.add_examples(rewarded(("a0", 1.0, False)))
    assert len(join.take()) == 0  # no next state yet
    join.add_decision(decision("a1", "A", 10, 2.0))
    join.add_decision(decision("b0", "B", 11, 9.0))  # another session interleaves
    join.add_examples(rewarded(("a1", 1.0, True), ("b0", 5.0, False)))
    t = join.take()
    np.testing.assert_array_equal(t.contexts, [[1.0, -1.0], [2.0, -2.0]])
    np.testing.assert_array_equal(t.next_contexts, [[2.0, -2.0], [0.0, 0.0]])
    np.testing.assert_array_equal(t.actions, [1, 0])
    np.testing.assert_array_equal(t.rewards, [1.0, 1.0])
    np.testing.assert_array_equal(t.dones, [False, True])
    assert join.episodes == 1 and join.mean_return() == 2.0
    # A new decision in session A after its terminal starts a new episode.
    join.add_decision(decision("a2", "A", 20, 3.0))
    join.add_examples(rewarded(("a2", 4.0, True)))
    assert len(join.take()) == 1 and join.episodes == 2 and list(join.returns) == [2.0, 4.0]


def test_a_quiet_session_closes_without_a_terminal_transition() -> None:
    join = SessionJoin(context_dim=2, timeout_seconds=1)
    for t in range(3):
        join.add_decision(decision(f"e{t}", "S", 100 * t, float(t)))
        join.add_examples(rewarded((f"e{t}", 1.0, False)))
    assert len(join.take()) == 2  # the last step waits for a next state
    join.close_quiet(horizon_ms=1199)
    assert "S" in join.sessions
    join.close_quiet(horizon_ms=1200)
    assert "S" not in join.sessions and len(join.take()) == 0  # the time-limit cut: dropped, not done
    assert join.episodes == 1 and join.mean_return() == 3.0
    join.add_examples(rewarded(("e2", 1.0, False)))  # a straggler of a closed session is ignored
    assert len(join.take()) == 0


def test_state_and_restore_continue_exactly() -> None:
    def feed(join: SessionJoin, part: int) -> list[np.ndarray]:
        out = []
        steps = [
            [("d", "A", 0, 1.0), ("d", "B", 1, 2.0)],
            [("d", "A", 2, 3.0), ("d", "C", 3, 4.0)],
            [("d", "A", 4, 5.0), ("d", "B", 5, 6.0)],
        ][part]
        for i, (_, session, ts, x) in enumerate(steps):
            event_id = f"{session}{ts}"
            join.add_decision(decision(event_id, session, ts, x, action=i))
            join.add_examples(rewarded((event_id, x, session == "B" and part == 2)))
        t = join.take()
        out += [t.contexts, t.next_contexts, t.dones, t.rewards]
        return out

    whole = SessionJoin(2, 10)
    first = [feed(whole, p) for p in range(3)]
    part = SessionJoin(2, 10)
    feed(part, 0)
    restored = SessionJoin(2, 10)
    restored.restore(part.state())
    second = [feed(restored, p) for p in (1, 2)]
    for a, b in zip(first[1:], second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert restored.episodes == whole.episodes == 1 and list(restored.returns) == list(whole.returns)


def test_closing_keeps_steps_that_wait_for_their_reward_and_follows_the_log_clock() -> None:
    join = SessionJoin(context_dim=2, timeout_seconds=1)
    join.add_decision(decision("q0", "Q", 0, 1.0))
    join.add_decision(decision("q1", "Q", 100, 2.0))
    join.add_decision(decision("other", "O", 5000, 3.0))  # the log's time passes Q's timeout
    assert "Q" not in join.sessions
    join.add_examples(rewarded(("q0", 1.0, False), ("q1", 2.0, False)))  # rewards after the close
    t = join.take()
    np.testing.assert_array_equal(t.contexts, [[1.0, -1.0]])  # q0 -> q1 learned; q1 has no next state
    assert join.episodes == 1 and join.mean_return() == 3.0
    join.add_decision(decision("q2", "Q", 5100, 4.0))  # the same session id again: a new episode
    join.add_examples(rewarded(("q2", 5.0, True)))
    assert len(join.take()) == 1 and list(join.returns) == [3.0, 5.0]
