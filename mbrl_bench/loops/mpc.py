"""The MPC loop (PETS, Chua et al. 2018): random trial → (fit model, plan every step) → evaluate.

Phases per env step:

1. **fit** the model on all real data when due: at the end of the initial random steps, then
   every ``model_train_freq`` steps (:meth:`~mbrl_bench.models.trainer.ModelTrainer.fit`,
   warm-started);
2. **act**: uniform random actions for the first ``initial_random_steps`` (PETS: one trial of
   random actions; an evaluation before the first fit measures random actions too, never a
   plan through an unfitted model), then the :class:`~mbrl_bench.planners.mpc.MPCAgent`,
   which re-plans at every step with trajectory sampling through the model (known reward
   when the recipe says so);
3. **log** a metrics row every ``log_every`` steps; **evaluate** the controller every
   ``eval_every`` steps on a separate environment (evaluation plans too, with a generator of
   its own, so it costs planning time but never changes the training run), then checkpoint.

A checkpoint holds the model (normaliser and elites included) and its trainer, the real
buffer, the generators, the training env's exact state, the episode in progress, the
controller's warm start and the metric accumulators, so a resumed run produces the same rows
as an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mbrl_bench.buffer import ReplayBuffer
from mbrl_bench.loops.configs import MPCLoopConfig
from mbrl_bench.loops.scaffold import (
    Components,
    RunRecord,
    Scaffold,
    evaluation_row,
    run_episode,
)
from mbrl_bench.planners.mpc import MPCAgent

__all__ = ["FIT_KEYS", "MPCLoopConfig", "evaluate_mpc", "run_mpc_loop"]

FIT_KEYS = ("model_fit_epochs", "model_fit_s", "model_holdout_mse", "model_train_loss")


@dataclass
class _Own:
    """The loop's own state between steps (checkpointed with the scaffold's)."""

    recent_returns: list[float] = field(default_factory=list)
    plan_s: float = 0.0
    """Seconds spent planning since the last metrics row (``planned`` steps)."""
    planned: int = 0
    fit: dict[str, float] = field(default_factory=dict)
    """Statistics of the last model fit."""


def run_mpc_loop(c: Components, store: RunRecord, progress: Callable[[str], None] = print
                 ) -> None:
    """Run PETS-style MPC on ``c.env`` for the suite's budget, writing rows and checkpoints."""
    cfg: MPCLoopConfig = c.loop_config
    space: Any = c.env.action_space
    agent: MPCAgent = c.controller
    real: ReplayBuffer = c.buffer
    sc = Scaffold(c, store, progress, parts={"model": c.model, "model_trainer": c.trainer,
                                             "buffer": real, "agent": agent})
    ckpt = sc.start()
    own = _Own()
    if ckpt is not None:
        own = _Own(list(ckpt["recent_returns"]), fit=dict(ckpt["fit"]))
        if not sc.episode_restored:
            agent.reset()
    while sc.step < sc.budget:
        # --- fit the model when due
        since = sc.step - cfg.initial_random_steps
        if since >= 0 and since % cfg.model_train_freq == 0:
            _fit(c, own, real)
        # --- act
        obs = sc.obs
        if sc.step < cfg.initial_random_steps:
            action = c.np_rng.uniform(space.low, space.high).astype(space.dtype)
        else:
            t = time.perf_counter()
            action = agent.act(obs)
            own.plan_s, own.planned = own.plan_s + time.perf_counter() - t, own.planned + 1
        next_obs, r, term, trunc = sc.env_step(action)
        real.add_one(obs, action, r, next_obs, term, trunc)
        finished = sc.end_step(term, trunc)
        if finished is not None:
            own.recent_returns.append(finished[0])
            agent.reset()
        # --- log, evaluate, checkpoint
        line = _log(c, sc, own, store) if sc.log_due(cfg.log_every) else None
        if sc.eval_due():
            sc.begin_eval()
            _evaluate(c, sc, store, agent, fitted=bool(own.fit))
            sc.checkpoint({"recent_returns": own.recent_returns, "fit": own.fit})
            sc.end_eval()
        if line is not None:  # after the evaluation, so it shows this step's
            progress(line())


def _fit(c: Components, own: _Own, real: ReplayBuffer) -> None:
    data = real.all()
    out = c.trainer.fit(data.obs, data.act, data.next_obs, data.rew, c.torch_gen)
    own.fit = {"model_fit_epochs": out["epochs"], "model_fit_s": out["seconds"],
               "model_holdout_mse": out["holdout_mse"], "model_train_loss": out["train_loss"]}


def _log(c: Components, sc: Scaffold, own: _Own, store: RunRecord) -> Callable[[], str]:
    """Write the metrics row; return the progress line's maker (shows the latest evaluation)."""
    sps, wall_s = sc.interval()
    row: dict[str, Any] = {
        "env_step": sc.step, "episodes": sc.episodes,
        "train_return": float(np.mean(own.recent_returns)) if own.recent_returns else math.nan,
        **{k: own.fit.get(k, math.nan) for k in FIT_KEYS},
        "plan_s_per_step": own.plan_s / own.planned if own.planned else math.nan,
        "steps_per_s": sps, "wall_clock_s": wall_s,
    }
    store.append_metrics(row)
    own.recent_returns, own.plan_s, own.planned = [], 0.0, 0
    return lambda: (f"{c.run_id}: step {row['env_step']}/{sc.budget}  train return "
                    f"{row['train_return']:.1f}  eval {sc.last_eval:.1f}  "
                    f"plan {row['plan_s_per_step']:.3f} s/step")


def evaluate_mpc(agent: MPCAgent, env: Any, episodes: int, seeds: list[int]) -> np.ndarray:
    """Returns of ``episodes`` episodes of the controller, each reset with its seed."""
    returns = np.zeros(episodes)
    for i in range(episodes):
        agent.reset()
        returns[i] = run_episode(env, agent.act, seeds[i])[0]
    return returns


def _evaluate(c: Components, sc: Scaffold, store: RunRecord, agent: MPCAgent, fitted: bool
              ) -> None:
    """Evaluate a controller planning with its own generator (from the evaluation's seeds).

    Before the model's first fit there is nothing to plan with: the evaluation measures what
    the agent does in that phase, uniformly random actions (from the same seeds)."""
    entry = c.entry
    seeds = sc.eval_seeds(entry.eval_episodes + 1)
    if fitted:
        eval_agent = agent.with_generator(torch.Generator().manual_seed(seeds[-1]))
        rets = evaluate_mpc(eval_agent, c.eval_env, entry.eval_episodes, seeds[:-1])
    else:
        space: Any = c.eval_env.action_space
        rng = np.random.default_rng(seeds[-1])
        rets = np.array([run_episode(c.eval_env, lambda _: rng.uniform(
            space.low, space.high).astype(space.dtype), s)[0] for s in seeds[:-1]])
    row = evaluation_row(rets, sc.step, sc.episodes, sc.elapsed)
    sc.last_eval = row["return_mean"]
    store.append_eval(row)
