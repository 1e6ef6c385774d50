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
from typing import Any, Protocol

import numpy as np
import torch

from mbrl_bench.buffer import Batch, ReplayBuffer
from mbrl_bench.errors import NonFiniteError
from mbrl_bench.loops.configs import PolicyLoopConfig
from mbrl_bench.loops.scaffold import (
    Components,
    RunRecord,
    Scaffold,
    eval_seeds,
    evaluate,
    evaluation_row,
)

__all__ = [
    "PHASE_KEYS",
    "UPDATE_KEYS",
    "Own",
    "PolicyLoopConfig",
    "collect",
    "eval_seeds",
    "evaluate",
    "evaluate_policy",
    "lap",
    "log_row",
    "run_policy_loop",
]


class PolicyOptimizer(Protocol):
    """What the loop needs of a policy optimizer (e.g. :class:`~mbrl_bench.optimizers.sac.SAC`)."""

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

    def after_step(self, step: int, real: ReplayBuffer, agent: Any) -> None:
        """Called after every real step: fit the model and generate model data when due."""

    def sample(self, batch_size: int, real: ReplayBuffer, generator: torch.Generator) -> Batch:
        """A policy-update batch (e.g. a mix of real and model transitions)."""

    def diagnostics(self, step: int, agent: Any) -> dict[str, float]:
        """Diagnostics for the metrics row at ``step``."""

    def predicted_return(self, agent: Any, start_obs: torch.Tensor, horizon: int,
                         generator: torch.Generator) -> float:
        """The deterministic policy's mean return in the model from ``start_obs`` (``N x O``)."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


UPDATE_KEYS = ("critic_loss", "actor_loss", "alpha", "entropy", "q_mean")
PHASE_KEYS = ("env_s", "model_s", "update_s")
"""Seconds spent since the last metrics row acting and stepping the env, in the model phase
(fits, rollouts, diagnostics) and in policy updates (evaluation is excluded)."""


@dataclass
class Own:
    """The loop's own state between steps (checkpointed with the scaffold's)."""

    sums: torch.Tensor
    """Sums of the update diagnostics since the last row (on the run's device)."""
    n_updates: int = 0
    recent_returns: list[float] = field(default_factory=list)
    phase_s: list[float] = field(default_factory=lambda: [0.0] * len(PHASE_KEYS))

    @classmethod
    def restored(cls, c: Components, ckpt: dict[str, Any] | None) -> Own:
        """Fresh, or as the checkpoint ``ckpt`` holds it."""
        if ckpt is None:
            return cls(torch.zeros(len(UPDATE_KEYS), device=c.device))
        return cls(ckpt["sums"].to(c.device), ckpt["n_updates"], list(ckpt["recent_returns"]))

    def state(self) -> dict[str, Any]:
        """What the checkpoint holds of it."""
        return {"sums": self.sums, "n_updates": self.n_updates,
                "recent_returns": self.recent_returns}


def run_policy_loop(
    c: Components, store: RunRecord, progress: Callable[[str], None] = print
) -> None:
    """Train ``c.optimizer`` on ``c.env`` for the suite's budget, writing rows and checkpoints."""
    cfg: PolicyLoopConfig = c.loop_config
    agent, model_phase, real = c.optimizer, c.model_phase, c.buffer
    sc = Scaffold(c, store, progress, parts={"optimizer": agent, "buffer": real,
                                             "model_phase": model_phase})
    own = Own.restored(c, sc.start())
    while sc.step < sc.budget:
        # --- collect
        t_phase = time.perf_counter()
        collect(c, sc, own, cfg.initial_random_steps)
        t_phase = lap(own, 0, t_phase)
        # --- model phase (model-based recipes only)
        if model_phase is not None:
            model_phase.after_step(sc.step, real, agent)
            t_phase = lap(own, 1, t_phase)
        # --- update
        if sc.step >= cfg.initial_random_steps and len(real) >= agent.config.batch_size:
            _update(c, own, real)
            lap(own, 2, t_phase)
        # --- log, evaluate, checkpoint
        line = log_row(c, sc, own, store) if sc.log_due(cfg.log_every) else None
        if sc.eval_due():
            sc.begin_eval()
            evaluate_policy(c, sc, store)
            sc.checkpoint(own.state())
            sc.end_eval()
        if line is not None:  # after the evaluation, so it shows this step's
            progress(line())


def collect(c: Components, sc: Scaffold, own: Own, random_steps: int) -> None:
    """One real step into ``c.buffer``: a uniform random action for the first
    ``random_steps`` steps, then the optimizer's stochastic policy."""
    space: Any = c.env.action_space
    obs = sc.obs
    if sc.step < random_steps:
        action = c.np_rng.uniform(space.low, space.high).astype(space.dtype)
    else:
        action = c.optimizer.act(obs, deterministic=False)
    next_obs, r, term, trunc = sc.env_step(action)
    c.buffer.add_one(obs, action, r, next_obs, term, trunc)
    finished = sc.end_step(term, trunc)
    if finished is not None:
        own.recent_returns.append(finished[0])


def lap(own: Own, phase: int, since: float) -> float:
    now = time.perf_counter()
    own.phase_s[phase] += now - since
    return now


def _update(c: Components, own: Own, real: ReplayBuffer) -> None:
    agent, opt_cfg = c.optimizer, c.optimizer.config
    for _ in range(opt_cfg.updates_per_step):
        if c.model_phase is None:
            batch = real.sample(opt_cfg.batch_size, c.torch_gen)
        else:
            batch = c.model_phase.sample(opt_cfg.batch_size, real, c.torch_gen)
        out = agent.update(batch)
        own.sums += torch.stack([out[k] for k in UPDATE_KEYS])
        own.n_updates += 1


def log_row(c: Components, sc: Scaffold, own: Own, store: RunRecord) -> Callable[[], str]:
    """Write the metrics row; return the progress line's maker (shows the latest evaluation)."""
    means = (own.sums / own.n_updates).tolist() if own.n_updates else [math.nan] * len(
        UPDATE_KEYS)
    if own.n_updates and not all(math.isfinite(v) for v in means):
        bad = [k for k, v in zip(UPDATE_KEYS, means, strict=True) if not math.isfinite(v)]
        raise NonFiniteError(f"non-finite {', '.join(bad)} by env step {sc.step}")
    sps, wall_s = sc.interval()
    row: dict[str, Any] = {
        "env_step": sc.step, "episodes": sc.episodes,
        "train_return": float(np.mean(own.recent_returns)) if own.recent_returns else math.nan,
        **dict(zip(UPDATE_KEYS, means, strict=True)), "updates": own.n_updates,
        "steps_per_s": sps, **dict(zip(PHASE_KEYS, own.phase_s, strict=True)),
        "wall_clock_s": wall_s,
    }
    if c.model_phase is not None:
        diag = c.model_phase.diagnostics(sc.step, c.optimizer)
        row.update({k: diag.get(k, math.nan) for k in c.model_phase.metric_keys})
    store.append_metrics(row)
    own.sums, own.n_updates, own.recent_returns = (
        torch.zeros(len(UPDATE_KEYS), device=c.device), 0, [])
    own.phase_s = [0.0] * len(PHASE_KEYS)
    return lambda: (f"{c.run_id}: step {row['env_step']}/{sc.budget}  train return "
                    f"{row['train_return']:.1f}  eval {sc.last_eval:.1f}  {sps:.0f} steps/s")


def evaluate_policy(c: Components, sc: Scaffold, store: RunRecord) -> None:
    entry = c.entry
    seeds = sc.eval_seeds(entry.eval_episodes)
    rets, starts = evaluate(c.optimizer, c.eval_env, entry.eval_episodes, seeds)
    row = evaluation_row(rets, sc.step, sc.episodes, sc.elapsed)
    sc.last_eval = row["return_mean"]
    if c.model_phase is not None:  # model exploitation: the same policy and starts, in the model
        horizon = getattr(c.eval_env.spec, "max_episode_steps", None) or 1000
        row["model_return_mean"] = c.model_phase.predicted_return(
            c.optimizer, torch.as_tensor(starts, device=c.device), horizon,
            torch.Generator().manual_seed(seeds[0]))
    store.append_eval(row)
