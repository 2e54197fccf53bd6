"""Neural bandits: an MLP reward model trained on minibatches from a replay ring.

* ``neural_epsilon_greedy`` (here): the network's predicted rewards are the scores; collect
  mixes the greedy action with uniform exploration, with exact propensities.
* ``neural_linear`` (bandits.neural_linear): a Bayesian linear regression on the network's
  last hidden layer, acting by Thompson sampling or UCB on it.

This module holds what both share: ``NeuralPolicy`` (network, Adam, replay ring, training
schedule) and the two towers that say how the network meets the actions. ``ActionHeads``: the
network reads a context and has one output per action. ``CandidateTower`` (the candidate-set
forms, ``takes_candidates``): the network reads [x, z], a context and one candidate's
features, has one output, the predicted reward of that candidate, and is applied to every
candidate of a row; the replay ring also keeps the chosen candidate's z.

Everything a policy learns is a tf.Variable of the policy's tf.Module tree: network weights,
Adam's moments, the replay ring (the last ``buffer_size`` examples) and, for neural_linear,
the last-layer statistics. One tf.train.Checkpoint of the policy therefore holds the replay
ring and the optimizer state together with the weights, and a trainer that restores it and
re-reads the log from the checkpoint's position applies every example exactly once.

The training schedule is deterministic: a training round (``training_steps`` Adam steps on
minibatches drawn with replacement from the ring, then the subclass's hook) runs each time
the count of examples ever seen crosses a multiple of ``train_every_examples``; minibatch
indices come from a stateless RNG keyed on (``seed``, Adam's step). The same examples in the
same order give the same variables, whichever way they are split into updates (up to float
rounding in neural_linear's last-layer sums).
"""

from __future__ import annotations

from typing import Any, ClassVar

import tensorflow as tf

from bandits import linalg, mlp
from bandits.base import BanditLearner, Decision, Examples
from bandits.choice import epsilon_greedy_decision, greedy_decision
from bandits.neural_config import NeuralConfig, NeuralEpsilonGreedyConfig
from bandits.replay import Column, ReplayRing

# -- the towers: how the network meets the actions -----------------------------------------------


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


class ActionHeads:
    """Fixed actions: the network reads a context [d] and has one output per action."""

    @staticmethod
    def network_shape(context_dim: int, num_actions: int, action_feature_dim: int) -> tuple[int, int]:
        """The network's (input width, outputs)."""
        return context_dim, num_actions

    @staticmethod
    def training_inputs(examples: Examples) -> tuple[tf.Tensor, tf.Tensor]:
        """The network's inputs [n, width] for examples, and which output [n] int32 (and which
        last-layer regression) is each example's chosen action: the action."""
        return examples.contexts, examples.actions

    @staticmethod
    def regressions(num_actions: int) -> int:
        """How many last-layer regressions (neural_linear): one per action."""
        return num_actions

    @staticmethod
    def inputs(context: tf.Tensor, action_features: tf.Tensor | None) -> tf.Tensor:
        """The network's input rows for a batch: the contexts [batch, d]."""
        return tf.convert_to_tensor(context, tf.float32)

    @staticmethod
    def per_action(values: tf.Tensor, action_features: tf.Tensor | None) -> tf.Tensor:
        """[batch, K] from per-row values over the outputs [batch, K] (already per action)."""
        return values


class CandidateTower:
    """Candidate sets: the network reads [x, z] and has one output, applied to each of a row's
    K candidates. K varies per call: nothing here has num_actions (K_max) in a shape."""

    @staticmethod
    def network_shape(context_dim: int, num_actions: int, action_feature_dim: int) -> tuple[int, int]:
        """[x, z] in, one predicted reward out."""
        return context_dim + action_feature_dim, 1

    @staticmethod
    def training_inputs(examples: Examples) -> tuple[tf.Tensor, tf.Tensor]:
        """[x, z] of each example's chosen candidate; all on the one output (and neural_linear's
        one regression): ``actions`` is not used."""
        return tf.concat([examples.contexts, examples.action_features], axis=1), tf.zeros_like(examples.actions)

    @staticmethod
    def regressions(num_actions: int) -> int:
        """One last-layer regression for every candidate."""
        return 1

    @staticmethod
    def inputs(context: tf.Tensor, action_features: tf.Tensor | None) -> tf.Tensor:
        """[batch * K, d + f]: every candidate [batch, K, f] with its row's context [batch, d]."""
        assert action_features is not None, "a candidate policy scores the candidates' features"
        context = tf.convert_to_tensor(context, tf.float32)
        return candidate_inputs(context, tf.convert_to_tensor(action_features, tf.float32))

    @staticmethod
    def per_action(values: tf.Tensor, action_features: tf.Tensor | None) -> tf.Tensor:
        """[batch, K] from the one output of each [x, z_k] row, values [batch * K, 1]."""
        assert action_features is not None
        return per_candidate(values[:, 0], tf.convert_to_tensor(action_features))


Tower = type[ActionHeads] | type[CandidateTower]


# -- the shared policy ---------------------------------------------------------------------------


