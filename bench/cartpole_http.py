"""CartPole-v1 played over HTTP against `banditd up` with a DQN policy.

Workers (threads, one gymnasium environment each) play episodes through the service: every
step is a POST /act with the observation and the episode's session_id, then a POST /reward
with the step's reward, terminal only when the pole fell (a 500-step time-limit cut is not
terminal; the session then goes quiet and the trainer closes it without a terminal
transition). The trainer child of `banditd up` learns from the log and publishes; the
service hot-swaps. Every ``--eval-every`` environment steps the live version's greedy
SavedModel (exactly what `/act` with `"greedy": true` serves) plays 20 evaluation episodes
in this process, on environments seeded apart from the training ones.

    .venv/bin/python bench/cartpole_http.py                      # 3 seeds, up to 100,000 steps each

Prints, per seed, the environment steps and wall time until the greedy mean return reached
475 (target: within 50,000 steps), and writes a learning-curve PNG and JSON to bench/results/.
tests/test_cartpole_http.py runs a short version of the same loop (>= 150 within 30,000 steps).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:
    sys.path.insert(0, _REPO)

import httpx
import numpy as np

from bench import harness

POLICY_NAME = "cartpole"
EVAL_SEED = 1_000_000


def dqn_policy(seed: int, hyperparameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CartPole policy: dqn with its defaults, publishing four times a second."""
    return {
        "name": POLICY_NAME,
        "algorithm": "dqn",
        "context_dim": 4,
        "num_actions": 2,
        "hyperparameters": {"seed": seed} | (hyperparameters or {}),
        "reward": {"wait_seconds": 60.0},
        "training": {"publish_every_seconds": 0.25, "publish_every_examples": 1000, "session_timeout_seconds": 2.0},
    }


class Evaluator:
    """The live version's greedy SavedModel, played in process."""

    def __init__(self, store: Path) -> None:
        from exporter import loader  # noqa: PLC0415 - TensorFlow only where evaluation runs

        self.store = store
        self.model = loader.load(store, POLICY_NAME, 1)

    def mean_return(self, version: str, episodes: int) -> float:
        import gymnasium  # noqa: PLC0415

        import eventlog  # noqa: PLC0415
        from training import checkpoints  # noqa: PLC0415

        export, checkpoint = eventlog.parse_version(version)
        checkpoints.restore_variables(self.model.greedy_model, self.store, POLICY_NAME, export, checkpoint)
        env = gymnasium.make("CartPole-v1")
        returns = []
        for episode in range(episodes):
            observation, _ = env.reset(seed=EVAL_SEED + episode)
            total, done = 0.0, False
            while not done:
                out = self.model.decide(True, observation[None].astype(np.float32), np.ones((1, 2), bool), np.zeros(1))
                observation, reward, terminated, truncated, _ = env.step(int(out["action"][0]))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env.close()
        return float(np.mean(returns))


class Players:
    """Worker threads playing CartPole through /act and /reward until told to stop."""

    def __init__(self, url: str, seed: int, workers: int) -> None:
        self.url, self.seed, self.workers = url, seed, workers
        self.steps = 0
        self.episodes: list[tuple[int, float]] = []
        """(steps when the episode ended, its return)."""
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._play, args=(w,), daemon=True) for w in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _play(self, worker: int) -> None:
        import gymnasium  # noqa: PLC0415

        env = gymnasium.make("CartPole-v1")
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            episode = 0
            while not self._stop.is_set():
                session = f"s{self.seed}-w{worker}-e{episode}"
                observation, _ = env.reset(seed=self.seed * 100_000 + worker * 10_000 + episode)
                total, done = 0.0, False
                while not done and not self._stop.is_set():
                    body = {"policy": POLICY_NAME, "context": observation.tolist(), "session_id": session}
                    act = client.post("/act", json=body)
                    if act.status_code != 200:
                        self.errors.append(f"/act {act.status_code}: {act.text[:200]}")
                        return
                    decision = act.json()
                    observation, reward, terminated, truncated, _ = env.step(decision["action"])
                    answer = client.post(
                        "/reward", json={"event_id": decision["event_id"], "reward": reward, "terminal": terminated}
                    )
                    if answer.status_code != 202:
                        self.errors.append(f"/reward {answer.status_code}: {answer.text[:200]}")
                        return
                    total += float(reward)
                    done = terminated or truncated
                    with self._lock:
                        self.steps += 1
                if done:
                    with self._lock:
                        self.episodes.append((self.steps, total))
                episode += 1
        env.close()


