"""/act with candidate sets, named features and excluded actions: answers, and clear 422s."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

import eventlog
from tests.service.test_api import stored_counts

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

FEATURES = [
    {"name": "age", "type": "numeric", "default": 30.0},
    {"name": "country", "type": "categorical", "vocabulary": ["de", "fr"]},
    {"name": "device", "type": "categorical", "hash_buckets": 8, "default": "web"},
]
ITEMS = [
    {"name": "price", "type": "numeric", "normalize": True},
    {"name": "brand", "type": "categorical", "hash_buckets": 4},
]
CANDIDATES = [{"id": f"sku-{k}", "features": {"price": 9.5 + k, "brand": f"b{k}"}} for k in range(7)]


@pytest.fixture()
def shelf(client: TestClient) -> TestClient:
    """Serves "shelf" (named context and candidates, at most 10) and "vec" (vector candidates, f=3)."""
    for body in (
        {"name": "shelf", "algorithm": "linucb", "features": FEATURES, "action_features": ITEMS, "max_candidates": 10},
        {"name": "vec", "algorithm": "lints", "context_dim": 2, "action_feature_dim": 3},
        {"name": "fixed", "algorithm": "linucb", "features": FEATURES, "num_actions": 4},
    ):
        response = client.post("/policies", json=body)
        assert response.status_code == 201, response.text
    return client


def test_candidate_sets_answer_with_the_chosen_id_and_log_every_candidate(
    shelf: TestClient, redis_client: redis.Redis
) -> None:
    body = {"policy": "shelf", "context": {"age": 41, "country": "fr"}, "actions": CANDIDATES}
    for greedy in (False, True):
        response = shelf.post("/act", json=body | {"greedy": greedy, "excluded": ["sku-0", "sku-3"]})
        assert response.status_code == 200, response.text
        decision = response.json()
        assert decision["action"] == CANDIDATES[decision["action_index"]]["id"]
        assert decision["action"] not in ("sku-0", "sku-3") and len(decision["scores"]) == 7
    one = shelf.post("/act", json=body | {"actions": CANDIDATES[:1]}).json()
    assert (one["action"], one["action_index"], one["propensity"]) == ("sku-0", 0, 1.0)
    vec = shelf.post(
        "/act", json={"policy": "vec", "context": [0.1, 0.2], "actions": [{"id": "a", "features": [1, 2, 3]}] * 1}
    )
    assert vec.status_code == 200 and vec.json()["action"] == "a"
    _, fields = redis_client.xrange(eventlog.decisions_key("shelf"), count=1)[0]
    record = eventlog.DecisionRecord.from_fields(fields)
    assert record.context == [41.0] and record.context_categorical == ["fr", "web"]  # device took its default
    assert record.candidates == [c["id"] for c in CANDIDATES]
    assert record.action_features == [[9.5 + k] for k in range(7)]
    assert record.action_categorical == [[f"b{k}"] for k in range(7)]
    assert record.mask == [False, True, True, False, True, True, True]


def test_excluded_actions_of_a_fixed_set(shelf: TestClient) -> None:
    chosen = {
        shelf.post("/act", json={"policy": "fixed", "context": {"country": "de"}, "excluded": [0, 2, 3]}).json()[
            "action"
        ]
        for _ in range(20)
    }
    assert chosen == {1}


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"policy": "shelf", "context": {"age": "old", "country": "de"}}, 422, "context.age", "number"),
        ({"policy": "shelf", "context": {"country": 3}}, 422, "context.country", "string"),
        ({"policy": "shelf", "context": {"country": "de", "agee": 3}}, 422, "context.agee", "unknown feature"),
        ({"policy": "shelf", "context": {"age": 3}}, 422, "context.country", "missing"),
        ({"policy": "shelf", "context": [1.0, 2.0]}, 422, "context", "named features"),
        ({"policy": "vec", "context": {"a": 1.0}}, 422, "context", "vector of 2"),
        ({"policy": "shelf", "context": {"country": "de"}}, 422, "actions", "candidates"),
        ({"policy": "fixed", "context": {"country": "de"}, "actions": CANDIDATES}, 422, "actions", "fixed set"),
        ({"policy": "shelf", "context": {"country": "de"}, "actions": CANDIDATES * 2}, 422, "actions", "at most 10"),
        (
            {"policy": "shelf", "context": {"country": "de"}, "actions": [CANDIDATES[0], CANDIDATES[0]]},
            422,
            "actions[1].id",
            "twice",
        ),
        (
            {"policy": "shelf", "context": {"country": "de"}, "actions": [{"id": "x", "features": {"price": 1.0}}]},
            422,
            "actions[0].features.brand",
            "missing",
        ),
        (
            {"policy": "shelf", "context": {"country": "de"}, "actions": [{"id": "x", "features": {"price": "1"}}]},
            422,
            "actions[0].features.price",
            "number",
        ),
        (
            {"policy": "vec", "context": [0.1, 0.2], "actions": [{"id": "x", "features": [1.0]}]},
            422,
            "actions[0].features",
            "expected 3",
        ),
        (
            {
                "policy": "vec",
                "context": [0.1, 0.2],
                "actions": [{"id": "x", "features": [1.0, 2.0, 3.0]}, {"id": "y", "features": [1.0, 1e39, 3.0]}],
            },
            422,
            "actions[1].features",
            "index 1 overflows float32",
        ),
        (
            {"policy": "shelf", "context": {"country": "de"}, "actions": CANDIDATES, "excluded": ["nope"]},
            422,
            "excluded",
            "not the id",
        ),
        (
            {"policy": "shelf", "context": {"country": "de"}, "actions": CANDIDATES[:1], "excluded": ["sku-0"]},
            422,
            "excluded",
            "every candidate",
        ),
        (
            {"policy": "shelf", "context": {"country": "de"}, "actions": CANDIDATES, "mask": [True] * 7},
            422,
            "mask",
            "excluded",
        ),
        ({"policy": "fixed", "context": {"country": "de"}, "excluded": [4]}, 422, "excluded", "action index"),
        ({"policy": "fixed", "context": {"country": "de"}, "excluded": [0, 1, 2, 3]}, 422, "excluded", "every"),
    ],
)
def test_bad_inputs_are_422_naming_the_feature_and_store_nothing(
    shelf: TestClient, redis_client: redis.Redis, body: dict, status: int, field: str, words: str
) -> None:
    before = [stored_counts(redis_client, p) for p in ("shelf", "vec", "fixed")]
    response = shelf.post("/act", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field and words in error["message"], error
    assert [stored_counts(redis_client, p) for p in ("shelf", "vec", "fixed")] == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"features": [{"name": "a", "type": "numeric", "vocabulary": ["x"]}], "num_actions": 3},
            "features[0].vocabulary",
        ),
        ({"features": [{"name": "a", "type": "categorical"}], "num_actions": 3}, "features[0]"),
        (
            {"features": [{"name": "a", "type": "categorical", "hash_buckets": 0}], "num_actions": 3},
            "features[0].hash_buckets",
        ),
        ({"features": [{"name": "a", "type": "text"}], "num_actions": 3}, "features[0].type"),
        (
            {"features": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}], "num_actions": 3},
            "features[1].name",
        ),
        ({"context_dim": 2, "features": [{"name": "a", "type": "numeric"}], "num_actions": 3}, "context_dim"),
        ({"context_dim": 2}, "num_actions"),
        ({"context_dim": 2, "action_feature_dim": 2, "num_actions": 3}, "num_actions"),
        ({"context_dim": 2, "action_feature_dim": 2, "max_candidates": 5000}, "max_candidates"),
        (
            {"context_dim": 2, "action_features": [{"name": "p", "type": "numeric", "default": "x"}]},
            "action_features[0].default",
        ),
    ],
)
def test_bad_feature_schemas_are_422_naming_the_entry(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/policies", json={"name": "bad", "algorithm": "linucb"} | body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.json()


def test_dqn_takes_no_candidates(client: TestClient) -> None:
    response = client.post(
        "/policies", json={"name": "q", "algorithm": "dqn", "context_dim": 2, "action_feature_dim": 2}
    )
    assert response.status_code == 422 and response.json()["field"] == "algorithm"


def test_apprentice_mode_serves_the_baseline_and_logs_the_policys_choice(
    client: TestClient, redis_client: redis.Redis
) -> None:
    created = client.post(
        "/policies",
        json={"name": "appr", "algorithm": "linucb", "context_dim": 2, "action_feature_dim": 1, "mode": "apprentice"},
    )
    assert created.status_code == 201, created.text
    assert (created.json()["mode"], created.json()["baseline"]) == ("apprentice", 0)
    actions = [{"id": f"a{k}", "features": [float(k)]} for k in range(5)]
    body = {"policy": "appr", "context": [1.0, -1.0], "actions": actions, "excluded": ["a0"]}
    for _ in range(5):
        decision = client.post("/act", json=body).json()
        # The baseline (the first candidate) is excluded: the first allowed one after it is served.
        assert (decision["action"], decision["propensity"], decision["mode"]) == ("a1", 1.0, "apprentice")
    records = [eventlog.DecisionRecord.from_fields(f) for _, f in redis_client.xrange(eventlog.decisions_key("appr"))]
    assert all(r.action == 1 and r.propensity == 1.0 and r.apprentice is not None for r in records)
    assert {r.apprentice["action"] for r in records} <= {1, 2, 3, 4}  # type: ignore[index]
    switched = client.put("/policies/appr/mode", json={"mode": "online"})
    assert switched.status_code == 200 and switched.json()["mode"] == "online"
    online = client.post("/act", json=body).json()
    assert "mode" not in online or online["mode"] is None
    no_baseline = client.post(
        "/policies", json={"name": "plain", "algorithm": "linucb", "context_dim": 2, "num_actions": 3}
    )
    assert no_baseline.status_code == 201
    refused = client.put("/policies/plain/mode", json={"mode": "apprentice"})
    assert refused.status_code == 422 and refused.json()["field"] == "mode"


def test_experiment_report_over_candidate_sets_estimates_the_variants_and_the_baseline(client: TestClient) -> None:
    for name in ("cand-a", "cand-b"):
        body = {"name": name, "algorithm": "linucb", "context_dim": 2, "action_feature_dim": 2}
        assert client.post("/policies", json=body).status_code == 201
    experiment = {
        "name": "cands",
        "variants": [{"name": "a", "policy": "cand-a"}, {"name": "b", "policy": "cand-b"}],
        "control": "a",
    }
    assert client.post("/experiments", json=experiment).status_code == 201
    for t in range(40):
        actions = [{"id": f"i{k}", "features": [float(k), float((t + k) % 3)]} for k in range(2 + t % 4)]
        decision = client.post(
            "/act", json={"experiment": "cands", "unit_id": f"u{t}", "context": [1.0, t / 40], "actions": actions}
        ).json()
        client.post("/reward", json={"event_id": decision["event_id"], "reward": float(decision["action_index"] == 0)})
    report = client.get("/experiments/cands/report")
    assert report.status_code == 200, report.text
    body = report.json()
    for variant in ("a", "b"):
        estimates = body["variants"][variant]["off_policy"]["estimates"]
        assert set(estimates) == {"ipw", "snipw", "dm", "dr", "sndr"}
    # The baseline (always the first candidate) earned every reward there was: its SNIPW is 1.
    baseline = body["baseline"]
    assert baseline["action"] == 0
    assert baseline["off_policy"]["estimates"]["snipw"]["value"] == pytest.approx(1.0)


def test_dqn_takes_numeric_named_features_only(client: TestClient) -> None:
    numeric = [{"name": "position", "type": "numeric", "normalize": True}, {"name": "speed", "type": "numeric"}]
    created = client.post("/policies", json={"name": "q", "algorithm": "dqn", "features": numeric, "num_actions": 2})
    assert created.status_code == 201 and created.json()["context_dim"] == 2
    act = client.post("/act", json={"policy": "q", "context": {"position": 0.1, "speed": -2.0}, "session_id": "s1"})
    assert act.status_code == 200 and act.json()["action"] in (0, 1)
    categorical = [{"name": "lane", "type": "categorical", "hash_buckets": 4}]
    refused = client.post(
        "/policies", json={"name": "q2", "algorithm": "dqn", "features": categorical, "num_actions": 2}
    )
    assert refused.status_code == 422 and refused.json()["field"] == "features"


def test_named_schemas_without_categorical_features(client: TestClient) -> None:
    body = {
        "name": "numeric",
        "algorithm": "lints",
        "features": [{"name": "age", "type": "numeric"}],
        "action_features": [{"name": "price", "type": "numeric", "normalize": True}],
    }
    assert client.post("/policies", json=body).status_code == 201
    actions = [{"id": "a", "features": {"price": 1.0}}, {"id": "b", "features": {"price": 2.0}}]
    for greedy in (False, True):
        response = client.post(
            "/act", json={"policy": "numeric", "context": {"age": 3}, "actions": actions, "greedy": greedy}
        )
        assert response.status_code == 200, response.text
        assert response.json()["action"] in ("a", "b")
