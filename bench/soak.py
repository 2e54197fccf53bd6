"""Soak: mixed /act and /reward traffic at a fixed rate against the whole stack for ten minutes,
publishing every second. Per minute: requests, errors, latency percentiles of each route,
resident memory of each process, Redis memory and stream lengths, the live version. Resident
memory must stay flat; Redis memory must stay bounded by the configured retention.

Run from the repository root:

    .venv/bin/python bench/soak.py                            # 600 s at 200 /act/s
    .venv/bin/python bench/soak.py --duration 60 --rate 100   # quick check

What it does: starts redis-server (service.embedded_redis.EmbeddedRedis) in a temp dir, then
`banditd up` against it (the API and its trainer child; harness.banditd_up, so no demo policy
and no trainer /metrics port) with BANDIT_STREAM_RETENTION_SECONDS=--retention-seconds (the
trainer trims decision and reward entries older than that once a checkpoint covers them),
and creates the policy "soak": LinUCB, d=16, K=10, "training": {"publish_every_seconds": 1},
reward window --reward-wait-seconds.

The load is open loop: /act number i is sent at start + i / --rate whether or not earlier
answers have arrived (at most --connections keep-alive connections; a request waiting for one
waits in the client). Each context comes from training.simulators.LinearSimulator (seeded);
for a --reward-fraction share of the decisions the simulator's reward for the chosen action is
sent to /reward after a uniform delay of up to --reward-delay seconds. Latency is measured from
the time a request was due, not from when it went out, so a stalled client or server shows
(no coordinated omission); "generator lag" is how late the client started a request.
Requests count in the minute they were due; errors are non-2xx answers by status and
exceptions (timeouts after --timeout s, connection errors) by type.

Every --sample-seconds (and at the end of every minute) a thread records: VmRSS, threads, open
files and CPU time of each process (the `banditd up` process serves the API, its descendants
are found through /proc/*/stat: the one running `service.cli train` is the trainer, any other
counts as API; redis-server is the one this script started), busy CPU of the whole machine
(the rest is other work sharing it), Redis INFO memory, DBSIZE, XLEN and MEMORY USAGE of the
policy's two streams (key names from training.eventlog), and GET /policies/soak (live
version, trainer lag, pending joins).

Prints three markdown tables (traffic and latency, memory, CPU) and a verdict on flatness:
growth of each process's RSS and of Redis used_memory (the streams, and the rest) from the end
of minute 2 (warmed up, the retention window full) to the end of the run, in MiB and %, and the
slope of a line fitted through every sample since then; "flat" means less than --flat-percent
growth. Writes bench/results/soak.json and the plot bench/results/soak.png. Every process it
started is stopped on exit, error, Ctrl-C or SIGTERM.

What may grow by design until its window is full: the trainer's pending joins (decisions
without a reward wait --reward-wait-seconds, 600 by default) and Redis's per-decision event
keys (they expire --reward-wait-seconds + BANDIT_EVENT_TTL_MARGIN_SECONDS after the decision,
70 minutes with the defaults). --reward-wait-seconds 30 --event-ttl-margin-seconds 30 fills
both windows within the first minute.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import os
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

import numpy as np
import orjson
import redis

import eventlog
from bench import harness
from bench.harness import HOST
from service.embedded_redis import EmbeddedRedis
from training.simulators import LinearSimulator

RESULTS = harness.RESULTS_DIR / "soak.json"
PLOT = harness.RESULTS_DIR / "soak.png"
POLICY_NAME = "soak"
CONTEXT_DIM, NUM_ACTIONS = 16, 10
ROUTES = ("/act", "/reward")
ROLES = ("api", "trainer", "redis")
MIB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the load: an open-loop HTTP/1.1 client on asyncio --------------------------------------------


class ProtocolError(Exception):
    """An answer this minimal client cannot frame (no Content-Length)."""


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.last_used = time.monotonic()

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Sends request; (status, body, whether the server keeps the connection open)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        match = _CONTENT_LENGTH.search(head)
        if match is None:
            raise ProtocolError(head[:200].decode(errors="replace"))
        body = await self.reader.readexactly(int(match.group(1)))
        self.last_used = time.monotonic()
        return int(head[9:12]), body, b"\r\nconnection: close" not in head.lower()

    def stale(self, idle_limit: float) -> bool:
        """Closed by the server, or idle long enough that it may close it (uvicorn: after 5 s)."""
        return self.reader.at_eof() or time.monotonic() - self.last_used > idle_limit

    def close(self) -> None:
        self.writer.close()


class Pool:
    """At most `limit` keep-alive connections to HOST:port, the most recently used reused first."""

    IDLE_LIMIT_S = 2.0

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.slots = asyncio.Semaphore(limit)
        self.idle: list[Connection] = []
        self.opened = 0

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self.slots:
            connection = self._idle_connection() or await self._open()
            try:
                status, answer, keep = await connection.exchange(request)
            except BaseException:  # a timeout's cancellation included: the connection is in an unknown state
                connection.close()
                raise
            if keep:
                self.idle.append(connection)
            else:
                connection.close()
            return status, answer

    def _idle_connection(self) -> Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.stale(self.IDLE_LIMIT_S):
                return connection
            connection.close()
        return None

    async def _open(self) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        self.opened += 1
        return Connection(reader, writer)

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


@dataclass
class RouteMinute:
    """What one route did in one minute (requests count in the minute they were due)."""

    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    exceptions: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300) + sum(self.exceptions.values())

    def error_text(self) -> str:
        """e.g. "503 x2, TimeoutError x1"; "" when none."""
        parts = [f"{s} x{n}" for s, n in sorted(self.statuses.items()) if not 200 <= s < 300]
        return ", ".join(parts + [f"{kind} x{n}" for kind, n in sorted(self.exceptions.items())])

    def summary(self) -> dict[str, Any]:
        values = np.asarray(self.latencies_ms)
        quantiles = np.percentile(values, [50, 95, 99]) if len(values) else [math.nan] * 3
        return {
            "sent": self.sent, "answered": len(values), "errors": self.errors,
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())}, "exceptions": dict(self.exceptions),
            "p50_ms": float(quantiles[0]), "p95_ms": float(quantiles[1]), "p99_ms": float(quantiles[2]),
            "max_ms": float(values.max()) if len(values) else math.nan,
        }  # fmt: skip


class Load:
    """The traffic: /act at a fixed rate, /reward for most decisions a little later."""

    def __init__(self, args: argparse.Namespace, port: int, start: float) -> None:
        self.args, self.port, self.start = args, port, start
        self.minutes = math.ceil(args.duration / 60)
        self.stats = [{route: RouteMinute() for route in ROUTES} for _ in range(self.minutes)]
        self.lag_ms = [0.0] * self.minutes
        """Per minute, the most the client started an /act after it was due."""
        self.simulator = LinearSimulator(CONTEXT_DIM, NUM_ACTIONS, seed=args.seed)
        self.rng = random.Random(args.seed)
        self._contexts = np.zeros((0, CONTEXT_DIM), np.float32)
        self._tasks: set[asyncio.Task[None]] = set()
        self.pool: Pool | None = None

    def minute_of(self, due: float) -> int:
        return min(max(int((due - self.start) // 60), 0), self.minutes - 1)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.pool = Pool(self.port, self.args.connections)
        total = round(self.args.duration * self.args.rate)
        try:
            for i in range(total):
                due = self.start + i / self.args.rate
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                minute = self.minute_of(due)
                self.lag_ms[minute] = max(self.lag_ms[minute], (loop.time() - due) * 1000)
                task = asyncio.create_task(self.decide(due))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            # the last decisions' rewards are still due; their timeouts bound the wait
            await asyncio.gather(*list(self._tasks))
        finally:
            for task in list(self._tasks):
                task.cancel()
            self.pool.close()

    def next_context(self) -> np.ndarray:
        if not len(self._contexts):
            self._contexts = self.simulator.contexts(1024)
        context, self._contexts = self._contexts[0], self._contexts[1:]
        return context

    async def decide(self, due: float) -> None:
        """One /act and, for most decisions, its /reward after a random delay."""
        context = self.next_context()
        body = orjson.dumps({"policy": POLICY_NAME, "context": context.tolist()})
        answer = await self.timed("/act", body, due)
        if answer is None or self.rng.random() >= self.args.reward_fraction:
            return
        decision = orjson.loads(answer)
        reward = float(self.simulator.rewards(context[None, :], np.array([decision["action"]]))[0])
        loop = asyncio.get_running_loop()
        reward_due = loop.time() + self.rng.uniform(0.0, self.args.reward_delay)
        await asyncio.sleep(reward_due - loop.time())
        await self.timed("/reward", orjson.dumps({"event_id": decision["event_id"], "reward": reward}), reward_due)

    async def timed(self, route: str, body: bytes, due: float) -> bytes | None:
        """POSTs body to route, counted in due's minute; the answer's body if 2xx, else None."""
        assert self.pool is not None
        stats = self.stats[self.minute_of(due)][route]
        stats.sent += 1
        try:
            status, answer = await asyncio.wait_for(self.pool.post(route, body), self.args.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError) as error:
            stats.exceptions[type(error).__name__] += 1
            return None
        stats.latencies_ms.append((asyncio.get_running_loop().time() - due) * 1000)
        stats.statuses[status] += 1
        return answer if 200 <= status < 300 else None


# -- what the processes and Redis hold ----------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ..., utime (11), stime (12), ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """Every live process below root, found by each process's parent pid in /proc/*/stat."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(entry)) is not None:
            children[int(fields[1])].append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_info(pid: int) -> dict[str, Any] | None:
    """VmRSS (MiB), threads, open files and CPU time (s) of a live process; None if it is gone."""
    fields = _stat_fields(pid)
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        files = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    if fields is None:
        return None
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mib": int(values.get("VmRSS", "0 kB").split()[0]) / 1024,
        "threads": int(values.get("Threads", "0")),
        "open_files": files,
        "cpu_s": (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
    }


