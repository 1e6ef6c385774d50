"""Rollout schemes: branched k-step model rollouts (MBPO) as the policy loop's model phase.

:class:`BranchedModelData` is the :class:`~mbrl_bench.loops.policy.ModelPhase` of MBPO
(Janner et al. 2019). Every ``model_train_freq`` real steps after the initial random steps:

1. **diagnose**: the model's error on the real data that arrived since the last fit (ε_m, out of
   sample) and the policy shift since that data's collection started (ε_π);
2. **fit** the model on all real data;
3. **roll out**: ``rollout_batch_size`` start states drawn uniformly from the real buffer, k steps
   of the current (stochastic) policy through the model, each branch stopping where it
   terminates, into the model buffer (which keeps ``retain_epochs`` epochs of rollouts);
4. policy updates then draw ``real_ratio`` of each batch from real data, the rest from the
   model buffer.

k follows the schedule ``[epoch_a, epoch_b, k_min, k_max]`` over epochs of ``epoch_length``
steps counted from the end of the initial random steps, as in the official code (or stays
at a fixed ``k``). With ``model_data = false`` the model is fitted and diagnosed on the same
schedule but adds no rollouts (every update batch is real data): the model then serves only a
policy optimizer that uses it itself, e.g. SAC's value expansion.

The model phase sees the policy only through :class:`StochasticPolicy`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch

from mbrl_bench.buffer import Batch, ReplayBuffer
from mbrl_bench.config import check
from mbrl_bench.diagnostics import (
    branched_bound,
    gaussian_kl,
    mbpo_bound,
    pinsker_tv,
    rollout_length,
)
from mbrl_bench.errors import NonFiniteError
from mbrl_bench.models.ensemble import ProbabilisticEnsemble
from mbrl_bench.models.model_env import ModelEnv, RewardFn, TerminationFn
from mbrl_bench.models.trainer import ModelTrainer, legacy_trainer_state


class StochasticPolicy(Protocol):
    """What the model phase needs of the policy (e.g. :class:`~mbrl_bench.optimizers.sac.SAC`)."""

    def act_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions ``B x A`` for observations ``B x O``."""
        ...

    def dist_params(
        self, obs: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-squash Gaussian mean and log-std ``B x A`` of the current policy, or of the
        past one whose weights ``state`` holds."""
        ...

    def policy_state(self) -> dict[str, torch.Tensor]:
        """A copy of the current policy's weights."""
        ...


@dataclass(frozen=True)
class BranchedRolloutConfig:
    """Settings of MBPO's branched rollouts. Defaults are the official code's."""

    added_later: ClassVar[tuple[str, ...]] = ("k", "model_data", "known_reward", "gamma")
    """Fields left out of run hashes while at their default (``spec.hashed_form``)."""

    model_train_freq: int = 250
    """Fit the model and generate rollouts every this many env steps."""
    rollout_batch_size: int = 100_000
    """Start states per generation (400 per env step at the default frequency)."""
    k_schedule: tuple[int, ...] = (20, 100, 1, 1)
    """``[epoch_a, epoch_b, k_min, k_max]``: k_min until epoch_a, linear to k_max at epoch_b."""
    k: int | None = None
    """A constant rollout length instead of ``k_schedule`` (the paper's fixed-k ablation);
    omitted = the schedule."""
    epoch_length: int = 1000
    """Env steps per epoch (the unit of the k schedule and of ``retain_epochs``)."""
    retain_epochs: int = 1
    """The model buffer keeps this many epochs of rollouts."""
    real_ratio: float = 0.05
    """Fraction of real transitions in each policy-update batch."""
    propagation: Literal["random_member", "fixed_member", "mean", "elites"] = "elites"
    """How rollouts pick ensemble members (official MBPO: a random elite per row and step)."""
    compounding_horizon: int = 10
    """Horizon K of the logged open-loop prediction error on the newest real trajectories."""
    model_data: bool = True
    """Add model rollouts to the policy's training data; false: fit the model only (for a
    policy optimizer that uses the model itself, e.g. SAC's value expansion)."""
    known_reward: bool = False
    """Roll out with the task's known reward function instead of the model's predicted reward
    (needs one registered for the task)."""
    gamma: float | None = None
    """Discount of the MBPO bounds in the diagnostics; omitted = the policy optimizer's γ."""

    def __post_init__(self) -> None:
        check(self.model_train_freq > 0, "model_train_freq", "a positive integer")
        check(self.rollout_batch_size > 0, "rollout_batch_size", "a positive integer")
        check(len(self.k_schedule) == 4, "k_schedule", "four integers [epoch_a, epoch_b, k_min, "
              "k_max]")
        if len(self.k_schedule) == 4:
            a, b, k_min, k_max = self.k_schedule
            check(0 <= a <= b, "k_schedule", "epoch_a <= epoch_b, both >= 0")
            check(1 <= k_min <= k_max, "k_schedule", "1 <= k_min <= k_max")
        check(self.k is None or self.k >= 1, "k", "a rollout length >= 1 (omit it for the "
              "schedule)")
        check(self.epoch_length > 0, "epoch_length", "a positive integer")
        check(self.retain_epochs > 0, "retain_epochs", "a positive integer")
        check(0.0 <= self.real_ratio <= 1.0, "real_ratio", "a fraction in [0, 1]")
        check(self.compounding_horizon >= 1, "compounding_horizon", "a positive integer")
        check(self.gamma is None or 0 < self.gamma <= 1, "gamma", "a number in (0, 1]")


def branched_rollout(
    model_env: ModelEnv, policy: Any, start_obs: torch.Tensor, k: int
) -> tuple[Batch, dict[str, float]]:
    """k-step rollouts from ``start_obs`` (``N x O``) with ``policy.act_batch``.

    A branch stops at the step where it terminates (that transition is kept, marked terminal).
    Returns the transitions (``M x ...``, M ≤ N k) and statistics (mean length, mean reward).
    """
    parts: list[Batch] = []
    obs = start_obs
    for _ in range(k):
        if obs.shape[0] == 0:
            break
        model_env.reset(obs)
        act = policy.act_batch(obs)
        next_obs, rew, term = model_env.step(act, sample=True)
        parts.append(Batch(obs, act, rew, next_obs, term.float()))
        obs = next_obs[~term]
    batch = Batch(*(torch.cat(ts) for ts in zip(*parts, strict=True)))
    n = max(start_obs.shape[0], 1)
    return batch, {"rollout_len_mean": batch.obs.shape[0] / n,
                   "rollout_reward_mean": float(batch.rew.mean()) if batch.rew.numel() else 0.0}


@torch.no_grad()
def model_return(
    model_env: ModelEnv, policy: Any, start_obs: torch.Tensor, horizon: int
) -> torch.Tensor:
    """Undiscounted return ``N`` of ``policy`` (``act_batch(obs, deterministic=True)``) in the
    model from ``start_obs`` (``N x O``) over at most ``horizon`` steps, each row stopping where
    the termination function ends it: the model's prediction of the real evaluation return."""
    n = start_obs.shape[0]
    dev = start_obs.device
    returns, alive = torch.zeros(n, device=dev), torch.ones(n, dtype=torch.bool, device=dev)
    obs = start_obs
    model_env.reset(obs)
    for _ in range(horizon):
        obs, rew, term = model_env.step(policy.act_batch(obs, deterministic=True), sample=True)
        returns += torch.where(alive, rew, torch.zeros_like(rew))
        alive &= ~term
        if not bool(alive.any()):
            break
    return returns


def mean_model_return(model_env: ModelEnv, policy: Any, start_obs: torch.Tensor,
                      horizon: int) -> float:
    """Mean of :func:`model_return` over the rows of ``start_obs`` (``N x O``), or NaN when
    the imagined episode diverges (a non-finite state within ``horizon`` steps, which long
    open-loop rollouts of a learned model can reach where training rollouts never go): a
    diagnostic never ends a run."""
    try:
        return float(model_return(model_env, policy, start_obs, horizon).mean())
    except NonFiniteError:
        return math.nan


class BranchedModelData:
    """MBPO's model phase for the policy loop (see the module docstring)."""

    metric_keys = (
        "k", "model_buffer", "model_fit_epochs", "model_fit_s", "model_holdout_mse",
        "model_holdout_nll", "rollout_s", "rollout_len_mean", "rollout_reward_mean", "eps_m",
        "eps_m_nll",
        "eps_pi_kl", "eps_pi", "eps_pi_max", "r_max", "bound_full", "bound_branched",
        *(f"compounding_mse_h{h}" for h in (1, 2, 5, 10)),
    )

    def __init__(
        self, model: ProbabilisticEnsemble, termination_fn: TerminationFn,
        config: BranchedRolloutConfig, obs_dim: int, act_dim: int, start_step: int,
        generator: torch.Generator, reward_fn: RewardFn | None = None,
    ) -> None:
        """``start_step``: the first env step of policy updates (after the random steps);
        ``reward_fn``: the task's known reward (None: the model's predicted reward)."""
        self.model, self.config, self.start_step = model, config, start_step
        self.trainer = ModelTrainer(model)
        self.gamma = 0.99 if config.gamma is None else config.gamma
        self.generator = generator
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.termination_fn, self.reward_fn = termination_fn, reward_fn
        self.model_env = ModelEnv(model, termination_fn, reward_fn,
                                  propagation=config.propagation, generator=generator)
        self.k = rollout_length(0, self._schedule)
        self.model_buffer = ReplayBuffer(obs_dim, act_dim, self._capacity(self.k), model.device)
        self.collect_policy: dict[str, torch.Tensor] | None = None
        """Weights of the policy that collects the real data since the last fit (for ε_π)."""
        self.last: dict[str, float] = {}
        self.fitted_step = 0

    @property
    def _schedule(self) -> tuple[int, int, int, int]:
        """``[epoch_a, epoch_b, k_min, k_max]``; a fixed ``k`` is the schedule ``[0, 0, k, k]``."""
        if self.config.k is not None:
            return 0, 0, self.config.k, self.config.k
        a, b, k_min, k_max = self.config.k_schedule
        return a, b, k_min, k_max

    def _capacity(self, k: int) -> int:
        c = self.config
        if not c.model_data:
            return 1
        per_epoch = k * c.rollout_batch_size * c.epoch_length / c.model_train_freq
        return max(int(c.retain_epochs * per_epoch), c.rollout_batch_size)

    def _resize(self, k: int) -> None:
        """New capacity for rollout length ``k``, keeping the newest rollouts."""
        old = self.model_buffer
        self.model_buffer = ReplayBuffer(self.obs_dim, self.act_dim, self._capacity(k),
                                         self.model.device)
        if len(old):
            b = old.all()
            self.model_buffer.add(b.obs, b.act, b.rew, b.next_obs, b.terminated)

    # ------------------------------------------------------------------ ModelPhase
    def after_step(self, step: int, real: ReplayBuffer, agent: StochasticPolicy) -> None:
        c = self.config
        since = step - self.start_step
        if since < 0 or since % c.model_train_freq != 0:
            return
        new_rows = min(step - self.fitted_step, len(real))  # real steps since the last fit
        if self.fitted_step and new_rows > 0:
            self._diagnose(real, agent, new_rows)
        data = real.all()
        t = time.perf_counter()
        fit = self.trainer.fit(data.obs, data.act, data.next_obs, data.rew, self.generator)
        self.last.update(model_fit_epochs=fit["epochs"], model_fit_s=time.perf_counter() - t,
                         model_holdout_mse=fit["holdout_mse"], model_holdout_nll=fit["holdout_nll"])
        self.fitted_step = step
        k = rollout_length(since // c.epoch_length, self._schedule)
        if k != self.k:
            self.k = k
            self._resize(k)
        if c.model_data:
            t = time.perf_counter()
            start = real.sample(c.rollout_batch_size, self.generator).obs
            batch, stats = branched_rollout(self.model_env, agent, start, k)
            self.model_buffer.add(batch.obs, batch.act, batch.rew, batch.next_obs,
                                  batch.terminated)
            self.last.update(stats, rollout_s=time.perf_counter() - t, k=float(k),
                             model_buffer=float(len(self.model_buffer)))
        self.collect_policy = agent.policy_state()  # the policy that collects the next data

    def sample(self, batch_size: int, real: ReplayBuffer, generator: torch.Generator) -> Batch:
        n_real = int(batch_size * self.config.real_ratio)
        if len(self.model_buffer) == 0:
            n_real = batch_size
        parts = [real.sample(n_real, generator)] if n_real else []
        if batch_size - n_real:
            parts.append(self.model_buffer.sample(batch_size - n_real, generator))
        if len(parts) == 1:
            return parts[0]
        return Batch(*(torch.cat(ts) for ts in zip(*parts, strict=True)))

    def diagnostics(self, step: int, agent: StochasticPolicy) -> dict[str, float]:
        return dict(self.last)

    def predicted_return(self, agent: StochasticPolicy, start_obs: torch.Tensor, horizon: int,
                         generator: torch.Generator) -> float:
        """Mean return of the deterministic policy in the model from ``start_obs`` (``N x O``,
        the evaluation episodes' first observations), for comparison with the real evaluation
        return (model exploitation). ``generator`` is the caller's own, so this measurement
        does not change the training's random numbers.

        NaN before the first fit, and when the imagined episode diverges
        (:func:`mean_model_return`)."""
        if not self.fitted_step:
            return math.nan
        return mean_model_return(ModelEnv(self.model, self.termination_fn, self.reward_fn,
                                          propagation=self.config.propagation,
                                          generator=generator), agent, start_obs, horizon)

    # ------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def _diagnose(self, real: ReplayBuffer, agent: StochasticPolicy, new_rows: int) -> None:
        """ε_m on the real data gathered since the last fit (unseen by the model), ε_π between
        the policy that gathered it and the current one, the MBPO bounds, compounding error."""
        ordered = real.all()
        newest = Batch(*(t[-new_rows:] for t in ordered))
        ev = self.trainer.evaluate(newest.obs, newest.act, newest.next_obs, newest.rew)
        eps_m, eps_m_nll = float(ev["elite_mse"]), float(ev["elite_nll"])
        eps_pi_kl = eps_pi = eps_pi_max = math.nan
        if self.collect_policy is not None:
            mp, lp = agent.dist_params(newest.obs, self.collect_policy)
            mq, lq = agent.dist_params(newest.obs)
            kl = gaussian_kl(mp, lp, mq, lq)
            tv = pinsker_tv(kl)
            eps_pi_kl, eps_pi, eps_pi_max = float(kl.mean()), float(tv.mean()), float(tv.max())
        r_max = float(ordered.rew.abs().max())
        self.last.update(eps_m=eps_m, eps_m_nll=eps_m_nll, eps_pi_kl=eps_pi_kl, eps_pi=eps_pi,
                         eps_pi_max=eps_pi_max, r_max=r_max)
        if math.isfinite(eps_pi):
            self.last.update(
                bound_full=mbpo_bound(eps_m, eps_pi, self.gamma, r_max),
                bound_branched=branched_bound(eps_m, eps_pi, self.gamma, r_max, self.k))
        errors = compounding_error(self.model, newest, real.truncated()[-new_rows:],
                                   self.config.compounding_horizon)
        for h in (1, 2, 5, 10):
            if h <= len(errors):
                self.last[f"compounding_mse_h{h}"] = errors[h - 1]

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "model_trainer": self.trainer.state_dict(),
            "buffer": self.model_buffer.state_dict(), "k": self.k, "last": dict(self.last),
            "fitted_step": self.fitted_step, "collect_actor": self.collect_policy,
            "has_collect_actor": self.collect_policy is not None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.trainer.load_state_dict(legacy_trainer_state(state))
        self.k = state["k"]
        self.model_buffer = ReplayBuffer(self.obs_dim, self.act_dim, self._capacity(self.k),
                                         self.model.device)
        self.model_buffer.load_state_dict(state["buffer"])
        self.last, self.fitted_step = dict(state["last"]), state["fitted_step"]
        self.collect_policy = state["collect_actor"] if state["has_collect_actor"] else None


@torch.no_grad()
def compounding_error(
    model: ProbabilisticEnsemble, data: Batch, truncated: torch.Tensor, horizon: int
) -> list[float]:
    """Open-loop prediction error vs horizon on consecutive real transitions.

    ``data`` holds transitions in time order (``N x ...``) and ``truncated`` (``N``) marks
    episode ends by time limit (``data.terminated`` marks the others). Segments of ``horizon``
    steps within one episode are predicted from their first state with the recorded actions,
    using the elites' mean prediction. Returns the observation MSE at h = 1..horizon
    (averaged over segments); shorter if no segment is that long.

    It steps the model itself, not through :class:`ModelEnv`: that has no elites-mean mode, and
    averaging the members over all ``O+1`` outputs (as its ``mean`` mode does) rounds differently
    from this average over the ``O`` observation columns, which would change the logged numbers.
    """
    ends = (data.terminated + truncated) > 0
    n = data.obs.shape[0]
    starts = [i for i in range(0, n - horizon + 1, horizon)
              if not bool(ends[i : i + horizon - 1].any())]
    if not starts:
        return []
    idx = torch.tensor(starts, device=data.obs.device)
    obs = data.obs[idx]
    elites = model.elite_idx
    out = []
    for h in range(horizon):
        mean, _ = model.predict(obs, data.act[idx + h], members=elites)
        obs = obs + mean[..., : model.obs_dim].mean(0)
        out.append(float(((obs - data.next_obs[idx + h]) ** 2).mean()))
    return out
