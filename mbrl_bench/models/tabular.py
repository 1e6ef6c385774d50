"""The tabular model of Dyna-Q (Sutton & Barto 2018, section 8.2).

:class:`TabularModel` remembers, per visited ``(s, a)``, the outcomes ``(r, s', terminated)``
seen after it: only the last one (``outcomes = "last"``, the book's model for deterministic
tasks) or every distinct one with its count (``outcomes = "counts"``, sampled in proportion to
the counts, for stochastic tasks). On a deterministic task both hold a single outcome per pair
and sample it without drawing, so they give the same numbers. Planning picks a previously
observed state uniformly, then an action previously taken in it uniformly
(:meth:`TabularModel.sample_visited`), as in the book's tabular Dyna-Q. Its state is plain lists
and tensors, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Outcome = tuple[float, int, bool]
"""What the model predicts for a state-action pair: (reward, next state, terminated)."""


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
