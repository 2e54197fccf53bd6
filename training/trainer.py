"""The background trainer: read, join, update, checkpoint, publish.

One ``PolicyTrainer`` per policy whose lease this process holds. Each step:

  1. read   new decisions, then new rewards (a reward is processed only once its
            decision has been read; the log guarantees the decision comes first);
  2. join   rewards with pending decisions, close windows up to the reward horizon;
  3. update the policy with the completed examples (exact sufficient statistics);
  4. publish every N examples or S seconds: one checkpoint holds the variables, the
            stream positions and the pending joins; then the live pointer moves and the
            replicas are told.

Killed at any point, it resumes from the live checkpoint and re-reads from the positions
saved in it, so every event is applied exactly once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

import eventlog
from bandits import SequentialLearner
from eventlog import LogUnavailable, keys, scripts
from eventlog.sync import LogClient
from exporter import savedmodel
from exporter.spec import PolicySpec
from training import checkpoints
from training.join import NEVER, OUTCOMES, RewardJoin
from training.metrics import TrainerMetrics
from training.sessions import SessionJoin
from training.settings import TrainerSettings

logger = logging.getLogger(__name__)

MAX_READS_PER_STEP = 20


UPDATE_CHUNK = 256
"""Most transitions trained on between two lease renewals."""
SESSIONS = "sessions/"
"""Prefix of the session join's arrays in a checkpoint's trainer state."""


class LeaseLost(Exception):
    """Another trainer holds the policy now; this one must stop touching it."""


class PolicyTrainer:
    def __init__(
        self,
        log: LogClient,
        store: Path,
        name: str,
        metrics: TrainerMetrics,
        grace_seconds: float,
        read_batch: int,
        holder: str | None = None,
        start_from: str | None = None,
        keep_checkpoints: int = 0,
        retention_seconds: float = 0.0,
        lease_seconds: float = 0.0,
    ) -> None:
        """holder: lease holder id; None for a replay that never publishes.
        start_from: a version to start from instead of the live one (a replay from "1.0").
        keep_checkpoints: how many of the newest checkpoints to keep on disk (0: all).
        retention_seconds: after each publish, trim log entries older than this that the
        checkpoint already covers (0: keep the log forever)."""
        self.keep_checkpoints = keep_checkpoints
        self.retention_seconds = retention_seconds
        self.lease_seconds = lease_seconds
        self.lease_renewed = time.monotonic()
        self.log = log
        self.store = Path(store)
        self.name = name
        self.metrics = metrics
        self.grace_seconds = grace_seconds
        self.read_batch = read_batch
        self.holder = holder
        self.resume(start_from)

    # -- resuming -------------------------------------------------------------------

    def resume(self, version: str | None = None) -> None:
        """Loads the live (or the given) version: variables, stream positions and pending joins together."""
        live = version or self.log.live(self.name)
        if live is None:
            raise LookupError(f"policy {self.name!r} has no live version")
        export, checkpoint = eventlog.parse_version(live)
        manifest = savedmodel.read_manifest(self.store, self.name, export)
        self.spec = PolicySpec.from_dict(manifest["spec"])
        self.export = export
        self.live = live
        self.policy = self.spec.build_policy()
        self.policy.compile()
        checkpoints.restore_variables(self.policy, self.store, self.name, export, checkpoint)
        self.state = checkpoints.read_state(self.store, self.name, export, checkpoint)
        # A shadow learns from the log of the policy it shadows, under that policy's reward rules.
        self.source = self.spec.shadow_of or self.name
        source_spec = self.spec if self.spec.shadow_of is None else self.log.spec(self.source)
        if source_spec is None:
            raise LookupError(f"policy {self.name!r} shadows {self.source!r}, which does not exist")
        self.join = RewardJoin(source_spec.reward, self.spec.packed_widths, self.grace_seconds)
        # A sequential policy learns transitions: its examples are stitched along each session.
        self.sessions: SessionJoin | None = None
        if self.policy.sequential:
            self.sessions = SessionJoin(self.spec.context_dim, self.spec.training.session_timeout_seconds)
        if self.state.join:
            joined = {k: v for k, v in self.state.join.items() if not k.startswith(SESSIONS)}
            self.join.restore(joined)
            if self.sessions is not None:
                self.sessions.restore(
                    {k[len(SESSIONS) :]: v for k, v in self.state.join.items() if k.startswith(SESSIONS)}
                )
        self._reported = Counter(self.join.outcomes)
        self.horizon_ms = 0
        self.decisions_horizon_ms = 0
        """The decision log is read completely up to this time (sessions quiet before it close)."""
        self.unpublished = 0
        self.last_publish = time.monotonic()
        self.last_publish_ms = 0
        logger.info("policy %s: resumed from %s (%d examples applied)", self.name, live, self.state.applied)

    # -- one step -------------------------------------------------------------------

    def step(self) -> int:
        """Reads, joins and applies what the log has; returns the number of examples applied."""
        self._read_decisions()
        self._read_rewards()
        self.join.close_windows(self.horizon_ms)
        applied = self._update()
        self._report()
        return applied

    def drain(self) -> None:
        """Applies the whole log as if every reward window had closed (a replay of a finished log)."""
        while True:
            position = (self.state.decisions_position, self.state.rewards_position)
            self.step()
            if position == (self.state.decisions_position, self.state.rewards_position):
                break
        self.join.close_windows(NEVER)
        if self.sessions is not None:
            self.sessions.close_quiet(NEVER)
        self._update()
        self._report()

    def _read_decisions(self) -> None:
        started_ms = self.log.server_time_ms() if self.sessions is not None else 0
        for _ in range(MAX_READS_PER_STEP):  # bounded, so a backlog never starves the lease
            batch = self.log.read_decisions(
                self.source, self.state.decisions_position, self.read_batch, shadow=self.spec.shadow_of and self.name
            )
            for entry, record in batch:
                self.join.add_decision(record)
                if record.apprentice_action is not None:
                    self.state.apprentice_decisions += 1
                    self.state.apprentice_matches += record.apprentice_action == record.action
                if self.sessions is not None:
                    self.sessions.add_decision(record)
                self.state.decisions_position = entry
            if len(batch) < self.read_batch:
                self.decisions_horizon_ms = max(self.decisions_horizon_ms, started_ms - 1)
                return
        # A backlog: complete only up to the last entry read (a replay closes sessions by the
        # log's own time, not by the wall clock).
        self.decisions_horizon_ms = max(self.decisions_horizon_ms, eventlog.entry_ms(self.state.decisions_position) - 1)

    def _read_rewards(self) -> None:
        # Everything appended before this instant is in the stream (Redis runs commands in order).
        started_ms = self.log.server_time_ms()
        for _ in range(MAX_READS_PER_STEP):
            batch = self.log.read_rewards(self.source, self.state.rewards_position, self.read_batch)
            read_up_to = eventlog.entry_key(self.state.decisions_position)
            for entry, record in batch:
                if eventlog.entry_key(record.decision_entry) > read_up_to:
                    # Its decision arrived after our read: wait for the next step.
                    self.horizon_ms = max(self.horizon_ms, eventlog.entry_ms(entry) - 1)
                    return
                self.join.add_reward(record)
                self.state.rewards_position = entry
            if len(batch) < self.read_batch:
                self.horizon_ms = max(self.horizon_ms, started_ms - 1)
                return

    def _update(self) -> int:
        examples = self.join.take()
        n = len(examples)
        if self.sessions is not None:
            self.sessions.add_examples(examples)
            self.sessions.close_quiet(self.decisions_horizon_ms)
            transitions = self.sessions.take()

            learner = self.policy
            assert isinstance(learner, SequentialLearner), "only sequential policies stitch sessions"
            # Training costs per transition (Adam steps): in chunks, renewing the lease between
            # them, so a backlog does not outlast the lease.
            for chunk in range(0, len(transitions), UPDATE_CHUNK):
                part = slice(chunk, chunk + UPDATE_CHUNK)
                start = time.perf_counter()
                learner.learn_transitions(
                    transitions.contexts[part],
                    transitions.actions[part],
                    transitions.rewards[part],
                    transitions.next_contexts[part],
                    transitions.dones[part],
                    transitions.weights[part],
                )
                self.metrics.update_seconds.labels(self.name).observe(time.perf_counter() - start)
                self.keep_lease()
        if n == 0:
            return 0
        if self.sessions is None:
            start = time.perf_counter()
            self.policy.learn(
                examples.contexts, examples.actions, examples.rewards, examples.weights, **examples.packed()
            )
            self.metrics.update_seconds.labels(self.name).observe(time.perf_counter() - start)
        self.state.applied += n
        self.state.reward_sum += float(examples.rewards.astype(np.float64).sum())
        self.unpublished += n
        self.metrics.applied.labels(self.name).inc(n)
        return n

    def _report(self) -> None:
        """Metrics, and the trainer's view of the policy in Redis (GET /policies/{name} shows it)."""
        for outcome in OUTCOMES:
            delta = self.join.outcomes[outcome] - self._reported[outcome]
            if delta > 0:
                self.metrics.join_outcomes.labels(self.name, outcome).inc(delta)
        self._reported = Counter(self.join.outcomes)
        self.metrics.pending.labels(self.name).set(len(self.join.pending))
        if self.holder is None:
            return  # a replay reports nothing to Redis
        decisions = self.log.write_trainer_stats(self.name, self.stats(), decisions_of=self.source)
        self.metrics.lag.labels(self.name).set(max(0, decisions - self.state.applied))

    # -- publishing -----------------------------------------------------------------

    def due(self) -> bool:
        if self.unpublished == 0:
            return False
        training = self.spec.training
        waited = time.monotonic() - self.last_publish
        return self.unpublished >= training.publish_every_examples or waited >= training.publish_every_seconds

    def publish(self) -> str | None:
        """Checkpoints and makes the result live; None if a rollback intervened (we resumed from it)."""
        assert self.holder is not None, "a replay does not publish"
        self.keep_lease()
        start = time.perf_counter()
        checkpoint = self.log.next_checkpoint(self.name)
        self.state.join = self.join.state()
        if self.sessions is not None:
            self.state.join |= {SESSIONS + k: v for k, v in self.sessions.state().items()}
        checkpoints.write(self.policy, self.state, self.store, self.name, self.export, checkpoint)
        version = f"{self.export}.{checkpoint}"
        outcome = self.log.move_live(self.name, self.live, version, holder=self.holder)
        if outcome == scripts.LEASE_LOST:
            raise LeaseLost(self.name)
        if outcome != scripts.MOVED:
            logger.info("policy %s: live version changed (rollback?); resuming from it", self.name)
            self.resume()
            return None
        self.live = version
        self.unpublished = 0
        # Keep the clock's cadence: a publish the clock was due for counts the next period from
        # its deadline, not from when it finished; any other publish restarts the clock.
        period = self.spec.training.publish_every_seconds
        now = time.monotonic()
        deadline = self.last_publish + period
        self.last_publish = deadline if deadline <= now < deadline + period else now
        self.last_publish_ms = int(time.time() * 1000)
        self._prune(checkpoint)
        self._trim()
        self.metrics.publish_seconds.labels(self.name).observe(time.perf_counter() - start)
        self.metrics.live_checkpoint.labels(self.name).set(checkpoint)
        self._report()
        return version

    def _prune(self, newest: int) -> None:
        """Deletes this export's checkpoints beyond the newest ``keep_checkpoints`` (never the live one)."""
        if self.keep_checkpoints <= 0:
            return
        for old in checkpoints.list_checkpoints(self.store, self.name, self.export)[: -self.keep_checkpoints]:
            if old != newest:
                checkpoints.delete(self.store, self.name, self.export, old)

    def keep_lease(self) -> None:
        """Renews the lease when a quarter of it has passed; raises LeaseLost if another took it."""
        if self.holder is None or self.lease_seconds <= 0:
            return
        if time.monotonic() - self.lease_renewed < self.lease_seconds / 4:
            return
        if not self.log.hold_lease(self.name, self.holder, int(self.lease_seconds * 1000)):
            raise LeaseLost(self.name)
        self.lease_renewed = time.monotonic()

    def _trim(self) -> None:
        """Trims this policy's streams to the retention, never past what the checkpoint covers.
        A shadow leaves the log it reads to the policy that owns it."""
        if self.retention_seconds <= 0 or self.source != self.name:
            return
        oldest = f"{int(time.time() * 1000 - self.retention_seconds * 1000)}-0"
        self.log.trim(
            self.name,
            min(oldest, self.state.decisions_position, key=eventlog.entry_key),
            min(oldest, self.state.rewards_position, key=eventlog.entry_key),
        )

    def follow_live(self) -> None:
        """Resumes from the live version if someone else (a rollback) moved it."""
        if self.log.live(self.name) != self.live:
            self.resume()

    def stats(self) -> dict[str, object]:
        model: dict[str, object] = dict(self.policy.stats())
        if self.sessions is not None:
            model |= {"episodes": self.sessions.episodes, "mean_return_100": self.sessions.mean_return()}
        return {
            "applied": self.state.applied,
            "pending": len(self.join.pending),
            "reward_sum": self.state.reward_sum,
            "live": self.live,
            "last_publish_ms": self.last_publish_ms,
            "apprentice_decisions": self.state.apprentice_decisions,
            "apprentice_matches": self.state.apprentice_matches,
            **{outcome: self.join.outcomes[outcome] for outcome in OUTCOMES},
            **{keys.TRAINER_MODEL_PREFIX + k: "" if v is None else v for k, v in model.items()},
        }


