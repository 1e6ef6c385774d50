"""Fixed-capacity replay buffer with vectorised sampling from an explicit generator."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from mbrl_bench.devices import randint


class Batch(NamedTuple):
    """A batch of transitions. Shapes: obs ``B x O``, act ``B x A``, rew ``B``, next_obs ``B x O``,
    terminated ``B`` (float 0/1: the next state is terminal, so targets must not bootstrap).

    Time-limit truncation is not part of a batch: a truncated transition bootstraps like any other.
    """

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """Ring buffer of transitions in one preallocated ``capacity x (2O + A + 3)`` float32 table.

    Row layout: ``[obs | act | rew | next_obs | terminated | truncated]``. One row gather per
    sample; the :class:`Batch` fields are views into the gathered rows. ``terminated`` and
    ``truncated`` are stored separately; only ``terminated`` stops bootstrapping.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int,
                 device: str | torch.device = "cpu") -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        o, a = obs_dim, act_dim
        self._cols: dict[str, Any] = {
            "obs": slice(0, o), "act": slice(o, o + a), "rew": o + a,
            "next_obs": slice(o + a + 1, 2 * o + a + 1), "terminated": 2 * o + a + 1,
            "truncated": 2 * o + a + 2,
        }
        self.data = torch.zeros(capacity, 2 * o + a + 3, device=device)
        self.size = 0
        self.pos = 0

    def __len__(self) -> int:
        return self.size

    def _rows(self, obs: Any, act: Any, rew: Any, next_obs: Any, term: Any, trunc: Any) -> Any:
        n, dev = obs.shape[0], self.data.device
        return torch.cat(
            [
                torch.as_tensor(obs, dtype=torch.float32, device=dev).reshape(n, -1),
                torch.as_tensor(act, dtype=torch.float32, device=dev).reshape(n, -1),
                torch.as_tensor(rew, dtype=torch.float32, device=dev).reshape(n, 1),
                torch.as_tensor(next_obs, dtype=torch.float32, device=dev).reshape(n, -1),
                torch.as_tensor(term, dtype=torch.float32, device=dev).reshape(n, 1),
                torch.as_tensor(trunc, dtype=torch.float32, device=dev).reshape(n, 1),
            ],
            dim=1,
        )

    def add(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor | None = None,
    ) -> None:
        """Add ``N`` transitions: obs ``N x O``, act ``N x A``, rew/terminated/truncated ``N``."""
        n = obs.shape[0]
        if n == 0:
            return
        trunc = torch.zeros(n, device=self.data.device) if truncated is None else truncated
        rows = self._rows(obs, act, rew, next_obs, terminated, trunc)[-self.capacity :]
        n = rows.shape[0]
        end = self.pos + n
        if end <= self.capacity:
            self.data[self.pos : end] = rows
        else:
            first = self.capacity - self.pos
            self.data[self.pos :] = rows[:first]
            self.data[: n - first] = rows[first:]
        self.pos = end % self.capacity
        self.size = min(self.size + n, self.capacity)

    def add_one(
        self, obs: Any, act: Any, rew: float, next_obs: Any, terminated: bool, truncated: bool
    ) -> None:
        """Add one transition (arrays of shape ``O`` / ``A``): the hot path of a real env step."""
        row, dev = self.data[self.pos], self.data.device
        c = self._cols
        row[c["obs"]] = torch.as_tensor(obs, device=dev)
        row[c["act"]] = torch.as_tensor(act, device=dev)
        row[c["next_obs"]] = torch.as_tensor(next_obs, device=dev)
        row[c["rew"]] = rew
        row[c["terminated"]] = float(terminated)
        row[c["truncated"]] = float(truncated)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def _batch(self, rows: torch.Tensor) -> Batch:
        c = self._cols
        return Batch(rows[:, c["obs"]], rows[:, c["act"]], rows[:, c["rew"]],
                     rows[:, c["next_obs"]], rows[:, c["terminated"]])

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty buffer")
        return self._batch(self.data[randint(self.size, (batch_size,), generator,
                                             self.data.device)])

    def get(self, idx: torch.Tensor) -> Batch:
        """Transitions at positions ``idx`` (``B``)."""
        return self._batch(self.data[idx])

    def all(self) -> Batch:
        """Every stored transition, oldest first."""
        return self._batch(self._ordered())

    def truncated(self) -> torch.Tensor:
        """Truncation flags ``N`` of every stored transition, oldest first."""
        return self._ordered()[:, self._cols["truncated"]]

    def _ordered(self) -> torch.Tensor:
        if self.size < self.capacity:
            return self.data[: self.size]
        return torch.roll(self.data, -self.pos, dims=0)

    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer, for checkpoints."""
        # a slice would save its whole storage; a full buffer is saved as it is (no copy)
        data = self.data if self.size == self.capacity else self.data[: self.size].clone()
        return {"data": data, "pos": self.pos, "size": self.size, "capacity": self.capacity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a buffer saved by :meth:`state_dict`, of this capacity or a smaller one (a
        run continued at a larger budget, whose buffer is sized to its budget: its rows are
        placed oldest first, as a larger buffer would hold them)."""
        data, size, capacity = state["data"], state["size"], state["capacity"]
        if capacity > self.capacity or data.shape[1] != self.data.shape[1]:
            raise ValueError("checkpoint buffer does not match this buffer's capacity or layout")
        if capacity == self.capacity:
            self.data[:size] = data
            self.size, self.pos = size, state["pos"]
            return
        self.data[:size] = data if size < capacity else torch.roll(data, -state["pos"], dims=0)
        self.size, self.pos = size, size % self.capacity


class Trajectories(NamedTuple):
    """Transitions of whole trajectories, each trajectory's steps consecutive and in time order
    (what an on-policy optimizer such as TRPO learns from). Shapes: obs ``M x O``, act ``M x A``
    (the action the policy sampled, before any clipping to the env's bounds), rew ``M``,
    next_obs ``M x O``, terminated ``M`` (float 0/1: the next state is terminal, no bootstrap),
    ended ``M`` (float 0/1: the trajectory ends after this step, by termination, time limit or
    the end of the batch; a non-terminal end bootstraps from ``next_obs``).
    """

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    ended: torch.Tensor
