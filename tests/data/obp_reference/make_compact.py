"""Rebuilds obd_ope_compact.npz from the full arrays the Open Bandit Pipeline fed its estimators.

Run from the repository root:

    .venv/bin/python tests/data/obp_reference/make_compact.py /path/to/obd_ope_inputs.npz

The full file (14.8 MB) holds action_dist and estimated_rewards_by_reg_model as [n, 80, 3]
float64. Every estimator reads only the logged position's slice [n, 80], and that slice is
stored losslessly:

    reward              [n] int8       clicks (0/1)
    action              [n] int16      logged item (0..79)
    position            [n] int8       logged slot (0..2)
    pscore              [n] float64    logging propensity (0.0125 everywhere: uniform over 80 items)
    action_dist_count   [n, 80] uint16 action_dist[i, :, position_i] * 1e5: obp estimated the
                                       Bernoulli TS policy's distribution from 100,000 simulated
                                       rankings, so each probability is count / 1e5 (max 24,498)
    reward_model_rows   [U, 80] float64  the distinct rows of estimated_rewards_by_reg_model[i, :, position_i]
    reward_model_row    [n] uint16     which of them row i has (the model's predictions repeat:
                                       n = 10,000 rows hold U = 1,296 distinct ones)

The script writes the file next to itself only after checking that the arrays rebuilt from it
equal the originals bit for bit and reproduce the reference estimates to a relative 1e-9.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
if str(REPO) not in sys.path:  # `python tests/data/...` puts this folder first on sys.path, not the repo
    sys.path.insert(0, str(REPO))

from training import ope  # noqa: E402

COMPACT = HERE / "obd_ope_compact.npz"
REFERENCE = HERE / "obd_ope_reference.json"
COUNT_SCALE = 1e5
"""action_dist = action_dist_count / COUNT_SCALE exactly (obp's n_sim = 100,000)."""
NUM_POSITIONS = 3


def logged_slices(full: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The compact arrays from the full ones (see the module docstring)."""
    rows = np.arange(len(full["reward"]))
    position = full["position"]
    count = np.round(full["action_dist"][rows, :, position] * COUNT_SCALE)
    reward_model_rows, reward_model_row = np.unique(
        full["estimated_rewards_by_reg_model"][rows, :, position], axis=0, return_inverse=True
    )
    return {
        "reward": full["reward"].astype(np.int8),
        "action": full["action"].astype(np.int16),
        "position": position.astype(np.int8),
        "pscore": full["pscore"].astype(np.float64),
        "action_dist_count": count.astype(np.uint16),
        "reward_model_rows": reward_model_rows,
        "reward_model_row": reward_model_row.reshape(-1).astype(np.uint16),
    }


def rebuild(compact: dict[str, np.ndarray], num_positions: int = NUM_POSITIONS) -> dict[str, np.ndarray]:
    """obp's estimator inputs from the compact arrays: action_dist and estimated_rewards_by_reg_model
    as [n, K, num_positions] float64 holding the logged position's slice and zeros at the others."""
    n, num_actions = compact["action_dist_count"].shape
    rows = np.arange(n)
    position = compact["position"].astype(np.int64)
    action_dist = np.zeros((n, num_actions, num_positions))
    action_dist[rows, :, position] = compact["action_dist_count"] / COUNT_SCALE
    reward_model = np.zeros((n, num_actions, num_positions))
    reward_model[rows, :, position] = compact["reward_model_rows"][compact["reward_model_row"]]
    return {
        "reward": compact["reward"].astype(np.int64),
        "action": compact["action"].astype(np.int64),
        "position": position,
        "pscore": compact["pscore"],
        "action_dist": action_dist,
        "estimated_rewards_by_reg_model": reward_model,
    }


def estimates(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    logged = {name: arrays[name] for name in ("reward", "action", "pscore", "action_dist", "position")}
    model = arrays["estimated_rewards_by_reg_model"]
    return {
        "ipw": ope.ipw(**logged),
        "snipw": ope.snipw(**logged),
        "dm": ope.dm(
            action_dist=arrays["action_dist"], estimated_rewards_by_reg_model=model, position=arrays["position"]
        ),
        "dr": ope.dr(**logged, estimated_rewards_by_reg_model=model),
    }


def check(full: dict[str, np.ndarray], compact_file: Path) -> None:
    """Raises ValueError unless the compact file rebuilds the logged slices bit for bit and the
    estimates on them equal the reference numbers to a relative 1e-9."""
    with np.load(compact_file) as data:
        rebuilt = rebuild({name: data[name] for name in data.files})
    rows, position = np.arange(len(full["reward"])), full["position"]
    for name in ("reward", "action", "position", "pscore"):
        if not np.array_equal(rebuilt[name], full[name]):
            raise ValueError(f"{name} differs")
    for name in ("action_dist", "estimated_rewards_by_reg_model"):
        if full[name][rows, :, position].tobytes() != rebuilt[name][rows, :, position].tobytes():
            raise ValueError(f"{name} at the logged position is not rebuilt bit for bit")
    reference = json.loads(REFERENCE.read_text())["estimates"]
    for name, value in estimates(rebuilt).items():
        if abs(value - reference[name]) > 1e-9 * abs(reference[name]):
            raise ValueError(f"{name}: {value!r} against the reference {reference[name]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", type=Path, help="obd_ope_inputs.npz (the full arrays)")
    args = parser.parse_args(argv)
    with np.load(args.inputs) as data:
        full = {name: data[name] for name in data.files}
    staging = COMPACT.with_name(COMPACT.stem + ".tmp.npz")
    np.savez_compressed(staging, **logged_slices(full))
    try:
        check(full, staging)
    except ValueError:
        staging.unlink()
        raise
    staging.replace(COMPACT)
    print(f"wrote {COMPACT} ({COMPACT.stat().st_size:,} bytes), checked against the full arrays and the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
