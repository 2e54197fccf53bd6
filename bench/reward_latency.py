"""Reward-to-served latency: from the POST /reward that completes an example to the first /act
response whose version includes it; p50 and p95. Target: p95 <= 1 s when publishing every second.

Run from the repository root:

    .venv/bin/python bench/reward_latency.py
    .venv/bin/python bench/reward_latency.py --samples 50 --background-workers 0

What it does: starts redis-server (service.embedded_redis.EmbeddedRedis) in a temp dir, then
`banditd up --port P --data-dir TMP/data` as a process (the API and its trainer child process)
with REDIS_URL set, BANDIT_DEMO_POLICY=false, BANDIT_TRAINER_METRICS_PORT=0 and
TF_CPP_MIN_LOG_LEVEL=3, and creates the policy "latency" (LinUCB, d=16, K=10) with
"training": {"publish_every_examples": 1000000, "publish_every_seconds": 1.0} and the default
reward aggregation "earliest", so an example is complete at its first reward and the trainer
publishes once a second whenever it has something new.

Optional background traffic (--background-workers, default 2) plays the LinearSimulator
through /act + /reward continuously, so the trainer always has new examples and publishes on
its one-second clock, as it would in production.

One sample: wait a random (seeded) time in [0, publish period), POST /act, then POST /reward
for it; t0 = the moment the reward call returned 202. The reward's stream entry id is found
with XREVRANGE on training.eventlog.rewards_key(policy) (matching event_id). Then POST /act
(greedy, same policy and context) every --poll-ms until the response's "version" "E.C" names a
checkpoint whose position.json (<data_dir>/models/<policy>/<E>/checkpoints/<C>/position.json)
has rewards_position >= that entry id (stream ids compared as (ms, seq) integer pairs). The
latency is the time that /act response arrived minus t0. A sample not served within --timeout
seconds counts as a timeout (reported; its latency is taken as the timeout for percentiles).
Each sample is also split at the moment the served checkpoint was written (mtime of its
position.json): reward -> checkpoint written (the trainer waiting for its publish clock,
reading, updating, writing the files) and checkpoint written -> served (fsync and rename, the
publish script and its announcement, the replica restoring the variables, the polling step);
the intervals between consecutive checkpoints show the trainer's real publish cadence.

Prints a markdown table (p50, p95, max, target verdict) and writes
bench/results/reward_latency.json. Every process it started is stopped on exit, error, Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/x.py` puts bench/ first on sys.path, not the repo
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

from service.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from training import eventlog  # noqa: E402
from training.simulators import LinearSimulator  # noqa: E402

HOST = "127.0.0.1"
RESULTS = REPO / "bench" / "results" / "reward_latency.json"
TARGET_P95_S = 1.0
POLICY_NAME = "latency"


# -- processes -------------------------------------------------------------------------------------


class Service:
    """`banditd up` as a child process in its own session (the API and its trainer child)."""

    def __init__(self, port: int, data_dir: Path, redis_url: str, log: Path, extra_env: dict[str, str]) -> None:
        banditd = Path(sys.executable).with_name("banditd")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BANDIT_") and k != "REDIS_URL" and not k.lower().endswith("_proxy")
        }
        env |= {
            "REDIS_URL": redis_url,
            "BANDIT_DEMO_POLICY": "false",
            "BANDIT_TRAINER_METRICS_PORT": "0",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        } | extra_env
        self.url = f"http://{HOST}:{port}"
        self.log = log
        self._log_file = log.open("wb")
        command = [str(banditd), "up", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)]
        self.process = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"banditd exited with {self.process.returncode}:\n{tail(self.log)}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                time.sleep(0.2)
        raise RuntimeError(f"banditd not ready after {timeout:.0f}s:\n{tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM (the API drains, then stops its trainer); SIGKILL to the whole group if that hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # the trainer child, should it have outlived its parent
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log_file.close()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the measurement -------------------------------------------------------------------------------


def entry_key(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


class Positions:
    """rewards_position of a served version, read from its checkpoint's position.json (cached)."""

    def __init__(self, store: Path, policy: str) -> None:
        self.store, self.policy = store, policy
        self._cache: dict[str, tuple[int, int]] = {}

    def rewards_position(self, version: str) -> tuple[int, int]:
        found = self._cache.get(version)
        if found is None:
            export, checkpoint = eventlog.parse_version(version)
            if checkpoint == 0:
                found = (0, 0)  # the exported variables: nothing learned yet
            else:
                path = self.store / self.policy / str(export) / "checkpoints" / str(checkpoint) / "position.json"
                found = entry_key(json.loads(path.read_text())["rewards_position"])
            self._cache[version] = found
        return found

    def written_at(self, export: int, checkpoint: int) -> float | None:
        """Wall-clock time the trainer wrote checkpoint export.checkpoint (mtime of its position.json)."""
        path = self.store / self.policy / str(export) / "checkpoints" / str(checkpoint) / "position.json"
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    def publish_times(self, export: int = 1) -> list[float]:
        """Write times of every checkpoint of an export, in checkpoint order."""
        folder = self.store / self.policy / str(export) / "checkpoints"
        numbers = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
        return [t for n in numbers if (t := self.written_at(export, n)) is not None]


