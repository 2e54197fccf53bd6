"""Seeded simulators for tests and benchmarks (numpy only)."""

from __future__ import annotations

import numpy as np


class LinearSimulator:
    """The linear contextual bandit of the issues.

    d = 16, K = 10 by default; contexts x ~ N(0, I_d); per-action theta_k ~ N(0, I_d)/sqrt(d)
    drawn once from the seed; reward = x . theta_a + N(0, noise^2) with noise 0.5. Regret is
    measured against the best action's expected reward; uniform play's expected regret per
    round is the best expected reward minus the mean over actions.
    """

    def __init__(self, context_dim: int = 16, num_actions: int = 10, noise: float = 0.5, seed: int = 0) -> None:
        self.context_dim = context_dim
        self.num_actions = num_actions
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.theta = self.rng.normal(size=(num_actions, context_dim)) / np.sqrt(context_dim)

    def contexts(self, n: int) -> np.ndarray:
        """[n, d] float32 contexts."""
        return self.rng.normal(size=(n, self.context_dim)).astype(np.float32)

    def expected_rewards(self, contexts: np.ndarray) -> np.ndarray:
        """[n, K] expected reward of every action."""
        return np.asarray(contexts, np.float64) @ self.theta.T

    def rewards(self, contexts: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """[n] noisy rewards of the chosen actions."""
        mean = self.expected_rewards(contexts)[np.arange(len(actions)), actions]
        return (mean + self.noise * self.rng.normal(size=len(actions))).astype(np.float32)

    def regret(self, contexts: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """[n] expected regret of the chosen actions."""
        expected = self.expected_rewards(contexts)
        return expected.max(axis=1) - expected[np.arange(len(actions)), actions]

    def uniform_regret(self, contexts: np.ndarray) -> np.ndarray:
        """[n] expected regret of uniform play."""
        expected = self.expected_rewards(contexts)
        return expected.max(axis=1) - expected.mean(axis=1)
