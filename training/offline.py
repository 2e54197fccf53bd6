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
the live pointer. Key names and record formats come from training.eventlog only.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import logging
import math
import os
import statistics
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

import eventlog
from bandits.features import FeatureError
from eventlog import scripts
from eventlog.sync import LogClient
from exporter import loader, savedmodel
from exporter.spec import PackedWidths, PolicySpec
from training import checkpoints
from training.join import packed_inputs
from training.ope import evaluate_policy

logger = logging.getLogger(__name__)

IMPORTED_EVENT_MARGIN_SECONDS = 60.0
"""Imported decisions' event hashes expire this long after their reward window."""
WRITE_BATCH = 2000
"""Decisions (and as many rewards) per pipelined round trip when importing."""
UPDATE_BATCH = 10_000
"""Examples per policy.update call when retraining."""
PARQUET_FORMAT = 1
"""Version of the exported Parquet layout, stored in the file's metadata."""
PROMOTE_ATTEMPTS = 5
"""How often promote retries when the live pointer moves under it (a trainer publishing)."""

ImportFormat = Literal["parquet", "csv", "obd"]
IMPORT_FORMATS: tuple[str, ...] = ("parquet", "csv", "obd")


# -- errors ------------------------------------------------------------------------------


class OfflineError(Exception):
    """Base of the offline jobs' errors; ``field`` names the input at fault and ``retryable``
    says whether the same call may succeed later."""

    retryable = False

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownPolicy(OfflineError):
    """No policy of that name (or it has no live version)."""


class NoCandidate(OfflineError):
    """The policy has no candidate version (retrain first), or not the one asked for."""


class InvalidData(OfflineError):
    """A file or log whose content does not fit the policy (missing column, bad shape, empty)."""


class Busy(OfflineError):
    """The live version kept moving while promoting (a trainer publishing); try again."""

    retryable = True


# -- progress ----------------------------------------------------------------------------


class Progress(Protocol):
    """Where a job reports how far it is (the CLI draws a bar on stderr; the API ignores it)."""

    def start(self, task: str, total: int | None) -> None:
        """A new phase of ``total`` units (None: unknown) begins."""

    def advance(self, n: int) -> None:
        """``n`` more units of the current phase are done."""

    def finish(self) -> None:
        """The current phase is done."""


class NoProgress:
    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


# -- the joined log ----------------------------------------------------------------------


