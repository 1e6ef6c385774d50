"""A run's specification: suite, environment entry, recipe resolved for it, and seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbrl_bench.config import to_dict
from mbrl_bench.spec import EnvEntry, Recipe, recipe_hash


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's numbers. ``run_id`` is stable across invocations."""

    suite: str
    env: EnvEntry
    algo: str
    seed: int
    recipe: Recipe

    @property
    def run_id(self) -> str:
        return f"{self.suite}/{self.env.label}/{self.algo}/seed_{self.seed}"

    @property
    def config_hash(self) -> str:
        return recipe_hash(self.recipe, self.env, self.seed)

    def run_dir(self, out: Path) -> Path:
        return out / self.suite / self.env.label / self.algo / f"seed_{self.seed}"

    def meta(self) -> dict[str, Any]:
        """The resolved configuration part of ``run.json``."""
        return {
            "run_id": self.run_id, "suite": self.suite, "env": self.env.label,
            "env_id": self.env.id, "algo": self.algo, "seed": self.seed,
            "budget": self.env.budget, "reporting_budgets": list(self.env.budgets),
            "threshold": self.env.threshold, "optimal_length": self.env.optimal_length,
            "config_hash": self.config_hash,
            "config": {"recipe": self.recipe.to_dict(), "env": to_dict(self.env)},
        }
