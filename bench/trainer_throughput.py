"""Trainer throughput in examples/s for LinUCB at d=16 K=10 and at d=64 K=50, against a plain
numpy implementation of the same update in the same run. Target: at least 50,000 examples/s
at d=16 K=10.

Run from the repository root:

    .venv/bin/python bench/trainer_throughput.py
    .venv/bin/python bench/trainer_throughput.py --update-examples 50000 --trainer-examples 100000,20000

Two measurements per shape (d, K):

(a) Update only. ``bandits.build("linucb", d, K, {}).update`` on pre-generated examples
    (contexts ~ N(0, I) float32, uniform actions, LinearSimulator rewards) fed in batches of
    1,000 and of 10,000, against ``NumpyLinUCB`` below: exactly the same math in float64 (per
    action A_k += sum x x^T, b_k += sum r x, then A_k^{-1} and theta_k = A_k^{-1} b_k with
    np.linalg), same batches. Both start fresh for every repeat; a separate warm-up run of each
    batch size excludes first-call costs (op kernel set-up, any tf.function tracing). After the
    first timed repeat the TF policy's theta, A and b are asserted allclose to numpy's, so both
    sides did the same work. Reported: the median examples/s over --repeats.
    A diagnostic table adds two variants that are not the service's code path: the same TF math
    run as one compiled graph (``bandits.linear._updated``, a tf.function the policy defines but
    ``update`` does not call), and numpy with a one-hot formulation (a one-hot-weighted
    [n, K, d] tensor and one matmul, O(n K d^2) work instead of the per-action O(n d^2); the
    formulation bandits.linalg.accumulate used before commit afad57f).

(b) The whole trainer path. Starts redis-server (EmbeddedRedis) in a temp dir, creates the
    policy through the real app in process (fastapi TestClient, POST /policies: build, export
    version 1, live pointer "1.0"), writes N decision records then N reward records straight into
    the Redis streams with redis-py (training.eventlog DecisionRecord / RewardRecord .to_fields(),
    each reward naming its decision's stream entry, late=False), then times
    ``PolicyTrainer(LogClient(url), store, name, TrainerMetrics(), 0.0, 5000, holder=None,
    start_from="1.0").drain()``: read (XRANGE + record parsing), join, update, i.e. everything but
    publishing. examples/s = N / drain time (the trainer's construction, which loads version 1.0,
    is timed separately). The time spent in the Redis reads and in policy.update is measured by
    wrapping those two calls, the rest (joining, building the example arrays) is the remainder.
    The drained policy's theta is checked against numpy on the same examples.

Prints markdown tables and writes bench/results/trainer_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

from bench import harness

harness.quiet_tensorflow()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bandits  # noqa: E402
from bandits import linear as tf_linear  # noqa: E402
from service.embedded_redis import EmbeddedRedis  # noqa: E402
from training.simulators import LinearSimulator  # noqa: E402

RESULTS = harness.RESULTS_DIR / "trainer_throughput.json"
TARGET_SHAPE, TARGET_EXAMPLES_PER_S = (16, 10), 50_000
RIDGE = 1.0


# -- the reference: plain numpy ----------------------------------------------------------------


class NumpyLinUCB:
    """LinUCB's sufficient statistics and solution in plain numpy float64 (the same math as
    bandits.linalg.accumulate + ridge_solution): per action k, A_k = ridge*I + sum x x^T,
    b_k = sum r x, theta_k = A_k^{-1} b_k."""

    def __init__(self, context_dim: int, num_actions: int, ridge: float = RIDGE, one_hot: bool = False) -> None:
        self.d, self.k, self.one_hot = context_dim, num_actions, one_hot
        self.gram = np.tile(ridge * np.eye(context_dim), (num_actions, 1, 1))
        self.reward_sums = np.zeros((num_actions, context_dim))
        self.counts = np.zeros(num_actions)
        self.gram_inverse: np.ndarray = np.tile(np.eye(context_dim) / ridge, (num_actions, 1, 1))
        self.theta: np.ndarray = np.zeros((num_actions, context_dim))

    def update(self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        x = contexts.astype(np.float64)
        r = rewards.astype(np.float64)
        if self.one_hot:  # TF's formulation: [n, K, d] one-hot-weighted contexts, one big matmul
            w = np.zeros((len(actions), self.k))
            w[np.arange(len(actions)), actions] = 1.0
            weighted = (w[:, :, None] * x[:, None, :]).reshape(len(actions), self.k * self.d)
            self.gram += (weighted.T @ x).reshape(self.k, self.d, self.d)
            self.reward_sums += (weighted.T @ r).reshape(self.k, self.d)
            self.counts += w.sum(axis=0)
        else:  # group the batch by action: O(n d^2) work in total
            order = np.argsort(actions, kind="stable")
            counts = np.bincount(actions, minlength=self.k)
            xs, rs = x[order], r[order]
            start = 0
            for k, n in enumerate(counts):
                if n:
                    block = xs[start : start + n]
                    self.gram[k] += block.T @ block
                    self.reward_sums[k] += block.T @ rs[start : start + n]
                    start += n
            self.counts += counts
        self.gram_inverse = np.linalg.inv(self.gram)
        self.theta = np.linalg.solve(self.gram, self.reward_sums[:, :, None])[:, :, 0]


# -- (a) update only -----------------------------------------------------------------------------


@dataclass
class Data:
    contexts: np.ndarray  # [n, d] float32
    actions: np.ndarray  # [n] int32
    rewards: np.ndarray  # [n] float32


def make_data(d: int, k: int, n: int, seed: int) -> Data:
    sim = LinearSimulator(context_dim=d, num_actions=k, seed=seed)
    contexts = sim.contexts(n)
    actions = sim.rng.integers(0, k, size=n).astype(np.int32)
    return Data(contexts, actions, sim.rewards(contexts, actions))


def batches(data: Data, size: int) -> list[tuple[np.ndarray, ...]]:
    n = len(data.actions)
    out: list[tuple[np.ndarray, ...]] = []
    for lo in range(0, n, size):
        hi = min(lo + size, n)
        out.append((data.contexts[lo:hi], data.actions[lo:hi], data.rewards[lo:hi], np.ones(hi - lo, np.float32)))
    return out


class GraphLinUCB:
    """Diagnostic only: the policy's own update math run as the compiled graph
    bandits.linear._updated (defined next to LinearPolicy.update, which runs eagerly instead)."""

    def __init__(self, d: int, k: int) -> None:
        self.policy = bandits.build("linucb", d, k, {})

    def update(self, contexts: Any, actions: Any, rewards: Any, weights: Any) -> None:
        s = self.policy.state
        gram, reward_sums, counts, theta, gram_inverse = tf_linear._updated(
            s.gram, s.reward_sums, s.counts, contexts, actions, rewards, weights
        )
        s.gram.assign(gram)
        s.reward_sums.assign(reward_sums)
        s.counts.assign(counts)
        s.theta.assign(theta)
        s.gram_inverse.assign(gram_inverse)
        s.train_step.assign_add(1)


def run_updates(make: Callable[[], Any], feed: list[tuple[np.ndarray, ...]], numpy_api: bool) -> tuple[float, Any]:
    """Seconds to apply every batch to a fresh model from make(); returns (seconds, model)."""
    model = make()
    start = time.perf_counter()
    for contexts, actions, rewards, weights in feed:
        if numpy_api:
            model.update(contexts, actions, rewards)
        else:
            model.update(contexts, actions, rewards, weights)
    if not numpy_api:  # make sure every TF op has finished (eager ops are synchronous on CPU anyway)
        state = model.policy.state if isinstance(model, GraphLinUCB) else model.state
        state.theta.numpy()
    return time.perf_counter() - start, model


def check_same(tf_policy: Any, reference: NumpyLinUCB, what: str) -> dict[str, float]:
    """Asserts the TF policy holds the numpy reference's statistics and solution."""
    s = tf_policy.state
    gram, reward_sums, theta = s.gram.numpy(), s.reward_sums.numpy(), s.theta.numpy()
    np.testing.assert_allclose(gram, reference.gram, rtol=1e-9, atol=1e-9, err_msg=f"{what}: A")
    np.testing.assert_allclose(reward_sums, reference.reward_sums, rtol=1e-9, atol=1e-9, err_msg=f"{what}: b")
    np.testing.assert_allclose(theta, reference.theta, rtol=1e-4, atol=1e-5, err_msg=f"{what}: theta")
    np.testing.assert_allclose(s.counts.numpy(), reference.counts, err_msg=f"{what}: counts")
    return {"max_abs_theta_diff": float(np.abs(theta - reference.theta).max())}


