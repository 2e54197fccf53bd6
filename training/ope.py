"""Off-policy evaluation reports: every estimator of training.estimators, with bootstrap
intervals, of a policy version (its SavedModel's probabilities) on a window of the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.spec import baseline_actions
from training.estimators import (
    OPEReport,
    evaluate_arrays,
)
from training.reward_models import fit_candidate_reward_model, fit_reward_model

if TYPE_CHECKING:
    from exporter.loader import LoadedVersion

POLICY_BATCH_ROWS = 4096
"""Rows per call of the SavedModel's probabilities signature in evaluate_policy."""


def _masks(model: LoadedVersion, contexts: np.ndarray, masks: np.ndarray | None, packed: dict[str, Any]) -> np.ndarray:
    """[n, K] allowed actions: for candidate sets the given masks (K the largest set), else all
    of the policy's K actions unless masks says otherwise."""
    if len(contexts) == 0:
        raise ValueError("no logged decisions to evaluate")
    if "action_features" in packed:
        assert masks is not None, "candidate sets need their masks"
    num_actions = model.spec.num_actions
    return np.ones((len(contexts), num_actions), bool) if masks is None else np.asarray(masks, bool)


def _batches(n: int, packed: dict[str, np.ndarray], function: Callable[..., Any]) -> list[Any]:
    """function(rows, packed inputs of those rows) over POLICY_BATCH_ROWS rows at a time."""
    parts = [slice(start, start + POLICY_BATCH_ROWS) for start in range(0, n, POLICY_BATCH_ROWS)]
    return [function(part, {key: values[part] for key, values in packed.items()}) for part in parts]


def _reward_model(
    model: LoadedVersion,
    contexts: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    num_actions: int,
    packed: dict[str, np.ndarray],
    random_state: int,
) -> np.ndarray:
    """[n, K] q_hat: on plain vectors fit_reward_model; otherwise on the features the model reads
    (its encode signature), per action or, for candidate sets, fit_candidate_reward_model."""
    if model.spec.layout == "vector":
        return fit_reward_model(contexts, actions, rewards, num_actions, random_state=random_state)
    encoded = _batches(len(contexts), packed, lambda part, extra: model.encode(contexts[part], **extra))
    context_vectors = np.concatenate([e["context_vector"] for e in encoded])
    if "action_features" not in packed:
        return fit_reward_model(context_vectors, actions, rewards, num_actions, random_state=random_state)
    candidate_vectors = np.concatenate([e["action_vectors"] for e in encoded])
    return fit_candidate_reward_model(context_vectors, candidate_vectors, actions, rewards, random_state=random_state)


def evaluate_policy(
    model: LoadedVersion,
    contexts: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    pscores: np.ndarray,
    masks: np.ndarray | None = None,
    greedy: bool = False,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    random_state: int = 0,
    baseline: int | None = None,
    **packed: np.ndarray,
) -> OPEReport:
    """Evaluates an exported version on logged decisions (with ``baseline``, the policy that
    always takes that baseline action, baseline_actions, with the version's reward model).

    model: an exporter.loader.LoadedVersion; contexts: [n, d]; actions: [n] int; rewards: [n];
    pscores: [n] the logged propensities; masks: [n, K] bool or None (every action allowed);
    greedy picks the greedy SavedModel instead of the collect one. The evaluation policy's
    action_dist [n, K] comes from the version's probabilities signature with seeds 0..n-1;
    the reward model is fit_reward_model(contexts, actions, rewards, K, random_state=random_state).

    Named features and candidate sets pass their other packed inputs (``context_categorical``,
    ``action_features`` [n, K, n_a], ``action_categorical``) as keywords, contexts being the
    packed numeric values; K is then the log's largest candidate set and masks is required.
    The reward model then reads the encoded features the model reads (its encode signature):
    fit_reward_model on encoded contexts, or fit_candidate_reward_model on encoded contexts and
    candidates.
    """
    contexts = np.asarray(contexts, np.float32)
    masks = _masks(model, contexts, masks, packed)
    seeds = np.arange(len(contexts), dtype=np.int64)
    if baseline is not None:
        action_dist = np.zeros(masks.shape)
        action_dist[np.arange(len(contexts)), baseline_actions(baseline, masks)] = 1.0
    else:
        action_dist = np.concatenate(
            _batches(
                len(contexts),
                packed,
                lambda part, extra: model.probabilities(greedy, contexts[part], masks[part], seeds[part], **extra),
            )
        ).astype(np.float64)
    reward_model = _reward_model(model, contexts, actions, rewards, masks.shape[1], packed, random_state)
    return evaluate_arrays(
        reward=np.asarray(rewards, np.float64),
        action=np.asarray(actions),
        pscore=np.asarray(pscores, np.float64),
        action_dist=action_dist,
        estimated_rewards_by_reg_model=reward_model,
        n_bootstrap=n_bootstrap,
        alpha=alpha,
        random_state=random_state,
    )
