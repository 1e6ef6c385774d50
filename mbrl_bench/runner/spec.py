"""A run's specification: suite, environment entry, recipe resolved for it, seed, and the
command-line settings (``--set``) applied to the recipe."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mbrl_bench.config import to_dict
from mbrl_bench.errors import ConfigError
from mbrl_bench.spec import EnvEntry, Recipe, recipe_hash
from mbrl_bench.sweep import Settings, settings_label


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's numbers. ``run_id`` is stable across invocations."""

    suite: str
    env: EnvEntry
    algo: str
    """The recipe's name."""
    seed: int
    recipe: Recipe
    """Resolved for ``env``, with ``settings`` applied."""
    settings: Settings = ()
    """Command-line settings (``--set``) with their values as in the config (a list for a
    tuple); they name the run's folder (:attr:`label`)."""

    @property
    def label(self) -> str:
        """The algorithm's folder: ``algo``, or ``algo[key=value,...]`` with settings."""
        return settings_label(self.algo, self.settings)

    @property
    def run_id(self) -> str:
        return f"{self.suite}/{self.env.label}/{self.label}/seed_{self.seed}"

    @property
    def config_hash(self) -> str:
        return recipe_hash(self.recipe, self.env, self.seed)

    def run_dir(self, out: Path) -> Path:
        return out / self.suite / self.env.label / self.label / f"seed_{self.seed}"

    def meta(self) -> dict[str, Any]:
        """The resolved configuration part of ``run.json`` (``algo`` is the folder's label,
        ``recipe`` the recipe's name)."""
        return {
            "run_id": self.run_id, "suite": self.suite, "env": self.env.label,
            "env_id": self.env.id, "algo": self.label, "recipe": self.algo,
            "settings": dict(self.settings), "seed": self.seed,
            "budget": self.env.budget, "reporting_budgets": list(self.env.budgets),
            "threshold": self.env.threshold, "optimal_length": self.env.optimal_length,
            "config_hash": self.config_hash,
            "config": {"recipe": self.recipe.to_dict(), "env": to_dict(self.env)},
        }

    def recorded_budget(self, meta: dict[str, Any]) -> int | None:
        """The budget of the run recorded in ``meta`` (a folder's ``run.json``) when it is this
        run at another budget (the same recipe, task settings and seed, evaluated every
        ``min(eval_every, budget)`` steps as ``--steps`` makes it); None when it is another
        configuration or this one at this budget."""
        budget, env = meta.get("budget"), (meta.get("config") or {}).get("env") or {}
        if not isinstance(budget, int) or budget == self.env.budget:
            return None
        try:
            entry = replace(self.env.with_budget(budget),
                            reporting_budgets=tuple(env.get("reporting_budgets") or ()))
        except (ConfigError, TypeError, ValueError):
            return None
        same = recipe_hash(self.recipe, entry, self.seed) == meta.get("config_hash")
        return budget if same else None
