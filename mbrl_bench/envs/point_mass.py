"""A tiny deterministic continuous-control task of our own, for fast tests.

A point mass on a plane is pushed by a bounded force towards the origin. Observation
``[x, y, vx, vy]``, action ``[fx, fy] in [-1, 1]^2``; reward ``-|p| - 0.01 |a|^2``; an episode
is truncated after 50 steps and terminates when the mass leaves the box ``|x|, |y| <= 2``.
A random policy scores about -50; a good one about -10. Registered as
``mbrl_bench/PointMass-v0``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

DT = 0.1
BOX = 2.0
MAX_SPEED = 2.0


class PointMassEnv(gym.Env[np.ndarray, np.ndarray]):
    """Point mass reaching the origin. Deterministic given its reset seed."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.state = np.zeros(4, dtype=np.float64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        pos = self.np_random.uniform(-1.0, 1.0, size=2)
        self.state = np.concatenate([pos, np.zeros(2)])
        return self.state.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        pos, vel = self.state[:2], self.state[2:]
        vel = np.clip(0.9 * vel + a * DT * 5.0, -MAX_SPEED, MAX_SPEED)
        pos = pos + vel * DT
        self.state = np.concatenate([pos, vel])
        reward = -float(np.linalg.norm(pos)) - 0.01 * float(a @ a)
        terminated = bool(np.any(np.abs(pos) > BOX))
        return self.state.astype(np.float32), reward, terminated, False, {}


def point_mass_termination(env: gym.Env) -> Any:
    """Termination of :class:`PointMassEnv` on batches: leaving the box."""

    def fn(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x 4, B x 2, B x 4) -> bool B."""
        return (next_obs[:, :2].abs() > BOX).any(dim=-1)

    return fn


def point_mass_reward(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Reward of :class:`PointMassEnv` on batches: (B x 4, B x 2, B x 4) -> B."""
    a = act.clamp(-1.0, 1.0)
    return -next_obs[:, :2].norm(dim=-1) - 0.01 * (a * a).sum(dim=-1)
