"""The policy loop: collect → (model phase) → update → evaluate, with exact resume.

Used by SAC and, through a :class:`ModelPhase`, by the model-based recipes that train a policy
on model data (MBPO, its ablations, Dyna-style continuous control). Phases per env step:

1. **collect**: one real step (uniform random actions for the first ``initial_random_steps``,
   then the stochastic policy) into the real replay buffer;
2. **model phase** (only when the recipe has one): fit the model / generate model data when due;
3. **update**: ``updates_per_step`` policy updates on batches from the real buffer, or on batches
   the model phase mixes from real and model data;
4. **log** a metrics row every ``log_every`` steps; **evaluate** the deterministic policy every
   ``eval_every`` steps on a separate environment, append the row, then checkpoint.

A checkpoint holds everything that decides later numbers (networks, optimiser, buffers,
generators, the training env's exact state, the episode in progress, the metric accumulators),
so a resumed run produces the same rows as an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from mbrl_bench.buffer import Batch, ReplayBuffer
from mbrl_bench.config import check
from mbrl_bench.envs.make import get_env_state, set_env_state
from mbrl_bench.errors import NonFiniteError

if TYPE_CHECKING:
    from mbrl_bench.runner.compose import Components
    from mbrl_bench.runner.store import RunStore


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


class PolicyOptimizer(Protocol):
    """What the loop needs of a policy optimizer (e.g. :class:`~mbrl_bench.agents.sac.SAC`)."""

    config: Any  # has batch_size and updates_per_step
    generator: torch.Generator

    def act(self, obs: Any, deterministic: bool) -> Any: ...
    def update(self, batch: Batch) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ModelPhase(Protocol):
    """The model-based part of a policy-loop recipe (MBPO and friends).

    ``metric_keys`` are the diagnostics it adds to every metrics row (NaN when not measured).
    """

    metric_keys: tuple[str, ...]

    def after_step(self, step: int, real: ReplayBuffer, agent: PolicyOptimizer) -> None:
        """Called after every real step: fit the model and generate model data when due."""

    def sample(self, batch_size: int, real: ReplayBuffer, generator: torch.Generator) -> Batch:
        """A policy-update batch (e.g. a mix of real and model transitions)."""

    def diagnostics(self, step: int, agent: PolicyOptimizer) -> dict[str, float]:
        """Diagnostics for the metrics row at ``step``."""

    def predicted_return(self, agent: PolicyOptimizer, start_obs: torch.Tensor, horizon: int,
                         generator: torch.Generator) -> float:
        """The deterministic policy's mean return in the model from ``start_obs`` (``N x O``)."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


UPDATE_KEYS = ("critic_loss", "actor_loss", "alpha", "entropy", "q_mean")
PHASE_KEYS = ("env_s", "model_s", "update_s")
"""Seconds spent since the last metrics row acting and stepping the env, in the model phase
(fits, rollouts, diagnostics) and in policy updates (evaluation is excluded)."""


def evaluate(
    agent: PolicyOptimizer, env: Any, episodes: int, seeds: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``episodes`` of the deterministic policy, each episode reset with its seed, and
    the episodes' first observations (``episodes x O``)."""
    returns, starts = np.zeros(episodes), []
    for i in range(episodes):
        obs, _ = env.reset(seed=seeds[i])
        starts.append(np.asarray(obs, dtype=np.float32))
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(agent.act(obs, deterministic=True))
            returns[i] += float(r)
            done = bool(term or trunc)
    return returns, np.stack(starts)


def evaluation_row(returns: np.ndarray, env_step: int, episodes: int, elapsed: float
                   ) -> dict[str, Any]:
    """The ``evals.csv`` row of one evaluation's ``returns`` (shared by every loop); raises
    :class:`NonFiniteError` if a return is not finite."""
    if not np.all(np.isfinite(returns)):
        raise NonFiniteError(f"non-finite evaluation return at env step {env_step}")
    return {
        "env_step": env_step, "episodes": episodes, "return_mean": float(returns.mean()),
        "return_std": float(returns.std()), "return_min": float(returns.min()),
        "return_max": float(returns.max()), "wall_clock_s": elapsed,
    }


def eval_seeds(run_seed: int, env_step: int, episodes: int) -> list[int]:
    """Reset seeds of one evaluation: a function of (run seed, step) only, so resume-safe."""
    ss = np.random.SeedSequence([run_seed, 0xE7A1, env_step])
    return [int(s) for s in ss.generate_state(episodes)]


@dataclass
class _Episode:
    obs: Any
    ret: float = 0.0
    length: int = 0
    count: int = 0


@dataclass
class _State:
    """The loop's mutable state between steps (all of it goes into the checkpoint)."""

    ep: _Episode
    step: int = 0
    elapsed: float = 0.0
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(len(UPDATE_KEYS)))
    n_updates: int = 0
    recent_returns: list[float] = field(default_factory=list)
    last_eval: float = math.nan
    interval_start: int = 0
    """Env step at which the current timing interval started (steps/s after a resume)."""
    phase_s: list[float] = field(default_factory=lambda: [0.0] * len(PHASE_KEYS))


