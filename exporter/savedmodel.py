"""Versioned SavedModels in TensorFlow Serving's layout.

    <store>/<policy>/<version>/manifest.json
    <store>/<policy>/<version>/greedy/saved_model.pb, variables/
    <store>/<policy>/<version>/collect/saved_model.pb, variables/

A policy over a fixed set of K actions with a plain context vector ("vector" layout) has
these signatures over the same variables:
    serving_default(context [B, d] float32, mask [B, K] bool)
    context_only(context [B, d] float32)                      -- every action allowed
    seeded(context, mask, seed [B] int64)                      -- reproducible randomness
all returning action [B] int32, propensity [B] float32, scores [B, K] float32, and
    probabilities(context, mask, seed) -> probabilities [B, K] float32
the signature's whole action distribution (for off-policy evaluation).

Policies with named features or candidate sets take their inputs packed (bandits.features):
the numeric values as ``context`` [B, n] float32 and the categorical ones as
``context_categorical`` [B, m] string, both in schema order and before any normalisation;
the graph encodes them. Candidate sets add ``action_features`` [B, K, n_a] float32,
``action_categorical`` [B, K, m_a] string and ``action_mask`` [B, K] bool with K dynamic
(any count from 1 to the policy's maximum; padding is masked out). Their signatures are
serving_default (no seed), seeded, probabilities (as above) and
    encode(...) -> context_vector [B, d], action_vectors [B, K, f]
the encoded features the model reads (what the trainer learns from). ``INPUTS`` lists each
layout's inputs; the manifest records the layout.

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
PREPROCESSED_SIGNATURE_NAMES = ("serving_default", "seeded", "probabilities", "encode")


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


INPUTS = {
    "vector": ("context", "mask", "seed"),
    "named": ("context", "context_categorical", "mask", "seed"),
    "candidates": ("context", "context_categorical", "action_features", "action_categorical", "action_mask", "seed"),
}
"""The inputs of the seeded and probabilities signatures of each layout (serving_default: without seed)."""


def _input_specs(spec: PolicySpec) -> dict[str, tf.TensorSpec]:
    context = spec.context_schema
    specs = {
        "context": tf.TensorSpec([None, context.numeric_width], tf.float32, name="context"),
        "context_categorical": tf.TensorSpec([None, context.categorical_width], tf.string, name="context_categorical"),
        "mask": tf.TensorSpec([None, spec.num_actions], tf.bool, name="mask"),
        "seed": tf.TensorSpec([None], tf.int64, name="seed"),
    }
    actions = spec.action_schema
    if actions is not None:
        specs |= {
            "action_features": tf.TensorSpec([None, None, actions.numeric_width], tf.float32, name="action_features"),
            "action_categorical": tf.TensorSpec(
                [None, None, actions.categorical_width], tf.string, name="action_categorical"
            ),
            "action_mask": tf.TensorSpec([None, None], tf.bool, name="action_mask"),
        }
    return {name: specs[name] for name in INPUTS[spec.layout]}


def _describe(spec: tf.TensorSpec) -> list[str | int]:
    """A signature input's shape and dtype for the manifest: ["batch", ("K",) width, dtype]."""
    dims: list[str | int] = ["batch"]
    dims += ["K" if d is None else int(d) for d in spec.shape[1:]]
    return [*dims, spec.dtype.name]


def _preprocessed_signatures(
    policy: bandits.Policy, variant: str, spec: PolicySpec
) -> dict[str, Callable[..., dict[str, tf.Tensor]]]:
    """Signatures that encode packed named features / candidate sets, then choose."""
    choose = getattr(policy, variant)
    distribution = policy.greedy_probabilities if variant == "greedy" else policy.probabilities
    inputs = _input_specs(spec)
    names = list(inputs)
    mask_name = "action_mask" if spec.takes_candidates else "mask"

    def call(function: Callable[..., Any], values: dict[str, tf.Tensor]) -> Any:
        context, actions = policy.preprocessing.encode(
            values["context"],
            values["context_categorical"],
            values.get("action_features"),
            values.get("action_categorical"),
        )
        if actions is None:
            return function(context, values[mask_name], values["seed"])
        return function(context, values[mask_name], values["seed"], actions)

    def seeded(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        return call(choose, values)

    def serving_default(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        return call(choose, values | {"seed": _random_seeds(values["context"])})

    def probabilities(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": call(distribution, values)}

    def encode(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        context, actions = policy.preprocessing.encode(
            values["context"],
            values["context_categorical"],
            values.get("action_features"),
            values.get("action_categorical"),
        )
        return {"context_vector": context} | ({} if actions is None else {"action_vectors": actions})

    def traced(function: Callable[..., dict[str, tf.Tensor]], keys: list[str]) -> Any:
        return tf.function(function).get_concrete_function(**{k: inputs[k] for k in keys})

    without_seed = [k for k in names if k != "seed"]
    encode_keys = [k for k in names if k not in ("seed", "mask", "action_mask")]
    return {
        "serving_default": traced(serving_default, without_seed),
        "seeded": traced(seeded, names),
        "probabilities": traced(probabilities, names),
        "encode": traced(encode, encode_keys),
    }


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
            if spec.layout == "vector":
                choose = getattr(policy, variant)
                distribution = policy.greedy_probabilities if variant == "greedy" else policy.probabilities
                signatures = _signatures(choose, distribution, spec.context_dim, spec.num_actions)
            else:
                signatures = _preprocessed_signatures(policy, variant, spec)
            tf.saved_model.save(policy, str(staging / variant), signatures=signatures)
        manifest = {
            "format": FORMAT,
            "policy": spec.name,
            "version": version,
            "algorithm": spec.algorithm,
            "spec": spec.to_dict(),
            "signatures": {
                "layout": spec.layout,
                "inputs": {name: _describe(shape) for name, shape in _input_specs(spec).items()},
                "outputs": {
                    "action": ["batch", "int32"],
                    "propensity": ["batch", "float32"],
                    "scores": ["batch", "K", "float32"],
                },
                "names": list(SIGNATURE_NAMES) if spec.layout == "vector" else list(PREPROCESSED_SIGNATURE_NAMES),
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
