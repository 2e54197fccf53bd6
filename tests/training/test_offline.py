"""Offline jobs: the joined log to Parquet and DSJSON, imports, retrain, evaluate, promote;
the whole cycle on the Open Bandit Dataset sample; the admin routes and the CLI."""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from eventlog.sync import LogClient
from service import cli
from tests.training.test_trainer import play, wait_for_version
from training import checkpoints, offline
from training.offline import JoinedLog
from training.trainer import PolicyTrainer

OBD = Path(__file__).resolve().parents[1] / "data" / "obd"
POLICY = {"name": "shop", "algorithm": "linucb", "context_dim": 4, "num_actions": 3}
ESTIMATORS = ("ipw", "snipw", "dm", "dr", "sndr")


def assert_same_log(actual: JoinedLog, expected: JoinedLog) -> None:
    for field in dataclasses.fields(JoinedLog):
        a, e = getattr(actual, field.name), getattr(expected, field.name)
        if isinstance(e, np.ndarray):
            assert isinstance(a, np.ndarray) and a.shape == e.shape, field.name
            if e.dtype == object:
                assert a.tolist() == e.tolist(), field.name
            else:
                assert a.dtype == e.dtype, field.name
                np.testing.assert_array_equal(a, e, err_msg=field.name)
        else:
            assert a == e, field.name


# -- the joined log ------------------------------------------------------------------------

T0 = 1_795_000_000_000
# (decision index, reward, late), in the order they reach the reward stream.
REWARDS = [
    (0, 1.0, False),
    (1, 0.5, False),
    (1, 0.25, False),  # a repeat: ignored by "earliest", added by "sum"
    (2, 3.0, True),  # only a late reward: the default applies
    (3, 0.75, False),
    (3, 2.0, True),  # late after an in-time one: never counts
    (5, -0.5, False),
    (7, 0.125, False),
    (4, 1.5, False),
    (9, 0.0, False),
]


def decision(i: int, rng: np.random.Generator) -> eventlog.DecisionRecord:
    masked = i % 3 == 0
    in_experiment = i % 4 == 1
    action = [0, 2][i % 2] if masked else i % 3
    return eventlog.DecisionRecord(
        event_id=f"e{i}",
        ts_ms=T0 + 1000 * i,
        policy="shop",
        version=f"1.{i // 4}",
        context=rng.normal(size=4).astype(np.float32).tolist(),
        mask=[True, False, True] if masked else None,
        action=action,
        propensity=1.0 if i == 6 else 0.9 - 0.05 * (i % 5),
        scores=[0.1, 0.2, 0.3],
        greedy=i == 6,
        unit_id=f"u{i}",
        seed=i,
        experiment="homepage-ab" if in_experiment else None,
        variant="bandit" if in_experiment else None,
        variant_probability=0.25 if in_experiment else 1.0,
    )


def write_log(client, n: int, seed: int = 0) -> list[eventlog.DecisionRecord]:  # type: ignore[no-untyped-def]
    """n decisions at stream entries 1000-0, 1001-0, ... and REWARDS at 5000-0, 5001-0, ..."""
    rng = np.random.default_rng(seed)
    records = [decision(i, rng) for i in range(n)]
    for i, record in enumerate(records):
        client.xadd(eventlog.decisions_key("shop"), record.to_fields(), id=f"{1000 + i}-0")
    for j, (i, reward, late) in enumerate(REWARDS):
        if i < n:
            fields = eventlog.RewardRecord(
                f"e{i}", T0 + 1000 * i + 10 + j, reward, late, f"{1000 + i}-0", 1
            ).to_fields()
            client.xadd(eventlog.rewards_key("shop"), fields, id=f"{5000 + j}-0")
    return records


def expected_log(records: list[eventlog.DecisionRecord], rows: range, aggregation: str, default: float) -> JoinedLog:
    """The join written out for this test's records: what the trainer would learn once every
    window closed."""
    rewards: dict[int, float] = {}
    times: dict[int, int] = {}
    for j, (i, reward, late) in enumerate(REWARDS):
        if late or i not in rows:
            continue
        if aggregation == "sum":
            rewards[i] = rewards.get(i, 0.0) + reward
            times[i] = T0 + 1000 * i + 10 + j
        elif i not in rewards:
            rewards[i] = reward
            times[i] = T0 + 1000 * i + 10 + j
    chosen = [records[i] for i in rows]
    return JoinedLog(
        policy="shop",
        num_actions=3,
        event_ids=np.array([r.event_id for r in chosen], object),
        ts_ms=np.array([r.ts_ms for r in chosen], np.int64),
        versions=np.array([r.version for r in chosen], object),
        contexts=np.array([r.context for r in chosen], np.float32),
        masks=np.array([r.mask or [True] * 3 for r in chosen], bool),
        actions=np.array([r.action for r in chosen], np.int32),
        propensities=np.array([r.propensity * r.variant_probability for r in chosen]),
        rewards=np.array([rewards.get(i, default) for i in rows]),
        rewarded=np.array([i in rewards for i in rows]),
        reward_ts_ms=np.array([times.get(i, -1) for i in rows], np.int64),
        experiments=np.array([r.experiment for r in chosen], object),
        variants=np.array([r.variant for r in chosen], object),
        greedy=np.array([r.greedy for r in chosen]),
    )