def run_policy_loop(
    c: Components, store: RunStore, progress: Callable[[str], None] = print
) -> None:
    """Train ``c.optimizer`` on ``c.env`` for the suite's budget, writing rows and checkpoints."""
    cfg: PolicyLoopConfig = c.loop_config
    entry, agent, env, model_phase = c.spec.env, c.optimizer, c.env, c.model_phase
    space: Any = env.action_space
    obs_dim = int(np.prod(env.observation_space.shape or (1,)))
    real = ReplayBuffer(obs_dim, int(space.shape[0]), min(cfg.buffer_capacity, entry.budget))
    st = _restore(c, store, real, progress)
    t0, t_interval = time.perf_counter() - st.elapsed, time.perf_counter()
    while st.step < entry.budget:
        # --- collect
        t_phase = time.perf_counter()
        if st.step < cfg.initial_random_steps:
            action = c.np_rng.uniform(space.low, space.high).astype(space.dtype)
        else:
            action = agent.act(st.ep.obs, deterministic=False)
        next_obs, r, term, trunc, _ = env.step(action)
        real.add_one(st.ep.obs, action, float(r), next_obs, bool(term), bool(trunc))
        st.ep.ret, st.ep.length, st.step = st.ep.ret + float(r), st.ep.length + 1, st.step + 1
        if term or trunc:
            st.recent_returns.append(st.ep.ret)
            st.ep = _Episode(obs=env.reset()[0], count=st.ep.count + 1)
        else:
            st.ep.obs = next_obs
        t_phase = _lap(st, 0, t_phase)
        # --- model phase (model-based recipes only)
        if model_phase is not None:
            model_phase.after_step(st.step, real, agent)
            t_phase = _lap(st, 1, t_phase)
        # --- update
        if st.step >= cfg.initial_random_steps and len(real) >= agent.config.batch_size:
            _update(c, st, real)
            _lap(st, 2, t_phase)
        # --- log, evaluate, checkpoint
        if st.step % cfg.log_every == 0 or st.step == entry.budget:
            now = time.perf_counter()
            _log(c, st, store, now - t_interval, now - t0, progress)
            t_interval = now
        if st.step % entry.eval_every == 0 or st.step == entry.budget:
            t_eval = time.perf_counter()
            st.elapsed = t_eval - t0
            _evaluate_and_checkpoint(c, st, store, real)
            t_interval += time.perf_counter() - t_eval  # steps/s counts training time only


def _lap(st: _State, phase: int, since: float) -> float:
    now = time.perf_counter()
    st.phase_s[phase] += now - since
    return now


def _update(c: Components, st: _State, real: ReplayBuffer) -> None:
    agent, opt_cfg = c.optimizer, c.optimizer.config
    for _ in range(opt_cfg.updates_per_step):
        if c.model_phase is None:
            batch = real.sample(opt_cfg.batch_size, c.torch_gen)
        else:
            batch = c.model_phase.sample(opt_cfg.batch_size, real, c.torch_gen)
        out = agent.update(batch)
        st.sums += torch.stack([out[k] for k in UPDATE_KEYS])
        st.n_updates += 1


