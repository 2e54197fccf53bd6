"""Loads an exported version for serving: both SavedModels, called through ``seeded``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from exporter import savedmodel
from exporter.spec import PolicySpec

logger = logging.getLogger(__name__)


Inputs = dict[str, np.ndarray]


def _strings(values: np.ndarray | None, empty_shape: tuple[int, ...]) -> tf.Tensor:
    """A string tensor of packed categorical values (an empty one of ``empty_shape`` when None)."""
    if values is None:
        return tf.zeros(empty_shape, tf.string)
    return tf.constant(np.asarray(values, dtype=object), tf.string)


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One exported version, ready to answer batched decisions (thread-safe, read-only)."""

    spec: PolicySpec
    version: int
    manifest: dict[str, Any]
    greedy_model: Any
    collect_model: Any

    def _inputs(self, context: np.ndarray, mask: np.ndarray, seed: np.ndarray, extra: Inputs) -> dict[str, tf.Tensor]:
        """The signature's keyword arguments for its layout (savedmodel.INPUTS); only those are built."""
        batch = len(context)
        values: dict[str, Callable[[], tf.Tensor]] = {
            "context": lambda: tf.constant(context, tf.float32),
            "seed": lambda: tf.constant(seed, tf.int64),
            "mask": lambda: tf.constant(mask, tf.bool),
            "action_mask": lambda: tf.constant(mask, tf.bool),
            "context_categorical": lambda: _strings(extra.get("context_categorical"), (batch, 0)),
            "action_features": lambda: tf.constant(extra["action_features"], tf.float32),
            "action_categorical": lambda: _strings(extra.get("action_categorical"), (batch, mask.shape[1], 0)),
        }
        return {name: values[name]() for name in savedmodel.INPUTS[self.spec.layout]}

    def decide(
        self, greedy: bool, context: np.ndarray, mask: np.ndarray, seed: np.ndarray, **extra: np.ndarray
    ) -> dict[str, np.ndarray]:
        """context: [B, d] float32 (the packed numeric values for named features), mask: [B, K]
        bool, seed: [B] int64, and for named features / candidate sets ``context_categorical``
        [B, m], ``action_features`` [B, K, n_a], ``action_categorical`` [B, K, m_a] ->
        action [B], propensity [B], scores [B, K]."""
        model = self.greedy_model if greedy else self.collect_model
        out = model.signatures["seeded"](**self._inputs(context, mask, seed, extra))
        return {key: value.numpy() for key, value in out.items()}

    def probabilities(
        self, greedy: bool, context: np.ndarray, mask: np.ndarray, seed: np.ndarray, **extra: np.ndarray
    ) -> np.ndarray:
        """[B, K] float32: the signature's probability of every action for each row."""
        model = self.greedy_model if greedy else self.collect_model
        out = model.signatures["probabilities"](**self._inputs(context, mask, seed, extra))
        return out["probabilities"].numpy()

    def encode(self, context: np.ndarray, **extra: np.ndarray) -> dict[str, np.ndarray]:
        """The encoded features the model reads: context_vector [B, d] (and action_vectors
        [B, K, f] for candidate sets). Plain vectors are their own encoding (no encode signature)."""
        if "encode" not in self.collect_model.signatures:
            return {"context_vector": np.asarray(context, np.float32)}
        mask = np.ones((len(context), extra["action_features"].shape[1] if "action_features" in extra else 0), bool)
        inputs = self._inputs(context, mask, np.zeros(len(context), np.int64), extra)
        wanted = [n for n in savedmodel.INPUTS[self.spec.layout] if n != "seed" and n not in savedmodel.MASKS]
        out = self.collect_model.signatures["encode"](**{name: inputs[name] for name in wanted})
        return {key: value.numpy() for key, value in out.items()}


def load(store: Path, name: str, version: int, verify: bool = True) -> LoadedVersion:
    """Loads a version; with verify, every file is first checked against the manifest."""
    manifest = savedmodel.verify(store, name, version) if verify else savedmodel.read_manifest(store, name, version)
    root = savedmodel.version_dir(store, name, version)
    greedy_model = tf.saved_model.load(str(root / "greedy"))
    collect_model = tf.saved_model.load(str(root / "collect"))
    logger.info("loaded policy %s version %d", name, version)
    return LoadedVersion(PolicySpec.from_dict(manifest["spec"]), version, manifest, greedy_model, collect_model)
