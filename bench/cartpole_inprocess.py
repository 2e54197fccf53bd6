"""DQN on CartPole-v1 in process, fed the way the service feeds it: environment steps and wall
time until the greedy policy's mean return over 20 evaluation episodes reaches 475.

Run from the repository root:

    .venv/bin/python bench/cartpole_inprocess.py                      # seeds 0,1,2, up to 50,000 steps
    .venv/bin/python bench/cartpole_inprocess.py --seeds 0 --max-steps 30000 --hyperparameters '{"learning_rate": 5e-4}'

What it mimics (the HTTP run is the other half of issue 4, measured by the service's own bench):

* acting: collect() of a *copy* of the model, whose variables are refreshed from the trained
  model every --refresh-every environment steps (default 200, about what a replica sees with
  a publish every 0.2-1 s), one row per call, seed = a per-step counter;
* training: the transitions (s, a, r, s', terminated) go to update_transitions in batches of
  --update-batch (default 50), as the trainer applies whatever arrived since its last step.
  The client reports terminal only when the pole falls (terminated); the last step of an
  episode truncated at 500 steps has no next decision in the service (its session is closed
  without a terminal transition), so it is dropped here too;
* evaluation: every --eval-every steps (default 5,000), the trained model's greedy policy plays
  --eval-episodes episodes (default 20, environment seeds 10,000 + i), and their mean return is
  the learning curve's point. The first point >= 475 gives "steps to 475" (likewise 150).

Wall time counts acting and training only, not the evaluations. Prints a markdown table and
writes bench/results/cartpole_inprocess.json and bench/results/cartpole_inprocess.png.
"""

from __future__ import annotations

import argparse
import itertools
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

RESULTS = harness.RESULTS_DIR / "cartpole_inprocess.json"
PLOT = harness.RESULTS_DIR / "cartpole_inprocess.png"
THRESHOLDS = (150, 475)


def as_columns(transitions: list[tuple[Any, ...]]) -> tuple[np.ndarray, ...]:
    """(s, a, r, s', done) rows -> the columns update_transitions takes, with weight 1."""
    s, a, r, s2, done = (np.array(column) for column in zip(*transitions, strict=True))
    weights = np.ones(len(a), np.float32)
    return s.astype(np.float32), a.astype(np.int32), r.astype(np.float32), s2.astype(np.float32), done, weights


