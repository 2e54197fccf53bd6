"""Neural bandits: an MLP reward model trained on minibatches from a bounded replay buffer.

* ``neural_epsilon_greedy``: the network's predicted rewards are the scores; collect mixes the
  greedy action with uniform exploration, with exact propensities.
* ``neural_linear`` (Riquelme, Tucker, Snoek, "Deep Bayesian Bandits Showdown", ICLR 2018):
  the network's last hidden layer phi(x) is a representation; on z = [phi(x), 1] every action
  has a Bayesian linear regression, and the policy acts by Thompson sampling or UCB on it.

Everything a policy learns is a tf.Variable of the policy's tf.Module tree: network weights,
Adam's moments, the replay buffer (a ring of the last ``buffer_size`` examples) and the
last-layer statistics. One tf.train.Checkpoint of the policy therefore holds the replay
buffer and the optimizer state together with the weights, and a trainer that restores it
and re-reads the log from the checkpoint's position applies every example exactly once.

The training schedule is deterministic: a training round (``training_steps`` Adam steps on
minibatches drawn with replacement from the buffer, then, for neural_linear, the last layer
recomputed from the whole buffer) runs each time the count of examples ever seen crosses a
multiple of ``train_every_examples``; minibatch indices come from a stateless RNG keyed on
(``seed``, Adam's step). The same examples in the same order give the same variables,
whichever way they are split into ``update`` calls (up to float rounding in the last-layer
sums).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar, Literal

import tensorflow as tf

from bandits import linalg, mlp, rng
from bandits.base import Decision, Policy, is_int, is_number, require
from bandits.linear import LinearState

_DECISION_STREAM = 0
_PROPENSITY_STREAM = 1


# -- hyperparameters -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NeuralConfig:
    """The network, its optimizer, its replay buffer and its training schedule."""

    hidden_sizes: list[int] = dataclasses.field(default_factory=lambda: [64, 64])
    """Units of each hidden layer, input side first; the last one is the representation phi(x)."""
    activation: str = "relu"
    """Hidden-layer activation: relu, tanh, elu, gelu, swish, sigmoid, softplus or leaky_relu."""
    learning_rate: float = 1e-3
    """Adam's step size (beta_1 0.9, beta_2 0.999, epsilon 1e-8)."""
    batch_size: int = 64
    """Examples per minibatch, drawn uniformly with replacement from the replay buffer."""
    training_steps: int = 100
    """Adam steps in each training round."""
    train_every_examples: int = 256
    """A training round runs each time this many more examples have been seen (counted over
    all updates, so the schedule does not depend on how the examples are batched)."""
    buffer_size: int = 10_000
    """Replay buffer capacity: it holds the last buffer_size examples."""
    seed: int = 0
    """Seeds the initial weights and the minibatch draws."""

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, tuple):  # JSON gives a list; keep one form for equality
            object.__setattr__(self, "hidden_sizes", list(self.hidden_sizes))

    def validate(self) -> None:
        mlp.validate_network(self.hidden_sizes, self.activation, self.learning_rate, self.batch_size)
        require(
            is_int(self.training_steps) and 0 <= self.training_steps <= 100_000,
            "training_steps",
            "must be an integer in [0, 100000]",
        )
        require(
            is_int(self.train_every_examples) and self.train_every_examples >= 1,
            "train_every_examples",
            "must be an integer >= 1",
        )
        require(
            is_int(self.buffer_size) and 1 <= self.buffer_size <= 1_000_000,
            "buffer_size",
            "must be an integer in [1, 1000000]",
        )
        require(is_int(self.seed) and 0 <= self.seed < 2**63, "seed", "must be an integer in [0, 2^63)")


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
        require(is_number(self.ridge) and self.ridge > 0, "ridge", "must be > 0")
        require(is_number(self.noise) and self.noise > 0, "noise", "must be > 0")
        require(is_number(self.alpha) and self.alpha >= 0, "alpha", "must be >= 0")
        require(is_number(self.epsilon) and 0 <= self.epsilon <= 1, "epsilon", "must be in [0, 1]")
        require(
            is_int(self.propensity_samples) and 1 <= self.propensity_samples <= 4096,
            "propensity_samples",
            "must be in [1, 4096]",
        )


