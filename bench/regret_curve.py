"""Regret of the HTTP loop against the same algorithm updated after every round in process
(ratio), with a plot of cumulative regret over rounds (PNG) for LinUCB, Thompson sampling and
uniform.

Run from the repository root:

    .venv/bin/python bench/regret_curve.py
    .venv/bin/python bench/regret_curve.py --rounds 2000 --algorithms linucb

The problem: training.simulators.LinearSimulator(seed=0) (d=16, K=10, noise 0.5); --rounds
contexts (default 10,000) and their reward noise are drawn once, exactly as
tests/test_e2e_http.py draws them, and every variant below plays the same rounds, with
reward = expected reward of the chosen action + that round's pre-drawn noise. Regret is the
expected regret (best expected reward minus the chosen action's).

(a) In process: bandits.build(algorithm, 16, 10, hyperparameters) (linucb: {"alpha": 0.5};
    lints: defaults), and for every round t: policy.collect(context_t, all-true mask, seed=t),
    then policy.update on that one example. Both calls go through tf.function wrappers of the
    policy's own methods (the same math, only faster than eager; --eager turns them off).
(b) Over HTTP, as tests/test_e2e_http.py does it: per algorithm a fresh redis-server
    (EmbeddedRedis) and data dir, `banditd up` as a process (API + trainer) with
    REDIS_URL, BANDIT_DEMO_POLICY=false, BANDIT_TRAINER_METRICS_PORT=0,
    BANDIT_LIVE_POLL_SECONDS=0.2, the policy created with the same hyperparameters and
    {"training": {"publish_every_examples": 10, "publish_every_seconds": 0.1}}, then 8
    concurrent workers take rounds in order and do POST /act then POST /reward.
(c) Uniform: random actions; its expected regret per round is best minus mean
    (LinearSimulator.uniform_regret), no sampling noise.

Prints a markdown table (algorithm | cumulative regret in process | over HTTP | ratio
HTTP/in-process | as % of uniform's), writes bench/results/regret_curve.json and
bench/results/regret_curve.png (cumulative regret vs round: linear axes zoomed on the learners
on the left, log-log on the right). Every process it started is stopped on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

from bench import harness

harness.quiet_tensorflow()

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from service.embedded_redis import EmbeddedRedis  # noqa: E402
from training.simulators import LinearSimulator  # noqa: E402

RESULTS = harness.RESULTS_DIR / "regret_curve.json"
PLOT = harness.RESULTS_DIR / "regret_curve.png"
WORKERS = 8
HYPERPARAMETERS: dict[str, dict[str, Any]] = {"linucb": {"alpha": 0.5}, "lints": {}}
LABELS = {"linucb": "LinUCB", "lints": "Thompson sampling", "uniform": "uniform"}
TRAINING = {"publish_every_examples": 10, "publish_every_seconds": 0.1}


# -- the problem -------------------------------------------------------------------------------------


class Problem:
    """The rounds every variant plays: contexts [n, d], expected rewards [n, K], noise [n]."""

    def __init__(self, rounds: int, seed: int = 0) -> None:
        self.sim = LinearSimulator(seed=seed)
        self.contexts = self.sim.contexts(rounds)
        self.noise = self.sim.noise * self.sim.rng.normal(size=rounds)  # as tests/test_e2e_http.py
        self.expected = self.sim.expected_rewards(self.contexts)

    def reward(self, t: int, action: int) -> float:
        return float(self.expected[t, action] + self.noise[t])

    def regret(self, actions: np.ndarray) -> np.ndarray:
        return self.sim.regret(self.contexts, actions)


# -- (a) in process ------------------------------------------------------------------------------------


def play_in_process(problem: Problem, algorithm: str, eager: bool) -> tuple[np.ndarray, float]:
    """The algorithm updated after every round; returns (actions, seconds)."""
    import tensorflow as tf  # noqa: PLC0415

    import bandits  # noqa: PLC0415

    d, k = problem.sim.context_dim, problem.sim.num_actions
    policy = bandits.build(algorithm, d, k, HYPERPARAMETERS[algorithm])
    collect = policy.collect
    update = policy.update
    if not eager:
        collect = tf.function(
            policy.collect,
            input_signature=[tf.TensorSpec([1, d], tf.float32), tf.TensorSpec([1, k], tf.bool),
                             tf.TensorSpec([1], tf.int64)],
        )  # fmt: skip
        update = tf.function(
            policy.update,
            input_signature=[tf.TensorSpec([1, d], tf.float32), tf.TensorSpec([1], tf.int32),
                             tf.TensorSpec([1], tf.float32), tf.TensorSpec([1], tf.float32)],
        )  # fmt: skip
    mask = tf.ones([1, k], tf.bool)
    weight = tf.ones([1], tf.float32)
    actions = np.empty(len(problem.contexts), np.int64)
    start = time.perf_counter()
    for t in range(len(problem.contexts)):
        context = tf.constant(problem.contexts[t : t + 1])
        action = int(collect(context, mask, tf.constant([t], tf.int64)).action[0])
        actions[t] = action
        reward = tf.constant([problem.reward(t, action)], tf.float32)
        update(context, tf.constant([action], tf.int32), reward, weight)
    return actions, time.perf_counter() - start


# -- (b) over HTTP ----------------------------------------------------------------------------------------


def play_http(url: str, name: str, problem: Problem, deadline: float) -> tuple[np.ndarray, list[str], float]:
    """Plays every round once, WORKERS at a time, in round order; returns (actions, versions, seconds)."""
    n = len(problem.contexts)
    actions = np.full(n, -1, np.int64)
    versions = [""] * n
    next_round = iter(range(n))
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            while not failures and time.monotonic() < deadline:
                with lock:
                    t = next(next_round, None)
                if t is None:
                    return
                act = client.post("/act", json={"policy": name, "context": problem.contexts[t].tolist()})
                if act.status_code != 200:
                    failures.append(f"/act {act.status_code}: {act.text[:200]}")
                    return
                body = act.json()
                actions[t], versions[t] = body["action"], body["version"]
                reward = client.post(
                    "/reward", json={"event_id": body["event_id"], "reward": problem.reward(t, body["action"])}
                )
                if reward.status_code != 202:
                    failures.append(f"/reward {reward.status_code}: {reward.text[:200]}")
                    return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic() + 35))
    seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"HTTP play failed: {failures[:3]}")
    if (actions < 0).any():
        raise RuntimeError(f"{int((actions < 0).sum())} rounds not played before the deadline")
    return actions, versions, seconds


def run_http(problem: Problem, algorithm: str, tmp: Path, max_seconds: float) -> dict[str, Any]:
    folder = tmp / algorithm
    name = f"regret-{algorithm}"
    policy = {
        "name": name, "algorithm": algorithm, "context_dim": problem.sim.context_dim,
        "num_actions": problem.sim.num_actions, "hyperparameters": HYPERPARAMETERS[algorithm], "training": TRAINING,
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(EmbeddedRedis(folder / "redis", host=harness.HOST)).url
        service = stack.enter_context(
            harness.banditd_up(folder / "data", redis_url, folder / "banditd.log", {"BANDIT_LIVE_POLL_SECONDS": "0.2"})
        )
        service.wait_ready()
        harness.post_policy(service.url, policy, service.log)
        actions, versions, seconds = play_http(service.url, name, problem, time.monotonic() + max_seconds)
        info = harness.get_json(f"{service.url}/policies/{name}")
    return {"actions": actions, "versions": versions, "seconds": seconds, "info": info}


# -- output -------------------------------------------------------------------------------------------------


def plot(curves: dict[str, np.ndarray], rounds: int, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    styles = {  # colour per algorithm, solid = in process, dashed = HTTP
        "linucb in process": ("tab:blue", "-"),
        "linucb HTTP": ("tab:blue", "--"),
        "lints in process": ("tab:orange", "-"),
        "lints HTTP": ("tab:orange", "--"),
        "uniform": ("tab:gray", ":"),
    }
    x = np.arange(1, rounds + 1)
    learners = [curve[-1] for key, curve in curves.items() if key != "uniform"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, log_axes in zip(axes, (False, True), strict=True):
        for key, curve in curves.items():
            algorithm, _, how = key.partition(" ")
            colour, style = styles[key]
            label = LABELS[algorithm] + (f" ({how})" if how else " (expected)")
            ax.plot(x, curve, color=colour, linestyle=style, linewidth=1.8, label=label)
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative expected regret")
        ax.grid(True, which="both", alpha=0.3)
        if log_axes:  # shows the early rounds and the growth rate (slope 1 = linear regret)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1, rounds)
            ax.set_title("log-log scale")
        else:  # zoomed on the learners; uniform runs off the top
            ax.set_xlim(0, rounds)
            top = 1.15 * max(learners) if learners else None
            if top is not None and "uniform" in curves and curves["uniform"][-1] > top:
                ax.set_ylim(0, top)
                ax.annotate(
                    f"uniform: {curves['uniform'][-1]:,.0f} at round {rounds:,} (off the chart)",
                    xy=(0.98, 0.02), xycoords="axes fraction", ha="right", va="bottom", color="tab:gray",
                )  # fmt: skip
            ax.set_title("linear scale")
    axes[1].legend(loc="upper left")  # the empty corner of the log-log panel
    fig.suptitle(
        f"LinearSimulator(seed=0), d=16, K=10, {rounds:,} rounds: in process (updated every round) vs HTTP "
        f"(8 workers, publish every 10 examples / 0.1 s)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10_000, help="rounds per variant (default %(default)s)")
    parser.add_argument("--algorithms", default="linucb,lints", help="comma-separated (default %(default)s)")
    parser.add_argument("--eager", action="store_true", help="in process: call the policy eagerly (slower)")
    parser.add_argument("--max-http-seconds", type=float, default=900.0, help="deadline of one HTTP run")
    parser.add_argument("--seed", type=int, default=0, help="LinearSimulator seed (default %(default)s)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data)")
    args = harness.parse_args(parser, argv, {"rounds": 80, "algorithms": "linucb", "max_http_seconds": 120.0})
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    for algorithm in algorithms:
        if algorithm not in HYPERPARAMETERS:
            parser.error(f"unknown algorithm {algorithm!r}")

    harness.stop_on_signals()
    started = time.monotonic()
    revision = harness.source_revision()
    print(f"source: {revision}", flush=True)
    problem = Problem(args.rounds, args.seed)
    uniform = problem.sim.uniform_regret(problem.contexts)
    curves: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    with harness.scratch_dir("banditd-regret-", keep=args.keep_tmp) as tmp:
        for algorithm in algorithms:
            actions, seconds = play_in_process(problem, algorithm, args.eager)
            local = problem.regret(actions)
            print(f"  {algorithm} in process: regret {local.sum():.1f} in {seconds:.1f}s", flush=True)
            http = run_http(problem, algorithm, tmp, args.max_http_seconds)
            remote = problem.regret(http["actions"])
            print(
                f"  {algorithm} over HTTP: regret {remote.sum():.1f} in {http['seconds']:.1f}s "
                f"({len(set(http['versions']))} versions served, {http['info']['applied_examples']} applied)",
                flush=True,
            )
            curves[f"{algorithm} in process"] = np.cumsum(local)
            curves[f"{algorithm} HTTP"] = np.cumsum(remote)
            rows.append(
                {
                    "algorithm": algorithm,
                    "hyperparameters": HYPERPARAMETERS[algorithm],
                    "regret_in_process": float(local.sum()),
                    "regret_http": float(remote.sum()),
                    "ratio_http_over_in_process": float(remote.sum() / local.sum()),
                    "in_process_pct_of_uniform": float(100 * local.sum() / uniform.sum()),
                    "http_pct_of_uniform": float(100 * remote.sum() / uniform.sum()),
                    "in_process_seconds": seconds,
                    "http_seconds": http["seconds"],
                    "http_rounds_per_s": args.rounds / http["seconds"],
                    "http_versions_served": len(set(http["versions"])),
                    "http_regret_last_1000": float(remote[-1000:].sum()),
                    "in_process_regret_last_1000": float(local[-1000:].sum()),
                    "http_policy_info": http["info"],
                }
            )
    curves["uniform"] = np.cumsum(uniform)
    plot(curves, args.rounds, args.plot)

    print()
    print(f"Cumulative expected regret over {args.rounds:,} rounds (LinearSimulator seed {args.seed}, d=16, K=10):")
    print()
    columns = ("algorithm", "cumulative regret in process", "over HTTP", "ratio HTTP/in-process",
               "as % of uniform's (in process / HTTP)")  # fmt: skip
    cells = [
        (f"{LABELS[r['algorithm']]} ({r['algorithm']}, {json.dumps(r['hyperparameters'])})",
         f"{r['regret_in_process']:.1f}", f"{r['regret_http']:.1f}", f"{r['ratio_http_over_in_process']:.2f}",
         f"{r['in_process_pct_of_uniform']:.2f}% / {r['http_pct_of_uniform']:.2f}%")
        for r in rows
    ]  # fmt: skip
    cells.append(("uniform (expected)", f"{uniform.sum():.1f}", "–", "–", "100%"))
    print(harness.markdown_table(columns, "lrrrr", cells))
    elapsed = time.monotonic() - started
    print()
    print(f"plot: {args.plot}")
    print(f"total wall time {elapsed:.0f}s")
    result = {
        "rounds": args.rounds,
        "seed": args.seed,
        "workers": WORKERS,
        "training": TRAINING,
        "uniform_regret": float(uniform.sum()),
        "rows": rows,
        "curves_every_100_rounds": {k: v[99::100].round(3).tolist() for k, v in curves.items()},
        "host": harness.host_info(),
        "source": revision,
        "wall_time_s": round(elapsed, 1),
        "plot": str(args.plot),
    }
    harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
