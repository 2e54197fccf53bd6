"""Off-policy evaluation: what a policy would have earned on a window of the log.

Five estimators of an evaluation policy's value from decisions another policy logged, with the
Open Bandit Pipeline's argument names and definitions (Saito, Aihara, Matsutani, Narita, NeurIPS
Datasets and Benchmarks 2021; obp 0.5.7), so their numbers can be checked against it. For row i
of n logged decisions:

    w_i          = action_dist[i, action_i, position_i] / pscore_i             importance weight
    q_hat[i, a]  = estimated_rewards_by_reg_model[i, a, position_i]            reward model
    q_hat[i, pi] = sum_a action_dist[i, a, position_i] * q_hat[i, a]           its value under pi

    ipw   = mean_i( w_i * reward_i )                                            (IPS)
    snipw = sum_i( w_i * reward_i ) / sum_i( w_i )                              (SNIPS)
    dm    = mean_i( q_hat[i, pi] )
    dr    = dm + mean_i( w_i * (reward_i - q_hat[i, action_i]) )
    sndr  = dm + mean_i( w_i * (reward_i - q_hat[i, action_i]) ) / mean_i( w_i )

Shapes: reward, action, pscore, position: [n]. action_dist and estimated_rewards_by_reg_model:
[n, K], or [n, K, L] for L positions (slots) where ``position`` selects the logged one; position
None means 0. Every estimator reads only the slice at the logged position.

Each estimator is a smooth function of the column means of a few per-row terms (``_Form``).
The point estimate is that function of the sample means; a bootstrap resample only changes how
often each row is counted, so every resample of all five estimators is one matrix product.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.spec import baseline_actions

if TYPE_CHECKING:
    from exporter.loader import LoadedVersion

ESTIMATORS = ("ipw", "snipw", "dm", "dr", "sndr")
POLICY_BATCH_ROWS = 4096
"""Rows per call of the SavedModel's probabilities signature in evaluate_policy."""
BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22
"""Resampled row indices drawn per chunk (resamples x rows): bounds the bootstrap's memory."""


# -- the logged slice ------------------------------------------------------------------------------


def _at_position(values: np.ndarray, position: np.ndarray | None) -> np.ndarray:
    """values: [n, K] or [n, K, L]; position: [n] int or None (0) -> [n, K] float64 at the logged position."""
    values = np.asarray(values)
    if values.ndim == 2:
        if position is not None and np.any(np.asarray(position) != 0):
            raise ValueError("position must be None or 0 for [n, K] arrays; pass [n, K, L] for several positions")
        return values.astype(np.float64, copy=False)
    if values.ndim == 3:
        slot = 0 if position is None else np.asarray(position)
        return values[np.arange(values.shape[0]), :, slot].astype(np.float64, copy=False)
    raise ValueError(f"expected [n, K] or [n, K, L], got shape {values.shape}")


def _of_logged_action(values: np.ndarray, action: np.ndarray) -> np.ndarray:
    """values: [n, K], action: [n] int -> [n]: each row's value of its logged action."""
    return values[np.arange(values.shape[0]), np.asarray(action)]


def importance_weights(
    *, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray, position: np.ndarray | None = None
) -> np.ndarray:
    """w_i = action_dist[i, action_i, position_i] / pscore_i -> [n] float64.

    action: [n] int; pscore: [n] the logging policy's propensity of the logged action (and
    position); action_dist: [n, K] or [n, K, L] the evaluation policy's probabilities.
    """
    pi_e = _of_logged_action(_at_position(action_dist, position), action)
    return pi_e / np.asarray(pscore, np.float64)


def effective_sample_size(weights: np.ndarray) -> float:
    """(sum_i w_i)^2 / sum_i w_i^2: how many uniformly weighted rows the weighted sample is worth
    (n when every weight is equal, 1 when one row carries all the weight, 0 when none does)."""
    weights = np.asarray(weights, np.float64)
    squares = float(np.sum(weights * weights))
    return float(np.sum(weights)) ** 2 / squares if squares > 0 else 0.0