def measure_update(d: int, k: int, batch: int, data: Data, repeats: int, budget_s: float) -> dict[str, Any]:
    feed = batches(data, batch)
    n = len(data.actions)
    variants: dict[str, tuple[Callable[[], Any], bool]] = {
        "tf": (lambda: bandits.build("linucb", d, k, {}), False),
        "numpy": (lambda: NumpyLinUCB(d, k), True),
        "tf_graph": (lambda: GraphLinUCB(d, k), False),
        "numpy_one_hot": (lambda: NumpyLinUCB(d, k, one_hot=True), True),
    }
    warm = feed[: min(3, len(feed))]
    for make, numpy_api in variants.values():
        run_updates(make, warm, numpy_api)  # warm-up (first-call costs, tf.function tracing)
    times: dict[str, list[float]] = {name: [] for name in variants}
    check: dict[str, float] = {}
    deadline = time.monotonic() + budget_s
    for repeat in range(repeats):
        models = {}
        for name, (make, numpy_api) in variants.items():
            seconds, models[name] = run_updates(make, feed, numpy_api)
            times[name].append(seconds)
        if repeat == 0:  # honesty check: every variant ends in the numpy reference's state
            check = check_same(models["tf"], models["numpy"], f"d={d} K={k} batch={batch} tf")
            check_same(models["tf_graph"].policy, models["numpy"], f"d={d} K={k} batch={batch} tf_graph")
            np.testing.assert_allclose(models["numpy_one_hot"].theta, models["numpy"].theta, rtol=1e-9, atol=1e-9)
        if time.monotonic() > deadline:
            break
    rates = {name: n / statistics.median(ts) for name, ts in times.items()}
    return {
        "d": d, "K": k, "batch": batch, "examples": n, "repeats": len(times["tf"]),
        "examples_per_s": rates, "seconds": times, "ratio_tf_over_numpy": rates["tf"] / rates["numpy"], **check,
    }  # fmt: skip


