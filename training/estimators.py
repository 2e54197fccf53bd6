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
from typing import Any

import numpy as np

ESTIMATORS = ("ipw", "snipw", "dm", "dr", "sndr")
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


def _ipw_parts(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """[n] each: w_i reward_i, w_i."""
    w = importance_weights(action=action, pscore=pscore, action_dist=action_dist, position=position)
    return w * reward, w


def _ipw_terms(**arrays: Any) -> np.ndarray:
    """[n, 1]: w_i reward_i."""
    return _ipw_parts(**arrays)[0][:, None]


def _snipw_terms(**arrays: Any) -> np.ndarray:
    """[n, 2]: w_i reward_i, w_i."""
    return np.stack(_ipw_parts(**arrays), axis=1)


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


def _estimator(name: str, doc: str) -> Callable[..., float]:
    """The public point estimator ``name``: keyword arrays (obp's names) -> float."""

    def estimate(**arrays: Any) -> float:
        return _point(name, **arrays)

    estimate.__name__ = estimate.__qualname__ = name
    estimate.__doc__ = doc
    return estimate


ipw = _estimator("ipw", "Inverse propensity weighting (IPS): mean_i( w_i * reward_i ). Shapes in the module docstring.")
snipw = _estimator(
    "snipw", "Self-normalized IPW (SNIPS): sum_i( w_i * reward_i ) / sum_i( w_i ); NaN when every w_i is 0."
)
dm = _estimator("dm", "Direct method: mean_i( sum_a action_dist[i, a, position_i] * q_hat[i, a] ).")
dr = _estimator("dr", "Doubly robust: dm + mean_i( w_i * (reward_i - q_hat[i, action_i]) ).")
sndr = _estimator(
    "sndr",
    "Self-normalized doubly robust (obp 0.5): dm + mean_i( w_i (reward_i - q_hat[i, action_i]) ) / mean_i( w_i ); "
    "NaN when every w_i is 0.",
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