@dataclasses.dataclass
class JoinedLog:
    """One row per decision of one policy, joined with its rewards. n rows, d context
    features, K actions."""

    policy: str
    num_actions: int
    event_ids: np.ndarray
    """[n] str."""
    ts_ms: np.ndarray
    """[n] int64: decision time (ms since the epoch)."""
    versions: np.ndarray
    """[n] str: the version '<export>.<checkpoint>' that decided ("import" for imported rows)."""
    contexts: np.ndarray
    """[n, d] float32."""
    masks: np.ndarray | None
    """[n, K] bool: the allowed actions; None when no decision had a mask (all allowed)."""
    actions: np.ndarray
    """[n] int32."""
    propensities: np.ndarray
    """[n] float64: overall probability of the logged action, variant_probability * propensity
    for experiment traffic."""
    rewards: np.ndarray
    """[n] float64: the joined reward, or the policy's default where none came."""
    rewarded: np.ndarray
    """[n] bool: False where the default reward was used."""
    reward_ts_ms: np.ndarray
    """[n] int64: time of the (last) reward that counted; -1 where none did."""
    experiments: np.ndarray
    """[n] object: the experiment that routed the decision here, or None."""
    variants: np.ndarray
    """[n] object: its variant, or None."""
    greedy: np.ndarray
    """[n] bool: served by the greedy (exploit-only) SavedModel."""
    context_categorical: np.ndarray | None = None
    """[n, m] str: named contexts' categorical values (contexts then holds the numeric ones)."""
    candidates: np.ndarray | None = None
    """[n] object: candidate sets, each row's candidate ids (a list, in request order); masks is
    then [n, K] with K the largest set, False on padding and on excluded candidates."""
    action_features: np.ndarray | None = None
    """[n, K, n_a] float32: candidate sets, every candidate's numeric features (0 on padding)."""
    action_categorical: np.ndarray | None = None
    """[n, K, m_a] str: candidate sets with named features, their categorical values."""

    def __len__(self) -> int:
        return len(self.event_ids)

    def packed(self) -> dict[str, np.ndarray]:
        """The inputs besides contexts and masks, as keyword arguments of LoadedVersion.decide."""
        return packed_inputs(self.context_categorical, self.action_features, self.action_categorical)

    def chosen(self) -> dict[str, np.ndarray]:
        """The examples' packed inputs besides contexts, as keyword arguments of Policy.learn:
        for candidate sets the logged (chosen) candidate's features."""
        rows = np.arange(len(self))
        return packed_inputs(
            self.context_categorical,
            None if self.action_features is None else self.action_features[rows, self.actions],
            None if self.action_categorical is None else self.action_categorical[rows, self.actions],
        )

    @property
    def context_dim(self) -> int:
        return int(self.contexts.shape[1])

    def select(self, rows: slice | np.ndarray) -> JoinedLog:
        """The rows selected by a slice, an index array or a boolean mask, in that order."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        selected: dict[str, Any] = {name: a[rows] for name, a in arrays.items() if isinstance(a, np.ndarray)}
        return dataclasses.replace(self, **selected)

    def on_policy_value(self, alpha: float = 0.05) -> dict[str, float]:
        """The logging policy's value: the mean logged reward, with a normal (1 - alpha) interval."""
        n = len(self)
        if n == 0:
            return {"value": math.nan, "low": math.nan, "high": math.nan}
        mean = float(self.rewards.mean())
        half = statistics.NormalDist().inv_cdf(1 - alpha / 2) * float(self.rewards.std(ddof=1) if n > 1 else 0.0)
        half /= math.sqrt(n)
        return {"value": mean, "low": mean - half, "high": mean + half}

    # -- Parquet ---------------------------------------------------------------------------

    def to_table(self) -> pa.Table:
        n, d, k = len(self), self.context_dim, self.num_actions
        if d:
            contexts = pa.FixedSizeListArray.from_arrays(pa.array(self.contexts.reshape(-1), pa.float32()), d)
        else:  # a named context without numeric features (Arrow has no fixed-size list of 0)
            contexts = pa.array([[] for _ in range(n)], pa.list_(pa.float32()))
        if self.masks is None:
            masks = pa.nulls(n, pa.list_(pa.bool_(), k))
        else:
            masks = pa.FixedSizeListArray.from_arrays(pa.array(self.masks.reshape(-1), pa.bool_()), k)
        columns = {
            "event_id": pa.array(self.event_ids.tolist(), pa.string()),
            "ts_ms": pa.array(self.ts_ms, pa.int64()),
            "version": pa.array(self.versions.tolist(), pa.string()),
            "context": contexts,
            "mask": masks,
            "action": pa.array(self.actions, pa.int32()),
            "propensity": pa.array(self.propensities, pa.float64()),
            "reward": pa.array(self.rewards, pa.float64()),
            "rewarded": pa.array(self.rewarded, pa.bool_()),
            "reward_ts_ms": pa.array(self.reward_ts_ms, pa.int64(), mask=self.reward_ts_ms < 0),
            "experiment": pa.array(self.experiments.tolist(), pa.string()),
            "variant": pa.array(self.variants.tolist(), pa.string()),
            "greedy": pa.array(self.greedy, pa.bool_()),
        }
        meta: dict[str, Any] = {"format": PARQUET_FORMAT, "policy": self.policy, "context_dim": d, "num_actions": k}
        if self.context_categorical is not None:
            columns["context_categorical"] = pa.array(self.context_categorical.tolist(), pa.list_(pa.string()))
            meta["context_categorical"] = int(self.context_categorical.shape[1])
        if self.candidates is not None:
            assert self.masks is not None and self.action_features is not None
            sizes = [len(ids) for ids in self.candidates]
            columns["candidates"] = pa.array(list(self.candidates), pa.list_(pa.string()))
            columns["mask"] = pa.array([m[:size].tolist() for m, size in zip(self.masks, sizes, strict=True)])
            columns["action_features"] = pa.array(
                [f[:size].tolist() for f, size in zip(self.action_features, sizes, strict=True)],
                pa.list_(pa.list_(pa.float32())),
            )
            meta["action_features"] = int(self.action_features.shape[2])
            if self.action_categorical is not None:
                columns["action_categorical"] = pa.array(
                    [c[:size].tolist() for c, size in zip(self.action_categorical, sizes, strict=True)],
                    pa.list_(pa.list_(pa.string())),
                )
                meta["action_categorical"] = int(self.action_categorical.shape[2])
        return pa.table(columns, metadata={b"banditd": json.dumps(meta).encode()})

    def to_parquet(self, path: Path | str) -> Path:
        """Writes the joined log as one Parquet file (temp file, then renamed into place)."""
        table = self.to_table()
        return _write_atomically(Path(path), lambda tmp: pq.write_table(table, tmp, compression="zstd"))

    @classmethod
    def from_table(cls, table: pa.Table, source: str = "table") -> JoinedLog:
        meta = json.loads((table.schema.metadata or {}).get(b"banditd", b"null"))
        if not isinstance(meta, dict) or meta.get("format") != PARQUET_FORMAT:
            raise InvalidData(f"log: {source} is not a joined log written by `banditd export-log`", "log")
        missing = [c for c in JOINED_COLUMNS if c not in table.column_names]
        if missing:
            raise InvalidData(f"log: {source} lacks the column {missing[0]!r}", "log")
        d, k = int(meta["context_dim"]), int(meta["num_actions"])
        n = table.num_rows
        packed: dict[str, Any] = {}
        if "context_categorical" in meta:
            packed["context_categorical"] = np.array(
                table.column("context_categorical").to_pylist(), dtype=object
            ).reshape(n, int(meta["context_categorical"]))
        mask_column = table.column("mask")
        masks = None
        if "action_features" in meta:
            widths = PackedWidths(
                d,
                int(meta.get("context_categorical", 0)),
                int(meta["action_features"]),
                int(meta.get("action_categorical", 0)),
                candidates=True,
            )
            packed |= _padded_candidates(
                table.column("candidates").to_pylist(),
                mask_column.to_pylist(),
                table.column("action_features").to_pylist(),
                table.column("action_categorical").to_pylist() if "action_categorical" in meta else None,
                widths,
                k,
            )
            masks = packed.pop("masks")
        elif mask_column.null_count < n:  # rows without a mask allow every action
            masks = np.ones((n, k), bool)
            valid = mask_column.is_valid().to_numpy(zero_copy_only=False)
            masks[valid] = _list_values(mask_column.filter(mask_column.is_valid()), np.bool_).reshape(-1, k)
        reward_ts = table.column("reward_ts_ms")
        return cls(
            policy=str(meta["policy"]),
            num_actions=k,
            event_ids=np.array(table.column("event_id").to_pylist(), dtype=object),
            ts_ms=table.column("ts_ms").to_numpy().astype(np.int64),
            versions=np.array(table.column("version").to_pylist(), dtype=object),
            contexts=_list_values(table.column("context"), np.float32).reshape(n, d),
            masks=masks,
            actions=table.column("action").to_numpy().astype(np.int32),
            propensities=table.column("propensity").to_numpy().astype(np.float64),
            rewards=table.column("reward").to_numpy().astype(np.float64),
            rewarded=table.column("rewarded").to_numpy(zero_copy_only=False).astype(bool),
            reward_ts_ms=pc.fill_null(reward_ts, -1).to_numpy().astype(np.int64),
            experiments=np.array(table.column("experiment").to_pylist(), dtype=object),
            variants=np.array(table.column("variant").to_pylist(), dtype=object),
            greedy=table.column("greedy").to_numpy(zero_copy_only=False).astype(bool),
            **packed,
        )

    @classmethod
    def from_parquet(cls, path: Path | str) -> JoinedLog:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as error:
            raise InvalidData(f"log: cannot read {path}: {error}", "log") from error
        return cls.from_table(table, str(path))

    # -- Vowpal Wabbit's decision-service JSON ---------------------------------------------

    def dsjson_lines(self) -> Iterator[bytes]:
        """One line per decision in Vowpal Wabbit's decision-service JSON ("DSJSON", what
        ``vw --cb_explore_adf --dsjson`` reads), after its test data
        (VowpalWabbit/vowpal_wabbit test/train-sets/dsjson_cb.json, decisionservice.json):

            _label_cost         -reward (VW minimises cost)
            _label_probability  the logged propensity of the chosen action
            _label_Action       chosen action, 1-based; _labelIndex the same, 0-based
            a                   the allowed actions, 1-based, the chosen one first
            p                   their probabilities, in the order of ``a``
            c                   {"x": the context (shared dense features),
                                 "_multi": one namespace "a" with feature "id=<k>" per action k}
            EventId, Timestamp  (ISO 8601, 7 fractional digits, "Z"), Version "1" (of the format),
            VWState.m           "<policy>/<version>": the model that decided.

        The log keeps only the chosen action's probability, so ``p`` spreads the rest,
        1 - propensity, evenly over the other allowed actions; exact for LinUCB's collect
        policy whenever it chose its UCB argmax, an approximation otherwise.
        """
        k = self.num_actions
        multi = [{"a": {f"id={action}": 1}} for action in range(k)]
        everything = np.arange(k)
        for i in range(len(self)):
            action = int(self.actions[i])
            propensity = float(self.propensities[i])
            allowed = everything if self.masks is None else np.flatnonzero(self.masks[i])
            others = [int(a) for a in allowed if a != action]
            rest = (1.0 - propensity) / len(others) if others else 0.0
            record = {
                "_label_cost": -float(self.rewards[i]),
                "_label_probability": propensity,
                "_label_Action": action + 1,
                "_labelIndex": action,
                "Timestamp": _dsjson_time(int(self.ts_ms[i])),
                "Version": "1",
                "EventId": str(self.event_ids[i]),
                "a": [action + 1] + [a + 1 for a in others],
                "c": {"x": self.contexts[i].tolist(), "_multi": multi},
                "p": [propensity] + [rest] * len(others),
                "VWState": {"m": f"{self.policy}/{self.versions[i]}"},
            }
            yield orjson.dumps(record) + b"\n"

    def to_dsjson(self, path: Path | str) -> Path:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                for line in self.dsjson_lines():
                    f.write(line)

        return _write_atomically(Path(path), write)