def role_of(pid: int) -> str:
    """ "trainer" for the `python -m service.cli train` child of `banditd up`, else "api"."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "api"
    return "trainer" if b"train" in command[1:] else "api"


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


class Sampler:
    """A thread that records the processes, Redis and the policy at the given offsets from start."""

    def __init__(self, start: float, offsets: list[float], api_pid: int, redis_pid: int, redis_url: str,
                 service_url: str) -> None:  # fmt: skip
        self.start, self.offsets = start, offsets
        self.api_pid, self.redis_pid, self.service_url = api_pid, redis_pid, service_url
        self.client = redis.Redis.from_url(redis_url, socket_timeout=10)
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.client.close()

    def _run(self) -> None:
        for offset in self.offsets:
            if self.stop.wait(max(0.0, self.start + offset - time.monotonic())):
                return
            self.samples.append(self.sample(offset))

    def sample(self, offset: float) -> dict[str, Any]:
        roles: dict[int, str] = {self.api_pid: "api", self.redis_pid: "redis", os.getpid(): "generator"}
        roles |= {pid: role_of(pid) for pid in descendants(self.api_pid)}
        processes: dict[str, dict[str, Any]] = {}
        for pid, role in roles.items():
            info = process_info(pid)
            if info is None:
                continue
            group = processes.setdefault(
                role, {"pids": [], "rss_mib": 0.0, "threads": 0, "open_files": 0, "cpu_s": 0.0}
            )
            group["pids"].append(pid)
            for key in ("rss_mib", "threads", "open_files", "cpu_s"):
                group[key] += info[key]
        busy, total = machine_cpu_s()
        return {
            "t_s": offset,
            "wall_time": time.time(),
            "processes": processes,
            "machine_cpu_busy_s": busy,
            "machine_cpu_total_s": total,
            "redis": self._redis(),
            "policy": self.policy_info(),
        }

    def _redis(self) -> dict[str, Any]:
        try:
            memory: Any = self.client.info("memory")
            decisions, rewards = eventlog.decisions_key(POLICY_NAME), eventlog.rewards_key(POLICY_NAME)
            streams = sum((self.client.memory_usage(k) or 0) for k in (decisions, rewards))
            return {
                "used_memory_mib": memory["used_memory"] / MIB,
                "used_memory_rss_mib": memory["used_memory_rss"] / MIB,
                "keys": self.client.dbsize(),
                "decisions_xlen": self.client.xlen(decisions),
                "rewards_xlen": self.client.xlen(rewards),
                "streams_mib": streams / MIB,
                "other_mib": (memory["used_memory"] - streams) / MIB,
            }
        except redis.RedisError as error:
            return {"error": repr(error)}

    def policy_info(self) -> dict[str, Any]:
        try:
            info = harness.get_json(f"{self.service_url}/policies/{POLICY_NAME}", timeout=10)
        except (OSError, ValueError) as error:
            return {"error": repr(error)}
        keys = ("live_version", "decisions", "rewards", "applied_examples", "pending_joins", "defaulted_rewards",
                "trainer_lag", "late_rewards")  # fmt: skip
        return {k: info.get(k) for k in keys}


def folder_mib(folder: Path) -> float:
    """Bytes of the files under folder, in MiB; files deleted meanwhile (old checkpoints) are skipped."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += (Path(parent) / name).stat().st_size
    return total / MIB


