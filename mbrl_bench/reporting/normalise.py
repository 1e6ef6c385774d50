"""Normalised scores and aggregates across tasks (Agarwal et al. 2021, rliable).

A run's normalised score on a task is ``(R - random) / (reference - random)``: ``R`` its
return at the task's last reporting budget, ``random`` the measured return of a uniformly
random policy (``references/random.toml``), ``reference`` the published return for that task
and budget (``references/published.toml``; the highest if several algorithms have one). Tasks
without both are left out, and the output says which. Aggregates over tasks are the IQM, mean,
median and optimality gap of the ``(runs x tasks)`` score matrix with stratified-bootstrap 95%
intervals; an algorithm's matrix uses as many runs per task as its task with fewest complete
runs has (its lowest seeds).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from mbrl_bench.reporting.aggregate import iqm, stratified_bootstrap_ci
from mbrl_bench.reporting.table import Published, return_at_budget


def random_scores(path: str | Path | None = None) -> dict[str, float]:
    """env id → mean return of a uniformly random policy (default: the shipped file)."""
    file = Path(path) if path is not None else Path(
        str(resources.files("mbrl_bench") / "data" / "references" / "random.toml"))
    with file.open("rb") as f:
        return {str(e["env_id"]): float(e["value"]) for e in tomllib.load(f).get("random", [])}


def optimality_gap(scores: ArrayLike, gamma: float = 1.0) -> float:
    """Mean shortfall below ``gamma``: ``mean(max(0, gamma - x))`` over all runs and tasks."""
    x = np.asarray(scores, dtype=np.float64)
    return float(np.maximum(0.0, gamma - x).mean())


STATISTICS = {"iqm": iqm, "mean": lambda x: float(np.mean(x)),
              "median": lambda x: float(np.median(x)), "optimality_gap": optimality_gap}


@dataclass(frozen=True)
class TaskScale:
    """How one task's returns are normalised."""

    task: str
    env_id: str
    budget: int
    random: float
    reference: float


def task_scales(runs: pd.DataFrame, randoms: dict[str, float], published: list[Published]
                ) -> tuple[list[TaskScale], list[str]]:
    """The tasks (``suite/env``) that can be normalised, and the others with the reason."""
    scales, skipped = [], []
    for (suite, env), group in runs.groupby(["suite", "env"], sort=True):
        task, env_id = f"{suite}/{env}", str(group["env_id"].iloc[0])
        budgets = [b for bs in group["reporting_budgets"] for b in bs] or list(group["budget"])
        budget = int(max(budgets))
        refs = [p.value for p in published if p.env_id == env_id and p.budget == budget]
        if env_id not in randoms or not refs:
            what = "random score" if env_id not in randoms else f"published return at {budget}"
            skipped.append(f"{task} (no {what})")
        elif max(refs) == randoms[env_id]:
            skipped.append(f"{task} (published return equals the random one)")
        else:
            scales.append(TaskScale(task, env_id, budget, randoms[env_id], max(refs)))
    return scales, skipped


def normalised_scores(runs: pd.DataFrame, evals: pd.DataFrame, scales: list[TaskScale],
                      fraction: float = 1.0) -> pd.DataFrame:
    """One row per complete run that reached ``fraction`` of its task's budget (the task's
    last reporting budget): ``algo, task, seed, score``, the run's return there normalised."""
    rows = []
    by_task = {s.task: s for s in scales}
    for run in runs.to_dict("records"):
        scale = by_task.get(f"{run['suite']}/{run['env']}")
        if scale is None or run["status"] != "complete":
            continue
        at = max(1, round(fraction * scale.budget))
        r = return_at_budget(evals[evals["path"] == run["path"]], at)
        if r is not None:
            rows.append({"algo": run["algo"], "task": scale.task, "seed": int(run["seed"]),
                         "score": (r - scale.random) / (scale.reference - scale.random)})
    return pd.DataFrame(rows, columns=["algo", "task", "seed", "score"])


FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 11))
"""Fractions of each task's budget at which :func:`iqm_over_budget` aggregates."""


def iqm_over_budget(runs: pd.DataFrame, evals: pd.DataFrame, scales: list[TaskScale],
                    fractions: tuple[float, ...] = FRACTIONS, seed: int = 0, reps: int = 1000
                    ) -> pd.DataFrame:
    """IQM of normalised scores against the fraction of each task's budget (tasks have
    different budgets, so steps are not comparable across them), per algorithm, with its
    stratified-bootstrap 95% interval: ``algo, fraction, tasks, runs, iqm, iqm_lo, iqm_hi``.
    A point is left out where some task of the algorithm has no evaluation yet."""
    tasks = {a: set(g["task"]) for a, g in normalised_scores(runs, evals, scales).groupby("algo")}
    rows = []
    for f in fractions:
        scores = normalised_scores(runs, evals, scales, f)
        for algo, group in scores.groupby("algo", sort=True):
            wanted = tasks.get(str(algo), set())
            if not wanted or not wanted <= set(group["task"]):
                continue
            group = group[group["task"].isin(wanted)]
            per_task = [g.sort_values("seed")["score"].to_numpy()
                        for _, g in group.groupby("task")]
            n = min(len(t) for t in per_task)
            matrix = np.stack([t[:n] for t in per_task], axis=1)  # runs x tasks
            point, lo, hi = stratified_bootstrap_ci({str(algo): matrix}, iqm,
                                                    np.random.default_rng(seed), reps)[str(algo)]
            rows.append({"algo": algo, "fraction": f, "tasks": matrix.shape[1], "runs": n,
                         "iqm": point, "iqm_lo": lo, "iqm_hi": hi})
    return pd.DataFrame(rows, columns=["algo", "fraction", "tasks", "runs", "iqm", "iqm_lo",
                                       "iqm_hi"])


def aggregate(scores: pd.DataFrame, seed: int = 0, reps: int = 2000) -> pd.DataFrame:
    """Per algorithm: tasks, runs per task, and each of :data:`STATISTICS` with its
    stratified-bootstrap 95% interval (columns ``S``, ``S_lo``, ``S_hi``)."""
    rows = []
    for algo, group in scores.groupby("algo", sort=True):
        per_task = [g.sort_values("seed")["score"].to_numpy() for _, g in group.groupby("task")]
        n = min(len(t) for t in per_task)
        matrix = np.stack([t[:n] for t in per_task], axis=1)  # runs x tasks
        row: dict[str, object] = {"algo": algo, "tasks": matrix.shape[1], "runs": n}
        for name, stat in STATISTICS.items():
            rng = np.random.default_rng(seed)
            point, lo, hi = stratified_bootstrap_ci({str(algo): matrix}, stat, rng,
                                                    reps)[str(algo)]
            row.update({name: point, f"{name}_lo": lo, f"{name}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def format_aggregate(table: pd.DataFrame, skipped: list[str]) -> str:
    """The aggregate as a Markdown table, then the tasks left out."""
    head = ["algo", "tasks", "runs/task", *(n.replace("_", " ") for n in STATISTICS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":--"] + ["--:"] * 6) + "|"]
    for row in table.to_dict("records"):
        cells = [str(row["algo"]), str(row["tasks"]), str(row["runs"])]
        cells += [f"{row[n]:.2f} [{row[n + '_lo']:.2f}, {row[n + '_hi']:.2f}]"
                  if not math.isnan(float(row[n])) else "—" for n in STATISTICS]
        lines.append("| " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Not normalised: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"
