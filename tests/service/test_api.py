"""The HTTP API against a real Redis: status codes, bodies, stored records."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from tests.service.conftest import LINUCB, ClientFactory

CONTEXT = [0.5, -1.0, 0.25, 2.0]


def stored_counts(r: redis.Redis, policy: str = "shop") -> tuple[int, int, dict]:
    return (
        r.xlen(eventlog.decisions_key(policy)),
        r.xlen(eventlog.rewards_key(policy)),
        r.hgetall(eventlog.stats_key(policy)),
    )


def test_health_ready_and_metrics(shop: TestClient) -> None:
    assert shop.get("/healthz").json() == {"status": "ok", "detail": {}}
    assert shop.get("/readyz").json() == {"status": "ready", "detail": {"policies": 1}}
    shop.post("/act", json={"policy": "shop", "context": CONTEXT})
    text = shop.get("/metrics").text
    assert 'serving_requests_total{method="POST",route="/act",status="200"} 1.0' in text
    assert 'serving_decisions_total{policy="shop",variant="collect"} 1.0' in text
    assert 'serving_live_version{policy="shop"} 1.0' in text
    assert "serving_batch_size_bucket" in text and "serving_request_duration_seconds_bucket" in text


@pytest.mark.slow
def test_create_list_and_get_policies(client: TestClient) -> None:
    created = client.post(
        "/policies",
        json=LINUCB
        | {
            "hyperparameters": {"alpha": 0.5},
            "exploration": {"epsilon": 0.1},
            "reward": {"wait_seconds": 30, "default": -1, "aggregation": "sum"},
        },
    )
    assert created.status_code == 201
    body = created.json()
    assert body["live_version"] == "1.0" and body["versions"] == [1]
    assert body["hyperparameters"] == {"alpha": 0.5, "ridge": 1.0, "epsilon": 0.1}
    assert body["reward"] == {"wait_seconds": 30.0, "default": -1.0, "aggregation": "sum"}
    assert (body["decisions"], body["rewards"]) == (0, 0)
    ts = client.post("/policies", json={"name": "ts-1", "algorithm": "lints", "context_dim": 2, "num_actions": 4})
    assert ts.status_code == 201 and ts.json()["hyperparameters"]["propensity_samples"] == 256
    assert [p["name"] for p in client.get("/policies").json()["policies"]] == ["shop", "ts-1"]
    assert client.get("/policies/ts-1").json()["algorithm"] == "lints"
    missing = client.get("/policies/nope")
    assert missing.status_code == 404 and missing.json()["field"] == "policy"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"algorithm": "ucb9"}, "algorithm"),
        ({"context_dim": "4"}, "context_dim"),
        ({"context_dim": 0}, "context_dim"),
        ({"num_actions": 1.5}, "num_actions"),
        ({"hyperparameters": {"alpha": -1}}, "hyperparameters.alpha"),
        ({"hyperparameters": {"gamma": 1}}, "hyperparameters.gamma"),
        ({"exploration": {"epsilon": 0}}, "exploration.epsilon"),
        ({"exploration": {"propensity_samples": 64}}, "exploration.propensity_samples"),
        ({"reward": {"aggregation": "max"}}, "reward.aggregation"),
        ({"reward": {"wait_seconds": -1}}, "reward.wait_seconds"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_policy_definitions_are_422_naming_the_field(
    client: TestClient, redis_client: redis.Redis, change: dict, field: str
) -> None:
    response = client.post("/policies", json=LINUCB | change)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["message"].startswith(field) and body["retryable"] is False
    assert redis_client.hlen(eventlog.POLICIES) == 0


def test_duplicate_policy_name_is_409_and_keeps_the_first(shop: TestClient, redis_client: redis.Redis) -> None:
    shop.post("/act", json={"policy": "shop", "context": CONTEXT})
    again = shop.post("/policies", json=LINUCB | {"num_actions": 7})
    assert again.status_code == 409 and again.json()["field"] == "name"
    info = shop.get("/policies/shop").json()
    assert info["num_actions"] == 3 and info["decisions"] == 1 and info["versions"] == [1]


def test_act_returns_a_decision_and_logs_it_exactly(shop: TestClient, redis_client: redis.Redis) -> None:
    response = shop.post(
        "/act", json={"policy": "shop", "context": CONTEXT, "mask": [True, False, True], "unit_id": "u-1"}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"event_id", "action", "propensity", "policy", "version", "scores"}
    assert body["policy"] == "shop" and body["version"] == "1.0" and body["action"] in (0, 2)
    # Untrained LinUCB: all UCB scores tie, so argmax is action 0 and epsilon=0.05 over 2 allowed.
    assert body["propensity"] == pytest.approx(0.975 if body["action"] == 0 else 0.025)
    assert len(body["scores"]) == 3
    [(_, fields)] = redis_client.xrange(eventlog.decisions_key("shop"))
    record = eventlog.DecisionRecord.from_fields(fields)
    assert record.event_id == body["event_id"] and record.policy == "shop" and record.version == "1.0"
    assert record.context == CONTEXT and record.mask == [True, False, True] and record.unit_id == "u-1"
    assert record.action == body["action"] and record.propensity == pytest.approx(body["propensity"])
    assert record.scores == pytest.approx(body["scores"]) and record.greedy is False
    assert abs(record.ts_ms - time.time() * 1000) < 60_000


def test_greedy_propensity_is_one(shop: TestClient) -> None:
    body = shop.post("/act", json={"policy": "shop", "context": CONTEXT, "greedy": True}).json()
    assert body["propensity"] == 1.0 and body["action"] == 0


def test_mask_is_honoured(shop: TestClient) -> None:
    actions = {
        shop.post("/act", json={"policy": "shop", "context": CONTEXT, "mask": [False, True, False]}).json()["action"]
        for _ in range(20)
    }
    assert actions == {1}


@pytest.mark.slow
def test_event_id_makes_act_idempotent(shop: TestClient, redis_client: redis.Redis) -> None:
    request = {"policy": "shop", "context": CONTEXT, "event_id": "order-17"}
    first = shop.post("/act", json=request)
    second = shop.post("/act", json=request | {"context": [9.0, 9.0, 9.0, 9.0]})
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() and first.json()["event_id"] == "order-17"
    assert redis_client.xlen(eventlog.decisions_key("shop")) == 1
    assert shop.get("/policies/shop").json()["decisions"] == 1
    shop.post("/policies", json=LINUCB | {"name": "other"})
    clash = shop.post("/act", json=request | {"policy": "other"})
    assert clash.status_code == 409 and clash.json()["field"] == "event_id"


BAD_ACTS = [
    ('{"policy": "shop", "context": [1, 2, 3]}', 422, "context"),
    ('{"policy": "shop", "context": [NaN, 1, 2, 3]}', 422, "context.0"),
    ('{"policy": "shop", "context": [1, Infinity, 2, 3]}', 422, "context.1"),
    ('{"policy": "shop", "context": [1, 2, 1e39, 3]}', 422, "context"),
    ('{"policy": "shop", "context": [1, 2, "3", 4]}', 422, "context.2"),
    ('{"policy": "shop", "context": [1, 2, true, 4]}', 422, "context.2"),
    ('{"policy": "shop", "context": "1,2,3,4"}', 422, "context"),
    ('{"policy": "shop"}', 422, "context"),
    ('{"policy": "nope", "context": [1, 2, 3, 4]}', 404, "policy"),
    ('{"policy": "Shop!", "context": [1, 2, 3, 4]}', 422, "policy"),
    ('{"policy": "shop", "context": [1, 2, 3, 4], "mask": [true, false]}', 422, "mask"),
    ('{"policy": "shop", "context": [1, 2, 3, 4], "mask": [false, false, false]}', 422, "mask"),
    ('{"policy": "shop", "context": [1, 2, 3, 4], "mask": [1, 0, 1]}', 422, "mask.0"),
    ('{"policy": "shop", "context": [1, 2, 3, 4], "greedy": "yes"}', 422, "greedy"),
    ('{"policy": "shop", "context": [1, 2, 3, 4], "event_id": "has space"}', 422, "event_id"),
    ('{"policy": "shop", "context": [1, 2, 3, 4], "extra": 1}', 422, "extra"),
    ('{"policy": "shop", "context": [1, 2, 3, 4]', 422, "body"),
    ("[]", 422, "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_ACTS)
def test_bad_act_input_is_4xx_naming_the_field_and_stores_nothing(
    shop: TestClient, redis_client: redis.Redis, body: str, status: int, field: str
) -> None:
    before = stored_counts(redis_client)
    response = shop.post("/act", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field, error
    assert error["message"] and error["retryable"] is False
    assert stored_counts(redis_client) == before


def test_rewards_earliest_duplicates_and_unknown(shop: TestClient, redis_client: redis.Redis) -> None:
    event = shop.post("/act", json={"policy": "shop", "context": CONTEXT}).json()["event_id"]
    first = shop.post("/reward", json={"event_id": event, "reward": 1.5})
    assert first.status_code == 202 and first.json() == {
        "event_id": event,
        "accepted": True,
        "detail": "first reward",
        "spooled": False,
    }
    second = shop.post("/reward", json={"event_id": event, "reward": 3})
    assert second.status_code == 202 and second.json()["accepted"] is False
    unknown = shop.post("/reward", json={"event_id": "never-seen", "reward": 1})
    assert unknown.status_code == 404 and unknown.json()["field"] == "event_id"
    records = [eventlog.RewardRecord.from_fields(f) for _, f in redis_client.xrange(eventlog.rewards_key("shop"))]
    assert [(r.event_id, r.reward, r.sequence, r.late) for r in records] == [
        (event, 1.5, 1, False),
        (event, 3.0, 2, False),
    ]
    info = shop.get("/policies/shop").json()
    assert (info["decisions"], info["rewards"], info["duplicate_rewards"], info["late_rewards"]) == (1, 2, 1, 0)


def test_rewards_sum_accepts_every_reward(client: TestClient) -> None:
    client.post("/policies", json=LINUCB | {"reward": {"aggregation": "sum"}})
    event = client.post("/act", json={"policy": "shop", "context": CONTEXT}).json()["event_id"]
    bodies = [client.post("/reward", json={"event_id": event, "reward": r}).json() for r in (1, 2)]
    assert [b["accepted"] for b in bodies] == [True, True]
    assert client.get("/policies/shop").json()["duplicate_rewards"] == 0


def test_late_reward_is_409_and_kept_marked_late(client: TestClient, redis_client: redis.Redis) -> None:
    client.post("/policies", json=LINUCB | {"reward": {"wait_seconds": 0.2}})
    event = client.post("/act", json={"policy": "shop", "context": CONTEXT}).json()["event_id"]
    time.sleep(0.3)
    late = client.post("/reward", json={"event_id": event, "reward": 1})
    assert late.status_code == 409
    assert late.json()["error"] == "late_reward" and "window" in late.json()["message"]
    [(_, fields)] = redis_client.xrange(eventlog.rewards_key("shop"))
    assert eventlog.RewardRecord.from_fields(fields).late is True
    assert client.get("/policies/shop").json()["late_rewards"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"event_id": "e1", "reward": "1"}', "reward"),
        ('{"event_id": "e1", "reward": true}', "reward"),
        ('{"event_id": "e1", "reward": NaN}', "reward"),
        ('{"event_id": "e1", "reward": 1e300}', "reward"),
        ('{"event_id": "e1"}', "reward"),
        ('{"reward": 1}', "event_id"),
    ],
)
def test_bad_rewards_are_422_and_store_nothing(
    shop: TestClient, redis_client: redis.Redis, body: str, field: str
) -> None:
    shop.post("/act", json={"policy": "shop", "context": CONTEXT, "event_id": "e1"})
    before = stored_counts(redis_client)
    response = shop.post("/reward", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["field"] == field, response.text
    assert stored_counts(redis_client) == before


def test_body_over_the_limit_is_413(client_factory: ClientFactory, redis_client: redis.Redis) -> None:
    client = client_factory(max_body_bytes=2000)
    client.post("/policies", json=LINUCB)
    big = {"policy": "shop", "context": CONTEXT, "unit_id": "u" * 200, "padding": "x" * 3000}
    response = client.post("/act", json=big)
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"

    def chunks():  # no Content-Length: the limit counts the stream
        yield b'{"policy": "shop", "context": [' + b"1.0, " * 600
        yield b"1.0]}"

    streamed = client.post("/act", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert redis_client.xlen(eventlog.decisions_key("shop")) == 0


def test_auth_keys(client_factory: ClientFactory) -> None:
    client = client_factory(api_keys="k1,k2", admin_key="root")
    ok_admin = {"authorization": "Bearer root"}
    assert client.post("/policies", json=LINUCB).status_code == 401
    assert client.post("/policies", json=LINUCB, headers={"authorization": "Bearer k1"}).status_code == 403
    assert client.post("/policies", json=LINUCB, headers=ok_admin).status_code == 201
    act = {"policy": "shop", "context": CONTEXT}
    missing = client.post("/act", json=act)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.post("/act", json=act, headers={"authorization": "Bearer k3"}).status_code == 401
    assert client.post("/act", json=act, headers={"authorization": "Basic k1"}).status_code == 401
    event = client.post("/act", json=act, headers={"authorization": "Bearer k2"}).json()["event_id"]
    assert client.post("/reward", json={"event_id": event, "reward": 1}).status_code == 401
    assert (
        client.post(
            "/reward", json={"event_id": event, "reward": 1}, headers={"authorization": "Bearer k1"}
        ).status_code
        == 202
    )
    assert client.get("/healthz").status_code == 200


def test_auth_off_by_default(shop: TestClient) -> None:
    assert shop.post("/act", json={"policy": "shop", "context": CONTEXT}).status_code == 200


def test_restart_keeps_policies_versions_and_counts(client_factory: ClientFactory, redis_client: redis.Redis) -> None:
    first = client_factory()
    first.post("/policies", json=LINUCB)
    decided = first.post("/act", json={"policy": "shop", "context": CONTEXT, "greedy": True}).json()
    first.__exit__(None, None, None)  # the service stops
    second = client_factory()
    info = second.get("/policies/shop").json()
    assert info["live_version"] == "1.0" and info["versions"] == [1] and info["decisions"] == 1
    again = second.post("/act", json={"policy": "shop", "context": CONTEXT, "greedy": True}).json()
    assert again["scores"] == decided["scores"] and again["version"] == decided["version"]
    assert second.get("/readyz").status_code == 200
    assert redis_client.xlen(eventlog.decisions_key("shop")) == 2


def test_openapi_documents_every_schema_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for name in ("ActResponse", "RewardResponse", "PolicyCreate", "PolicyInfo", "RollbackRequest"):
        assert name in components, name
    for name in ("ActResponse", "RewardResponse", "PolicyCreate", "RollbackRequest"):
        assert components[name].get("examples"), name
    for path in ("/act", "/reward"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["examples"] and body["required"], path
    assert {"/act", "/reward", "/policies", "/policies/{name}", "/healthz", "/readyz", "/metrics"} <= set(
        schema["paths"]
    )
    assert client.get("/docs").status_code == 200
