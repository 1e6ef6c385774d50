"""MBPO against its ablations on Hopper-v5 at fixed budgets (issue 9's evidence).

Two kinds of groups are compared:

* runs on this machine: every recipe found under ``--runs`` (as written by
  ``bench run --suite ablation-mbpo --env Hopper --algos mbpo,mbpo-mve --seeds 0,1,2 --out DIR``);
* committed per-seed returns of runs whose files were not kept (:data:`COMMITTED`): the
  ``mbpo-no-model`` runs (results/reference/ablation/notes.md, rounded to whole returns) and the
  earlier ``mbpo`` of suite ``mujoco`` (results/reference/hopper/, made under the earlier capped
  model fits). A recipe found under ``--runs`` replaces the committed group of the same name.

Prints, per budget, each group's per-seed returns and mean with a bootstrap interval, then for
every other group the difference of means to ``--base`` and P(base > group) with intervals.

Usage::

    python benchmarks/hopper_ablations.py 7000,10000,15000 --runs DIR            # base mbpo
    python benchmarks/hopper_ablations.py 7000,10000,15000 --base mbpo-mujoco-earlier
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mbrl_bench.reporting.aggregate import difference_ci, mean_ci, probability_of_improvement_ci
from mbrl_bench.reporting.table import load_runs, return_at_budget

COMMITTED: dict[str, dict[int, list[float]]] = {
    "mbpo-no-model": {7000: [354.0, 287.0, 170.0], 10000: [279.0, 159.0, 275.0],
                      15000: [433.0, 325.0, 305.0]},
    "mbpo-mujoco-earlier": {7000: [304.0, 4.0, 1047.0], 10000: [310.0, 336.0, 809.0],
                            15000: [175.0, 419.0, 1045.0]},
}
"""Per-seed returns (seeds 0, 1, 2) of committed Hopper-v5 runs whose run files were not kept."""


def run_groups(runs: Path | None, budget: int) -> dict[str, list[float]]:
    """Per recipe under ``runs``, the return at ``budget`` of each run that reached it (as
    ``bench table`` reads it), in seed order."""
    if runs is None:
        return {}
    _, evals = load_runs(runs)
    groups: dict[str, list[float]] = {}
    for (algo, _), of_run in evals.groupby(["algo", "path"], sort=True):
        value = return_at_budget(of_run, budget)
        if value is not None:
            groups.setdefault(str(algo), []).append(value)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("budgets", help="comma-separated env-step budgets")
    parser.add_argument("--runs", type=Path, default=None,
                        help="a directory of runs (any recipes of suite ablation-mbpo)")
    parser.add_argument("--base", default="mbpo", help="the group the others are compared to")
    args = parser.parse_args()
    for budget in (int(b) for b in args.budgets.split(",")):
        groups = {name: by_budget[budget] for name, by_budget in COMMITTED.items()
                  if budget in by_budget}
        groups.update(run_groups(args.runs, budget))
        print(f"## {budget} env steps")
        rng = np.random.default_rng(0)
        for name, values in groups.items():
            mean, lo, hi = mean_ci(values, rng)
            print(f"{name}: {[round(v, 1) for v in values]} mean {mean:.1f} [{lo:.1f}, {hi:.1f}]")
        if args.base not in groups:
            print(f"(no {args.base} at {budget})")
            continue
        base = groups[args.base]
        for name, values in groups.items():
            if name == args.base:
                continue
            d = difference_ci(base, values, rng)
            p = probability_of_improvement_ci([base], [values], rng)
            print(f"{args.base} - {name}: {d[0]:.1f} [{d[1]:.1f}, {d[2]:.1f}]  "
                  f"P({args.base} > {name}) {p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]")


if __name__ == "__main__":
    main()
