"""Named features: a declared schema, and the preprocessing that turns named values into the
vectors a model reads.

A policy's input is either a plain vector of d numbers, or named values under a schema:

    numeric      {"name": "age", "type": "numeric", "default": 30.0, "normalize": true}
    categorical  {"name": "country", "type": "categorical", "vocabulary": ["de", "fr"]}   one-hot
                 {"name": "city", "type": "categorical", "hash_buckets": 64}               hashed one-hot

A feature without ``default`` is required. Preprocessing has two steps:

1. ``FeatureSchema.pack`` (plain Python, at the HTTP boundary): checks names and types, fills
   defaults, and orders the values into a numeric row [n_numeric] float32 and a categorical
   row [n_categorical] str, both in schema order. The decision log keeps these packed rows.
2. ``Preprocessing.encode`` (TensorFlow, inside the exported graph and in the trainer):
   numeric values, normalised by running statistics where declared, then one block per
   categorical feature: one-hot over the vocabulary (an unknown value is all zeros) or one-hot
   of FarmHash64(value) mod hash_buckets. Encoded width = n_numeric + sum of block widths.

Because step 2 is the same tf.Module in the SavedModel and in the trainer (its normalisation
statistics are variables saved with the model), serving and training can never disagree.
A plain vector is a schema of d numeric features without normalisation: packing is the
identity and so is encoding.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import tensorflow as tf

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
MAX_FEATURES = 256
MAX_BLOCK = 4096
"""Most columns one categorical feature may encode to (vocabulary size or hash buckets)."""
_VARIANCE_FLOOR = 1e-12


class FeatureError(ValueError):
    """A schema or a value is invalid; ``field`` names the feature (or schema entry)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    type: Literal["numeric", "categorical"]
    default: float | str | None = None
    """Used when a request omits the feature; None makes it required."""
    normalize: bool = False
    """Numeric: subtract the running mean and divide by the running standard deviation, both
    learned by the trainer from the examples it applies."""
    vocabulary: tuple[str, ...] | None = None
    """Categorical: one-hot over these values (unknown values encode to all zeros) ..."""
    hash_buckets: int | None = None
    """... or one-hot of the value's FarmHash64 fingerprint modulo this many buckets."""

    @property
    def width(self) -> int:
        if self.type == "numeric":
            return 1
        return len(self.vocabulary) if self.vocabulary is not None else int(self.hash_buckets or 0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.default is not None:
            out["default"] = self.default
        if self.type == "numeric":
            out["normalize"] = self.normalize
        elif self.vocabulary is not None:
            out["vocabulary"] = list(self.vocabulary)
        else:
            out["hash_buckets"] = self.hash_buckets
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _feature(entry: Any, at: str) -> Feature:
    if not isinstance(entry, Mapping):
        raise FeatureError(at, "must be an object with name and type")
    known = {"name", "type", "default", "normalize", "vocabulary", "hash_buckets"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise FeatureError(f"{at}.{unknown[0]}", f"unknown key; known: {sorted(known)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise FeatureError(f"{at}.name", "must match [A-Za-z_][A-Za-z0-9_.-]{0,63}")
    kind = entry.get("type")
    default = entry.get("default")
    if kind == "numeric":
        for key in ("vocabulary", "hash_buckets"):
            if key in entry:
                raise FeatureError(f"{at}.{key}", "only for categorical features")
        if default is not None and not _is_number(default):
            raise FeatureError(f"{at}.default", "must be a finite number")
        normalize = entry.get("normalize", False)
        if not isinstance(normalize, bool):
            raise FeatureError(f"{at}.normalize", "must be true or false")
        return Feature(name, "numeric", None if default is None else float(default), normalize)
    if kind == "categorical":
        if "normalize" in entry:
            raise FeatureError(f"{at}.normalize", "only for numeric features")
        if default is not None and not isinstance(default, str):
            raise FeatureError(f"{at}.default", "must be a string")
        vocabulary, buckets = entry.get("vocabulary"), entry.get("hash_buckets")
        if (vocabulary is None) == (buckets is None):
            raise FeatureError(at, "a categorical feature needs exactly one of vocabulary and hash_buckets")
        if vocabulary is not None:
            if (
                not isinstance(vocabulary, list)
                or not vocabulary
                or len(vocabulary) > MAX_BLOCK
                or not all(isinstance(v, str) and len(v) <= 256 for v in vocabulary)
            ):
                raise FeatureError(f"{at}.vocabulary", f"must be 1 to {MAX_BLOCK} strings of at most 256 characters")
            if len(set(vocabulary)) != len(vocabulary):
                raise FeatureError(f"{at}.vocabulary", "has a value twice")
            return Feature(name, "categorical", default, vocabulary=tuple(vocabulary))
        if not (isinstance(buckets, int) and not isinstance(buckets, bool) and 1 <= buckets <= MAX_BLOCK):
            raise FeatureError(f"{at}.hash_buckets", f"must be an integer in [1, {MAX_BLOCK}]")
        return Feature(name, "categorical", default, hash_buckets=buckets)
    raise FeatureError(f"{at}.type", 'must be "numeric" or "categorical"')


@dataclasses.dataclass(frozen=True)
class FeatureSchema:
    """An ordered set of named features (or, with ``features`` None, a plain vector of ``dim``)."""

    features: tuple[Feature, ...] | None
    dim: int = 0
    """Plain vectors only: their length."""

    @classmethod
    def vector(cls, dim: int) -> FeatureSchema:
        return cls(None, int(dim))

    @classmethod
    def parse(cls, entries: Any, field: str) -> FeatureSchema:
        """A schema from its JSON form (a list of feature objects); FeatureError names the bad entry."""
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_FEATURES:
            raise FeatureError(field, f"must be a list of 1 to {MAX_FEATURES} features")
        features = tuple(_feature(entry, f"{field}[{i}]") for i, entry in enumerate(entries))
        names = [f.name for f in features]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FeatureError(f"{field}[{i}].name", f"{name!r} is declared twice")
        return cls(features)

    @property
    def named(self) -> bool:
        return self.features is not None

    @property
    def numeric(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features or () if f.type == "numeric")

    @property
    def categorical(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features or () if f.type == "categorical")

    @property
    def numeric_width(self) -> int:
        """Length of a packed numeric row."""
        return self.dim if self.features is None else len(self.numeric)

    @property
    def categorical_width(self) -> int:
        """Length of a packed categorical row."""
        return len(self.categorical)

    @property
    def width(self) -> int:
        """Length of an encoded vector (what the model reads)."""
        if self.features is None:
            return self.dim
        return len(self.numeric) + sum(f.width for f in self.categorical)

    def to_json(self) -> list[dict[str, Any]] | None:
        return None if self.features is None else [f.to_dict() for f in self.features]

    def pack(self, values: Mapping[str, Any], field: str) -> tuple[list[float], list[str]]:
        """Named values -> (numeric row, categorical row) in schema order, defaults filled in.

        Raises FeatureError naming ``<field>.<name>`` for an unknown name, a wrong type or a
        missing required feature.
        """
        assert self.features is not None, "pack() is for named schemas"
        by_name = {f.name: f for f in self.features}
        for name in values:
            if name not in by_name:
                raise FeatureError(f"{field}.{name}", f"unknown feature; known: {sorted(by_name)[:20]}")
        numeric: list[float] = []
        categorical: list[str] = []
        for feature in self.features:
            value = values.get(feature.name, feature.default)
            at = f"{field}.{feature.name}"
            if value is None:
                raise FeatureError(at, "missing; the feature has no default")
            if feature.type == "numeric":
                if not _is_number(value):
                    raise FeatureError(at, f"expected a finite number, got {type(value).__name__}")
                if abs(value) > 3.4e38:
                    raise FeatureError(at, "overflows float32")
                numeric.append(float(value))
            else:
                if not isinstance(value, str):
                    raise FeatureError(at, f"expected a string, got {type(value).__name__}")
                if len(value) > 256:
                    raise FeatureError(at, "longer than 256 characters")
                categorical.append(value)
        return numeric, categorical

    def pack_columns(self, columns: Mapping[str, np.ndarray], rows: int, field: str) -> tuple[np.ndarray, np.ndarray]:
        """pack() for whole columns (offline imports): {name: [rows] values} -> (numeric [rows,
        n_numeric] float32, categorical [rows, n_categorical] str). Names the schema does not
        declare are ignored; a declared one that is absent takes its default (FeatureError when
        it has none, or when a column has the wrong type)."""
        assert self.features is not None, "pack_columns() is for named schemas"
        numeric = np.zeros((rows, len(self.numeric)), np.float32)
        categorical = np.full((rows, len(self.categorical)), "", dtype=object)
        for i, feature in enumerate(self.numeric):
            values = columns.get(feature.name)
            if values is None and feature.default is None:
                raise FeatureError(f"{field}.{feature.name}", "missing; the feature has no default")
            if values is not None and not np.issubdtype(np.asarray(values).dtype, np.number):
                raise FeatureError(f"{field}.{feature.name}", "expected numbers")
            numeric[:, i] = feature.default if values is None else np.asarray(values, np.float64)
        if not np.isfinite(numeric).all():
            raise FeatureError(field, "a numeric value is not finite")
        for i, feature in enumerate(self.categorical):
            values = columns.get(feature.name)
            if values is None and feature.default is None:
                raise FeatureError(f"{field}.{feature.name}", "missing; the feature has no default")
            categorical[:, i] = feature.default if values is None else np.asarray(values).astype(str)
        return numeric, categorical

    def pack_vector(self, values: Sequence[float], field: str) -> tuple[list[float], list[str]]:
        """A plain vector, checked for length: (the vector, no categorical values)."""
        if self.features is not None:
            raise FeatureError(field, f"expected named features {{name: value}} ({len(self.features)} declared)")
        if len(values) != self.dim:
            raise FeatureError(field, f"expected {self.dim} values, got {len(values)}")
        return list(values), []


class Encoder(tf.Module):
    """Encodes packed rows of one schema; holds the running normalisation statistics.

    count [] float64, mean [n_numeric] float64 and m2 [n_numeric] float64 (sum of squared
    deviations) are Welford's statistics of the numeric values the trainer applied; only the
    features declared ``normalize`` use them, and a schema without such features has no
    variables at all.
    """

    def __init__(self, schema: FeatureSchema, name: str) -> None:
        super().__init__(name=name)
        self.schema = schema
        n = schema.numeric_width
        self._normalize = tf.constant([f.normalize for f in schema.numeric] if schema.named else [False] * n, tf.bool)
        self._any_normalized = bool(schema.named and any(f.normalize for f in schema.numeric))
        if self._any_normalized:
            self.count = tf.Variable(tf.zeros([], tf.float64), name="count")
            self.mean = tf.Variable(tf.zeros([n], tf.float64), name="mean")
            self.m2 = tf.Variable(tf.zeros([n], tf.float64), name="m2")

    def encode(self, numeric: tf.Tensor, categorical: tf.Tensor | None) -> tf.Tensor:
        """numeric: [..., n_numeric] float32; categorical: [..., n_categorical] string (or None
        when the schema has none). Returns [..., width] float32."""
        schema = self.schema
        if not schema.named:
            return numeric
        blocks = [self.normalized(numeric)] if schema.numeric_width else []
        for i, feature in enumerate(schema.categorical):
            assert categorical is not None
            values = categorical[..., i]
            if feature.vocabulary is not None:
                vocabulary = tf.constant(list(feature.vocabulary), tf.string)
                blocks.append(tf.cast(tf.equal(values[..., None], vocabulary), tf.float32))
            else:
                assert feature.hash_buckets is not None
                bucket = tf.strings.to_hash_bucket_fast(values, feature.hash_buckets)
                blocks.append(tf.one_hot(bucket, feature.hash_buckets, dtype=tf.float32))
        return tf.concat(blocks, axis=-1)

    def normalized(self, numeric: tf.Tensor) -> tf.Tensor:
        """(x - mean) / std on the features declared ``normalize`` (std 1 before two examples)."""
        if not self._any_normalized:
            return numeric
        variance = tf.where(self.count > 1, self.m2 / tf.maximum(self.count, 1.0), tf.ones_like(self.m2))
        std = tf.sqrt(tf.maximum(variance, _VARIANCE_FLOOR))
        scaled = (tf.cast(numeric, tf.float64) - self.mean) / std
        return tf.where(self._normalize, tf.cast(scaled, tf.float32), numeric)

    def observe(self, numeric: np.ndarray) -> None:
        """Adds rows [n, n_numeric] to the running statistics (Chan et al.'s parallel update)."""
        if not self._any_normalized or len(numeric) == 0:
            return
        x = np.asarray(numeric, np.float64)
        n_b = float(len(x))
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        n_a, mean_a, m2_a = float(self.count.numpy()), self.mean.numpy(), self.m2.numpy()
        n = n_a + n_b
        delta = mean_b - mean_a
        self.mean.assign(mean_a + delta * (n_b / n))
        self.m2.assign(m2_a + m2_b + delta * delta * (n_a * n_b / n))
        self.count.assign(n)


class Preprocessing(tf.Module):
    """The context encoder and, for policies that take candidate sets, the candidates' encoder."""

    def __init__(self, context: FeatureSchema, actions: FeatureSchema | None = None) -> None:
        super().__init__(name="preprocessing")
        self.context = Encoder(context, "context")
        self.actions = None if actions is None else Encoder(actions, "actions")

    @property
    def context_width(self) -> int:
        return self.context.schema.width

    @property
    def action_width(self) -> int:
        """Encoded width of one candidate's features; 0 for policies with a fixed set of actions."""
        return 0 if self.actions is None else self.actions.schema.width

    def encode(
        self,
        context: tf.Tensor,
        context_categorical: tf.Tensor | None = None,
        action_features: tf.Tensor | None = None,
        action_categorical: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Packed rows -> (context [..., d] float32, candidates [..., K, f] float32 or None)."""
        encoded_context = self.context.encode(tf.convert_to_tensor(context, tf.float32), context_categorical)
        if self.actions is None:
            return encoded_context, None
        encoded_actions = self.actions.encode(tf.convert_to_tensor(action_features, tf.float32), action_categorical)
        return encoded_context, encoded_actions

    def observe(self, context: np.ndarray, action_features: np.ndarray | None = None) -> None:
        """Updates the normalisation statistics with the packed numeric rows of applied examples."""
        self.context.observe(context)
        if self.actions is not None and action_features is not None:
            self.actions.observe(action_features)