@dataclass
class Sample:
    index: int
    delay_before_s: float
    reward_entry: str
    latency_s: float | None  # None: not served within the timeout
    served_version: str | None
    polls: int
    reward_call_ms: float
    reward_to_checkpoint_s: float | None = None
    """t0 -> the served checkpoint's position.json written (the trainer's wait, step and write)."""
    checkpoint_to_served_s: float | None = None
    """position.json written -> the /act response naming it (publish, announce, swap, poll)."""
    publish_interval_s: float | None = None
    """Time between the previous checkpoint's write and the served one's."""


def find_reward_entry(client: redis.Redis, policy: str, event_id: str, timeout: float = 5.0) -> str:
    """The stream entry id of the (first) reward for event_id; the newest entries are searched first."""
    deadline = time.monotonic() + timeout
    wanted = event_id.encode()
    while time.monotonic() < deadline:
        entries: Any = client.xrevrange(eventlog.rewards_key(policy), max="+", min="-", count=2000)
        matches = [entry for entry, fields in entries if fields.get(b"event_id") == wanted]
        if matches:
            return str(matches[-1].decode())  # xrevrange is newest first: the last match is the earliest
        time.sleep(0.01)
    raise RuntimeError(f"reward for {event_id} not found in {eventlog.rewards_key(policy)}")


def take_sample(
    index: int,
    delay: float,
    http: httpx.Client,
    log: redis.Redis,
    positions: Positions,
    context: list[float],
    reward: float,
    poll_s: float,
    timeout: float,
) -> Sample:
    time.sleep(delay)
    act = http.post("/act", json={"policy": POLICY_NAME, "context": context})
    act.raise_for_status()
    event_id = act.json()["event_id"]
    sent = time.perf_counter()
    answer = http.post("/reward", json={"event_id": event_id, "reward": reward})
    t0 = time.perf_counter()
    t0_wall = time.time()
    if answer.status_code != 202 or not answer.json()["accepted"]:
        raise RuntimeError(f"POST /reward: {answer.status_code} {answer.text[:300]}")
    entry = entry_key(find_reward_entry(log, POLICY_NAME, event_id))
    entry_text = f"{entry[0]}-{entry[1]}"
    deadline = t0 + timeout
    polls = 0
    while time.perf_counter() < deadline:
        served = http.post("/act", json={"policy": POLICY_NAME, "context": context, "greedy": True})
        arrived = time.perf_counter()
        polls += 1
        served.raise_for_status()
        version = served.json()["version"]
        if positions.rewards_position(version) >= entry:
            sample = Sample(index, delay, entry_text, arrived - t0, version, polls, (t0 - sent) * 1000)
            export, checkpoint = eventlog.parse_version(version)
            written, previous = positions.written_at(export, checkpoint), positions.written_at(export, checkpoint - 1)
            if written is not None:
                sample.reward_to_checkpoint_s = written - t0_wall
                sample.checkpoint_to_served_s = (t0_wall + (arrived - t0)) - written
                if previous is not None:
                    sample.publish_interval_s = written - previous
            return sample
        time.sleep(poll_s)
    return Sample(index, delay, entry_text, None, None, polls, (t0 - sent) * 1000)