@pytest.mark.parametrize("aggregation", ["earliest", "sum"])
def test_exported_parquet_is_the_joined_log_in_redis(
    aggregation: str, app_client: TestClient, log_client: LogClient, redis_client: redis.Redis, tmp_path: Path
) -> None:
    body = POLICY | {"reward": {"default": -1.0, "aggregation": aggregation}}
    assert app_client.post("/policies", json=body).status_code == 201
    records = write_log(redis_client, 10)

    joined = offline.read_joined_log(log_client, "shop")
    expected = expected_log(records, range(10), aggregation, -1.0)
    assert_same_log(joined, expected)
    assert joined.rewarded.tolist().count(False) == 3  # 2 (only a late reward), 6 and 8 get the default
    assert_same_log(JoinedLog.from_parquet(joined.to_parquet(tmp_path / "log.parquet")), expected)

    # A time range selects decisions by their entry's time; their rewards come from anywhere after.
    window = offline.read_joined_log(log_client, "shop", since_ms=1003, until_ms=1008)
    assert_same_log(window, expected_log(records, range(3, 8), aggregation, -1.0))
    assert_same_log(joined.select(slice(3, 8)), window)
    assert len(offline.read_joined_log(log_client, "shop", since_ms=1008, until_ms=1008)) == 0


def test_parquet_without_masks_and_the_file_layout(
    app_client: TestClient, log_client: LogClient, tmp_path: Path
) -> None:
    assert app_client.post("/policies", json=POLICY).status_code == 201
    play(app_client, 5)
    joined = offline.read_joined_log(log_client, "shop")
    assert joined.masks is None and joined.rewarded.all() and len(joined) == 5
    path = joined.to_parquet(tmp_path / "log.parquet")
    table = pq.read_table(path)
    assert table.column_names == list(offline.JOINED_COLUMNS)
    assert table.schema.field("context").type == pa.list_(pa.float32(), 4)
    assert table.column("mask").null_count == 5
    assert json.loads(table.schema.metadata[b"banditd"]) == {
        "format": 1,
        "policy": "shop",
        "context_dim": 4,
        "num_actions": 3,
    }
    assert_same_log(JoinedLog.from_parquet(path), joined)
    with pytest.raises(offline.InvalidData, match="not a joined log"):
        pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
        JoinedLog.from_parquet(tmp_path / "other.parquet")


def test_dsjson_lines_carry_cost_probability_and_actions(
    app_client: TestClient, log_client: LogClient, redis_client: redis.Redis, tmp_path: Path
) -> None:
    assert app_client.post("/policies", json=POLICY | {"reward": {"default": -1.0}}).status_code == 201
    write_log(redis_client, 10)
    joined = offline.read_joined_log(log_client, "shop")
    lines = joined.to_dsjson(tmp_path / "log.json").read_text().splitlines()
    assert len(lines) == 10
    for i, line in enumerate(lines):
        event = json.loads(line)
        action = int(joined.actions[i])
        assert event["_label_cost"] == -joined.rewards[i]
        assert event["_label_probability"] == joined.propensities[i]
        assert (event["_label_Action"], event["_labelIndex"]) == (action + 1, action)
        assert event["a"][0] == action + 1 and event["p"][0] == joined.propensities[i]
        allowed = np.flatnonzero(joined.masks[i]) + 1  # type: ignore[index]
        assert sorted(event["a"]) == allowed.tolist() and len(event["p"]) == len(event["a"])
        assert sum(event["p"]) == pytest.approx(1.0)
        assert event["c"]["x"] == joined.contexts[i].tolist()
        assert event["c"]["_multi"][action] == {"a": {f"id={action}": 1}} and len(event["c"]["_multi"]) == 3
        assert (event["EventId"], event["Version"]) == (f"e{i}", "1")
        assert event["VWState"]["m"] == f"shop/{joined.versions[i]}"
        moment = datetime.datetime.fromisoformat(event["Timestamp"].replace("0000Z", "+00:00"))
        assert int(moment.timestamp() * 1000) == joined.ts_ms[i]
    assert json.loads(lines[2])["_label_cost"] == 1.0  # decision 2 had only a late reward: default -1
    assert json.loads(lines[1])["_label_probability"] == pytest.approx(0.85 * 0.25)  # experiment traffic


