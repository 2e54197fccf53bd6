"""/act over candidate sets: throughput and latency of banditd vs a bare FastAPI endpoint, in one run.

A shared-parameter LinUCB policy (bandits/shared_linear.py: one ridge regression on the joint
features vec([1, x][1, z]^T), D = 17 * 17 = 289) with context 16 and 16 features per candidate
chooses among 10, 50 and 256 candidates a request, Redis logging on (every decision, with all
its candidates' ids and features, is in Redis before the answer). The baseline,
bench/bare_candidates_app.py, parses the same body into a copy of the request models and scores
the candidates with the same LinUCB math in numpy (the same Kronecker contraction) against a
fixed theta and A^-1.

Run from the repository root (either form works):

    .venv/bin/python -m bench.candidates_act --duration 10
    .venv/bin/python bench/candidates_act.py --duration 10

What it does: starts redis-server, `banditd serve` and the bare app (bench/act_throughput.py's
start_servers), creates the policy "cands", then for each candidate count builds one fixed-seed
body (ids "item-0".., features uniform in [-1, 1] to 6 decimals), warms both targets up at 32
connections, and drives POST /act closed loop at each connection count (default 1 and 32),
--duration seconds a run, the service then the bare app, with act_throughput's load generator
(wrk when on PATH, else its asyncio client). Prints the request body sizes and a markdown table
and writes bench/results/candidates_act.json. Every process it started is stopped on exit,
error, Ctrl-C or SIGTERM.

--profile PREFIX additionally runs py-spy on the service under 32-connection load with
--profile-candidates candidates (default 256); see act_throughput's --profile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

from bench import act_throughput, harness
from bench.harness import REPO

CONTEXT_DIM, FEATURE_DIM, MAX_CANDIDATES = 16, 16, 256
POLICY = {
    "name": "cands",
    "algorithm": "linucb",
    "context_dim": CONTEXT_DIM,
    "action_feature_dim": FEATURE_DIM,
    "max_candidates": MAX_CANDIDATES,
}
BARE_APP = REPO / "bench" / "bare_candidates_app.py"
RESULTS = harness.RESULTS_DIR / "candidates_act.json"
ANSWER_KEYS = {"event_id", "action", "action_index", "propensity", "policy", "version", "scores"}


def candidates_body(candidates: int, seed: int) -> bytes:
    """The request body with `candidates` candidates, the same for the same (candidates, seed)."""
    rng = random.Random(seed * 100_003 + candidates)

    def vector(n: int) -> list[float]:
        return [round(rng.uniform(-1.0, 1.0), 6) for _ in range(n)]

    body = {
        "policy": POLICY["name"],
        "context": vector(CONTEXT_DIM),
        "actions": [{"id": f"item-{i}", "features": vector(FEATURE_DIM)} for i in range(candidates)],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def check_answer(name: str, base: str, body: bytes, candidates: int) -> int:
    """One POST /act; RuntimeError unless it is a decision among the candidates; the answer's size."""
    answer = act_throughput.check_act(name, base, body, ANSWER_KEYS)
    ids = [c["id"] for c in json.loads(body)["actions"]]
    index = answer["action_index"]
    if len(answer["scores"]) != candidates or not 0 <= index < candidates or answer["action"] != ids[index]:
        raise RuntimeError(f"{name} POST /act with {candidates} candidates: unexpected answer {answer!r:.500}")
    return len(json.dumps(answer, separators=(",", ":")))


def fmt_table(rows: list[dict[str, Any]], generator: str) -> str:
    columns = ("candidates", "connections", "service req/s", "service p50 ms", "service p99 ms", "bare req/s",
               "bare p50 ms", "bare p99 ms", "ratio service/bare", "errors (service / bare)")  # fmt: skip
    cells = []
    for row in rows:
        s, b = row["service"], row["bare"]
        cells.append(
            (row["candidates"], row["connections"], f"{s['rps']:.0f}", f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}",
             f"{b['rps']:.0f}", f"{b['p50_ms']:.2f}", f"{b['p99_ms']:.2f}", f"{row['ratio']:.2f}",
             f"{s['non_2xx'] + s['socket_errors']} / {b['non_2xx'] + b['socket_errors']}")
        )  # fmt: skip
    table = harness.markdown_table(columns, "r" * len(columns), cells)
    return f"load generator: {generator}; closed loop; each cell is one run of the duration below\n\n{table}"


def fmt_sizes(sizes: dict[int, dict[str, int]]) -> str:
    cells = [
        (k, f"{s['request_bytes']:,}", f"{s['request_bytes'] / k:.0f}", f"{s['service_answer_bytes']:,}")
        for k, s in sizes.items()
    ]
    columns = ("candidates", "request body bytes", "bytes per candidate", "answer bytes (service)")
    return harness.markdown_table(columns, "rrrr", cells)


