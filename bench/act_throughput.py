"""/act throughput and latency: banditd vs a bare FastAPI endpoint, in one run, on 127.0.0.1.

Acceptance: /act throughput and p50/p99 latency at 1, 8, 32 and 128 concurrent connections,
LinUCB d=16 K=10, Redis logging on, against a bare FastAPI endpoint (bench/bare_app.py) that
parses the same JSON and does a numpy argmax. Target: at 32 connections the service serves at
least 60% of the bare endpoint's requests/s, with p99 <= 25 ms.

Run from the repository root (either form works):

    .venv/bin/python -m bench.act_throughput --duration 10
    .venv/bin/python bench/act_throughput.py --duration 10

What it does: starts redis-server (service.embedded_redis.EmbeddedRedis) in a temp dir,
`banditd serve` against it (BANDIT_DEMO_POLICY=false), creates the policy "bench" (linucb,
d=16, K=10), starts bench/bare_app.py, warms both up, then for each connection count drives
POST /act with the same fixed-seed 16-float context against the service and then the bare app,
closed loop (every connection sends its next request when the previous answer arrives), for
--duration seconds each. The load generator is wrk (Lua script: POST, JSON body, Content-Type)
when it is on PATH, else a minimal asyncio HTTP/1.1 keep-alive client (--generator picks).
Prints a markdown table and writes bench/results/act_throughput.json. Every process it started
is stopped on exit, error, Ctrl-C or SIGTERM.

--profile PREFIX additionally runs py-spy (from the venv or PATH; pip install py-spy) on the
service process for --profile-seconds under 32-connection load, writes PREFIX.txt (py-spy raw
collapsed stacks) and prints the share of samples by thread, by component of the event-loop
thread and by frame.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

from bench import harness
from bench.harness import HOST, REPO
from service.embedded_redis import EmbeddedRedis, free_port

POLICY = {"name": "bench", "algorithm": "linucb", "context_dim": 16, "num_actions": 10}
RESULTS = harness.RESULTS_DIR / "act_throughput.json"
TARGET_CONNECTIONS, TARGET_RATIO, TARGET_P99_MS = 32, 0.60, 25.0


def act_body(seed: int) -> bytes:
    rng = random.Random(seed)
    context = [round(rng.uniform(-1.0, 1.0), 6) for _ in range(POLICY["context_dim"])]
    return json.dumps({"policy": POLICY["name"], "context": context}, separators=(",", ":")).encode()


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over `seconds` (Linux /proc/stat), to flag other work on the machine."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


# -- metrics scraped from the service (exact non-2xx count and batch sizes) ------------------------

_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} ([0-9.eE+-]+)$")


def scrape(base: str) -> dict[str, float]:
    """POST /act request counts by status and the batch-size histogram sums, from /metrics."""
    status, text = harness.http_request("GET", f"{base}/metrics")
    out: dict[str, float] = collections.defaultdict(float)
    if status != 200:
        return out
    for line in text.decode().splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        if name == "serving_requests_total" and 'route="/act"' in labels:
            code = re.search(r'status="(\d+)"', labels)
            if code:
                out["ok" if code.group(1).startswith("2") else "non_2xx"] += float(value)
        elif name in ("serving_batch_size_sum", "serving_batch_size_count"):
            out[name] += float(value)
    return out


# -- load generators ------------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    connections: int
    generator: str
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


WRK_LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT {{\\"requests\\":%d,\\"duration_us\\":%d,\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d," ..
    "\\"max_us\\":%d,\\"mean_us\\":%.1f,\\"status\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"timeout\\":%d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def run_wrk(url: str, connections: int, duration: float, script: Path, threads: int, target: str) -> Run:
    threads = max(1, min(threads, connections))
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s", "--latency",
        "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("WRK_RESULT "))
    seconds = r["duration_us"] / 1e6
    return Run(
        target=target,
        connections=connections,
        generator=f"wrk -t{threads}",
        duration_s=round(seconds, 3),
        requests=r["requests"],
        rps=r["requests"] / seconds,
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        non_2xx=r["status"],  # wrk counts status > 399; /act never answers 1xx/3xx
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
        extra={"wrk_output": "\n".join(ln for ln in done.stdout.splitlines() if not ln.startswith("WRK_RESULT "))},
    )


class _Conn(asyncio.Protocol):
    """One keep-alive connection of the Python generator: send, wait for the full answer, repeat."""

    def __init__(self, request: bytes, deadline: float, stats: dict[str, Any], finished: asyncio.Future[None]) -> None:
        self.request, self.deadline, self.stats, self.finished = request, deadline, stats, finished
        self.buffer = bytearray()
        self.sent_at = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            match = re.search(rb"\r\ncontent-length: *(\d+)", head)
            if match is None:  # only Content-Length framing is expected from uvicorn here
                self.stats["socket_errors"] += 1
                self._finish()
                return
            total = end + 4 + int(match.group(1))
            if len(self.buffer) < total:
                return
            now = time.perf_counter_ns()
            self.stats["latencies"].append(now - self.sent_at)
            if not head[9:10] == b"2":  # b"http/1.1 200 ..."
                self.stats["non_2xx"] += 1
            del self.buffer[:total]
            if time.monotonic() >= self.deadline:
                self._finish()
                return
            self._send()

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.monotonic() < self.deadline:
            self.stats["socket_errors"] += 1
        if not self.finished.done():
            self.finished.set_result(None)


async def _python_load(port: int, path: str, body: bytes, connections: int, duration: float) -> dict[str, Any]:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    stats: dict[str, Any] = {"latencies": [], "non_2xx": 0, "socket_errors": 0}
    start = time.monotonic()
    deadline = start + duration
    finished = [loop.create_future() for _ in range(connections)]
    transports = []
    for fut in finished:
        transport, _ = await loop.create_connection(lambda f=fut: _Conn(request, deadline, stats, f), HOST, port)
        transports.append(transport)
    try:
        await asyncio.wait_for(asyncio.gather(*finished), timeout=duration + 10)
    except TimeoutError:
        stats["socket_errors"] += sum(1 for f in finished if not f.done())
    finally:
        for transport in transports:
            transport.close()
    stats["elapsed"] = time.monotonic() - start
    return stats


def run_python(port: int, body: bytes, connections: int, duration: float, target: str) -> Run:
    try:
        import uvloop  # noqa: PLC0415

        runner = uvloop.run
        name = "python asyncio+uvloop"
    except ImportError:
        runner, name = asyncio.run, "python asyncio"
    stats = runner(_python_load(port, "/act", body, connections, duration))
    latencies = sorted(stats["latencies"])

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, max(0, round(p / 100 * len(latencies)) - 1))] / 1e6

    return Run(
        target=target,
        connections=connections,
        generator=name,
        duration_s=round(stats["elapsed"], 3),
        requests=len(latencies),
        rps=len(latencies) / stats["elapsed"],
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        max_ms=latencies[-1] / 1e6 if latencies else float("nan"),
        non_2xx=stats["non_2xx"],
        socket_errors=stats["socket_errors"],
    )


# -- the two servers and one measured run ---------------------------------------------------------


@dataclass
class Servers:
    """redis-server, `banditd serve` against it and a bare app, all started by start_servers."""

    redis: EmbeddedRedis
    service: harness.Banditd
    bare: harness.Child
    bare_port: int

    @property
    def bare_url(self) -> str:
        return f"http://{HOST}:{self.bare_port}"

    def describe(self) -> str:
        return (
            f"service pid {self.service.pid} on :{self.service.port}, bare pid {self.bare.pid} on :{self.bare_port}, "
            f"redis {self.redis.url}"
        )


def start_servers(stack: contextlib.ExitStack, tmp: Path, bare_script: Path) -> Servers:
    """Starts redis-server, `banditd serve` (no demo policy) and `python bare_script --host --port`
    in tmp, each on stack (so stopped when it unwinds), and waits until both servers answer."""
    redis = stack.enter_context(EmbeddedRedis(tmp / "redis", host=HOST))
    # `banditd serve` keeps the BANDIT_* settings of the shell; uvicorn shuts down cleanly on SIGINT
    env = harness.child_env(
        {"REDIS_URL": redis.url, "BANDIT_DEMO_POLICY": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}, drop_settings=False
    )
    service = stack.enter_context(
        harness.Banditd("serve", tmp / "data", tmp / "service.log", env, stop_signal=signal.SIGINT, stop_timeout=15)
    )
    bare_port = free_port(HOST)
    bare = stack.enter_context(
        harness.Child(
            [sys.executable, str(bare_script), "--host", HOST, "--port", str(bare_port)],
            tmp / "bare.log",
            env,
            stop_signal=signal.SIGINT,
            stop_timeout=15,
        )
    )
    servers = Servers(redis, service, bare, bare_port)
    bare.wait_http_ok(f"{servers.bare_url}/healthz", timeout=60)
    service.wait_ready(timeout=180)
    return servers


def check_act(name: str, base: str, body: bytes, keys: set[str]) -> dict[str, Any]:
    """One POST /act that must answer 200 with at least keys; the decoded answer, else RuntimeError."""
    status, answer = harness.http_request("POST", f"{base}/act", body)
    decision = json.loads(answer) if status == 200 else {}
    if status != 200 or not keys <= decision.keys():
        raise RuntimeError(f"{name} POST /act: {status} {answer[:500]!r}")
    return decision


def drive_act(
    servers: Servers,
    target: str,
    body: bytes,
    connections: int,
    seconds: float,
    *,
    wrk_script: Path | None,
    wrk_threads: int = 1,
) -> Run:
    """One closed-loop run of POST /act with body against target ("service" or "bare"): wrk with
    wrk_script (WRK_LUA holding body) if given, else the Python generator. For the service, the
    exact non-2xx count and the model calls / mean batch size come from its /metrics."""
    base, port = (servers.service.url, servers.service.port) if target == "service" else (
        servers.bare_url, servers.bare_port)  # fmt: skip
    before = scrape(base) if target == "service" else {}
    if wrk_script is not None:
        run = run_wrk(f"{base}/act", connections, seconds, wrk_script, wrk_threads, target)
    else:
        run = run_python(port, body, connections, seconds, target)
    if target == "service":
        after = scrape(base)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        batches = delta.get("serving_batch_size_count", 0.0)
        rows_batched = delta.get("serving_batch_size_sum", 0.0)
        run.non_2xx = max(run.non_2xx, int(delta.get("non_2xx", 0)))  # the server's own count is exact
        run.extra |= {
            "server_counted_2xx": int(delta.get("ok", 0)),
            "server_counted_non_2xx": int(delta.get("non_2xx", 0)),
            "model_calls": int(batches),
            "mean_batch_size": round(rows_batched / batches, 2) if batches else None,
        }
    return run


def run_line(run: Run) -> str:
    """One line of progress for a finished run."""
    batch = f"  mean batch {run.extra.get('mean_batch_size')}" if "mean_batch_size" in run.extra else ""
    return (
        f"{run.target:7s} c={run.connections:<3d} {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
        f"p99 {run.p99_ms:6.2f} ms  errors {run.errors}{batch}"
    )


# -- profile summary ------------------------------------------------------------------------------


COMPONENTS = (  # a sample goes to the component of its innermost frame that matches one
    ("SavedModel call (tensorflow)", ("tensorflow/", "exporter/loader")),
    ("redis client / pipeline", ("redis/", "service/redislog.py")),
    ("pydantic validation", ("pydantic", "_check_float32", "validate_python", "request_body_to_args")),
    ("JSON parse/serialise", ("json/", "orjson", "Request.json", "jsonable_encoder")),
    ("prometheus metrics", ("prometheus_client",)),
    ("threadpool hop (anyio to_thread)", ("anyio/", "run_in_threadpool", "concurrent/futures")),
    ("numpy", ("numpy/",)),
    ("decider / batcher own code", ("service/decisions.py", "service/batcher.py", "training/eventlog")),
    ("service middleware / auth", ("service/middleware.py", "service/auth.py")),
    ("fastapi / starlette", ("fastapi/", "starlette/")),
    ("uvicorn / httptools", ("uvicorn/protocols", "httptools")),
)


def _component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in COMPONENTS:
            if any(needle in frame for needle in needles):
                return name
    return "event loop / asyncio (uvloop C, callbacks, other)"


def summarise_profile(raw: Path, top: int = 12) -> str:
    """Shares of samples by thread, by component (main thread) and by frame, from py-spy raw output."""
    total = 0
    threads: collections.Counter[str] = collections.Counter()
    components: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    main = 0
    boring = (
        "<module>",
        "service/cli.py",
        "uvicorn/main.py",
        "uvicorn/server.py",
        "uvicorn/_compat.py",
        "threading.py",
        "asyncio/runners.py",
    )
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        thread, *frames = stack.split(";")
        if frames and frames[-1].startswith(("Condition.wait", "Queue.get", "_worker (concurrent")):
            continue  # a parked worker thread py-spy did not recognise as idle
        total += n
        threads[re.sub(r" \(\d+\):", ":", thread)] += n
        if "MainThread" in thread:
            main += n
            components[_component(frames)] += n
        for frame in set(frames):
            if not any(b in frame for b in boring):
                inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    if not total:
        return "no samples"
    out = [f"{total} busy samples (all threads; parked pool threads dropped)", "by thread:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in threads.most_common(6)]
    out.append(f"main (event-loop) thread by component, % of main-thread samples ({main}):")
    out += [f"  {100 * n / max(main, 1):5.1f}%  {name}" for name, n in components.most_common()]
    out.append("inclusive (frame anywhere on the stack), % of all busy samples:")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out.append("self (frame on top of the stack), % of all busy samples:")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


# -- the benchmark --------------------------------------------------------------------------------


def fmt_table(rows: list[dict[str, Any]], generator: str) -> str:
    columns = ("connections", "service req/s", "service p50 ms", "service p99 ms", "bare req/s", "bare p50 ms",
               "bare p99 ms", "throughput ratio service/bare", "errors (service / bare)")  # fmt: skip
    cells = []
    for row in rows:
        s, b = row["service"], row["bare"]
        cells.append(
            (row["connections"], f"{s['rps']:.0f}", f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{b['rps']:.0f}",
             f"{b['p50_ms']:.2f}", f"{b['p99_ms']:.2f}", f"{row['ratio']:.2f}",
             f"{s['non_2xx'] + s['socket_errors']} / {b['non_2xx'] + b['socket_errors']}")
        )  # fmt: skip
    table = harness.markdown_table(columns, "r" * len(columns), cells)
    return f"load generator: {generator}; closed loop; each cell is one run of the duration below\n\n{table}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="/act throughput: banditd vs a bare FastAPI endpoint")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per (target, connections) run")
    parser.add_argument("--connections", default="1,8,32,128", help="comma-separated connection counts")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of 32-connection warm-up per target")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1 leaves the CPU to the servers)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request context")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument("--profile", metavar="PREFIX", help="py-spy the service under 32-conn load; PREFIX.txt")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument(
        "--py-spy-args",
        default="--gil --nonblocking",
        help='py-spy record options besides pid/duration/rate/raw/threads (default "%(default)s": samples the '
        "GIL holder without pausing the service); pass as --py-spy-args='...'",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, Redis data)")
    args = harness.parse_args(parser, argv, {"duration": 1.0, "connections": "1,8", "warmup": 0.5})
    connection_counts = [int(c) for c in args.connections.split(",") if c.strip()]
    if args.generator == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not on PATH")
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk") is not None)
    if harness.venv_tool("banditd") is None:
        parser.error("no banditd executable next to this python or on PATH")

    harness.stop_on_signals()
    started = time.monotonic()
    revision, busy_at_start = harness.source_revision("served_code_modified"), cpu_busy()
    if busy_at_start is not None and busy_at_start > 0.2:
        print(f"warning: CPUs {100 * busy_at_start:.0f}% busy before start; other work on this machine skews results")
    body = act_body(args.seed)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(harness.scratch_dir("banditd-bench-", keep=args.keep_tmp))
        servers = start_servers(stack, tmp, REPO / "bench" / "bare_app.py")
        service = servers.service
        harness.post_policy(service.url, POLICY, service.log)
        for name, base in (("service", service.url), ("bare", servers.bare_url)):
            check_act(name, base, body, {"event_id", "action", "propensity", "scores"})
        print(servers.describe())

        script = tmp / "act.lua"
        script.write_text(WRK_LUA.format(body=body.decode()))

        def drive(target: str, connections: int, seconds: float) -> Run:
            return drive_act(servers, target, body, connections, seconds, wrk_script=script if use_wrk else None,
                             wrk_threads=args.wrk_threads)  # fmt: skip

        for target in ("service", "bare"):
            drive(target, 32, args.warmup)
        generator = "wrk" if use_wrk else "python"
        rows = []
        for connections in connection_counts:
            runs = {}
            for target in ("service", "bare"):
                run = drive(target, connections, args.duration)
                runs[target] = run
                generator = run.generator
                print(f"  {run_line(run)}", flush=True)
                time.sleep(0.5)
            ratio = runs["service"].rps / runs["bare"].rps if runs["bare"].rps else float("nan")
            rows.append({"connections": connections, "ratio": ratio} | {k: asdict(v) for k, v in runs.items()})

        print()
        print(fmt_table(rows, generator))
        at = next((row for row in rows if row["connections"] == TARGET_CONNECTIONS), None)
        if at is None:
            verdict = {"met": None, "detail": f"not measured ({TARGET_CONNECTIONS} connections not in the run)"}
        else:
            ratio_ok = at["ratio"] >= TARGET_RATIO
            p99_ok = at["service"]["p99_ms"] <= TARGET_P99_MS
            verdict = {
                "met": ratio_ok and p99_ok,
                "detail": (
                    f"ratio {at['ratio']:.2f} {'>=' if ratio_ok else '<'} {TARGET_RATIO:.2f}, "
                    f"service p99 {at['service']['p99_ms']:.2f} ms {'<=' if p99_ok else '>'} {TARGET_P99_MS:g} ms"
                ),
            }
        word = {True: "MET", False: "NOT MET", None: "NOT EVALUATED"}[verdict["met"]]
        print()
        print(
            f"Target (at {TARGET_CONNECTIONS} connections: service/bare throughput >= {TARGET_RATIO:.2f} and "
            f"service p99 <= {TARGET_P99_MS:g} ms): {word} ({verdict['detail']})"
        )
        errors = [(r["connections"], t, r[t]) for r in rows for t in ("service", "bare")]
        if any(run["non_2xx"] or run["socket_errors"] for _, _, run in errors):
            print(
                "errors: "
                + ", ".join(
                    f"{t} c={c}: non-2xx {x['non_2xx']}, socket {x['socket_errors']}"
                    for c, t, x in errors
                    if x["non_2xx"] or x["socket_errors"]
                )
            )
        elapsed = time.monotonic() - started
        print(f"duration per run {args.duration:g}s; total wall time {elapsed:.0f}s")

        result = {
            "acceptance": {
                "connections": TARGET_CONNECTIONS, "min_ratio": TARGET_RATIO, "max_p99_ms": TARGET_P99_MS,
            } | verdict,
            "generator": generator,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "policy": POLICY,
            "request_body": body.decode(),
            "host": harness.host_info(cpu_busy_before_start=busy_at_start),
            "source": revision,
            "wall_time_s": round(elapsed, 1),
            "rows": rows,
        }  # fmt: skip

        if args.profile:
            result["profile"] = profile(args, service.pid, lambda s: drive("service", TARGET_CONNECTIONS, s))

        harness.write_json(args.json, result)
    return 0


def profile(args: argparse.Namespace, pid: int, load: Any) -> dict[str, Any]:
    """py-spy record of the service while `load` drives it at 32 connections."""
    py_spy = harness.venv_tool("py-spy")
    if py_spy is None:
        print("--profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        return {"error": "py-spy not found"}
    raw = Path(f"{args.profile}.txt")
    seconds = args.profile_seconds
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
               "--format", "raw", "--output", str(raw), "--threads", *shlex.split(args.py_spy_args)]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True) as spy:
        try:
            run = load(seconds + 3)  # the load outlasts the recording; py-spy attaches within a second
            out, _ = spy.communicate(timeout=30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait(timeout=10)
    print()
    print(
        f"profile under {TARGET_CONNECTIONS}-connection load ({run.rps:.0f} req/s, p99 {run.p99_ms:.2f} ms "
        f"while profiled), {' '.join(command[1:])}:"
    )
    summary = summarise_profile(raw) if raw.is_file() else f"py-spy failed: {out.decode(errors='replace')}"
    print(summary)
    return {"raw": str(raw), "rps_under_profile": run.rps, "p99_ms_under_profile": run.p99_ms, "summary": summary}


if __name__ == "__main__":
    harness.run_main(main)
