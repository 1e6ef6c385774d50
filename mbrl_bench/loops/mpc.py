"""The MPC loop (PETS, Chua et al. 2018): random trial → (fit model, plan every step) → evaluate.

Phases per env step:

1. **fit** the model on all real data when due: at the end of the initial random steps, then
   every ``model_train_freq`` steps (:meth:`~mbrl_bench.models.trainer.ModelTrainer.fit`,
   warm-started);
2. **act**: uniform random actions for the first ``initial_random_steps`` (PETS: one trial of
   random actions), then the :class:`~mbrl_bench.agents.mpc.MPCAgent`, which re-plans at every
   step with trajectory sampling through the model (known reward when the recipe says so);
3. **log** a metrics row every ``log_every`` steps; **evaluate** the controller every
   ``eval_every`` steps on a separate environment (evaluation plans too, with a generator of
   its own, so it costs planning time but never changes the training run), then checkpoint.

A checkpoint holds the model (normaliser and elites included) and its trainer's optimiser, the real
buffer, the generators, the training env's exact state, the episode in progress, the
controller's warm start and the metric accumulators, so a resumed run produces the same rows
as an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mbrl_bench.agents.mpc import MPCAgent
from mbrl_bench.buffer import ReplayBuffer
from mbrl_bench.config import check
from mbrl_bench.envs.make import get_env_state, set_env_state
from mbrl_bench.envs.rewards import reward_fn_for
from mbrl_bench.loops.policy import eval_seeds, evaluation_row
from mbrl_bench.models.trainer import ModelTrainer

if TYPE_CHECKING:
    from mbrl_bench.runner.compose import Components
    from mbrl_bench.runner.store import RunStore


@dataclass(frozen=True)
class MPCLoopConfig:
    """Settings of the MPC loop (budget and evaluation schedule come from the suite)."""

    initial_random_steps: int = 1000
    """Uniformly random actions first (PETS: one trial; recipes set the task's trial length;
    a suite entry may override). The model is first fitted when they end."""
    model_train_freq: int = 250
    """Refit the model every this many env steps after the first fit."""
    horizon: int = 30
    """Planning horizon ``H``: length of the action sequences the planner optimises."""
    particles: int = 20
    """TS-∞ particles per candidate action sequence (a multiple of the ensemble size gives
    every candidate the same members)."""
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


FIT_KEYS = ("model_fit_epochs", "model_fit_s", "model_holdout_mse", "model_train_loss")


@dataclass
class _State:
    """The loop's mutable state between steps (all of it goes into the checkpoint)."""

    obs: Any
    ep_return: float = 0.0
    episodes: int = 0
    step: int = 0
    elapsed: float = 0.0
    recent_returns: list[float] = field(default_factory=list)
    plan_s: float = 0.0
    """Planning seconds in the current logging interval (not checkpointed: timing)."""
    planned: int = 0
    """Planned steps in the current logging interval."""
    fit: dict[str, float] = field(default_factory=dict)
    last_eval: float = math.nan
    interval_start: int = 0


def check_mpc_env(cfg: MPCLoopConfig, env: Any) -> None:
    """Raise :class:`~mbrl_bench.errors.UnsupportedEnvError` if ``cfg`` wants a known reward
    that ``env`` does not have."""
    if cfg.known_reward:
        reward_fn_for(env)


def _agent(c: Components, generator: torch.Generator) -> MPCAgent:
    return MPCAgent(c.model, c.termination_fn, c.reward_fn, c.planner,
                    c.loop_config.particles, generator)


def run_mpc_loop(c: Components, store: RunStore, progress: Callable[[str], None] = print) -> None:
    """Run PETS-style MPC on ``c.env`` for the suite's budget, writing rows and checkpoints."""
    cfg: MPCLoopConfig = c.loop_config
    entry, env = c.spec.env, c.env
    space: Any = env.action_space
    real = ReplayBuffer(c.model.obs_dim, c.model.act_dim,
                        min(cfg.buffer_capacity, entry.budget))
    agent = _agent(c, c.torch_gen)
    trainer = ModelTrainer(c.model)
    st = _restore(c, store, real, agent, trainer, progress)
    t0, t_interval = time.perf_counter() - st.elapsed, time.perf_counter()
    while st.step < entry.budget:
        # --- fit the model when due
        since = st.step - cfg.initial_random_steps
        if since >= 0 and since % cfg.model_train_freq == 0:
            _fit(c, st, real, trainer)
        # --- act
        if st.step < cfg.initial_random_steps:
            action = c.np_rng.uniform(space.low, space.high).astype(space.dtype)
        else:
            t = time.perf_counter()
            action = agent.act(st.obs)
            st.plan_s, st.planned = st.plan_s + time.perf_counter() - t, st.planned + 1
        next_obs, r, term, trunc, _ = env.step(action)
        real.add_one(st.obs, action, float(r), next_obs, bool(term), bool(trunc))
        st.ep_return, st.step = st.ep_return + float(r), st.step + 1
        if term or trunc:
            st.recent_returns.append(st.ep_return)
            st.obs, st.ep_return, st.episodes = env.reset()[0], 0.0, st.episodes + 1
            agent.reset()
        else:
            st.obs = next_obs
        # --- log, evaluate, checkpoint
        if st.step % cfg.log_every == 0 or st.step == entry.budget:
            now = time.perf_counter()
            _log(c, st, store, now - t_interval, now - t0, progress)
            t_interval = now
        if st.step % entry.eval_every == 0 or st.step == entry.budget:
            t_eval = time.perf_counter()
            st.elapsed = t_eval - t0
            _evaluate_and_checkpoint(c, st, store, real, agent, trainer)
            t_interval += time.perf_counter() - t_eval  # steps/s counts training time only


