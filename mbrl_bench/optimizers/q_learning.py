"""Tabular Q-learning (Sutton & Barto 2018, section 6.5), the policy optimizer of Dyna-Q.

:class:`QLearning` holds ``Q`` (``S x A``, float64), acts ε-greedily and applies one-step
Q-learning updates ``Q(s,a) += α (r + γ (1 - terminated) max_a' Q(s',a') - Q(s,a))``: a
terminal next state is worth 0 whatever ``initial_q`` is, while a time-limit truncation is not
termination and bootstraps. Every random choice (exploration, ties between greedy actions)
draws from a :class:`numpy.random.Generator` passed in by the caller. Its state is a tensor, so
checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mbrl_bench.config import check
from mbrl_bench.errors import NonFiniteError

Outcome = tuple[float, int, bool]
"""What the model predicts for a state-action pair: (reward, next state, terminated)."""


@dataclass(frozen=True)
class QLearningConfig:
    """Settings of tabular Q-learning. Defaults are Sutton & Barto's Dyna maze (Example 8.1)."""

    alpha: float = 0.1
    """Step size α of every update (real and planned)."""
    gamma: float = 0.95
    """Discount factor γ."""
    epsilon: float = 0.1
    """Probability of a uniformly random action (ε-greedy behaviour); 0 acts greedily."""
    initial_q: float = 0.0
    """Initial value of every Q(s, a)."""

    def __post_init__(self) -> None:
        check(0 < self.alpha <= 1, "alpha", "a step size in (0, 1]")
        check(0 <= self.gamma <= 1, "gamma", "a discount in [0, 1]")
        check(0 <= self.epsilon <= 1, "epsilon", "a probability in [0, 1]")
        check(np.isfinite(self.initial_q), "initial_q", "a finite number")


class QLearning:
    """Tabular Q-learning over ``n_states`` x ``n_actions``."""

    def __init__(self, n_states: int, n_actions: int, config: QLearningConfig) -> None:
        if n_states <= 0 or n_actions <= 0:
            raise ValueError(f"need at least one state and one action, got {n_states}, "
                             f"{n_actions}")
        self.config = config
        self.q = np.full((n_states, n_actions), config.initial_q, dtype=np.float64)
        """``S x A`` action values."""

    def greedy(self, s: int, rng: np.random.Generator) -> int:
        """An action of largest ``Q(s, ·)``; ties are broken uniformly with ``rng``."""
        row = self.q[s].tolist()  # plain floats: ~10x faster than numpy for a few actions
        top = max(row)
        best = [a for a, v in enumerate(row) if v == top]
        return best[0] if len(best) == 1 else best[int(rng.integers(len(best)))]

    def act(self, s: int, rng: np.random.Generator) -> int:
        """ε-greedy action in ``s``: uniform over all actions with probability ε."""
        if rng.random() < self.config.epsilon:
            return int(rng.integers(self.q.shape[1]))
        return self.greedy(s, rng)

    def update(self, s: int, a: int, r: float, s2: int, terminated: bool) -> float:
        """One Q-learning update from ``(s, a, r, s2, terminated)``; returns the TD error."""
        cfg = self.config
        target = r if terminated else r + cfg.gamma * max(self.q[s2].tolist())
        td = target - float(self.q[s, a])
        value = float(self.q[s, a]) + cfg.alpha * td
        if not math.isfinite(value):
            raise NonFiniteError(f"Q({s}, {a}) became {value} (target {target})")
        self.q[s, a] = value
        return td

    def state_dict(self) -> dict[str, Any]:
        return {"q": torch.from_numpy(self.q.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        q = state["q"].numpy()
        if q.shape != self.q.shape:
            raise ValueError(f"checkpoint Q table has shape {q.shape}, expected {self.q.shape}")
        self.q[...] = q