JOINED_COLUMNS = (
    "event_id",
    "ts_ms",
    "version",
    "context",
    "mask",
    "action",
    "propensity",
    "reward",
    "rewarded",
    "reward_ts_ms",
    "experiment",
    "variant",
    "greedy",
)


def _list_values(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """The flattened values of a (fixed-size) list column as numpy."""
    flat = pc.list_flatten(column)
    return flat.to_numpy(zero_copy_only=False).astype(dtype)


def _dsjson_time(ts_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ts_ms / 1000, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}0000Z"


def _write_atomically(path: Path, write: Callable[[Path], Any]) -> Path:
    """Writes a file through a temporary name beside it, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- reading the log ---------------------------------------------------------------------


def _spec(log: LogClient, name: str) -> PolicySpec:
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
    spec = _spec(log, name)
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

    earliest = spec.reward.aggregation == "earliest"
    reward_sums: dict[str, float] = {}
    reward_times: dict[str, int] = {}
    progress.start("read rewards", total_rewards)
    if decisions:
        first = next(iter(decisions))  # rewards come after their decision
        for _, record in itertools.chain.from_iterable(_counted(log.scan_rewards(name, first), progress)):
            decision = record.decision_entry
            if record.late or decision not in decisions:
                continue  # late rewards never count; others belong to decisions outside the range
            if earliest:
                if decision not in reward_sums:
                    reward_sums[decision] = record.reward
                    reward_times[decision] = record.ts_ms
            else:
                reward_sums[decision] = reward_sums.get(decision, 0.0) + record.reward
                reward_times[decision] = record.ts_ms
    progress.finish()
    return _joined(spec, list(decisions.items()), reward_sums, reward_times)


def _joined(
    spec: PolicySpec,
    decisions: Sequence[tuple[str, eventlog.DecisionRecord]],
    reward_sums: dict[str, float],
    reward_times: dict[str, int],
) -> JoinedLog:
    records = [record for _, record in decisions]
    rewarded = np.array([entry in reward_sums for entry, _ in decisions], bool)
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
        rewards=np.array([reward_sums.get(entry, spec.reward.default) for entry, _ in decisions], np.float64),
        rewarded=rewarded,
        reward_ts_ms=np.array([reward_times.get(entry, -1) for entry, _ in decisions], np.int64),
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
        out |= _padded_candidates(
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


def _padded_candidates(
    ids: Sequence[Sequence[str]],
    masks: Sequence[Sequence[bool]],
    features: Sequence[Any],
    categorical: Sequence[Sequence[Sequence[str]] | None] | None,
    widths: PackedWidths,
    k: int,
) -> dict[str, np.ndarray]:
    """Per-row candidate lists padded to k: candidates, masks (False on padding), action_features
    and action_categorical (when the candidates have categorical features)."""
    n = len(ids)
    mask = np.zeros((n, k), bool)
    values = np.zeros((n, k, widths.action), np.float32)
    strings = np.full((n, k, widths.action_categorical), "", dtype=object) if categorical is not None else None
    for i in range(n):
        size = len(ids[i])
        mask[i, :size] = masks[i] if len(masks[i]) else True
        values[i, :size] = np.asarray(features[i], np.float32).reshape(size, widths.action)
        if strings is not None and categorical is not None:
            strings[i, :size] = np.asarray(categorical[i], dtype=object).reshape(size, widths.action_categorical)
    out = {"candidates": _object_array([list(row) for row in ids]), "masks": mask, "action_features": values}
    return out | ({} if strings is None else {"action_categorical": strings})


def _object_array(rows: list[Any]) -> np.ndarray:
    """A 1-d object array of lists (np.array would make a 2-d array of equal-length lists)."""
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out


# -- importing logged data ---------------------------------------------------------------


@dataclasses.dataclass
class LoggedData:
    """Logged bandit feedback from a file, before it is written to a policy's log."""

    contexts: np.ndarray
    """[n, d] float32."""
    actions: np.ndarray
    """[n] int64."""
    propensities: np.ndarray
    """[n] float64."""
    rewards: np.ndarray
    """[n] float64."""
    ts_ms: np.ndarray | None
    """[n] int64 decision times, or None (the import time is used)."""
    context_categorical: np.ndarray | None = None
    """[n, m] str: named contexts, packed (contexts then holds the numeric values)."""
    candidates: list[str] | None = None
    """Candidate sets: the ids of the candidates every row chose from (actions index them)."""
    action_features: np.ndarray | None = None
    """[n, K, n_a] float32: candidate sets, every candidate's packed numeric features."""
    action_categorical: np.ndarray | None = None
    """[n, K, m_a] str: candidate sets, every candidate's packed categorical features."""


OBD_AFFINITY_PREFIX = "user-item_affinity_"
OBD_AFFINITY_FEATURE = "user_item_affinity"
"""Candidate sets from the Open Bandit Dataset: the feature holding user-item_affinity_<item>."""
OBD_ITEM_CONTEXT = "item_context.csv"


def _obd_named(table: pa.Table, spec: PolicySpec, path: Path) -> dict[str, Any]:
    """The Open Bandit Dataset under a policy's feature schemas: the context from the CSV's
    columns by name (user_feature_0..3, user-item_affinity_<i>); for candidate sets every row
    offers all items of item_context.csv (beside the CSV; ids "0".."79") with their item_feature_*
    columns and user_item_affinity = the row's user-item_affinity_<item>."""
    n = table.num_rows
    try:
        columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        out: dict[str, Any] = {}
        if spec.context_schema.named:
            out["contexts"], out["context_categorical"] = spec.context_schema.pack_columns(columns, n, "features")
            if not spec.context_schema.categorical:
                out.pop("context_categorical")
        schema = spec.action_schema
        if schema is None:
            return out
        if not schema.named:
            raise InvalidData("action_features: the obd import needs a named candidate schema", "action_features")
        items_path = path.parent / OBD_ITEM_CONTEXT
        items = pa_csv.read_csv(items_path)
        order = np.argsort(items.column("item_id").to_numpy())
        item_ids = items.column("item_id").to_numpy()[order]
        item_columns = {c: items.column(c).to_numpy(zero_copy_only=False)[order] for c in items.column_names}
        affinity = np.stack([columns[f"{OBD_AFFINITY_PREFIX}{int(i)}"] for i in item_ids], axis=1)  # [n, K]
        k = len(item_ids)
        numeric, categorical = schema.pack_columns(
            item_columns | {OBD_AFFINITY_FEATURE: np.zeros(k)}, k, "action_features"
        )
        features = np.broadcast_to(numeric, (n, *numeric.shape)).copy()
        names = [f.name for f in schema.numeric]
        if OBD_AFFINITY_FEATURE in names:
            features[:, :, names.index(OBD_AFFINITY_FEATURE)] = affinity
        out["candidates"] = [str(int(i)) for i in item_ids]
        out["action_features"] = features
        out["action_categorical"] = np.broadcast_to(categorical, (n, *categorical.shape))
        position = {int(item): j for j, item in enumerate(item_ids)}
        out["actions"] = np.array([position[int(a)] for a in columns["action"]], np.int64)
        return out
    except FeatureError as error:
        raise InvalidData(f"{error.field}: {error.problem} (in {path})", error.field) from error
    except (OSError, pa.ArrowException, KeyError) as error:
        raise InvalidData(f"file: cannot read the Open Bandit Dataset's item features: {error}", "file") from error


def read_logged_data(
    path: Path | str,
    fmt: ImportFormat,
    context_prefix: str = "x",
    context_columns: Sequence[str] | None = None,
    spec: PolicySpec | None = None,
) -> LoggedData:
    """Reads logged data: Parquet or CSV (gzipped when the name ends in .gz) with context
    columns (``context_columns``, or every column named ``<context_prefix><i>`` in order of
    i, or a list column ``context`` as `banditd export-log` writes), ``action`` (0-based),
    ``propensity``, ``reward`` and optionally ``ts_ms`` or ``timestamp``.

    ``obd``: a CSV of the Open Bandit Dataset (``all.csv`` of one logging policy and
    campaign): context = the 80 ``user-item_affinity_<i>`` columns, action = ``item_id``,
    reward = ``click``, propensity = ``propensity_score``, time = ``timestamp``. The slot
    (``position``) and the hashed ``user_feature_*`` columns are not used: every row is one
    decision of an 80-armed policy. For a policy with named features or candidate sets
    (``spec``) the context is packed from the columns its schema names, and a candidate set is
    every item of item_context.csv (see _obd_named).
    """
    path = Path(path)
    try:
        if fmt == "parquet":
            table = pq.read_table(path)
        elif fmt in ("csv", "obd"):
            table = pa_csv.read_csv(path)
        else:
            raise InvalidData(f"format: unknown format {fmt!r}; known: {', '.join(IMPORT_FORMATS)}", "format")
    except (OSError, pa.ArrowException) as error:
        raise InvalidData(f"file: cannot read {path}: {error}", "file") from error
    if fmt == "obd":
        renamed = {"item_id": "action", "click": "reward", "propensity_score": "propensity"}
        table = table.rename_columns([renamed.get(c, c) for c in table.column_names])
        context_prefix, context_columns = OBD_AFFINITY_PREFIX, None
    for column in ("action", "propensity", "reward"):
        if column not in table.column_names:
            raise InvalidData(f"{column}: {path} has no column {column!r}", column)
    n = table.num_rows
    if context_columns:
        missing = [c for c in context_columns if c not in table.column_names]
        if missing:
            raise InvalidData(f"context_columns: {path} has no column {missing[0]!r}", "context_columns")
        contexts = _numeric_matrix(table, list(context_columns))
    elif _is_list_column(table, "context"):
        contexts = _list_values(table.column("context"), np.float32).reshape(n, -1)
    else:
        numbered = sorted(
            (int(c[len(context_prefix) :]), c)
            for c in table.column_names
            if c.startswith(context_prefix) and c[len(context_prefix) :].isdigit()
        )
        if not numbered:
            raise InvalidData(f"context: {path} has no columns {context_prefix}0, {context_prefix}1, ...", "context")
        contexts = _numeric_matrix(table, [c for _, c in numbered])
    data = LoggedData(
        contexts=contexts,
        actions=_numeric(table, "action").astype(np.int64),
        propensities=_numeric(table, "propensity"),
        rewards=_numeric(table, "reward"),
        ts_ms=_times(table),
    )
    if spec is not None and spec.layout != "vector":
        if fmt != "obd":
            raise InvalidData(
                f"format: policy {spec.name!r} takes named features or candidate sets; those import from the "
                "Open Bandit Dataset (obd) only",
                "format",
            )
        data = dataclasses.replace(data, **_obd_named(table, spec, path))
    return data


def _is_list_column(table: pa.Table, column: str) -> bool:
    if column not in table.column_names:
        return False
    kind = table.schema.field(column).type
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))


