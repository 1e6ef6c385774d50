"""The tabular loop (Dyna-Q, Sutton & Barto 2018, section 8.2), with exact resume.

Per real environment step, until the suite's budget of environment steps:

1. **act** ε-greedily in the current state (:class:`~mbrl_bench.optimizers.q_learning.QLearning`);
2. **learn**: one Q-learning update from the real transition;
3. **model**: record the transition in the tabular model;
4. **plan**: ``planning_steps`` (n) Q-learning updates on transitions the model samples from
   previously observed state-action pairs (n = 0 is plain Q-learning);
5. at the end of each training episode, **measure the greedy policy** for one episode on the
   evaluation env and keep a row for ``metrics.csv``: ``env_step, episode, return, length,
   greedy_return, greedy_length`` (the training episode's return and length, the quantity
   Sutton & Barto plot, and the greedy policy's right after it);
6. every ``eval_every`` steps, write the episode rows kept since the last evaluation (one
   flush), **evaluate** the greedy policy on the evaluation env (``evals.csv``, as the policy
   loop writes it, so ``bench table`` works), then checkpoint.

Budget: environment steps, like the other loops; an episode still running when the budget
ends gets no row. A greedy episode is cut after ``eval_max_steps`` steps (a greedy policy can
walk in circles forever on a task without a time limit); it then counts with the return and
length it had. Greedy ties are broken by a generator seeded from (run seed, step or episode),
so evaluations never touch the training generator and resume exactly.

The checkpoint holds the Q table, the model, the generator, the training env's exact state
and the episode in progress, so a resumed run writes the same rows as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mbrl_bench.loops.configs import TabularLoopConfig
from mbrl_bench.loops.scaffold import (
    Components,
    RunRecord,
    Scaffold,
    evaluation_row,
    run_episode,
)
from mbrl_bench.models.tabular import TabularModel
from mbrl_bench.optimizers.q_learning import QLearning

__all__ = ["EPISODE_COLUMNS", "TabularLoopConfig", "greedy_episode", "run_tabular_loop"]

EPISODE_COLUMNS = ("env_step", "episode", "return", "length", "greedy_return", "greedy_length")
"""Columns of the per-episode rows in ``metrics.csv``."""


def greedy_episode(agent: QLearning, env: Any, seed: int, max_steps: int) -> tuple[float, int]:
    """(return, length) of one episode of the greedy policy, reset with ``seed``, cut after
    ``max_steps`` steps; ties between greedy actions are broken by a generator from ``seed``."""
    rng = np.random.default_rng(seed)
    ret, length, _ = run_episode(env, lambda s: agent.greedy(s, rng), seed, max_steps)
    return ret, length


def run_tabular_loop(
    c: Components, store: RunRecord, progress: Callable[[str], None] = print
) -> None:
    """Train ``c.optimizer`` with ``c.model`` on ``c.env`` for the suite's budget."""
    cfg: TabularLoopConfig = c.loop_config
    agent, model, rng = c.optimizer, c.model, c.np_rng
    sc = Scaffold(c, store, progress, parts={"optimizer": agent, "model": model})
    sc.start()
    rows: list[dict[str, Any]] = []
    """Episode rows not yet written (written just before each checkpoint)."""
    while sc.step < sc.budget:
        # --- act, learn from the real step, remember it
        s = sc.obs
        a = agent.act(s, rng)
        s2, r, term, trunc = sc.env_step(a)
        agent.update(s, a, r, s2, term)
        model.observe(s, a, r, s2, term)
        # --- plan
        _plan(agent, model, cfg.planning_steps, rng)
        finished = sc.end_step(term, trunc)
        if finished is not None:
            rows.append(_episode_row(c, sc, *finished))
        # --- evaluate, checkpoint
        if sc.eval_due():
            sc.begin_eval()
            store.extend_metrics(rows)
            rows = []
            _evaluate(c, sc, store)
            sc.checkpoint({})
            progress(f"{c.run_id}: step {sc.step}/{sc.budget}  episodes {sc.episodes}"
                     f"  eval {sc.last_eval:.2f}")


def _plan(agent: QLearning, model: TabularModel, n: int, rng: np.random.Generator) -> None:
    for _ in range(n):
        s, a = model.sample_visited(rng)
        r, s2, term = model.sample(s, a, rng)
        agent.update(s, a, r, s2, term)


def _episode_row(c: Components, sc: Scaffold, ret: float, length: int) -> dict[str, Any]:
    """The metrics row of the training episode that just ended, with a greedy episode."""
    greedy_ret, greedy_len = greedy_episode(
        c.optimizer, c.eval_env, _greedy_seed(c.seed, sc.episodes), c.loop_config.eval_max_steps)
    return dict(zip(EPISODE_COLUMNS, (sc.step, sc.episodes, ret, length, greedy_ret,
                                      greedy_len), strict=True))


def _greedy_seed(run_seed: int, episode: int) -> int:
    """Seed of the greedy episode after training episode ``episode``: resume-safe."""
    return int(np.random.SeedSequence([run_seed, 0x6EED, episode]).generate_state(1)[0])


def _evaluate(c: Components, sc: Scaffold, store: RunRecord) -> None:
    entry = c.entry
    rets = np.array([greedy_episode(c.optimizer, c.eval_env, seed, c.loop_config.eval_max_steps
                                    )[0] for seed in sc.eval_seeds(entry.eval_episodes)])
    row = evaluation_row(rets, sc.step, sc.episodes, sc.elapsed)
    sc.last_eval = row["return_mean"]
    store.append_eval(row)
