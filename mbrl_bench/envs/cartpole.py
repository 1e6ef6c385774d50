"""Cart-pole balancing with a continuous force: PETS's cheap task (gymnasium has no such env).

The classic cart-pole of Barto, Sutton and Anderson (1983), with the equations of motion as
corrected by Florian (2005) and explicit Euler steps of 0.02 s: a 1 kg cart on a track carries a
0.1 kg pole of half-length 0.5 m. The action ``a in [-1, 1]`` pushes the cart with force
``10 a`` N. Observation ``[x, x_dot, theta, theta_dot]`` (float32); an episode starts with every
state variable uniform in ``[-0.05, 0.05]``, terminates when ``|x| > 2.4`` or
``|theta| > 12°`` and is truncated after 200 steps. Reward 1 per step, the terminating step
included, so an episode's return is its length: 200 is the maximum; random actions score
about 30. Registered as ``mbrl_bench/ContinuousCartPole-v0``.

The termination test reads the float32 observation (not the float64 state), so the batched
rule below decides exactly as the environment does.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

GRAVITY = 9.8
CART_MASS = 1.0
POLE_MASS = 0.1
HALF_LENGTH = 0.5
FORCE = 10.0
DT = 0.02
X_LIMIT = 2.4
THETA_LIMIT = 12 * 2 * math.pi / 360
EPISODE_STEPS = 200


def _terminal(x: Any, theta: Any) -> Any:
    """Outside the track or the angle range (False for NaN); works on floats and tensors."""
    return (x < -X_LIMIT) | (x > X_LIMIT) | (theta < -THETA_LIMIT) | (theta > THETA_LIMIT)


class ContinuousCartPoleEnv(gym.Env[np.ndarray, np.ndarray]):
    """Cart-pole balancing with a continuous force (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self) -> None:
        high = np.array([2 * X_LIMIT, np.inf, 2 * THETA_LIMIT, np.inf], dtype=np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.state = np.zeros(4, dtype=np.float64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-0.05, 0.05, size=4)
        return self.state.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        x, x_dot, theta, theta_dot = (float(v) for v in self.state)
        sin, cos = math.sin(theta), math.cos(theta)
        total_mass = CART_MASS + POLE_MASS
        # Florian (2005), eqs. 23-24 with no friction
        tmp = (FORCE * a + POLE_MASS * HALF_LENGTH * theta_dot**2 * sin) / total_mass
        theta_acc = (GRAVITY * sin - cos * tmp) / (
            HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * cos**2 / total_mass))
        x_acc = tmp - POLE_MASS * HALF_LENGTH * theta_acc * cos / total_mass
        self.state = np.array([x + DT * x_dot, x_dot + DT * x_acc,
                               theta + DT * theta_dot, theta_dot + DT * theta_acc])
        obs = self.state.astype(np.float32)
        terminated = bool(_terminal(float(obs[0]), float(obs[2])))
        return obs, 1.0, terminated, False, {}


def cartpole_termination(env: gym.Env) -> Any:
    """Termination of :class:`ContinuousCartPoleEnv` on batches (exact: the env decides on
    the same float32 observation). ``(B x 4, B x 1, B x 4) -> bool B``."""

    def fn(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x 4, B x 1, B x 4) -> bool B."""
        return _terminal(next_obs[..., 0].double(), next_obs[..., 2].double())

    return fn


def cartpole_reward(env: gym.Env) -> Any:
    """Reward of :class:`ContinuousCartPoleEnv` on batches: 1 for every step taken.
    ``(B x 4, B x 1, B x 4) -> B``."""

    def fn(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x 4, B x 1, B x 4) -> B of ones."""
        return torch.ones(next_obs.shape[:-1], dtype=next_obs.dtype, device=next_obs.device)

    return fn
