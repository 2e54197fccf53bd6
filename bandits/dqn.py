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
both networks, Adam's moments, the replay ring (bandits.replay: the last ``buffer_size``
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
from typing import Any, Literal

import tensorflow as tf

from bandits import linalg, mlp
from bandits.base import Decision, SequentialLearner, Transitions, is_int, is_number, require
from bandits.choice import epsilon_greedy_decision, greedy_decision
from bandits.mlp import NetworkConfig
from bandits.replay import Column, ReplayRing

# -- hyperparameters -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DQNConfig(NetworkConfig):
    """The Q-network, its optimizer and target network, the replay ring, the training
    schedule and the exploration schedule. The defaults learn CartPole-v1 (see
    bench/cartpole_inprocess.py)."""

    hidden_sizes: list[int] = dataclasses.field(default_factory=lambda: [128, 128])
    """Units of each hidden layer of the Q-network, input side first."""
    buffer_size: int = 50_000
    """Replay ring capacity: it holds the last buffer_size transitions."""
    training_steps: int = 1
    """Adam steps in each training round."""
    discount: float = 0.99
    """gamma: the weight of the next state's value in the TD target."""
    huber_delta: float = 10.0
    """delta of the Huber loss: quadratic for TD errors within delta, linear beyond. Measure it
    on the scale of the returns: with +1 per step and gamma 0.99 the values reach ~100, and
    delta 1 caps the weight of the rare large errors (the transitions into a terminal state)
    so low that CartPole-v1 needed far longer to learn and rarely held a return of 500."""
    learning_starts: int = 1_000
    """No training before this many transitions have been seen."""
    train_every_transitions: int = 1
    """A training round runs each time this many more transitions have been seen (counted over
    all updates, so the schedule does not depend on how the transitions are batched)."""
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

    def validate(self) -> None:
        super().validate()
        require(is_number(self.discount) and 0 <= self.discount <= 1, "discount", "must be in [0, 1]")
        require(is_number(self.huber_delta) and self.huber_delta > 0, "huber_delta", "must be > 0")
        require(is_int(self.learning_starts) and self.learning_starts >= 0, "learning_starts", "must be >= 0")
        require(
            is_int(self.train_every_transitions) and self.train_every_transitions >= 1,
            "train_every_transitions",
            "must be an integer >= 1",
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


# -- the policy ----------------------------------------------------------------------------------


class _TrainingGraphs:
    """The compiled training graph, on a plain object (not a tf.Module) so that
    tf.saved_model.save does not export it with the greedy and collect signatures."""

    def __init__(self, policy: DQN) -> None:
        d = policy.context_dim
        transitions = Transitions(
            tf.TensorSpec([None, d], tf.float32, name="contexts"),
            tf.TensorSpec([None], tf.int32, name="actions"),
            tf.TensorSpec([None], tf.float32, name="rewards"),
            tf.TensorSpec([None, d], tf.float32, name="next_contexts"),
            tf.TensorSpec([None], tf.float32, name="dones"),
            tf.TensorSpec([None], tf.float32, name="weights"),
        )
        self.update = tf.function(policy._update_transitions, input_signature=[transitions])


class DQN(SequentialLearner):
    """Double DQN. Scores are the online network's Q-values; greedy takes the best allowed
    action; collect is epsilon-greedy with epsilon decayed by the transitions seen. Its
    examples (update_examples) are one-step episodes."""

    algorithm = "dqn"
    Config = DQNConfig

    def __init__(self, context_dim: int, num_actions: int, config: DQNConfig, **inputs: Any) -> None:
        super().__init__(context_dim, num_actions, config, **inputs)
        hidden, activation = config.hidden_sizes, config.activation
        self.network = mlp.RewardNetwork(context_dim, num_actions, hidden, activation, config.seed)
        # The same seed gives the same initial weights: the target starts as a copy.
        self.target_network = mlp.RewardNetwork(context_dim, num_actions, hidden, activation, config.seed)
        self.optimizer = mlp.Adam(self.network.parameters, config.learning_rate)
        columns = {
            "contexts": Column([context_dim], tf.float32),
            "actions": Column([], tf.int32),
            "rewards": Column([], tf.float32),
            "next_contexts": Column([context_dim], tf.float32),
            "dones": Column([], tf.float32),
            "weights": Column([], tf.float32),
        }
        self.replay = ReplayRing(Transitions, columns, config.buffer_size, counter="transitions_seen")
        self.state = mlp.TrainingState()
        self._graphs = _TrainingGraphs(self)

    # -- choosing (reads variables only) -------------------------------------------------------

    def q_values(self, context: tf.Tensor) -> tf.Tensor:
        """[batch, K] Q(s, .) of the online network for context [batch, d]."""
        return self.network.predict(tf.convert_to_tensor(context, tf.float32))

    def epsilon(self) -> tf.Tensor:
        """float32 scalar: the collect policy's exploration share after the transitions seen."""
        c = self.config
        return linear_epsilon(self.replay.seen, c.epsilon_start, c.epsilon_end, c.epsilon_decay_transitions)

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

    def update_transitions(self, transitions: Transitions) -> None:
        """Appends n transitions to the replay ring and runs every training round they make due."""
        self._graphs.update(Transitions.of(*transitions))
        self.state.train_step.assign_add(1)

    def compile(self) -> None:
        """Traces the training graph now (a few seconds), not on the first transitions."""
        self._graphs.update.get_concrete_function()

    @classmethod
    def state_bytes(cls, context_dim: int, num_actions: int, config: Any, action_feature_dim: int = 0) -> int:
        """Online and target weights and Adam's two moments (float32), the ring and counters."""
        parameters = mlp.parameter_count([context_dim, *config.hidden_sizes, num_actions])
        return 4 * 4 * parameters + 4 * config.buffer_size * (2 * context_dim + 4) + 64

    def stats(self) -> dict[str, Any]:
        """training_steps: Adam steps done; last_loss: mean minibatch loss of the last training
        round (None before the first); epsilon: the collect policy's current exploration share."""
        return self.state.stats(self.optimizer) | {"epsilon": float(self.epsilon().numpy())}

    def _update_transitions(self, transitions: Transitions) -> None:
        """Graph body of update_transitions: the transitions are cut where the count seen
        reaches a multiple of train_every_transitions; after each cut that is due (count >=
        learning_starts), a training round."""
        config = self.config
        every = tf.constant(config.train_every_transitions, tf.int64)
        n = tf.shape(transitions.actions, out_type=tf.int64)[0]
        start = tf.constant(0, tf.int64)
        while start < n:
            stop = tf.minimum(n, start + every - self.replay.seen % every)
            rows = slice(tf.cast(start, tf.int32), tf.cast(stop, tf.int32))
            self.replay.append(Transitions(*(column[rows] for column in transitions)))
            start = stop
            seen = self.replay.seen.read_value()
            if seen % every == 0 and seen >= config.learning_starts:
                self._train_round()

    def _train_round(self) -> None:
        """training_steps Adam steps on minibatches from the ring, each followed by the
        target network's update."""
        config = self.config
        online, target = self.network.parameters, self.target_network.parameters
        total_loss = tf.constant(0.0)
        for _ in tf.range(config.training_steps):
            # Minibatch t is keyed on (seed, t): the same round replays the same draws.
            seed = tf.stack([tf.constant(config.seed, tf.int64), self.optimizer.step])
            batch = self.replay.sample(config.batch_size, seed)
            # Double DQN: the online network picks a' on s', the target network evaluates it.
            targets = double_dqn_targets(
                self.network.predict(batch.next_contexts),
                self.target_network.predict(batch.next_contexts),
                batch.rewards,
                batch.dones,
                config.discount,
            )
            with tf.GradientTape() as tape:
                q_values = self.network.predict(batch.contexts)
                loss = weighted_huber_loss(q_values, batch.actions, targets, batch.weights, config.huber_delta)
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
