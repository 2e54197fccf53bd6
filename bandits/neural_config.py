"""Hyperparameters of the neural bandits (bandits.neural, bandits.neural_linear)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from bandits.base import is_int, is_number, require, validate_ridge
from bandits.mlp import NetworkConfig


@dataclasses.dataclass(frozen=True)
class NeuralConfig(NetworkConfig):
    """The network, its optimizer, its replay ring and its training schedule."""

    train_every_examples: int = 256
    """A training round runs each time this many more examples have been seen (counted over
    all updates, so the schedule does not depend on how the examples are batched)."""

    def validate(self) -> None:
        super().validate()
        require(
            is_int(self.train_every_examples) and self.train_every_examples >= 1,
            "train_every_examples",
            "must be an integer >= 1",
        )


@dataclasses.dataclass(frozen=True)
class NeuralEpsilonGreedyConfig(NeuralConfig):
    epsilon: float = 0.05
    """Exploration share of the collect policy, spread uniformly over the allowed actions."""

    def validate(self) -> None:
        super().validate()
        require(is_number(self.epsilon) and 0 < self.epsilon <= 1, "epsilon", "must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class NeuralLinearConfig(NeuralConfig):
    mode: Literal["ts", "ucb"] = "ts"
    """How collect explores on the last layer: Thompson sampling or an upper confidence bound."""
    ridge: float = 1.0
    """lambda: the last layer's prior precision, Lambda_k = lambda I + sum_i w_i z_i z_i^T."""
    noise: float = 0.5
    """sigma: the reward noise standard deviation assumed by the last layer's posterior
    N(mu_k, sigma^2 Lambda_k^-1), the spread of Thompson sampling (ts mode)."""
    alpha: float = 1.0
    """UCB multiplier: score_k = z.mu_k + alpha * sqrt(z^T Lambda_k^-1 z) (ucb mode)."""
    epsilon: float = 0.05
    """Uniform exploration share mixed into the UCB choice (ucb mode; 0: none, propensity 1)."""
    propensity_samples: int = 256
    """Posterior draws per row that estimate the Thompson propensity in the graph (ts mode)."""

    def validate(self) -> None:
        super().validate()
        require(self.mode in ("ts", "ucb"), "mode", 'must be "ts" or "ucb"')
        validate_ridge(self.ridge)
        require(is_number(self.noise) and self.noise > 0, "noise", "must be > 0")
        require(is_number(self.alpha) and self.alpha >= 0, "alpha", "must be >= 0")
        require(is_number(self.epsilon) and 0 <= self.epsilon <= 1, "epsilon", "must be in [0, 1]")
        require(
            is_int(self.propensity_samples) and 1 <= self.propensity_samples <= 4096,
            "propensity_samples",
            "must be in [1, 4096]",
        )
