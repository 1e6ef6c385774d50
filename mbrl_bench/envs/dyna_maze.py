"""The Dyna maze of Sutton & Barto (2018), Example 8.1 / Figure 8.2, as a gymnasium env.

A 6 x 9 grid (``#`` walls, ``S`` start at row 2, column 0, ``G`` goal at row 0, column 8)::

    .......#G
    ..#....#.
    S.#....#.
    ..#......
    .....#...
    .........

Actions 0 up, 1 right, 2 down, 3 left (CliffWalking's order). A move into a wall or off the
grid leaves the agent where it is. Reward +1 on entering the goal, which terminates the
episode, and 0 otherwise; the book sets no time limit, and neither does the registration.
Observation: ``row * 9 + column`` (walls are states that are never visited). The shortest
path from start to goal takes 14 steps. Deterministic. Registered as
``mbrl_bench/DynaMaze-v0``; the current cell is ``s``, like gymnasium's toy-text tasks, so
:func:`~mbrl_bench.envs.make.get_env_state` saves it the same way.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

MAZE = (
    ".......#G",
    "..#....#.",
    "S.#....#.",
    "..#......",
    ".....#...",
    ".........",
)
ROWS, COLS = len(MAZE), len(MAZE[0])
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
"""(Δrow, Δcolumn) of actions up, right, down, left."""


def _find(ch: str) -> int:
    [cell] = [r * COLS + c for r, row in enumerate(MAZE) for c, x in enumerate(row) if x == ch]
    return cell


START, GOAL = _find("S"), _find("G")


class DynaMazeEnv(gym.Env[int, int]):
    """Sutton & Barto's Dyna maze (Example 8.1)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self) -> None:
        # gymnasium types Discrete spaces as spaces of numpy integers; observations are ints
        self.observation_space: Any = gym.spaces.Discrete(ROWS * COLS)
        self.action_space: Any = gym.spaces.Discrete(len(MOVES))
        self.s = START

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.s = START
        return self.s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}; expected 0..{len(MOVES) - 1}")
        dr, dc = MOVES[int(action)]
        r, c = divmod(self.s, COLS)
        r2, c2 = r + dr, c + dc
        if 0 <= r2 < ROWS and 0 <= c2 < COLS and MAZE[r2][c2] != "#":
            self.s = r2 * COLS + c2
        at_goal = self.s == GOAL
        return self.s, float(at_goal), at_goal, False, {}

