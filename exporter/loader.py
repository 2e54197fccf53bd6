"""Loads an exported version for serving: both SavedModels, called through ``seeded``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from exporter import savedmodel
from exporter.spec import PolicySpec

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One exported version, ready to answer batched decisions (thread-safe, read-only)."""

    spec: PolicySpec
    version: int
    manifest: dict[str, Any]
    greedy_model: Any
    collect_model: Any

    def decide(self, greedy: bool, context: np.ndarray, mask: np.ndarray, seed: np.ndarray) -> dict[str, np.ndarray]:
        """context: [B, d] float32, mask: [B, K] bool, seed: [B] int64 -> action, propensity, scores."""
        model = self.greedy_model if greedy else self.collect_model
        out = model.signatures["seeded"](
            context=tf.constant(context, tf.float32),
            mask=tf.constant(mask, tf.bool),
            seed=tf.constant(seed, tf.int64),
        )
        return {key: value.numpy() for key, value in out.items()}

    def probabilities(self, greedy: bool, context: np.ndarray, mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
        """[B, K] float32: the signature's probability of every action for each row."""
        model = self.greedy_model if greedy else self.collect_model
        out = model.signatures["probabilities"](
            context=tf.constant(context, tf.float32),
            mask=tf.constant(mask, tf.bool),
            seed=tf.constant(seed, tf.int64),
        )
        return out["probabilities"].numpy()


def load(store: Path, name: str, version: int, verify: bool = True) -> LoadedVersion:
    """Loads a version; with verify, every file is first checked against the manifest."""
    manifest = savedmodel.verify(store, name, version) if verify else savedmodel.read_manifest(store, name, version)
    root = savedmodel.version_dir(store, name, version)
    greedy_model = tf.saved_model.load(str(root / "greedy"))
    collect_model = tf.saved_model.load(str(root / "collect"))
    logger.info("loaded policy %s version %d", name, version)
    return LoadedVersion(PolicySpec.from_dict(manifest["spec"]), version, manifest, greedy_model, collect_model)
