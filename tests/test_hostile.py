"""Hostile input against a running `banditd serve`: schemathesis over the whole OpenAPI schema
(with and without credentials), and hand-made malicious /act bodies. No 5xx, no response
that breaks the schema, and nothing already logged is lost."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

import eventlog
from service.embedded_redis import free_port
from tests.processes import start_banditd, wait_ready

pytestmark = pytest.mark.slow  # real banditd processes

ADMIN = "hostile-admin-key-0123456789"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture()
def service(redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "wb")
    settings = {"BANDIT_ADMIN_KEY": ADMIN, "BANDIT_MAX_POLICIES": "3", "BANDIT_MAX_EXPERIMENTS": "3"}
    settings |= {"BANDIT_MAX_MODEL_BYTES": str(64 << 20), "BANDIT_DEMO_POLICY": "true"}
    process = start_banditd("serve", port, tmp_path, redis_url, log, **settings)
    try:
        wait_ready(url, process)
        yield url
        assert process.poll() is None, "the service died"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()
        served = (tmp_path / "serve.log").read_text(errors="replace")
        assert "Traceback" not in served, served[-3000:]


def schemathesis(url: str, cwd: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    st = str(Path(sys.executable).with_name("st"))
    command = [st, "run", f"{url}/openapi.json", "--checks", CHECKS, "--max-examples", "25", "--seed", "7"]
    command += ["--phases", "examples,coverage,fuzzing", "--no-color", "--request-timeout", "60"]
    for header in headers:
        command += ["--header", header]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=cwd)


def test_schemathesis_finds_no_5xx_and_no_schema_violation(service: str, redis_url: str, tmp_path: Path) -> None:
    admin = {"authorization": f"Bearer {ADMIN}"}
    decided = httpx.post(f"{service}/act", json={"policy": "demo", "context": [0.1] * 16}, headers=admin).json()
    for run in (schemathesis(service, tmp_path), schemathesis(service, tmp_path, f"Authorization: Bearer {ADMIN}")):
        print(run.stdout[-2500:])
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    client = redis.Redis.from_url(redis_url)
    first = client.xrange(eventlog.decisions_key("demo"), count=1)
    assert first and first[0][1][b"event_id"].decode() == decided["event_id"]  # what was logged is intact
    client.close()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BODIES = [
    ('{"policy": "demo", "context": [' + ",".join(["0.5"] * 200_000) + "]}", (413, 422)),
    ('{"policy": "demo", "context": ' + nested(100_000) + "}", (413, 422)),
    ('{"policy": "demo", "context": [1e309' + ",0" * 15 + "]}", (422,)),
    ('{"policy": "demo", "context": [3.5e38' + ",0" * 15 + "]}", (422,)),
    ('{"policy": "demo", "context": [-1.7976931348623157e308' + ",0" * 15 + "]}", (422,)),
    ('{"policy": "demo", "context": [5e-324' + ",0" * 15 + "]}", (200,)),
    ('{"policy": "demo", "context": [1' + ",0" * 15 + "]}", (200, 422)),
    ('{"policy": "demo", "policy": "dem\\u00f6", "context": [0' + ",0" * 15 + "]}", (422,)),
    ('{"policy": "demo", "context": [0' + ",0" * 15 + '], "event_id": "\\u65e5\\u672c\\ud83d\\ude00"}', (422,)),
    ('{"policy": "demo", "context": [0' + ",0" * 15 + '], "unit_id": "\\u65e5\\u672c\\ud83d\\ude00"}', (200,)),
    ('{"policy": "demo", "context": [0' + ",0" * 15 + '], "event_id": "\\ud800"}', (422,)),
    ('{"policy": "\\u0000", "context": [0]}', (422,)),
    ('{"policy": "demo", "context": {"a": 1}}', (422,)),
    ('{"policy": "demo", "context": "' + "x" * 500_000 + '"}', (422,)),
    (
        '{"policy": "demo", "context": [' + ",".join(["1"] * 16) + '], "mask": [' + ",".join(["false"] * 10) + "]}",
        (422,),
    ),
    ("\xff\xfe not json", (422,)),
    ("", (422,)),
    ("null", (422,)),
    ('{"policy": "demo", "context": [0' + ",0" * 15 + "]" + " " * 100 + "}", (200,)),
]


def test_malicious_act_bodies_get_clear_4xx(service: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    before = client.xlen(eventlog.decisions_key("demo"))
    accepted = 0
    admin = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    for body, expected in BODIES:
        response = httpx.post(
            f"{service}/act", content=body.encode("utf-8", "surrogatepass"), headers=admin, timeout=60
        )
        assert response.status_code in expected, (body[:80], response.status_code, response.text[:300])
        if response.status_code == 200:
            accepted += 1
        else:
            error = response.json()
            assert error["message"] and error["error"] and "field" in error, error
            if response.status_code == 422:
                assert error["field"], error  # names the field (or "body")
    assert client.xlen(eventlog.decisions_key("demo")) == before + accepted  # nothing else written
    client.close()


SHELF = {
    "name": "shelf",
    "algorithm": "linucb",
    "features": [{"name": "age", "type": "numeric"}, {"name": "city", "type": "categorical", "hash_buckets": 8}],
    "action_feature_dim": 2,
    "max_candidates": 8,
}
ITEM = '{"id": "i", "features": [0.5, 1.0]}'
CANDIDATE_BODIES = [
    ('{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": [' + ITEM + "]}", (200,)),
    ('{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": [' + ",".join([ITEM] * 5000) + "]}", (422,)),
    ('{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": [' + ",".join([ITEM] * 9) + "]}", (422,)),
    (
        '{"policy": "shelf", "context": {'
        + ",".join(f'"k{i}": 1' for i in range(300))
        + '}, "actions": ['
        + ITEM
        + "]}",
        (422,),
    ),
    ('{"policy": "shelf", "context": {"age": 1, "city": "' + "x" * 10_000 + '"}, "actions": [' + ITEM + "]}", (422,)),
    ('{"policy": "shelf", "context": {"age": 1e999, "city": "x"}, "actions": [' + ITEM + "]}", (422,)),
    ('{"policy": "shelf", "context": {"age": true, "city": "x"}, "actions": [' + ITEM + "]}", (422,)),
    ('{"policy": "shelf", "context": {"age": 1, "city": null}, "actions": [' + ITEM + "]}", (422,)),
    (
        '{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": [{"id": "i", "features": [1e39, 0]}]}',
        (422,),
    ),
    ('{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": [{"id": "", "features": [1, 0]}]}', (422,)),
    ('{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": [{"id": "i", "features": {"a": 1}}]}', (422,)),
    (
        '{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": [{"id": "i", "features": '
        + nested(50_000)
        + "}]}",
        (413, 422),
    ),
    (
        '{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": ['
        + ITEM
        + '], "excluded": ['
        + ",".join(['"i"'] * 5000)
        + "]}",
        (422,),
    ),
    ('{"policy": "shelf", "context": {"age": 1, "city": "x"}, "actions": [' + ITEM + '], "excluded": [0]}', (422,)),
    ('{"policy": "demo", "context": [0' + ",0" * 15 + '], "actions": [' + ITEM + "]}", (422,)),
    ('{"policy": "demo", "context": [0' + ",0" * 15 + '], "excluded": ["a"]}', (422,)),
    ('{"policy": "demo", "context": [0' + ",0" * 15 + '], "excluded": [99]}', (422,)),
]


def test_malicious_candidate_bodies_get_clear_4xx(service: str, redis_url: str) -> None:
    admin = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    assert httpx.post(f"{service}/policies", json=SHELF, headers=admin, timeout=60).status_code == 201
    client = redis.Redis.from_url(redis_url)
    before = client.xlen(eventlog.decisions_key("shelf")), client.xlen(eventlog.decisions_key("demo"))
    accepted = 0
    for body, expected in CANDIDATE_BODIES:
        response = httpx.post(f"{service}/act", content=body.encode(), headers=admin, timeout=60)
        assert response.status_code in expected, (body[:100], response.status_code, response.text[:300])
        if response.status_code == 200:
            accepted += 1
        else:
            assert response.json()["field"], response.json()
    after = client.xlen(eventlog.decisions_key("shelf")), client.xlen(eventlog.decisions_key("demo"))
    assert after == (before[0] + accepted, before[1])
    client.close()
