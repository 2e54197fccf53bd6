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
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

import httpx
import numpy as np
import redis

import eventlog
from bench import harness
from bench.harness import HOST
from service.embedded_redis import EmbeddedRedis
from training.simulators import LinearSimulator

RESULTS = harness.RESULTS_DIR / "reward_latency.json"
TARGET_P95_S = 1.0
POLICY_NAME = "latency"


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


def ms(seconds: float) -> str:
    """A table cell: seconds as whole milliseconds."""
    return f"{seconds * 1000:.0f} ms"


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
    smoke = {"samples": 3, "background_workers": 1, "warmup": 1.0, "max_seconds": 60.0}
    args = harness.parse_args(parser, argv, smoke)

    harness.stop_on_signals()
    started = time.monotonic()
    revision = harness.source_revision()
    print(f"source: {revision}", flush=True)
    rng = random.Random(args.seed)
    sim = LinearSimulator(seed=args.seed + 1000)
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(harness.scratch_dir("banditd-latency-", keep=args.keep_tmp))
        redis_url = stack.enter_context(EmbeddedRedis(tmp / "redis", host=HOST)).url
        data_dir = tmp / "data"
        service = stack.enter_context(harness.banditd_up(data_dir, redis_url, tmp / "banditd.log"))
        service.wait_ready()
        policy = {
            "name": POLICY_NAME, "algorithm": "linucb", "context_dim": 16, "num_actions": 10,
            "training": {"publish_every_examples": 1_000_000, "publish_every_seconds": args.publish_seconds},
        }  # fmt: skip
        created = harness.post_policy(service.url, policy, service.log)
        http = stack.enter_context(httpx.Client(base_url=service.url, timeout=30, trust_env=False))
        if created["reward"]["aggregation"] != "earliest":
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
    cells = [(len(samples), ms(p50), ms(p95), ms(worst), timeouts, "yes" if met else "NO")]
    print(harness.markdown_table(("samples", "p50", "p95", "max", "timeouts", "p95 <= 1 s"), "rrrrrl", cells))
    print()
    print(f"Target (p95 <= {TARGET_P95_S:g} s): {'MET' if met else 'NOT MET'} (p95 {p95:.3f} s)")
    parts = {
        "reward -> checkpoint written": [s.reward_to_checkpoint_s for s in samples],
        "checkpoint written -> served": [s.checkpoint_to_served_s for s in samples],
    }
    print()
    print("Where the time goes (per sample; checkpoint write time = mtime of its position.json):")
    print()
    breakdown = []
    for part, values in parts.items():
        known = [v for v in values if v is not None]
        worst_part = max(known, default=float("nan"))
        breakdown.append((part, ms(percentile(known, 50)), ms(percentile(known, 95)), ms(worst_part)))
    if len(intervals):
        between = list(intervals)
        breakdown.append((f"interval between checkpoints ({len(intervals)})", ms(percentile(between, 50)),
                          ms(percentile(between, 95)), ms(intervals.max())))  # fmt: skip
    print(harness.markdown_table(("part", "p50", "p95", "max"), "lrrr", breakdown))
    if errors:
        print(f"background errors: {len(errors)} (first: {errors[0]})")
    elapsed = time.monotonic() - started
    print(f"total wall time {elapsed:.0f}s")
    result = {
        "target": {"p95_s": TARGET_P95_S, "met": met, "p50_s": p50, "p95_s_measured": p95, "max_s": worst,
                   "timeouts": timeouts},
        "args": harness.args_dict(args),
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
        "host": harness.host_info(),
        "source": revision,
        "wall_time_s": round(elapsed, 1),
        "samples": [asdict(s) for s in samples],
    }  # fmt: skip
    harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
