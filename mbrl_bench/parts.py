"""The registries of parts, and the registration of every part the package ships.

A recipe section ``[kind]`` names an entry of the registry for that kind (``PART_KINDS``). The
``loop`` section is always first and decides which other parts a recipe must or may have.
Termination functions are registered per environment id in :mod:`mbrl_bench.envs.termination`.

Layering: this module sits below the loops and the runner. A loop's entry holds its settings
class and its contract (:class:`LoopDef`: the parts it needs, the spaces it runs on); the
function that runs it is bound by the composition root (``runner/compose.py``), so loading a
recipe never imports a loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mbrl_bench.envs.make import SpaceKind
from mbrl_bench.errors import ConfigError
from mbrl_bench.optimizers.sac import SAC, SACConfig
from mbrl_bench.registry import Registry


class Recipe(Protocol):
    """What a loop contract checks of a resolved recipe (:class:`mbrl_bench.spec.Recipe`)."""

    @property
    def source(self) -> str: ...
    @property
    def parts(self) -> tuple[Any, ...]: ...
    def part(self, kind: str) -> Any: ...

PART_KINDS = ("loop", "optimizer", "model", "rollout", "planner")


@dataclass(frozen=True)
class LoopDef:
    """A training loop's contract: the spaces it runs on and the parts a recipe must/may give
    it."""

    space: SpaceKind
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    together: tuple[tuple[str, ...], ...] = ()
    """Groups of optional parts that come all or none (e.g. a model and its rollout scheme)."""
    accepts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(kind, names): the only registered parts of that kind this loop can use (e.g. the
    tabular loop takes the tabular model, not a neural one); kinds not listed take any."""
    needs_termination: bool = True
    """Whether a recipe of this loop with a model, rollout or planner needs the environment's
    termination function (a tabular model learns terminations from data instead)."""
    check_env: Callable[[Any, Any], None] | None = None
    """``(recipe, env)``: raises if the env lacks something the recipe's settings need
    (called before any run starts)."""
    check_parts: Callable[[Recipe], None] | None = None
    """Raises :class:`ConfigError` if the recipe's part settings do not fit together."""

    def check_recipe(self, recipe: Recipe) -> None:
        kinds = {p.kind for p in recipe.parts}
        loop = recipe.parts[0].name
        for kind in self.required:
            if kind not in kinds:
                raise ConfigError(recipe.source, kind, f"missing; the {loop!r} loop needs a {kind}")
        for kind in kinds - {"loop", *self.required, *self.optional}:
            raise ConfigError(recipe.source, kind, f"the {loop!r} loop takes no {kind}")
        for kind, names in self.accepts:
            part = recipe.part(kind)
            if part is not None and part.name not in names:
                raise ConfigError(recipe.source, f"{kind}.name", f"the {loop!r} loop takes "
                                  f"{' or '.join(repr(n) for n in names)}, not {part.name!r}")
        for group in self.together:
            present = [k for k in group if k in kinds]
            if present and len(present) != len(group):
                missing = [k for k in group if k not in kinds]
                raise ConfigError(recipe.source, missing[0],
                                  f"missing; a {present[0]} needs a {' and a '.join(missing)}")
        if self.check_parts is not None:
            self.check_parts(recipe)


def _check_value_expansion(recipe: Recipe) -> None:
    """SAC's value expansion needs a model to expand through."""
    opt = recipe.part("optimizer")
    if opt is not None and getattr(opt.config, "value_expansion", 0) > 0 \
            and recipe.part("model") is None:
        raise ConfigError(recipe.source, "optimizer.value_expansion",
                          "needs a model: a recipe with a [model] and a [rollout]")


def _check_stage_parts(recipe: Recipe) -> None:
    """An off-policy optimizer in the stage loop learns from model rollouts only; a model-free
    one learns from the policy's own actions (no exploration noise)."""
    opt = recipe.part("optimizer")
    if opt is not None and opt.name == "sac" and recipe.part("model") is None:
        raise ConfigError(recipe.source, "optimizer.name", "'sac' in the 'stages' loop needs a "
                          "[model] and a [rollout] (model-free SAC is the 'policy' loop)")
    if recipe.part("model") is None and recipe.parts[0].config.noise != "none":
        raise ConfigError(recipe.source, "loop.noise", "\"none\" without a model: a model-free "
                          "on-policy update needs the policy's own actions")


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


NEURAL_MODELS = ("pe", "deterministic")
"""The models the continuous-control loops can use (not the tabular one)."""


def check_known_reward(recipe: Recipe, env: Any) -> None:
    """Raise :class:`~mbrl_bench.errors.UnsupportedEnvError` if the recipe's loop (MPC) or
    rollout scheme (MBPO) wants a known reward that ``env`` does not have."""
    wants = [p for p in recipe.parts if getattr(p.config, "known_reward", False)]
    if wants:
        from mbrl_bench.envs.rewards import reward_fn_for

        reward_fn_for(env)