def _numeric(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column)
    if values.null_count:
        raise InvalidData(f"{column}: {values.null_count} empty values", column)
    try:
        return values.cast(pa.float64()).to_numpy()
    except pa.ArrowException as error:
        raise InvalidData(f"{column}: not numeric ({values.type})", column) from error


def _numeric_matrix(table: pa.Table, columns: list[str]) -> np.ndarray:
    return np.stack([_numeric(table, c) for c in columns], axis=1).astype(np.float32)


def _times(table: pa.Table) -> np.ndarray | None:
    if "ts_ms" in table.column_names:
        return _numeric(table, "ts_ms").astype(np.int64)
    if "timestamp" not in table.column_names:
        return None
    values = table.column("timestamp")
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        try:
            values = pc.cast(values, pa.timestamp("us", "UTC"))
        except pa.ArrowException as error:
            raise InvalidData(f"timestamp: not ISO 8601 times: {error}", "timestamp") from error
    if not pa.types.is_timestamp(values.type):
        raise InvalidData(f"timestamp: expected ISO 8601 times, got {values.type}", "timestamp")
    if values.null_count:
        raise InvalidData(f"timestamp: {values.null_count} empty values", "timestamp")
    raw = values.cast(pa.int64()).to_numpy().astype(np.int64)  # in the column's unit, UTC
    unit = values.type.unit
    return raw * 1000 if unit == "s" else raw if unit == "ms" else raw // (1000 if unit == "us" else 1_000_000)


