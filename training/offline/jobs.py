"""Retrain a candidate version, evaluate it off-policy against the live one, promote it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

import eventlog
from eventlog import scripts
from eventlog.sync import LogClient
from exporter import loader, savedmodel
from exporter.spec import PolicySpec
from training import checkpoints
from training.offline.errors import Busy, InvalidData, NoCandidate, UnknownPolicy
from training.offline.joinedlog import JoinedLog
from training.offline.progress import NoProgress, Progress
from training.offline.reading import policy_spec
from training.ope import evaluate_policy

logger = logging.getLogger(__name__)

UPDATE_BATCH = 10_000
"""Examples per policy.update call when retraining."""
PROMOTE_ATTEMPTS = 5
"""How often promote retries when the live pointer moves under it (a trainer publishing)."""


# -- retraining --------------------------------------------------------------------------


def candidate(log: LogClient, name: str) -> str | None:
    """The policy's candidate version '<export>.0', if a retrain left one."""
    return log.candidate(name)


def _live(log: LogClient, name: str) -> str:
    policy_spec(log, name)
    live = log.live(name)
    if live is None:
        raise UnknownPolicy(f"policy: policy {name!r} has no live version", "policy")
    return live


def _check_shapes(joined: JoinedLog, spec: PolicySpec) -> None:
    if len(joined) == 0:
        raise InvalidData(f"log: no decisions of policy {spec.name!r} in the log or range", "log")
    widths = spec.packed_widths
    logged = (
        joined.context_dim,
        0 if joined.context_categorical is None else joined.context_categorical.shape[1],
        0 if joined.action_features is None else joined.action_features.shape[2],
    )
    if logged != (widths.context, widths.context_categorical, widths.action):
        raise InvalidData(
            f"log: the log's inputs (numeric, categorical, candidate features) are {logged}; policy "
            f"{spec.name!r} takes {(widths.context, widths.context_categorical, widths.action)}",
            "log",
        )
    if widths.candidates:
        if joined.num_actions > spec.num_actions:
            raise InvalidData(
                f"log: rows with {joined.num_actions} candidates; policy {spec.name!r} takes at most "
                f"{spec.num_actions}",
                "log",
            )
    elif joined.num_actions != spec.num_actions:
        raise InvalidData(
            f"log: the log has K={joined.num_actions}; policy {spec.name!r} has K={spec.num_actions}",
            "log",
        )


def retrain(
    store: Path,
    log: LogClient,
    name: str,
    joined: JoinedLog,
    from_live: bool = False,
    progress: Progress | None = None,
) -> int:
    """Trains the policy on every row of a joined log, from scratch or from the live
    version's variables, exports the result as a new version and records it as the
    candidate. Returns the new export number; the live version is not touched."""
    progress = progress or NoProgress()
    live = _live(log, name)
    export, checkpoint = eventlog.parse_version(live)
    spec = PolicySpec.from_dict(savedmodel.read_manifest(store, name, export)["spec"])
    _check_shapes(joined, spec)
    policy = spec.build_policy()
    if from_live:
        checkpoints.restore_variables(policy, store, name, export, checkpoint)
    n = len(joined)
    contexts = joined.contexts.astype(np.float32, copy=False)
    actions = joined.actions.astype(np.int32, copy=False)
    rewards = joined.rewards.astype(np.float32)
    progress.start(f"retrain {name}", n)
    chosen = joined.chosen()
    for lo in range(0, n, UPDATE_BATCH):
        hi = min(n, lo + UPDATE_BATCH)
        policy.learn(
            contexts[lo:hi],
            actions[lo:hi],
            rewards[lo:hi],
            np.ones(hi - lo, np.float32),
            **{key: values[lo:hi] for key, values in chosen.items()},
        )
        progress.advance(hi - lo)
    progress.finish()
    new_export = savedmodel.export(policy, spec, store)
    log.set_candidate(name, f"{new_export}.0")
    logger.info(
        "policy %s: retrained on %d examples (%s) as candidate %d.0",
        name,
        n,
        f"from {live}" if from_live else "from scratch",
        new_export,
    )
    return new_export


# -- evaluating --------------------------------------------------------------------------


def load_version(store: Path, name: str, version: str) -> loader.LoadedVersion:
    """An exported version with the variables of its checkpoint (like the service's registry)."""
    export, checkpoint = eventlog.parse_version(version)
    model = loader.load(store, name, export)
    if checkpoint:
        for saved in (model.greedy_model, model.collect_model):
            checkpoints.restore_variables(saved, store, name, export, checkpoint)
    return model


def _report(report: Any) -> dict[str, Any]:
    return {
        "estimates": {
            key: {"value": float(e.value), "low": float(e.low), "high": float(e.high)}
            for key, e in report.estimates.items()
        },
        "effective_sample_size": float(report.effective_sample_size),
        "max_importance_weight": float(report.max_importance_weight),
    }