# -- importing -----------------------------------------------------------------------------


def logged_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns = {f"x{j}": rng.normal(size=n).astype(np.float32) for j in range(4)}
    return pa.table(
        columns
        | {
            "action": rng.integers(0, 3, size=n),
            "propensity": np.full(n, 1 / 3),
            "reward": rng.normal(size=n).round(3),
            "ts_ms": T0 + np.arange(n, dtype=np.int64),
        }
    )


@pytest.mark.slow
def test_import_csv_and_parquet_round_trip(
    app_client: TestClient, log_client: LogClient, tmp_path: Path, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    assert app_client.post("/policies", json=POLICY).status_code == 201
    first, second = logged_table(40, seed=1), logged_table(30, seed=2)
    pa_csv.write_csv(first, tmp_path / "log.csv")
    (tmp_path / "log.csv.gz").write_bytes(gzip.compress((tmp_path / "log.csv").read_bytes()))
    pq.write_table(second, tmp_path / "log.parquet")
    assert offline.import_log(log_client, "shop", tmp_path / "log.csv.gz", "csv") == 40
    assert offline.import_log(log_client, "shop", tmp_path / "log.parquet", "parquet") == 30

    joined = offline.read_joined_log(log_client, "shop")
    both = pa.concat_tables([first, second])
    np.testing.assert_array_equal(joined.contexts, np.stack([both.column(f"x{j}") for j in range(4)], axis=1))
    np.testing.assert_array_equal(joined.actions, both.column("action").to_numpy())
    np.testing.assert_array_equal(joined.propensities, both.column("propensity").to_numpy())
    np.testing.assert_array_equal(joined.rewards, both.column("reward").to_numpy())
    np.testing.assert_array_equal(joined.ts_ms, both.column("ts_ms").to_numpy())
    assert set(joined.versions) == {"import"} and joined.rewarded.all() and not joined.greedy.any()
    assert len(set(joined.event_ids)) == 70
    info = app_client.get("/policies/shop").json()
    assert (info["decisions"], info["rewards"]) == (70, 70)
    assert policy_trainer("shop").step() == 70  # the trainer learns imported rows like served ones

    # A joined log that export-log wrote imports as it is (its list column "context").
    assert app_client.post("/policies", json=POLICY | {"name": "copy"}).status_code == 201
    assert offline.import_log(log_client, "copy", joined.to_parquet(tmp_path / "joined.parquet"), "parquet") == 70
    copied = offline.read_joined_log(log_client, "copy")
    for field in ("contexts", "actions", "propensities", "rewards", "ts_ms"):
        np.testing.assert_array_equal(getattr(copied, field), getattr(joined, field))

    with pytest.raises(offline.InvalidData) as error:
        offline.import_log(log_client, "shop", tmp_path / "log.parquet", "parquet", context_prefix="z")
    assert error.value.field == "context"
    pq.write_table(second.set_column(4, "action", pa.array(np.full(30, 3))), tmp_path / "bad.parquet")
    with pytest.raises(offline.InvalidData, match="outside") as error:
        offline.import_log(log_client, "shop", tmp_path / "bad.parquet", "parquet")
    assert error.value.field == "action"
    with pytest.raises(offline.UnknownPolicy):
        offline.import_log(log_client, "nope", tmp_path / "log.parquet", "parquet")
    assert app_client.get("/policies/shop").json()["decisions"] == 70  # failed imports wrote nothing


# -- the Open Bandit Dataset cycle ---------------------------------------------------------


@pytest.mark.slow
def test_open_bandit_dataset_cycle(
    app_client: TestClient, log_client: LogClient, tmp_path: Path, policy_trainer: Callable[..., PolicyTrainer]
) -> None:
    """Import the uniform-random log, retrain LinUCB on it, evaluate it off-policy against the
    untrained live version, the random log's and the BTS log's on-policy values, promote it."""
    policy = {"name": "obd", "algorithm": "linucb", "context_dim": 80, "num_actions": 80}
    assert app_client.post("/policies", json=policy).status_code == 201
    assert offline.import_log(log_client, "obd", OBD / "random" / "all.csv.gz", "obd") == 10_000
    joined = offline.read_joined_log(log_client, "obd")
    assert len(joined) == 10_000 and joined.rewarded.all()
    np.testing.assert_allclose(joined.propensities, 1 / 80)
    random_value = joined.on_policy_value()["value"]
    bts_value = float(offline.read_logged_data(OBD / "bts" / "all.csv.gz", "obd").rewards.mean())
    assert (random_value, bts_value) == (pytest.approx(0.0038), pytest.approx(0.0042))  # obd_ope_reference.json

    export = offline.retrain(app_client.app.state.registry.store, log_client, "obd", joined)  # type: ignore[attr-defined]
    assert export == 2 and offline.candidate(log_client, "obd") == "2.0"
    assert log_client.live("obd") == "1.0"  # a candidate is never served until promoted
    store = app_client.app.state.registry.store  # type: ignore[attr-defined]
    result = offline.evaluate(store, log_client, "obd", joined)
    assert (result["candidate_version"], result["live_version"]) == ("2.0", "1.0")
    print(f"\nOBD random log, {len(joined):,} rows; on-policy: random {random_value:.5f}, BTS {bts_value:.5f}")
    print(f"logging policy {result['logging_policy']}")
    for role in ("candidate", "live"):
        report = result[role]
        for name in ESTIMATORS:
            e = report["estimates"][name]
            assert np.isfinite([e["value"], e["low"], e["high"]]).all()
            assert e["low"] <= e["value"] <= e["high"], (role, name, e)
            print(f"{role:9} {name:5} {e['value']:.5f} [{e['low']:.5f}, {e['high']:.5f}]")
        print(f"{role:9} ess {report['effective_sample_size']:.1f} max w {report['max_importance_weight']:.2f}")
    print(f"auto-promotion rule (candidate DR low > live DR): {offline.candidate_beats_live(result)}")

    # The trainer learns the imported log meanwhile, so the live version carries a log position.
    trainer = policy_trainer("obd")
    assert trainer.step() == 10_000
    assert trainer.publish() == "1.1"
    before = checkpoints.read_state(store, "obd", 1, 1)

    response = app_client.post("/policies/obd/promote", json={"version": "2.0"})
    assert response.status_code == 200, response.text
    assert response.json()["live_version"] == "2.2" and response.json()["versions"] == [1, 2]
    served = app_client.post("/act", json={"policy": "obd", "context": [0.0] * 80}).json()
    assert served["version"] == "2.2"
    after = checkpoints.read_state(store, "obd", 2, 2)
    assert (after.decisions_position, after.rewards_position, after.applied) == (
        before.decisions_position,
        before.rewards_position,
        before.applied,
    )
    assert offline.candidate(log_client, "obd") is None
    trainer.follow_live()  # the trainer goes on from the promoted variables, at its old position
    assert trainer.live == "2.2" and trainer.state.applied == 10_000
    assert trainer.step() == 0  # /act above is not rewarded yet; nothing is applied twice
    served_theta = trainer.policy.state.theta.numpy()
    retrained = offline.load_version(store, "obd", "2.0").collect_model.state.theta.numpy()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(served_theta, retrained)


# -- the admin routes ----------------------------------------------------------------------


@pytest.mark.slow
def test_offline_admin_routes(app_client: TestClient, log_client: LogClient) -> None:
    missing = app_client.post("/policies/nope/retrain", json={})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert app_client.post("/policies", json=POLICY).status_code == 201
    no_candidate = app_client.post("/policies/shop/promote", json={})
    assert no_candidate.status_code == 409
    assert no_candidate.json() | {"message": ""} == {
        "error": "conflict",
        "message": "",
        "field": "candidate",
        "retryable": False,
    }
    assert "no candidate" in no_candidate.json()["message"]
    assert app_client.post("/policies/shop/evaluate", json={}).json()["field"] == "candidate"
    empty = app_client.post("/policies/shop/retrain", json={})
    assert empty.status_code == 422 and empty.json()["field"] == "log"
    assert app_client.post("/policies/shop/retrain", json={"from_live": 1}).status_code == 422

    play(app_client, 60)
    retrained = app_client.post("/policies/shop/retrain", json={"from_live": True})
    assert retrained.status_code == 200, retrained.text
    assert retrained.json() == {
        "policy": "shop",
        "candidate_version": "2.0",
        "base_version": "1.0",
        "from_live": True,
        "examples": 60,
        "rewarded": 60,
    }
    evaluated = app_client.post("/policies/shop/evaluate", json={})
    assert evaluated.status_code == 200, evaluated.text
    body = evaluated.json()
    assert (body["candidate_version"], body["live_version"], body["promoted_version"]) == ("2.0", "1.0", None)
    assert set(body["candidate"]["estimates"]) == set(ESTIMATORS) == set(body["live"]["estimates"])

    stale = app_client.post("/policies/shop/promote", json={"version": "3.0"})
    assert stale.status_code == 409 and stale.json()["field"] == "version"
    promoted = app_client.post("/policies/shop/promote", json={})
    assert promoted.status_code == 200 and promoted.json()["live_version"] == "2.1"
    assert wait_for_version(app_client, "2.1")["version"] == "2.1"
    assert app_client.post("/policies/shop/promote", json={}).status_code == 409

    # Auto-promotion: a fresh retrain on the same log, promoted only if its DR lower bound wins.
    assert app_client.post("/policies/shop/retrain", json={}).json()["candidate_version"] == "3.0"
    auto = app_client.post("/policies/shop/evaluate", json={"auto_promote": True}).json()
    beats = auto["candidate"]["estimates"]["dr"]["low"] > auto["live"]["estimates"]["dr"]["value"]
    assert (auto["promoted_version"] is not None) == beats
    live = app_client.get("/policies/shop").json()["live_version"]
    assert live == (auto["promoted_version"] or "2.1")


@pytest.mark.slow
def test_a_policy_can_ask_every_evaluation_to_auto_promote(app_client: TestClient) -> None:
    policy = POLICY | {"training": {"auto_promote": True}}
    assert app_client.post("/policies", json=policy).json()["training"]["auto_promote"] is True
    play(app_client, 60)
    assert app_client.post("/policies/shop/retrain", json={}).json()["candidate_version"] == "2.0"
    evaluated = app_client.post("/policies/shop/evaluate", json={}).json()  # no flag in the call
    beats = evaluated["candidate"]["estimates"]["dr"]["low"] > evaluated["live"]["estimates"]["dr"]["value"]
    assert evaluated["promoted_version"] == ("2.1" if beats else None)
    assert app_client.get("/policies/shop").json()["live_version"] == ("2.1" if beats else "1.0")


# -- the command line ----------------------------------------------------------------------


@pytest.mark.slow
def test_cli_offline_commands(
    app_client: TestClient,
    log_client: LogClient,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main() installs a SIGTERM handler

    def banditd(*argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, "--data-dir", str(tmp_path)])
        out = capsys.readouterr()
        return code, out.out, out.err

    assert app_client.post("/policies", json=POLICY).status_code == 201
    pa_csv.write_csv(logged_table(50, seed=3), tmp_path / "log.csv")
    assert banditd("import-log", "shop", str(tmp_path / "log.csv"), "--format", "csv")[:2] == (
        0,
        "imported 50 decisions with rewards into shop\n",
    )
    log, dsjson = tmp_path / "out" / "log.parquet", tmp_path / "out" / "log.json"
    code, out, err = banditd("export-log", "shop", "--out", str(log), "--dsjson", str(dsjson), "--since", "1970-01-01")
    assert code == 0 and out.startswith("50 decisions of shop (0 with the default reward)")
    assert "read decisions: 50" in err  # the progress printer, one line per phase off a terminal
    assert len(JoinedLog.from_parquet(log)) == 50 and len(dsjson.read_text().splitlines()) == 50

    code, out, _ = banditd("retrain", "shop", str(log), "--from-live")
    assert code == 0 and out.startswith("candidate 2.0 of shop: trained from 1.0 on 50 decisions")
    code, out, _ = banditd("evaluate", "shop", str(log))
    assert code == 0 and "| estimator (95% interval) | candidate 2.0 | live 1.0 |" in out
    assert all(f"| {name} |" in out for name in ESTIMATORS)
    assert banditd("promote", "shop")[:2] == (0, "shop now serves 2.1\n")
    assert wait_for_version(app_client, "2.1")["version"] == "2.1"  # the replica followed the announcement

    code, _, err = banditd("promote", "shop")
    assert code == 1 and "banditd promote: candidate: policy 'shop' has no candidate version" in err
    code, _, err = banditd("retrain", "nope", str(log))
    assert code == 1 and "no policy named 'nope'" in err
    monkeypatch.delenv("REDIS_URL")
    assert banditd("promote", "shop")[0] == 2
