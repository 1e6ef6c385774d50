"""Settings of the training loops: frozen, validated configs that the recipe layer loads
without importing any loop (the loops in this package import them from here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from mbrl_bench.config import check
from mbrl_bench.models.model_env import Propagation


@dataclass(frozen=True)
class PolicyLoopConfig:
    """Settings of the policy loop (budget and evaluation schedule come from the suite)."""

    initial_random_steps: int = 5000
    """Uniformly random actions before the policy acts and updates start (suite may override)."""
    buffer_capacity: int = 1_000_000
    """Capacity of the real replay buffer."""
    log_every: int = 1000
    """Write a metrics row every this many env steps."""

    def __post_init__(self) -> None:
        check(self.initial_random_steps >= 0, "initial_random_steps", "a non-negative integer")
        check(self.buffer_capacity > 0, "buffer_capacity", "a positive integer")
        check(self.log_every > 0, "log_every", "a positive integer")


@dataclass(frozen=True)
class MPCLoopConfig:
    """Settings of the MPC loop (budget and evaluation schedule come from the suite)."""

    added_later: ClassVar[tuple[str, ...]] = ("propagation",)
    """Fields left out of run hashes while at their default (``spec.hashed_form``)."""

    initial_random_steps: int = 1000
    """Uniformly random actions first (PETS: one trial; recipes set the task's trial length;
    a suite entry may override). The model is first fitted when they end."""
    model_train_freq: int = 250
    """Refit the model every this many env steps after the first fit."""
    horizon: int = 30
    """Planning horizon ``H``: length of the action sequences the planner optimises."""
    particles: int = 20
    """Particles per candidate action sequence (with TS-∞, a multiple of the ensemble size
    gives every candidate the same members)."""
    propagation: Propagation = "fixed_member"
    """How particles use the ensemble (PETS's ablation): ``fixed_member`` (TS-∞, one member per
    particle for the whole horizon), ``random_member`` (TS-1, a new member every step),
    ``mean`` (the members' mean prediction), ``elites`` (a random elite every step)."""
    known_reward: bool = False
    """Plan with the task's known reward function (``envs/rewards.py``) instead of the
    model's predicted reward."""
    buffer_capacity: int = 1_000_000
    """Capacity of the real replay buffer."""
    log_every: int = 250
    """Write a metrics row every this many env steps."""

    def __post_init__(self) -> None:
        check(self.initial_random_steps >= 2, "initial_random_steps",
              "at least 2 (the first model fit needs data)")
        check(self.model_train_freq > 0, "model_train_freq", "a positive integer")
        check(self.horizon >= 1, "horizon", "a positive integer")
        check(self.particles >= 1, "particles", "a positive integer")
        check(self.buffer_capacity > 0, "buffer_capacity", "a positive integer")
        check(self.log_every > 0, "log_every", "a positive integer")


@dataclass(frozen=True)
class TabularLoopConfig:
    """Settings of the tabular loop (budget and evaluation schedule come from the suite)."""

    planning_steps: int = 5
    """n: Q-learning updates on model transitions per real step (0 is Q-learning)."""
    eval_max_steps: int = 200
    """A greedy (evaluation) episode is cut after this many steps."""

    def __post_init__(self) -> None:
        check(self.planning_steps >= 0, "planning_steps", "a non-negative integer (n)")
        check(self.eval_max_steps > 0, "eval_max_steps", "a positive integer")


@dataclass(frozen=True)
class StageLoopConfig:
    """Settings of the stage loop (SLBO, ME-TRPO, TRPO; budget and evaluation from the suite).
    Defaults are SLBO's (``slbo/configs/algos/slbo.yml``, ``slbo/utils/flags.py``)."""

    steps_per_stage: int = 10_000
    """Real env steps collected per stage (SLBO's ``rollout.n_train_samples``)."""
    initial_random_steps: int = 0
    """Uniformly random actions first (SLBO: none, its first stage uses the initial policy)."""
    iterations_per_stage: int = 20
    """Model-then-policy iterations after each stage's collection (``slbo.n_iters``)."""
    policy_iterations: int = 40
    """Policy iterations per iteration (``slbo.n_policy_iters``): each one rolls out in the
    model and updates the policy once (TRPO), or ``offpolicy_updates`` times (SAC)."""
    offpolicy_updates: int = 250
    """With an off-policy optimizer (SAC): updates per policy iteration, on batches of the
    model buffer (the rollouts of the last ``model_buffer_iterations`` policy iterations)."""
    model_buffer_iterations: int = 40
    """With an off-policy optimizer: policy iterations of rollouts the model buffer keeps."""
    noise: Literal["none", "ou", "gaussian"] = "none"
    """Exploration noise added to the policy's sampled action when collecting real data
    (SLBO: Ornstein-Uhlenbeck), in units of half the action range."""
    noise_sigma: float = 0.3
    """σ of the noise (SLBO's ``OUNoise.sigma``)."""
    noise_theta: float = 0.15
    """θ of the OU noise (SLBO's ``OUNoise.theta``); its state is never reset, as in SLBO."""
    buffer_capacity: int = 200_000
    """Capacity of the real replay buffer (SLBO's ``rollout.max_buf_size``, FIFO)."""
    log_every: int = 1000
    """Write a metrics row every this many env steps."""

    def __post_init__(self) -> None:
        check(self.steps_per_stage >= 2, "steps_per_stage", "an integer >= 2")
        check(self.initial_random_steps >= 0, "initial_random_steps", "a non-negative integer")
        check(self.iterations_per_stage >= 1, "iterations_per_stage", "a positive integer")
        check(self.policy_iterations >= 1, "policy_iterations", "a positive integer")
        check(self.offpolicy_updates >= 1, "offpolicy_updates", "a positive integer")
        check(self.model_buffer_iterations >= 1, "model_buffer_iterations",
              "a positive integer")
        check(self.noise_sigma >= 0, "noise_sigma", "a non-negative number")
        check(0 <= self.noise_theta <= 1, "noise_theta", "a number in [0, 1]")
        check(self.buffer_capacity > 0, "buffer_capacity", "a positive integer")
        check(self.log_every > 0, "log_every", "a positive integer")