def train(
    url: str,
    store: Path,
    seed: int,
    max_steps: int,
    eval_every: int,
    eval_episodes: int = 20,
    stop_at: float = 475.0,
    workers: int = 4,
    log: Any = print,
) -> dict[str, Any]:
    """Plays until the greedy mean return reaches ``stop_at`` or ``max_steps`` steps were taken.

    Returns the learning curve (steps, wall seconds, live version, greedy mean return), the
    training episodes' returns and the steps and seconds at which ``stop_at`` was reached
    (None if never)."""
    evaluator = Evaluator(store)
    players = Players(url, seed, workers)
    curve: list[dict[str, Any]] = []
    reached: dict[str, Any] = {"steps": None, "seconds": None}
    start = time.monotonic()
    players.start()
    try:
        next_eval = eval_every
        while players.steps < max_steps and not players.errors:
            if players.steps < next_eval:
                time.sleep(0.05)
                continue
            steps, seconds = players.steps, time.monotonic() - start
            version = httpx.get(f"{url}/policies/{POLICY_NAME}", timeout=30).json()["live_version"]
            mean = evaluator.mean_return(version, eval_episodes)
            curve.append({"steps": steps, "seconds": round(seconds, 1), "version": version, "mean_return": mean})
            log(f"  seed {seed}: {steps} steps, {seconds:.0f} s, live {version}: greedy mean return {mean:.1f}")
            next_eval += eval_every
            if mean >= stop_at:
                reached = {"steps": steps, "seconds": round(seconds, 1)}
                break
    finally:
        players.stop()
    info = httpx.get(f"{url}/policies/{POLICY_NAME}", timeout=30).json()
    return {
        "seed": seed,
        "curve": curve,
        "episodes": players.episodes,
        "errors": players.errors[:5],
        "reached": reached,
        "steps": players.steps,
        "model": info["model"],
    }


def plot(runs: list[dict[str, Any]], path: Path, target: float) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in runs:
        line = ax.plot([p["steps"] for p in run["curve"]], [p["mean_return"] for p in run["curve"]], marker="o")
        episodes = np.array(run["episodes"], float).reshape(-1, 2)
        if len(episodes) >= 20:
            moving = np.convolve(episodes[:, 1], np.ones(20) / 20, mode="valid")
            ax.plot(episodes[19:, 0], moving, color=line[0].get_color(), alpha=0.3)
        line[0].set_label(f"seed {run['seed']} (greedy eval; faint: training episodes, mean of 20)")
    ax.axhline(target, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("environment steps (over HTTP)")
    ax.set_ylabel("return")
    ax.set_title("CartPole-v1 over HTTP, dqn")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", type=Path, default=harness.RESULTS_DIR / "cartpole_http.json")
    parser.add_argument("--plot", type=Path, default=harness.RESULTS_DIR / "cartpole_http.png")
    smoke = {"seeds": "0", "max_steps": 200, "eval_every": 100, "eval_episodes": 1, "workers": 2}
    args = harness.parse_args(parser, argv, smoke)
    harness.quiet_tensorflow()
    harness.stop_on_signals()
    from service.embedded_redis import EmbeddedRedis  # noqa: PLC0415

    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with harness.scratch_dir("cartpole-") as tmp, EmbeddedRedis(tmp / "redis") as redis_server:
            with harness.banditd_up(tmp / "data", redis_server.url, tmp / "banditd.log") as service:
                service.wait_ready()
                harness.post_policy(service.url, dqn_policy(seed))
                runs.append(
                    train(service.url, tmp / "data" / "models", seed, args.max_steps, args.eval_every,
                          args.eval_episodes, workers=args.workers)
                )  # fmt: skip
    rows = [
        (r["seed"], r["reached"]["steps"] or f"not within {r['steps']}", r["reached"]["seconds"] or "-",
         max(p["mean_return"] for p in r["curve"]) if r["curve"] else "-", r["model"].get("episodes"))
        for r in runs
    ]  # fmt: skip
    print(harness.markdown_table(["seed", "steps to 475", "seconds", "best greedy mean", "episodes"], "rrrrr", rows))
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, args.plot, 475.0)
    harness.write_json(
        args.json,
        {"runs": runs, "args": harness.args_dict(args), **harness.source_revision(), "host": harness.host_info()},
    )
    return 0


if __name__ == "__main__":
    harness.run_main(main)
