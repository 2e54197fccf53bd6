"""neural_linear (Riquelme, Tucker, Snoek, "Deep Bayesian Bandits Showdown", ICLR 2018): the
network's last hidden layer phi is a representation, and on z = [phi, 1] a Bayesian linear
regression per action (or, over candidate sets, ONE shared by every candidate) acts by
Thompson sampling or UCB. The network, its replay ring and its training schedule are
bandits.neural's NeuralPolicy.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from bandits import linalg, rng
from bandits.base import Decision, Examples
from bandits.choice import (
    DECISION_STREAM,
    PROPENSITY_STREAM,
    epsilon_greedy_decision,
    greedy_decision,
    independent_draws,
    sampled_decision,
)
from bandits.linear import LinearState
from bandits.neural import CandidateTower, NeuralPolicy, per_candidate
from bandits.neural_config import NeuralLinearConfig

Posterior = tuple[tf.Tensor, ...]
"""What Thompson draws for one batch need, computed once per call (the fixed form: the
actions' means and widths; the candidate form: the candidates' features)."""


def shared_posterior_scores(
    features: tf.Tensor, theta: tf.Tensor, gram_inverse: tf.Tensor, scale: float, noise: tf.Tensor
) -> tf.Tensor:
    """Candidates' scores h_k . beta_s under S draws beta_s ~ N(theta, scale^2 gram_inverse) of
    one weight vector shared by every candidate (so the candidates' scores are correlated).

    features: [batch, K, p], theta: [p], gram_inverse: [p, p], noise: [batch, S, p] standard
    normal, float32. Returns [batch, S, K] float32.
    """
    # A square root of gram_inverse by eigendecomposition: robust where float32 rounding leaves
    # it barely positive definite. One [p, p] decomposition per call, shared by every row.
    eigenvalues, eigenvectors = tf.linalg.eigh(gram_inverse)
    root = eigenvectors * tf.sqrt(tf.maximum(eigenvalues, 0.0))[None, :]  # root root^T = gram_inverse
    draws = theta + scale * tf.einsum("pq,bsq->bsp", root, noise)
    return tf.einsum("bkp,bsp->bsk", features, draws)


class NeuralLinear(NeuralPolicy):
    """Bayesian linear regression per action on the network's representation.

    Last-layer model (the paper's, with the noise variance known rather than inverse-gamma):
    on features z = [phi(x), 1], action k's reward is z.beta_k + N(0, sigma^2) with prior
    beta_k ~ N(0, sigma^2 / lambda I), so the posterior is N(mu_k, sigma^2 Lambda_k^-1) with
    Lambda_k = lambda I + sum_i w_i z_i z_i^T and mu_k = Lambda_k^-1 sum_i w_i r_i z_i over
    action k's examples, w_i the importance weights: weighted ridge regression, kept as exact
    float64 sufficient statistics in a LinearState. After every training round they are
    recomputed from the whole ring with the new phi; between rounds every new example is
    added to them exactly (phi does not change between rounds).

    ts: a row's score is z.mu_k + sigma sqrt(z^T Lambda_k^-1 z) N(0, 1) per action (the
    posterior draw of z.beta_k; the actions' posteriors are independent), and the propensity
    is estimated from further draws, as in bandits.lints. ucb: z.mu_k + alpha sqrt(z^T
    Lambda_k^-1 z), mixed with epsilon uniform exploration, as in bandits.linucb.
    greedy: the posterior mean z.mu_k.
    """

    algorithm = "neural_linear"
    Config = NeuralLinearConfig

    def __init__(self, context_dim: int, num_actions: int, config: NeuralLinearConfig, **inputs: Any) -> None:
        super().__init__(context_dim, num_actions, config, **inputs)
        self.feature_size = self.network.representation_size + 1
        self.last_layer = LinearState(self.feature_size, self.tower.regressions(num_actions), config.ridge)

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """Adds the last layer (float64 Lambda_k, float32 inverse, twice in an update, as in
        LinearPolicy) and the whole ring's features while it is recomputed (float32 and float64)."""
        p = config.hidden_sizes[-1] + 1
        last_layer = 2 * 12 * cls.tower.regressions(num_actions) * p * p
        network_and_buffer = super().state_bytes(context_dim, num_actions, config, action_feature_dim)
        return network_and_buffer + last_layer + 12 * config.buffer_size * p

    def features(self, inputs: tf.Tensor) -> tf.Tensor:
        """z = [phi, 1]: network inputs [n, width] (contexts; [x, z] pairs in the candidate form)
        -> [n, representation_size + 1] float32."""
        representation = self.network.representation(tf.convert_to_tensor(inputs, tf.float32))
        return tf.concat([representation, tf.ones_like(representation[:, :1])], axis=1)

    def mean_and_width(
        self, context: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """[batch, K] posterior mean z.mu_k and width sqrt(z^T Lambda_k^-1 z) of every action
        (or candidate) for context [batch, d]."""
        tower, s = self.tower, self.last_layer
        features = self.features(tower.inputs(context, action_features))
        mean, width = linalg.mean_and_width(features, s.theta, s.gram_inverse)
        return tower.per_action(mean, action_features), tower.per_action(width, action_features)

    def posterior(self, context: tf.Tensor, action_features: tf.Tensor | None = None) -> Posterior:
        """What Thompson draws for a batch need, computed once per call: (mean, width) [batch, K]."""
        return self.mean_and_width(context, action_features)

    def posterior_samples(self, posterior: Posterior, seed: tf.Tensor, count: int, stream: int) -> tf.Tensor:
        """[batch, count, K] Thompson scores from the row's seed on ``stream``: the actions'
        posteriors are independent, so each draw is z.mu_k + sigma sqrt(z^T Lambda_k^-1 z) N(0, 1)."""
        mean, width = posterior
        return independent_draws(mean, width, self.config.noise, seed, count, stream)

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        mean, _ = self.mean_and_width(context, action_features)
        return greedy_decision(mean, mask)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        config = self.config
        if config.mode == "ucb":
            mean, width = self.mean_and_width(context, action_features)
            return epsilon_greedy_decision(mean + config.alpha * width, mask, seed, config.epsilon)
        # One posterior draw decides; propensity_samples further draws estimate its probability.
        posterior = self.posterior(context, action_features)
        scores = self.posterior_samples(posterior, seed, 1, DECISION_STREAM)[:, 0, :]
        samples = self.posterior_samples(posterior, seed, config.propensity_samples, PROPENSITY_STREAM)
        return sampled_decision(scores, mask, samples)

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        config = self.config
        if config.mode == "ucb":
            mean, width = self.mean_and_width(context, action_features)
            return linalg.epsilon_greedy_probabilities(mean + config.alpha * width, mask, config.epsilon)
        posterior = self.posterior(context, action_features)
        samples = self.posterior_samples(posterior, seed, config.propensity_samples, PROPENSITY_STREAM)
        return linalg.argmax_distribution(samples, mask)

    # -- last layer (inside the training graphs) ---------------------------------------------

    def _absorbed(self, examples: Examples) -> None:
        """The new examples' statistics under the current phi, added to the last layer's."""
        s = self.last_layer
        added = self._statistics(examples)
        self._set_statistics(s.gram + added.gram, s.reward_sums + added.reward_sums, s.counts + added.counts)

    def _trained(self) -> None:
        """The last layer recomputed from the prior and the whole ring under the new phi."""
        held = self._statistics(self.replay.contents())
        regressions = self.tower.regressions(self.num_actions)
        prior = self.config.ridge * tf.eye(self.feature_size, batch_shape=[regressions], dtype=tf.float64)
        self._set_statistics(prior + held.gram, held.reward_sums, held.counts)

    def _statistics(self, examples: Examples) -> linalg.ArmStatistics:
        """Each regression's sums over examples under the current phi."""
        inputs, regression = self.tower.training_inputs(examples)
        regressions = self.tower.regressions(self.num_actions)
        return linalg.per_action_statistics(
            self.features(inputs), regression, examples.rewards, examples.weights, regressions
        )

    def _set_statistics(self, gram: tf.Tensor, reward_sums: tf.Tensor, counts: tf.Tensor) -> None:
        s = self.last_layer
        s.gram.assign(gram)
        s.reward_sums.assign(reward_sums)
        s.counts.assign(counts)
        theta, gram_inverse = linalg.ridge_solution(gram, reward_sums)
        s.theta.assign(tf.cast(theta, tf.float32))
        s.gram_inverse.assign(tf.cast(gram_inverse, tf.float32))
        s.train_step.assign_add(1)


class CandidateNeuralLinear(NeuralLinear):
    """neural_linear over candidate sets: ONE Bayesian linear regression shared by all candidates.

    On h = [phi(x, z), 1], the tower's last hidden layer for a context x and a candidate z, a
    candidate's reward is h.beta + N(0, sigma^2) with beta ~ N(0, sigma^2 / lambda I), so
    beta's posterior is N(mu, sigma^2 Lambda^-1), Lambda = lambda I + sum_i w_i h_i h_i^T over
    every example's chosen candidate, kept and recomputed as in NeuralLinear (a LinearState
    with K = 1). A candidate never seen before is scored from its features.

    ts: ONE draw beta_s ~ N(mu, sigma^2 Lambda^-1) per row scores every candidate, h_k.beta_s
    (the candidates' sampled scores are correlated through beta), and the propensity is the
    share of propensity_samples further draws the chosen one wins. ucb: h_k.mu + alpha
    sqrt(h_k^T Lambda^-1 h_k), mixed with epsilon uniform exploration. greedy: h_k.mu.
    """

    takes_candidates = True
    tower = CandidateTower

    def posterior(self, context: tf.Tensor, action_features: tf.Tensor | None = None) -> Posterior:
        """What Thompson draws need: (h [batch, K, p],), the candidates' features."""
        features = self.features(self.tower.inputs(context, action_features))
        assert action_features is not None
        return (per_candidate(features, tf.convert_to_tensor(action_features)),)

    def posterior_samples(self, posterior: Posterior, seed: tf.Tensor, count: int, stream: int) -> tf.Tensor:
        """[batch, count, K] Thompson scores from the row's seed on ``stream``: each draw of the
        shared beta scores every candidate."""
        (features,) = posterior
        p = self.feature_size
        noise = tf.reshape(rng.normal(seed, count * p, stream), [-1, count, p])
        s = self.last_layer
        return shared_posterior_scores(features, s.theta[0], s.gram_inverse[0], self.config.noise, noise)