class Trainer:
    """Trains every policy (or the configured shard) whose lease it can hold."""

    def __init__(self, settings: TrainerSettings, metrics: TrainerMetrics | None = None) -> None:
        if settings.redis_url is None:
            raise ValueError("REDIS_URL is not set")
        self.settings = settings
        self.log = LogClient(settings.redis_url)
        self.metrics = metrics or TrainerMetrics()
        self.holder = f"trainer-{uuid.uuid4().hex[:12]}"
        self.trainers: dict[str, PolicyTrainer] = {}
        self.shard = {p.strip() for p in settings.trainer_policies.split(",") if p.strip()}
        self._last_lease: dict[str, float] = {}
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        logger.info("trainer %s started", self.holder)
        try:
            while not self._stopping:
                try:
                    if self.run_once() == 0:
                        time.sleep(self.settings.trainer_poll_seconds)
                except LogUnavailable as error:
                    # Whatever this pass did after its last checkpoint is redone from it.
                    logger.warning("redis unavailable (%s); resuming from the checkpoints in 1 s", error)
                    self.trainers.clear()
                    self._last_lease.clear()
                    time.sleep(1.0)
        finally:
            for name in list(self.trainers):
                self.log.release_lease(name, self.holder)
            self.log.close()

    def run_once(self) -> int:
        """One pass over the policies: leases, then a step and maybe a publish each."""
        applied = 0
        for name in self.log.policy_names():
            if self.shard and name not in self.shard:
                continue
            if not self._hold(name):
                continue
            trainer = self.trainers[name]
            try:
                trainer.follow_live()
                applied += trainer.step()
                if trainer.due():
                    trainer.publish()
            except LeaseLost:
                logger.warning("policy %s: lease lost; dropping it", name)
                del self.trainers[name]
        return applied

    def _hold(self, name: str) -> bool:
        ttl_ms = int(self.settings.trainer_lease_seconds * 1000)
        now = time.monotonic()
        held = name in self.trainers
        if held and now - self._last_lease.get(name, 0.0) < self.settings.trainer_lease_seconds / 4:
            return True
        if not self.log.hold_lease(name, self.holder, ttl_ms):
            if held:
                logger.warning("policy %s: lease taken by another trainer", name)
                del self.trainers[name]
            return False
        self._last_lease[name] = now
        if not held:
            self.trainers[name] = PolicyTrainer(
                self.log,
                self.settings.store,
                name,
                self.metrics,
                self.settings.join_grace_seconds,
                self.settings.trainer_read_batch,
                holder=self.holder,
                keep_checkpoints=self.settings.keep_checkpoints,
                retention_seconds=self.settings.stream_retention_seconds,
                lease_seconds=self.settings.trainer_lease_seconds,
            )
        return True
