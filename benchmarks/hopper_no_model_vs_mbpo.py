"""MBPO against its no-model ablation on Hopper-v5 at fixed budgets (issue 9's evidence).

MBPO's side is the committed 3-seed run of suite ``mujoco`` (per-seed returns at 7k, 10k and
15k steps, from the README and ``results/reference/hopper/``); the ablation's side is read
from the runs of::

    bench run --suite ablation-mbpo --env Hopper --algos mbpo-no-model --seeds 0,1,2 \\
      --out results/ablation-hopper

Prints, per budget: the ablation's returns, their mean with a bootstrap interval, and where
MBPO has a committed value, the difference of means and P(mbpo > no-model) with intervals.

Usage: python benchmarks/hopper_no_model_vs_mbpo.py 7000,10000,15000 [--runs DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mbrl_bench.reporting.aggregate import difference_ci, mean_ci, probability_of_improvement_ci
from mbrl_bench.reporting.table import load_runs, return_at_budget

MBPO_MUJOCO = {7000: [304.0, 4.0, 1047.0], 10000: [310.0, 336.0, 809.0],
               15000: [175.0, 419.0, 1045.0]}
"""Per-seed returns (seeds 0, 1, 2) of the committed MBPO Hopper-v5 run (suite mujoco)."""


def returns_at(runs: Path, budget: int) -> list[float]:
    """The return at ``budget`` of each run under ``runs`` that reached it (as ``bench table``
    reads it)."""
    _, evals = load_runs(runs)
    values = (return_at_budget(e, budget) for _, e in evals.groupby("path", sort=True))
    return [v for v in values if v is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("budgets", help="comma-separated env-step budgets")
    parser.add_argument("--runs", type=Path,
                        default=Path("results/ablation-hopper/ablation-mbpo/Hopper-v5/"
                                     "mbpo-no-model"))
    args = parser.parse_args()
    for budget in (int(b) for b in args.budgets.split(",")):
        rng = np.random.default_rng(0)
        ours = returns_at(args.runs, budget)
        if not ours:
            print(f"{budget}: no run reached it")
            continue
        mean, lo, hi = mean_ci(ours, rng)
        line = (f"{budget}: no-model {[round(v, 1) for v in ours]} "
                f"mean {mean:.1f} [{lo:.1f}, {hi:.1f}]")
        if budget in MBPO_MUJOCO:
            d = difference_ci(MBPO_MUJOCO[budget], ours, rng)
            p = probability_of_improvement_ci([MBPO_MUJOCO[budget]], [ours], rng)
            line += (f" | mbpo - no-model {d[0]:.1f} [{d[1]:.1f}, {d[2]:.1f}]"
                     f"  P(mbpo > no-model) {p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]")
        print(line)


if __name__ == "__main__":
    main()
