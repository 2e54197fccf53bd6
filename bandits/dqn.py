"""DQN for sequential decisions: Double DQN with a target network, a Huber loss and
epsilon-greedy exploration whose epsilon decays with the transitions the model has seen.

Notation (van Hasselt, Guez, Silver, "Deep Reinforcement Learning with Double Q-learning",
AAAI 2016): Q(s, .; theta) is the online network, Q(s, .; theta^-) the target network. A
transition (s, a, r, s', done) with importance weight w has the TD target

    y = r + gamma * (1 - done) * Q(s', argmax_a' Q(s', a'; theta); theta^-)

(the online network picks the next action, the target network evaluates it), and the loss of
a minibatch is mean_i w_i * huber_delta(Q(s_i, a_i; theta) - y_i). After every Adam step the
target network either becomes a copy of the online one every ``target_update_period`` steps
(periodic) or moves towards it, theta^- <- tau theta + (1 - tau) theta^- (polyak).

As in bandits.neural, everything learned is a tf.Variable of the policy's tf.Module tree:
both networks, Adam's moments, the replay buffer (a ring of the last ``buffer_size``
transitions) and the counter of transitions ever seen. One tf.train.Checkpoint therefore holds
them all, and a trainer that restores it and re-reads the log from its position applies every
transition exactly once.

The schedule is deterministic: each time the count of transitions ever seen reaches a multiple
of ``train_every_transitions`` (and is at least ``learning_starts``), ``training_steps`` Adam
steps run on minibatches drawn with replacement from the buffer by a stateless RNG keyed on
(``seed``, Adam's step). The same transitions in the same order give the same variables,
however they are split into ``update_transitions`` calls.

Exploration: epsilon falls linearly from ``epsilon_start`` to ``epsilon_end`` over the first
``epsilon_decay_transitions`` transitions seen. The collect graph reads that counter (it never
writes it), so a served copy refreshed from a checkpoint explores as the trainer's model says.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar, Literal

import tensorflow as tf

from bandits import linalg, mlp
from bandits.base import Decision, Policy, is_int, is_number, require
from bandits.neural import TrainingState, epsilon_greedy_decision, greedy_decision

# -- hyperparameters -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """The Q-network, its optimizer and target network, the replay buffer, the training
    schedule and the exploration schedule. The defaults learn CartPole-v1 (see
    bench/cartpole_inprocess.py)."""

    hidden_sizes: list[int] = dataclasses.field(default_factory=lambda: [128, 128])
    """Units of each hidden layer of the Q-network, input side first."""
    activation: str = "relu"
    """Hidden-layer activation: relu, tanh, elu, gelu, swish, sigmoid, softplus or leaky_relu."""
    learning_rate: float = 1e-3
    """Adam's step size (beta_1 0.9, beta_2 0.999, epsilon 1e-8)."""
    batch_size: int = 64
    """Transitions per minibatch, drawn uniformly with replacement from the replay buffer."""
    discount: float = 0.99
    """gamma: the weight of the next state's value in the TD target."""
    huber_delta: float = 10.0
    """delta of the Huber loss: quadratic for TD errors within delta, linear beyond. Measure it
    on the scale of the returns: with +1 per step and gamma 0.99 the values reach ~100, and
    delta 1 caps the weight of the rare large errors (the transitions into a terminal state)
    so low that CartPole-v1 needed far longer to learn and rarely held a return of 500."""
    buffer_size: int = 50_000
    """Replay buffer capacity: it holds the last buffer_size transitions."""
    learning_starts: int = 1_000
    """No training before this many transitions have been seen."""
    train_every_transitions: int = 1
    """A training round runs each time this many more transitions have been seen (counted over
    all updates, so the schedule does not depend on how the transitions are batched)."""
    training_steps: int = 1
    """Adam steps in each training round."""
    target_update: Literal["periodic", "polyak"] = "polyak"
    """How the target network follows the online one: a copy every target_update_period Adam
    steps, or Polyak averaging with polyak_tau after every step."""
    target_update_period: int = 500
    """Adam steps between two copies of the online network into the target (periodic)."""
    polyak_tau: float = 0.005
    """tau: the online network's share in each Polyak update of the target (polyak)."""
    epsilon_start: float = 1.0
    """Exploration share of the collect policy before any transition has been seen."""
    epsilon_end: float = 0.05
    """Exploration share once epsilon_decay_transitions transitions have been seen."""
    epsilon_decay_transitions: int = 10_000
    """Transitions over which epsilon falls linearly from epsilon_start to epsilon_end."""
    seed: int = 0
    """Seeds the initial weights and the minibatch draws."""

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, tuple):  # JSON gives a list; keep one form for equality
            object.__setattr__(self, "hidden_sizes", list(self.hidden_sizes))

    def validate(self) -> None:
        mlp.validate_network(self.hidden_sizes, self.activation, self.learning_rate, self.batch_size)
        require(is_number(self.discount) and 0 <= self.discount <= 1, "discount", "must be in [0, 1]")
        require(is_number(self.huber_delta) and self.huber_delta > 0, "huber_delta", "must be > 0")
        require(
            is_int(self.buffer_size) and 1 <= self.buffer_size <= 1_000_000,
            "buffer_size",
            "must be an integer in [1, 1000000]",
        )
        require(is_int(self.learning_starts) and self.learning_starts >= 0, "learning_starts", "must be >= 0")
        require(
            is_int(self.train_every_transitions) and self.train_every_transitions >= 1,
            "train_every_transitions",
            "must be an integer >= 1",
        )
        require(
            is_int(self.training_steps) and 0 <= self.training_steps <= 100_000,
            "training_steps",
            "must be an integer in [0, 100000]",
        )
        require(self.target_update in ("periodic", "polyak"), "target_update", 'must be "periodic" or "polyak"')
        require(
            is_int(self.target_update_period) and self.target_update_period >= 1,
            "target_update_period",
            "must be an integer >= 1",
        )
        tau = self.polyak_tau
        require(is_number(tau) and 0 < tau <= 1, "polyak_tau", "must be in (0, 1]")
        for name in ("epsilon_start", "epsilon_end"):
            value = getattr(self, name)
            require(is_number(value) and 0 <= value <= 1, name, "must be in [0, 1]")
        require(
            is_int(self.epsilon_decay_transitions) and self.epsilon_decay_transitions >= 0,
            "epsilon_decay_transitions",
            "must be an integer >= 0",
        )
        require(is_int(self.seed) and 0 <= self.seed < 2**63, "seed", "must be an integer in [0, 2^63)")