def evaluate(greedy: Any, episodes: int) -> float:
    """Mean return of the greedy policy over ``episodes`` CartPole-v1 episodes (seeds 10,000 + i),
    played in lockstep so each step is one batched call."""
    import gymnasium as gym  # noqa: PLC0415

    envs = [gym.make("CartPole-v1") for _ in range(episodes)]
    observations = np.stack([env.reset(seed=10_000 + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    returns = np.zeros(episodes)
    alive = np.ones(episodes, bool)
    while alive.any():
        actions = greedy(observations)
        for i in np.flatnonzero(alive):
            observation, reward, terminated, truncated, _ = envs[i].step(int(actions[i]))
            observations[i] = observation
            returns[i] += reward
            alive[i] = not (terminated or truncated)
    for env in envs:
        env.close()
    return float(returns.mean())


def run(
    seed: int,
    hyperparameters: dict[str, Any],
    max_steps: int,
    eval_every: int,
    eval_episodes: int,
    refresh_every: int,
    update_batch: int,
    stop_at: float | None,
) -> dict[str, Any]:
    """One training run; the evaluation curve, the steps to each threshold and the timings."""
    import gymnasium as gym  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import bandits  # noqa: PLC0415

    config = hyperparameters | {"seed": seed}
    model = bandits.build("dqn", 4, 2, config)
    acting = bandits.build("dqn", 4, 2, config)
    model.compile()
    specs = [tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 2], tf.bool), tf.TensorSpec([None], tf.int64)]
    collect = tf.function(acting.collect, input_signature=specs)
    greedy_graph = tf.function(model.greedy, input_signature=specs)

    def greedy(observations: np.ndarray) -> np.ndarray:
        n = len(observations)
        return greedy_graph(observations, tf.ones([n, 2], tf.bool), tf.zeros([n], tf.int64)).action.numpy()

    def refresh() -> None:  # what a replica's hot swap does: every variable from the trained model
        for served, trained in zip(acting.variables, model.variables, strict=True):
            served.assign(trained)

    env = gym.make("CartPole-v1")
    observation, _ = env.reset(seed=seed)
    mask = tf.ones([1, 2], tf.bool)
    pending: list[tuple[np.ndarray, int, float, np.ndarray, bool]] = []
    episode_return, episode_returns, episode_ends = 0.0, [], []
    curve: list[dict[str, Any]] = []
    reached: dict[int, dict[str, Any]] = {}
    busy = 0.0
    began = time.perf_counter()
    for step in range(1, max_steps + 1):
        seed_row = tf.constant([seed * 10**9 + step], tf.int64)
        action = int(collect(observation[None].astype(np.float32), mask, seed_row).action.numpy()[0])
        next_observation, reward, terminated, truncated, _ = env.step(action)
        episode_return += float(reward)
        if terminated:
            pending.append((observation, action, float(reward), np.zeros(4, np.float32), True))
        elif not truncated:
            pending.append((observation, action, float(reward), next_observation, False))
        observation = next_observation
        if terminated or truncated:
            episode_returns.append(episode_return)
            episode_ends.append(step)
            episode_return = 0.0
            observation, _ = env.reset()
        if len(pending) >= update_batch:
            model.update_transitions(bandits.Transitions(*as_columns(pending)))
            pending.clear()
        if step % refresh_every == 0:
            refresh()
        if step % eval_every == 0:
            busy += time.perf_counter() - began
            mean_return = evaluate(greedy, eval_episodes)
            stats = model.stats()
            point = {"steps": step, "mean_return": mean_return, "seconds": round(busy, 2), **stats}
            curve.append(point)
            print(
                f"    seed {seed} step {step}: greedy mean return {mean_return:.1f} ({busy:.0f} s) {stats}", flush=True
            )
            for threshold in THRESHOLDS:
                if mean_return >= threshold and threshold not in reached:
                    reached[threshold] = {"steps": step, "seconds": round(busy, 2)}
            began = time.perf_counter()
            if stop_at is not None and mean_return >= stop_at:
                break
    env.close()
    return {
        "seed": seed,
        "curve": curve,
        "reached": {str(t): reached.get(t) for t in THRESHOLDS},
        "episodes": [[int(e), r] for e, r in zip(episode_ends, episode_returns, strict=True)],
        "training_steps": model.stats()["training_steps"],
    }


def plot(runs: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(9, 5.2))
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange"]
    for run, colour in zip(runs, itertools.cycle(colours), strict=False):
        episodes = np.array(run["episodes"], dtype=float).reshape(-1, 2)
        if len(episodes):
            window = 20
            moving = (
                np.convolve(episodes[:, 1], np.ones(window) / window, mode="valid") if len(episodes) >= window else []
            )
            label = f"seed {run['seed']}: collect, training episodes (moving mean of {window})"
            x = episodes[window - 1 :, 0] if len(moving) else []
            ax.plot(x, moving, color=colour, alpha=0.3, linewidth=1, label=label)
        steps = [p["steps"] for p in run["curve"]]
        returns = [p["mean_return"] for p in run["curve"]]
        ax.plot(steps, returns, color=colour, marker="o", linewidth=2, label=f"seed {run['seed']}: greedy, 20 episodes")
    for threshold in THRESHOLDS:
        ax.axhline(threshold, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_ylim(0, 520)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default %(default)s)")
    parser.add_argument(
        "--max-steps", type=int, default=50_000, help="environment steps per seed (default %(default)s)"
    )
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--refresh-every", type=int, default=200, help="steps between copies to the acting model")
    parser.add_argument("--update-batch", type=int, default=50, help="transitions per update_transitions call")
    parser.add_argument("--hyperparameters", default="{}", help="JSON overriding the DQN defaults")
    parser.add_argument("--stop-at", type=float, default=None, help="stop a seed once its greedy mean reaches this")
    parser.add_argument(
        "--threads", type=int, default=1, help="TensorFlow threads (default 1: runs repeat exactly; 0: TF's choice)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    smoke = {"seeds": "0", "max_steps": 300, "eval_every": 150, "eval_episodes": 2}
    args = harness.parse_args(parser, argv, smoke)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    hyperparameters = json.loads(args.hyperparameters)

    import tensorflow as tf  # noqa: PLC0415

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    harness.stop_on_signals()
    revision = harness.source_revision()
    print(f"source: {revision}; hyperparameters {hyperparameters}", flush=True)
    runs = []
    for seed in seeds:
        runs.append(
            run(
                seed,
                hyperparameters,
                args.max_steps,
                args.eval_every,
                args.eval_episodes,
                args.refresh_every,
                args.update_batch,
                args.stop_at,
            )
        )
    rows = []
    for r in runs:
        cells: list[object] = [r["seed"]]
        for threshold in THRESHOLDS:
            hit = r["reached"][str(threshold)]
            cells += [f"{hit['steps']:,}", f"{hit['seconds']:.0f}"] if hit else [f"> {args.max_steps:,}", "-"]
        cells.append(f"{max((p['mean_return'] for p in r['curve']), default=0):.1f}")
        rows.append(cells)
    print(
        harness.markdown_table(
            ["seed", "steps to 150", "s to 150", "steps to 475", "s to 475", "best greedy mean"], "rrrrrr", rows
        )
    )
    result = {
        "benchmark": "cartpole_inprocess",
        "source": revision,
        "host": harness.host_info(),
        "args": harness.args_dict(args),
        "hyperparameters": hyperparameters,
        "runs": runs,
    }
    harness.write_json(args.json, result)
    title = (
        f"DQN on CartPole-v1 in process (acting from a copy refreshed every {args.refresh_every} steps, updates of "
        f"{args.update_batch} transitions), hyperparameters: {hyperparameters or 'defaults'}"
    )
    plot(runs, title, args.plot)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
