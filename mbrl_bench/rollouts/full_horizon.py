"""Full-horizon model rollouts (SLBO, ME-TRPO): whole imagined trajectories for the policy.

:class:`FullHorizonRollouts` rolls the current stochastic policy through the model for
``horizon`` steps (the task's episode length unless set) from ``rollout_steps // horizon``
start states, as SLBO's public code does: by default the start states are fresh real initial
states (``start = "reset"``: resets of a real environment instance that is never stepped; SLBO's
``slbo.start = 'reset'``), or states drawn uniformly from the real data (``"buffer"``).
Each trajectory stops at the step the termination function ends it; the others end at the
horizon (a cut, not a termination: the optimizer bootstraps there).

Predicted states are clipped to ``clip_std`` standard deviations around the real data's mean
(SLBO clips its normalised predicted states to ±100), so a long open-loop rollout of a learned
model cannot leave the range where its inputs mean anything; a non-finite prediction still ends
the run with an error.

The rollouts are :class:`~mbrl_bench.buffer.Trajectories` (trajectory-major, the sampled action
before clipping beside the clipped one the model was given), for an on-policy optimizer
(TRPO) or, flattened into transitions, for an off-policy one (SAC).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from mbrl_bench.buffer import ReplayBuffer, Trajectories
from mbrl_bench.config import check
from mbrl_bench.models.ensemble import ProbabilisticEnsemble
from mbrl_bench.models.model_env import ModelEnv, RewardFn, TerminationFn
from mbrl_bench.rollouts.branched import mean_model_return


class RolloutPolicy(Protocol):
    """What a full-horizon rollout needs of the policy (TRPO's, or SAC's)."""

    def sample_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """The policy's sampled actions ``B x A`` (before any clipping)."""
        ...

    def clip(self, act: torch.Tensor) -> torch.Tensor:
        """Actions ``B x A`` as the env (and the model) takes them."""
        ...

    def act_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions ``B x A`` in the env's bounds for ``B x O`` (evaluation in the model)."""
        ...


@dataclass(frozen=True)
class FullHorizonConfig:
    """Settings of full-horizon rollouts. Defaults are SLBO's (``slbo/utils/flags.py``)."""

    horizon: int | None = None
    """Steps per imagined trajectory (SLBO's ``plan.max_steps``); omitted = the task's episode
    length (its time limit)."""
    rollout_steps: int = 4000
    """Imagined steps per policy iteration (SLBO's ``plan.n_trpo_samples``): ``rollout_steps //
    horizon`` trajectories (at least one)."""
    start: Literal["reset", "buffer"] = "reset"
    """Start states: real initial states from env resets, or states of the real data."""
    known_reward: bool = False
    """Use the task's known reward function (``envs/rewards.py``) instead of the model's."""
    propagation: Literal["random_member", "mean"] = "random_member"
    """How an ensemble is used at each step: a random member per row (ME-TRPO), or the mean.
    A one-member model (SLBO) is the same either way."""
    clip_std: float | None = 100.0
    """Clip predicted states to the real data's mean ± this many std; None = no clipping."""
    compounding_horizon: int = 10
    """Horizon of the logged open-loop prediction error on the newest real data."""

    def __post_init__(self) -> None:
        check(self.horizon is None or self.horizon >= 1, "horizon",
              "a positive integer (omit it for the task's episode length)")
        check(self.rollout_steps >= 1, "rollout_steps", "a positive integer")
        check(self.clip_std is None or self.clip_std > 0, "clip_std", "a positive number")
        check(self.compounding_horizon >= 1, "compounding_horizon", "a positive integer")