def sample_offsets(duration: float, every: float) -> list[float]:
    """0, every `every` seconds, the end of every minute and the end of the run."""
    marks = {round(x, 3) for x in np.arange(0.0, duration, every)}
    marks |= {float(m) for m in range(60, int(duration) + 1, 60)} | {float(duration)}
    return sorted(marks)


# -- the report ----------------------------------------------------------------------------------------


def at(samples: list[dict[str, Any]], offset: float) -> dict[str, Any]:
    """The sample taken at offset (the last one before it if that one is missing)."""
    before = [s for s in samples if s["t_s"] <= offset + 1e-6]
    return before[-1] if before else samples[0]


def value(sample: dict[str, Any], path: str) -> float:
    """sample["a"]["b"] for path "a.b"; NaN when missing."""
    node: Any = sample
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return math.nan
        node = node[part]
    return float(node) if isinstance(node, int | float) else math.nan


def checkpoint_of(sample: dict[str, Any]) -> int | None:
    version = sample["policy"].get("live_version")
    return eventlog.parse_version(version)[1] if version else None


def growth(samples: list[dict[str, Any]], path: str, since: float) -> dict[str, Any]:
    """How the value at path changed from the sample at `since` to the last one, and its fitted slope."""
    points = [(s["t_s"], value(s, path)) for s in samples if s["t_s"] >= since - 1e-6]
    points = [(t, v) for t, v in points if not math.isnan(v)]
    if len(points) < 2:
        return {"from": math.nan, "to": math.nan, "delta": math.nan, "percent": math.nan, "slope_per_min": math.nan}
    (t0, first), (_, last) = points[0], points[-1]
    times, values = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    slope = float(np.polyfit(times / 60, values, 1)[0])
    percent = 100 * (last - first) / first if first else math.nan
    return {"from": first, "to": last, "delta": last - first, "percent": percent, "slope_per_min": slope,
            "from_t_s": t0, "to_t_s": points[-1][0]}  # fmt: skip


