"""Planners: optimise an objective over action sequences, never seeing a model.

Every planner maximises ``objective: (B x H x A) -> B`` (one return per candidate sequence)
within the action bounds and returns one sequence ``H x A``::

    planner = CEM(low, high, horizon, CEMConfig())     # bounds A each, horizon H
    plan = planner.optimize(objective, x0, generator)

``x0`` (``H x A``) is where the search starts: CEM's initial mean, MPPI's nominal sequence.
Random shooting ignores it. A caller that wants PETS's warm start passes the previous solution
shifted by one step (:class:`~mbrl_bench.planners.mpc.MPCAgent` does); the planners keep no state
between calls. All sampling uses the ``generator`` given to each call.

A NaN or infinite return ranks last: it is read as ``-inf`` before any ranking or weighting
(mbrl-lib replaces NaN by ``-1e-10``, which beats every candidate of a task whose returns are
negative). If every candidate's return is NaN or infinite the planner has nothing to go on and
raises :class:`~mbrl_bench.errors.NonFiniteError`.

Candidates from CEM and MPPI are drawn from a normal truncated at two standard deviations whose
standard deviation is capped at half the distance from the mean to the nearer bound (PETS), so
every sample lies within the bounds without clipping.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mbrl_bench.config import check
from mbrl_bench.devices import rand
from mbrl_bench.errors import NonFiniteError

Objective = Callable[[torch.Tensor], torch.Tensor]
"""``(B x H x A) -> B``: the return of each candidate action sequence (higher is better)."""


class Planner(Protocol):
    """What an MPC controller needs of a planner."""

    horizon: int
    low: torch.Tensor
    high: torch.Tensor

    def optimize(
        self, objective: Objective, x0: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """The best sequence found, ``H x A``, within the action bounds."""


# ----------------------------------------------------------------------------- helpers


def rank_values(values: torch.Tensor) -> torch.Tensor:
    """``B -> B`` with every NaN or ±inf replaced by ``-inf`` (so it ranks last)."""
    return torch.where(torch.isfinite(values), values, torch.full_like(values, -math.inf))


def _evaluate(objective: Objective, candidates: torch.Tensor) -> torch.Tensor:
    """Returns of ``candidates`` (``B x H x A``) as ranked values ``B``; checks the shape."""
    values = objective(candidates)
    if values.shape != candidates.shape[:1]:
        raise ValueError(f"objective returned shape {tuple(values.shape)} for "
                         f"{candidates.shape[0]} candidates; expected ({candidates.shape[0]},)")
    ranked = rank_values(values.to(torch.float32))
    if not bool(torch.isfinite(ranked).any()):
        raise NonFiniteError(f"every one of {values.shape[0]} candidate returns is NaN or inf")
    return ranked


def truncated_normal(shape: tuple[int, ...], generator: torch.Generator,
                     device: torch.device | None = None) -> torch.Tensor:
    """Standard normal samples truncated to ``[-2, 2]``, of ``shape`` (inverse-CDF sampling),
    drawn on the generator's device and placed on ``device`` (default: the generator's)."""
    out = torch.empty(shape, device=generator.device)
    torch.nn.init.trunc_normal_(out, 0.0, 1.0, -2.0, 2.0, generator=generator)
    return out if device is None else out.to(device)


def bounded_std(mean: torch.Tensor, std: torch.Tensor, low: torch.Tensor, high: torch.Tensor
                ) -> torch.Tensor:
    """``std`` capped at half the distance from ``mean`` to the nearer bound (``H x A``), so
    ``mean ± 2 std`` stays within ``[low, high]``."""
    room = torch.minimum(mean - low, high - mean).clamp_min(0.0) / 2
    return torch.minimum(std, room)


def _bounds(low: np.ndarray | torch.Tensor, high: np.ndarray | torch.Tensor, horizon: int,
            device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = (torch.as_tensor(np.asarray(b, dtype=np.float32), device=device).reshape(1, -1)
              .expand(horizon, -1) for b in (low, high))
    if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())
            and bool((lo < hi).all())):
        raise ValueError(f"planners need finite action bounds with low < high, got {low}, {high}")
    return lo.contiguous(), hi.contiguous()


class _Bounded:
    """Action bounds ``H x A`` and the start of a search."""

    horizon: int
    low: torch.Tensor
    high: torch.Tensor

    def _init(self, horizon: int, low: np.ndarray | torch.Tensor,
              high: np.ndarray | torch.Tensor, device: str | torch.device) -> None:
        if horizon < 1:
            raise ValueError(f"planning horizon must be a positive integer, got {horizon}")
        self.horizon = horizon
        self.low, self.high = _bounds(low, high, horizon, device)

    def _start(self, x0: torch.Tensor | None) -> torch.Tensor:
        """``x0`` checked and clipped to the bounds, or the middle of the bounds."""
        if x0 is None:
            return (self.low + self.high) / 2
        x0 = torch.as_tensor(x0, dtype=torch.float32, device=self.low.device)
        if x0.shape != self.low.shape:
            raise ValueError(f"x0 must be {tuple(self.low.shape)} (H x A), got {tuple(x0.shape)}")
        return torch.minimum(torch.maximum(x0, self.low), self.high)


# ----------------------------------------------------------------------------- random shooting


@dataclass(frozen=True)
class RandomShootingConfig:
    """Random shooting: the best of uniformly random action sequences."""

    population_size: int = 2000
    """Candidates per plan (default: CEM's 400 x 5 iterations, the same number of returns)."""

    def __post_init__(self) -> None:
        check(self.population_size >= 1, "population_size", "a positive integer")


class RandomShooting(_Bounded):
    """Draws ``population_size`` sequences uniformly within the bounds; returns the best one."""

    def __init__(self, low: np.ndarray, high: np.ndarray, horizon: int,
                 config: RandomShootingConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self._init(horizon, low, high, device)

    def optimize(
        self, objective: Objective, x0: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """The highest-return candidate, ``H x A`` (``x0`` is not used)."""
        shape = (self.config.population_size, *self.low.shape)
        u = rand(shape, generator, self.low.device)
        candidates = self.low + u * (self.high - self.low)
        values = _evaluate(objective, candidates)
        return candidates[int(torch.argmax(values))].clone()


# ----------------------------------------------------------------------------- CEM


@dataclass(frozen=True)
class CEMConfig:
    """Cross-entropy method as in PETS (Chua et al. 2018). Defaults are the paper's."""

    population_size: int = 500
    """Candidates sampled per iteration."""
    elite_ratio: float = 0.1
    """Fraction of each population (rounded up) whose mean and variance update the sampler."""
    iterations: int = 5
    """Sample-evaluate-refit rounds per plan."""
    momentum: float = 0.1
    """Weight of the previous mean and variance in each update (``alpha`` in PETS)."""

    def __post_init__(self) -> None:
        check(self.population_size >= 2, "population_size", "an integer >= 2")
        check(0 < self.elite_ratio <= 1, "elite_ratio", "a fraction in (0, 1]")
        check(self.iterations >= 1, "iterations", "a positive integer")
        check(0 <= self.momentum < 1, "momentum", "a number in [0, 1)")

    @property
    def num_elites(self) -> int:
        return max(1, math.ceil(self.population_size * self.elite_ratio - 1e-9))


class CEM(_Bounded):
    """Cross-entropy method over sequences ``H x A``.

    Starts from mean ``x0`` (default: the middle of the bounds) and variance
    ``(high - low)^2 / 16``; each iteration samples ``population_size`` sequences from the
    bounded truncated normal (module docstring), keeps the ``num_elites`` best and moves the
    mean and (population) variance towards theirs: ``new = momentum * old + (1 - momentum) *
    elites``. Returns the mean of the last iteration's elites.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, horizon: int, config: CEMConfig,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self._init(horizon, low, high, device)

    def optimize(
        self, objective: Objective, x0: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        cfg = self.config
        mean = self._start(x0)
        var = ((self.high - self.low) ** 2 / 16).clone()
        elite_mean = mean
        for _ in range(cfg.iterations):
            std = bounded_std(mean, var.sqrt(), self.low, self.high)
            noise = truncated_normal((cfg.population_size, *mean.shape), generator, mean.device)
            candidates = mean + noise * std
            values = _evaluate(objective, candidates)
            elites = candidates[torch.topk(values, cfg.num_elites, sorted=False).indices]
            elite_mean = elites.mean(dim=0)
            elite_var = elites.var(dim=0, unbiased=False)
            mean = cfg.momentum * mean + (1 - cfg.momentum) * elite_mean
            var = cfg.momentum * var + (1 - cfg.momentum) * elite_var
        return elite_mean


# ----------------------------------------------------------------------------- MPPI


@dataclass(frozen=True)
class MPPIConfig:
    """Model-predictive path integral control (Williams et al. 2017) with PDDM's smoothed noise
    (Nagabandi et al. 2019). Defaults are mbrl-lib's HalfCheetah settings."""

    population_size: int = 350
    """Candidates sampled per iteration."""
    iterations: int = 5
    """Sample-evaluate-reweight rounds per plan."""
    reward_scale: float = 0.9
    """Inverse temperature: candidate weights are ``exp(reward_scale * (R - max R))``."""
    noise_std: float = 1.0
    """Noise standard deviation as a fraction of half the action range (then bounded)."""
    smoothing: float = 0.9
    """Noise correlation over time: ``n_t = smoothing * e_t + (1 - smoothing) * n_{t-1}``."""

    def __post_init__(self) -> None:
        check(self.population_size >= 1, "population_size", "a positive integer")
        check(self.iterations >= 1, "iterations", "a positive integer")
        check(self.reward_scale > 0 and math.isfinite(self.reward_scale), "reward_scale",
              "a finite number > 0")
        check(self.noise_std > 0, "noise_std", "a number > 0")
        check(0 < self.smoothing <= 1, "smoothing", "a number in (0, 1]")


class MPPI(_Bounded):
    """MPPI over sequences ``H x A``.

    Each iteration perturbs the nominal sequence (start: ``x0``) with time-correlated noise
    drawn from the bounded truncated normal (module docstring), clips the candidates to the
    bounds, and replaces the nominal sequence by the candidates' average weighted by
    ``softmax(reward_scale * R)``. Returns the last nominal sequence.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, horizon: int, config: MPPIConfig,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self._init(horizon, low, high, device)

    def optimize(
        self, objective: Objective, x0: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        cfg = self.config
        mean = self._start(x0)
        std0 = cfg.noise_std * (self.high - self.low) / 2
        for _ in range(cfg.iterations):
            eps = truncated_normal((cfg.population_size, *mean.shape), generator, mean.device)
            eps = eps * bounded_std(mean, std0, self.low, self.high)
            noise = torch.empty_like(eps)
            noise[:, 0] = eps[:, 0]
            for t in range(1, self.horizon):
                noise[:, t] = cfg.smoothing * eps[:, t] + (1 - cfg.smoothing) * noise[:, t - 1]
            candidates = torch.minimum(torch.maximum(mean + noise, self.low), self.high)
            values = _evaluate(objective, candidates)
            weights = torch.softmax(cfg.reward_scale * values, dim=0)
            mean = torch.einsum("b,bha->ha", weights, candidates)
        return mean
