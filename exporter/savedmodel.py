"""Versioned SavedModels in TensorFlow Serving's layout.

    <store>/<policy>/<version>/manifest.json
    <store>/<policy>/<version>/greedy/saved_model.pb, variables/
    <store>/<policy>/<version>/collect/saved_model.pb, variables/

Every policy takes its inputs packed (bandits.features): the numeric values as ``context``
[B, n] float32 and, with named features, the categorical ones as ``context_categorical``
[B, m] string, both in schema order and before any normalisation; the graph encodes them (a
plain vector is the identity schema: n = d, nothing to encode). Candidate sets add
``action_features`` [B, K, n_a] float32, ``action_categorical`` [B, K, m_a] string and
``action_mask`` [B, K] bool with K dynamic (any count from 1 to the policy's maximum; padding
is masked out); fixed actions take ``mask`` [B, K] bool. ``INPUTS`` lists each layout's
inputs, ``SIGNATURES`` its signatures, all over the same variables:

    seeded(inputs, seed [B] int64)         -- reproducible randomness
    serving_default(inputs)                -- a fresh seed per row
    probabilities(inputs, seed)            -> probabilities [B, K] float32, the signature's
                                              whole action distribution (for off-policy evaluation)
    context_only(context)                  -- plain vectors only: every action allowed
    encode(inputs without masks)           -- named features and candidate sets only:
                                              context_vector [B, d], action_vectors [B, K, f],
                                              the encoded features the model reads

seeded, serving_default and context_only return action [B] int32, propensity [B] float32 and
scores [B, K] float32 (bandits.Decision). The manifest records the layout.

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

SIGNATURES = {
    "vector": ("serving_default", "context_only", "seeded", "probabilities"),
    "named": ("serving_default", "seeded", "probabilities", "encode"),
    "candidates": ("serving_default", "seeded", "probabilities", "encode"),
}
"""The signatures each layout serves (a plain vector has nothing to encode; context_only
needs a fixed set of actions and no categorical values)."""

MASKS = ("mask", "action_mask")


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


def _signatures(policy: bandits.Policy, variant: str, spec: PolicySpec) -> dict[str, Any]:
    """The layout's signatures (SIGNATURES) of one variant: each encodes its packed inputs with
    the policy's preprocessing (the identity for plain vectors), then chooses."""
    choose: Callable[..., bandits.Decision] = getattr(policy, variant)
    distribution = policy.greedy_probabilities if variant == "greedy" else policy.probabilities
    inputs = _input_specs(spec)
    (mask_name,) = (name for name in MASKS if name in inputs)

    def encoded(values: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor | None]:
        return policy.preprocessing.encode(
            values["context"],
            values.get("context_categorical"),
            values.get("action_features"),
            values.get("action_categorical"),
        )

    def call(function: Callable[..., Any], values: dict[str, tf.Tensor]) -> Any:
        context, candidates = encoded(values)
        return function(context, values[mask_name], values["seed"], candidates)

    def seeded(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        return call(choose, values)._asdict()

    def serving_default(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        return seeded(**values, seed=_random_seeds(values["context"]))

    def context_only(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        every_action = tf.ones([tf.shape(values["context"])[0], spec.num_actions], tf.bool)
        return serving_default(**values, mask=every_action)

    def probabilities(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": call(distribution, values)}

    def encode(**values: tf.Tensor) -> dict[str, tf.Tensor]:
        context, candidates = encoded(values)
        return {"context_vector": context} | ({} if candidates is None else {"action_vectors": candidates})

    names = list(inputs)
    builders = {
        "seeded": (seeded, names),
        "serving_default": (serving_default, [k for k in names if k != "seed"]),
        "context_only": (context_only, ["context"]),
        "probabilities": (probabilities, names),
        "encode": (encode, [k for k in names if k != "seed" and k not in MASKS]),
    }

    def traced(name: str) -> Any:
        function, keys = builders[name]
        return tf.function(function).get_concrete_function(**{k: inputs[k] for k in keys})

    return {name: traced(name) for name in SIGNATURES[spec.layout]}


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
            tf.saved_model.save(policy, str(staging / variant), signatures=_signatures(policy, variant, spec))
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
                "names": list(SIGNATURES[spec.layout]),
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