def fmt(x: float, digits: int = 1) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def traffic_table(load: Load, minute_ends: list[dict[str, Any]], minute_starts: list[dict[str, Any]]) -> str:
    rows = []
    for m, (start, end) in enumerate(zip(minute_starts, minute_ends, strict=True)):
        act, reward = load.stats[m]["/act"].summary(), load.stats[m]["/reward"].summary()
        before, after = checkpoint_of(start), checkpoint_of(end)
        publishes = after - before if before is not None and after is not None else None
        rows.append((
            m + 1, end["policy"].get("live_version", "?"), "" if publishes is None else publishes,
            act["sent"], act["errors"], fmt(act["p50_ms"]), fmt(act["p95_ms"]), fmt(act["p99_ms"]), fmt(act["max_ms"]),
            reward["sent"], reward["errors"], fmt(reward["p50_ms"]), fmt(reward["p95_ms"]), fmt(reward["p99_ms"]),
            fmt(reward["max_ms"]), fmt(load.lag_ms[m]),
        ))  # fmt: skip
    columns = ("min", "live version", "publishes", "/act sent", "/act errors", "/act p50 ms", "/act p95 ms",
               "/act p99 ms", "/act max ms", "/reward sent", "/reward errors", "/reward p50 ms", "/reward p95 ms",
               "/reward p99 ms", "/reward max ms", "generator lag max ms")  # fmt: skip
    return harness.markdown_table(columns, "r" * len(columns), rows)


