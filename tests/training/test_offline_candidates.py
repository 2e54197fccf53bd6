"""The Open Bandit Dataset with its item features as per-candidate features (80 candidates per
decision): import, the joined log and its Parquet round trip, retrain a shared-parameter
LinUCB, and evaluate it off-policy (checked against a closed form for a uniform policy)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pytest
from fastapi.testclient import TestClient

from eventlog.sync import LogClient
from training import offline
from training.offline import JoinedLog
from training.trainer import PolicyTrainer

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

OBD = Path(__file__).resolve().parents[1] / "data" / "obd"
USER = [{"name": f"user_feature_{i}", "type": "categorical", "hash_buckets": 4} for i in range(4)]
ITEM = [
    {"name": "item_feature_0", "type": "numeric"},
    *({"name": f"item_feature_{i}", "type": "categorical", "hash_buckets": 4} for i in (1, 2, 3)),
    {"name": "user_item_affinity", "type": "numeric"},
]
POLICY = {"algorithm": "linucb", "features": USER, "action_features": ITEM, "max_candidates": 80}


def test_open_bandit_dataset_with_item_features(
    app_client: TestClient, log_client: LogClient, tmp_path: Path, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    store = app_client.app.state.registry.store  # type: ignore[attr-defined]
    created = app_client.post("/policies", json=POLICY | {"name": "zozo"})
    assert created.status_code == 201, created.text
    assert created.json()["context_dim"] == 16 and created.json()["action_feature_dim"] == 1 + 12 + 1
    assert offline.import_log(log_client, "zozo", OBD / "random" / "all.csv.gz", "obd") == 10_000

    joined = offline.read_joined_log(log_client, "zozo")
    assert len(joined) == 10_000 and joined.num_actions == 80
    assert joined.action_features is not None and joined.action_features.shape == (10_000, 80, 2)
    assert joined.masks is not None and joined.masks.all()
    # The logged candidate's features are its item's, and its affinity is the row's affinity to it.
    raw = pa_csv.read_csv(OBD / "random" / "all.csv.gz")
    items = pa_csv.read_csv(OBD / "random" / "item_context.csv")
    item_ids = raw.column("item_id").to_numpy()
    np.testing.assert_array_equal(joined.actions, item_ids)  # ids "0".."79" in item order
    assert list(joined.candidates[0]) == [str(i) for i in range(80)]  # type: ignore[index]
    row = 123
    item = int(item_ids[row])
    chosen = joined.action_features[row, item]
    assert chosen[0] == pytest.approx(float(items.column("item_feature_0").to_numpy()[item]), rel=1e-6)
    assert chosen[1] == pytest.approx(float(raw.column(f"user-item_affinity_{item}").to_numpy()[row]), abs=1e-7)
    assert joined.action_categorical is not None
    assert joined.action_categorical[row, item, 0] == items.column("item_feature_1").to_pylist()[item]
    assert joined.context_categorical is not None
    assert joined.context_categorical[row, 2] == raw.column("user_feature_2").to_pylist()[row]

    # Parquet keeps every candidate.
    back = JoinedLog.from_parquet(joined.to_parquet(tmp_path / "zozo.parquet"))
    for field in ("actions", "masks", "action_features", "action_categorical", "context_categorical", "rewards"):
        np.testing.assert_array_equal(getattr(back, field), getattr(joined, field), err_msg=field)
    assert [list(c) for c in back.candidates[:3]] == [list(c) for c in joined.candidates[:3]]  # type: ignore[index]

    # A uniform policy over the 80 candidates (epsilon 1): every importance weight is
    # (1/80) / (1/80), so IPW must equal the logged mean click exactly.
    assert (
        app_client.post("/policies", json=POLICY | {"name": "uniform", "exploration": {"epsilon": 1.0}}).status_code
        == 201
    )
    assert offline.import_log(log_client, "uniform", OBD / "random" / "all.csv.gz", "obd") == 10_000
    uniform_log = offline.read_joined_log(log_client, "uniform")
    offline.retrain(store, log_client, "uniform", uniform_log)
    uniform = offline.evaluate(store, log_client, "uniform", uniform_log, n_bootstrap=100)
    assert uniform["candidate"]["estimates"]["ipw"]["value"] == pytest.approx(joined.rewards.mean(), rel=1e-6)
    assert uniform["candidate"]["effective_sample_size"] == pytest.approx(10_000, rel=1e-6)

    # Retrain on the log and evaluate against the untrained live version.
    export = offline.retrain(store, log_client, "zozo", joined)
    assert offline.candidate(log_client, "zozo") == f"{export}.0"
    result = offline.evaluate(store, log_client, "zozo", joined, greedy=True, n_bootstrap=200)
    # The baseline (always the first candidate, item 0): IPW in closed form on the random log.
    first = joined.actions == 0
    expected = float(np.mean(joined.rewards * first / joined.propensities))
    assert result["baseline"]["estimates"]["ipw"]["value"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert result["baseline"]["effective_sample_size"] == pytest.approx(first.sum(), rel=1e-9)
    for role in ("candidate", "live", "baseline"):
        for name, e in result[role]["estimates"].items():
            assert np.isfinite([e["value"], e["low"], e["high"]]).all(), (role, name)
            assert e["low"] <= e["value"] <= e["high"], (role, name, e)
    print(
        f"\nOBD with item features, random log: on-policy {joined.rewards.mean():.5f}; greedy retrained "
        + ", ".join(f"{k} {v['value']:.5f}" for k, v in result["candidate"]["estimates"].items())
        + f"; ess {result['candidate']['effective_sample_size']:.1f}"
    )
    # The retrained model crosses user and item features: different users get different items.
    model = offline.load_version(store, "zozo", f"{export}.0")
    picks = model.decide(
        True,
        joined.contexts[:2000],
        joined.masks[:2000],
        np.zeros(2000, np.int64),
        **{k: v[:2000] for k, v in joined.packed().items()},
    )["action"]
    assert len(np.unique(picks)) >= 3, np.unique(picks)

    # Out of sample: retrained on the BTS log, evaluated on the random one.
    assert app_client.post("/policies", json=POLICY | {"name": "zozo-bts"}).status_code == 201
    assert offline.import_log(log_client, "zozo-bts", OBD / "bts" / "all.csv.gz", "obd") == 10_000
    offline.retrain(store, log_client, "zozo", offline.read_joined_log(log_client, "zozo-bts"))
    held_out = offline.evaluate(store, log_client, "zozo", joined, greedy=True, n_bootstrap=200)
    dr = held_out["candidate"]["estimates"]["dr"]
    assert np.isfinite([dr["value"], dr["low"], dr["high"]]).all()
    print(
        f"trained on BTS, evaluated on random: dr {dr['value']:.5f} [{dr['low']:.5f}, {dr['high']:.5f}], "
        f"ess {held_out['candidate']['effective_sample_size']:.1f}"
    )

    # The trainer learns the imported candidate log like served traffic.
    trainer = policy_trainer("zozo")
    assert trainer.step() == 10_000
    np.testing.assert_allclose(
        trainer.policy.state.theta.numpy(), model.collect_model.state.theta.numpy(), rtol=1e-4, atol=1e-6
    )
