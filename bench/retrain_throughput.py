"""Offline retrain throughput in examples/s: `banditd retrain` on an exported Parquet log, for
LinUCB at d=16 K=10 and at the Open Bandit Dataset's shape d=80 K=80.

Run from the repository root:

    .venv/bin/python bench/retrain_throughput.py
    .venv/bin/python bench/retrain_throughput.py --rows 200000 --repeats 3 --redis-rows 50000

Per shape (d, K):

1. A synthetic joined log of --rows decisions (training.simulators.LinearSimulator contexts
   x ~ N(0, I), uniform actions with propensity 1/K, its linear rewards; about 200k rows as in
   the issue) is written with ``JoinedLog.to_parquet`` and read back with ``from_parquet``
   (both timed).
2. Redis (EmbeddedRedis in a temp dir) holds the policy, created through the real app in
   process (fastapi TestClient, POST /policies: export version 1, live "1.0"). Timed, per
   repeat: ``training.offline.retrain`` on the log read from Parquet: the manifest read, a
   fresh policy, ``policy.update`` over every row in batches of offline.UPDATE_BATCH, the export
   of the result as a new SavedModel version and its record as the candidate. The update
   phase alone is timed through the job's progress reports (start/finish of the phase).
   "end to end" adds the Parquet read: file -> candidate version. The candidate's theta is
   checked against the closed-form ridge solution (numpy, float64) on the same rows.
3. With --redis-rows N > 0: ``offline.import_log`` of the first N rows of that Parquet file
   into the policy's Redis log, then ``offline.read_joined_log`` of them (the API's retrain
   reads the log from Redis, not from a file); rows/s of each.

Reported: the median over --repeats. Prints markdown tables and writes
bench/results/retrain_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

from bench import harness

harness.quiet_tensorflow()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from eventlog.sync import LogClient  # noqa: E402
from service.embedded_redis import EmbeddedRedis  # noqa: E402
from training import offline  # noqa: E402
from training.simulators import LinearSimulator  # noqa: E402

RESULTS = harness.RESULTS_DIR / "retrain_throughput.json"


def synthetic_log(name: str, d: int, k: int, n: int, seed: int) -> offline.JoinedLog:
    sim = LinearSimulator(context_dim=d, num_actions=k, seed=seed)
    contexts = sim.contexts(n)
    actions = sim.rng.integers(0, k, size=n).astype(np.int32)
    rewards = sim.rewards(contexts, actions).astype(np.float64)
    ts = 1_795_000_000_000 + np.arange(n, dtype=np.int64)
    return offline.JoinedLog(
        policy=name,
        num_actions=k,
        event_ids=np.array([f"ev{i}" for i in range(n)], object),
        ts_ms=ts,
        versions=np.full(n, "1.0", object),
        contexts=contexts,
        masks=None,
        actions=actions,
        propensities=np.full(n, 1 / k),
        rewards=rewards,
        rewarded=np.ones(n, bool),
        reward_ts_ms=ts + 1,
        experiments=np.full(n, None, object),
        variants=np.full(n, None, object),
        greedy=np.zeros(n, bool),
    )


def ridge_theta(joined: offline.JoinedLog, ridge: float = 1.0) -> np.ndarray:
    """[K, d] closed-form theta_k = (ridge I + X_k^T X_k)^{-1} X_k^T r_k in float64."""
    d, k = joined.context_dim, joined.num_actions
    x, r = joined.contexts.astype(np.float64), joined.rewards.astype(np.float32).astype(np.float64)
    theta = np.zeros((k, d))
    for a in range(k):
        rows = joined.actions == a
        theta[a] = np.linalg.solve(ridge * np.eye(d) + x[rows].T @ x[rows], x[rows].T @ r[rows])
    return theta


class PhaseTimer:
    """offline.Progress that records how long each phase took."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._task, self._started = "", 0.0

    def start(self, task: str, total: int | None) -> None:
        self._task, self._started = task, time.perf_counter()

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        self.seconds[self._task.split()[0]] = time.perf_counter() - self._started


