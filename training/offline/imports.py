"""Imports logged data (Parquet, CSV, the Open Bandit Dataset) into a policy's log."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

import eventlog
from bandits.features import FeatureError
from eventlog.sync import LogClient
from exporter.spec import PolicySpec
from training.offline.errors import InvalidData
from training.offline.joinedlog import list_values
from training.offline.progress import NoProgress, Progress
from training.offline.reading import policy_spec

logger = logging.getLogger(__name__)

IMPORTED_EVENT_MARGIN_SECONDS = 60.0
"""Imported decisions' event hashes expire this long after their reward window."""
WRITE_BATCH = 2000
"""Decisions (and as many rewards) per pipelined round trip when importing."""
ImportFormat = Literal["parquet", "csv", "obd"]
IMPORT_FORMATS: tuple[str, ...] = ("parquet", "csv", "obd")


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
        contexts = list_values(table.column("context"), np.float32).reshape(n, -1)
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
    spec = policy_spec(log, name)
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
