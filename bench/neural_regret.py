"""Regret of the neural bandits against LinUCB on a nonlinear problem, with a plot of
cumulative regret (PNG), and the neural models' training speed in Adam steps per second.

Run from the repository root:

    .venv/bin/python bench/neural_regret.py
    .venv/bin/python bench/neural_regret.py --rounds 3000 --seeds 0

The problem: training.simulators.NonlinearSimulator(seed) (d=8, K=5, expected reward of action
k = A_k . (|W x| - E|W x|), reward noise N(0, 0.5^2)), on which the best linear fit is no
better than uniform play. For each seed (default 0, 1, 2), --rounds contexts (default 10,000)
and their reward noise are drawn once and every variant plays the same rounds, with reward =
expected reward of the chosen action + that round's pre-drawn noise. Regret is the expected
regret (best expected reward minus the chosen action's).

Every variant runs in process, as the trainer would feed it with a publish every --batch
examples: for each batch of --batch rounds (default 32), policy.collect on the batch (seeds =
round numbers, through a tf.function over the policy's own method), then policy.update on the
batch with weight 1. Variants (hyperparameters in VARIANTS below): LinUCB (defaults),
neural_linear in ts and in ucb mode, neural_epsilon_greedy; uniform is its expected regret.

Training steps per second: the Adam steps a neural policy took, divided by the wall time of
the update() calls that ran at least one training round. Those calls also append the batch to
the replay buffer and, for neural_linear, recompute the last layer from the whole buffer, so
it is the rate the trainer sees, not the bare optimizer's.

Prints a markdown table (means over seeds), writes bench/results/neural_regret.json and
bench/results/neural_regret.png (mean cumulative regret vs round; moving average of the
per-round regret).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

from bench import harness

harness.quiet_tensorflow()

import numpy as np  # noqa: E402

from training.simulators import NonlinearSimulator  # noqa: E402

RESULTS = harness.RESULTS_DIR / "neural_regret.json"
PLOT = harness.RESULTS_DIR / "neural_regret.png"
NETWORK = {"hidden_sizes": [64, 64], "train_every_examples": 256, "training_steps": 100, "batch_size": 64}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "linucb": ("linucb", {}),
    "neural_linear ts": ("neural_linear", NETWORK | {"mode": "ts"}),
    "neural_linear ucb": ("neural_linear", NETWORK | {"mode": "ucb"}),
    "neural_epsilon_greedy": ("neural_epsilon_greedy", NETWORK | {"epsilon": 0.1}),
}
COLOURS = {
    "linucb": "tab:blue",
    "neural_linear ts": "tab:red",
    "neural_linear ucb": "tab:purple",
    "neural_epsilon_greedy": "tab:green",
    "uniform": "tab:gray",
}


class Problem:
    """The rounds every variant plays for one seed: contexts [n, d], expected rewards [n, K], noise [n]."""

    def __init__(self, rounds: int, seed: int) -> None:
        self.sim = NonlinearSimulator(seed=seed)
        self.contexts = self.sim.contexts(rounds)
        self.noise = self.sim.noise * self.sim.rng.normal(size=rounds)
        self.expected = self.sim.expected_rewards(self.contexts)

    def rewards(self, rows: slice, actions: np.ndarray) -> np.ndarray:
        """[batch] float32 rewards of the chosen actions in rounds ``rows``."""
        expected = self.expected[rows][np.arange(len(actions)), actions]
        return (expected + self.noise[rows]).astype(np.float32)

    def regret(self, actions: np.ndarray) -> np.ndarray:
        """[n] expected regret of one action per round."""
        return self.expected.max(axis=1) - self.expected[np.arange(len(actions)), actions]


def play(problem: Problem, algorithm: str, hyperparameters: dict[str, Any], batch: int) -> dict[str, Any]:
    """Collect then update, batch by batch; the per-round regret and the timings."""
    import tensorflow as tf  # noqa: PLC0415

    import bandits  # noqa: PLC0415

    d, k = problem.sim.context_dim, problem.sim.num_actions
    policy = bandits.build(algorithm, d, k, hyperparameters)
    policy.compile()
    collect = tf.function(
        policy.collect,
        input_signature=[tf.TensorSpec([None, d], tf.float32), tf.TensorSpec([None, k], tf.bool),
                         tf.TensorSpec([None], tf.int64)],
    )  # fmt: skip
    n = len(problem.contexts)
    actions = np.empty(n, np.int64)
    update_seconds = training_seconds = 0.0
    start = time.perf_counter()
    for first in range(0, n, batch):
        rows = slice(first, min(n, first + batch))
        size = rows.stop - rows.start
        chosen = collect(
            problem.contexts[rows], tf.ones([size, k], tf.bool), tf.range(rows.start, rows.stop, dtype=tf.int64)
        ).action.numpy()
        actions[rows] = chosen
        steps_before = policy.stats().get("training_steps")
        began = time.perf_counter()
        policy.update(
            problem.contexts[rows], chosen.astype(np.int32), problem.rewards(rows, chosen), np.ones(size, np.float32)
        )
        spent = time.perf_counter() - began
        update_seconds += spent
        if policy.stats().get("training_steps") != steps_before:
            training_seconds += spent
    stats = policy.stats()
    steps = stats.get("training_steps")
    return {
        "regret": problem.regret(actions),
        "seconds": time.perf_counter() - start,
        "update_seconds": update_seconds,
        "training_steps": steps,
        "training_steps_per_s": steps / training_seconds if steps else None,
        "last_loss": stats.get("last_loss"),
    }


def plot(curves: dict[str, np.ndarray], rounds: int, seeds: list[int], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    window = max(1, rounds // 20)
    x = np.arange(1, rounds + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for name, per_round in curves.items():
        style = ":" if name == "uniform" else "-"
        left.plot(x, np.cumsum(per_round), color=COLOURS[name], linestyle=style, linewidth=1.8, label=name)
        moving = np.convolve(per_round, np.ones(window) / window, mode="valid")
        right.plot(x[window - 1 :], moving, color=COLOURS[name], linestyle=style, linewidth=1.5, label=name)
    left.set_ylabel("cumulative expected regret")
    left.set_title("cumulative regret")
    right.set_ylabel(f"expected regret per round (moving mean over {window} rounds)")
    right.set_title("per-round regret")
    for ax in (left, right):
        ax.set_xlabel("round")
        ax.set_xlim(0, rounds)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    left.legend(loc="upper left")
    fig.suptitle(
        f"NonlinearSimulator (d=8, K=5), {rounds:,} rounds, mean over seeds {seeds}: in process, "
        "collect then update per batch of rounds",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10_000, help="rounds per seed (default %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="simulator seeds, comma-separated (default %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="rounds per collect/update batch (default %(default)s)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = harness.parse_args(parser, argv, {"rounds": 120, "seeds": "0"})
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in names:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")

    harness.stop_on_signals()
    started = time.monotonic()
    revision = harness.source_revision()
    print(f"source: {revision}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    uniform: list[np.ndarray] = []
    for seed in seeds:
        problem = Problem(args.rounds, seed)
        uniform.append(problem.sim.uniform_regret(problem.contexts))
        for name in names:
            algorithm, hyperparameters = VARIANTS[name]
            run = play(problem, algorithm, hyperparameters, args.batch)
            runs[name].append(run)
            rate = run["training_steps_per_s"]
            print(
                f"  seed {seed} {name}: regret {run['regret'].sum():.1f} (uniform {uniform[-1].sum():.1f}) "
                f"in {run['seconds']:.1f}s"
                + (f", {run['training_steps']} Adam steps at {rate:,.0f}/s" if rate else ""),
                flush=True,
            )

    curves = {name: np.mean([run["regret"] for run in runs[name]], axis=0) for name in names}
    curves["uniform"] = np.mean(uniform, axis=0)
    plot(curves, args.rounds, seeds, args.plot)
    uniform_total = float(curves["uniform"].sum())
    linucb_total = float(curves["linucb"].sum()) if "linucb" in curves else None
    rows = []
    for name in names:
        totals = [float(run["regret"].sum()) for run in runs[name]]
        rates = [run["training_steps_per_s"] for run in runs[name] if run["training_steps_per_s"]]
        rows.append(
            {
                "variant": name,
                "algorithm": VARIANTS[name][0],
                "hyperparameters": VARIANTS[name][1],
                "regret_per_seed": totals,
                "regret_mean": float(np.mean(totals)),
                "pct_of_uniform": 100 * float(np.mean(totals)) / uniform_total,
                "ratio_to_linucb": float(np.mean(totals)) / linucb_total if linucb_total else None,
                "regret_last_1000_mean": float(np.mean([run["regret"][-1000:].sum() for run in runs[name]])),
                "training_steps": runs[name][0]["training_steps"],
                "training_steps_per_s": float(np.median(rates)) if rates else None,
                "last_loss_per_seed": [run["last_loss"] for run in runs[name]],
                "seconds_mean": float(np.mean([run["seconds"] for run in runs[name]])),
            }
        )

    print()
    print(
        f"Cumulative expected regret over {args.rounds:,} rounds, NonlinearSimulator (d=8, K=5), mean of seeds {seeds}:"
    )
    print()
    columns = ("variant", "cumulative regret (per seed)", "% of uniform", "ratio to LinUCB",
               "regret, last 1,000 rounds", "Adam steps", "training steps/s", "wall s")  # fmt: skip
    cells = [
        (f"{r['variant']} {json.dumps(r['hyperparameters'])}",
         f"{r['regret_mean']:.0f} ({', '.join(f'{t:.0f}' for t in r['regret_per_seed'])})",
         f"{r['pct_of_uniform']:.1f}%", f"{r['ratio_to_linucb']:.2f}" if r["ratio_to_linucb"] else "–",
         f"{r['regret_last_1000_mean']:.0f}", r["training_steps"] if r["training_steps"] is not None else "–",
         f"{r['training_steps_per_s']:,.0f}" if r["training_steps_per_s"] else "–", f"{r['seconds_mean']:.1f}")
        for r in rows
    ]  # fmt: skip
    cells.append(("uniform (expected)", f"{uniform_total:.0f}", "100%", "–", f"{curves['uniform'][-1000:].sum():.0f}",
                  "–", "–", "–"))  # fmt: skip
    print(harness.markdown_table(columns, "lrrrrrrr", cells))
    elapsed = time.monotonic() - started
    print()
    print(f"plot: {args.plot}")
    print(f"total wall time {elapsed:.0f}s")
    result = {
        "args": harness.args_dict(args),
        "uniform_regret_mean": uniform_total,
        "rows": rows,
        "curves_every_100_rounds": {k: np.cumsum(v)[99::100].round(3).tolist() for k, v in curves.items()},
        "host": harness.host_info(),
        "source": revision,
        "wall_time_s": round(elapsed, 1),
    }
    harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
