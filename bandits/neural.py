"""Neural bandits: an MLP reward model trained on minibatches from a bounded replay buffer.

* ``neural_epsilon_greedy``: the network's predicted rewards are the scores; collect mixes the
  greedy action with uniform exploration, with exact propensities.
* ``neural_linear`` (Riquelme, Tucker, Snoek, "Deep Bayesian Bandits Showdown", ICLR 2018):
  the network's last hidden layer phi(x) is a representation; on z = [phi(x), 1] every action
  has a Bayesian linear regression, and the policy acts by Thompson sampling or UCB on it.

Both have a candidate-set form (``takes_candidates``) for per-request candidates with features
z: the network is a tower on [x, z] with one output, the predicted reward of that candidate,
applied to every candidate of a row; the replay buffer also keeps the chosen candidate's z;
and neural_linear has ONE Bayesian linear regression on [phi(x, z), 1] shared by all
candidates, so a candidate never seen before is scored from its features.

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


Examples = tuple[tf.Tensor, ...]
"""One tensor per replay column, n rows each: contexts [n, d] float32, actions [n] int32,
rewards [n] float32, weights [n] float32 and, in a candidate policy's buffer, the chosen
candidates' action_features [n, f] float32."""

Posterior = tuple[tf.Tensor, ...]
"""What neural_linear's Thompson draws for one batch need, computed once per call (the fixed
form: the actions' means and widths; the candidate form: the candidates' features)."""


class ReplayBuffer(tf.Module):
    """The last ``size`` examples, as a ring.

    Example number i (counting from 0 over every update) lives in slot i mod size, so
    ``examples_seen`` alone gives the write index (examples_seen mod size) and the number
    held (min(examples_seen, size)); there is no second counter to keep consistent.
    With action_feature_dim f > 0 it has a fifth column, the chosen candidates' features.
    """

    def __init__(self, size: int, context_dim: int, action_feature_dim: int = 0) -> None:
        super().__init__(name="replay_buffer")
        self.size = size
        self.action_feature_dim = action_feature_dim
        self.contexts = tf.Variable(tf.zeros([size, context_dim], tf.float32), name="contexts")
        self.actions = tf.Variable(tf.zeros([size], tf.int32), name="actions")
        self.rewards = tf.Variable(tf.zeros([size], tf.float32), name="rewards")
        self.weights = tf.Variable(tf.zeros([size], tf.float32), name="weights")
        if action_feature_dim:
            self.action_features = tf.Variable(tf.zeros([size, action_feature_dim], tf.float32), name="action_features")
        self.examples_seen = tf.Variable(0, dtype=tf.int64, name="examples_seen")

    def columns(self) -> list[tf.Variable]:
        """The stored columns in the order of Examples."""
        columns = [self.contexts, self.actions, self.rewards, self.weights]
        return [*columns, self.action_features] if self.action_feature_dim else columns

    def count(self) -> tf.Tensor:
        """int64 scalar: examples held."""
        return tf.minimum(self.examples_seen, self.size)

    def append(self, *examples: tf.Tensor) -> None:
        """Writes n examples (one tensor per column, see Examples) over the oldest ones. Of a
        batch larger than the buffer only its last ``size`` rows are written (so no slot is
        written twice in one scatter, whose order would be undefined)."""
        n = tf.shape(examples[0], out_type=tf.int64)[0]
        kept = tf.minimum(n, self.size)
        skipped = n - kept
        slots = ((self.examples_seen + skipped + tf.range(kept)) % self.size)[:, None]
        first = tf.cast(skipped, tf.int32)
        for column, values in zip(self.columns(), examples, strict=True):
            column.scatter_nd_update(slots, values[first:])
        self.examples_seen.assign_add(n)

    def contents(self) -> Examples:
        """Every example held, oldest first: one [c, ...] tensor per column."""
        count = self.count()
        slots = (self.examples_seen - count + tf.range(count)) % self.size
        return self._gather(slots)

    def sample(self, batch_size: int, seed: tf.Tensor) -> Examples:
        """batch_size examples drawn uniformly with replacement; seed: [2] int64 (stateless)."""
        # Slots fill from 0 and wrap, so the slots in use are always [0, count).
        slots = tf.random.stateless_uniform(
            [batch_size], seed, minval=0, maxval=self.count(), dtype=tf.int64, alg="philox"
        )
        return self._gather(slots)

    def _gather(self, slots: tf.Tensor) -> Examples:
        return tuple(tf.gather(column, slots) for column in self.columns())


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


