"""The composition root: builds every part of one run from its resolved recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mbrl_bench.buffer import ReplayBuffer
from mbrl_bench.envs.make import check_spaces, make_env
from mbrl_bench.envs.rewards import reward_fn_for
from mbrl_bench.envs.termination import termination_fn_for
from mbrl_bench.errors import ConfigError
from mbrl_bench.loops.mpc import run_mpc_loop
from mbrl_bench.loops.policy import run_policy_loop
from mbrl_bench.loops.scaffold import CPU, Components, RunRecord
from mbrl_bench.loops.stages import run_stage_loop
from mbrl_bench.loops.tabular import run_tabular_loop
from mbrl_bench.models.model_env import ModelEnv
from mbrl_bench.models.trainer import ModelTrainer
from mbrl_bench.parts import LOOPS, MODELS, OPTIMIZERS, PLANNERS, ROLLOUTS
from mbrl_bench.planners.mpc import MPCAgent
from mbrl_bench.runner.spec import RunSpec
from mbrl_bench.spec import Recipe

LOOP_RUNNERS: dict[str, Callable[[Components, RunRecord, Callable[[str], None]], None]] = {
    "policy": run_policy_loop, "mpc": run_mpc_loop, "tabular": run_tabular_loop,
    "stages": run_stage_loop,
}
"""The function that runs each registered loop (``parts.LOOPS`` holds its contract)."""


def seeds_for(seed: int) -> tuple[int, int, int]:
    """(torch seed, numpy seed, env reset seed) derived from the run's seed."""
    a, b, c = np.random.SeedSequence([seed, 0x5EED]).generate_state(3)
    return int(a), int(b), int(c)


def compose(spec: RunSpec, device: torch.device = CPU) -> Components:
    """Build env, evaluation env, generators, buffers and the recipe's parts for ``spec``, in
    dependency order, every tensor part on ``device``.

    Parameters are initialised on the CPU from the run's generators and then moved, and every
    random number is drawn from the CPU generators, so a run draws the same numbers on every
    device."""
    recipe = spec.recipe
    loop_part = recipe.parts[0]
    loop = LOOPS.get(loop_part.name).factory
    env = make_env(spec.env.id, spec.env.kwargs)
    eval_env = make_env(spec.env.id, spec.env.kwargs)
    check_spaces(env, loop.space)
    torch_seed, np_seed, env_seed = seeds_for(spec.seed)
    torch_gen = torch.Generator().manual_seed(torch_seed)
    torch.manual_seed(torch_seed)  # parameter initialisation uses torch's default generator
    c = Components(spec.run_id, spec.seed, spec.env, loop_part.config, env, eval_env, env_seed,
                   torch_gen, np.random.default_rng(np_seed), device=device)
    if loop.space == "discrete":
        return _compose_tabular(c, env, recipe)
    space: Any = env.action_space
    obs_dim = int(np.prod(env.observation_space.shape or (1,)))
    act_dim = int(np.prod(space.shape or (1,)))
    c.buffer = ReplayBuffer(obs_dim, act_dim,
                            min(loop_part.config.buffer_capacity, spec.env.budget), device)
    if loop_part.name == "stages":
        return _compose_stages(c, spec, recipe, obs_dim, act_dim)
    opt, model, rollout = recipe.part("optimizer"), recipe.part("model"), recipe.part("rollout")
    # in dependency order: the model and its phase (which trains it and sees the policy only
    # through the calls the loop makes), then the optimizer, which may use the model itself
    model_env = None
    if model is not None and rollout is not None:
        net = MODELS.get(model.name).factory(obs_dim, act_dim, model.config, torch_gen, device)
        termination_fn = termination_fn_for(env)
        reward_fn = reward_fn_for(env) if rollout.config.known_reward else None
        rollout_cfg = rollout.config
        if rollout_cfg.gamma is None and opt is not None:  # the bounds use the optimizer's γ
            rollout_cfg = replace(rollout_cfg, gamma=opt.config.gamma)
        c.model_phase = ROLLOUTS.get(rollout.name).factory(
            net, termination_fn, rollout_cfg, obs_dim, act_dim,
            start_step=loop_part.config.initial_random_steps, generator=torch_gen,
            reward_fn=reward_fn)
        if opt is not None and getattr(opt.config, "value_expansion", 0) > 0:
            model_env = ModelEnv(net, termination_fn, reward_fn,
                                 propagation=rollout.config.propagation, generator=torch_gen)
    if opt is not None:
        phase = c.model_phase
        c.optimizer = OPTIMIZERS.get(opt.name).factory(
            obs_dim, act_dim, space.low, space.high, opt.config, torch_gen, model_env=model_env,
            model_ready=(lambda: phase.fitted_step > 0) if model_env is not None else None,
            device=device)
    planner = recipe.part("planner")
    if model is not None and planner is not None:
        cfg = loop_part.config
        c.model = MODELS.get(model.name).factory(obs_dim, act_dim, model.config, torch_gen,
                                                 device)
        c.trainer = ModelTrainer(c.model)
        c.controller = MPCAgent(
            c.model, termination_fn_for(env), reward_fn_for(env) if cfg.known_reward else None,
            PLANNERS.get(planner.name).factory(space.low, space.high, cfg.horizon,
                                               planner.config, device=device),
            cfg.propagation, cfg.particles, torch_gen)
    return c


