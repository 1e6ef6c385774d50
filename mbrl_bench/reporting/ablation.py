"""Each ablation against its base at one budget (``bench ablations`` and the report's section).

An ablation is a run of a recipe whose file says ``base = "B"`` (the shipped ``mbpo-no-model``,
``mbpo-k1``, ``mbpo-mve`` over ``mbpo``; ``pets-ts1``, ``pets-mean`` ... over ``pets``), or a
``--set`` variant ``B[key=value]`` of a recipe B, on a task (suite and environment) where B has
complete runs too. Per pair and task, at the budget (by default the smaller of the two
algorithms' budgets): each one's mean return over its complete runs with a percentile-bootstrap
95% interval, the difference of the means (ablation − base) with a bootstrap interval that
resamples each algorithm's runs independently, and P(ablation > base) (Agarwal et al. 2021).
Failed, unfinished and short runs are counted as left out, never used. "Ablation" is read
widely: any recipe written over a base (``metrpo`` and ``trpo`` over ``slbo`` too) is compared
with that base.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib import resources

import numpy as np
import pandas as pd

from mbrl_bench.reporting.aggregate import (
    difference_ci,
    mean_ci,
    probability_of_improvement_ci,
)
from mbrl_bench.reporting.compare import paired_returns

COLUMNS = [
    "task", "base", "ablation", "budget", "base_runs", "base_mean", "base_lo", "base_hi",
    "ablation_runs", "ablation_mean", "ablation_lo", "ablation_hi", "difference",
    "difference_lo", "difference_hi", "p_improvement", "p_lo", "p_hi", "left_out",
    "base_returns", "ablation_returns",
]


def shipped_base(algo: str) -> str | None:
    """The base of ``algo``: the recipe before ``[...]`` for a ``--set`` variant, else the
    ``base`` key of the shipped recipe file of that name (None for a recipe without a base or
    one that is not shipped)."""
    if "[" in algo:
        return algo.split("[", 1)[0]
    path = resources.files("mbrl_bench") / "data" / "algorithms" / f"{algo}.toml"
    if not path.is_file():
        return None
    base = tomllib.loads(path.read_text(encoding="utf-8")).get("base")
    return base if isinstance(base, str) else None


def ablation_table(runs: pd.DataFrame, evals: pd.DataFrame, budget: int | None = None,
                   base_of: Callable[[str], str | None] = shipped_base, seed: int = 0,
                   reps: int = 2000) -> pd.DataFrame:
    """One row per (task, ablation) with complete runs of the ablation and of its base (frames
    from :func:`~mbrl_bench.reporting.table.load_runs`); columns :data:`COLUMNS`, sorted by
    task, base, ablation. Empty when no ablation has its base beside it."""
    rng = np.random.default_rng(seed)
    rows = []
    for (suite, env), task in runs.groupby(["suite", "env"], sort=True):
        algos = sorted(task["algo"].astype(str).unique())
        for abl in algos:
            base = base_of(abl)
            if base is None or base == abl or base not in algos:
                continue
            paired = paired_returns(task, evals, abl, base, budget)
            if paired is None:
                continue
            at, x, y, left_out = paired
            bm, blo, bhi = mean_ci(y, rng, reps)
            am, alo, ahi = mean_ci(x, rng, reps)
            d, dlo, dhi = difference_ci(x, y, rng, reps)
            p, plo, phi = probability_of_improvement_ci([x], [y], rng, reps)
            rows.append({
                "task": f"{suite}/{env}", "base": base, "ablation": abl, "budget": at,
                "base_runs": len(y), "base_mean": bm, "base_lo": blo, "base_hi": bhi,
                "ablation_runs": len(x), "ablation_mean": am, "ablation_lo": alo,
                "ablation_hi": ahi, "difference": d, "difference_lo": dlo, "difference_hi": dhi,
                "p_improvement": p, "p_lo": plo, "p_hi": phi,
                "left_out": left_out,
                "base_returns": tuple(y), "ablation_returns": tuple(x),
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def format_ablations(table: pd.DataFrame) -> str:
    """Markdown: one line per ablation and task. An interval needs at least two runs on each
    side it resamples (``—`` otherwise); with a handful of seeds a percentile bootstrap is
    narrow, so read an interval that excludes 0 as a hint to run more seeds, not a proof."""
    def interval(lo: float, hi: float, ok: bool, fmt: str) -> str:
        return f"[{lo:{fmt}}, {hi:{fmt}}]" if ok else "[—]"

    lines = ["| task | base | ablation | budget | base mean [95% CI] | ablation mean [95% CI] | "
             "ablation − base [95% CI] | P(ablation > base) [95% CI] | runs | left out |",
             "| :-- | :-- | :-- | --: | --: | --: | --: | --: | --: | --: |"]
    for r in table.to_dict("records"):
        nb, na = int(r["base_runs"]), int(r["ablation_runs"])
        both = nb >= 2 and na >= 2
        lines.append(
            f"| {r['task']} | {r['base']} | {r['ablation']} | {r['budget']} | "
            f"{r['base_mean']:.1f} {interval(r['base_lo'], r['base_hi'], nb >= 2, '.1f')} | "
            f"{r['ablation_mean']:.1f} "
            f"{interval(r['ablation_lo'], r['ablation_hi'], na >= 2, '.1f')} | "
            f"{r['difference']:+.1f} "
            f"{interval(r['difference_lo'], r['difference_hi'], both, '+.1f')} | "
            f"{r['p_improvement']:.2f} {interval(r['p_lo'], r['p_hi'], both, '.2f')} | "
            f"{na} vs {nb} | {r['left_out']} |")
    return "\n".join(lines) + "\n"