def background(url: str, seed: int, stop: threading.Event, counts: list[int], errors: list[str]) -> None:
    """One client playing the simulator through /act and /reward until stop is set."""
    sim = LinearSimulator(seed=seed)
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        while not stop.is_set():
            contexts = sim.contexts(64)
            for context in contexts:
                if stop.is_set():
                    return
                try:
                    act = client.post("/act", json={"policy": POLICY_NAME, "context": context.tolist()})
                    body = act.json()
                    reward = float(sim.rewards(context[None, :], np.array([body["action"]]))[0])
                    client.post("/reward", json={"event_id": body["event_id"], "reward": reward})
                    counts[0] += 1
                except (httpx.HTTPError, KeyError, ValueError) as error:
                    errors.append(repr(error))
                    if len(errors) > 100:
                        return
                    time.sleep(0.1)


def join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=30)


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p, method="linear")) if values else float("nan")


def source_revision() -> dict[str, Any]:
    """The commit benchmarked and whether the code under test differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "bandits", "exporter", "training"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"commit": head.stdout.strip(), "code_under_test_modified": bool(dirty.stdout.strip())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100, help="number of measured rewards (default %(default)s)")
    parser.add_argument("--publish-seconds", type=float, default=1.0, help="the policy's publish_every_seconds")
    parser.add_argument("--background-workers", type=int, default=2, help="act+reward loops running meanwhile")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="pause between polling /act calls")
    parser.add_argument("--timeout", type=float, default=10.0, help="give up on one sample after this many s")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of background traffic before sampling")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop sampling after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    revision = source_revision()
    print(f"source: {revision}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="banditd-latency-"))
    rng = random.Random(args.seed)
    sim = LinearSimulator(seed=args.seed + 1000)
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        if args.keep_tmp:
            print(f"temp dir: {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        server = EmbeddedRedis(tmp / "redis", host=HOST)
        redis_url = server.start()
        stack.callback(server.stop)
        data_dir = tmp / "data"
        service = Service(free_port(HOST), data_dir, redis_url, tmp / "banditd.log", {})
        stack.callback(service.stop)
        service.wait_ready()
        policy = {
            "name": POLICY_NAME, "algorithm": "linucb", "context_dim": 16, "num_actions": 10,
            "training": {"publish_every_examples": 1_000_000, "publish_every_seconds": args.publish_seconds},
        }  # fmt: skip
        http = stack.enter_context(httpx.Client(base_url=service.url, timeout=30, trust_env=False))
        created = http.post("/policies", json=policy)
        if created.status_code != 201:
            raise RuntimeError(f"POST /policies: {created.status_code} {created.text[:500]}")
        if created.json()["reward"]["aggregation"] != "earliest":
            raise RuntimeError("expected the default reward aggregation 'earliest'")
        for greedy in (False, True):  # first calls of both SavedModel variants, outside the measurement
            http.post("/act", json={"policy": POLICY_NAME, "context": [0.0] * 16, "greedy": greedy}).raise_for_status()
        log = redis.Redis.from_url(redis_url)
        stack.callback(log.close)
        positions = Positions(data_dir / "models", POLICY_NAME)

        counts: list[int] = [0]
        errors: list[str] = []
        threads = [
            threading.Thread(
                target=background, args=(service.url, args.seed + 1 + i, stop, counts, errors), daemon=True
            )
            for i in range(args.background_workers)
        ]
        stack.callback(join_all, threads)
        stack.callback(stop.set)
        for t in threads:
            t.start()
        time.sleep(args.warmup if threads else 0.0)
        background_start, background_start_count = time.monotonic(), counts[0]

        samples: list[Sample] = []
        contexts = sim.contexts(args.samples)
        sampling_deadline = time.monotonic() + args.max_seconds
        for i in range(args.samples):
            if time.monotonic() > sampling_deadline:
                print(f"stopping after {i} samples: --max-seconds reached")
                break
            delay = rng.uniform(0.0, args.publish_seconds)
            context = contexts[i].tolist()
            sample = take_sample(i, delay, http, log, positions, context, rng.gauss(0, 1), args.poll_ms / 1000,
                                 args.timeout)  # fmt: skip
            samples.append(sample)
            shown = "timeout" if sample.latency_s is None else f"{sample.latency_s * 1000:7.1f} ms"
            if i % 10 == 0 or sample.latency_s is None:
                print(f"  sample {i:3d}: {shown} (served {sample.served_version}, {sample.polls} polls)", flush=True)
        background_rate = (counts[0] - background_start_count) / max(time.monotonic() - background_start, 1e-9)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        info = http.get(f"/policies/{POLICY_NAME}").json()
        written = positions.publish_times()
        intervals = np.diff(np.asarray(written)) if len(written) > 1 else np.zeros(0)

    latencies = [s.latency_s if s.latency_s is not None else args.timeout for s in samples]
    timeouts = sum(1 for s in samples if s.latency_s is None)
    p50, p95, worst = percentile(latencies, 50), percentile(latencies, 95), max(latencies, default=float("nan"))
    met = p95 <= TARGET_P95_S and timeouts == 0
    print()
    print(
        f"Reward-to-served latency, LinUCB d=16 K=10, publish_every_seconds={args.publish_seconds:g}, "
        f"{args.background_workers} background workers (~{background_rate:.0f} act+reward/s), {len(samples)} samples:"
    )
    print()
    print("| samples | p50 | p95 | max | timeouts | p95 <= 1 s |")
    print("|---:|---:|---:|---:|---:|---|")
    print(
        f"| {len(samples)} | {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms | {worst * 1000:.0f} ms | {timeouts} | "
        f"{'yes' if met else 'NO'} |"
    )
    print()
    print(f"Target (p95 <= {TARGET_P95_S:g} s): {'MET' if met else 'NOT MET'} (p95 {p95:.3f} s)")
    parts = {
        "reward -> checkpoint written": [s.reward_to_checkpoint_s for s in samples],
        "checkpoint written -> served": [s.checkpoint_to_served_s for s in samples],
    }
    print()
    print("Where the time goes (per sample; checkpoint write time = mtime of its position.json):")
    print()
    print("| part | p50 | p95 | max |")
    print("|---|---:|---:|---:|")
    for part, values in parts.items():
        known = [v for v in values if v is not None]
        print(
            f"| {part} | {percentile(known, 50) * 1000:.0f} ms | {percentile(known, 95) * 1000:.0f} ms | "
            f"{max(known, default=float('nan')) * 1000:.0f} ms |"
        )
    if len(intervals):
        print(
            f"| interval between checkpoints ({len(intervals)}) | {percentile(list(intervals), 50) * 1000:.0f} ms | "
            f"{percentile(list(intervals), 95) * 1000:.0f} ms | {intervals.max() * 1000:.0f} ms |"
        )
    if errors:
        print(f"background errors: {len(errors)} (first: {errors[0]})")
    elapsed = time.monotonic() - started
    print(f"total wall time {elapsed:.0f}s")
    result = {
        "target": {"p95_s": TARGET_P95_S, "met": met, "p50_s": p50, "p95_s_measured": p95, "max_s": worst,
                   "timeouts": timeouts},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "policy": policy,
        "background_act_reward_per_s": background_rate,
        "checkpoint_intervals_s": {
            "count": len(intervals),
            "mean": float(intervals.mean()) if len(intervals) else None,
            "p50": percentile(list(intervals), 50),
            "p95": percentile(list(intervals), 95),
            "max": float(intervals.max()) if len(intervals) else None,
        },
        "background_errors": errors[:20],
        "policy_info_at_end": info,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "source": revision,
        "wall_time_s": round(elapsed, 1),
        "samples": [asdict(s) for s in samples],
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
