"""The replay ring: the last ``size`` rows of named columns, as tf.Variables.

One implementation for every replay buffer: neural bandits keep Examples in it, DQN keeps
Transitions. Row number i (counting from 0 over every append) lives in slot i mod size, so
the counter of rows ever appended alone gives the write index (seen mod size) and the
number held (min(seen, size)); there is no second counter to keep consistent. Because the
ring is variables of the policy's tf.Module tree, one checkpoint of the policy holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, NamedTuple, TypeVar

import tensorflow as tf

Rows = TypeVar("Rows", bound=tuple[Any, ...])
"""A NamedTuple of tensors with one row per example (bandits.base.Examples, Transitions)."""


class Column(NamedTuple):
    """One stored column: the shape of one row and its dtype."""

    shape: list[int]
    dtype: tf.DType


class ReplayRing(tf.Module, Generic[Rows]):
    """The last ``size`` rows of ``row_type``'s fields. Each field is a variable [size, *shape]
    named after it; a zero-width column ([n, 0]: a fixed-action policy's candidate features)
    is not stored and reads back as zeros. ``counter`` names the variable that counts the
    rows ever appended (``examples_seen``, ``transitions_seen``)."""

    def __init__(self, row_type: type[Rows], columns: Mapping[str, Column], size: int, counter: str) -> None:
        super().__init__(name="replay")
        assert list(columns) == list(row_type._fields), "one column per field, in order"  # type: ignore[attr-defined]
        self.row_type = row_type
        self.size = size
        self.columns = dict(columns)
        for name, column in self.columns.items():
            if 0 not in column.shape:
                setattr(self, name, tf.Variable(tf.zeros([size, *column.shape], column.dtype), name=name))
        setattr(self, counter, tf.Variable(0, dtype=tf.int64, name=counter))
        self._counter = counter

    @property
    def seen(self) -> tf.Variable:
        """int64 scalar variable: rows ever appended."""
        return getattr(self, self._counter)

    def count(self) -> tf.Tensor:
        """int64 scalar: rows held."""
        return tf.minimum(self.seen, self.size)

    def append(self, rows: Rows) -> None:
        """Writes n rows over the oldest ones. Of a batch larger than the ring only its last
        ``size`` rows are written (so no slot is written twice in one scatter, whose order
        would be undefined)."""
        n = tf.shape(rows[0], out_type=tf.int64)[0]
        kept = tf.minimum(n, self.size)
        skipped = n - kept
        slots = ((self.seen + skipped + tf.range(kept)) % self.size)[:, None]
        first = tf.cast(skipped, tf.int32)
        for name, values in zip(self.columns, rows, strict=True):
            if hasattr(self, name):
                getattr(self, name).scatter_nd_update(slots, values[first:])
        self.seen.assign_add(n)

    def contents(self) -> Rows:
        """Every row held, oldest first."""
        count = self.count()
        return self._gather((self.seen - count + tf.range(count)) % self.size)

    def sample(self, batch_size: int, seed: tf.Tensor) -> Rows:
        """batch_size rows drawn uniformly with replacement; seed: [2] int64 (stateless)."""
        # Slots fill from 0 and wrap, so the slots in use are always [0, count).
        slots = tf.random.stateless_uniform(
            [batch_size], seed, minval=0, maxval=self.count(), dtype=tf.int64, alg="philox"
        )
        return self._gather(slots)

    def _gather(self, slots: tf.Tensor) -> Rows:
        values = [
            tf.gather(getattr(self, name), slots)
            if hasattr(self, name)
            else tf.zeros(tf.concat([tf.shape(slots), column.shape], axis=0), column.dtype)
            for name, column in self.columns.items()
        ]
        return self.row_type(*values)
