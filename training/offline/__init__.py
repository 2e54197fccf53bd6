"""Offline jobs on a policy's log: export the joined log, import logged data, retrain a
candidate version, evaluate it off-policy against the live one, and promote it.

Plain functions; ``banditd export-log | import-log | retrain | evaluate | promote`` and the
admin routes ``POST /policies/{name}/retrain | evaluate | promote`` are thin wrappers.

The joined log is one row per decision, joined with its rewards by the trainer's rules
(training/join.py) as if every reward window had closed: aggregation "earliest" takes the
first in-time reward, "sum" adds the in-time rewards, late rewards never count, and a
decision without one gets the policy's default reward (``rewarded`` False).

A retrain writes a new export and records it as the policy's candidate
(``eventlog.CANDIDATES``); nothing serves it until ``promote`` copies its variables into a
new checkpoint that carries the trainer's current log position (like a rollback) and moves
the live pointer. Redis is reached through eventlog.sync.LogClient only.
"""

from training.offline.errors import Busy, InvalidData, NoCandidate, OfflineError, UnknownPolicy
from training.offline.imports import IMPORT_FORMATS, ImportFormat, LoggedData, import_log, read_logged_data
from training.offline.jobs import (
    UPDATE_BATCH,
    auto_promote_configured,
    candidate,
    candidate_beats_live,
    evaluate,
    load_version,
    promote,
    promote_if_better,
    retrain,
)
from training.offline.joinedlog import JOINED_COLUMNS, JoinedLog
from training.offline.progress import NoProgress, Progress
from training.offline.reading import read_joined_log, record_inputs

__all__ = [
    "IMPORT_FORMATS",
    "JOINED_COLUMNS",
    "UPDATE_BATCH",
    "Busy",
    "ImportFormat",
    "InvalidData",
    "JoinedLog",
    "LoggedData",
    "NoCandidate",
    "NoProgress",
    "OfflineError",
    "Progress",
    "UnknownPolicy",
    "auto_promote_configured",
    "candidate",
    "candidate_beats_live",
    "evaluate",
    "import_log",
    "load_version",
    "promote",
    "promote_if_better",
    "read_joined_log",
    "read_logged_data",
    "record_inputs",
    "retrain",
]
