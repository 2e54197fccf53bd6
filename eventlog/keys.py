"""Every Redis key of the event log, and the fields of its hashes: one function per key.

Keys (``{p}`` is a policy name, ``{e}`` an event id, ``{x}`` an experiment name):

    banditd:policies                 hash  name -> PolicySpec JSON
    banditd:live                     hash  name -> live version ("<export>" or "<export>.<checkpoint>")
    banditd:modes                    hash  name -> serving mode: "online" or "apprentice"
    banditd:candidates               hash  name -> candidate version ("<export>.0") written by
                                           an offline retrain, served only once promoted
    banditd:announce                 pub/sub channel: "<policy> <version>" on every live change
    banditd:policy:{p}:decisions     stream of DecisionRecord
    banditd:policy:{p}:rewards       stream of RewardRecord
    banditd:policy:{p}:stats         hash  decisions, rewards, late_rewards, duplicate_rewards
    banditd:policy:{p}:lease         string: the trainer holding the policy (expires unless renewed)
    banditd:policy:{p}:checkpoint_seq counter: the last checkpoint number handed out
    banditd:policy:{p}:trainer       hash  the trainer's view (applied, pending, outcomes, ...)
    banditd:event:{e}                hash  what /reward needs to validate a reward and what
                                           /act needs to answer a repeated event id; expires
                                           wait_seconds + margin after the decision
    banditd:experiments              hash  name -> experiment definition JSON
    banditd:experiment:{x}:changes   list  every change of an experiment (JSON), oldest first
    banditd:experiment:{x}:stats     hash  per variant "<v>:n", "<v>:sum", "<v>:sumsq" of
                                           first in-time rewards (the allocator's input)

Changing the layout (for example hash tags for Redis Cluster) is a change in this module.
"""

from __future__ import annotations

PREFIX = "banditd"
POLICIES = f"{PREFIX}:policies"
LIVE = f"{PREFIX}:live"
CANDIDATES = f"{PREFIX}:candidates"
MODES = f"{PREFIX}:modes"
EXPERIMENTS = f"{PREFIX}:experiments"
ANNOUNCE = f"{PREFIX}:announce"


def _policy_key(policy: str, kind: str) -> str:
    return f"{PREFIX}:policy:{policy}:{kind}"


def decisions_key(policy: str) -> str:
    return _policy_key(policy, "decisions")


def rewards_key(policy: str) -> str:
    return _policy_key(policy, "rewards")


def stats_key(policy: str) -> str:
    return _policy_key(policy, "stats")


def lease_key(policy: str) -> str:
    return _policy_key(policy, "lease")


def checkpoint_seq_key(policy: str) -> str:
    return _policy_key(policy, "checkpoint_seq")


def trainer_key(policy: str) -> str:
    return _policy_key(policy, "trainer")


def event_key(event_id: str) -> str:
    return f"{PREFIX}:event:{event_id}"


def experiment_changes_key(experiment: str) -> str:
    return f"{PREFIX}:experiment:{experiment}:changes"


def experiment_stats_key(experiment: str) -> str:
    return f"{PREFIX}:experiment:{experiment}:stats"


# Fields of the per-event hash (event_key).
EVENT_POLICY = "policy"
EVENT_TS_MS = "ts_ms"
EVENT_RESPONSE = "response"
EVENT_REWARDS = "rewards"
EVENT_ENTRY = "entry"  # the decision's stream entry id
EVENT_EXPERIMENT = "experiment"
EVENT_VARIANT = "variant"
EVENT_SPOOLED = "spooled:"  # + a spooled reward's token -> its sequence (a replay writes it once)

# Fields of the per-policy stats hash (stats_key).
STAT_DECISIONS = "decisions"
STAT_REWARDS = "rewards"
STAT_LATE = "late_rewards"
STAT_DUPLICATE = "duplicate_rewards"

# Fields of the trainer's hash (trainer_key): its own counters, and the model's under this prefix.
TRAINER_MODEL_PREFIX = "model."

# Fields of the per-experiment stats hash (experiment_stats_key): "<variant>" + suffix.
VARIANT_COUNT = ":n"
VARIANT_SUM = ":sum"
VARIANT_SUM_SQUARES = ":sumsq"


def variant_stats(raw: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    """The experiment stats hash as {variant: (count, sum, sum of squares)} of its first in-time rewards."""
    fields = (VARIANT_COUNT, VARIANT_SUM, VARIANT_SUM_SQUARES)
    variants = {name.rpartition(":")[0] for name in raw}
    return {
        v: (raw.get(v + fields[0], 0.0), raw.get(v + fields[1], 0.0), raw.get(v + fields[2], 0.0)) for v in variants
    }