def _check_logged(data: LoggedData, spec: PolicySpec) -> None:
    n, d = data.contexts.shape
    if n == 0:
        raise InvalidData("file: no rows", "file")
    if d != spec.packed_widths.context:
        raise InvalidData(
            f"context: {d} context columns, policy {spec.name!r} takes {spec.packed_widths.context}", "context"
        )
    num_actions = spec.num_actions if data.candidates is None else len(data.candidates)
    if not np.isfinite(data.contexts).all():
        row = int(np.flatnonzero(~np.isfinite(data.contexts).all(axis=1))[0])
        raise InvalidData(f"context: row {row} is not finite", "context")
    if num_actions > spec.num_actions:
        raise InvalidData(
            f"actions: {num_actions} candidates, policy {spec.name!r} takes {spec.num_actions}", "actions"
        )
    bad = np.flatnonzero((data.actions < 0) | (data.actions >= num_actions))
    if bad.size:
        raise InvalidData(
            f"action: row {int(bad[0])} has action {int(data.actions[bad[0]])}, outside [0, {num_actions})",
            "action",
        )
    bad = np.flatnonzero(~((data.propensities > 0) & (data.propensities <= 1)))
    if bad.size:
        raise InvalidData(f"propensity: row {int(bad[0])} is {data.propensities[bad[0]]}, outside (0, 1]", "propensity")
    bad = np.flatnonzero(~np.isfinite(data.rewards))
    if bad.size:
        raise InvalidData(f"reward: row {int(bad[0])} is not finite", "reward")


