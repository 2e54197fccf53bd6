"""Seeded simulators for tests and benchmarks (numpy only)."""

from __future__ import annotations

import numpy as np


class Simulator:
    """What every simulator shares: Gaussian contexts, Gaussian reward noise and expected regret.

    A subclass sets context_dim, num_actions, noise and rng and defines expected_rewards.
    """

    context_dim: int
    num_actions: int
    noise: float
    rng: np.random.Generator

    def expected_rewards(self, contexts: np.ndarray) -> np.ndarray:
        """[n, K] expected reward of every action."""
        raise NotImplementedError

    def contexts(self, n: int) -> np.ndarray:
        """[n, d] float32 contexts."""
        return self.rng.normal(size=(n, self.context_dim)).astype(np.float32)

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


class LinearSimulator(Simulator):
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

    def expected_rewards(self, contexts: np.ndarray) -> np.ndarray:
        """[n, K] expected reward of every action."""
        return np.asarray(contexts, np.float64) @ self.theta.T


class NonlinearSimulator(Simulator):
    """A contextual bandit whose best action no linear model can find.

    d = 8, K = 5, m = 6 hidden units by default; contexts x ~ N(0, I_d); W [m, d] ~ N(0, 1/d)
    and A [K, m] ~ N(0, 1) drawn once from the seed; the expected reward of action k is

        mu_k(x) = scale * A_k . (|W x| - E|W x|)     (|.| elementwise; E|w.x| = |w| sqrt(2/pi))

    and reward = mu_a(x) + N(0, noise^2) with noise 0.5. mu_k is even in x (mu_k(-x) =
    mu_k(x)) and centred, so under x ~ N(0, I) every action's expected reward is uncorrelated
    with every linear function of x: the best linear fit, even with an intercept, is the
    constant 0, and a linear policy plays no better than uniform. A ReLU network represents
    |u| = relu(u) + relu(-u) exactly. Regret is measured as in LinearSimulator.
    """

    def __init__(
        self,
        context_dim: int = 8,
        num_actions: int = 5,
        hidden_units: int = 6,
        scale: float = 1.0,
        noise: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.context_dim = context_dim
        self.num_actions = num_actions
        self.noise = noise
        self.scale = scale
        self.rng = np.random.default_rng(seed)
        self.projection = self.rng.normal(size=(hidden_units, context_dim)) / np.sqrt(context_dim)
        self.action_weights = self.rng.normal(size=(num_actions, hidden_units))
        self.mean_hidden = np.sqrt(2.0 / np.pi) * np.linalg.norm(self.projection, axis=1)

    def expected_rewards(self, contexts: np.ndarray) -> np.ndarray:
        """[n, K] expected reward of every action."""
        hidden = np.abs(np.asarray(contexts, np.float64) @ self.projection.T) - self.mean_hidden
        return self.scale * hidden @ self.action_weights.T
