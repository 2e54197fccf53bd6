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
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/x.py` puts bench/ first on sys.path, not the repo
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from service.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from training.simulators import LinearSimulator  # noqa: E402

HOST = "127.0.0.1"
RESULTS = REPO / "bench" / "results" / "regret_curve.json"
PLOT = REPO / "bench" / "results" / "regret_curve.png"
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
        action = int(collect(context, mask, tf.constant([t], tf.int64))["action"][0])
        actions[t] = action
        reward = tf.constant([problem.reward(t, action)], tf.float32)
        update(context, tf.constant([action], tf.int32), reward, weight)
    return actions, time.perf_counter() - start


# -- (b) over HTTP ----------------------------------------------------------------------------------------


class Service:
    """`banditd up` as a child process in its own session (the API and its trainer child)."""

    def __init__(self, port: int, data_dir: Path, redis_url: str, log: Path) -> None:
        banditd = Path(sys.executable).with_name("banditd")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BANDIT_") and k != "REDIS_URL" and not k.lower().endswith("_proxy")
        }
        env |= {
            "REDIS_URL": redis_url,
            "BANDIT_DEMO_POLICY": "false",
            "BANDIT_TRAINER_METRICS_PORT": "0",
            "BANDIT_LIVE_POLL_SECONDS": "0.2",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        self.url = f"http://{HOST}:{port}"
        self.log = log
        self._log_file = log.open("wb")
        command = [str(banditd), "up", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)]
        self.process = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"banditd exited with {self.process.returncode}:\n{tail(self.log)}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                time.sleep(0.2)
        raise RuntimeError(f"banditd not ready after {timeout:.0f}s:\n{tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM (the API drains, then stops its trainer); SIGKILL to the whole group if that hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # the trainer child, should it have outlived its parent
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log_file.close()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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
        server = EmbeddedRedis(folder / "redis", host=HOST)
        redis_url = server.start()
        stack.callback(server.stop)
        service = Service(free_port(HOST), folder / "data", redis_url, folder / "banditd.log")
        stack.callback(service.stop)
        service.wait_ready()
        created = httpx.post(f"{service.url}/policies", json=policy, timeout=120, trust_env=False)
        if created.status_code != 201:
            raise RuntimeError(f"POST /policies: {created.status_code} {created.text[:500]}")
        actions, versions, seconds = play_http(service.url, name, problem, time.monotonic() + max_seconds)
        info = httpx.get(f"{service.url}/policies/{name}", timeout=30, trust_env=False).json()
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


def source_revision() -> dict[str, Any]:
    """The commit benchmarked and whether the code under test differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "bandits", "exporter", "training"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"commit": head.stdout.strip(), "code_under_test_modified": bool(dirty.stdout.strip())}


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
    args = parser.parse_args(argv)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    for algorithm in algorithms:
        if algorithm not in HYPERPARAMETERS:
            parser.error(f"unknown algorithm {algorithm!r}")

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    revision = source_revision()
    print(f"source: {revision}", flush=True)
    problem = Problem(args.rounds, args.seed)
    uniform = problem.sim.uniform_regret(problem.contexts)
    curves: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="banditd-regret-"))
    try:
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
    finally:
        if args.keep_tmp:
            print(f"temp dir: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    curves["uniform"] = np.cumsum(uniform)
    plot(curves, args.rounds, args.plot)

    print()
    print(f"Cumulative expected regret over {args.rounds:,} rounds (LinearSimulator seed {args.seed}, d=16, K=10):")
    print()
    print("| algorithm | cumulative regret in process | over HTTP | ratio HTTP/in-process | as % of uniform's "
          "(in process / HTTP) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {LABELS[r['algorithm']]} ({r['algorithm']}, {json.dumps(r['hyperparameters'])}) | "
            f"{r['regret_in_process']:.1f} | {r['regret_http']:.1f} | {r['ratio_http_over_in_process']:.2f} | "
            f"{r['in_process_pct_of_uniform']:.2f}% / {r['http_pct_of_uniform']:.2f}% |"
        )
    print(f"| uniform (expected) | {uniform.sum():.1f} | – | – | 100% |")
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
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "source": revision,
        "wall_time_s": round(elapsed, 1),
        "plot": str(args.plot),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
