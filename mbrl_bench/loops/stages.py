"""The stage loop: collect a stage of real data, then train on it (SLBO, ME-TRPO, TRPO).

SLBO (Luo et al. 2019) and ME-TRPO (Kurutach et al. 2018) train the policy on long model
rollouts with an on-policy optimizer, in stages. Phases:

1. **collect** ``steps_per_stage`` real steps with the current stochastic policy (plus the
   configured exploration noise) into the real buffer; the policy does not change meanwhile;
2. at the end of a stage, with a model (``[model]`` and ``[rollout]``):
   a. **diagnose** the model on the stage's new data before fitting it (ε_m, compounding error);
   b. ``iterations_per_stage`` times: **fit** the model (one call of its trainer: e.g. SLBO's
      100 Adam steps of the multi-step loss), then ``policy_iterations`` times **roll out**
      full-horizon trajectories in the model and **update** the policy (one TRPO step on them;
      or, for an off-policy optimizer, add them to the model buffer and make
      ``offpolicy_updates`` updates);
   c. the policy shift over the stage's training (ε_π) on the stage's states;
   without a model (model-free TRPO): one **update** on the stage's real trajectories;
3. **log** a metrics row every ``log_every`` steps; **evaluate** the deterministic policy every
   ``eval_every`` steps, then checkpoint (exact resume, as every loop: ``loops/scaffold.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mbrl_bench.buffer import Batch, ReplayBuffer, Trajectories
from mbrl_bench.diagnostics import gaussian_kl, pinsker_tv
from mbrl_bench.errors import NonFiniteError
from mbrl_bench.loops.configs import StageLoopConfig
from mbrl_bench.loops.scaffold import Components, RunRecord, Scaffold, evaluate, evaluation_row
from mbrl_bench.rollouts.branched import compounding_error

MODEL_KEYS = (
    "model_fit_steps", "model_train_loss", "model_holdout_mse", "rollout_len_mean",
    "rollout_return_mean", "eps_m", "eps_pi_kl", "eps_pi", "eps_pi_max",
    *(f"compounding_mse_h{h}" for h in (1, 2, 5, 10)),
)
PHASE_KEYS = ("env_s", "model_s", "policy_s")
"""Seconds since the last metrics row acting in the env, fitting and rolling out the model,
and updating the policy (evaluation is excluded)."""


@dataclass
class _Own:
    """The loop's own state between steps (checkpointed with the scaffold's)."""

    keys: tuple[str, ...]
    stage: int = 0
    noise: np.ndarray | None = None
    stage_raw: list[np.ndarray] = field(default_factory=list)
    """The sampled (unclipped) actions of the stage so far (model-free on-policy updates)."""
    sums: dict[str, float] = field(default_factory=dict)
    n_updates: int = 0
    last: dict[str, float] = field(default_factory=dict)
    recent_returns: list[float] = field(default_factory=list)
    phase_s: list[float] = field(default_factory=lambda: [0.0] * len(PHASE_KEYS))

    def add(self, out: dict[str, Any]) -> None:
        for k in self.keys:
            self.sums[k] = self.sums.get(k, 0.0) + float(out[k])
        self.n_updates += 1

    def lap(self, phase: int, since: float) -> float:
        now = time.perf_counter()
        self.phase_s[phase] += now - since
        return now

    def state(self) -> dict[str, Any]:
        # tensors and plain lists only: checkpoints are loaded with weights_only=True
        raw = (torch.as_tensor(np.stack(self.stage_raw)) if self.stage_raw
               else torch.zeros(0))
        return {"stage": self.stage,
                "noise": None if self.noise is None else self.noise.tolist(),
                "stage_raw": raw,
                "sums": dict(self.sums), "n_updates": self.n_updates, "last": dict(self.last),
                "recent_returns": list(self.recent_returns)}

    @classmethod
    def restore(cls, keys: tuple[str, ...], ckpt: dict[str, Any]) -> _Own:
        noise = None if ckpt["noise"] is None else np.asarray(ckpt["noise"], dtype=np.float32)
        return cls(keys, ckpt["stage"], noise, [r.numpy() for r in ckpt["stage_raw"]],
                   dict(ckpt["sums"]), ckpt["n_updates"], dict(ckpt["last"]),
                   list(ckpt["recent_returns"]))


def run_stage_loop(
    c: Components, store: RunRecord, progress: Callable[[str], None] = print
) -> None:
    """Train ``c.optimizer`` on ``c.env`` in stages for the suite's budget, writing rows and
    checkpoints."""
    cfg: StageLoopConfig = c.loop_config
    agent, real = c.optimizer, c.buffer
    sc = Scaffold(c, store, progress, parts={
        "optimizer": agent, "buffer": real, "model": c.model, "trainer": c.trainer,
        "model_buffer": c.model_buffer})
    ckpt = sc.start()
    keys = tuple(agent.update_keys)
    own = _Own(keys) if ckpt is None else _Own.restore(keys, ckpt)
    space: Any = c.env.action_space
    half_range = (space.high - space.low) / 2.0
    while sc.step < sc.budget:
        # --- collect
        t = time.perf_counter()
        obs = sc.obs
        if sc.step < cfg.initial_random_steps:
            raw = c.np_rng.uniform(space.low, space.high).astype(np.float32)
            action = raw.astype(space.dtype)
        else:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=c.device)[None]
            raw = agent.sample_batch(obs_t)[0].cpu().numpy()
            action = (raw + _noise(cfg, own, c.np_rng, raw.shape) * half_range).astype(
                space.dtype)
            action = np.clip(action, space.low, space.high)
        next_obs, r, term, trunc = sc.env_step(action)
        real.add_one(obs, action, r, next_obs, term, trunc)
        if c.rollout is None and sc.step > cfg.initial_random_steps:
            own.stage_raw.append(raw)  # on-policy data only (model-free updates)
        finished = sc.end_step(term, trunc)
        if finished is not None:
            own.recent_returns.append(finished[0])
        own.lap(0, t)
        # --- train at the end of each stage
        if sc.step % cfg.steps_per_stage == 0:
            if c.rollout is not None:
                _train_on_model(c, cfg, own, real)
            else:
                _train_on_real(c, own, real)
            own.stage += 1
        # --- log, evaluate, checkpoint
        line = _log(c, sc, own, store) if sc.log_due(cfg.log_every) else None
        if sc.eval_due():
            sc.begin_eval()
            _evaluate(c, sc, own, store)
            sc.checkpoint(own.state())
            sc.end_eval()
        if line is not None:
            progress(line())


def _noise(cfg: StageLoopConfig, own: _Own, rng: np.random.Generator, shape: tuple[int, ...]
           ) -> np.ndarray:
    """The exploration noise of this step (in units of half the action range)."""
    if cfg.noise == "none":
        return np.zeros(shape, dtype=np.float32)
    eps = rng.standard_normal(shape).astype(np.float32)
    if cfg.noise == "gaussian":
        return cfg.noise_sigma * eps
    if own.noise is None:
        own.noise = np.zeros(shape, dtype=np.float32)
    own.noise = own.noise - cfg.noise_theta * own.noise + cfg.noise_sigma * eps
    return own.noise


def _ended(data: Batch, truncated: torch.Tensor) -> torch.Tensor:
    """``N``: 1 where a stored transition (``data``, its ``truncated`` flags ``N``) ends its
    trajectory (termination, time limit, or the newest row, whose episode is still running)."""
    ended = ((data.terminated + truncated) > 0).float()
    ended[-1] = 1.0
    return ended


def _train_on_real(c: Components, own: _Own, real: ReplayBuffer) -> None:
    """Model-free on-policy: one update on the stage's real trajectories (the steps the policy
    took; none if the whole stage was random), then the normaliser sees them, so the update's
    old policy is the one that collected them."""
    t = time.perf_counter()
    n = len(own.stage_raw)
    if n == 0:
        return
    data = real.all()
    ended = _ended(data, real.truncated())
    stage = Batch(*(x[-n:] for x in data))
    traj = Trajectories(stage.obs, torch.as_tensor(np.stack(own.stage_raw), device=c.device),
                        stage.rew,
                        stage.next_obs, stage.terminated, ended[-n:])
    own.add(c.optimizer.update(traj))
    c.optimizer.observe(stage.obs)
    own.stage_raw = []
    own.lap(2, t)


def _train_on_model(c: Components, cfg: StageLoopConfig, own: _Own, real: ReplayBuffer) -> None:
    """Diagnose, then alternate model fits and policy iterations on model rollouts."""
    agent, trainer, rollout = c.optimizer, c.trainer, c.rollout
    t = time.perf_counter()
    data, truncated = real.all(), real.truncated()
    ended = _ended(data, truncated)
    new = min(cfg.steps_per_stage, len(real))
    newest = Batch(*(x[-new:] for x in data))
    if own.stage > 0:  # the model has not seen the stage's data yet: out-of-sample errors
        ev = trainer.evaluate(newest.obs, newest.act, newest.next_obs, newest.rew)
        own.last["eps_m"] = float(ev["elite_mse"])
        errors = compounding_error(c.model, newest, truncated[-new:],
                                   rollout.config.compounding_horizon)
        for h in (1, 2, 5, 10):
            own.last[f"compounding_mse_h{h}"] = errors[h - 1] if h <= len(errors) else math.nan
    collect_policy = agent.policy_state()
    agent.observe(newest.obs)  # SLBO: the normalisers see each stage's new data once
    t = own.lap(1, t)
    for _ in range(cfg.iterations_per_stage):
        fit = trainer.fit(data.obs, data.act, data.next_obs, data.rew, c.torch_gen, ended=ended)
        own.last.update(model_fit_steps=fit["steps"], model_train_loss=fit["train_loss"],
                        model_holdout_mse=fit["holdout_mse"])
        t = own.lap(1, t)
        for _ in range(cfg.policy_iterations):
            traj, stats = rollout.rollout(agent, real)
            own.last.update(stats)
            t = own.lap(1, t)
            if agent.on_policy:
                own.add(agent.update(traj))
            else:
                c.model_buffer.add(traj.obs, agent.clip(traj.act), traj.rew, traj.next_obs,
                                   traj.terminated)
                for _ in range(cfg.offpolicy_updates):
                    own.add(agent.update(c.model_buffer.sample(agent.config.batch_size,
                                                               c.torch_gen)))
            t = own.lap(2, t)
    with torch.no_grad():
        mp, lp = agent.dist_params(newest.obs, collect_policy)
        mq, lq = agent.dist_params(newest.obs)
        kl = gaussian_kl(mp, lp, mq, lq)
        tv = pinsker_tv(kl)
    own.last.update(eps_pi_kl=float(kl.mean()), eps_pi=float(tv.mean()),
                    eps_pi_max=float(tv.max()))


def _log(c: Components, sc: Scaffold, own: _Own, store: RunRecord) -> Callable[[], str]:
    """Write the metrics row; return the progress line's maker."""
    means = {k: own.sums[k] / own.n_updates if own.n_updates else math.nan for k in own.keys}
    if own.n_updates and not all(math.isfinite(v) for v in means.values()):
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        raise NonFiniteError(f"non-finite {', '.join(bad)} by env step {sc.step}")
    sps, wall_s = sc.interval()
    row: dict[str, Any] = {
        "env_step": sc.step, "episodes": sc.episodes, "stage": own.stage,
        "train_return": float(np.mean(own.recent_returns)) if own.recent_returns else math.nan,
        **means, "updates": own.n_updates, "steps_per_s": sps,
        **dict(zip(PHASE_KEYS, own.phase_s, strict=True)), "wall_clock_s": wall_s,
        **{k: own.last.get(k, math.nan) for k in MODEL_KEYS},
    }
    store.append_metrics(row)
    own.sums, own.n_updates, own.recent_returns = {}, 0, []
    own.phase_s = [0.0] * len(PHASE_KEYS)
    return lambda: (f"{c.run_id}: step {row['env_step']}/{sc.budget} (stage {own.stage})  "
                    f"train return {row['train_return']:.1f}  eval {sc.last_eval:.1f}  "
                    f"{sps:.0f} steps/s")


def _evaluate(c: Components, sc: Scaffold, own: _Own, store: RunRecord) -> None:
    seeds = sc.eval_seeds(c.entry.eval_episodes)
    rets, starts = evaluate(c.optimizer, c.eval_env, c.entry.eval_episodes, seeds)
    row = evaluation_row(rets, sc.step, sc.episodes, sc.elapsed)
    sc.last_eval = row["return_mean"]
    if c.rollout is not None:  # model exploitation: the same policy and starts, in the model
        row["model_return_mean"] = math.nan
        if own.stage > 0:
            horizon = getattr(c.eval_env.spec, "max_episode_steps", None) or 1000
            row["model_return_mean"] = c.rollout.predicted_return(
                c.optimizer, torch.as_tensor(starts, device=c.device), horizon,
                torch.Generator().manual_seed(seeds[0]))
    store.append_eval(row)