def import_log(
    log: LogClient,
    name: str,
    path: Path | str,
    fmt: ImportFormat,
    context_prefix: str = "x",
    context_columns: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Appends logged data to a policy's log: per row a decision record (a new event id,
    version "import", seed 0, no scores, not greedy, no unit) and its reward record (in time,
    the first, naming the decision's stream entry), in pipelined batches; the policy's
    decision and reward counters grow like the API's. Returns the number of rows.

    The running trainer learns from imported rows like from served ones.
    """
    progress = progress or NoProgress()
    spec = _spec(log, name)
    data = read_logged_data(path, fmt, context_prefix, context_columns, spec)
    _check_logged(data, spec)
    n = len(data.actions)
    ts_ms = data.ts_ms if data.ts_ms is not None else np.full(n, log.server_time_ms(), np.int64)
    ttl_ms = int((spec.reward.wait_seconds + IMPORTED_EVENT_MARGIN_SECONDS) * 1000)
    progress.start(f"import {name}", n)
    for lo in range(0, n, WRITE_BATCH):
        rows = range(lo, min(n, lo + WRITE_BATCH))
        records = [
            eventlog.DecisionRecord(
                event_id=uuid.uuid4().hex,
                ts_ms=int(ts_ms[i]),
                policy=name,
                version="import",
                context=data.contexts[i].tolist(),
                mask=None,
                action=int(data.actions[i]),
                propensity=float(data.propensities[i]),
                scores=[],
                greedy=False,
                unit_id=None,
                seed=0,
                context_categorical=None if data.context_categorical is None else data.context_categorical[i].tolist(),
                candidates=data.candidates,
                action_features=None if data.action_features is None else data.action_features[i].tolist(),
                action_categorical=None if data.action_categorical is None else data.action_categorical[i].tolist(),
            )
            for i in rows
        ]
        log.record_logged(records, data.rewards[lo : lo + len(records)].tolist(), spec.reward.aggregation, ttl_ms)
        progress.advance(len(records))
    progress.finish()
    logger.info("policy %s: imported %d decisions with rewards from %s (%s)", name, n, path, fmt)
    return n


# -- retraining --------------------------------------------------------------------------


def candidate(log: LogClient, name: str) -> str | None:
    """The policy's candidate version '<export>.0', if a retrain left one."""
    return log.candidate(name)


def _live(log: LogClient, name: str) -> str:
    _spec(log, name)
    live = log.live(name)
    if live is None:
        raise UnknownPolicy(f"policy: policy {name!r} has no live version", "policy")
    return live


def _check_shapes(joined: JoinedLog, spec: PolicySpec) -> None:
    if len(joined) == 0:
        raise InvalidData(f"log: no decisions of policy {spec.name!r} in the log or range", "log")
    widths = spec.packed_widths
    logged = (
        joined.context_dim,
        0 if joined.context_categorical is None else joined.context_categorical.shape[1],
        0 if joined.action_features is None else joined.action_features.shape[2],
    )
    if logged != (widths.context, widths.context_categorical, widths.action):
        raise InvalidData(
            f"log: the log's inputs (numeric, categorical, candidate features) are {logged}; policy "
            f"{spec.name!r} takes {(widths.context, widths.context_categorical, widths.action)}",
            "log",
        )
    if widths.candidates:
        if joined.num_actions > spec.num_actions:
            raise InvalidData(
                f"log: rows with {joined.num_actions} candidates; policy {spec.name!r} takes at most "
                f"{spec.num_actions}",
                "log",
            )
    elif joined.num_actions != spec.num_actions:
        raise InvalidData(
            f"log: the log has K={joined.num_actions}; policy {spec.name!r} has K={spec.num_actions}",
            "log",
        )


def retrain(
    store: Path,
    log: LogClient,
    name: str,
    joined: JoinedLog,
    from_live: bool = False,
    progress: Progress | None = None,
) -> int:
    """Trains the policy on every row of a joined log, from scratch or from the live
    version's variables, exports the result as a new version and records it as the
    candidate. Returns the new export number; the live version is not touched."""
    progress = progress or NoProgress()
    live = _live(log, name)
    export, checkpoint = eventlog.parse_version(live)
    spec = PolicySpec.from_dict(savedmodel.read_manifest(store, name, export)["spec"])
    _check_shapes(joined, spec)
    policy = spec.build_policy()
    if from_live:
        checkpoints.restore_variables(policy, store, name, export, checkpoint)
    n = len(joined)
    contexts = joined.contexts.astype(np.float32, copy=False)
    actions = joined.actions.astype(np.int32, copy=False)
    rewards = joined.rewards.astype(np.float32)
    progress.start(f"retrain {name}", n)
    chosen = joined.chosen()
    for lo in range(0, n, UPDATE_BATCH):
        hi = min(n, lo + UPDATE_BATCH)
        policy.learn(
            contexts[lo:hi],
            actions[lo:hi],
            rewards[lo:hi],
            np.ones(hi - lo, np.float32),
            **{key: values[lo:hi] for key, values in chosen.items()},
        )
        progress.advance(hi - lo)
    progress.finish()
    new_export = savedmodel.export(policy, spec, store)
    log.set_candidate(name, f"{new_export}.0")
    logger.info(
        "policy %s: retrained on %d examples (%s) as candidate %d.0",
        name,
        n,
        f"from {live}" if from_live else "from scratch",
        new_export,
    )
    return new_export


# -- evaluating --------------------------------------------------------------------------


def _load(store: Path, name: str, version: str) -> loader.LoadedVersion:
    """An exported version with the variables of its checkpoint (like the service's registry)."""
    export, checkpoint = eventlog.parse_version(version)
    model = loader.load(store, name, export)
    if checkpoint:
        for saved in (model.greedy_model, model.collect_model):
            checkpoints.restore_variables(saved, store, name, export, checkpoint)
    return model


def _report(report: Any) -> dict[str, Any]:
    return {
        "estimates": {
            key: {"value": float(e.value), "low": float(e.low), "high": float(e.high)}
            for key, e in report.estimates.items()
        },
        "effective_sample_size": float(report.effective_sample_size),
        "max_importance_weight": float(report.max_importance_weight),
    }


def evaluate(
    store: Path,
    log: LogClient,
    name: str,
    joined: JoinedLog,
    greedy: bool = False,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    random_state: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Off-policy estimates (IPW, SNIPW, DM, DR, SNDR with (1 - alpha) bootstrap intervals) of
    the candidate's and the live version's value on a joined log, of the baseline action's
    ("baseline", when the policy names one), and the logging policy's on-policy value (the mean
    logged reward) for reference."""
    progress = progress or NoProgress()
    candidate_version = candidate(log, name)
    live = _live(log, name)
    if candidate_version is None:
        raise NoCandidate(f"candidate: policy {name!r} has no candidate version (run retrain first)", "candidate")
    reports = {}
    progress.start(f"evaluate {name}", 3)
    live_spec = _load(store, name, live).spec
    roles: list[tuple[str, str, int | None]] = [("candidate", candidate_version, None), ("live", live, None)]
    if live_spec.baseline is not None:
        roles.append(("baseline", live, live_spec.baseline))
    for role, version, baseline in roles:
        model = _load(store, name, version)
        _check_shapes(joined, model.spec)
        report = evaluate_policy(
            model,
            joined.contexts,
            joined.actions,
            joined.rewards,
            joined.propensities,
            masks=joined.masks,
            greedy=greedy,
            n_bootstrap=n_bootstrap,
            alpha=alpha,
            random_state=random_state,
            baseline=baseline,
            **joined.packed(),
        )
        reports[role] = _report(report)
        progress.advance(1)
    progress.finish()
    return {
        "policy": name,
        "examples": len(joined),
        "rewarded": int(joined.rewarded.sum()),
        "greedy": greedy,
        "alpha": alpha,
        "candidate_version": candidate_version,
        "live_version": live,
        "logging_policy": joined.on_policy_value(alpha),
        **reports,
    }


def candidate_beats_live(evaluation: dict[str, Any], estimator: str = "dr") -> bool:
    """The auto-promotion rule: the candidate's lower confidence bound beats the live
    version's point estimate (doubly robust by default)."""
    low = evaluation["candidate"]["estimates"][estimator]["low"]
    live = evaluation["live"]["estimates"][estimator]["value"]
    return bool(np.isfinite(low) and np.isfinite(live) and low > live)


# -- promoting ---------------------------------------------------------------------------


def promote(store: Path, log: LogClient, name: str, version: str | None = None) -> str:
    """Serves the candidate: its variables are copied into a new checkpoint number that
    carries the live version's trainer state (log positions, pending joins), so the trainer
    goes on from the candidate without re-learning or skipping an event; then the live
    pointer moves, the replicas are told, and the candidate is cleared. ``version``, when
    given, must be the current candidate (a guard against promoting a newer, unevaluated
    one). Returns the new live version '<export>.<checkpoint>'."""
    for _ in range(PROMOTE_ATTEMPTS):
        target = candidate(log, name)
        live = _live(log, name)
        if target is None:
            raise NoCandidate(f"candidate: policy {name!r} has no candidate version (run retrain first)", "candidate")
        if version is not None and version != target:
            raise NoCandidate(f"version: the candidate of policy {name!r} is {target}, not {version}", "version")
        target_export, _ = eventlog.parse_version(target)
        if not checkpoints.exists(store, name, target_export, 0):
            raise NoCandidate(f"candidate: export {target_export} of policy {name!r} is not in the store", "candidate")
        live_export, live_checkpoint = eventlog.parse_version(live)
        target_spec = PolicySpec.from_dict(savedmodel.read_manifest(store, name, target_export)["spec"])
        live_spec = PolicySpec.from_dict(savedmodel.read_manifest(store, name, live_export)["spec"])
        if target_spec.inputs() != live_spec.inputs():
            raise InvalidData(f"candidate: {target} has other input or action dimensions than {live}", "candidate")
        checkpoint = log.next_checkpoint(name)
        checkpoints.copy_for_rollback(store, name, (target_export, 0), (live_export, live_checkpoint), checkpoint)
        promoted = f"{target_export}.{checkpoint}"
        if log.move_live(name, live, promoted, candidate=target) == scripts.MOVED:
            logger.info("policy %s: promoted candidate %s as %s (was %s)", name, target, promoted, live)
            return promoted
        logger.info("policy %s: live version or candidate moved while promoting; trying again", name)
    raise Busy(f"candidate: the live version of policy {name!r} kept changing while promoting; try again")


def auto_promote_configured(log: LogClient, name: str) -> bool:
    """Whether the policy asks every evaluation to promote a better candidate by itself."""
    spec = log.spec(name)
    return spec is not None and spec.training.auto_promote


def promote_if_better(
    store: Path, log: LogClient, name: str, evaluation: dict[str, Any], estimator: str = "dr"
) -> str | None:
    """Promotes the evaluated candidate when ``candidate_beats_live``; returns the new live
    version, or None when the candidate does not beat the live version."""
    if not candidate_beats_live(evaluation, estimator):
        logger.info("policy %s: candidate %s does not beat the live version", name, evaluation["candidate_version"])
        return None
    return promote(store, log, name, version=evaluation["candidate_version"])
