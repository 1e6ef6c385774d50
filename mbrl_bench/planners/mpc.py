"""Model-predictive control with trajectory sampling: the PETS controller.

At every step :class:`MPCAgent` asks its planner for the action sequence ``H x A`` that
maximises :func:`~mbrl_bench.planners.trajectory.trajectory_returns` from the current
observation and executes the first action (re-planning every step). The warm start lives
here, not in the planner: the next search starts from the last solution shifted by one step,
its last step at the middle of the action bounds (PETS); at an episode start
(:meth:`MPCAgent.reset`) it starts from the middle everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mbrl_bench.models.ensemble import ProbabilisticEnsemble
from mbrl_bench.models.model_env import ModelEnv, Propagation, RewardFn, TerminationFn
from mbrl_bench.planners.sampling import Planner
from mbrl_bench.planners.trajectory import planning_chunk_rows, trajectory_returns


class MPCAgent:
    """PETS's controller: plan with ``planner`` on the TS objective, act, shift the plan.

    ``particles`` particles per candidate, propagated by ``propagation`` (PETS: TS-∞, i.e.
    ``fixed_member``); ``reward_fn`` (or None: the model's predicted
    reward) and ``termination_fn`` act on batches; all sampling uses ``generator``. The model's
    ``predict_chunk_rows`` is set to the planning chunk size (``trajectory.planning_chunk_rows``).
    """

    def __init__(
        self, model: ProbabilisticEnsemble, termination_fn: TerminationFn,
        reward_fn: RewardFn | None, planner: Planner, propagation: Propagation, particles: int,
        generator: torch.Generator,
    ) -> None:
        self.planner = planner
        self.particles = particles
        self.generator = generator
        self._args = (model, termination_fn, reward_fn, planner, propagation, particles)
        model.predict_chunk_rows = planning_chunk_rows(model.device, model.config.precision)
        self.model_env = ModelEnv(model, termination_fn, reward_fn, propagation,
                                  generator=generator)
        self.middle = (planner.low + planner.high) / 2  # H x A
        self.warm_start: torch.Tensor | None = None
        """The next search's start ``H x A`` (None: the middle of the bounds)."""

    def with_generator(self, generator: torch.Generator) -> MPCAgent:
        """A fresh controller on the same model and planner drawing from ``generator`` (an
        evaluation's own, so evaluating never changes the training's random numbers)."""
        return MPCAgent(*self._args, generator=generator)

    def reset(self) -> None:
        """A new episode: forget the last plan."""
        self.warm_start = None

    def act(self, obs: Any) -> np.ndarray:
        """The first action of the best plan from ``obs`` (``O``), as float32 ``A``."""
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.middle.device)
        with torch.inference_mode():
            plan = self.planner.optimize(
                lambda actions: trajectory_returns(self.model_env, obs_t, actions,
                                                   self.particles),
                self.warm_start, self.generator)
        self.warm_start = torch.cat([plan[1:], self.middle[-1:]]).clone()
        return plan[0].cpu().numpy().astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"warm_start": self.warm_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warm_start = state["warm_start"]
