"""Episodes-to-optimal of tabular runs, from their per-episode rows in ``metrics.csv``.

The tabular loop writes one row per training episode: ``env_step, episode, return, length,
greedy_return, greedy_length``. A run's optimum comes from its ``run.json``, i.e. its suite
entry: ``optimal_length`` (the length of a shortest successful episode) and, if set,
``threshold`` (the optimal return); an episode is optimal when it is at most that long and
reaches that return (:func:`~mbrl_bench.reporting.aggregate.optimal_episodes`). Tasks without
an ``optimal_length`` (stochastic ones, or with many start states, where one episode cannot
show optimality) get no episodes-to-optimal, only their returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mbrl_bench.reporting.aggregate import episodes_to_optimal, optimal_episodes
from mbrl_bench.reporting.table import load_metrics

EPISODE_RUN_COLUMNS = ["suite", "env", "algo", "seed", "status", "episodes", "optimal_return",
                       "optimal_length", "first_optimal", "greedy_optimal_from", "last10_return"]
"""Columns of :func:`episode_table`."""


def _optimum(run: Mapping[Any, Any]) -> tuple[float | None, int | None]:
    """(optimal return or None, optimal length) of a run, or (None, None) without a length."""
    ret, length = run.get("threshold"), run.get("optimal_length")
    if length is None or (isinstance(length, float) and math.isnan(length)):
        return None, None
    ret = None if ret is None or (isinstance(ret, float) and math.isnan(ret)) else float(ret)
    return ret, int(length)


def episode_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run that logged training episodes (columns :data:`EPISODE_RUN_COLUMNS`).

    * ``episodes``: training episodes finished;
    * ``first_optimal``: the first optimal training episode
      (:func:`~mbrl_bench.reporting.aggregate.episodes_to_optimal` with ``window=1``);
    * ``greedy_optimal_from``: the episode after which the greedy policy was optimal and stayed
      optimal through the last episode (``window=None`` on the greedy columns);
    * ``last10_return``: mean training return of the last 10 episodes.

    Both episode counts are NaN when not reached, or when the run has no ``optimal_length``. Failed
    runs are left out, as in the sample-efficiency table.

    Args:
        runs: runs frame from :func:`~mbrl_bench.reporting.table.load_runs`.
    """
    metrics = load_metrics(runs)
    rows = []
    if "episode" in metrics.columns:
        by_path = {p: g.sort_values("episode") for p, g in metrics.dropna(subset=["episode"])
                   .groupby("path")}
        for run in runs.loc[runs["status"] != "failed"].to_dict("records"):
            ep = by_path.get(run["path"])
            if ep is None or ep.empty:
                continue
            opt_ret, opt_len = _optimum(run)
            first = greedy = None
            if opt_len is not None:
                first = episodes_to_optimal(optimal_episodes(ep["return"], ep["length"],
                                                             opt_ret, opt_len))
                greedy = episodes_to_optimal(optimal_episodes(
                    ep["greedy_return"], ep["greedy_length"], opt_ret, opt_len), window=None)
            rows.append([run["suite"], run["env"], run["algo"], run["seed"], run["status"],
                         len(ep), opt_ret, opt_len, first, greedy,
                         float(ep["return"].tail(10).mean())])
    table = pd.DataFrame(rows, columns=EPISODE_RUN_COLUMNS)
    return table.astype({"first_optimal": "float64", "greedy_optimal_from": "float64",
                         "optimal_return": "float64", "optimal_length": "float64"})


def _median_reached(values: pd.Series) -> str:
    """``median (k/N)``: median over all N runs, a run that never got there counting as
    infinitely late (so '—' when fewer than half got there), and how many got there."""
    v = np.sort(values.fillna(np.inf).to_numpy(dtype=np.float64))
    k = int(np.isfinite(v).sum())
    median = float(np.median(v)) if len(v) else math.inf
    return f"{median:g} ({k}/{len(v)})" if math.isfinite(median) else f"— ({k}/{len(v)})"


def format_episode_markdown(table: pd.DataFrame) -> str:
    """Summary of an :func:`episode_table` per (suite, env, algo) as a Markdown table."""
    lines = ["| suite | env | algo | seeds | episodes (mean) | optimum (return, length) | "
             "first optimal episode, median (reached) | greedy optimal from, median (reached) | "
             "return of last 10 episodes (mean ± std) |",
             "| :-- | :-- | :-- | --: | --: | :-- | --: | --: | --: |"]
    for (suite, env, algo), g in table.groupby(["suite", "env", "algo"], sort=True):
        ret, length = g["optimal_return"].iloc[0], g["optimal_length"].iloc[0]
        optimum = "—" if math.isnan(length) else ", ".join(
            s for s in (f"≥ {ret:g}" if not math.isnan(ret) else "", f"≤ {length:g} steps") if s)
        last = g["last10_return"]
        has = not math.isnan(length)  # episodes to optimal need an optimal length
        first = _median_reached(g["first_optimal"]) if has else "no optimum set"
        greedy = _median_reached(g["greedy_optimal_from"]) if has else "no optimum set"
        lines.append(f"| {suite} | {env} | {algo} | {len(g)} | {g['episodes'].mean():.0f} | "
                     f"{optimum} | {first} | {greedy} | "
                     f"{last.mean():.2f} ± {last.std(ddof=0):.2f} |")
    return "\n".join(lines) + "\n"