def _fit(c: Components, st: _State, real: ReplayBuffer, trainer: ModelTrainer) -> None:
    data = real.all()
    out = trainer.fit(data.obs, data.act, data.next_obs, data.rew, c.torch_gen)
    st.fit = {"model_fit_epochs": out["epochs"], "model_fit_s": out["seconds"],
              "model_holdout_mse": out["holdout_mse"], "model_train_loss": out["train_loss"]}


def _log(c: Components, st: _State, store: RunStore, interval_s: float, wall_s: float,
         progress: Callable[[str], None]) -> None:
    sps = (st.step - st.interval_start) / max(interval_s, 1e-9)
    row: dict[str, Any] = {
        "env_step": st.step, "episodes": st.episodes,
        "train_return": float(np.mean(st.recent_returns)) if st.recent_returns else math.nan,
        **{k: st.fit.get(k, math.nan) for k in FIT_KEYS},
        "plan_s_per_step": st.plan_s / st.planned if st.planned else math.nan,
        "steps_per_s": sps, "wall_clock_s": wall_s,
    }
    store.append_metrics(row)
    progress(f"{c.spec.run_id}: step {st.step}/{c.spec.env.budget}  train return "
             f"{row['train_return']:.1f}  eval {st.last_eval:.1f}  "
             f"plan {row['plan_s_per_step']:.3f} s/step")
    st.recent_returns, st.plan_s, st.planned, st.interval_start = [], 0.0, 0, st.step


def evaluate_mpc(agent: MPCAgent, env: Any, episodes: int, seeds: list[int]) -> np.ndarray:
    """Returns of ``episodes`` episodes of the controller, each reset with its seed."""
    returns = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seeds[i])
        agent.reset()
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(agent.act(obs))
            returns[i] += float(r)
            done = bool(term or trunc)
    return returns


def _evaluate_and_checkpoint(c: Components, st: _State, store: RunStore, real: ReplayBuffer,
                             agent: MPCAgent, trainer: ModelTrainer) -> None:
    entry = c.spec.env
    seeds = eval_seeds(c.spec.seed, st.step, entry.eval_episodes + 1)
    eval_agent = _agent(c, torch.Generator().manual_seed(seeds[-1]))
    rets = evaluate_mpc(eval_agent, c.eval_env, entry.eval_episodes, seeds[:-1])
    row = evaluation_row(rets, st.step, st.episodes, st.elapsed)
    st.last_eval = row["return_mean"]
    store.append_eval(row)
    store.save_checkpoint({
        "step": st.step, "elapsed": st.elapsed, "last_eval": st.last_eval,
        "obs": np.asarray(st.obs, dtype=np.float64).tolist(), "ep_return": st.ep_return,
        "episodes": st.episodes, "env_state": get_env_state(c.env),
        "model": c.model.state_dict(), "model_trainer": trainer.state_dict(),
        "buffer": real.state_dict(), "agent": agent.state_dict(),
        "torch_gen": c.torch_gen.get_state(), "np_rng": c.np_rng.bit_generator.state,
        "recent_returns": st.recent_returns, "fit": st.fit,
    })


def _restore(c: Components, store: RunStore, real: ReplayBuffer, agent: MPCAgent,
             trainer: ModelTrainer, progress: Callable[[str], None]) -> _State:
    """A fresh state, or the state of the last checkpoint (rows past it are dropped)."""
    first_obs = c.env.reset(seed=c.env_seed)[0]
    ckpt = store.load_checkpoint()
    if ckpt is None:
        return _State(first_obs)
    store.truncate_after(ckpt["step"])
    st = _State(first_obs, episodes=ckpt["episodes"], step=ckpt["step"],
                elapsed=ckpt["elapsed"], recent_returns=list(ckpt["recent_returns"]),
                fit=dict(ckpt["fit"]), last_eval=ckpt["last_eval"],
                interval_start=ckpt["step"])
    if ckpt["env_state"] is not None:
        set_env_state(c.env, ckpt["env_state"])
        st.obs = np.asarray(ckpt["obs"], dtype=c.env.observation_space.dtype)
        st.ep_return = ckpt["ep_return"]
        agent.load_state_dict(ckpt["agent"])
    else:  # no exact state for this env: the interrupted episode is dropped, a new one starts
        progress(f"{c.spec.run_id}: this env's state cannot be saved; resumed at an episode "
                 "start, so later numbers differ from an uninterrupted run")
    c.model.load_state_dict(ckpt["model"])
    trainer.load_state_dict(ckpt["model_trainer"])
    real.load_state_dict(ckpt["buffer"])
    c.torch_gen.set_state(ckpt["torch_gen"])
    c.np_rng.bit_generator.state = ckpt["np_rng"]
    progress(f"{c.spec.run_id}: resumed at step {ckpt['step']}")
    return st