# -- (b) the whole trainer path --------------------------------------------------------------------


def fill_log(url: str, name: str, data: Data, k: int, chunk: int = 2000) -> float:
    """Writes one decision per example, then one reward per decision; returns seconds taken."""
    import redis  # noqa: PLC0415

    import eventlog  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    start = time.perf_counter()
    n = len(data.actions)
    now_ms = int(time.time() * 1000)
    entries: list[str] = []
    scores = [0.0] * k
    try:
        for lo in range(0, n, chunk):
            with client.pipeline(transaction=False) as pipe:
                for i in range(lo, min(lo + chunk, n)):
                    record = eventlog.DecisionRecord(
                        event_id=f"ev{i}", ts_ms=now_ms, policy=name, version="1.0",
                        context=data.contexts[i].tolist(), mask=None, action=int(data.actions[i]),
                        propensity=0.955, scores=scores, greedy=False, unit_id=None, seed=i,
                    )  # fmt: skip
                    pipe.xadd(eventlog.decisions_key(name), record.to_fields())  # type: ignore[arg-type]
                entries.extend(e.decode() for e in pipe.execute())
        for lo in range(0, n, chunk):
            with client.pipeline(transaction=False) as pipe:
                for i in range(lo, min(lo + chunk, n)):
                    reward = eventlog.RewardRecord(
                        event_id=f"ev{i}", ts_ms=now_ms + 1, reward=float(data.rewards[i]), late=False,
                        decision_entry=entries[i], sequence=1,
                    )  # fmt: skip
                    pipe.xadd(eventlog.rewards_key(name), reward.to_fields())  # type: ignore[arg-type]
                pipe.execute()
        client.hset(eventlog.stats_key(name), mapping={"decisions": n, "rewards": n})
    finally:
        client.close()
    return time.perf_counter() - start