# -- the estimators: per-row terms, then a function of their means ---------------------------------


@dataclasses.dataclass(frozen=True)
class _Form:
    """An estimator written as value(column means of terms(**arrays))."""

    terms: Callable[..., np.ndarray]
    """(**arrays) -> [n, m] per-row terms."""
    value: Callable[[np.ndarray], Any]
    """[..., m] column means -> [...] estimates."""


def _ipw_terms(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None = None,
) -> np.ndarray:
    """[n, 1]: w_i reward_i."""
    w = importance_weights(action=action, pscore=pscore, action_dist=action_dist, position=position)
    return (w * reward)[:, None]


def _snipw_terms(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None = None,
) -> np.ndarray:
    """[n, 2]: w_i reward_i, w_i."""
    w = importance_weights(action=action, pscore=pscore, action_dist=action_dist, position=position)
    return np.stack([w * reward, w], axis=1)


def _dm_terms(
    *, action_dist: np.ndarray, estimated_rewards_by_reg_model: np.ndarray, position: np.ndarray | None = None
) -> np.ndarray:
    """[n, 1]: q_hat[i, pi]."""
    pi_e = _at_position(action_dist, position)
    q_hat = _at_position(estimated_rewards_by_reg_model, position)
    return np.einsum("ik,ik->i", pi_e, q_hat)[:, None]


def _dr_parts(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards_by_reg_model: np.ndarray,
    position: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n] each: q_hat[i, pi], w_i (reward_i - q_hat[i, action_i]), w_i."""
    pi_e = _at_position(action_dist, position)
    q_hat = _at_position(estimated_rewards_by_reg_model, position)
    w = _of_logged_action(pi_e, action) / np.asarray(pscore, np.float64)
    correction = w * (reward - _of_logged_action(q_hat, action))
    return np.einsum("ik,ik->i", pi_e, q_hat), correction, w


def _dr_terms(**arrays: Any) -> np.ndarray:
    """[n, 1]: q_hat[i, pi] + w_i (reward_i - q_hat[i, action_i])."""
    model_value, correction, _ = _dr_parts(**arrays)
    return (model_value + correction)[:, None]


def _sndr_terms(**arrays: Any) -> np.ndarray:
    """[n, 3]: q_hat[i, pi], w_i (reward_i - q_hat[i, action_i]), w_i."""
    return np.stack(_dr_parts(**arrays), axis=1)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (no row has any weight)."""
    out = np.full(np.shape(numerator), np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator != 0)


_FORMS = {
    "ipw": _Form(_ipw_terms, lambda m: m[..., 0]),
    "snipw": _Form(_snipw_terms, lambda m: _ratio(m[..., 0], m[..., 1])),  # mean(w r) / mean(w)
    "dm": _Form(_dm_terms, lambda m: m[..., 0]),
    "dr": _Form(_dr_terms, lambda m: m[..., 0]),
    "sndr": _Form(_sndr_terms, lambda m: m[..., 0] + _ratio(m[..., 1], m[..., 2])),
}


def _point(name: str, **arrays: Any) -> float:
    form = _FORMS[name]
    return float(form.value(form.terms(**arrays).mean(axis=0)))


def ipw(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None = None,
) -> float:
    """Inverse propensity weighting (IPS): mean_i( w_i * reward_i ). Shapes in the module docstring."""
    return _point("ipw", reward=reward, action=action, pscore=pscore, action_dist=action_dist, position=position)


def snipw(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None = None,
) -> float:
    """Self-normalized IPW (SNIPS): sum_i( w_i * reward_i ) / sum_i( w_i ); NaN when every w_i is 0."""
    return _point("snipw", reward=reward, action=action, pscore=pscore, action_dist=action_dist, position=position)