def memory_table(minute_ends: list[dict[str, Any]]) -> str:
    rows = []
    for m, s in enumerate(minute_ends):
        r, p = s["redis"], s["policy"]
        rows.append((
            m + 1, fmt(value(s, "processes.api.rss_mib")), fmt(value(s, "processes.trainer.rss_mib")),
            fmt(value(s, "processes.redis.rss_mib")), fmt(value(s, "redis.used_memory_mib")),
            fmt(value(s, "redis.streams_mib")), fmt(value(s, "redis.other_mib")), r.get("keys", ""),
            r.get("decisions_xlen", ""), r.get("rewards_xlen", ""), p.get("pending_joins", ""),
            p.get("trainer_lag", ""),
            f"{fmt(value(s, 'processes.api.open_files'), 0)}/{fmt(value(s, 'processes.trainer.open_files'), 0)}",
        ))  # fmt: skip
    columns = ("min", "API RSS MiB", "trainer RSS MiB", "redis RSS MiB", "Redis used_memory MiB", "streams MiB",
               "rest MiB", "Redis keys", "XLEN decisions", "XLEN rewards", "pending joins", "trainer lag",
               "open files API/trainer")  # fmt: skip
    return harness.markdown_table(columns, "r" * len(columns), rows)


def cpu_table(minute_ends: list[dict[str, Any]], minute_starts: list[dict[str, Any]]) -> str:
    rows = []
    for m, (start, end) in enumerate(zip(minute_starts, minute_ends, strict=True)):
        seconds = max(end["t_s"] - start["t_s"], 1e-9)
        share = {}
        for role in (*ROLES, "generator"):
            used = value(end, f"processes.{role}.cpu_s") - value(start, f"processes.{role}.cpu_s")
            share[role] = 100 * max(used, 0.0) / seconds  # a restarted process's count starts again
        busy = 100 * (end["machine_cpu_busy_s"] - start["machine_cpu_busy_s"]) / seconds
        other = busy - sum(v for v in share.values() if not math.isnan(v))
        rows.append((m + 1, *(fmt(share[r], 0) for r in (*ROLES, "generator")), fmt(other, 0), fmt(busy, 0)))
    columns = ("min", "API %", "trainer %", "redis %", "load generator %", "other work %", "machine busy %")
    note = f"(% of one core; the machine has {os.cpu_count()} cores, so {100 * (os.cpu_count() or 1)}% is all of it)"
    return harness.markdown_table(columns, "r" * len(columns), rows) + "\n\n" + note


