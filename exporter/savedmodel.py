"""Versioned SavedModels in TensorFlow Serving's layout.

    <store>/<policy>/<version>/manifest.json
    <store>/<policy>/<version>/greedy/saved_model.pb, variables/
    <store>/<policy>/<version>/collect/saved_model.pb, variables/

Each SavedModel has three signatures over the same variables:
    serving_default(context [B, d] float32, mask [B, K] bool)
    context_only(context [B, d] float32)                      -- every action allowed
    seeded(context, mask, seed [B] int64)                      -- reproducible randomness
all returning action [B] int32, propensity [B] float32, scores [B, K] float32, and
    probabilities(context, mask, seed) -> probabilities [B, K] float32
the signature's whole action distribution (for off-policy evaluation).
Later input kinds (candidate sets with per-action features) are new signatures beside
these, so existing callers keep working.

A version is written into a temporary folder and renamed into place, so a reader never
sees half a version, and an existing version is never overwritten.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

import bandits
from exporter.spec import PolicySpec

logger = logging.getLogger(__name__)

VARIANTS = ("greedy", "collect")
MANIFEST = "manifest.json"
FORMAT = 1
SIGNATURE_NAMES = ("serving_default", "context_only", "seeded", "probabilities")


class ExportError(Exception):
    """An export could not be written or read."""


def policy_dir(store: Path, name: str) -> Path:
    return Path(store) / name


def version_dir(store: Path, name: str, version: int) -> Path:
    return policy_dir(store, name) / str(version)


def list_versions(store: Path, name: str) -> list[int]:
    """Integer versions of a policy that are complete (their manifest exists), ascending."""
    root = policy_dir(store, name)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file())


def _random_seeds(context: tf.Tensor) -> tf.Tensor:
    """One fresh seed per row for callers that do not pass their own."""
    batch = tf.shape(context)[:1]
    return tf.random.uniform(batch, minval=0, maxval=tf.int64.max, dtype=tf.int64)


def _signatures(
    choose: Callable[..., bandits.base.Decision],
    distribution: Callable[..., tf.Tensor],
    context_dim: int,
    num_actions: int,
) -> dict:
    context_spec = tf.TensorSpec([None, context_dim], tf.float32, name="context")
    mask_spec = tf.TensorSpec([None, num_actions], tf.bool, name="mask")
    seed_spec = tf.TensorSpec([None], tf.int64, name="seed")

    @tf.function(input_signature=[context_spec, mask_spec, seed_spec])
    def seeded(context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> dict:
        return choose(context, mask, seed)

    @tf.function(input_signature=[context_spec, mask_spec])
    def serving_default(context: tf.Tensor, mask: tf.Tensor) -> dict:
        return choose(context, mask, _random_seeds(context))

    @tf.function(input_signature=[context_spec])
    def context_only(context: tf.Tensor) -> dict:
        mask = tf.ones([tf.shape(context)[0], num_actions], tf.bool)
        return choose(context, mask, _random_seeds(context))

    @tf.function(input_signature=[context_spec, mask_spec, seed_spec])
    def probabilities(context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> dict:
        return {"probabilities": distribution(context, mask, seed)}

    return {
        "serving_default": serving_default,
        "context_only": context_only,
        "seeded": seeded,
        "probabilities": probabilities,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digests(root: Path, under: Path | None = None, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """SHA-256 of every file under ``under`` (default: ``root``), keyed by path relative to root."""
    return {
        str(p.relative_to(root)): _sha256(p)
        for p in sorted((under or root).rglob("*"))
        if p.is_file() and p.name not in skip
    }


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file of the two SavedModels under a version folder, keyed by relative
    path (not the manifest, nor the checkpoints the trainer adds to the folder later)."""
    return {path: digest for variant in VARIANTS for path, digest in folder_digests(root, root / variant).items()}


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def write_atomically(destination: Path, fill: Callable[[Path], None]) -> Path:
    """Fills a temporary folder beside ``destination``, fsyncs it and renames it into place,
    so readers never see a partial folder. An existing destination is never overwritten
    (FileExistsError)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{destination.name}-", dir=destination.parent))
    try:
        fill(staging)
        _fsync_tree(staging)
        staging.chmod(0o755)
        try:
            os.rename(staging, destination)
        except OSError as error:
            if destination.exists():
                raise FileExistsError(str(destination)) from error
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def export(policy: bandits.Policy, spec: PolicySpec, store: Path, version: int | None = None) -> int:
    """Writes a new version of ``spec.name`` and returns its number.

    The version is the next integer after the newest existing one unless given; an
    existing version is never overwritten (ExportError).
    """
    root = policy_dir(store, spec.name)
    root.mkdir(parents=True, exist_ok=True)
    if version is None:
        existing = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
        version = max(existing, default=0) + 1
    target = root / str(version)
    if target.exists():
        raise ExportError(f"version {version} of policy {spec.name!r} already exists")

    def fill(staging: Path) -> None:
        for variant in VARIANTS:
            choose = getattr(policy, variant)
            distribution = policy.greedy_probabilities if variant == "greedy" else policy.probabilities
            signatures = _signatures(choose, distribution, spec.context_dim, spec.num_actions)
            tf.saved_model.save(policy, str(staging / variant), signatures=signatures)
        manifest = {
            "format": FORMAT,
            "policy": spec.name,
            "version": version,
            "algorithm": spec.algorithm,
            "spec": spec.to_dict(),
            "signatures": {
                "inputs": {
                    "context": ["batch", spec.context_dim, "float32"],
                    "mask": ["batch", spec.num_actions, "bool"],
                    "seed": ["batch", "int64"],
                },
                "outputs": {
                    "action": ["batch", "int32"],
                    "propensity": ["batch", "float32"],
                    "scores": ["batch", spec.num_actions, "float32"],
                },
                "names": list(SIGNATURE_NAMES),
            },
            "train_step": int(policy.state.train_step.numpy()) if hasattr(policy, "state") else 0,
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "files": file_digests(staging),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))

    try:
        write_atomically(target, fill)
    except FileExistsError as error:  # another exporter took the number meanwhile
        raise ExportError(f"version {version} of policy {spec.name!r} already exists") from error
    logger.info("exported policy %s version %d to %s", spec.name, version, target)
    return version


def read_manifest(store: Path, name: str, version: int) -> dict[str, Any]:
    path = version_dir(store, name, version) / MANIFEST
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read manifest {path}: {e}") from e


def verify(store: Path, name: str, version: int) -> dict[str, Any]:
    """Checks every file of a version against its manifest's SHA-256; returns the manifest."""
    manifest = read_manifest(store, name, version)
    root = version_dir(store, name, version)
    actual = file_digests(root)
    if actual != manifest["files"]:
        changed = sorted(set(actual.items()) ^ set(manifest["files"].items()))
        raise ExportError(f"policy {name} version {version} does not match its manifest: {changed[:3]}")
    return manifest
