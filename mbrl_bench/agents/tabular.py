"""Tabular Q-learning and the tabular model of Dyna-Q (Sutton & Barto 2018, sections 6.5, 8.2).

:class:`QLearning` holds ``Q`` (``S x A``, float64), acts ε-greedily and applies one-step
Q-learning updates ``Q(s,a) += α (r + γ (1 - terminated) max_a' Q(s',a') - Q(s,a))``: a
terminal next state is worth 0 whatever ``initial_q`` is, while a time-limit truncation is not
termination and bootstraps. Every random choice (exploration, ties between greedy actions)
draws from a :class:`numpy.random.Generator` passed in by the caller.

:class:`TabularModel` remembers, per visited ``(s, a)``, the outcomes ``(r, s', terminated)``
seen after it: only the last one (``outcomes = "last"``, the book's model for deterministic
tasks) or every distinct one with its count (``outcomes = "counts"``, sampled in proportion to
the counts, for stochastic tasks). On a deterministic task both hold a single outcome per pair
and sample it without drawing, so they give the same numbers. Planning picks a previously
observed state uniformly, then an action previously taken in it uniformly
(:meth:`TabularModel.sample_visited`), as in the book's tabular Dyna-Q.

Both save their state as tensors and plain lists, so checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

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


@dataclass(frozen=True)
class TabularModelConfig:
    """Settings of the tabular model."""

    outcomes: Literal["last", "counts"] = "last"
    """``last``: keep the last outcome seen per (s, a) (deterministic tasks); ``counts``: keep
    every distinct outcome with its count and sample in proportion (stochastic tasks)."""


class TabularModel:
    """A learned table of ``(s, a) -> (r, s', terminated)`` outcomes for Dyna planning."""

    _outcomes: dict[tuple[int, int], list[Outcome]]
    _counts: dict[tuple[int, int], list[int]]
    """Per observed (s, a), how often each of its outcomes was seen (parallel to _outcomes)."""
    _states: list[int]
    """Observed states, in the order first seen."""
    _actions: dict[int, list[int]]
    """Per observed state, the actions taken in it, in the order first taken."""

    def __init__(self, n_states: int, n_actions: int, config: TabularModelConfig) -> None:
        self.config = config
        self.n_states, self.n_actions = n_states, n_actions
        self._clear()

    def _clear(self) -> None:
        self._outcomes, self._counts, self._states, self._actions = {}, {}, [], {}

    def __len__(self) -> int:
        """Number of observed (s, a) pairs."""
        return len(self._outcomes)

    def observe(self, s: int, a: int, r: float, s2: int, terminated: bool, count: int = 1
                ) -> None:
        """Record one real transition (``count`` times; ``count`` > 1 is for restoring)."""
        s, a = int(s), int(a)
        key, outcome = (s, a), (float(r), int(s2), bool(terminated))
        if key not in self._outcomes:
            if s not in self._actions:
                self._states.append(s)
                self._actions[s] = []
            self._actions[s].append(a)
            self._outcomes[key], self._counts[key] = [], []
        outcomes, counts = self._outcomes[key], self._counts[key]
        if self.config.outcomes == "last":
            outcomes[:], counts[:] = [outcome], [1]
        elif outcome in outcomes:
            counts[outcomes.index(outcome)] += count
        else:
            outcomes.append(outcome)
            counts.append(count)

    def sample_visited(self, rng: np.random.Generator) -> tuple[int, int]:
        """A previously observed state uniformly, then an action taken in it uniformly."""
        if not self._states:
            raise ValueError("the model has observed no transition yet")
        s = self._states[int(rng.integers(len(self._states)))]
        actions = self._actions[s]
        return s, actions[int(rng.integers(len(actions)))] if len(actions) > 1 else actions[0]

    def sample(self, s: int, a: int, rng: np.random.Generator) -> Outcome:
        """An outcome of ``(s, a)``: the only one without drawing, else in proportion to counts."""
        outcomes = self._outcomes[(s, a)]
        if len(outcomes) == 1:
            return outcomes[0]
        counts = self._counts[(s, a)]
        k = int(rng.integers(sum(counts)))
        for outcome, n in zip(outcomes, counts, strict=True):
            if k < n:
                return outcome
            k -= n
        raise AssertionError("unreachable: k < sum(counts)")

    def counts(self, s: int, a: int) -> dict[Outcome, int]:
        """The outcomes recorded for ``(s, a)`` with their counts (empty if never observed)."""
        return dict(zip(self._outcomes.get((s, a), []), self._counts.get((s, a), []),
                        strict=True))

    def state_dict(self) -> dict[str, Any]:
        """Every (s, a, r, s', terminated, count) row, in the order that rebuilds the model."""
        rows = [[s, a, r, s2, t, n] for (s, a), outs in self._outcomes.items()
                for (r, s2, t), n in zip(outs, self._counts[(s, a)], strict=True)]
        return {"rows": rows, "outcomes": self.config.outcomes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["outcomes"] != self.config.outcomes:
            raise ValueError(f"checkpoint model keeps {state['outcomes']!r} outcomes, this one "
                             f"{self.config.outcomes!r}")
        self._clear()
        for s, a, r, s2, t, n in state["rows"]:
            self.observe(s, a, r, s2, t, count=n)
