"""Exported SavedModels: layout, manifest, round trip, signatures, atomicity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from exporter import loader, savedmodel
from exporter.spec import PolicySpec, RewardConfig, resolve

D, K = 6, 5


def trained(algorithm: str, name: str = "p") -> tuple[PolicySpec, object]:
    spec = resolve(name, algorithm, D, K, {}, RewardConfig())
    policy = spec.build_policy()
    rng = np.random.default_rng(0)
    policy.update(
        rng.normal(size=(80, D)).astype(np.float32),
        rng.integers(0, K, 80).astype(np.int32),
        rng.normal(size=80).astype(np.float32),
        np.ones(80, np.float32),
    )
    return spec, policy


@pytest.mark.parametrize("algorithm", ["linucb", "lints"])
def test_export_then_load_gives_identical_decisions(store: Path, algorithm: str) -> None:
    spec, policy = trained(algorithm)
    version = savedmodel.export(policy, spec, store)
    loaded = loader.load(store, "p", version)
    rng = np.random.default_rng(1)
    context = rng.normal(size=(32, D)).astype(np.float32)
    mask = rng.random((32, K)) < 0.7
    mask[:, 2] = True
    seed = np.arange(32, dtype=np.int64) * 31
    for variant in ("greedy", "collect"):
        direct = getattr(policy, variant)(context, mask, seed)
        served = loaded.decide(variant == "greedy", context, mask, seed)
        for key in ("action", "propensity", "scores"):
            np.testing.assert_array_equal(getattr(direct, key).numpy(), served[key], err_msg=f"{variant} {key}")
        assert mask[np.arange(32), served["action"]].all()
    np.testing.assert_array_equal(loaded.decide(True, context, mask, seed)["propensity"], 1.0)
    # The whole distribution: sums to one, zero on masked actions, and agrees with the propensity.
    for greedy in (True, False):
        dist = loaded.probabilities(greedy, context, mask, seed)
        np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-5)
        assert (dist[~mask] == 0).all()
        chosen = loaded.decide(greedy, context, mask, seed)
        picked = dist[np.arange(32), chosen["action"]]
        if algorithm == "linucb" or greedy:
            np.testing.assert_allclose(picked, chosen["propensity"], rtol=1e-6)
        else:  # both estimated from the same 256 draws; the propensity counts the decisive draw too
            np.testing.assert_allclose(picked, (chosen["propensity"] * 257 - 1) / 256, atol=1e-5)


def test_layout_manifest_and_checksums(store: Path) -> None:
    spec, policy = trained("linucb", "homepage")
    assert savedmodel.export(policy, spec, store) == 1
    assert savedmodel.export(policy, spec, store) == 2
    root = store / "homepage"
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"], "staging folders must not remain"
    for variant in ("greedy", "collect"):
        assert (root / "1" / variant / "saved_model.pb").is_file()
        assert (root / "1" / variant / "variables").is_dir()
    manifest = json.loads((root / "1" / "manifest.json").read_text())
    assert manifest["algorithm"] == "linucb" and manifest["version"] == 1
    assert manifest["spec"]["context_dim"] == D and manifest["spec"]["num_actions"] == K
    assert manifest["spec"]["hyperparameters"] == {"alpha": 1.0, "ridge": 1.0, "epsilon": 0.05}
    assert manifest["train_step"] == 1 and manifest["created_at"]
    assert set(manifest["files"]) == {
        str(p.relative_to(root / "1")) for p in (root / "1").rglob("*") if p.is_file() and p.name != "manifest.json"
    }
    assert savedmodel.verify(store, "homepage", 1) == manifest
    assert savedmodel.list_versions(store, "homepage") == [1, 2]


def test_a_version_is_never_overwritten(store: Path) -> None:
    spec, policy = trained("linucb")
    savedmodel.export(policy, spec, store)
    before = (store / "p" / "1" / "manifest.json").read_bytes()
    with pytest.raises(savedmodel.ExportError):
        savedmodel.export(policy, spec, store, version=1)
    assert (store / "p" / "1" / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in (store / "p").iterdir()) == ["1"]


def test_tampered_file_fails_verification(store: Path) -> None:
    spec, policy = trained("linucb")
    savedmodel.export(policy, spec, store)
    victim = next((store / "p" / "1" / "collect" / "variables").glob("*.data-*"))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(savedmodel.ExportError, match="does not match its manifest"):
        loader.load(store, "p", 1)


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(store: Path) -> None:
    spec, policy = trained("lints")
    savedmodel.export(policy, spec, store)
    cli = Path(sys.executable).with_name("saved_model_cli")
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    shown = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(store / "p" / "1" / "collect")],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    ).stdout  # fmt: skip
    for name in ("serving_default", "context_only", "seeded", "probabilities"):
        assert f"signature_def['{name}']" in shown
    for tensor in ("context", "mask", "seed", "action", "propensity", "scores"):
        assert f"['{tensor}']" in shown
    assert f"shape: (-1, {D})" in shown and f"shape: (-1, {K})" in shown


def test_unseeded_signatures_answer_with_valid_decisions(store: Path) -> None:
    spec, policy = trained("linucb")
    savedmodel.export(policy, spec, store)
    model = tf.saved_model.load(str(store / "p" / "1" / "collect"))
    context = np.random.default_rng(2).normal(size=(200, D)).astype(np.float32)
    mask = np.zeros((200, K), bool)
    mask[:, [1, 3]] = True
    out = model.signatures["serving_default"](context=tf.constant(context), mask=tf.constant(mask))
    assert set(np.unique(out["action"].numpy())) <= {1, 3}
    out = model.signatures["context_only"](context=tf.constant(context))
    assert out["scores"].shape == (200, K)
    assert len(np.unique(out["action"].numpy())) > 2, "the epsilon share should reach other actions"


def test_checkpoint_restores_into_a_loaded_copy(store: Path, tmp_path: Path) -> None:
    spec, policy = trained("linucb")
    savedmodel.export(policy, spec, store)
    loaded = loader.load(store, "p", 1)
    rng = np.random.default_rng(3)
    policy.update(rng.normal(size=(50, D)).astype(np.float32), rng.integers(0, K, 50).astype(np.int32),
                  rng.normal(size=50).astype(np.float32), np.ones(50, np.float32))  # fmt: skip
    path = tf.train.Checkpoint(policy=policy).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(policy=loaded.collect_model).read(path).assert_existing_objects_matched()
    for name in ("gram", "reward_sums", "counts", "theta", "gram_inverse", "train_step"):
        restored = getattr(loaded.collect_model.state, name).numpy()
        np.testing.assert_array_equal(getattr(policy.state, name).numpy(), restored, err_msg=name)
    context = rng.normal(size=(16, D)).astype(np.float32)
    mask, seed = np.ones((16, K), bool), np.arange(16, dtype=np.int64)
    served = loaded.decide(False, context, mask, seed)
    np.testing.assert_array_equal(policy.collect(context, mask, seed).scores.numpy(), served["scores"])