def example_count(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The number of examples in one ``policy.update`` call, whatever its form: one batch of
    examples with an ``actions`` field, or ``(contexts, actions, ...)`` positionally or by name."""
    first = args[0] if args else next(iter(kwargs.values()))
    if hasattr(first, "actions"):
        return len(first.actions)
    return len(args[1] if len(args) > 1 else kwargs["actions"])


def measure_trainer(d: int, k: int, n: int, read_batch: int, seed: int, tmp: Path) -> dict[str, Any]:
    from eventlog.sync import LogClient  # noqa: PLC0415
    from training.metrics import TrainerMetrics  # noqa: PLC0415
    from training.trainer import PolicyTrainer  # noqa: PLC0415

    name = f"tp{d}x{k}"
    data = make_data(d, k, n, seed)
    folder = tmp / name
    with EmbeddedRedis(folder / "redis", host=harness.HOST) as server:
        url = server.url
        harness.create_policy_in_process(url, folder / "data", name, d, k)
        fill_seconds = fill_log(url, name, data, k)
        log = LogClient(url)
        spent = {"read_decisions": 0.0, "read_rewards": 0.0}
        for method in spent:
            original = getattr(log, method)

            def timed(*args: Any, _original: Any = original, _method: str = method, **kwargs: Any) -> Any:
                t = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    spent[_method] += time.perf_counter() - t

            setattr(log, method, timed)
        try:
            metrics = TrainerMetrics()
            start = time.perf_counter()
            trainer = PolicyTrainer(log, folder / "data" / "models", name, metrics, 0.0, read_batch,
                                    holder=None, start_from="1.0")  # fmt: skip
            construct_s = time.perf_counter() - start
            update_calls: list[int] = []
            original_update = trainer.policy.update

            def counted_update(*args: Any, **kwargs: Any) -> Any:
                update_calls.append(example_count(args, kwargs))
                return original_update(*args, **kwargs)

            trainer.policy.__dict__["update"] = counted_update  # instance attribute; bypasses tf.Module tracking
            start = time.perf_counter()
            trainer.drain()
            drain_s = time.perf_counter() - start
        finally:
            log.close()
    update_s = metrics.registry.get_sample_value("trainer_update_seconds_sum", {"policy": name}) or 0.0
    applied = trainer.state.applied
    if applied != n:
        raise AssertionError(f"the trainer applied {applied} examples, expected {n}")
    reference = NumpyLinUCB(d, k)
    reference.update(data.contexts, data.actions, data.rewards)
    check = check_same(trainer.policy, reference, f"trainer d={d} K={k}")
    read_s = spent["read_decisions"] + spent["read_rewards"]
    return {
        "d": d, "K": k, "examples": n, "read_batch": read_batch, "fill_seconds": fill_seconds,
        "construct_seconds": construct_s, "drain_seconds": drain_s, "examples_per_s": n / drain_s,
        "read_seconds": read_s, "update_seconds": update_s, "other_seconds": drain_s - read_s - update_s,
        "update_calls": len(update_calls), "largest_update_batch": max(update_calls, default=0),
        "outcomes": dict(trainer.join.outcomes), **check,
    }  # fmt: skip


# -- output ------------------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def update_table(rows: list[dict[str, Any]]) -> str:
    cells = []
    for r in rows:
        e = r["examples_per_s"]
        cells.append((f"d={r['d']} K={r['K']}", f"{r['batch']:,}", fmt_rate(e["tf"]), fmt_rate(e["numpy"]),
                      f"{r['ratio_tf_over_numpy']:.2f}"))  # fmt: skip
    return harness.markdown_table(("shape", "batch", "TF update ex/s", "numpy ex/s", "ratio"), "lrrrr", cells)


def diagnostic_table(rows: list[dict[str, Any]]) -> str:
    cells = []
    for r in rows:
        e = r["examples_per_s"]
        cells.append((f"d={r['d']} K={r['K']}", f"{r['batch']:,}", fmt_rate(e["tf"]), fmt_rate(e["tf_graph"]),
                      fmt_rate(e["numpy"]), fmt_rate(e["numpy_one_hot"])))  # fmt: skip
    columns = ("shape", "batch", "TF policy.update ex/s", "TF _updated alone (one chunk) ex/s",
               "numpy per-action ex/s", "numpy one-hot ex/s")  # fmt: skip
    return harness.markdown_table(columns, "lrrrrr", cells)


def trainer_table(rows: list[dict[str, Any]]) -> str:
    cells = [
        (f"d={r['d']} K={r['K']}", f"{r['examples']:,}", f"{r['drain_seconds']:.2f}", fmt_rate(r["examples_per_s"]),
         f"{r['read_seconds']:.2f}", f"{r['update_seconds']:.2f}", f"{r['other_seconds']:.2f}",
         f"{r['update_calls']} ({r['largest_update_batch']:,})")
        for r in rows
    ]  # fmt: skip
    columns = ("shape", "examples", "drain s", "trainer ex/s (read+join+update)", "read s", "update s", "other s",
               "update calls (largest)")  # fmt: skip
    return harness.markdown_table(columns, "lrrrrrrr", cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="16x10,64x50", help="comma-separated DxK (default %(default)s)")
    parser.add_argument("--batches", default="1000,10000", help="update batch sizes (default %(default)s)")
    parser.add_argument("--update-examples", type=int, default=100_000, help="examples per update-only run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per update-only cell (median)")
    parser.add_argument("--update-budget", type=float, default=60.0, help="stop repeating a cell after this many s")
    parser.add_argument(
        "--trainer-examples", default="200000,50000", help="N decisions+rewards per shape for the trainer path"
    )
    parser.add_argument("--read-batch", type=int, default=5000, help="PolicyTrainer read_batch (default %(default)s)")
    parser.add_argument("--skip-trainer", action="store_true", help="only the update-only measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS)
    smoke = {"shapes": "16x10", "batches": "100,1000", "update_examples": 2000, "repeats": 1,
             "trainer_examples": "2000"}  # fmt: skip
    args = harness.parse_args(parser, argv, smoke)
    shapes = harness.parse_shapes(args.shapes)
    batch_sizes = [int(b) for b in args.batches.split(",")]
    trainer_n = [int(n) for n in args.trainer_examples.split(",")]
    if len(trainer_n) == 1:
        trainer_n *= len(shapes)
    if len(trainer_n) != len(shapes):
        parser.error("--trainer-examples needs one value or one per shape")

    harness.stop_on_signals()
    started = time.monotonic()
    revision = harness.source_revision()
    print(f"source: {revision}", flush=True)
    print(f"tensorflow {tf.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs", flush=True)

    update_rows = []
    for d, k in shapes:
        data = make_data(d, k, args.update_examples, args.seed)
        for batch in batch_sizes:
            row = measure_update(d, k, batch, data, args.repeats, args.update_budget)
            e = row["examples_per_s"]
            print(
                f"  update d={d} K={k} batch={batch}: tf {fmt_rate(e['tf'])}/s, numpy {fmt_rate(e['numpy'])}/s, "
                f"tf graph {fmt_rate(e['tf_graph'])}/s, numpy one-hot {fmt_rate(e['numpy_one_hot'])}/s "
                f"(theta max |diff| {row['max_abs_theta_diff']:.1e})",
                flush=True,
            )
            update_rows.append(row)

    trainer_rows = []
    if not args.skip_trainer:
        with harness.scratch_dir("banditd-trainer-bench-") as tmp:
            for (d, k), n in zip(shapes, trainer_n, strict=True):
                row = measure_trainer(d, k, n, args.read_batch, args.seed, tmp)
                print(
                    f"  trainer d={d} K={k} N={n:,}: drain {row['drain_seconds']:.2f}s = "
                    f"{fmt_rate(row['examples_per_s'])} ex/s (log filled in {row['fill_seconds']:.1f}s, "
                    f"trainer constructed in {row['construct_seconds']:.2f}s)",
                    flush=True,
                )
                trainer_rows.append(row)

    print()
    print("Update only (median of repeats; theta asserted allclose between TF and numpy):")
    print()
    print(update_table(update_rows))
    print()
    print("Diagnostic (not the service's path): the same update as a compiled graph; numpy with a one-hot formulation:")
    print()
    print(diagnostic_table(update_rows))
    if trainer_rows:
        print()
        print("Whole trainer path: PolicyTrainer.drain() over a filled Redis log (read + join + update, no publish):")
        print()
        print(trainer_table(trainer_rows))

    verdicts = []
    for row in update_rows:
        if (row["d"], row["K"]) == TARGET_SHAPE:
            rate = row["examples_per_s"]["tf"]
            verdicts.append((f"update only, batch {row['batch']:,}", rate))
    for row in trainer_rows:
        if (row["d"], row["K"]) == TARGET_SHAPE:
            verdicts.append(("whole trainer path (drain)", row["examples_per_s"]))
    print()
    print(f"Target: >= {TARGET_EXAMPLES_PER_S:,} examples/s at d={TARGET_SHAPE[0]} K={TARGET_SHAPE[1]}:")
    for what, rate in verdicts:
        word = "MET" if rate >= TARGET_EXAMPLES_PER_S else "NOT MET"
        print(f"  {what}: {fmt_rate(rate)} ex/s -> {word}")
    elapsed = time.monotonic() - started
    print(f"total wall time {elapsed:.0f}s")

    result = {
        "target": {"shape": list(TARGET_SHAPE), "examples_per_s": TARGET_EXAMPLES_PER_S,
                   "verdicts": [{"measurement": w, "examples_per_s": r, "met": r >= TARGET_EXAMPLES_PER_S}
                                for w, r in verdicts]},
        "args": harness.args_dict(args),
        "host": harness.host_info(tensorflow=tf.__version__, numpy=np.__version__),
        "source": revision,
        "wall_time_s": round(elapsed, 1),
        "update_only": update_rows,
        "trainer": trainer_rows,
    }  # fmt: skip
    harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