def evaluate(
    store: Path,
    log: LogClient,
    name: str,
    joined: JoinedLog,
    greedy: bool = False,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    random_state: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Off-policy estimates (IPW, SNIPW, DM, DR, SNDR with (1 - alpha) bootstrap intervals) of
    the candidate's and the live version's value on a joined log, of the baseline action's
    ("baseline", when the policy names one), and the logging policy's on-policy value (the mean
    logged reward) for reference."""
    progress = progress or NoProgress()
    candidate_version = candidate(log, name)
    live = _live(log, name)
    if candidate_version is None:
        raise NoCandidate(f"candidate: policy {name!r} has no candidate version (run retrain first)", "candidate")
    reports = {}
    progress.start(f"evaluate {name}", 3)
    live_spec = load_version(store, name, live).spec
    roles: list[tuple[str, str, int | None]] = [("candidate", candidate_version, None), ("live", live, None)]
    if live_spec.baseline is not None:
        roles.append(("baseline", live, live_spec.baseline))
    for role, version, baseline in roles:
        model = load_version(store, name, version)
        _check_shapes(joined, model.spec)
        report = evaluate_policy(
            model,
            joined.contexts,
            joined.actions,
            joined.rewards,
            joined.propensities,
            masks=joined.masks,
            greedy=greedy,
            n_bootstrap=n_bootstrap,
            alpha=alpha,
            random_state=random_state,
            baseline=baseline,
            **joined.packed(),
        )
        reports[role] = _report(report)
        progress.advance(1)
    progress.finish()
    return {
        "policy": name,
        "examples": len(joined),
        "rewarded": int(joined.rewarded.sum()),
        "greedy": greedy,
        "alpha": alpha,
        "candidate_version": candidate_version,
        "live_version": live,
        "logging_policy": joined.on_policy_value(alpha),
        **reports,
    }


def candidate_beats_live(evaluation: dict[str, Any], estimator: str = "dr") -> bool:
    """The auto-promotion rule: the candidate's lower confidence bound beats the live
    version's point estimate (doubly robust by default)."""
    low = evaluation["candidate"]["estimates"][estimator]["low"]
    live = evaluation["live"]["estimates"][estimator]["value"]
    return bool(np.isfinite(low) and np.isfinite(live) and low > live)


# -- promoting ---------------------------------------------------------------------------


def promote(store: Path, log: LogClient, name: str, version: str | None = None) -> str:
    """Serves the candidate: its variables are copied into a new checkpoint number that
    carries the live version's trainer state (log positions, pending joins), so the trainer
    goes on from the candidate without re-learning or skipping an event; then the live
    pointer moves, the replicas are told, and the candidate is cleared. ``version``, when
    given, must be the current candidate (a guard against promoting a newer, unevaluated
    one). Returns the new live version '<export>.<checkpoint>'."""
    for _ in range(PROMOTE_ATTEMPTS):
        target = candidate(log, name)
        live = _live(log, name)
        if target is None:
            raise NoCandidate(f"candidate: policy {name!r} has no candidate version (run retrain first)", "candidate")
        if version is not None and version != target:
            raise NoCandidate(f"version: the candidate of policy {name!r} is {target}, not {version}", "version")
        target_export, _ = eventlog.parse_version(target)
        if not checkpoints.exists(store, name, target_export, 0):
            raise NoCandidate(f"candidate: export {target_export} of policy {name!r} is not in the store", "candidate")
        live_export, live_checkpoint = eventlog.parse_version(live)
        target_spec = PolicySpec.from_dict(savedmodel.read_manifest(store, name, target_export)["spec"])
        live_spec = PolicySpec.from_dict(savedmodel.read_manifest(store, name, live_export)["spec"])
        if target_spec.inputs() != live_spec.inputs():
            raise InvalidData(f"candidate: {target} has other input or action dimensions than {live}", "candidate")
        checkpoint = log.next_checkpoint(name)
        checkpoints.copy_for_rollback(store, name, (target_export, 0), (live_export, live_checkpoint), checkpoint)
        promoted = f"{target_export}.{checkpoint}"
        if log.move_live(name, live, promoted, candidate=target) == scripts.MOVED:
            logger.info("policy %s: promoted candidate %s as %s (was %s)", name, target, promoted, live)
            return promoted
        logger.info("policy %s: live version or candidate moved while promoting; trying again", name)
    raise Busy(f"candidate: the live version of policy {name!r} kept changing while promoting; try again")


def auto_promote_configured(log: LogClient, name: str) -> bool:
    """Whether the policy asks every evaluation to promote a better candidate by itself."""
    spec = log.spec(name)
    return spec is not None and spec.training.auto_promote


def promote_if_better(
    store: Path, log: LogClient, name: str, evaluation: dict[str, Any], estimator: str = "dr"
) -> str | None:
    """Promotes the evaluated candidate when ``candidate_beats_live``; returns the new live
    version, or None when the candidate does not beat the live version."""
    if not candidate_beats_live(evaluation, estimator):
        logger.info("policy %s: candidate %s does not beat the live version", name, evaluation["candidate_version"])
        return None
    return promote(store, log, name, version=evaluation["candidate_version"])