def dm(
    *, action_dist: np.ndarray, estimated_rewards_by_reg_model: np.ndarray, position: np.ndarray | None = None
) -> float:
    """Direct method: mean_i( sum_a action_dist[i, a, position_i] * q_hat[i, a] )."""
    return _point(
        "dm", action_dist=action_dist, estimated_rewards_by_reg_model=estimated_rewards_by_reg_model, position=position
    )


def dr(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards_by_reg_model: np.ndarray,
    position: np.ndarray | None = None,
) -> float:
    """Doubly robust: dm + mean_i( w_i * (reward_i - q_hat[i, action_i]) )."""
    return _point(
        "dr",
        reward=reward,
        action=action,
        pscore=pscore,
        action_dist=action_dist,
        estimated_rewards_by_reg_model=estimated_rewards_by_reg_model,
        position=position,
    )


def sndr(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards_by_reg_model: np.ndarray,
    position: np.ndarray | None = None,
) -> float:
    """Self-normalized doubly robust (obp 0.5): dm + mean_i( w_i (reward_i - q_hat[i, action_i]) ) / mean_i( w_i );
    NaN when every w_i is 0."""
    return _point(
        "sndr",
        reward=reward,
        action=action,
        pscore=pscore,
        action_dist=action_dist,
        estimated_rewards_by_reg_model=estimated_rewards_by_reg_model,
        position=position,
    )


_FORM_OF: dict[Callable[..., float], _Form] = {
    ipw: _FORMS["ipw"],
    snipw: _FORMS["snipw"],
    dm: _FORMS["dm"],
    dr: _FORMS["dr"],
    sndr: _FORMS["sndr"],
}


# -- bootstrap ------------------------------------------------------------------------------------------


def _resamples(n: int, n_bootstrap: int, random_state: int) -> Iterator[np.ndarray]:
    """Row indices of n_bootstrap resamples of n rows drawn with replacement, [chunk, n] at a time."""
    rng = np.random.default_rng(random_state)
    per_chunk = max(1, BOOTSTRAP_CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_bootstrap, per_chunk):
        yield rng.integers(0, n, size=(min(per_chunk, n_bootstrap - start), n))