class FullHorizonRollouts:
    """Full-horizon rollouts of a policy through ``model`` (module docstring).

    ``horizon``: the resolved trajectory length; ``initial_states(n, generator)``: ``n x O`` real
    initial states (for ``start = "reset"``).
    """

    def __init__(
        self, model: ProbabilisticEnsemble, termination_fn: TerminationFn,
        reward_fn: RewardFn | None, config: FullHorizonConfig, horizon: int,
        initial_states: Callable[[int, torch.Generator], torch.Tensor],
        generator: torch.Generator,
    ) -> None:
        self.model, self.config, self.horizon = model, config, horizon
        self.termination_fn, self.reward_fn = termination_fn, reward_fn
        self.initial_states = initial_states
        self.generator = generator
        self.model_env = ModelEnv(model, termination_fn, reward_fn,
                                  propagation=config.propagation, generator=generator)
        self.n_trajectories = max(1, config.rollout_steps // horizon)

    def start_states(self, real: ReplayBuffer, n: int, generator: torch.Generator
                     ) -> torch.Tensor:
        """``n x O`` start states (``config.start``)."""
        if self.config.start == "buffer":
            return real.sample(n, generator).obs
        return self.initial_states(n, generator).to(self.model.device)

    def _clip(self, obs: torch.Tensor) -> torch.Tensor:
        """``B x O`` states clipped to ``clip_std`` std around the real data's mean."""
        if self.config.clip_std is None:
            return obs
        od, norm = self.model.obs_dim, self.model.normalizer
        mean, std = norm.mean[:od], norm.std[:od]
        k = self.config.clip_std
        return torch.maximum(torch.minimum(obs, mean + k * std), mean - k * std)

    @torch.no_grad()
    def rollout(self, policy: RolloutPolicy, real: ReplayBuffer
                ) -> tuple[Trajectories, dict[str, float]]:
        """Imagined trajectories of ``policy``'s sampled actions from fresh start states.

        Returns them trajectory-major (``M ≤ N x horizon`` steps) and statistics: mean
        trajectory length and the mean over trajectories of their summed model reward."""
        n, T = self.n_trajectories, self.horizon
        obs = self.start_states(real, n, self.generator)
        dev = obs.device
        alive = torch.ones(n, dtype=torch.bool, device=dev)
        steps: list[tuple[torch.Tensor, ...]] = []
        for _ in range(T):  # only the rows still alive are stepped (and checked for NaN)
            idx = alive.nonzero().squeeze(1)
            raw = policy.sample_batch(obs[idx])
            self.model_env.reset(obs[idx])
            nxt, rew, term = self.model_env.step(policy.clip(raw), sample=True)
            step = (obs, torch.zeros(n, raw.shape[1], device=dev), torch.zeros(n, device=dev),
                    obs.clone(), torch.zeros(n, device=dev), alive.clone())
            step[1][idx], step[2][idx], step[3][idx], step[4][idx] = (
                raw, rew, self._clip(nxt), term.float())
            steps.append(step)
            obs = step[3]
            alive = alive.clone()
            alive[idx] = ~term
            if not bool(alive.any()):
                break
        o, a, r, no, te, al = (torch.stack(x, dim=1) for x in zip(*steps, strict=True))
        length = al.sum(dim=1)  # N: steps each trajectory took (it includes its last one)
        last = torch.zeros_like(te)
        last[torch.arange(n, device=dev), length - 1] = 1.0
        mask = al.reshape(-1)
        traj = Trajectories(o.reshape(n * len(steps), -1)[mask], a.reshape(
            n * len(steps), -1)[mask], r.reshape(-1)[mask], no.reshape(n * len(steps), -1)[mask],
            te.reshape(-1)[mask], last.reshape(-1)[mask])
        ret = (r * al).sum(dim=1)
        return traj, {"rollout_len_mean": float(length.float().mean()),
                      "rollout_return_mean": float(ret.mean())}

    def predicted_return(self, policy: Any, start_obs: torch.Tensor, horizon: int,
                         generator: torch.Generator) -> float:
        """Mean return of the deterministic policy in the model from ``start_obs`` (``N x O``,
        the evaluation episodes' first observations); NaN when the imagined episode
        diverges (:func:`~mbrl_bench.rollouts.branched.mean_model_return`). Call it once the
        model is fitted."""
        return mean_model_return(ModelEnv(self.model, self.termination_fn, self.reward_fn,
                                          propagation=self.config.propagation,
                                          generator=generator), policy, start_obs, horizon)
