"""Experiments over the API: sticky split, weights, Thompson allocation, report, changes."""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from tests.service.conftest import ClientFactory, SkipClock
from training.experiments import Experiment, assign_fixed

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

CONTEXT = [0.5, -1.0, 0.25, 2.0]


def make_policies(client: TestClient, wait_seconds: float = 600.0) -> None:
    for name in ("incumbent", "candidate"):
        body = {
            "name": name,
            "algorithm": "linucb",
            "context_dim": 4,
            "num_actions": 3,
            "reward": {"wait_seconds": wait_seconds},
        }
        assert client.post("/policies", json=body).status_code == 201


def experiment(allocation: str = "fixed", weights: tuple[float, float] = (0.8, 0.2)) -> dict:
    return {
        "name": "ab",
        "variants": [
            {"name": "a", "policy": "incumbent", "weight": weights[0]},
            {"name": "b", "policy": "candidate", "weight": weights[1]},
        ],
        "allocation": allocation,
        "control": "a",
    }


def test_fixed_split_is_sticky_matches_weights_and_survives_restart(client_factory: ClientFactory) -> None:
    client = client_factory()
    make_policies(client)
    created = client.post("/experiments", json=experiment())
    assert created.status_code == 201 and created.json()["status"] == "running"
    units = [f"user-{i}" for i in range(1500)]
    first = {}
    for unit in units:
        body = client.post("/act", json={"experiment": "ab", "context": CONTEXT, "unit_id": unit}).json()
        first[unit] = body["variant"]
        assert body["policy"] == ("incumbent" if body["variant"] == "a" else "candidate")
        assert body["variant_probability"] == pytest.approx(0.8 if body["variant"] == "a" else 0.2)
    share = Counter(first.values())["b"] / len(units)
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(units)), share  # binomial, 4 sigma
    again = client.post("/act", json={"experiment": "ab", "context": CONTEXT, "unit_id": units[7]}).json()
    assert again["variant"] == first[units[7]]
    replica = client_factory()  # another replica (or the same one after a restart)
    for unit in units[:50]:
        body = replica.post("/act", json={"experiment": "ab", "context": CONTEXT, "unit_id": unit}).json()
        assert body["variant"] == first[unit]


def test_overall_propensity_is_variant_times_action_probability(client: TestClient, redis_client: redis.Redis) -> None:
    make_policies(client)
    client.post("/experiments", json=experiment())
    body = client.post("/act", json={"experiment": "ab", "context": CONTEXT, "unit_id": "u1", "event_id": "e1"}).json()
    [(_, fields)] = redis_client.xrange(eventlog.decisions_key(body["policy"]))
    record = eventlog.DecisionRecord.from_fields(fields)
    assert (record.experiment, record.variant) == ("ab", body["variant"])
    assert record.variant_probability == pytest.approx(body["variant_probability"])
    assert body["propensity"] == pytest.approx(record.variant_probability * record.propensity, rel=1e-6)
    repeat = client.post("/act", json={"experiment": "ab", "context": CONTEXT, "unit_id": "u1", "event_id": "e1"})
    assert repeat.json() == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"experiment": "ab", "policy": "incumbent", "context": [1, 2, 3, 4], "unit_id": "u"}', "body"),
        ('{"context": [1, 2, 3, 4]}', "body"),
        ('{"experiment": "nope", "context": [1, 2, 3, 4], "unit_id": "u"}', "experiment"),
        ('{"experiment": "ab", "context": [1, 2, 3, 4]}', "unit_id"),
        ('{"experiment": "ab", "context": [1, 2, 3], "unit_id": "u"}', "context"),
    ],
)
def test_bad_experiment_acts(client: TestClient, redis_client: redis.Redis, body: str, field: str) -> None:
    make_policies(client)
    client.post("/experiments", json=experiment())
    response = client.post("/act", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500 and response.json()["field"] == field, response.text
    assert (
        redis_client.xlen(eventlog.decisions_key("incumbent")) + redis_client.xlen(eventlog.decisions_key("candidate"))
        == 0
    )


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"control": "c"}, "control", 422),
        ({"variants": [{"name": "a", "policy": "incumbent"}, {"name": "a", "policy": "candidate"}]}, "variants", 422),
        (
            {"variants": [{"name": "a", "policy": "incumbent"}, {"name": "b", "policy": "ghost"}]},
            "variants.1.policy",
            422,
        ),
        (
            {"variants": [{"name": "a", "policy": "incumbent", "weight": 0}, {"name": "b", "policy": "candidate"}]},
            "variants.0.weight",
            422,
        ),
        ({"allocation": "round-robin"}, "allocation", 422),
    ],
)
def test_bad_experiment_definitions(client: TestClient, change: dict, field: str, status: int) -> None:
    make_policies(client)
    response = client.post("/experiments", json=experiment() | change)
    assert response.status_code == status and response.json()["field"] == field, response.text


def test_duplicate_experiment_is_409(client: TestClient) -> None:
    make_policies(client)
    assert client.post("/experiments", json=experiment()).status_code == 201
    assert client.post("/experiments", json=experiment()).status_code == 409