def verdicts(samples: list[dict[str, Any]], since: float, flat_percent: float) -> tuple[list[str], dict[str, Any]]:
    lines, found = [], {}
    series = {f"{role} RSS": f"processes.{role}.rss_mib" for role in ROLES} | {
        "Redis used_memory": "redis.used_memory_mib",
        "Redis streams (MEMORY USAGE)": "redis.streams_mib",
        "Redis rest (used_memory - streams)": "redis.other_mib",
    }
    for label, path in series.items():
        g = growth(samples, path, since)
        found[label] = g
        if math.isnan(g["delta"]):
            lines.append(f"- {label}: not measured")
            continue
        state = "flat" if abs(g["percent"]) < flat_percent else ("GROWS" if g["delta"] > 0 else "shrinks")
        lines.append(
            f"- {label}: {g['from']:.1f} -> {g['to']:.1f} MiB ({g['delta']:+.1f} MiB, {g['percent']:+.1f}%) "
            f"from {g['from_t_s'] / 60:.1f} min to {g['to_t_s'] / 60:.1f} min; fitted slope "
            f"{g['slope_per_min']:+.2f} MiB/min: {state}"
        )
    for label, path in (("Redis keys", "redis.keys"), ("XLEN decisions", "redis.decisions_xlen"),
                        ("XLEN rewards", "redis.rewards_xlen")):  # fmt: skip
        g = growth(samples, path, since)
        found[label] = g
        if not math.isnan(g["delta"]):
            lines.append(f"- {label}: {g['from']:,.0f} -> {g['to']:,.0f} ({g['slope_per_min']:+,.0f}/min)")
    rest, keys = found["Redis rest (used_memory - streams)"], found["Redis keys"]
    if keys["delta"] > 0.1 * keys["from"] and not math.isnan(rest["delta"]):  # only when the keys clearly grew
        lines.append(f"- Redis rest per added key: {rest['delta'] * MIB / keys['delta']:,.0f} bytes")
    return lines, found


_ABSL_NOISE = "WARNING: All log messages before absl::InitializeLog()"  # TensorFlow's start-up, not the service's