def measure_shape(d: int, k: int, args: argparse.Namespace, url: str, tmp: Path) -> dict[str, Any]:
    name = f"bench-{d}x{k}"
    store = tmp / "models"
    harness.create_policy_in_process(url, tmp, name, d, k)
    joined = synthetic_log(name, d, k, args.rows, args.seed)
    path = tmp / f"{name}.parquet"
    n = len(joined)
    timings: dict[str, list[float]] = {"parquet_write": [], "parquet_read": [], "update": [], "retrain": [], "e2e": []}
    log = LogClient(url)
    max_theta_diff = None
    try:
        for repeat in range(args.repeats):
            start = time.perf_counter()
            joined.to_parquet(path)
            timings["parquet_write"].append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded = offline.JoinedLog.from_parquet(path)
            read = time.perf_counter() - start
            timings["parquet_read"].append(read)
            phases = PhaseTimer()
            start = time.perf_counter()
            export = offline.retrain(store, log, name, loaded, progress=phases)
            retrain = time.perf_counter() - start
            timings["retrain"].append(retrain)
            timings["update"].append(phases.seconds["retrain"])
            timings["e2e"].append(read + retrain)
            if repeat == 0:
                from exporter import loader  # noqa: PLC0415

                theta = loader.load(store, name, export).collect_model.state.theta.numpy()
                reference = ridge_theta(loaded)
                np.testing.assert_allclose(theta, reference, rtol=1e-3, atol=1e-4)
                max_theta_diff = float(np.abs(theta - reference).max())
            print(
                f"  d={d} K={k} repeat {repeat + 1}: write {timings['parquet_write'][-1]:.2f}s, read {read:.2f}s, "
                f"update {phases.seconds['retrain']:.2f}s, retrain {retrain:.2f}s (export {export})",
                flush=True,
            )
        redis_rates: dict[str, float] = {}
        if args.redis_rows > 0:
            subset = min(args.redis_rows, n)
            part = tmp / f"{name}-redis.parquet"
            first = joined.select(slice(0, subset))
            first.to_parquet(part)
            start = time.perf_counter()
            offline.import_log(log, name, part, "parquet")
            redis_rates["import_log_rows_per_s"] = subset / (time.perf_counter() - start)
            start = time.perf_counter()
            from_redis = offline.read_joined_log(log, name)
            redis_rates["read_joined_log_rows_per_s"] = subset / (time.perf_counter() - start)
            assert len(from_redis) == subset
            print(
                f"  d={d} K={k} Redis, {subset:,} rows: import_log {redis_rates['import_log_rows_per_s']:,.0f} rows/s, "
                f"read_joined_log {redis_rates['read_joined_log_rows_per_s']:,.0f} rows/s",
                flush=True,
            )
    finally:
        log.close()
    medians = {key: statistics.median(values) for key, values in timings.items()}
    return {
        "d": d,
        "K": k,
        "rows": n,
        "parquet_bytes": path.stat().st_size,
        "seconds": medians,
        "seconds_all": timings,
        "examples_per_s": {key: n / value for key, value in medians.items()},
        "max_abs_theta_diff": max_theta_diff,
        "redis": redis_rates | ({"rows": min(args.redis_rows, n)} if redis_rates else {}),
    }


def table(rows: list[dict[str, Any]]) -> str:
    cells = []
    for r in rows:
        e = r["examples_per_s"]
        cells.append(
            (
                f"d={r['d']} K={r['K']}", f"{r['rows']:,}", f"{r['parquet_bytes'] / 1e6:.1f}",
                f"{e['parquet_write']:,.0f}", f"{e['parquet_read']:,.0f}", f"{e['update']:,.0f}",
                f"{e['retrain']:,.0f}", f"{e['e2e']:,.0f}",
            )
        )  # fmt: skip
    columns = ("shape", "rows", "Parquet MB", "write rows/s", "read rows/s", "update ex/s", "retrain ex/s",
               "file to candidate")  # fmt: skip
    return harness.markdown_table(columns, "lrrrrrrr", cells)


def redis_table(rows: list[dict[str, Any]]) -> str:
    cells = [
        (f"d={r['d']} K={r['K']}", f"{x['rows']:,}", f"{x['import_log_rows_per_s']:,.0f}",
         f"{x['read_joined_log_rows_per_s']:,.0f}")
        for r in rows
        if (x := r["redis"])
    ]  # fmt: skip
    return harness.markdown_table(("shape", "rows", "import_log rows/s", "read_joined_log rows/s"), "lrrr", cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="16x10,80x80", help="comma-separated DxK (default %(default)s)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the synthetic log (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per shape (median)")
    parser.add_argument("--redis-rows", type=int, default=50_000, help="rows through Redis import/read (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = harness.parse_args(parser, argv, {"shapes": "4x3", "rows": 2000, "repeats": 1, "redis_rows": 500})
    shapes = harness.parse_shapes(args.shapes)
    revision = harness.source_revision()
    print(f"source: {revision}", flush=True)
    print(f"tensorflow {tf.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs", flush=True)
    rows = []
    with (
        harness.scratch_dir("banditd-retrain-bench-") as tmp,
        EmbeddedRedis(tmp / "redis", host=harness.HOST) as server,
    ):
        for d, k in shapes:
            rows.append(measure_shape(d, k, args, server.url, tmp))
    print()
    print(f"Offline retrain from a Parquet log (median of {args.repeats}):")
    print()
    print(table(rows))
    if any(r["redis"] for r in rows):
        print()
        print("Through Redis (the API's retrain reads the log there):")
        print()
        print(redis_table(rows))
    result = {
        "args": harness.args_dict(args),
        "source": revision,
        "platform": harness.host_info(with_platform=False, tensorflow=tf.__version__),
        "rows": rows,
    }
    print()
    harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
