"""Cross-fitted ridge reward models for the doubly robust and direct estimators (numpy only).

Each row's predicted rewards come from a model fitted on the other folds, as the Open Bandit
Pipeline's ``fit_predict`` with ``n_folds``: no prediction was fitted on its own reward.
"""

from __future__ import annotations

import numpy as np


def _folds(
    actions: np.ndarray, rewards: np.ndarray, n_folds: int, random_state: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """actions [n], rewards [n] float64 and each row's fold [n]: a seeded split into n_folds
    folds of near-equal size."""
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2: each row is predicted by a model fitted on the other folds")
    actions = np.asarray(actions)
    fold = np.empty(len(actions), np.int64)
    fold[np.random.default_rng(random_state).permutation(len(actions))] = np.arange(len(actions)) % n_folds
    return actions, np.asarray(rewards, np.float64), fold


def fit_reward_model(
    contexts: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    num_actions: int,
    ridge: float = 1.0,
    n_folds: int = 2,
    random_state: int = 0,
) -> np.ndarray:
    """Cross-fitted per-action ridge regression of the reward on phi = [context, 1] -> [n, K] float64.

    contexts: [n, d]; actions: [n] int in [0, K); rewards: [n]. The rows are split at random
    (seeded) into n_folds folds of near-equal size; row i in fold f is predicted for every action a as
        q_hat[i, a] = phi_i . theta_{f, a},
        theta_{f, a} = (ridge I + sum_{j not in f, a_j = a} phi_j phi_j^T)^{-1} sum_{j not in f, a_j = a} r_j phi_j,
    so no row's prediction was fitted on its own reward (obp's fit_predict with n_folds). The
    intercept is regularised like the other coefficients. numpy only, O(n (d+1)^2).
    """
    actions, rewards, fold = _folds(actions, rewards, n_folds, random_state)
    n = len(actions)
    phi = np.hstack([np.asarray(contexts, np.float64), np.ones((n, 1))])
    p = phi.shape[1]

    # Sufficient statistics per (fold, action): sum phi phi^T and sum r phi.
    gram = np.zeros((n_folds, num_actions, p, p))
    moment = np.zeros((n_folds, num_actions, p))
    for f in range(n_folds):
        for a in range(num_actions):
            rows = (fold == f) & (actions == a)
            gram[f, a] = phi[rows].T @ phi[rows]
            moment[f, a] = phi[rows].T @ rewards[rows]

    # Each fold is predicted by the model fitted on all the other folds.
    q_hat = np.empty((n, num_actions))
    for f in range(n_folds):
        others = np.arange(n_folds) != f
        theta = np.linalg.solve(gram[others].sum(axis=0) + ridge * np.eye(p), moment[others].sum(axis=0)[..., None])
        in_fold = fold == f
        q_hat[in_fold] = phi[in_fold] @ theta[..., 0].T
    return q_hat


def fit_candidate_reward_model(
    contexts: np.ndarray,
    candidates: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    ridge: float = 1.0,
    n_folds: int = 2,
    random_state: int = 0,
) -> np.ndarray:
    """Cross-fitted ridge regression of the reward on the joint features of context and candidate
    -> [n, K] float64: q_hat[i, k] = vec(x~_i z~_ik^T) . theta_f for every candidate k of row i.

    contexts: [n, d] and candidates: [n, K, f] encoded; actions: [n] the logged candidate's
    index; rewards: [n]. x~ = [x, 1], z~ = [z, 1]; one theta per fold, fitted on the other folds'
    logged candidates (as fit_reward_model; the shared model of bandits.shared_linear, so a
    candidate that was never logged is predicted from its features). O(n D^2), D = (d+1)(f+1).
    """
    actions, rewards, fold = _folds(actions, rewards, n_folds, random_state)
    n = len(actions)
    x = np.hstack([np.asarray(contexts, np.float64), np.ones((n, 1))])
    z = np.concatenate([np.asarray(candidates, np.float64), np.ones((*candidates.shape[:2], 1))], axis=2)
    chosen = z[np.arange(n), actions]
    phi = (x[:, :, None] * chosen[:, None, :]).reshape(n, -1)
    p = phi.shape[1]
    gram = np.stack([phi[fold == f].T @ phi[fold == f] for f in range(n_folds)])
    moment = np.stack([phi[fold == f].T @ rewards[fold == f] for f in range(n_folds)])
    q_hat = np.empty(z.shape[:2])
    for f in range(n_folds):
        others = np.arange(n_folds) != f
        theta = np.linalg.solve(gram[others].sum(axis=0) + ridge * np.eye(p), moment[others].sum(axis=0))
        rows = fold == f
        u = x[rows] @ theta.reshape(x.shape[1], z.shape[2])  # [rows, f+1]: Theta^T x~ per row
        q_hat[rows] = np.einsum("rkf,rf->rk", z[rows], u)
    return q_hat
