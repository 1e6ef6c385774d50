"""What every training loop needs, written once: the loop's inputs, its clock and episode, the
log/evaluate/checkpoint schedule, checkpoint contents and exact resume, and running an episode.

A loop file keeps only its algorithm's phases::

    sc = Scaffold(c, store, progress, parts={"optimizer": agent, "buffer": real})
    own = sc.start()                        # fresh, or restored from the last checkpoint
    while sc.step < sc.budget:
        obs = sc.obs
        next_obs, r, term, trunc = sc.env_step(action)
        ...                                 # the loop's own phases
        sc.end_step(term, trunc)            # episode end: reset the env
        if sc.log_due(): ...
        if sc.eval_due():
            sc.begin_eval(); ...; sc.checkpoint(own_state); sc.end_eval()

A checkpoint holds the scaffold's state (step, episode in progress, the training env's exact
state, the run's generators, elapsed time, last evaluation), every part's ``state_dict`` under
its name, and the loop's own state; it is written after each evaluation, and a resumed run
drops the rows written after it, so it writes the same rows as an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from mbrl_bench.envs.make import get_env_state, set_env_state
from mbrl_bench.errors import NonFiniteError
from mbrl_bench.models.trainer import legacy_trainer_state
from mbrl_bench.spec import EnvEntry


class RunRecord(Protocol):
    """Where a loop writes (the runner's run store)."""

    def append_eval(self, row: dict[str, Any]) -> None: ...
    def append_metrics(self, row: dict[str, Any]) -> None: ...
    def extend_metrics(self, rows: list[dict[str, Any]]) -> None: ...
    def save_checkpoint(self, state: dict[str, Any]) -> None: ...
    def load_checkpoint(self, device: torch.device | str = "cpu") -> dict[str, Any] | None: ...
    def truncate_after(self, env_step: int) -> None: ...


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


CPU = torch.device("cpu")


@dataclass
class Components:
    """Everything a loop needs, built by the composition root (``runner/compose.py``) in
    dependency order and handed in. Parts a loop does not use are None."""

    run_id: str
    seed: int
    entry: EnvEntry
    """The suite's entry: budget, evaluation schedule and episodes."""
    loop_config: Any
    env: gym.Env
    eval_env: gym.Env
    env_seed: int
    """Seed of the training env's first reset."""
    torch_gen: torch.Generator
    np_rng: np.random.Generator
    buffer: Any = None
    """The real replay buffer (box loops)."""
    optimizer: Any = None
    model_phase: Any = None
    model: Any = None
    """A model the loop uses directly (the tabular loop's, or the MPC loop's; model-based
    policy loops reach theirs through ``model_phase``)."""
    trainer: Any = None
    """The trainer that fits ``model`` (the MPC loop's)."""
    controller: Any = None
    """The MPC loop's planning agent."""
    rollout: Any = None
    """The stage loop's full-horizon rollout scheme (model-based stage recipes)."""
    model_buffer: Any = None
    """The stage loop's buffer of model transitions for an off-policy optimizer."""
    device: torch.device = CPU
    """Where every part lives and computes (``--device``)."""


def eval_seeds(run_seed: int, env_step: int, episodes: int) -> list[int]:
    """Reset seeds of one evaluation: a function of (run seed, step) only, so resume-safe."""
    ss = np.random.SeedSequence([run_seed, 0xE7A1, env_step])
    return [int(s) for s in ss.generate_state(episodes)]


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


def run_episode(env: Any, act: Callable[[Any], Any], seed: int, max_steps: int | None = None
                ) -> tuple[float, int, Any]:
    """(return, length, first observation) of one episode of ``act`` on ``env`` reset with
    ``seed``, cut after ``max_steps`` steps if given."""
    obs, _ = env.reset(seed=seed)
    first = obs
    ret, length, done = 0.0, 0, False
    while not done and (max_steps is None or length < max_steps):
        obs, r, term, trunc, _ = env.step(act(obs))
        ret, length, done = ret + float(r), length + 1, bool(term or trunc)
    return ret, length, first


def evaluate(
    agent: Any, env: Any, episodes: int, seeds: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Returns of ``episodes`` episodes of ``agent.act(obs, deterministic=True)``, each episode
    reset with its seed, and the episodes' first observations (``episodes x O``)."""
    runs = [run_episode(env, lambda o: agent.act(o, deterministic=True), s)
            for s in seeds[:episodes]]
    return (np.array([r for r, _, _ in runs]),
            np.stack([np.asarray(o, dtype=np.float32) for _, _, o in runs]))


class Scaffold:
    """A loop's clock, episode in progress, schedule, checkpoint and resume (module docstring).

    ``parts``: the loop's stateful parts by checkpoint key (None entries are skipped).
    """

    def __init__(self, c: Components, store: RunRecord, progress: Callable[[str], None],
                 parts: dict[str, Stateful | None]) -> None:
        self.c, self.store, self.progress, self.parts = c, store, progress, parts
        self.budget = c.entry.budget
        self.step = self.episodes = self.ep_length = self.interval_start = 0
        self.ep_return = self.elapsed = 0.0
        self.last_eval = math.nan
        self.obs: Any = None
        self.episode_restored = False
        """True after a resume that continued the training episode in progress."""
        self._discrete = isinstance(c.env.observation_space, gym.spaces.Discrete)
        self._t0 = self._t_interval = self._t_eval = 0.0

    # ------------------------------------------------------------------ start and resume
    def start(self) -> dict[str, Any] | None:
        """Reset the training env with the run's seed; on a checkpoint, drop the rows written
        after it and restore everything from it. Returns the checkpoint (the loop reads its
        own state from it), or None for a fresh run."""
        c = self.c
        self.obs = c.env.reset(seed=c.env_seed)[0]
        ckpt = self.store.load_checkpoint(self.c.device)
        if ckpt is not None:
            self._restore(ckpt)
        self._t0 = time.perf_counter() - self.elapsed
        self._t_interval = time.perf_counter()
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        c = self.c
        self.store.truncate_after(ckpt["step"])
        self.step, self.episodes = ckpt["step"], ckpt["episodes"]
        self.elapsed, self.last_eval = ckpt["elapsed"], ckpt["last_eval"]
        self.interval_start = self.step
        if ckpt["env_state"] is not None:
            set_env_state(c.env, ckpt["env_state"])
            obs = ckpt["obs"] if "obs" in ckpt else ckpt["s"]
            self.obs = int(obs) if self._discrete else np.asarray(
                obs, dtype=c.env.observation_space.dtype)
            self.ep_return, self.ep_length = ckpt["ep_return"], ckpt.get("ep_length", 0)
            self.episode_restored = True
        else:  # no exact state for this env: the interrupted episode is dropped, a new one starts
            self.progress(f"{c.run_id}: this env's state cannot be saved; resumed at an "
                          "episode start, so later numbers differ from an uninterrupted run")
        for key, part in self.parts.items():
            if part is not None:
                part.load_state_dict(legacy_trainer_state(ckpt) if key == "model_trainer"
                                     else ckpt[key])
        if "torch_gen" in ckpt:
            c.torch_gen.set_state(ckpt["torch_gen"])
        c.np_rng.bit_generator.state = ckpt["np_rng"]
        self.progress(f"{c.run_id}: resumed at step {ckpt['step']}")

    # ------------------------------------------------------------------ stepping
    def env_step(self, action: Any) -> tuple[Any, float, bool, bool]:
        """Step the training env: ``(next_obs, reward, terminated, truncated)``; counts the
        step and the episode's return and length (:meth:`end_step` ends the episode)."""
        next_obs, r, term, trunc, _ = self.c.env.step(action)
        self._next_obs = next_obs
        self.step, self.ep_return, self.ep_length = (
            self.step + 1, self.ep_return + float(r), self.ep_length + 1)
        return next_obs, float(r), bool(term), bool(trunc)

    def end_step(self, terminated: bool, truncated: bool) -> tuple[float, int] | None:
        """After the loop's phases of this step: at an episode end, reset the training env and
        return the finished episode's (return, length); else None."""
        if not (terminated or truncated):
            self.obs = self._next_obs
            return None
        finished = (self.ep_return, self.ep_length)
        self.episodes += 1
        self.obs, self.ep_return, self.ep_length = self.c.env.reset()[0], 0.0, 0
        return finished

    # ------------------------------------------------------------------ schedule
    def log_due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.budget

    def eval_due(self) -> bool:
        return self.step % self.c.entry.eval_every == 0 or self.step == self.budget

    def interval(self) -> tuple[float, float]:
        """(steps/s since the last call, wall-clock seconds of the run so far); evaluation
        time is not counted in steps/s."""
        now = time.perf_counter()
        sps = (self.step - self.interval_start) / max(now - self._t_interval, 1e-9)
        self._t_interval, self.interval_start = now, self.step
        return sps, now - self._t0

    def begin_eval(self) -> None:
        self._t_eval = time.perf_counter()
        self.elapsed = self._t_eval - self._t0

    def end_eval(self) -> None:
        self._t_interval += time.perf_counter() - self._t_eval

    def eval_seeds(self, episodes: int) -> list[int]:
        return eval_seeds(self.c.seed, self.step, episodes)

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self, own: dict[str, Any]) -> None:
        """Write the checkpoint: the scaffold's state, every part's, and the loop's ``own``."""
        c = self.c
        obs = int(self.obs) if self._discrete else np.asarray(
            self.obs, dtype=np.float64).tolist()
        self.store.save_checkpoint({
            "step": self.step, "elapsed": self.elapsed, "last_eval": self.last_eval,
            "obs": obs, "ep_return": self.ep_return, "ep_length": self.ep_length,
            "episodes": self.episodes, "env_state": get_env_state(c.env),
            "torch_gen": c.torch_gen.get_state(), "np_rng": c.np_rng.bit_generator.state,
            **{k: p.state_dict() if p is not None else None for k, p in self.parts.items()},
            **own,
        })
