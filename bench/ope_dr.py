"""Doubly robust off-policy evaluation with a fitted reward model on 1,000,000 logged decisions:
training/estimators.py and training/reward_models.py against the same computation written
directly in numpy, in the same run.

Run from the repository root:

    .venv/bin/python bench/ope_dr.py
    .venv/bin/python bench/ope_dr.py --rows 200000 --repeats 5 --n-bootstrap 0

The log: LinearSimulator (d=16, K=10, seed 0) contexts, actions drawn uniformly (pscore 0.1),
the simulator's noisy rewards. The evaluation policy: softmax(2 * expected reward) over the
10 actions, [n, K] float64. Everything is generated before any timing.

Timed, each --repeats times in alternation after one untimed warm-up run of each (the median
is reported; every run's seconds are in the JSON):

- training: ``fit_reward_model(contexts, actions, rewards, K)`` (cross-fitted
  per-action ridge on [x, 1], 2 folds, ridge 1), then ``estimators.dr(...)`` (the point estimate).
- numpy, inline below (``numpy_reward_model``, ``numpy_dr``): the same folds (the same seeded
  permutation), for each fold and action a ridge solve on the other fold's rows of that action,
  predictions for the fold, then mean(q_hat[pi] + w (r - q_hat[a])).

Both DR values are asserted equal to a relative 1e-9 (and the reward models to 1e-9), so both
sides did the same work. The bootstrap is not in the comparison: one extra row times
``estimators.evaluate_arrays`` (all five estimators, --n-bootstrap resamples, 100 by default, not the
service's 1,000) on the same inputs, for scale.

Prints a markdown table and writes bench/results/ope_dr.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:  # `python bench/x.py`: bench/ is first
    sys.path.insert(0, _REPO)

import numpy as np

from bench import harness
from training import estimators
from training.reward_models import fit_reward_model
from training.simulators import LinearSimulator

RESULTS = harness.RESULTS_DIR / "ope_dr.json"
D, K = 16, 10
RIDGE, N_FOLDS, SEED = 1.0, 2, 0


# -- the reference: plain numpy -----------------------------------------------------------------------


def numpy_reward_model(contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """[n, K] cross-fitted per-action ridge predictions, written directly."""
    n = len(actions)
    x = np.hstack([contexts.astype(np.float64), np.ones((n, 1))])
    fold = np.empty(n, np.int64)
    fold[np.random.default_rng(SEED).permutation(n)] = np.arange(n) % N_FOLDS
    q_hat = np.empty((n, K))
    for f in range(N_FOLDS):
        test = fold == f
        for a in range(K):
            train = ~test & (actions == a)
            theta = np.linalg.solve(x[train].T @ x[train] + RIDGE * np.eye(D + 1), x[train].T @ rewards[train])
            q_hat[test, a] = x[test] @ theta
    return q_hat


def numpy_dr(
    actions: np.ndarray, rewards: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray, q_hat: np.ndarray
) -> float:
    rows = np.arange(len(actions))
    w = action_dist[rows, actions] / pscore
    return float(np.mean(np.sum(action_dist * q_hat, axis=1) + w * (rewards - q_hat[rows, actions])))


# -- the log ------------------------------------------------------------------------------------------------


def make_log(n: int) -> dict[str, np.ndarray]:
    simulator = LinearSimulator(context_dim=D, num_actions=K, seed=SEED)
    rng = np.random.default_rng(SEED + 1)
    contexts = simulator.contexts(n)
    actions = rng.integers(0, K, n)
    rewards = simulator.rewards(contexts, actions).astype(np.float64)
    logits = 2.0 * simulator.expected_rewards(contexts)
    action_dist = np.exp(logits - logits.max(axis=1, keepdims=True))
    action_dist /= action_dist.sum(axis=1, keepdims=True)
    return {
        "contexts": contexts,
        "actions": actions,
        "rewards": rewards,
        "pscore": np.full(n, 1 / K),
        "action_dist": action_dist,
    }


def timed(run: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run(*args)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-bootstrap", type=int, default=100, help="resamples in the evaluate_arrays row (0: skip)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = harness.parse_args(parser, argv, {"rows": 5000, "repeats": 1, "n_bootstrap": 10})

    log = make_log(args.rows)
    contexts, actions, rewards, pscore, action_dist = (
        log[k] for k in ("contexts", "actions", "rewards", "pscore", "action_dist")
    )

    def library_fit() -> np.ndarray:
        return fit_reward_model(contexts, actions, rewards, K, ridge=RIDGE, n_folds=N_FOLDS, random_state=SEED)

    def library_dr(q_hat: np.ndarray) -> float:
        return estimators.dr(
            reward=rewards, action=actions, pscore=pscore, action_dist=action_dist, estimated_rewards_by_reg_model=q_hat
        )

    seconds: dict[str, list[float]] = {"ope_fit": [], "ope_dr": [], "numpy_fit": [], "numpy_dr": []}
    values: dict[str, float] = {}
    # Warm-up, untimed: first-touch page faults of the large temporaries, BLAS thread start-up.
    library_dr(library_fit())
    numpy_dr(actions, rewards, pscore, action_dist, numpy_reward_model(contexts, actions, rewards))
    for repeat in range(args.repeats):
        fit_s, q_library = timed(library_fit)
        dr_s, values["ope"] = timed(library_dr, q_library)
        seconds["ope_fit"].append(fit_s)
        seconds["ope_dr"].append(dr_s)
        fit_s, q_numpy = timed(numpy_reward_model, contexts, actions, rewards)
        dr_s, values["numpy"] = timed(numpy_dr, actions, rewards, pscore, action_dist, q_numpy)
        seconds["numpy_fit"].append(fit_s)
        seconds["numpy_dr"].append(dr_s)
        if repeat == 0:  # both sides did the same work
            np.testing.assert_allclose(q_library, q_numpy, rtol=1e-9, atol=1e-12)
        if abs(values["ope"] - values["numpy"]) > 1e-9 * abs(values["numpy"]):
            raise AssertionError(f"DR differs: training/ope.py {values['ope']!r}, numpy {values['numpy']!r}")

    median = {key: statistics.median(times) for key, times in seconds.items()}
    rows = [
        ("reward model fit (cross-fitted ridge)", median["ope_fit"], median["numpy_fit"]),
        ("DR point estimate", median["ope_dr"], median["numpy_dr"]),
        ("total", median["ope_fit"] + median["ope_dr"], median["numpy_fit"] + median["numpy_dr"]),
    ]

    evaluate_s = None
    if args.n_bootstrap:
        q_hat = library_fit()
        evaluate_s, report = timed(
            partial(
                estimators.evaluate_arrays,
                reward=rewards,
                action=actions,
                pscore=pscore,
                action_dist=action_dist,
                estimated_rewards_by_reg_model=q_hat,
                n_bootstrap=args.n_bootstrap,
            )
        )

    print(f"\n{args.rows:,} logged decisions, d={D}, K={K}, uniform logging; median of {args.repeats} runs\n")
    cells = [
        (name, f"{library_s:.3f}", f"{numpy_s:.3f}", f"{library_s / numpy_s:.2f}") for name, library_s, numpy_s in rows
    ]
    if evaluate_s is not None:
        cells.append(
            (
                f"evaluate_arrays: 5 estimators + {args.n_bootstrap}-resample bootstrap (once)",
                f"{evaluate_s:.3f}",
                "",
                "",
            )
        )
    print(harness.markdown_table(("step", "training/ope.py s", "numpy s", "ratio ope/numpy"), "lrrr", cells))
    print(f"\nDR: training/ope.py {values['ope']:.12f}, numpy {values['numpy']:.12f}")
    if evaluate_s is not None:
        dr = report.estimates["dr"]
        print(f"DR interval ({args.n_bootstrap} resamples): [{dr.low:.6f}, {dr.high:.6f}]")

    result = {
        "args": harness.args_dict(args),
        "shape": {"rows": args.rows, "context_dim": D, "num_actions": K, "ridge": RIDGE, "n_folds": N_FOLDS},
        "seconds": {"median": median, "all": seconds, "evaluate_arrays": evaluate_s},
        "dr": values,
        "report": report.to_dict() if evaluate_s is not None else None,
        "host": harness.host_info(numpy=np.__version__),
    }
    harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