# -- the math ------------------------------------------------------------------------------------


def huber(errors: tf.Tensor, delta: float) -> tf.Tensor:
    """Elementwise Huber loss: e^2 / 2 where |e| <= delta, delta (|e| - delta / 2) beyond.
    errors: any shape, float32."""
    absolute = tf.abs(errors)
    quadratic = tf.minimum(absolute, delta)
    return 0.5 * tf.square(quadratic) + delta * (absolute - quadratic)


def double_dqn_targets(
    online_next_q: tf.Tensor, target_next_q: tf.Tensor, rewards: tf.Tensor, dones: tf.Tensor, discount: float
) -> tf.Tensor:
    """y = r + gamma (1 - done) Q_target(s', argmax_a' Q_online(s', a')).

    online_next_q, target_next_q: [n, K] float32, the two networks' values of s'; rewards: [n]
    float32; dones: [n] float32 (1: s' is terminal, its value is not counted). Returns [n]
    float32, with no gradient.
    """
    next_actions = tf.argmax(online_next_q, axis=1, output_type=tf.int32)
    next_values = tf.gather(target_next_q, next_actions, batch_dims=1)
    return tf.stop_gradient(rewards + discount * (1.0 - dones) * next_values)


def weighted_huber_loss(
    q_values: tf.Tensor, actions: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, delta: float
) -> tf.Tensor:
    """mean_i w_i huber(Q(s_i, a_i) - y_i): only the taken action's value has a target.

    q_values: [n, K] float32, actions: [n] int32, targets: [n], weights: [n] (importance
    weights). Returns a float32 scalar.
    """
    chosen = tf.gather(q_values, actions, batch_dims=1)
    return tf.reduce_mean(weights * huber(chosen - targets, delta))