def machine_load() -> dict[str, Any]:
    """CPU share busy over a second and the load averages, to flag other work on the machine."""
    busy = act_throughput.cpu_busy()
    with contextlib.suppress(OSError):
        return {"cpu_busy": busy, "loadavg": [round(v, 2) for v in os.getloadavg()]}
    return {"cpu_busy": busy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="/act over candidate sets: banditd vs a bare FastAPI endpoint")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per (candidates, target, connections)")
    parser.add_argument("--candidates", default="10,50,256", help=f"comma-separated counts (1 to {MAX_CANDIDATES})")
    parser.add_argument("--connections", default="1,32", help="comma-separated connection counts")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of 32-connection warm-up per target and K")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1 leaves the CPU to the servers)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request bodies")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument("--profile", metavar="PREFIX", help="py-spy the service under 32-conn load; PREFIX.txt")
    parser.add_argument("--profile-candidates", type=int, default=MAX_CANDIDATES, help="candidates while profiled")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--py-spy-args", default="--gil --nonblocking", help="see act_throughput --py-spy-args")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, Redis data)")
    smoke = {"duration": 1.0, "candidates": "10", "connections": "1,8", "warmup": 0.5}
    args = harness.parse_args(parser, argv, smoke)
    counts = [int(c) for c in args.candidates.split(",") if c.strip()]
    connection_counts = [int(c) for c in args.connections.split(",") if c.strip()]
    if not all(1 <= k <= MAX_CANDIDATES for k in [*counts, args.profile_candidates]):
        parser.error(f"candidate counts must be 1 to {MAX_CANDIDATES}")
    if args.generator == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not on PATH")
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk") is not None)
    if harness.venv_tool("banditd") is None:
        parser.error("no banditd executable next to this python or on PATH")

    harness.stop_on_signals()
    started = time.monotonic()
    revision, load_at_start = harness.source_revision("served_code_modified"), machine_load()
    if (load_at_start["cpu_busy"] or 0) > 0.2:
        print(
            f"warning: CPUs {100 * load_at_start['cpu_busy']:.0f}% busy before start (load average "
            f"{load_at_start.get('loadavg')}); other work on this machine skews results"
        )
    bodies = {k: candidates_body(k, args.seed) for k in sorted(set([*counts, args.profile_candidates]))}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(harness.scratch_dir("banditd-bench-", keep=args.keep_tmp))
        servers = act_throughput.start_servers(stack, tmp, BARE_APP)
        harness.post_policy(servers.service.url, POLICY, servers.service.log)
        sizes: dict[int, dict[str, int]] = {}
        for k in counts:
            service_answer = check_answer("service", servers.service.url, bodies[k], k)
            check_answer("bare", servers.bare_url, bodies[k], k)
            sizes[k] = {"request_bytes": len(bodies[k]), "service_answer_bytes": service_answer}
        print(servers.describe())
        print()
        print(fmt_sizes(sizes))
        print()

        def drive(target: str, k: int, connections: int, seconds: float) -> act_throughput.Run:
            script = None
            if use_wrk:
                script = tmp / f"act-{k}.lua"
                if not script.exists():
                    script.write_text(act_throughput.WRK_LUA.format(body=bodies[k].decode()))
            return act_throughput.drive_act(
                servers, target, bodies[k], connections, seconds, wrk_script=script, wrk_threads=args.wrk_threads
            )

        generator = "wrk" if use_wrk else "python"
        rows = []
        for k in counts:
            for target in ("service", "bare"):
                drive(target, k, 32, args.warmup)
            for connections in connection_counts:
                runs = {}
                for target in ("service", "bare"):
                    run = drive(target, k, connections, args.duration)
                    runs[target] = run
                    generator = run.generator
                    print(f"  K={k:<4d} {act_throughput.run_line(run)}", flush=True)
                    time.sleep(0.5)
                ratio = runs["service"].rps / runs["bare"].rps if runs["bare"].rps else float("nan")
                rows.append(
                    {"candidates": k, "connections": connections, "ratio": ratio}
                    | {t: asdict(r) for t, r in runs.items()}
                )

        print()
        print(fmt_table(rows, generator))
        bad = [(r["candidates"], r["connections"], t, r[t]) for r in rows for t in ("service", "bare")]
        if any(x["non_2xx"] or x["socket_errors"] for *_, x in bad):
            print(
                "errors: "
                + ", ".join(
                    f"{t} K={k} c={c}: non-2xx {x['non_2xx']}, socket {x['socket_errors']}"
                    for k, c, t, x in bad
                    if x["non_2xx"] or x["socket_errors"]
                )
            )

        profiled = None
        if args.profile:
            k = args.profile_candidates
            print(f"\nprofiling with {k} candidates")
            profiled = act_throughput.profile(args, servers.service.pid, lambda s: drive("service", k, 32, s))
            profiled["candidates"] = k

        load_at_end = machine_load()
        elapsed = time.monotonic() - started
        print(
            f"\nduration per run {args.duration:g}s; total wall time {elapsed:.0f}s; machine load before "
            f"{load_at_start}, after {load_at_end}"
        )
        result = {
            "generator": generator,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "policy": POLICY,
            "bare_app": str(BARE_APP.relative_to(REPO)),
            "body_seed": args.seed,
            "sizes": {str(k): v for k, v in sizes.items()},
            "host": harness.host_info(load_before=load_at_start, load_after=load_at_end),
            "source": revision,
            "wall_time_s": round(elapsed, 1),
            "rows": rows,
        }
        if profiled is not None:
            result["profile"] = profiled
        harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