def candidate_inputs(contexts: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """The tower's inputs [x, z_k] for every candidate of every row.

    contexts: [batch, d] float32, candidates: [batch, K, f] float32 (K may vary per call).
    Returns [batch * K, d + f] float32, row b * K + k holding row b's context and candidate k.
    """
    shape = tf.shape(candidates)
    repeated = tf.broadcast_to(contexts[:, None, :], tf.stack([shape[0], shape[1], tf.shape(contexts)[1]]))
    pairs = tf.concat([repeated, candidates], axis=2)
    return tf.reshape(pairs, [-1, pairs.shape[2]])


def per_candidate(values: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """Undoes candidate_inputs' flattening: values [batch * K, ...] -> [batch, K, ...].
    candidates: the [batch, K, f] tensor the rows came from."""
    return tf.reshape(values, tf.concat([tf.shape(candidates)[:2], tf.shape(values)[1:]], axis=0))


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
        if policy.takes_candidates:
            examples.append(tf.TensorSpec([None, policy.action_feature_dim], tf.float32, name="action_features"))
        self.absorb = tf.function(policy._absorb, input_signature=examples)
        self.train = tf.function(policy._train, input_signature=[])


class NeuralPolicy(Policy):
    """What both neural algorithms share: network, Adam, replay buffer and training schedule.

    Subclasses choose actions and may extend two hooks that run inside the training graphs:
    ``_absorbed`` (new examples just entered the buffer) and ``_trained`` (a training round
    just ended). The candidate-set forms change ``network_shape`` and ``network_inputs``.
    """

    Config: ClassVar[type] = NeuralConfig

    def __init__(self, context_dim: int, num_actions: int, config: NeuralConfig, **inputs: Any) -> None:
        super().__init__(context_dim, num_actions, config, **inputs)
        inputs_width, outputs = self.network_shape(context_dim, num_actions, self.action_feature_dim)
        self.network = mlp.RewardNetwork(inputs_width, outputs, config.hidden_sizes, config.activation, config.seed)
        self.optimizer = mlp.Adam(self.network.parameters, config.learning_rate)
        self.replay = ReplayBuffer(config.buffer_size, context_dim, self.action_feature_dim)
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
        examples = [
            tf.convert_to_tensor(contexts, tf.float32),
            tf.convert_to_tensor(actions, tf.int32),
            tf.convert_to_tensor(rewards, tf.float32),
            tf.convert_to_tensor(weights, tf.float32),
        ]
        if self.takes_candidates:
            assert action_features is not None, "a candidate policy learns from the chosen candidates' features"
            examples.append(tf.convert_to_tensor(action_features, tf.float32))
        every = self.config.train_every_examples
        seen = int(self.replay.examples_seen.numpy())
        n = int(examples[1].shape[0])
        start = 0
        while start < n:
            stop = min(n, start + every - seen % every)
            rows = slice(start, stop)
            self._graphs.absorb(*(column[rows] for column in examples))
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
    def network_shape(cls, context_dim: int, num_actions: int, action_feature_dim: int) -> tuple[int, int]:
        """The network's (input width, outputs): a context in, one predicted reward per action out."""
        return context_dim, num_actions

    def network_inputs(self, examples: Examples) -> tuple[tf.Tensor, tf.Tensor]:
        """The network's inputs [n, width] for examples, and which output [n] int32 (and, for
        neural_linear, which last-layer regression) is each example's chosen action: the action."""
        contexts, actions = examples[0], examples[1]
        return contexts, actions

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """Network weights with Adam's two moments (float32), the replay buffer and the counters."""
        inputs_width, outputs = cls.network_shape(context_dim, num_actions, action_feature_dim)
        sizes = [inputs_width, *config.hidden_sizes, outputs]
        parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
        return 3 * 4 * parameters + 4 * config.buffer_size * (context_dim + action_feature_dim + 3) + 64

    def stats(self) -> dict[str, Any]:
        """training_steps: Adam steps done; last_loss: mean minibatch loss of the last training
        round (None before the first)."""
        steps = int(self.optimizer.step.numpy())
        return {"training_steps": steps, "last_loss": float(self.state.last_loss.numpy()) if steps else None}

    def _absorb(self, *examples: tf.Tensor) -> None:
        """Graph body: new examples (one tensor per column, see Examples) into the buffer, then
        the subclass's hook."""
        self.replay.append(*examples)
        self._absorbed(examples)

    def _absorbed(self, examples: Examples) -> None:
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
            examples = self.replay.sample(config.batch_size, seed)
            inputs, outputs = self.network_inputs(examples)
            with tf.GradientTape() as tape:
                loss = mlp.weighted_squared_error(self.network.predict(inputs), outputs, examples[2], examples[3])
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

    def predicted_rewards(self, context: tf.Tensor, action_features: tf.Tensor | None = None) -> tf.Tensor:
        """[batch, K] predicted reward of every action for context [batch, d]."""
        return self.network.predict(tf.convert_to_tensor(context, tf.float32))

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return greedy_decision(self.predicted_rewards(context, action_features), mask)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return epsilon_greedy_decision(
            self.predicted_rewards(context, action_features), mask, seed, self.config.epsilon
        )

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        scores = self.predicted_rewards(context, action_features)
        return linalg.epsilon_greedy_probabilities(scores, mask, self.config.epsilon)


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
        self.last_layer = LinearState(self.feature_size, self.regressions(num_actions), config.ridge)

    @classmethod
    def regressions(cls, num_actions: int) -> int:
        """How many last-layer regressions: one per action."""
        return num_actions

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """Adds the last layer (float64 Lambda_k, float32 inverse, twice in an update, as in
        LinearPolicy) and the whole buffer's features while it is recomputed (float32 and float64)."""
        p = config.hidden_sizes[-1] + 1
        last_layer = 2 * 12 * cls.regressions(num_actions) * p * p
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
        """[batch, K] posterior mean z.mu_k and width sqrt(z^T Lambda_k^-1 z) for context [batch, d]."""
        return linalg.mean_and_width(self.features(context), self.last_layer.theta, self.last_layer.gram_inverse)

    def posterior(self, context: tf.Tensor, action_features: tf.Tensor | None = None) -> Posterior:
        """What Thompson draws for a batch need, computed once per call: (mean, width) [batch, K]."""
        return self.mean_and_width(context)

    def posterior_samples(self, posterior: Posterior, seed: tf.Tensor, count: int, stream: int) -> tf.Tensor:
        """[batch, count, K] Thompson scores from the row's seed on ``stream``: the actions'
        posteriors are independent, so each draw is z.mu_k + sigma sqrt(z^T Lambda_k^-1 z) N(0, 1)."""
        mean, width = posterior
        k = self.num_actions
        noise = tf.reshape(rng.normal(seed, count * k, stream), [-1, count, k])
        return mean[:, None, :] + self.config.noise * width[:, None, :] * noise

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
        scores = self.posterior_samples(posterior, seed, 1, _DECISION_STREAM)[:, 0, :]
        action = linalg.masked_argmax(scores, mask)
        samples = self.posterior_samples(posterior, seed, config.propensity_samples, _PROPENSITY_STREAM)
        propensity = linalg.argmax_frequency(samples, mask, action)
        return {"action": action, "propensity": propensity, "scores": scores}

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        config = self.config
        if config.mode == "ucb":
            mean, width = self.mean_and_width(context, action_features)
            return linalg.epsilon_greedy_probabilities(mean + config.alpha * width, mask, config.epsilon)
        posterior = self.posterior(context, action_features)
        samples = self.posterior_samples(posterior, seed, config.propensity_samples, _PROPENSITY_STREAM)
        return linalg.argmax_distribution(samples, mask)

    # -- last layer (inside the training graphs) ---------------------------------------------

    def _absorbed(self, examples: Examples) -> None:
        """The new examples' statistics under the current phi, added to the last layer's."""
        s = self.last_layer
        gram, reward_sums, counts = self._statistics(examples)
        self._set_statistics(s.gram + gram, s.reward_sums + reward_sums, s.counts + counts)

    def _trained(self) -> None:
        """The last layer recomputed from the prior and the whole buffer under the new phi."""
        gram, reward_sums, counts = self._statistics(self.replay.contents())
        regressions = self.regressions(self.num_actions)
        prior = self.config.ridge * tf.eye(self.feature_size, batch_shape=[regressions], dtype=tf.float64)
        self._set_statistics(prior + gram, reward_sums, counts)

    def _statistics(self, examples: Examples) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Each regression's sums over examples under the current phi (per_action_statistics)."""
        inputs, regression = self.network_inputs(examples)
        rewards, weights = examples[2], examples[3]
        return per_action_statistics(
            self.features(inputs), regression, rewards, weights, self.regressions(self.num_actions)
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


# -- the candidate-set forms ---------------------------------------------------------------------


class CandidateNeuralPolicy(NeuralPolicy):
    """The candidate-set network: a tower from [x, z] (a context and one candidate's features)
    to that candidate's predicted reward, applied to each of a row's K candidates, and trained
    like the fixed forms' network on the chosen candidates, kept in the replay buffer's fifth
    column. K varies per call: nothing here has num_actions (K_max) in a shape."""

    takes_candidates = True

    @classmethod
    def network_shape(cls, context_dim: int, num_actions: int, action_feature_dim: int) -> tuple[int, int]:
        """[x, z] in, one predicted reward out."""
        return context_dim + action_feature_dim, 1

    def network_inputs(self, examples: Examples) -> tuple[tf.Tensor, tf.Tensor]:
        """[x, z] of each example's chosen candidate; all on the tower's one output (and
        neural_linear's one regression): ``actions`` is not used."""
        contexts, actions, action_features = examples[0], examples[1], examples[4]
        return tf.concat([contexts, action_features], axis=1), tf.zeros_like(actions)

    def tower_inputs(self, context: tf.Tensor, action_features: tf.Tensor | None) -> tf.Tensor:
        """[batch * K, d + f]: every candidate [batch, K, f] with its row's context [batch, d]."""
        assert action_features is not None, "a candidate policy scores the candidates' features"
        context = tf.convert_to_tensor(context, tf.float32)
        return candidate_inputs(context, tf.convert_to_tensor(action_features, tf.float32))


class CandidateNeuralEpsilonGreedy(CandidateNeuralPolicy, NeuralEpsilonGreedy):
    """neural_epsilon_greedy over candidate sets: a candidate's score is the tower's predicted
    reward; collect explores uniformly over the allowed candidates with share epsilon."""

    def predicted_rewards(self, context: tf.Tensor, action_features: tf.Tensor | None = None) -> tf.Tensor:
        """[batch, K] predicted reward of every candidate: context [batch, d], action_features [batch, K, f]."""
        predictions = self.network.predict(self.tower_inputs(context, action_features))[:, 0]
        return per_candidate(predictions, action_features)


class CandidateNeuralLinear(CandidateNeuralPolicy, NeuralLinear):
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

    @classmethod
    def regressions(cls, num_actions: int) -> int:
        """One regression for every candidate."""
        return 1

    def candidate_features(self, context: tf.Tensor, action_features: tf.Tensor | None) -> tf.Tensor:
        """h_k = [phi(x, z_k), 1] of every candidate: [batch, K, representation_size + 1]."""
        return per_candidate(self.features(self.tower_inputs(context, action_features)), action_features)

    def mean_and_width(
        self, context: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """[batch, K] posterior mean h_k.mu and width sqrt(h_k^T Lambda^-1 h_k) of every candidate."""
        features = self.features(self.tower_inputs(context, action_features))
        mean, width = linalg.mean_and_width(features, self.last_layer.theta, self.last_layer.gram_inverse)
        return per_candidate(mean[:, 0], action_features), per_candidate(width[:, 0], action_features)

    def posterior(self, context: tf.Tensor, action_features: tf.Tensor | None = None) -> Posterior:
        """What Thompson draws need: (h [batch, K, p],), the candidates' features."""
        return (self.candidate_features(context, action_features),)

    def posterior_samples(self, posterior: Posterior, seed: tf.Tensor, count: int, stream: int) -> tf.Tensor:
        """[batch, count, K] Thompson scores from the row's seed on ``stream``: each draw of the
        shared beta scores every candidate."""
        (features,) = posterior
        p = self.feature_size
        noise = tf.reshape(rng.normal(seed, count * p, stream), [-1, count, p])
        s = self.last_layer
        return shared_posterior_scores(features, s.theta[0], s.gram_inverse[0], self.config.noise, noise)
