"""The tabular loop (Dyna-Q, Sutton & Barto 2018, section 8.2), with exact resume.

Per real environment step, until the suite's budget of environment steps:

1. **act** ε-greedily in the current state (:class:`~mbrl_bench.agents.tabular.QLearning`);
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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mbrl_bench.agents.tabular import QLearning, TabularModel
from mbrl_bench.config import check
from mbrl_bench.envs.make import get_env_state, set_env_state
from mbrl_bench.loops.policy import eval_seeds, evaluation_row

if TYPE_CHECKING:
    from mbrl_bench.runner.compose import Components
    from mbrl_bench.runner.store import RunStore

EPISODE_COLUMNS = ("env_step", "episode", "return", "length", "greedy_return", "greedy_length")
"""Columns of the per-episode rows in ``metrics.csv``."""


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


def greedy_episode(agent: QLearning, env: Any, seed: int, max_steps: int) -> tuple[float, int]:
    """(return, length) of one episode of the greedy policy, reset with ``seed``, cut after
    ``max_steps`` steps; ties between greedy actions are broken by a generator from ``seed``."""
    rng = np.random.default_rng(seed)
    s, _ = env.reset(seed=seed)
    ret, length, done = 0.0, 0, False
    while not done and length < max_steps:
        s, r, term, trunc, _ = env.step(agent.greedy(s, rng))
        ret, length, done = ret + float(r), length + 1, bool(term or trunc)
    return ret, length


@dataclass
class _State:
    """The loop's mutable state between steps (all but ``rows``, which are written before
    each checkpoint, goes into the checkpoint)."""

    s: int
    step: int = 0
    episodes: int = 0
    ep_return: float = 0.0
    ep_length: int = 0
    elapsed: float = 0.0
    last_eval: float = math.nan
    rows: list[dict[str, float]] = field(default_factory=list)
    """Episode rows not yet written (written just before each checkpoint)."""


def run_tabular_loop(
    c: Components, store: RunStore, progress: Callable[[str], None] = print
) -> None:
    """Train ``c.optimizer`` with ``c.model`` on ``c.env`` for the suite's budget."""
    cfg: TabularLoopConfig = c.loop_config
    entry, agent, model, env, rng = c.spec.env, c.optimizer, c.model, c.env, c.np_rng
    st = _restore(c, store, progress)
    t0 = time.perf_counter() - st.elapsed
    while st.step < entry.budget:
        # --- act, learn from the real step, remember it
        a = agent.act(st.s, rng)
        s2, r, term, trunc, _ = env.step(a)
        agent.update(st.s, a, float(r), s2, bool(term))
        model.observe(st.s, a, float(r), s2, bool(term))
        # --- plan
        _plan(agent, model, cfg.planning_steps, rng)
        st.step, st.ep_return, st.ep_length = st.step + 1, st.ep_return + float(r), st.ep_length + 1
        if term or trunc:
            _end_episode(c, st, store)
            st.s = env.reset()[0]
        else:
            st.s = s2
        # --- evaluate, checkpoint
        if st.step % entry.eval_every == 0 or st.step == entry.budget:
            st.elapsed = time.perf_counter() - t0
            _evaluate_and_checkpoint(c, st, store)
            progress(f"{c.spec.run_id}: step {st.step}/{entry.budget}  episodes {st.episodes}"
                     f"  eval {st.last_eval:.2f}")


def _plan(agent: QLearning, model: TabularModel, n: int, rng: np.random.Generator) -> None:
    for _ in range(n):
        s, a = model.sample_visited(rng)
        r, s2, term = model.sample(s, a, rng)
        agent.update(s, a, r, s2, term)


def _end_episode(c: Components, st: _State, store: RunStore) -> None:
    st.episodes += 1
    greedy_ret, greedy_len = greedy_episode(
        c.optimizer, c.eval_env, _greedy_seed(c.spec.seed, st.episodes),
        c.loop_config.eval_max_steps)
    st.rows.append(dict(zip(EPISODE_COLUMNS, (
        st.step, st.episodes, st.ep_return, st.ep_length, greedy_ret, greedy_len), strict=True)))
    st.ep_return, st.ep_length = 0.0, 0


def _greedy_seed(run_seed: int, episode: int) -> int:
    """Seed of the greedy episode after training episode ``episode``: resume-safe."""
    return int(np.random.SeedSequence([run_seed, 0x6EED, episode]).generate_state(1)[0])


def _evaluate_and_checkpoint(c: Components, st: _State, store: RunStore) -> None:
    entry = c.spec.env
    store.extend_metrics(st.rows)
    st.rows = []
    rets = np.array([greedy_episode(c.optimizer, c.eval_env, seed, c.loop_config.eval_max_steps
                                    )[0]
                     for seed in eval_seeds(c.spec.seed, st.step, entry.eval_episodes)])
    row = evaluation_row(rets, st.step, st.episodes, st.elapsed)
    st.last_eval = row["return_mean"]
    store.append_eval(row)
    store.save_checkpoint({
        "step": st.step, "episodes": st.episodes, "s": int(st.s), "ep_return": st.ep_return,
        "ep_length": st.ep_length, "elapsed": st.elapsed, "last_eval": st.last_eval,
        "env_state": get_env_state(c.env), "optimizer": c.optimizer.state_dict(),
        "model": c.model.state_dict(), "np_rng": c.np_rng.bit_generator.state,
    })


def _restore(c: Components, store: RunStore, progress: Callable[[str], None]) -> _State:
    """A fresh state, or the state of the last checkpoint (rows past it are dropped)."""
    first_s = int(c.env.reset(seed=c.env_seed)[0])
    ckpt = store.load_checkpoint()
    if ckpt is None:
        return _State(first_s)
    store.truncate_after(ckpt["step"])
    st = _State(first_s, ckpt["step"], ckpt["episodes"], elapsed=ckpt["elapsed"],
                last_eval=ckpt["last_eval"])
    if ckpt["env_state"] is not None:
        set_env_state(c.env, ckpt["env_state"])
        st.s, st.ep_return, st.ep_length = ckpt["s"], ckpt["ep_return"], ckpt["ep_length"]
    else:  # no exact state for this env: the interrupted episode is dropped, a new one starts
        progress(f"{c.spec.run_id}: this env's state cannot be saved; resumed at an episode "
                 "start, so later numbers differ from an uninterrupted run")
    c.optimizer.load_state_dict(ckpt["optimizer"])
    c.model.load_state_dict(ckpt["model"])
    c.np_rng.bit_generator.state = ckpt["np_rng"]
    progress(f"{c.spec.run_id}: resumed at step {ckpt['step']}")
    return st