def _log(c: Components, st: _State, store: RunStore, interval_s: float, wall_s: float,
         progress: Callable[[str], None]) -> None:
    means = (st.sums / st.n_updates).tolist() if st.n_updates else [math.nan] * len(UPDATE_KEYS)
    if st.n_updates and not all(math.isfinite(v) for v in means):
        bad = [k for k, v in zip(UPDATE_KEYS, means, strict=True) if not math.isfinite(v)]
        raise NonFiniteError(f"non-finite {', '.join(bad)} by env step {st.step}")
    sps = (st.step - st.interval_start) / max(interval_s, 1e-9)
    row: dict[str, Any] = {
        "env_step": st.step, "episodes": st.ep.count,
        "train_return": float(np.mean(st.recent_returns)) if st.recent_returns else math.nan,
        **dict(zip(UPDATE_KEYS, means, strict=True)), "updates": st.n_updates,
        "steps_per_s": sps, **dict(zip(PHASE_KEYS, st.phase_s, strict=True)),
        "wall_clock_s": wall_s,
    }
    if c.model_phase is not None:
        diag = c.model_phase.diagnostics(st.step, c.optimizer)
        row.update({k: diag.get(k, math.nan) for k in c.model_phase.metric_keys})
    store.append_metrics(row)
    progress(f"{c.spec.run_id}: step {st.step}/{c.spec.env.budget}  train return "
             f"{row['train_return']:.1f}  eval {st.last_eval:.1f}  {sps:.0f} steps/s")
    st.sums, st.n_updates, st.recent_returns = torch.zeros(len(UPDATE_KEYS)), 0, []
    st.interval_start, st.phase_s = st.step, [0.0] * len(PHASE_KEYS)


def _evaluate_and_checkpoint(c: Components, st: _State, store: RunStore, real: ReplayBuffer
                             ) -> None:
    entry = c.spec.env
    seeds = eval_seeds(c.spec.seed, st.step, entry.eval_episodes)
    rets, starts = evaluate(c.optimizer, c.eval_env, entry.eval_episodes, seeds)
    row = evaluation_row(rets, st.step, st.ep.count, st.elapsed)
    st.last_eval = row["return_mean"]
    if c.model_phase is not None:  # model exploitation: the same policy and starts, in the model
        horizon = getattr(c.eval_env.spec, "max_episode_steps", None) or 1000
        row["model_return_mean"] = c.model_phase.predicted_return(
            c.optimizer, torch.as_tensor(starts), horizon, torch.Generator().manual_seed(seeds[0]))
    store.append_eval(row)
    store.save_checkpoint({
        "step": st.step, "elapsed": st.elapsed, "last_eval": st.last_eval,
        "obs": np.asarray(st.ep.obs, dtype=np.float64).tolist(), "ep_return": st.ep.ret,
        "ep_length": st.ep.length, "episodes": st.ep.count, "env_state": get_env_state(c.env),
        "optimizer": c.optimizer.state_dict(), "buffer": real.state_dict(),
        "torch_gen": c.torch_gen.get_state(), "np_rng": c.np_rng.bit_generator.state,
        "sums": st.sums, "n_updates": st.n_updates, "recent_returns": st.recent_returns,
        "model_phase": c.model_phase.state_dict() if c.model_phase is not None else None,
    })


def _restore(c: Components, store: RunStore, real: ReplayBuffer,
             progress: Callable[[str], None]) -> _State:
    """A fresh state, or the state of the last checkpoint (rows past it are dropped)."""
    first_obs = c.env.reset(seed=c.env_seed)[0]
    ckpt = store.load_checkpoint()
    if ckpt is None:
        return _State(_Episode(first_obs))
    store.truncate_after(ckpt["step"])
    if ckpt["env_state"] is not None:
        set_env_state(c.env, ckpt["env_state"])
        ep = _Episode(np.asarray(ckpt["obs"], dtype=c.env.observation_space.dtype),
                      ckpt["ep_return"], ckpt["ep_length"], ckpt["episodes"])
    else:  # no exact state for this env: the interrupted episode is dropped, a new one starts
        ep = _Episode(first_obs, count=ckpt["episodes"])
        progress(f"{c.spec.run_id}: this env's state cannot be saved; resumed at an episode "
                 "start, so later numbers differ from an uninterrupted run")
    c.optimizer.load_state_dict(ckpt["optimizer"])
    real.load_state_dict(ckpt["buffer"])
    c.torch_gen.set_state(ckpt["torch_gen"])
    c.np_rng.bit_generator.state = ckpt["np_rng"]
    if c.model_phase is not None:
        c.model_phase.load_state_dict(ckpt["model_phase"])
    progress(f"{c.spec.run_id}: resumed at step {ckpt['step']}")
    return _State(ep, ckpt["step"], ckpt["elapsed"], ckpt["sums"], ckpt["n_updates"],
                  list(ckpt["recent_returns"]), ckpt["last_eval"], interval_start=ckpt["step"])
