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


class CandidateSimulator:
    """A recommendation bandit whose candidates change: items appear and disappear.

    Contexts x ~ N(0, I_d); every item has features z ~ N(0, I_f) drawn when it appears (items
    are never reused: an item id is its birth number). Each round offers ``candidates`` items
    drawn without replacement from a live pool of ``pool_size``; after every round each live item
    leaves with probability ``turnover`` and a new one takes its place. The expected reward of
    item z for context x is

        linear:     mu(x, z) = x^T W z + v . z                 W [d, f] ~ N(0, 1/d), v ~ N(0, 0.09/f)
        nonlinear:  mu(x, z) = 2 tanh(2 x^T W z) + v . z       (saturates: no linear model in phi fits it)

    with W and v drawn once from the seed, so the best item depends on the context (x^T W z)
    and a linear model on the joint features vec([1, x][1, z]^T) represents the linear case
    exactly. reward = mu + N(0, noise^2).
    """

    def __init__(
        self,
        context_dim: int = 8,
        item_feature_dim: int = 6,
        pool_size: int = 100,
        candidates: int = 20,
        turnover: float = 0.02,
        noise: float = 0.1,
        nonlinear: bool = False,
        seed: int = 0,
    ) -> None:
        self.context_dim = context_dim
        self.item_feature_dim = item_feature_dim
        self.candidates = candidates
        self.turnover = turnover
        self.noise = noise
        self.nonlinear = nonlinear
        self.rng = np.random.default_rng(seed)
        self.interaction = self.rng.normal(size=(context_dim, item_feature_dim)) / np.sqrt(context_dim)
        self.item_effect = 0.3 * self.rng.normal(size=item_feature_dim) / np.sqrt(item_feature_dim)
        self.born = 0
        self.pool_ids = np.arange(pool_size)
        self.pool_features = self._new_items(pool_size)

    def _new_items(self, n: int) -> np.ndarray:
        self.born += n
        return (self.rng.normal(size=(n, self.item_feature_dim)) / np.sqrt(self.item_feature_dim)).astype(np.float32)

    def expected_rewards(self, context: np.ndarray, features: np.ndarray) -> np.ndarray:
        """context [d], features [K, f] -> [K] expected rewards."""
        cross = np.asarray(features, np.float64) @ (self.interaction.T @ np.asarray(context, np.float64))
        if self.nonlinear:
            cross = 2.0 * np.tanh(2.0 * cross)
        return cross + np.asarray(features, np.float64) @ self.item_effect

    def round(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One round: (context [d] float32, item ids [K] int, item features [K, f] float32);
        then the pool turns over."""
        context = self.rng.normal(size=self.context_dim).astype(np.float32)
        chosen = self.rng.choice(len(self.pool_ids), size=self.candidates, replace=False)
        ids, features = self.pool_ids[chosen].copy(), self.pool_features[chosen].copy()
        leaving = np.flatnonzero(self.rng.random(len(self.pool_ids)) < self.turnover)
        if leaving.size:
            self.pool_ids[leaving] = self.born + np.arange(leaving.size)
            self.pool_features[leaving] = self._new_items(leaving.size)
        return context, ids, features

    def reward(self, context: np.ndarray, features: np.ndarray) -> float:
        """A noisy reward of one item (features [f]) for a context."""
        mean = float(self.expected_rewards(context, features[None, :])[0])
        return mean + self.noise * float(self.rng.normal())

    def fresh_pool(self) -> None:
        """Replaces every live item by a new one (items no policy has seen)."""
        self.pool_ids = self.born + np.arange(len(self.pool_ids))
        self.pool_features = self._new_items(len(self.pool_ids))
