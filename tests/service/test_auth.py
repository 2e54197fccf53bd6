"""Scoped keys, policy restrictions, rate limits and resource limits."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from tests.service.conftest import LINUCB, ClientFactory

CONTEXT = [0.5, -1.0, 2.0, 0.25]
KEYS = {
    "act": "act-key-0123456789abcdef",
    "reward": "reward-key-0123456789abcdef",
    "read": "read-key-0123456789abcdef",
    "admin": "admin-key-0123456789abcdef",
}
SHOP_ONLY = "shop-only-key-0123456789abcdef"
SLOW = "slow-key-0123456789abcdef"
ROOT = "root-key-0123456789abcdef"

# Every operation of the API and the scope it needs; the test fails when a route is missing here.
SCOPE_OF = {
    ("post", "/act"): "act",
    ("post", "/reward"): "reward",
    ("get", "/policies"): "read",
    ("get", "/policies/{name}"): "read",
    ("post", "/policies"): "admin",
    ("post", "/policies/{name}/rollback"): "admin",
    ("put", "/policies/{name}/mode"): "admin",
    ("post", "/policies/{name}/retrain"): "admin",
    ("post", "/policies/{name}/evaluate"): "admin",
    ("post", "/policies/{name}/promote"): "admin",
    ("get", "/experiments"): "read",
    ("post", "/experiments"): "admin",
    ("get", "/experiments/{name}"): "read",
    ("patch", "/experiments/{name}"): "admin",
    ("get", "/experiments/{name}/report"): "read",
}
OPEN_ROUTES = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}


def scoped_keys() -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = [{"key": key, "scopes": [scope]} for scope, key in KEYS.items()]
    keys.append({"key": SHOP_ONLY, "scopes": ["act", "reward", "read"], "policies": ["shop"]})
    keys.append({"key": SLOW, "scopes": ["read"], "rate_per_second": 2})
    return keys


@pytest.fixture()
def keyed(client_factory: ClientFactory) -> TestClient:
    client = client_factory(admin_key=ROOT, scoped_keys=scoped_keys(), rate_limit_burst_seconds=2.0)
    root = {"authorization": f"Bearer {ROOT}"}
    assert client.post("/policies", json=LINUCB, headers=root).status_code == 201
    assert client.post("/policies", json=LINUCB | {"name": "other"}, headers=root).status_code == 201
    experiment = {
        "name": "exp",
        "variants": [{"name": "a", "policy": "shop"}, {"name": "b", "policy": "other"}],
        "control": "a",
    }
    assert client.post("/experiments", json=experiment, headers=root).status_code == 201
    return client


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def call(client: TestClient, method: str, path: str, key: str | None, event_id: str) -> int:
    """One call of an operation with a well-formed body; returns the status code."""
    concrete = path.replace("{name}", "exp" if path.startswith("/experiments") else "shop")
    bodies = {
        "/act": {"policy": "shop", "context": CONTEXT},
        "/reward": {"event_id": event_id, "reward": 1.0},
        "/policies": LINUCB | {"name": "third"},
        "/policies/shop/rollback": {"to": "1.0"},
        "/policies/shop/mode": {"mode": "online"},
        "/policies/shop/retrain": {},
        "/policies/shop/evaluate": {},
        "/policies/shop/promote": {"version": "1.0"},
        "/experiments": {"name": "exp2", "variants": [{"name": "a", "policy": "shop"}], "control": "a"},
        "/experiments/exp": {"status": "paused"},
    }
    headers = {} if key is None else bearer(key)
    body = bodies.get(concrete) if method != "get" else None
    return client.request(method.upper(), concrete, json=body, headers=headers).status_code


@pytest.mark.slow
def test_every_route_rejects_missing_wrong_and_wrongly_scoped_keys(keyed: TestClient) -> None:
    operations = {(m, p) for p, ops in keyed.get("/openapi.json").json()["paths"].items() for m in ops}
    assert operations - OPEN_ROUTES == set(SCOPE_OF), "a route without a declared scope"
    event_id = keyed.post("/act", json={"policy": "shop", "context": CONTEXT}, headers=bearer(ROOT)).json()["event_id"]
    for (method, path), scope in SCOPE_OF.items():
        assert call(keyed, method, path, None, event_id) == 401, (method, path, "missing")
        assert call(keyed, method, path, "not-a-key-0123456789abcdef", event_id) == 401, (method, path, "wrong")
        for other_scope, key in KEYS.items():
            status = call(keyed, method, path, key, event_id)
            if other_scope in (scope, "admin"):
                assert status not in (401, 403), (method, path, other_scope, status)
            else:
                assert status == 403, (method, path, other_scope, status)
    for method, path in OPEN_ROUTES:
        assert call(keyed, method, path, None, event_id) in (200, 503)


def test_a_key_restricted_to_a_policy_sees_and_uses_only_that_policy(keyed: TestClient) -> None:
    shop_key = bearer(SHOP_ONLY)
    assert keyed.post("/act", json={"policy": "shop", "context": CONTEXT}, headers=shop_key).status_code == 200
    refused = keyed.post("/act", json={"policy": "other", "context": CONTEXT}, headers=shop_key)
    assert refused.status_code == 403 and "'other'" in refused.json()["message"]
    # The experiment can route to "other": a shop-only key may not use it.
    assert keyed.post("/act", json={"experiment": "exp", "context": CONTEXT}, headers=shop_key).status_code == 403
    assert keyed.get("/experiments/exp", headers=shop_key).status_code == 403
    assert keyed.get("/experiments", headers=shop_key).json() == []
    assert [p["name"] for p in keyed.get("/policies", headers=shop_key).json()["policies"]] == ["shop"]
    assert keyed.get("/policies/other", headers=shop_key).status_code == 403
    other_event = keyed.post("/act", json={"policy": "other", "context": CONTEXT}, headers=bearer(ROOT)).json()
    reward = keyed.post("/reward", json={"event_id": other_event["event_id"], "reward": 1.0}, headers=shop_key)
    assert reward.status_code == 404  # as if unknown: the key learns nothing about other policies


@pytest.mark.slow
def test_rate_limit_per_key_answers_429_with_retry_after(keyed: TestClient) -> None:
    statuses = [keyed.get("/policies/shop", headers=bearer(SLOW)).status_code for _ in range(12)]
    assert statuses[:4] == [200] * 4  # 2 requests/s, 2 seconds of burst
    assert statuses.count(429) >= 6
    limited = keyed.get("/policies/shop", headers=bearer(SLOW))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"] == "rate_limited" and limited.json()["retryable"] is True
    assert keyed.get("/policies/shop", headers=bearer(KEYS["read"])).status_code == 200  # other keys unaffected
    assert 'serving_refused_requests_total{reason="rate_limited"}' in keyed.get("/metrics").text


@pytest.mark.slow
def test_no_key_appears_in_logs_or_metrics(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    event_id = keyed.post("/act", json={"policy": "shop", "context": CONTEXT}, headers=bearer(ROOT)).json()["event_id"]
    for (method, path), _ in SCOPE_OF.items():
        for key in [*KEYS.values(), SHOP_ONLY, "wrong-key-0123456789abcdef"]:
            call(keyed, method, path, key, event_id)
    for _ in range(8):
        keyed.get("/policies/shop", headers=bearer(SLOW))
    exposed = caplog.text + keyed.get("/metrics").text
    assert caplog.records, "nothing was logged: the check would be empty"
    for key in [*KEYS.values(), SHOP_ONLY, SLOW, ROOT, "wrong-key-0123456789abcdef"]:
        assert key not in exposed


def test_limits_on_policies_experiments_and_shapes(client_factory: ClientFactory, redis_client: redis.Redis) -> None:
    client = client_factory(max_policies=2, max_experiments=1, max_context_dim=8, max_actions=5)
    assert client.post("/policies", json=LINUCB).status_code == 201
    wide = client.post("/policies", json=LINUCB | {"name": "wide", "context_dim": 9})
    assert wide.status_code == 422 and wide.json()["field"] == "context_dim"
    many = client.post("/policies", json=LINUCB | {"name": "many", "num_actions": 6})
    assert many.status_code == 422 and many.json()["field"] == "num_actions"
    assert client.post("/policies", json=LINUCB | {"name": "second"}).status_code == 201
    third = client.post("/policies", json=LINUCB | {"name": "third"})
    assert third.status_code == 409 and third.json()["error"] == "limit_reached"
    assert redis_client.hlen(eventlog.POLICIES) == 2
    variants = [{"name": "a", "policy": "shop"}, {"name": "b", "policy": "second"}]
    experiment = {"name": "e1", "variants": variants, "control": "a"}
    assert client.post("/experiments", json=experiment).status_code == 201
    second = client.post("/experiments", json=experiment | {"name": "e2"})
    assert second.status_code == 409 and second.json()["field"] == "name"
