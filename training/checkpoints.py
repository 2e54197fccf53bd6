"""Trainer checkpoints: the model variables together with the log position they cover.

    <store>/<policy>/<export>/checkpoints/<n>/variables.index, variables.data-*
    <store>/<policy>/<export>/checkpoints/<n>/trainer_state.npz   pending joins, outcome counts
    <store>/<policy>/<export>/checkpoints/<n>/position.json       stream positions, applied count
    <store>/<policy>/<export>/checkpoints/<n>/digests.json        SHA-256 of every file above

A checkpoint is written into a temporary folder and renamed into place, so the variables,
the position and the join state are always saved together: a trainer restarted from it
applies every later event exactly once. Replicas restore only the variables. Version
"<export>.0" means the variables exported with the SavedModel itself.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from exporter import savedmodel

CHECKPOINTS = "checkpoints"
VARIABLES = "variables"
STATE = "trainer_state.npz"
POSITION = "position.json"
DIGESTS = "digests.json"


@dataclasses.dataclass
class TrainerState:
    """What, besides the variables, a trainer needs to resume exactly."""

    decisions_position: str = "0-0"
    """Last decision stream entry read."""
    rewards_position: str = "0-0"
    """Last reward stream entry read."""
    applied: int = 0
    """Examples applied to the variables, in total."""
    reward_sum: float = 0.0
    """Sum of the rewards of those examples (for the running mean)."""
    apprentice_decisions: int = 0
    """Decisions read that were served in apprentice mode ..."""
    apprentice_matches: int = 0
    """... and how many of them the policy would have chosen alike (the baseline)."""
    join: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """RewardJoin.state(): pending decisions and outcome counts."""


def checkpoint_dir(store: Path, name: str, export: int, checkpoint: int) -> Path:
    return savedmodel.version_dir(store, name, export) / CHECKPOINTS / str(checkpoint)


def variables_prefix(store: Path, name: str, export: int, checkpoint: int) -> str:
    """The TensorFlow checkpoint prefix holding the variables of version export.checkpoint."""
    if checkpoint == 0:
        return str(savedmodel.version_dir(store, name, export) / "collect" / "variables" / "variables")
    return str(checkpoint_dir(store, name, export, checkpoint) / VARIABLES)


def list_checkpoints(store: Path, name: str, export: int) -> list[int]:
    """Complete checkpoints of an export, ascending."""
    root = savedmodel.version_dir(store, name, export) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / POSITION).is_file())


def delete(store: Path, name: str, export: int, checkpoint: int) -> None:
    """Removes a checkpoint: renamed aside first, so no reader ever sees half of one."""
    folder = checkpoint_dir(store, name, export, checkpoint)
    doomed = folder.with_name(f".deleting-{checkpoint}")
    try:
        folder.rename(doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def exists(store: Path, name: str, export: int, checkpoint: int) -> bool:
    if checkpoint == 0:
        return (savedmodel.version_dir(store, name, export) / savedmodel.MANIFEST).is_file()
    return (checkpoint_dir(store, name, export, checkpoint) / POSITION).is_file()


def _seal(folder: Path) -> None:
    """Records the SHA-256 of every file of a checkpoint being written (last, inside its temp folder)."""
    (folder / DIGESTS).write_text(json.dumps(savedmodel.folder_digests(folder, skip=frozenset({DIGESTS}))))


def verify(store: Path, name: str, export: int, checkpoint: int) -> None:
    """Checks a checkpoint's files against its digests; raises savedmodel.ExportError.
    Checkpoint 0 is the export itself, which ``savedmodel.verify`` checks."""
    if checkpoint == 0:
        return
    folder = checkpoint_dir(store, name, export, checkpoint)
    try:
        expected = json.loads((folder / DIGESTS).read_text())
    except (OSError, ValueError) as error:
        message = f"checkpoint {export}.{checkpoint} of {name}: no readable digests: {error}"
        raise savedmodel.ExportError(message) from None
    actual = savedmodel.folder_digests(folder, skip=frozenset({DIGESTS}))
    if actual != expected:
        changed = sorted(set(actual.items()) ^ set(expected.items()))
        raise savedmodel.ExportError(
            f"checkpoint {export}.{checkpoint} of {name} does not match its digests: {changed[:3]}"
        )


def restore_variables(target: Any, store: Path, name: str, export: int, checkpoint: int) -> None:
    """Assigns the verified variables of export.checkpoint to ``target`` (a policy or a loaded
    SavedModel); raises savedmodel.ExportError (nothing assigned) when a file does not match."""
    verify(store, name, export, checkpoint)
    status = tf.train.Checkpoint(root=target).read(variables_prefix(store, name, export, checkpoint))
    status.expect_partial()


def _write_state(folder: Path, state: TrainerState) -> None:
    np.savez(folder / STATE, **state.join)  # type: ignore[arg-type]
    position = {k: v for k, v in dataclasses.asdict(state).items() if k != "join"}
    (folder / POSITION).write_text(json.dumps(position))


def write(policy: Any, state: TrainerState, store: Path, name: str, export: int, checkpoint: int) -> Path:
    """Writes variables, join state and position as one checkpoint; never overwrites one."""

    def fill(folder: Path) -> None:
        tf.train.Checkpoint(root=policy).write(str(folder / VARIABLES))
        _write_state(folder, state)
        _seal(folder)

    return savedmodel.write_atomically(checkpoint_dir(store, name, export, checkpoint), fill)


def read_state(store: Path, name: str, export: int, checkpoint: int) -> TrainerState:
    """The trainer state saved with a checkpoint; a fresh state for checkpoint 0."""
    if checkpoint == 0:
        return TrainerState()
    folder = checkpoint_dir(store, name, export, checkpoint)
    position = json.loads((folder / POSITION).read_text())
    with np.load(folder / STATE, allow_pickle=False) as arrays:
        join = {key: arrays[key] for key in arrays.files}
    return TrainerState(**position, join=join)


def copy_for_rollback(
    store: Path, name: str, target: tuple[int, int], current: tuple[int, int], checkpoint: int
) -> Path:
    """A new checkpoint ``target_export.checkpoint`` with the variables of ``target`` and the
    trainer state of ``current``: the trainer goes on from the old variables without
    re-learning or skipping any event."""
    variables = Path(variables_prefix(store, name, *target))

    def fill(folder: Path) -> None:
        for path in variables.parent.glob(variables.name + ".*"):
            shutil.copyfile(path, folder / (VARIABLES + path.name[len(variables.name) :]))
        _write_state(folder, read_state(store, name, *current))
        _seal(folder)

    return savedmodel.write_atomically(checkpoint_dir(store, name, target[0], checkpoint), fill)