def _compose_tabular(c: Components, env: gym.Env, recipe: Recipe) -> Components:
    """Tabular parts are sized by the numbers of states and actions; their model learns
    rewards and terminations from data, so no termination function is needed."""
    space: Any = env.observation_space
    n_states, n_actions = int(space.n), int(env.action_space.n)  # type: ignore[attr-defined]
    opt, model = recipe.part("optimizer"), recipe.part("model")
    if opt is not None:
        c.optimizer = OPTIMIZERS.get(opt.name).factory(n_states, n_actions, opt.config)
    if model is not None:
        c.model = MODELS.get(model.name).factory(n_states, n_actions, model.config)
    return c


def _compose_stages(c: Components, spec: RunSpec, recipe: Recipe, obs_dim: int, act_dim: int
                    ) -> Components:
    """The stage loop's parts: the model, its trainer and the full-horizon rollouts (which
    draw real initial states from resets of an env instance of their own), the optimizer, and
    a model buffer for an off-policy optimizer."""
    env, gen = c.env, c.torch_gen
    space: Any = env.action_space
    opt, model, rollout = recipe.part("optimizer"), recipe.part("model"), recipe.part("rollout")
    if model is not None and rollout is not None:
        c.model = MODELS.get(model.name).factory(obs_dim, act_dim, model.config, gen, c.device)
        c.trainer = ModelTrainer(c.model)
        cfg = rollout.config
        horizon = cfg.horizon or getattr(env.spec, "max_episode_steps", None)
        if horizon is None:
            raise ConfigError(recipe.source, "rollout.horizon",
                              f"needed: {spec.env.id} has no time limit to take it from")
        start_env = make_env(spec.env.id, spec.env.kwargs)

        def initial_states(n: int, generator: torch.Generator) -> torch.Tensor:
            seeds = torch.randint(2**31 - 1, (n,), generator=generator,
                                  device=generator.device).tolist()
            return torch.stack([torch.as_tensor(start_env.reset(seed=s)[0], dtype=torch.float32,
                                                device=c.device) for s in seeds])

        c.rollout = ROLLOUTS.get(rollout.name).factory(
            c.model, termination_fn_for(env), reward_fn_for(env) if cfg.known_reward else None,
            cfg, horizon, initial_states, gen)
    assert opt is not None  # the stage loop's contract requires one
    c.optimizer = OPTIMIZERS.get(opt.name).factory(
        obs_dim, act_dim, space.low, space.high, opt.config, gen, device=c.device)
    if c.rollout is not None and not c.optimizer.on_policy:
        loop = recipe.parts[0].config  # a recipe's first part is its loop
        per_iteration = c.rollout.n_trajectories * c.rollout.horizon
        c.model_buffer = ReplayBuffer(obs_dim, act_dim,
                                      loop.model_buffer_iterations * per_iteration, c.device)
    return c