def log_findings(path: Path, limit: int = 20) -> dict[str, Any]:
    """Warning, error and traceback lines of a log file: their count and the first few."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"count": 0, "first": []}
    hits = [
        ln
        for ln in lines
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", ln) and not ln.startswith(_ABSL_NOISE)
    ]
    return {"count": len(hits), "first": hits[:limit], "lines": len(lines)}


def plot(load: Load, samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    minutes = np.arange(1, load.minutes + 1)
    ax = axes[0][0]
    for route, style in zip(ROUTES, ("-", "--"), strict=True):
        summaries = [load.stats[m][route].summary() for m in range(load.minutes)]
        for q, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            ax.plot(minutes, [s[f"{q}_ms"] for s in summaries], style, marker="o", color=color, label=f"{route} {q}")
    ax.set(yscale="log", xlabel="minute", ylabel="latency (ms, from due time)", title="Latency per minute")
    ax.set_xticks(minutes)
    ax.legend(fontsize=8, ncol=2)
    times = np.array([s["t_s"] for s in samples]) / 60
    ax = axes[0][1]
    for role in ROLES:
        ax.plot(times, [value(s, f"processes.{role}.rss_mib") for s in samples], marker=".", label=role)
    ax.set(xlabel="minutes", ylabel="VmRSS (MiB)", title="Resident memory per process")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax = axes[1][0]
    ax.plot(times, [value(s, "redis.used_memory_mib") for s in samples], marker=".", label="used_memory")
    ax.plot(times, [value(s, "redis.streams_mib") for s in samples], marker=".", label="the two streams")
    ax.plot(times, [value(s, "processes.redis.rss_mib") for s in samples], marker=".", label="redis-server RSS")
    ax.set(xlabel="minutes", ylabel="MiB", title="Redis memory")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(times, [value(s, "redis.decisions_xlen") for s in samples], marker=".", label="XLEN decisions")
    ax.plot(times, [value(s, "redis.rewards_xlen") for s in samples], marker=".", label="XLEN rewards")
    ax.plot(times, [value(s, "redis.keys") for s in samples], marker=".", label="keys (DBSIZE)")
    ax.plot(times, [value(s, "policy.pending_joins") for s in samples], marker=".", label="pending joins")
    ax.set(xlabel="minutes", ylabel="count", title="Streams, keys and pending joins")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


# -- the run -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default %(default)s)")
    parser.add_argument("--rate", type=float, default=200.0, help="/act requests per second (default %(default)s)")
    parser.add_argument("--reward-fraction", type=float, default=0.9, help="share of decisions rewarded")
    parser.add_argument("--reward-delay", type=float, default=1.0, help="rewards follow after uniform 0..this s")
    parser.add_argument("--reward-wait-seconds", type=float, default=600.0, help="the policy's reward window")
    parser.add_argument("--retention-seconds", type=float, default=120.0, help="BANDIT_STREAM_RETENTION_SECONDS")
    parser.add_argument("--event-ttl-margin-seconds", type=float, default=None,
                        help="BANDIT_EVENT_TTL_MARGIN_SECONDS (default: the service's)")  # fmt: skip
    parser.add_argument("--connections", type=int, default=64, help="most open client connections")
    parser.add_argument("--timeout", type=float, default=10.0, help="a request unanswered after this long fails")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="how often memory is sampled")
    parser.add_argument("--flat-percent", type=float, default=5.0, help="growth below this %% counts as flat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data)")
    smoke = {"duration": 4.0, "rate": 20.0, "reward_wait_seconds": 5.0, "retention_seconds": 5.0, "connections": 8,
             "sample_seconds": 2.0}  # fmt: skip
    args = harness.parse_args(parser, argv, smoke)

    harness.stop_on_signals()
    harness.quiet_tensorflow()
    started = time.monotonic()
    revision = harness.source_revision()
    print(f"source: {revision}", flush=True)
    from service.settings import Settings  # noqa: PLC0415
    from training.settings import TrainerSettings  # noqa: PLC0415

    retention_known = "stream_retention_seconds" in TrainerSettings.model_fields
    margin = args.event_ttl_margin_seconds
    if margin is None:
        margin = Settings.model_fields["event_ttl_margin_seconds"].default
    policy = {
        "name": POLICY_NAME, "algorithm": "linucb", "context_dim": CONTEXT_DIM, "num_actions": NUM_ACTIONS,
        "reward": {"wait_seconds": args.reward_wait_seconds}, "training": {"publish_every_seconds": 1},
    }  # fmt: skip
    service_env = {"BANDIT_STREAM_RETENTION_SECONDS": f"{args.retention_seconds:g}"}
    if args.event_ttl_margin_seconds is not None:
        service_env["BANDIT_EVENT_TTL_MARGIN_SECONDS"] = f"{args.event_ttl_margin_seconds:g}"
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(harness.scratch_dir("banditd-soak-", keep=args.keep_tmp))
        embedded = stack.enter_context(EmbeddedRedis(tmp / "redis", host=HOST))
        assert embedded.process is not None
        service = stack.enter_context(harness.banditd_up(tmp / "data", embedded.url, tmp / "banditd.log", service_env))
        service.wait_ready()
        harness.post_policy(service.url, policy, service.log)
        for greedy in (False, True):  # first calls of both SavedModel variants, outside the measurement
            body = {"policy": POLICY_NAME, "context": [0.0] * CONTEXT_DIM, "greedy": greedy}
            status, answer = harness.http_request("POST", f"{service.url}/act", orjson.dumps(body))
            if status != 200:
                raise RuntimeError(f"warm-up /act: {status} {answer[:300]!r}")
        print(
            f"soak: {args.duration:g} s, {args.rate:g} /act/s, {args.reward_fraction:.0%} rewarded, stack on "
            f"{service.url} (banditd pid {service.pid}, redis-server pid {embedded.process.pid}), "
            f"stream retention {args.retention_seconds:g} s ({'known to' if retention_known else 'NOT a setting of'} "
            "this checkout's trainer)",
            flush=True,
        )

        start = time.monotonic() + 0.5
        load = Load(args, service.port, start)
        offsets = sample_offsets(args.duration, args.sample_seconds)
        sampler = Sampler(start, offsets, service.pid, embedded.process.pid, embedded.url, service.url)
        with sampler:
            progress = threading.Thread(target=report_progress, args=(load, sampler, args.duration), daemon=True)
            progress.start()
            asyncio.run(load.run())
            sampler.thread.join(timeout=args.sample_seconds + 30)  # the last sample is due at the end
        samples = sampler.samples
        if service.process.poll() is not None:
            print(f"banditd exited early with {service.process.returncode}:\n{harness.tail(service.log)}")
        findings = {"banditd.log": log_findings(service.log), "redis.log": log_findings(tmp / "redis" / "redis.log")}
        final_info = sampler.policy_info()
        store_mib = folder_mib(tmp / "data" / "models" / POLICY_NAME)

    minute_ends = [at(samples, min(60.0 * (m + 1), args.duration)) for m in range(load.minutes)]
    minute_starts = [at(samples, 60.0 * m) for m in range(load.minutes)]
    since = 120.0 if args.duration >= 180 else args.duration / 2  # the end of minute 2: warmed up, streams full
    verdict_lines, verdict = verdicts(samples, since, args.flat_percent)
    errors = sum(load.stats[m][r].errors for m in range(load.minutes) for r in ROUTES)
    title = (
        f"Soak, LinUCB d={CONTEXT_DIM} K={NUM_ACTIONS}, {args.rate:g} /act/s + {args.reward_fraction:.0%} rewarded, "
        f"{args.duration:g} s, publish every 1 s, stream retention {args.retention_seconds:g} s, event keys live "
        f"{args.reward_wait_seconds + margin:g} s (reward window {args.reward_wait_seconds:g} + margin {margin:g})"
    )
    print()
    print(f"{title}:")
    print()
    print(traffic_table(load, minute_ends, minute_starts))
    for m in range(load.minutes):
        for route in ROUTES:
            if text := load.stats[m][route].error_text():
                print(f"  minute {m + 1} {route} errors: {text}")
    print()
    print(memory_table(minute_ends))
    print()
    print(cpu_table(minute_ends, minute_starts))
    print()
    print(f"Errors: {errors}. Memory from {since / 60:g} min to the end (flat: under {args.flat_percent:g}%):")
    print("\n".join(verdict_lines))
    trainer_pids = {tuple(s["processes"].get("trainer", {}).get("pids", [])) for s in samples}
    if len(trainer_pids) > 1:
        print(f"- the trainer's pid changed during the run: {sorted(trainer_pids)}")
    print(f"- model store at the end: {store_mib:.1f} MiB on disk for {POLICY_NAME}")
    for name, found in findings.items():
        print(f"{name}: {found['count']} warning/error lines" + ("; first:" if found["count"] else ""))
        for line in found["first"][:10]:
            print(f"    {line[:300]}")
    elapsed = time.monotonic() - started
    print(f"total wall time {elapsed:.0f}s")

    result = {
        "title": title,
        "args": harness.args_dict(args),
        "policy": policy,
        "service_env": service_env,
        "event_key_ttl_s": args.reward_wait_seconds + margin,
        "stream_retention_setting_known": retention_known,
        "errors": errors,
        "minutes": [
            {
                "minute": m + 1,
                "act": load.stats[m]["/act"].summary(),
                "reward": load.stats[m]["/reward"].summary(),
                "generator_lag_max_ms": load.lag_ms[m],
                "end_sample": minute_ends[m],
            }
            for m in range(load.minutes)
        ],
        "memory_verdict": {"since_s": since, "flat_percent": args.flat_percent, "series": verdict},
        "client_connections_opened": load.pool.opened if load.pool else None,
        "policy_info_at_end": final_info,
        "model_store_mib_at_end": store_mib,
        "log_findings": findings,
        "host": harness.host_info(),
        "source": revision,
        "wall_time_s": round(elapsed, 1),
        "samples": samples,
    }
    harness.write_json(args.json, result)
    plot(load, samples, args.plot, title)
    return 0


def report_progress(load: Load, sampler: Sampler, duration: float) -> None:
    """One line per minute while the soak runs (reads counters the load updates; display only)."""
    for m in range(load.minutes):
        end = min(60.0 * (m + 1), duration)
        time.sleep(max(0.0, load.start + end + 2 - time.monotonic()))
        act, reward = load.stats[m]["/act"], load.stats[m]["/reward"]
        last = sampler.samples[-1] if sampler.samples else {}
        p99 = np.percentile(act.latencies_ms, 99) if act.latencies_ms else math.nan
        print(
            f"  minute {m + 1}: /act {act.sent} sent, {act.errors} errors, p99 {p99:.1f} ms; /reward {reward.sent} "
            f"sent, {reward.errors} errors; live {last.get('policy', {}).get('live_version')}, "
            f"Redis {value(last, 'redis.used_memory_mib'):.1f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    harness.run_main(main)