def polyak_average(target: tf.Tensor, online: tf.Tensor, tau: float) -> tf.Tensor:
    """theta^- <- tau theta + (1 - tau) theta^-, for one parameter tensor (same shapes)."""
    return tau * online + (1.0 - tau) * target


def linear_epsilon(transitions_seen: tf.Tensor, start: float, end: float, decay_transitions: int) -> tf.Tensor:
    """start + (end - start) min(1, seen / decay_transitions): float32 scalar (end when
    decay_transitions is 0). transitions_seen: int64 scalar."""
    if decay_transitions == 0:
        return tf.constant(end, tf.float32)
    progress = tf.minimum(tf.cast(transitions_seen, tf.float32) / float(decay_transitions), 1.0)
    return start + (end - start) * progress


# -- learned state -------------------------------------------------------------------------------


class TransitionBuffer(tf.Module):
    """The last ``size`` transitions (s, a, r, s', done) with their importance weights, as a ring.

    Transition i (counting from 0 over every update) lives in slot i mod size, so
    ``transitions_seen`` alone gives the write index and the number held.
    """

    def __init__(self, size: int, context_dim: int) -> None:
        super().__init__(name="transition_buffer")
        self.size = size
        self.contexts = tf.Variable(tf.zeros([size, context_dim], tf.float32), name="contexts")
        self.actions = tf.Variable(tf.zeros([size], tf.int32), name="actions")
        self.rewards = tf.Variable(tf.zeros([size], tf.float32), name="rewards")
        self.next_contexts = tf.Variable(tf.zeros([size, context_dim], tf.float32), name="next_contexts")
        self.dones = tf.Variable(tf.zeros([size], tf.float32), name="dones")
        self.weights = tf.Variable(tf.zeros([size], tf.float32), name="weights")
        self.transitions_seen = tf.Variable(0, dtype=tf.int64, name="transitions_seen")

    @property
    def columns(self) -> tuple[tf.Variable, ...]:
        return (self.contexts, self.actions, self.rewards, self.next_contexts, self.dones, self.weights)

    def count(self) -> tf.Tensor:
        """int64 scalar: transitions held."""
        return tf.minimum(self.transitions_seen, self.size)

    def append(self, *transitions: tf.Tensor) -> None:
        """Writes n transitions (contexts [n, d], actions [n] int32, rewards [n], next_contexts
        [n, d], dones [n] float32, weights [n]) over the oldest ones. Of a batch larger than
        the buffer only its last ``size`` rows are written (no slot is written twice)."""
        n = tf.shape(transitions[1], out_type=tf.int64)[0]
        kept = tf.minimum(n, self.size)
        skipped = n - kept
        slots = ((self.transitions_seen + skipped + tf.range(kept)) % self.size)[:, None]
        first = tf.cast(skipped, tf.int32)
        for column, values in zip(self.columns, transitions, strict=True):
            column.scatter_nd_update(slots, values[first:])
        self.transitions_seen.assign_add(n)

    def contents(self) -> tuple[tf.Tensor, ...]:
        """Every transition held, oldest first (the six columns)."""
        count = self.count()
        return self._gather((self.transitions_seen - count + tf.range(count)) % self.size)

    def sample(self, batch_size: int, seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """batch_size transitions drawn uniformly with replacement; seed: [2] int64 (stateless)."""
        # Slots fill from 0 and wrap, so the slots in use are always [0, count).
        slots = tf.random.stateless_uniform(
            [batch_size], seed, minval=0, maxval=self.count(), dtype=tf.int64, alg="philox"
        )
        return self._gather(slots)

    def _gather(self, slots: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return tuple(tf.gather(column, slots) for column in self.columns)


# -- the policy ----------------------------------------------------------------------------------


class _TrainingGraphs:
    """The compiled training graph, on a plain object (not a tf.Module) so that
    tf.saved_model.save does not export it with the greedy and collect signatures."""

    def __init__(self, policy: DQN) -> None:
        d = policy.context_dim
        transitions = [
            tf.TensorSpec([None, d], tf.float32, name="contexts"),
            tf.TensorSpec([None], tf.int32, name="actions"),
            tf.TensorSpec([None], tf.float32, name="rewards"),
            tf.TensorSpec([None, d], tf.float32, name="next_contexts"),
            tf.TensorSpec([None], tf.float32, name="dones"),
            tf.TensorSpec([None], tf.float32, name="weights"),
        ]
        self.update = tf.function(policy._update_transitions, input_signature=transitions)


class DQN(Policy):
    """Double DQN. Scores are the online network's Q-values; greedy takes the best allowed
    action; collect is epsilon-greedy with epsilon decayed by the transitions seen."""

    algorithm = "dqn"
    sequential: ClassVar[bool] = True
    """The trainer stitches each session's decisions into transitions for update_transitions."""
    Config = DQNConfig

    def __init__(self, context_dim: int, num_actions: int, config: DQNConfig, **inputs: Any) -> None:
        super().__init__(context_dim, num_actions, config, **inputs)
        hidden, activation = config.hidden_sizes, config.activation
        self.network = mlp.RewardNetwork(context_dim, num_actions, hidden, activation, config.seed)
        # The same seed gives the same initial weights: the target starts as a copy.
        self.target_network = mlp.RewardNetwork(context_dim, num_actions, hidden, activation, config.seed)
        self.optimizer = mlp.Adam(self.network.parameters, config.learning_rate)
        self.replay = TransitionBuffer(config.buffer_size, context_dim)
        self.state = TrainingState()
        self._graphs = _TrainingGraphs(self)

    # -- choosing (reads variables only) -------------------------------------------------------

    def q_values(self, context: tf.Tensor) -> tf.Tensor:
        """[batch, K] Q(s, .) of the online network for context [batch, d]."""
        return self.network.predict(tf.convert_to_tensor(context, tf.float32))

    def epsilon(self) -> tf.Tensor:
        """float32 scalar: the collect policy's exploration share after the transitions seen."""
        c = self.config
        return linear_epsilon(self.replay.transitions_seen, c.epsilon_start, c.epsilon_end, c.epsilon_decay_transitions)

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return greedy_decision(self.q_values(context), mask)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return epsilon_greedy_decision(self.q_values(context), mask, seed, self.epsilon())

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        return linalg.epsilon_greedy_probabilities(self.q_values(context), mask, self.epsilon())

    # -- training ------------------------------------------------------------------------------

    def update_transitions(
        self,
        contexts: tf.Tensor,
        actions: tf.Tensor,
        rewards: tf.Tensor,
        next_contexts: tf.Tensor,
        dones: tf.Tensor,
        weights: tf.Tensor,
    ) -> None:
        """Appends n transitions to the replay buffer and runs every training round they make due.

        contexts, next_contexts: [n, d] float32; actions: [n] int32; rewards: [n] float32;
        dones: [n] bool or 0/1 (true: s' is terminal); weights: [n] float32 importance weights.
        """
        dones = tf.convert_to_tensor(dones)
        self._graphs.update(
            tf.convert_to_tensor(contexts, tf.float32),
            tf.convert_to_tensor(actions, tf.int32),
            tf.convert_to_tensor(rewards, tf.float32),
            tf.convert_to_tensor(next_contexts, tf.float32),
            tf.cast(dones, tf.float32),
            tf.convert_to_tensor(weights, tf.float32),
        )
        self.state.train_step.assign_add(1)

    def update(
        self,
        contexts: tf.Tensor,
        actions: tf.Tensor,
        rewards: tf.Tensor,
        weights: tf.Tensor,
        action_features: tf.Tensor | None = None,
    ) -> None:
        """One-step episodes: update_transitions with every transition terminal (s' unused)."""
        contexts = tf.convert_to_tensor(contexts, tf.float32)
        dones = tf.ones_like(tf.convert_to_tensor(rewards, tf.float32))
        self.update_transitions(contexts, actions, rewards, tf.zeros_like(contexts), dones, weights)

    def compile(self) -> None:
        """Traces the training graph now (a few seconds), not on the first transitions."""
        self._graphs.update.get_concrete_function()

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """Online and target weights and Adam's two moments (float32), the buffer and counters."""
        sizes = [context_dim, *config.hidden_sizes, num_actions]
        parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
        return 4 * 4 * parameters + 4 * config.buffer_size * (2 * context_dim + 4) + 64

    def stats(self) -> dict[str, Any]:
        """training_steps: Adam steps done; last_loss: mean minibatch loss of the last training
        round (None before the first); epsilon: the collect policy's current exploration share."""
        steps = int(self.optimizer.step.numpy())
        return {
            "training_steps": steps,
            "last_loss": float(self.state.last_loss.numpy()) if steps else None,
            "epsilon": float(self.epsilon().numpy()),
        }

    def _update_transitions(
        self,
        contexts: tf.Tensor,
        actions: tf.Tensor,
        rewards: tf.Tensor,
        next_contexts: tf.Tensor,
        dones: tf.Tensor,
        weights: tf.Tensor,
    ) -> None:
        """Graph body of update_transitions: the transitions are cut where the count seen
        reaches a multiple of train_every_transitions; after each cut that is due (count >=
        learning_starts), a training round."""
        config = self.config
        every = tf.constant(config.train_every_transitions, tf.int64)
        n = tf.shape(actions, out_type=tf.int64)[0]
        start = tf.constant(0, tf.int64)
        while start < n:
            stop = tf.minimum(n, start + every - self.replay.transitions_seen % every)
            rows = slice(tf.cast(start, tf.int32), tf.cast(stop, tf.int32))
            self.replay.append(
                contexts[rows], actions[rows], rewards[rows], next_contexts[rows], dones[rows], weights[rows]
            )
            start = stop
            seen = self.replay.transitions_seen.read_value()
            if seen % every == 0 and seen >= config.learning_starts:
                self._train_round()

    def _train_round(self) -> None:
        """training_steps Adam steps on minibatches from the buffer, each followed by the
        target network's update."""
        config = self.config
        online, target = self.network.parameters, self.target_network.parameters
        total_loss = tf.constant(0.0)
        for _ in tf.range(config.training_steps):
            # Minibatch t is keyed on (seed, t): the same round replays the same draws.
            seed = tf.stack([tf.constant(config.seed, tf.int64), self.optimizer.step])
            contexts, actions, rewards, next_contexts, dones, weights = self.replay.sample(config.batch_size, seed)
            # Double DQN: the online network picks a' on s', the target network evaluates it.
            targets = double_dqn_targets(
                self.network.predict(next_contexts),
                self.target_network.predict(next_contexts),
                rewards,
                dones,
                config.discount,
            )
            with tf.GradientTape() as tape:
                loss = weighted_huber_loss(
                    self.network.predict(contexts), actions, targets, weights, config.huber_delta
                )
            self.optimizer.apply(online, tape.gradient(loss, online))
            total_loss += loss
            # The target network follows: a copy every period, or a Polyak step every step.
            if config.target_update == "polyak":
                for target_parameter, parameter in zip(target, online, strict=True):
                    target_parameter.assign(polyak_average(target_parameter, parameter, config.polyak_tau))
            elif self.optimizer.step % config.target_update_period == 0:
                for target_parameter, parameter in zip(target, online, strict=True):
                    target_parameter.assign(parameter)
        if config.training_steps:
            self.state.last_loss.assign(total_loss / config.training_steps)
