"""The registries of parts, and the registration of every part the package ships.

A recipe section ``[kind]`` names an entry of the registry for that kind (``PART_KINDS``). The
``loop`` section is always first and decides which other parts a recipe must or may have.
Termination functions are registered per environment id in :mod:`mbrl_bench.envs.termination`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mbrl_bench.agents.sac import SAC, SACConfig
from mbrl_bench.envs.make import SpaceKind
from mbrl_bench.errors import ConfigError
from mbrl_bench.registry import Registry

if TYPE_CHECKING:
    from mbrl_bench.spec import Recipe

PART_KINDS = ("loop", "optimizer", "model", "rollout", "planner")


@dataclass(frozen=True)
class LoopDef:
    """A training loop: the function that runs it and the parts a recipe must/may give it."""

    run: Callable[..., None]
    space: SpaceKind
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    def check_recipe(self, recipe: Recipe) -> None:
        kinds = {p.kind for p in recipe.parts}
        loop = recipe.parts[0].name
        for kind in self.required:
            if kind not in kinds:
                raise ConfigError(recipe.source, kind, f"missing; the {loop!r} loop needs a {kind}")
        for kind in kinds - {"loop", *self.required, *self.optional}:
            raise ConfigError(recipe.source, kind, f"the {loop!r} loop takes no {kind}")


OptimizerFactory = Callable[..., Any]

LOOPS: Registry[LoopDef] = Registry("loop")
OPTIMIZERS: Registry[OptimizerFactory] = Registry("policy optimizer")
MODELS: Registry[Callable[..., Any]] = Registry("dynamics model")
ROLLOUTS: Registry[Callable[..., Any]] = Registry("rollout scheme")
PLANNERS: Registry[Callable[..., Any]] = Registry("planner")

_BY_KIND: dict[str, Registry[Any]] = {
    "loop": LOOPS, "optimizer": OPTIMIZERS, "model": MODELS, "rollout": ROLLOUTS,
    "planner": PLANNERS,
}


def registry_for(kind: str) -> Registry[Any]:
    return _BY_KIND[kind]


def _register_all() -> None:
    from mbrl_bench.loops.policy import PolicyLoopConfig, run_policy_loop

    OPTIMIZERS.add(
        "sac", "Soft actor-critic: twin Q, target nets, automatic entropy, update-to-data ratio",
        SACConfig, SAC,
    )
    LOOPS.add(
        "policy",
        "Policy loop: collect, (fit model, roll out), update the policy, evaluate",
        PolicyLoopConfig,
        LoopDef(run_policy_loop, "box", required=("optimizer",), optional=("model", "rollout")),
    )


_register_all()
