"""The joined log: one row per decision of a policy with its reward, and its codecs
(Parquet, Vowpal Wabbit's DSJSON)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import statistics
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exporter.spec import PackedWidths
from training.join import packed_inputs
from training.offline.errors import InvalidData

logger = logging.getLogger(__name__)

PARQUET_FORMAT = 1
"""Version of the exported Parquet layout, stored in the file's metadata."""


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
            packed |= padded_candidates(
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
            masks[valid] = list_values(mask_column.filter(mask_column.is_valid()), np.bool_).reshape(-1, k)
        reward_ts = table.column("reward_ts_ms")
        return cls(
            policy=str(meta["policy"]),
            num_actions=k,
            event_ids=np.array(table.column("event_id").to_pylist(), dtype=object),
            ts_ms=table.column("ts_ms").to_numpy().astype(np.int64),
            versions=np.array(table.column("version").to_pylist(), dtype=object),
            contexts=list_values(table.column("context"), np.float32).reshape(n, d),
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


def list_values(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
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


def padded_candidates(
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
    out = {"candidates": object_array([list(row) for row in ids]), "masks": mask, "action_features": values}
    return out | ({} if strings is None else {"action_categorical": strings})


def object_array(rows: list[Any]) -> np.ndarray:
    """A 1-d object array of lists (np.array would make a 2-d array of equal-length lists)."""
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out
