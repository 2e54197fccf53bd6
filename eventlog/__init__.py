"""The event log: the one door to Redis.

Everything banditd keeps in Redis goes through this package: key names (keys.py), record
formats (records.py), Lua scripts and their arguments (scripts.py), the async client of the
API (aio.py) and the sync client of the trainer and the batch jobs (sync.py). Nothing else
imports redis (tests/test_layering.py checks it). Redis errors become ``LogUnavailable``.

The names most callers need are re-exported here (``from eventlog import DecisionRecord``).
"""

from eventlog.errors import LogUnavailable
from eventlog.keys import (
    ANNOUNCE,
    CANDIDATES,
    EXPERIMENTS,
    LIVE,
    MODES,
    POLICIES,
    PREFIX,
    checkpoint_seq_key,
    decisions_key,
    event_key,
    experiment_changes_key,
    experiment_stats_key,
    lease_key,
    rewards_key,
    stats_key,
    trainer_key,
    variant_stats,
)
from eventlog.records import (
    MAX_IMPORTANCE_WEIGHT,
    MODE_VALUES,
    DecisionRecord,
    RewardRecord,
    TrainingDecision,
    entry_key,
    entry_ms,
    parse_version,
    text,
)

__all__ = [
    "ANNOUNCE",
    "CANDIDATES",
    "EXPERIMENTS",
    "LIVE",
    "MAX_IMPORTANCE_WEIGHT",
    "MODES",
    "MODE_VALUES",
    "POLICIES",
    "PREFIX",
    "DecisionRecord",
    "LogUnavailable",
    "RewardRecord",
    "TrainingDecision",
    "checkpoint_seq_key",
    "decisions_key",
    "entry_key",
    "entry_ms",
    "event_key",
    "experiment_changes_key",
    "experiment_stats_key",
    "lease_key",
    "parse_version",
    "rewards_key",
    "stats_key",
    "text",
    "trainer_key",
    "variant_stats",
]