def _bootstrap_means(terms: np.ndarray, n_bootstrap: int, random_state: int) -> np.ndarray:
    """terms: [n, m] -> [n_bootstrap, m]: the column means of each resample.

    A resample's means are (times each row was drawn) @ terms / n: one bincount and one matmul
    per chunk of resamples, several times faster than gathering the drawn rows.
    """
    n = len(terms)
    means = []
    for rows in _resamples(n, n_bootstrap, random_state):
        offsets = np.arange(len(rows))[:, None] * n  # resample b counts into bins b*n .. b*n + n-1
        counts = np.bincount((rows + offsets).ravel(), minlength=rows.size).reshape(rows.shape)
        means.append(counts @ terms / n)
    return np.concatenate(means)


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """The percentile interval over the resamples where the estimate is defined (a
    self-normalised estimate is 0/0 in a resample with no weight); NaN if it never is."""
    defined = values[np.isfinite(values)]
    if defined.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(defined, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _num_rows(arrays: dict[str, Any]) -> int:
    lengths = {name: len(value) for name, value in arrays.items() if value is not None and np.ndim(value) > 0}
    if not lengths or len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must share their first dimension (rows), got {lengths}")
    return next(iter(lengths.values()))


def _take(arrays: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The given rows of every array argument; None and scalars pass through."""
    return {name: value if value is None or value.ndim == 0 else value[rows] for name, value in arrays.items()}


def bootstrap_interval(
    estimator: Callable[..., float],
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    random_state: int = 0,
    **arrays: Any,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of estimator(**arrays).

    Each of n_bootstrap resamples draws n rows with replacement (a seeded numpy Generator) from
    every array argument ([n, ...]; None passes through) and recomputes the estimator. For the
    five estimators of this module the resamples are averaged in vectorised chunks; any other
    callable is called once per resample on the same resampled rows.
    """
    arrays = {name: None if value is None else np.asarray(value) for name, value in arrays.items()}
    n = _num_rows(arrays)
    form = _FORM_OF.get(estimator)
    if form is not None:
        values = form.value(_bootstrap_means(form.terms(**arrays), n_bootstrap, random_state))
    else:
        values = np.array(
            [estimator(**_take(arrays, rows)) for chunk in _resamples(n, n_bootstrap, random_state) for rows in chunk]
        )
    return _percentile_interval(values, alpha)


# -- reward model ----------------------------------------------------------------------------------------


def fit_reward_model(
    contexts: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    num_actions: int,
    ridge: float = 1.0,
    n_folds: int = 2,
    random_state: int = 0,
) -> np.ndarray:
    """Cross-fitted per-action ridge regression of the reward on phi = [context, 1] -> [n, K] float64.

    contexts: [n, d]; actions: [n] int in [0, K); rewards: [n]. The rows are split at random
    (seeded) into n_folds folds of near-equal size; row i in fold f is predicted for every action a as
        q_hat[i, a] = phi_i . theta_{f, a},
        theta_{f, a} = (ridge I + sum_{j not in f, a_j = a} phi_j phi_j^T)^{-1} sum_{j not in f, a_j = a} r_j phi_j,
    so no row's prediction was fitted on its own reward (obp's fit_predict with n_folds). The
    intercept is regularised like the other coefficients. numpy only, O(n (d+1)^2).
    """
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2: each row is predicted by a model fitted on the other folds")
    actions = np.asarray(actions)
    rewards = np.asarray(rewards, np.float64)
    n = len(actions)
    phi = np.hstack([np.asarray(contexts, np.float64), np.ones((n, 1))])
    p = phi.shape[1]
    fold = np.empty(n, np.int64)
    fold[np.random.default_rng(random_state).permutation(n)] = np.arange(n) % n_folds

    # Sufficient statistics per (fold, action): sum phi phi^T and sum r phi.
    gram = np.zeros((n_folds, num_actions, p, p))
    moment = np.zeros((n_folds, num_actions, p))
    for f in range(n_folds):
        for a in range(num_actions):
            rows = (fold == f) & (actions == a)
            gram[f, a] = phi[rows].T @ phi[rows]
            moment[f, a] = phi[rows].T @ rewards[rows]

    # Each fold is predicted by the model fitted on all the other folds.
    q_hat = np.empty((n, num_actions))
    for f in range(n_folds):
        others = np.arange(n_folds) != f
        theta = np.linalg.solve(gram[others].sum(axis=0) + ridge * np.eye(p), moment[others].sum(axis=0)[..., None])
        in_fold = fold == f
        q_hat[in_fold] = phi[in_fold] @ theta[..., 0].T
    return q_hat


def _masks(model: LoadedVersion, contexts: np.ndarray, masks: np.ndarray | None, packed: dict[str, Any]) -> np.ndarray:
    """[n, K] allowed actions: for candidate sets the given masks (K the largest set), else all
    of the policy's K actions unless masks says otherwise."""
    if len(contexts) == 0:
        raise ValueError("no logged decisions to evaluate")
    if "action_features" in packed:
        assert masks is not None, "candidate sets need their masks"
    num_actions = model.spec.num_actions
    return np.ones((len(contexts), num_actions), bool) if masks is None else np.asarray(masks, bool)


def _batches(n: int, packed: dict[str, np.ndarray], function: Callable[..., Any]) -> list[Any]:
    """function(rows, packed inputs of those rows) over POLICY_BATCH_ROWS rows at a time."""
    parts = [slice(start, start + POLICY_BATCH_ROWS) for start in range(0, n, POLICY_BATCH_ROWS)]
    return [function(part, {key: values[part] for key, values in packed.items()}) for part in parts]


def _reward_model(
    model: LoadedVersion,
    contexts: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    num_actions: int,
    packed: dict[str, np.ndarray],
    random_state: int,
) -> np.ndarray:
    """[n, K] q_hat: on plain vectors fit_reward_model; otherwise on the features the model reads
    (its encode signature), per action or, for candidate sets, fit_candidate_reward_model."""
    if model.spec.layout == "vector":
        return fit_reward_model(contexts, actions, rewards, num_actions, random_state=random_state)
    encoded = _batches(len(contexts), packed, lambda part, extra: model.encode(contexts[part], **extra))
    context_vectors = np.concatenate([e["context_vector"] for e in encoded])
    if "action_features" not in packed:
        return fit_reward_model(context_vectors, actions, rewards, num_actions, random_state=random_state)
    candidate_vectors = np.concatenate([e["action_vectors"] for e in encoded])
    return fit_candidate_reward_model(context_vectors, candidate_vectors, actions, rewards, random_state=random_state)


def fit_candidate_reward_model(
    contexts: np.ndarray,
    candidates: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    ridge: float = 1.0,
    n_folds: int = 2,
    random_state: int = 0,
) -> np.ndarray:
    """Cross-fitted ridge regression of the reward on the joint features of context and candidate
    -> [n, K] float64: q_hat[i, k] = vec(x~_i z~_ik^T) . theta_f for every candidate k of row i.

    contexts: [n, d] and candidates: [n, K, f] encoded; actions: [n] the logged candidate's
    index; rewards: [n]. x~ = [x, 1], z~ = [z, 1]; one theta per fold, fitted on the other folds'
    logged candidates (as fit_reward_model; the shared model of bandits.shared_linear, so a
    candidate that was never logged is predicted from its features). O(n D^2), D = (d+1)(f+1).
    """
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2: each row is predicted by a model fitted on the other folds")
    actions = np.asarray(actions)
    rewards = np.asarray(rewards, np.float64)
    n = len(actions)
    x = np.hstack([np.asarray(contexts, np.float64), np.ones((n, 1))])
    z = np.concatenate([np.asarray(candidates, np.float64), np.ones((*candidates.shape[:2], 1))], axis=2)
    chosen = z[np.arange(n), actions]
    phi = (x[:, :, None] * chosen[:, None, :]).reshape(n, -1)
    p = phi.shape[1]
    fold = np.empty(n, np.int64)
    fold[np.random.default_rng(random_state).permutation(n)] = np.arange(n) % n_folds
    gram = np.stack([phi[fold == f].T @ phi[fold == f] for f in range(n_folds)])
    moment = np.stack([phi[fold == f].T @ rewards[fold == f] for f in range(n_folds)])
    q_hat = np.empty(z.shape[:2])
    for f in range(n_folds):
        others = np.arange(n_folds) != f
        theta = np.linalg.solve(gram[others].sum(axis=0) + ridge * np.eye(p), moment[others].sum(axis=0))
        rows = fold == f
        u = x[rows] @ theta.reshape(x.shape[1], z.shape[2])  # [rows, f+1]: Theta^T x~ per row
        q_hat[rows] = np.einsum("rkf,rf->rk", z[rows], u)
    return q_hat


# -- reports ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Estimate:
    value: float
    """The point estimate of the policy value."""
    low: float
    """Lower end of the percentile bootstrap interval."""
    high: float
    """Upper end of the percentile bootstrap interval."""


@dataclasses.dataclass(frozen=True)
class OPEReport:
    n: int
    """Logged decisions evaluated."""
    estimates: dict[str, Estimate]
    """By estimator: "ipw", "snipw", "dm", "dr", "sndr"."""
    effective_sample_size: float
    """(sum w)^2 / sum w^2 of the importance weights: small against n means few rows carry the estimate."""
    max_importance_weight: float
    """The largest w_i: one row's weight in the IPW-type estimates."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate_arrays(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards_by_reg_model: np.ndarray,
    position: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    random_state: int = 0,
) -> OPEReport:
    """All five estimates with their (1 - alpha) bootstrap intervals, the effective sample size and
    the largest importance weight. The intervals are those of bootstrap_interval with the same
    random_state: every estimator sees the same resamples, drawn once. The reward model is held
    fixed across resamples, so DM's interval shows only the spread over the logged contexts,
    not the model's own error."""
    logged = {"reward": reward, "action": action, "pscore": pscore, "action_dist": action_dist, "position": position}
    modelled = {**logged, "estimated_rewards_by_reg_model": estimated_rewards_by_reg_model}
    inputs = {
        "ipw": logged,
        "snipw": logged,
        "dr": modelled,
        "sndr": modelled,
        "dm": {
            "action_dist": action_dist,
            "estimated_rewards_by_reg_model": estimated_rewards_by_reg_model,
            "position": position,
        },
    }
    n = _num_rows(modelled)
    terms = [_FORMS[name].terms(**inputs[name]) for name in ESTIMATORS]
    columns = np.concatenate(terms, axis=1)
    bounds = np.cumsum([0] + [t.shape[1] for t in terms])
    means = columns.mean(axis=0)
    resampled = _bootstrap_means(columns, n_bootstrap, random_state)
    estimates = {}
    for name, start, stop in zip(ESTIMATORS, bounds[:-1], bounds[1:], strict=True):
        value = _FORMS[name].value
        low, high = _percentile_interval(value(resampled[:, start:stop]), alpha)
        estimates[name] = Estimate(float(value(means[start:stop])), low, high)
    weights = importance_weights(action=action, pscore=pscore, action_dist=action_dist, position=position)
    return OPEReport(n, estimates, effective_sample_size(weights), float(np.max(weights)))


def evaluate_policy(
    model: LoadedVersion,
    contexts: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    pscores: np.ndarray,
    masks: np.ndarray | None = None,
    greedy: bool = False,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    random_state: int = 0,
    baseline: int | None = None,
    **packed: np.ndarray,
) -> OPEReport:
    """Evaluates an exported version on logged decisions (with ``baseline``, the policy that
    always takes that baseline action, baseline_actions, with the version's reward model).

    model: an exporter.loader.LoadedVersion; contexts: [n, d]; actions: [n] int; rewards: [n];
    pscores: [n] the logged propensities; masks: [n, K] bool or None (every action allowed);
    greedy picks the greedy SavedModel instead of the collect one. The evaluation policy's
    action_dist [n, K] comes from the version's probabilities signature with seeds 0..n-1;
    the reward model is fit_reward_model(contexts, actions, rewards, K, random_state=random_state).

    Named features and candidate sets pass their other packed inputs (``context_categorical``,
    ``action_features`` [n, K, n_a], ``action_categorical``) as keywords, contexts being the
    packed numeric values; K is then the log's largest candidate set and masks is required.
    The reward model then reads the encoded features the model reads (its encode signature):
    fit_reward_model on encoded contexts, or fit_candidate_reward_model on encoded contexts and
    candidates.
    """
    contexts = np.asarray(contexts, np.float32)
    masks = _masks(model, contexts, masks, packed)
    seeds = np.arange(len(contexts), dtype=np.int64)
    if baseline is not None:
        action_dist = np.zeros(masks.shape)
        action_dist[np.arange(len(contexts)), baseline_actions(baseline, masks)] = 1.0
    else:
        action_dist = np.concatenate(
            _batches(
                len(contexts),
                packed,
                lambda part, extra: model.probabilities(greedy, contexts[part], masks[part], seeds[part], **extra),
            )
        ).astype(np.float64)
    reward_model = _reward_model(model, contexts, actions, rewards, masks.shape[1], packed, random_state)
    return evaluate_arrays(
        reward=np.asarray(rewards, np.float64),
        action=np.asarray(actions),
        pscore=np.asarray(pscores, np.float64),
        action_dist=action_dist,
        estimated_rewards_by_reg_model=reward_model,
        n_bootstrap=n_bootstrap,
        alpha=alpha,
        random_state=random_state,
    )