def test_pause_reweight_and_end_are_logged_with_their_time(client_factory: ClientFactory, clock: SkipClock) -> None:
    client = client_factory(clock=clock)
    make_policies(client)
    client.post("/experiments", json=experiment())
    before = time.time() * 1000
    paused = client.patch("/experiments/ab", json={"status": "paused"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    clock.skip(1.1)  # replicas cache definitions for a second
    served = client.post("/act", json={"experiment": "ab", "context": CONTEXT, "unit_id": "anyone"}).json()
    assert (served["variant"], served["variant_probability"]) == ("a", 1.0)
    reweighted = client.patch("/experiments/ab", json={"status": "running", "weights": {"b": 0.8}}).json()
    assert [v["weight"] for v in reweighted["variants"]] == [0.8, 0.8]
    assert client.patch("/experiments/ab", json={"weights": {"zz": 1.0}}).json()["field"] == "weights"
    ended = client.patch("/experiments/ab", json={"status": "ended"}).json()
    changes = ended["changes"]
    assert [c["change"] for c in changes] == ["created", "updated", "updated", "updated"]
    assert [c.get("status") for c in changes[1:]] == ["paused", "running", "ended"]
    assert all(c["ts_ms"] >= before - 1000 for c in changes)
    assert client.patch("/experiments/ab", json={"status": "running"}).status_code == 409


def test_thompson_allocator_moves_traffic_to_the_better_variant(
    client_factory: ClientFactory, clock: SkipClock
) -> None:
    client = client_factory(clock=clock)
    make_policies(client)
    client.post("/experiments", json=experiment("thompson"))
    rng = np.random.default_rng(5)
    chosen = []
    for i in range(300):
        body = client.post("/act", json={"experiment": "ab", "context": CONTEXT}).json()
        chosen.append(body["variant"])
        assert 0 < body["variant_probability"] <= 1
        mean = 1.0 if body["variant"] == "b" else 0.5
        client.post("/reward", json={"event_id": body["event_id"], "reward": float(mean + rng.normal(scale=0.3))})
        if i % 20 == 19:
            clock.skip(1.05)  # let the replica's one-second cache see the new reward statistics
    late_share = Counter(chosen[150:])["b"] / 150
    assert late_share > 0.8, late_share


def test_report_equals_a_numpy_recomputation_from_redis(client: TestClient, redis_client: redis.Redis) -> None:
    make_policies(client, wait_seconds=0.5)
    client.post("/experiments", json=experiment(weights=(0.5, 0.5)))
    rng = np.random.default_rng(9)
    for i in range(120):
        body = client.post(
            "/act", json={"experiment": "ab", "context": rng.normal(size=4).round(3).tolist(), "unit_id": f"u{i}"}
        ).json()
        if i % 5:  # every fifth decision gets no reward: the default 0 after the window
            reward = float((1.0 if body["variant"] == "b" else 0.4) + rng.normal(scale=0.2))
            client.post("/reward", json={"event_id": body["event_id"], "reward": round(reward, 4)})
    time.sleep(0.6)
    report = client.get("/experiments/ab/report").json()

    # Recompute from the raw records: first reward per event, else the default 0.
    rewards_by_variant: dict[str, list[float]] = {"a": [], "b": []}
    for policy in ("incumbent", "candidate"):
        first: dict[str, float] = {}
        for _, fields in redis_client.xrange(eventlog.rewards_key(policy)):
            r = eventlog.RewardRecord.from_fields(fields)
            first.setdefault(r.event_id, r.reward)
        for _, fields in redis_client.xrange(eventlog.decisions_key(policy)):
            d = eventlog.DecisionRecord.from_fields(fields)
            rewards_by_variant[d.variant].append(first.get(d.event_id, 0.0))
    for name, values in rewards_by_variant.items():
        values_np = np.array(values)
        got = report["variants"][name]
        assert got["decisions"] == got["completed"] == len(values)
        assert got["mean_reward"]["mean"] == pytest.approx(values_np.mean(), rel=1e-6)
        half = 1.959964 * values_np.std(ddof=1) / math.sqrt(len(values))
        assert got["mean_reward"]["low"] == pytest.approx(values_np.mean() - half, rel=1e-6)
    a, b = np.array(rewards_by_variant["a"]), np.array(rewards_by_variant["b"])
    lift = report["variants"]["b"]["lift"]
    assert lift["difference"] == pytest.approx(b.mean() - a.mean(), rel=1e-6)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert lift["p_value"] == pytest.approx(math.erfc(abs(b.mean() - a.mean()) / se / math.sqrt(2)), rel=1e-6)
    assert lift["p_value"] < 0.001 and report["variants"]["a"]["lift"] is None
    for name in ("a", "b"):
        estimates = report["variants"][name]["off_policy"]["estimates"]
        assert set(estimates) >= {"ipw", "snipw", "dm", "dr", "sndr"}
        assert estimates["snipw"]["low"] <= estimates["snipw"]["value"] <= estimates["snipw"]["high"]


def test_assign_fixed_is_a_pure_function_of_salt_and_unit() -> None:
    variants = [{"name": "a", "policy": "p", "weight": 1.0}, {"name": "b", "policy": "q", "weight": 3.0}]
    data = {"name": "x", "variants": variants, "allocation": "fixed", "control": "a", "salt": "s1"}
    one, other = Experiment.from_dict(data), Experiment.from_dict(data | {"salt": "s2"})
    picks = [assign_fixed(one, f"u{i}")[0].name for i in range(400)]
    assert picks == [assign_fixed(one, f"u{i}")[0].name for i in range(400)]
    assert picks != [assign_fixed(other, f"u{i}")[0].name for i in range(400)]
    assert assign_fixed(one, "u1")[1] in (0.25, 0.75)
