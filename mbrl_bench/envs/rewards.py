"""Known reward functions on batched tensors, for planners that do not learn the reward.

PETS (Chua et al. 2018) plans with the task's reward function where it is known. Each rule here
is the environment's own reward rewritten in terms of ``(obs, action, next_obs)``, with
parameters read from the env instance, and tested against the env's reward on real transitions.
Only tasks whose reward the observation determines are here: HalfCheetah's reward uses the
change of the x position, which its observation omits, so a recipe must learn it there.

Interface (as for termination functions)::

    fn = reward_fn_for(env)              # env made with gymnasium.make
    r = fn(obs, action, next_obs)        # (B x O, B x A, B x O) -> float B

An env with no registered rule is an :class:`~mbrl_bench.errors.UnsupportedEnvError`.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import torch

from mbrl_bench.envs.cartpole import cartpole_reward
from mbrl_bench.envs.point_mass import point_mass_reward
from mbrl_bench.envs.termination import _env_id, _param, inverted_pendulum_termination
from mbrl_bench.errors import UnsupportedEnvError

RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(obs B x O, action B x A, next_obs B x O) -> reward, float tensor of shape B."""

RewardFactory = Callable[[gym.Env], RewardFn]

REWARDS: dict[str, tuple[str, RewardFactory]] = {}
"""Full gymnasium env id -> (one-line description, factory)."""


def register_reward(env_id: str, description: str, factory: RewardFactory) -> None:
    """Register ``factory`` as the reward rule of ``env_id``; :class:`ValueError` if taken."""
    if env_id in REWARDS:
        raise ValueError(f"a reward function for {env_id!r} is already registered")
    REWARDS[env_id] = (description, factory)


def reward_fn_for(env: gym.Env) -> RewardFn:
    """The batched reward function of ``env`` (keyed by its id); :class:`UnsupportedEnvError`
    naming the supported ids when there is none."""
    env_id = _env_id(env)
    if env_id is None or env_id not in REWARDS:
        raise UnsupportedEnvError(
            f"no known reward function for environment {env_id!r} (the recipe asks for "
            f"known_reward); supported: {', '.join(sorted(REWARDS))}")
    return REWARDS[env_id][1](env)


def pendulum_reward(env: gym.Env) -> RewardFn:
    """Pendulum-v1: ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` of the state *before* the step,
    with ``theta = atan2(sin, cos)`` in ``[-pi, pi]`` from ``obs = [cos, sin, theta_dot]`` and
    ``u`` the action clipped to ``±max_torque``. ``(B x 3, B x 1, B x 3) -> B``. Exact up to the
    float32 rounding of the observation."""
    max_torque = float(_param(env, "max_torque"))

    def pendulum(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x 3, B x 1, B x 3) -> B."""
        theta = torch.atan2(obs[..., 1], obs[..., 0])
        u = act[..., 0].clamp(-max_torque, max_torque)
        return -(theta**2 + 0.1 * obs[..., 2] ** 2 + 0.001 * u**2)

    return pendulum


def inverted_pendulum_reward(env: gym.Env) -> RewardFn:
    """InvertedPendulum-v5: 1 unless the step terminates (then 0), with the env's termination
    rule on ``next_obs``. ``(B x 4, B x 1, B x 4) -> B``. Exact."""
    terminated = inverted_pendulum_termination(env)

    def inverted_pendulum(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
                          ) -> torch.Tensor:
        """(B x 4, B x 1, B x 4) -> B."""
        return (~terminated(obs, act, next_obs)).to(next_obs.dtype)

    return inverted_pendulum


def _point_mass(env: gym.Env) -> RewardFn:
    return point_mass_reward


for _id, _description, _factory in (
    ("Pendulum-v1", "-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2) before the step", pendulum_reward),
    ("InvertedPendulum-v5", "1 unless the step terminates", inverted_pendulum_reward),
    ("mbrl_bench/PointMass-v0", "-|position| - 0.01 |action|^2", _point_mass),
    ("mbrl_bench/ContinuousCartPole-v0", "1 per step", cartpole_reward),
):
    register_reward(_id, _description, _factory)