def _register_all() -> None:
    from dataclasses import replace

    from mbrl_bench.loops.configs import (
        MPCLoopConfig,
        PolicyLoopConfig,
        StageLoopConfig,
        TabularLoopConfig,
    )
    from mbrl_bench.models.ensemble import ProbabilisticEnsemble, ProbabilisticEnsembleConfig
    from mbrl_bench.models.tabular import TabularModel, TabularModelConfig
    from mbrl_bench.optimizers.q_learning import QLearning, QLearningConfig
    from mbrl_bench.optimizers.trpo import TRPO, TRPOConfig
    from mbrl_bench.planners.sampling import (
        CEM,
        MPPI,
        CEMConfig,
        MPPIConfig,
        RandomShooting,
        RandomShootingConfig,
    )
    from mbrl_bench.rollouts.branched import BranchedModelData, BranchedRolloutConfig
    from mbrl_bench.rollouts.full_horizon import FullHorizonConfig, FullHorizonRollouts

    OPTIMIZERS.add(
        "sac", "Soft actor-critic: twin Q, target nets, automatic entropy, update-to-data ratio",
        SACConfig, SAC,
    )
    LOOPS.add(
        "policy",
        "Policy loop: collect, (fit model, roll out), update the policy, evaluate",
        PolicyLoopConfig,
        LoopDef("box", required=("optimizer",), optional=("model", "rollout"),
                together=(("model", "rollout"),),
                accepts=(("optimizer", ("sac",)), ("model", NEURAL_MODELS),
                         ("rollout", ("branched",))),
                check_parts=_check_value_expansion, check_env=check_known_reward),
    )
    LOOPS.add(
        "stages",
        "Stage loop (SLBO, ME-TRPO, TRPO): collect a stage, then alternate model fits and policy "
        "iterations on full-horizon model rollouts (or one update on the real stage)",
        StageLoopConfig,
        LoopDef("box", required=("optimizer",), optional=("model", "rollout"),
                together=(("model", "rollout"),),
                accepts=(("optimizer", ("trpo", "sac")), ("model", NEURAL_MODELS),
                         ("rollout", ("full_horizon",))),
                check_parts=_check_stage_parts, check_env=check_known_reward),
    )
    OPTIMIZERS.add(
        "trpo", "TRPO: Gaussian MLP policy, GAE(λ) value baseline, natural gradient by conjugate "
        "gradient, KL-limited backtracking line search", TRPOConfig, TRPO,
    )
    ROLLOUTS.add(
        "full_horizon", "SLBO's full-horizon model rollouts of the stochastic policy from real "
        "initial states (or buffer states), stopping at predicted termination",
        FullHorizonConfig, FullHorizonRollouts,
    )
    LOOPS.add(
        "mpc",
        "MPC loop (PETS): random trial, fit the model, plan every step with trajectory sampling",
        MPCLoopConfig,
        LoopDef("box", required=("model", "planner"), check_env=check_known_reward,
                accepts=(("model", NEURAL_MODELS),)),
    )
    MODELS.add(
        "pe", "Probabilistic ensemble: Gaussian heads on Δstate and reward, elites, early stopping",
        ProbabilisticEnsembleConfig,
        lambda obs_dim, act_dim, cfg, generator, device="cpu": ProbabilisticEnsemble(
            obs_dim, act_dim, cfg, device, generator=generator),
    )
    MODELS.add(
        "deterministic", "Deterministic MLP ensemble (MSE), same interface as pe",
        ProbabilisticEnsembleConfig,
        lambda obs_dim, act_dim, cfg, generator, device="cpu": ProbabilisticEnsemble(
            obs_dim, act_dim, replace(cfg, deterministic=True), device, generator=generator),
    )
    OPTIMIZERS.add(
        "q-learning", "Tabular Q-learning: ε-greedy with random tie-breaking, one-step updates",
        QLearningConfig, QLearning,
    )
    MODELS.add(
        "tabular", "Tabular model of (r, s', terminated) per (s, a): last seen, or counts",
        TabularModelConfig, TabularModel,
    )
    LOOPS.add(
        "tabular",
        "Tabular loop (Dyna-Q): act, Q-update, model update, n planning updates, evaluate",
        TabularLoopConfig,
        LoopDef("discrete", required=("optimizer", "model"),
                accepts=(("optimizer", ("q-learning",)), ("model", ("tabular",))),
                needs_termination=False),
    )
    ROLLOUTS.add(
        "branched", "MBPO's branched k-step rollouts from real states, k on a schedule",
        BranchedRolloutConfig, BranchedModelData,
    )
    PLANNERS.add(
        "cem", "Cross-entropy method (PETS): truncated normal, elites, momentum, mean of elites",
        CEMConfig, CEM,
    )
    PLANNERS.add(
        "random_shooting", "Random shooting: best of uniformly random action sequences",
        RandomShootingConfig, RandomShooting,
    )
    PLANNERS.add(
        "mppi", "MPPI: reward-weighted average of smoothly perturbed sequences",
        MPPIConfig, MPPI,
    )


_register_all()
