"""Aggregate statistics over benchmark scores, in the spirit of rliable's metrics.

All functions are pure: they take NumPy arrays (or anything ``numpy.asarray`` accepts) and,
where randomness is needed, an explicit :class:`numpy.random.Generator`. The same generator
seed gives the same numbers.

Shape conventions used in the docstrings:

* ``(num_runs,)``: one score per run (seed) of a single task.
* ``(num_runs x num_tasks)``: one score per run and task; runs are rows, tasks are columns.
* ``(K,)``: a vector of ``K`` thresholds or results.

References: Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS 2021), and its library rliable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "episodes_to_optimal",
    "iqm",
    "mean_ci",
    "optimal_episodes",
    "performance_profile",
    "probability_of_improvement",
    "steps_to_threshold",
    "stratified_bootstrap_ci",
    "trimmed_mean",
]

Statistic = Callable[[NDArray[np.float64]], Any]


def _finite_array(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Convert to a float array, rejecting empty input and NaN."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty; need at least one score")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; drop or impute missing scores first")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _check_reps(reps: int) -> None:
    if reps < 1:
        raise ValueError(f"reps must be a positive number of bootstrap replicates, got {reps!r}")


def _percentile_interval(samples: NDArray[np.float64], confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap ``samples`` at level ``confidence``."""
    alpha = 1.0 - confidence
    lo, hi = np.percentile(samples, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


def trimmed_mean(scores: ArrayLike, proportion: float) -> float:
    """Mean of the flattened ``scores`` after cutting ``proportion`` of values from each end.

    Identical to ``scipy.stats.trim_mean(scores, proportion, axis=None)``: with ``n`` values,
    ``int(proportion * n)`` of the smallest and of the largest are dropped.

    Args:
        scores: any shape, e.g. ``(num_runs x num_tasks)``; flattened.
        proportion: fraction cut from each side, in ``[0, 0.5)``.
    """
    if not 0.0 <= proportion < 0.5:
        raise ValueError(f"proportion must be in [0, 0.5), got {proportion!r}")
    flat = np.sort(_finite_array(scores, "scores").ravel())
    cut = int(proportion * flat.size)
    return float(flat[cut : flat.size - cut].mean())


def iqm(scores: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50% of all scores.

    Matches rliable's ``aggregate_iqm``, i.e. ``scipy.stats.trim_mean(scores, 0.25, axis=None)``:
    runs and tasks are pooled (flattened) and 25% is trimmed from each side.

    Args:
        scores: ``(num_runs,)`` or ``(num_runs x num_tasks)``; any shape is flattened.

    Raises:
        ValueError: if ``scores`` is empty or contains NaN.
    """
    return trimmed_mean(scores, 0.25)


def mean_ci(
    x: ArrayLike,
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Sample mean with a percentile-bootstrap confidence interval.

    Args:
        x: ``(num_runs,)`` scores, one per run (seed).
        rng: source of randomness for resampling.
        reps: number of bootstrap replicates.
        confidence: coverage of the two-sided interval, e.g. 0.95.

    Returns:
        ``(mean, lo, hi)``. With a single run there is nothing to resample and
        ``lo == hi == mean``.

    Raises:
        ValueError: if ``x`` is empty, not one-dimensional, or contains NaN.
    """
    arr = _finite_array(x, "x")
    if arr.ndim != 1:
        raise ValueError(f"x must have shape (num_runs,), got {arr.shape}")
    _check_reps(reps)
    _check_confidence(confidence)
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean, mean
    idx = rng.integers(0, arr.size, size=(reps, arr.size))
    boot = arr[idx].mean(axis=1)
    lo, hi = _percentile_interval(boot, confidence)
    return mean, lo, hi


def difference_ci(
    x: ArrayLike,
    y: ArrayLike,
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Difference of two sample means with a percentile-bootstrap interval.

    Args:
        x: ``(n,)`` scores of one algorithm's runs (e.g. an ablation).
        y: ``(m,)`` scores of another's (its base); ``n`` and ``m`` may differ.
        rng: source of randomness; each replicate resamples ``x`` and ``y`` independently.
        reps: number of bootstrap replicates.
        confidence: coverage of the two-sided interval.

    Returns:
        ``(mean(x) - mean(y), lo, hi)``. A side with a single run contributes no spread.

    Raises:
        ValueError: if either side is empty, not one-dimensional, or contains NaN.
    """
    a, b = _finite_array(x, "x"), _finite_array(y, "y")
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"x and y must be non-empty 1-d arrays, got {a.shape} and {b.shape}")
    _check_reps(reps)
    _check_confidence(confidence)
    boot = (a[rng.integers(0, a.size, size=(reps, a.size))].mean(axis=1)
            - b[rng.integers(0, b.size, size=(reps, b.size))].mean(axis=1))
    lo, hi = _percentile_interval(boot, confidence)
    return float(a.mean() - b.mean()), lo, hi


def stratified_bootstrap_ci(
    scores: Mapping[str, ArrayLike],
    statistic: Statistic,
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float, float]]:
    """Point estimate and stratified-bootstrap percentile interval of ``statistic`` per key.

    For each replicate, runs are resampled with replacement independently within each task
    (column), as in rliable's ``StratifiedBootstrap``; ``statistic`` is then applied to the
    resampled ``(num_runs x num_tasks)`` matrix.

    Args:
        scores: maps a name (e.g. an algorithm) to a ``(num_runs x num_tasks)`` matrix;
            a ``(num_runs,)`` vector is treated as one task.
        statistic: maps a ``(num_runs x num_tasks)`` matrix to a scalar, e.g. :func:`iqm`.
        rng: source of randomness; keys are processed in the mapping's order.
        reps: number of bootstrap replicates.
        confidence: coverage of the two-sided interval.

    Returns:
        ``{name: (point, lo, hi)}`` where ``point = statistic(scores[name])``.

    Raises:
        ValueError: on empty or NaN scores, or when ``statistic`` does not return a scalar.
    """
    _check_reps(reps)
    _check_confidence(confidence)
    out: dict[str, tuple[float, float, float]] = {}
    for name, values in scores.items():
        mat = _as_matrix(values, f"scores[{name!r}]")
        num_runs, num_tasks = mat.shape
        point = _scalar(statistic(mat), name)
        task_idx = np.arange(num_tasks)[None, :]
        boot = np.empty(reps, dtype=np.float64)
        for r in range(reps):
            run_idx = rng.integers(0, num_runs, size=(num_runs, num_tasks))
            boot[r] = _scalar(statistic(mat[run_idx, task_idx]), name)
        lo, hi = _percentile_interval(boot, confidence)
        out[name] = (point, lo, hi)
    return out


def _scalar(value: Any, name: str) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1:
        raise ValueError(f"statistic must return a scalar for {name!r}, got shape {arr.shape}")
    return float(arr.reshape(()))


def _as_matrix(values: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = _finite_array(values, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (num_runs x num_tasks), got {arr.shape}")
    return arr


def probability_of_improvement(x: ArrayLike, y: ArrayLike) -> float:
    """Probability that algorithm X scores higher than algorithm Y on a random task.

    Per task, this is the Mann-Whitney statistic normalised to ``[0, 1]``:
    ``P(X > Y) + 0.5 * P(X == Y)`` over all ``n * m`` run pairs; the result is the average
    over tasks (as in rliable's ``probability_of_improvement``).

    Args:
        x: ``(n x num_tasks)`` scores of X (a ``(n,)`` vector is one task).
        y: ``(m x num_tasks)`` scores of Y, same tasks in the same column order.

    Raises:
        ValueError: on empty or NaN input, or when the number of tasks differs.
    """
    xm = _as_matrix(x, "x")
    ym = _as_matrix(y, "y")
    if xm.shape[1] != ym.shape[1]:
        raise ValueError(f"x has {xm.shape[1]} tasks but y has {ym.shape[1]}")
    xs = xm[:, None, :]
    ys = ym[None, :, :]
    per_task = (xs > ys).mean(axis=(0, 1)) + 0.5 * (xs == ys).mean(axis=(0, 1))
    return float(per_task.mean())


def performance_profile(scores: ArrayLike, taus: ArrayLike) -> NDArray[np.float64]:
    """Score distribution: fraction of all runs x tasks whose score exceeds each ``tau``.

    Args:
        scores: ``(num_runs x num_tasks)`` (any shape; flattened).
        taus: ``(K,)`` thresholds.

    Returns:
        ``(K,)`` array with entry ``k = mean(scores > taus[k])``.
    """
    flat = _finite_array(scores, "scores").ravel()
    tau = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    if tau.ndim != 1:
        raise ValueError(f"taus must have shape (K,), got {tau.shape}")
    return np.asarray((flat[None, :] > tau[:, None]).mean(axis=1), dtype=np.float64)


def steps_to_threshold(env_steps: ArrayLike, returns: ArrayLike, threshold: float) -> int | None:
    """Environment step of the first evaluation whose return is at least ``threshold``.

    Args:
        env_steps: ``(T,)`` evaluation steps, increasing.
        returns: ``(T,)`` evaluation returns at those steps (NaN never counts as reached).
        threshold: target return.

    Returns:
        The first ``env_steps[t]`` with ``returns[t] >= threshold``, or ``None`` if never reached.
    """
    steps = np.asarray(env_steps)
    rets = np.asarray(returns, dtype=np.float64)
    if steps.shape != rets.shape or steps.ndim != 1:
        raise ValueError(
            f"env_steps and returns must both have shape (T,), got {steps.shape} and {rets.shape}"
        )
    hits = np.flatnonzero(rets >= threshold)
    if hits.size == 0:
        return None
    return int(steps[hits[0]])


def optimal_episodes(
    returns: ArrayLike, lengths: ArrayLike, optimal_return: float | None,
    optimal_length: int | None,
) -> NDArray[np.bool_]:
    """Which episodes are optimal: return at least ``optimal_return`` and length at most
    ``optimal_length`` (a criterion that is ``None`` is not checked; at least one must be set).

    Args:
        returns: ``(E,)`` episode returns (NaN is never optimal).
        lengths: ``(E,)`` episode lengths in steps.
        optimal_return: the optimal return (e.g. -13 on CliffWalking).
        optimal_length: the length of a shortest successful episode (e.g. 14 in the Dyna maze).

    Returns:
        ``(E,)`` booleans.
    """
    rets = np.asarray(returns, dtype=np.float64)
    lens = np.asarray(lengths, dtype=np.float64)
    if rets.shape != lens.shape or rets.ndim != 1:
        raise ValueError(f"returns and lengths must both have shape (E,), got {rets.shape} and "
                         f"{lens.shape}")
    if optimal_return is None and optimal_length is None:
        raise ValueError("give optimal_return, optimal_length or both")
    ok = ~np.isnan(rets)
    if optimal_return is not None:
        ok &= rets >= optimal_return
    if optimal_length is not None:
        ok &= lens <= optimal_length
    return ok


def episodes_to_optimal(optimal: ArrayLike, window: int | None = 1) -> int | None:
    """Episodes it took to become optimal: the first episode of a run of optimal episodes.

    Episodes are numbered from 1. The result is the smallest ``e`` such that episodes
    ``e, e + 1, ..., e + window - 1`` are all optimal; with ``window=None``, such that episode
    ``e`` and every later episode (through the last one given) are optimal. So ``window=1`` is
    the first optimal episode, and ``window=None`` the episode from which a run stays optimal.

    Args:
        optimal: ``(E,)`` booleans, one per episode in order (see :func:`optimal_episodes`).
        window: how many consecutive optimal episodes count (``None``: all the remaining ones).

    Returns:
        ``e`` (1-based), or ``None`` if no ``window`` consecutive episodes are optimal (or, for
        ``window=None``, if the last episode is not).
    """
    ok = np.asarray(optimal, dtype=bool)
    if ok.ndim != 1:
        raise ValueError(f"optimal must have shape (E,), got {ok.shape}")
    if window is not None and window < 1:
        raise ValueError(f"window must be a positive number of episodes or None, got {window!r}")
    if window is None:
        if ok.size == 0 or not ok[-1]:
            return None
        bad = np.flatnonzero(~ok)
        return int(bad[-1]) + 2 if bad.size else 1
    if ok.size < window:
        return None
    runs = np.convolve(ok.astype(np.int64), np.ones(window, dtype=np.int64), mode="valid")
    hits = np.flatnonzero(runs == window)
    return int(hits[0]) + 1 if hits.size else None


def probability_of_improvement_ci(
    x_by_task: Sequence[ArrayLike],
    y_by_task: Sequence[ArrayLike],
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """P(X > Y) averaged over tasks, with a stratified-bootstrap percentile interval.

    Args:
        x_by_task: per task, the ``(n_t,)`` scores of X's runs (tasks may differ in runs).
        y_by_task: per task, the ``(m_t,)`` scores of Y's runs, same task order.
        rng: source of randomness for resampling.
        reps: bootstrap replicates; each resamples X's and Y's runs independently within
            every task (rliable's stratified bootstrap of this statistic).
        confidence: coverage of the two-sided interval.

    Returns:
        ``(point, lo, hi)``; the point is the mean over tasks of
        :func:`probability_of_improvement` of that task's runs.

    Raises:
        ValueError: on no tasks, differing task counts, or empty or NaN scores.
    """
    if len(x_by_task) != len(y_by_task) or not x_by_task:
        raise ValueError(f"need the same number (> 0) of tasks for x and y, got "
                         f"{len(x_by_task)} and {len(y_by_task)}")
    _check_reps(reps)
    _check_confidence(confidence)
    xs = [_finite_array(x, "x").ravel() for x in x_by_task]
    ys = [_finite_array(y, "y").ravel() for y in y_by_task]
    if any(a.size == 0 for a in (*xs, *ys)):
        raise ValueError("every task needs at least one run of each algorithm")
    point = float(np.mean([probability_of_improvement(x, y) for x, y in zip(xs, ys,
                                                                            strict=True)]))
    boot = np.zeros(reps, dtype=np.float64)
    for x, y in zip(xs, ys, strict=True):
        xi = x[rng.integers(0, x.size, size=(reps, x.size))]  # reps x n
        yi = y[rng.integers(0, y.size, size=(reps, y.size))]  # reps x m
        gt = (xi[:, :, None] > yi[:, None, :]).mean(axis=(1, 2))
        eq = (xi[:, :, None] == yi[:, None, :]).mean(axis=(1, 2))
        boot += gt + 0.5 * eq
    lo, hi = _percentile_interval(boot / len(xs), confidence)
    return point, lo, hi
