"""``bench compare``: the probability that algorithm A improves on B, per task and overall.

For each task (suite and environment) that both algorithms have complete runs of, at a budget
both reached (by default the smaller of their budgets), the statistic is the probability that
a random run of A returns more than a random run of B (ties count half; Agarwal et al. 2021),
with a stratified-bootstrap 95% interval; "overall" averages it over the tasks. Failed and
unfinished runs are counted and named, never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mbrl_bench.reporting.aggregate import probability_of_improvement_ci
from mbrl_bench.reporting.table import return_at_budget


@dataclass(frozen=True)
class Comparison:
    """One line of ``bench compare``."""

    task: str
    """``suite/env``, or ``overall``."""
    budget: int | None
    p: float
    lo: float
    hi: float
    runs_a: int
    runs_b: int
    left_out: int
    """Runs of A or B on this task that are not complete (or did not reach the budget)."""


def _scores(runs: pd.DataFrame, evals: pd.DataFrame, budget: int) -> list[float]:
    out = []
    for path in runs["path"]:
        r = return_at_budget(evals[evals["path"] == path], budget)
        if r is not None:
            out.append(r)
    return out


def paired_returns(task: pd.DataFrame, evals: pd.DataFrame, a: str, b: str,
                   budget: int | None = None) -> tuple[int, list[float], list[float], int] | None:
    """Returns of ``a``'s and ``b``'s complete runs of one task (``task``: its rows of the runs
    frame) at ``budget`` (default: the smaller of their budgets): ``(budget, a's, b's, left
    out)``, where left out counts their runs that are not complete or fell short; None when
    either has no complete run that reached the budget."""
    ra, rb = task[task["algo"] == a], task[task["algo"] == b]
    done_a, done_b = ra[ra["status"] == "complete"], rb[rb["status"] == "complete"]
    if done_a.empty or done_b.empty:
        return None
    at = budget or int(min(done_a["budget"].min(), done_b["budget"].min()))
    x, y = _scores(done_a, evals, at), _scores(done_b, evals, at)
    if not x or not y:
        return None
    return at, x, y, len(ra) + len(rb) - len(x) - len(y)


def compare(runs: pd.DataFrame, evals: pd.DataFrame, a: str, b: str, budget: int | None = None,
            seed: int = 0, reps: int = 2000) -> list[Comparison]:
    """Per-task and overall comparisons of ``a`` against ``b`` (frames from
    :func:`~mbrl_bench.reporting.table.load_runs`); raises ValueError if no task has complete
    runs of both."""
    for name in (a, b):
        if name not in set(runs["algo"]):
            raise ValueError(f"no runs of {name!r}; algorithms here: "
                             f"{', '.join(sorted(set(runs['algo'])))}")
    rng = np.random.default_rng(seed)
    lines, xs, ys = [], [], []
    for (suite, env), task in runs.groupby(["suite", "env"], sort=True):
        paired = paired_returns(task, evals, a, b, budget)
        if paired is None:
            continue
        at, x, y, left_out = paired
        p, lo, hi = probability_of_improvement_ci([x], [y], rng, reps)
        lines.append(Comparison(f"{suite}/{env}", at, p, lo, hi, len(x), len(y), left_out))
        xs.append(x)
        ys.append(y)
    if not lines:
        raise ValueError(f"no task has complete runs of both {a!r} and {b!r}")
    p, lo, hi = probability_of_improvement_ci(xs, ys, rng, reps)
    lines.append(Comparison("overall", None, p, lo, hi, sum(map(len, xs)), sum(map(len, ys)),
                            sum(c.left_out for c in lines)))
    return lines


def format_comparisons(lines: list[Comparison], a: str, b: str) -> str:
    """One line per task: ``task @budget: P(a > b) = p [lo, hi]  (n vs m runs[, k left out])``."""
    out = []
    for c in lines:
        at = f" @{c.budget}" if c.budget is not None else ""
        left = f", {c.left_out} not complete or short, left out" if c.left_out else ""
        out.append(f"{c.task}{at}: P({a} > {b}) = {c.p:.2f} [{c.lo:.2f}, {c.hi:.2f}]  "
                   f"({c.runs_a} vs {c.runs_b} runs{left})")
    return "\n".join(out) + "\n"