class _TrainingGraphs:
    """The compiled training graphs of one policy.

    A plain object, not a tf.Module, on purpose: tf.saved_model.save exports every
    tf.function it finds on the attributes of the saved module tree, and the greedy and
    collect SavedModels must carry no training ops.
    """

    def __init__(self, policy: NeuralPolicy) -> None:
        examples = Examples(
            tf.TensorSpec([None, policy.context_dim], tf.float32, name="contexts"),
            tf.TensorSpec([None], tf.int32, name="actions"),
            tf.TensorSpec([None], tf.float32, name="rewards"),
            tf.TensorSpec([None], tf.float32, name="weights"),
            tf.TensorSpec([None, policy.action_feature_dim], tf.float32, name="action_features"),
        )
        self.absorb = tf.function(policy._absorb, input_signature=[examples])
        self.train = tf.function(policy._train, input_signature=[])


class NeuralPolicy(BanditLearner):
    """What both neural algorithms share: network, Adam, replay ring and training schedule.

    Subclasses choose actions and may extend two hooks that run inside the training graphs:
    ``_absorbed`` (new examples just entered the ring) and ``_trained`` (a training round
    just ended). ``tower`` says how the network meets the actions (the candidate-set forms
    set CandidateTower).
    """

    Config: ClassVar[type] = NeuralConfig
    tower: ClassVar[Tower] = ActionHeads

    def __init__(self, context_dim: int, num_actions: int, config: NeuralConfig, **inputs: Any) -> None:
        super().__init__(context_dim, num_actions, config, **inputs)
        inputs_width, outputs = self.tower.network_shape(context_dim, num_actions, self.action_feature_dim)
        self.network = mlp.RewardNetwork(inputs_width, outputs, config.hidden_sizes, config.activation, config.seed)
        self.optimizer = mlp.Adam(self.network.parameters, config.learning_rate)
        columns = {
            "contexts": Column([context_dim], tf.float32),
            "actions": Column([], tf.int32),
            "rewards": Column([], tf.float32),
            "weights": Column([], tf.float32),
            "action_features": Column([self.action_feature_dim], tf.float32),
        }
        self.replay = ReplayRing(Examples, columns, config.buffer_size, counter="examples_seen")
        self.state = mlp.TrainingState()
        self._graphs = _TrainingGraphs(self)

    def predicted_rewards(self, context: tf.Tensor, action_features: tf.Tensor | None = None) -> tf.Tensor:
        """[batch, K] predicted reward of every action (or candidate) for context [batch, d]."""
        tower = self.tower
        return tower.per_action(self.network.predict(tower.inputs(context, action_features)), action_features)

    # -- training --------------------------------------------------------------------------

    def update_examples(self, examples: Examples) -> None:
        """Appends n examples to the replay ring and runs every training round they make due.

        The examples are cut at multiples of train_every_examples (counted from the first
        example ever seen), so rounds fall at the same examples however updates are batched.
        Call it eagerly (the trainer does): the schedule is Python around compiled graphs.
        """
        every = self.config.train_every_examples
        seen = int(self.replay.seen.numpy())
        n = int(examples.actions.shape[0])
        start = 0
        while start < n:
            stop = min(n, start + every - seen % every)
            self._graphs.absorb(Examples(*(column[start:stop] for column in examples)))
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
        """Network weights with Adam's two moments (float32), the replay ring and the counters."""
        inputs_width, outputs = cls.tower.network_shape(context_dim, num_actions, action_feature_dim)
        parameters = mlp.parameter_count([inputs_width, *config.hidden_sizes, outputs])
        return 3 * 4 * parameters + 4 * config.buffer_size * (context_dim + action_feature_dim + 3) + 64

    def stats(self) -> dict[str, Any]:
        """training_steps: Adam steps done; last_loss: mean minibatch loss of the last training
        round (None before the first)."""
        return self.state.stats(self.optimizer)

    def _absorb(self, examples: Examples) -> None:
        """Graph body: new examples into the ring, then the subclass's hook."""
        self.replay.append(examples)
        self._absorbed(examples)

    def _absorbed(self, examples: Examples) -> None:
        """Hook: examples just entered the ring (inside the absorb graph)."""
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
            inputs, outputs = self.tower.training_inputs(examples)
            with tf.GradientTape() as tape:
                predictions = self.network.predict(inputs)
                loss = mlp.weighted_squared_error(predictions, outputs, examples.rewards, examples.weights)
            self.optimizer.apply(parameters, tape.gradient(loss, parameters))
            total_loss += loss
        if config.training_steps:
            self.state.last_loss.assign(total_loss / config.training_steps)
        self._trained()

    def _trained(self) -> None:
        """Hook: a training round just ended (inside the train graph)."""
        return


# -- neural epsilon-greedy -----------------------------------------------------------------------


class NeuralEpsilonGreedy(NeuralPolicy):
    """Scores are the network's predicted rewards; collect explores uniformly with share epsilon."""

    algorithm = "neural_epsilon_greedy"
    Config = NeuralEpsilonGreedyConfig

    def greedy(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        return greedy_decision(self.predicted_rewards(context, action_features), mask)

    def collect(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> Decision:
        scores = self.predicted_rewards(context, action_features)
        return epsilon_greedy_decision(scores, mask, seed, self.config.epsilon)

    def probabilities(
        self, context: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, action_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        scores = self.predicted_rewards(context, action_features)
        return linalg.epsilon_greedy_probabilities(scores, mask, self.config.epsilon)


class CandidateNeuralEpsilonGreedy(NeuralEpsilonGreedy):
    """neural_epsilon_greedy over candidate sets: a candidate's score is the tower's predicted
    reward; collect explores uniformly over the allowed candidates with share epsilon."""

    takes_candidates = True
    tower = CandidateTower