# -- learned state -------------------------------------------------------------------------------


class ReplayBuffer(tf.Module):
    """The last ``size`` examples, as a ring.

    Example number i (counting from 0 over every update) lives in slot i mod size, so
    ``examples_seen`` alone gives the write index (examples_seen mod size) and the number
    held (min(examples_seen, size)); there is no second counter to keep consistent.
    """

    def __init__(self, size: int, context_dim: int) -> None:
        super().__init__(name="replay_buffer")
        self.size = size
        self.contexts = tf.Variable(tf.zeros([size, context_dim], tf.float32), name="contexts")
        self.actions = tf.Variable(tf.zeros([size], tf.int32), name="actions")
        self.rewards = tf.Variable(tf.zeros([size], tf.float32), name="rewards")
        self.weights = tf.Variable(tf.zeros([size], tf.float32), name="weights")
        self.examples_seen = tf.Variable(0, dtype=tf.int64, name="examples_seen")

    def count(self) -> tf.Tensor:
        """int64 scalar: examples held."""
        return tf.minimum(self.examples_seen, self.size)

    def append(self, contexts: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor) -> None:
        """Writes n examples over the oldest ones. contexts: [n, d], actions: [n] int32, rewards,
        weights: [n]. Of a batch larger than the buffer only its last ``size`` rows are written
        (so no slot is written twice in one scatter, whose order would be undefined)."""
        n = tf.shape(actions, out_type=tf.int64)[0]
        kept = tf.minimum(n, self.size)
        skipped = n - kept
        slots = ((self.examples_seen + skipped + tf.range(kept)) % self.size)[:, None]
        first = tf.cast(skipped, tf.int32)
        self.contexts.scatter_nd_update(slots, contexts[first:])
        self.actions.scatter_nd_update(slots, actions[first:])
        self.rewards.scatter_nd_update(slots, rewards[first:])
        self.weights.scatter_nd_update(slots, weights[first:])
        self.examples_seen.assign_add(n)

    def contents(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Every example held, oldest first: contexts [c, d], actions [c], rewards [c], weights [c]."""
        count = self.count()
        slots = (self.examples_seen - count + tf.range(count)) % self.size
        return self._gather(slots)

    def sample(self, batch_size: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """batch_size examples drawn uniformly with replacement; seed: [2] int64 (stateless)."""
        # Slots fill from 0 and wrap, so the slots in use are always [0, count).
        slots = tf.random.stateless_uniform(
            [batch_size], seed, minval=0, maxval=self.count(), dtype=tf.int64, alg="philox"
        )
        return self._gather(slots)

    def _gather(self, slots: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        return (
            tf.gather(self.contexts, slots),
            tf.gather(self.actions, slots),
            tf.gather(self.rewards, slots),
            tf.gather(self.weights, slots),
        )


class TrainingState(tf.Module):
    """Counters of a neural policy's training (read-only for everyone but update)."""

    def __init__(self) -> None:
        super().__init__(name="training_state")
        self.train_step = tf.Variable(0, dtype=tf.int64, name="train_step")
        """update() calls, as for the linear policies (the export manifest reports it)."""
        self.last_loss = tf.Variable(float("nan"), dtype=tf.float32, name="last_loss")
        """Mean minibatch loss of the last training round (NaN before the first)."""


def per_action_statistics(
    features: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor, num_actions: int
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """sum_i w_i z_i z_i^T, sum_i w_i r_i z_i and sum_i w_i over each action's examples.

    The sums linalg.accumulate adds, computed as one matmul Z_k^T W Z_k per action: n p^2
    work with no [n, p, p] intermediate, which matters when a whole replay buffer is summed.
    features: [n, p] float32, actions: [n] int32, rewards, weights: [n] float32. Returns
    (gram [K, p, p], reward_sums [K, p], counts [K]), float64.
    """
    z = tf.cast(features, tf.float64)
    weighted_rewards = tf.cast(weights * rewards, tf.float64)
    w = tf.cast(weights, tf.float64)
    grams = tf.TensorArray(tf.float64, size=num_actions, element_shape=[z.shape[1], z.shape[1]])
    sums = tf.TensorArray(tf.float64, size=num_actions, element_shape=[z.shape[1]])
    counts = tf.TensorArray(tf.float64, size=num_actions, element_shape=[])
    for k in tf.range(num_actions):
        rows = tf.where(tf.equal(actions, k))[:, 0]
        z_k, w_k = tf.gather(z, rows), tf.gather(w, rows)
        grams = grams.write(k, tf.matmul(z_k * w_k[:, None], z_k, transpose_a=True))  # Z_k^T W_k Z_k
        sums = sums.write(k, tf.linalg.matvec(z_k, tf.gather(weighted_rewards, rows), transpose_a=True))
        counts = counts.write(k, tf.reduce_sum(w_k))
    return grams.stack(), sums.stack(), counts.stack()


def epsilon_greedy_decision(scores: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, epsilon: float) -> Decision:
    """Best allowed action with probability 1 - epsilon, else uniform over the allowed ones,
    drawn from the row's seed; the propensity is exact. scores: [batch, K], mask: [batch, K]
    bool, seed: [batch] int64."""
    probabilities = linalg.epsilon_greedy_probabilities(scores, mask, epsilon)
    action = linalg.sample_categorical(probabilities, rng.uniform(seed, 1, _DECISION_STREAM)[:, 0])
    propensity = tf.gather(probabilities, action, batch_dims=1)
    return {"action": action, "propensity": propensity, "scores": scores}


def greedy_decision(scores: tf.Tensor, mask: tf.Tensor) -> Decision:
    """The best allowed action, propensity 1. scores: [batch, K], mask: [batch, K] bool."""
    action = linalg.masked_argmax(scores, mask)
    return {"action": action, "propensity": tf.ones_like(scores[:, 0]), "scores": scores}


# -- the policies --------------------------------------------------------------------------------


class _TrainingGraphs:
    """The compiled training graphs of one policy.

    A plain object, not a tf.Module, on purpose: tf.saved_model.save exports every
    tf.function it finds on the attributes of the saved module tree, and the greedy and
    collect SavedModels must carry no training ops.
    """

    def __init__(self, policy: NeuralPolicy) -> None:
        examples = [
            tf.TensorSpec([None, policy.context_dim], tf.float32, name="contexts"),
            tf.TensorSpec([None], tf.int32, name="actions"),
            tf.TensorSpec([None], tf.float32, name="rewards"),
            tf.TensorSpec([None], tf.float32, name="weights"),
        ]
        self.absorb = tf.function(policy._absorb, input_signature=examples)
        self.train = tf.function(policy._train, input_signature=[])


class NeuralPolicy(Policy):
    """What both neural algorithms share: network, Adam, replay buffer and training schedule.

    Subclasses choose actions and may extend two hooks that run inside the training graphs:
    ``_absorbed`` (new examples just entered the buffer) and ``_trained`` (a training round
    just ended).
    """

    Config: ClassVar[type] = NeuralConfig

    def __init__(self, context_dim: int, num_actions: int, config: NeuralConfig, **inputs: Any) -> None:
        super().__init__(context_dim, num_actions, config, **inputs)
        self.network = mlp.RewardNetwork(context_dim, num_actions, config.hidden_sizes, config.activation, config.seed)
        self.optimizer = mlp.Adam(self.network.parameters, config.learning_rate)
        self.replay = ReplayBuffer(config.buffer_size, context_dim)
        self.state = TrainingState()
        self._graphs = _TrainingGraphs(self)

    # -- training --------------------------------------------------------------------------

    def update(
        self,
        contexts: tf.Tensor,
        actions: tf.Tensor,
        rewards: tf.Tensor,
        weights: tf.Tensor,
        action_features: tf.Tensor | None = None,
    ) -> None:
        """Appends n examples to the replay buffer and runs every training round they make due.

        The examples are cut at multiples of train_every_examples (counted from the first
        example ever seen), so rounds fall at the same examples however updates are batched.
        Call it eagerly (the trainer does): the schedule is Python around compiled graphs.
        """
        contexts = tf.convert_to_tensor(contexts, tf.float32)
        actions = tf.convert_to_tensor(actions, tf.int32)
        rewards = tf.convert_to_tensor(rewards, tf.float32)
        weights = tf.convert_to_tensor(weights, tf.float32)
        every = self.config.train_every_examples
        seen = int(self.replay.examples_seen.numpy())
        n = int(actions.shape[0])
        start = 0
        while start < n:
            stop = min(n, start + every - seen % every)
            rows = slice(start, stop)
            self._graphs.absorb(contexts[rows], actions[rows], rewards[rows], weights[rows])
            seen += stop - start
            start = stop
            if seen % every == 0:
                self._graphs.train()
        self.state.train_step.assign_add(1)

    def compile(self) -> None:
        """Traces the training graphs now (a few seconds), not on the first examples."""
        self._graphs.absorb.get_concrete_function()
        self._graphs.train.get_concrete_function()

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """Network weights with Adam's two moments (float32), the replay buffer and the counters."""
        sizes = [context_dim, *config.hidden_sizes, num_actions]
        parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
        return 3 * 4 * parameters + 4 * config.buffer_size * (context_dim + 3) + 64

    def stats(self) -> dict[str, Any]:
        """training_steps: Adam steps done; last_loss: mean minibatch loss of the last training
        round (None before the first)."""
        steps = int(self.optimizer.step.numpy())
        return {"training_steps": steps, "last_loss": float(self.state.last_loss.numpy()) if steps else None}

    def _absorb(self, contexts: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor) -> None:
        """Graph body: new examples into the buffer, then the subclass's hook."""
        self.replay.append(contexts, actions, rewards, weights)
        self._absorbed(contexts, actions, rewards, weights)

    def _absorbed(self, contexts: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor) -> None:
        """Hook: examples just entered the buffer (inside the absorb graph)."""
        return  # (a docstring-only body breaks autograph's conversion)

    def _train(self) -> None:
        """Graph body of one training round: training_steps Adam steps, then the subclass's hook."""
        config = self.config
        parameters = self.network.parameters
        total_loss = tf.constant(0.0)
        for _ in tf.range(config.training_steps):
            # Minibatch t is keyed on (seed, t): the same round replays the same draws.
            seed = tf.stack([tf.constant(config.seed, tf.int64), self.optimizer.step])
            contexts, actions, rewards, weights = self.replay.sample(config.batch_size, seed)
            with tf.GradientTape() as tape:
                loss = mlp.weighted_squared_error(self.network.predict(contexts), actions, rewards, weights)
            self.optimizer.apply(parameters, tape.gradient(loss, parameters))
            total_loss += loss
        if config.training_steps:
            self.state.last_loss.assign(total_loss / config.training_steps)
        self._trained()

    def _trained(self) -> None:
        """Hook: a training round just ended (inside the train graph)."""
        return


class NeuralEpsilonGreedy(NeuralPolicy):
    """Scores are the network's predicted rewards; collect explores uniformly with share epsilon."""

    algorithm = "neural_epsilon_greedy"
    Config = NeuralEpsilonGreedyConfig

    def predicted_rewards(self, context: tf.Tensor) -> tf.Tensor:
        """[batch, K] predicted reward of every action for context [batch, d]."""
        return self.network.predict(tf.convert_to_tensor(context, tf.float32))

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return greedy_decision(self.predicted_rewards(context), mask)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return epsilon_greedy_decision(self.predicted_rewards(context), mask, seed, self.config.epsilon)

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        return linalg.epsilon_greedy_probabilities(self.predicted_rewards(context), mask, self.config.epsilon)


class NeuralLinear(NeuralPolicy):
    """Bayesian linear regression per action on the network's representation.

    Last-layer model (the paper's, with the noise variance known rather than inverse-gamma):
    on features z = [phi(x), 1], action k's reward is z.beta_k + N(0, sigma^2) with prior
    beta_k ~ N(0, sigma^2 / lambda I), so the posterior is N(mu_k, sigma^2 Lambda_k^-1) with
    Lambda_k = lambda I + sum_i w_i z_i z_i^T and mu_k = Lambda_k^-1 sum_i w_i r_i z_i over
    action k's examples, w_i the importance weights: weighted ridge regression, kept as exact
    float64 sufficient statistics in a LinearState. After every training round they are
    recomputed from the whole buffer with the new phi; between rounds every new example is
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
        self.last_layer = LinearState(self.feature_size, num_actions, config.ridge)

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """Adds the last layer (float64 Lambda_k, float32 inverse, twice in an update, as in
        LinearPolicy) and the whole buffer's features while it is recomputed (float32 and float64)."""
        p = config.hidden_sizes[-1] + 1
        last_layer = 2 * 12 * num_actions * p * p
        return super().state_bytes(context_dim, num_actions, config) + last_layer + 12 * config.buffer_size * p

    def features(self, context: tf.Tensor) -> tf.Tensor:
        """z = [phi(x), 1]: [batch, d] float32 -> [batch, representation_size + 1] float32."""
        representation = self.network.representation(tf.convert_to_tensor(context, tf.float32))
        return tf.concat([representation, tf.ones_like(representation[:, :1])], axis=1)

    def mean_and_width(self, context: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """[batch, K] posterior mean z.mu_k and width sqrt(z^T Lambda_k^-1 z) for context [batch, d]."""
        return linalg.mean_and_width(self.features(context), self.last_layer.theta, self.last_layer.gram_inverse)

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        mean, _ = self.mean_and_width(context)
        return greedy_decision(mean, mask)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        mean, width = self.mean_and_width(context)
        config = self.config
        if config.mode == "ucb":
            return epsilon_greedy_decision(mean + config.alpha * width, mask, seed, config.epsilon)
        scores = mean + config.noise * width * rng.normal(seed, self.num_actions, _DECISION_STREAM)
        action = linalg.masked_argmax(scores, mask)
        propensity = linalg.sampled_argmax_frequency(mean, width, config.noise, mask, self._noise(seed), action)
        return {"action": action, "propensity": propensity, "scores": scores}

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        mean, width = self.mean_and_width(context)
        config = self.config
        if config.mode == "ucb":
            return linalg.epsilon_greedy_probabilities(mean + config.alpha * width, mask, config.epsilon)
        return linalg.sampled_argmax_distribution(mean, width, config.noise, mask, self._noise(seed))

    def _noise(self, seed: tf.Tensor) -> tf.Tensor:
        """[batch, S, K] standard normals estimating the Thompson propensity."""
        s, k = self.config.propensity_samples, self.num_actions
        return tf.reshape(rng.normal(seed, s * k, _PROPENSITY_STREAM), [-1, s, k])

    # -- last layer (inside the training graphs) ---------------------------------------------

    def _absorbed(self, contexts: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, weights: tf.Tensor) -> None:
        """The new examples' statistics under the current phi, added to the last layer's."""
        s = self.last_layer
        gram, reward_sums, counts = per_action_statistics(
            self.features(contexts), actions, rewards, weights, self.num_actions
        )
        self._set_statistics(s.gram + gram, s.reward_sums + reward_sums, s.counts + counts)

    def _trained(self) -> None:
        """The last layer recomputed from the prior and the whole buffer under the new phi."""
        contexts, actions, rewards, weights = self.replay.contents()
        gram, reward_sums, counts = per_action_statistics(
            self.features(contexts), actions, rewards, weights, self.num_actions
        )
        prior = self.config.ridge * tf.eye(self.feature_size, batch_shape=[self.num_actions], dtype=tf.float64)
        self._set_statistics(prior + gram, reward_sums, counts)

    def _set_statistics(self, gram: tf.Tensor, reward_sums: tf.Tensor, counts: tf.Tensor) -> None:
        s = self.last_layer
        s.gram.assign(gram)
        s.reward_sums.assign(reward_sums)
        s.counts.assign(counts)
        theta, gram_inverse = linalg.ridge_solution(gram, reward_sums)
        s.theta.assign(tf.cast(theta, tf.float32))
        s.gram_inverse.assign(tf.cast(gram_inverse, tf.float32))
        s.train_step.assign_add(1)
