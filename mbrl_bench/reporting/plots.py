"""Learning-curve and diagnostic plots of the run store, written as PNG files.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch),
so the functions are safe in headless jobs and do not disturb an interactive session.
Confidence bands are computed here with :mod:`mbrl_bench.reporting.aggregate`; seaborn only
supplies the colour palette.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from mbrl_bench.reporting.aggregate import mean_ci

__all__ = ["algorithm_colors", "plot_aggregate", "plot_curves", "plot_metrics", "plot_profiles"]

_MAX_LEGEND_ENTRIES = 12


def _grid(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(max_cols, n_panels)
    return math.ceil(n_panels / ncols), ncols


def _new_figure(n_panels: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    nrows, ncols = _grid(n_panels)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


VECTOR_FORMATS = ("pdf", "svg")
"""Written beside every PNG figure, with the same name (for papers)."""


def _save(fig: Figure, out_path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` as the PNG ``out_path`` and as PDF and SVG beside it; returns the PNG."""
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    for fmt in VECTOR_FORMATS:
        fig.savefig(path.with_suffix(f".{fmt}"), format=fmt)
    return path


def _run_column(frame: pd.DataFrame, preferred: str) -> str | None:
    for col in (preferred, "path", "run_id"):
        if col in frame.columns:
            return col
    return None


def _mean_band(
    runs: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
    rng: np.random.Generator,
    reps: int,
    confidence: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mean over runs and its bootstrap band on the union of the runs' evaluation steps.

    Each run ``(steps, returns)`` is linearly interpolated onto the common grid inside its
    own step range only (never extrapolated), so a point averages the runs covering it.
    """
    grid = np.unique(np.concatenate([steps for steps, _ in runs]))
    values = np.full((len(runs), grid.size), np.nan)
    for i, (steps, returns) in enumerate(runs):
        inside = (grid >= steps[0]) & (grid <= steps[-1])
        values[i, inside] = np.interp(grid[inside], steps, returns)
    mean = np.empty(grid.size)
    lo = np.empty(grid.size)
    hi = np.empty(grid.size)
    for j in range(grid.size):
        column = values[:, j]
        mean[j], lo[j], hi[j] = mean_ci(column[~np.isnan(column)], rng, reps, confidence)
    return grid.astype(np.float64), mean, lo, hi


def plot_curves(
    evals: pd.DataFrame,
    out_path: str | os.PathLike[str],
    *,
    confidence: float = 0.95,
    reps: int = 1000,
    rng_seed: int = 0,
) -> Path:
    """Learning curves: one subplot per (suite, env), one line per algo.

    Each line is the mean ``return_mean`` over the algo's runs (seeds) against ``env_step``,
    with a percentile-bootstrap band (:func:`~mbrl_bench.reporting.aggregate.mean_ci`).
    Runs with ``status == "failed"`` are left out, as in the table.

    Args:
        evals: tidy evals frame from :func:`~mbrl_bench.reporting.table.load_runs` (needs
            ``suite, env, algo, env_step, return_mean`` and a run column, ``path`` or ``run_id``).
        out_path: PNG file to write (parent directories are created).
        confidence: coverage of the band.
        reps: bootstrap replicates per evaluation step.
        rng_seed: seed of the bootstrap.

    Returns:
        The path written.

    Raises:
        ValueError: if there are no evaluations to plot or a needed column is missing.
    """
    needed = ["suite", "env", "algo", "env_step", "return_mean"]
    missing = [col for col in needed if col not in evals.columns]
    run_col = _run_column(evals, "path")
    if run_col is None:
        missing.append("path or run_id")
    if missing:
        raise ValueError(f"evals lacks column(s) {missing}; has {list(evals.columns)}")
    data = evals if "status" not in evals.columns else evals.loc[evals["status"] != "failed"]
    data = data.dropna(subset=["env_step", "return_mean"])
    if data.empty:
        raise ValueError("no evaluations to plot (all runs are empty or failed)")

    algos = sorted(data["algo"].astype(str).unique())
    colors = dict(zip(algos, sns.color_palette("colorblind", len(algos)), strict=True))
    panels = sorted({(str(s), str(e)) for s, e in zip(data["suite"], data["env"], strict=True)})
    fig, axes = _new_figure(len(panels), (5.0, 3.5))
    rng = np.random.default_rng(rng_seed)
    for ax, (suite, env) in zip(axes, panels, strict=True):
        panel = data.loc[(data["suite"].astype(str) == suite) & (data["env"].astype(str) == env)]
        for algo, algo_rows in panel.groupby(panel["algo"].astype(str), sort=True):
            runs = [
                (
                    rows["env_step"].to_numpy(dtype=np.float64),
                    rows["return_mean"].to_numpy(dtype=np.float64),
                )
                for _, rows in algo_rows.sort_values("env_step").groupby(run_col, sort=True)
            ]
            steps, mean, lo, hi = _mean_band(runs, rng, reps, confidence)
            color = colors[str(algo)]
            ax.plot(steps, mean, color=color, label=f"{algo} (n={len(runs)})")
            ax.fill_between(steps, lo, hi, color=color, alpha=0.25, linewidth=0)
        ax.set_title(f"{suite}/{env}")
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, out_path)


def plot_metrics(
    metrics: pd.DataFrame,
    columns: list[str],
    out_path: str | os.PathLike[str],
    title: str,
    *,
    run_col: str = "run_id",
) -> Path:
    """Small multiples of diagnostic columns against ``env_step``, one line per run.

    Args:
        metrics: frame with ``env_step``, the ``columns`` to draw and, to tell runs apart,
            ``run_col`` (e.g. from :func:`~mbrl_bench.reporting.table.load_metrics`); without
            any run column all rows are drawn as one run.
        columns: diagnostic columns, one subplot each.
        out_path: PNG file to write (parent directories are created).
        title: figure title.
        run_col: column naming the run of each row (falls back to ``path``).

    Returns:
        The path written.

    Raises:
        ValueError: if ``columns`` is empty or names columns absent from ``metrics``.
    """
    if not columns:
        raise ValueError("columns is empty; name at least one diagnostic column to plot")
    missing = [col for col in ["env_step", *columns] if col not in metrics.columns]
    if missing:
        raise ValueError(f"metrics lacks column(s) {missing}; has {list(metrics.columns)}")
    key = _run_column(metrics, run_col)
    groups: list[tuple[Any, pd.DataFrame]] = (
        list(metrics.groupby(key, sort=True)) if key is not None else [("run", metrics)]
    )
    colors = sns.color_palette("husl" if len(groups) > 10 else "colorblind", len(groups))
    fig, axes = _new_figure(len(columns), (4.5, 3.0))
    for ax, column in zip(axes, columns, strict=True):
        for color, (run, rows) in zip(colors, groups, strict=True):
            series = rows[["env_step", column]].dropna().sort_values("env_step")
            ax.plot(series["env_step"], series[column], color=color, label=str(run), lw=1.2)
        ax.set_title(column)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    if len(groups) <= _MAX_LEGEND_ENTRIES:
        handles, labels = axes[0].get_legend_handles_labels()
        ncols = max(1, min(3, len(labels)))
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small")
    fig.suptitle(title)
    return _save(fig, out_path)


def algorithm_colors(algos: list[str]) -> dict[str, Any]:
    """One colour per algorithm, the same in every figure of a results folder (sorted names)."""
    names = sorted(set(algos))
    palette = sns.color_palette("husl" if len(names) > 10 else "colorblind", len(names))
    return dict(zip(names, palette, strict=True))


def plot_aggregate(table: pd.DataFrame, out_path: str | os.PathLike[str]) -> Path:
    """Interval estimates of the aggregate statistics (one panel per statistic: IQM, mean,
    median, optimality gap), one row per algorithm: point and 95% interval.

    ``table``: from :func:`~mbrl_bench.reporting.normalise.aggregate`."""
    stats = ["iqm", "mean", "median", "optimality_gap"]
    colors = algorithm_colors(list(table["algo"]))
    fig, axes = _new_figure(len(stats), (3.2, 0.5 + 0.45 * len(table)))
    for ax, stat in zip(axes, stats, strict=True):
        for y, row in enumerate(table.to_dict("records")):
            c = colors[str(row["algo"])]
            ax.plot([row[f"{stat}_lo"], row[f"{stat}_hi"]], [y, y], color=c, lw=6, alpha=0.5)
            ax.plot([row[stat]], [y], "|", color="k", ms=12)
        ax.set_yticks(range(len(table)), [str(a) for a in table["algo"]])
        ax.set_title(stat.replace("_", " "))
        ax.set_xlabel("normalised score")
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, out_path)


def plot_profiles(scores: pd.DataFrame, out_path: str | os.PathLike[str]) -> Path:
    """Performance profiles: fraction of runs x tasks with a normalised score above τ, per
    algorithm. ``scores``: ``algo, task, seed, score`` rows (normalised scores)."""
    from mbrl_bench.reporting.aggregate import performance_profile

    colors = algorithm_colors(list(scores["algo"]))
    hi = max(1.2, float(scores["score"].max()) + 0.1)
    taus = np.linspace(min(0.0, float(scores["score"].min())), hi, 101)
    fig, (ax,) = _new_figure(1, (5.0, 3.5))
    for algo, group in scores.groupby("algo", sort=True):
        ax.plot(taus, performance_profile(group["score"].to_numpy(), taus),
                color=colors[str(algo)], label=str(algo), lw=1.5)
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out_path)


def plot_improvement(rows: list[tuple[str, str, float, float, float]],
                     out_path: str | os.PathLike[str]) -> Path:
    """Probability of improvement (Agarwal et al. 2021): one row per pair ``(a, b, p, lo,
    hi)``, P(a > b) with its 95% interval; 0.5 (no difference) marked."""
    colors = algorithm_colors([r[0] for r in rows] + [r[1] for r in rows])
    fig, (ax,) = _new_figure(1, (5.0, 0.6 + 0.4 * len(rows)))
    for y, (a, _b, p, lo, hi) in enumerate(rows):
        ax.plot([lo, hi], [y, y], color=colors[a], lw=6, alpha=0.5)
        ax.plot([p], [y], "|", color="k", ms=12)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [f"P({a} > {b})" for a, b, *_ in rows])
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("probability of improvement (averaged over tasks)")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out_path)


def plot_iqm_over_budget(table: pd.DataFrame, out_path: str | os.PathLike[str]) -> Path:
    """IQM of normalised scores against the fraction of each task's budget, one line and 95%
    band per algorithm. ``table``: from :func:`~mbrl_bench.reporting.normalise.iqm_over_budget`."""
    colors = algorithm_colors(list(table["algo"]))
    fig, (ax,) = _new_figure(1, (5.0, 3.5))
    for algo, group in table.groupby("algo", sort=True):
        x = 100 * group["fraction"].to_numpy()
        ax.plot(x, group["iqm"], color=colors[str(algo)], label=str(algo), lw=1.5)
        ax.fill_between(x, group["iqm_lo"], group["iqm_hi"], color=colors[str(algo)], alpha=0.2)
    ax.set_xlabel("% of each task's budget")
    ax.set_ylabel("IQM normalised score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out_path)


def plot_ablations(table: pd.DataFrame, out_path: str | os.PathLike[str]) -> Path:
    """Each ablation against its base, one panel per task, base and budget: per algorithm its
    runs' returns (dots), their mean (bar) and 95% interval; the base on top, its mean as a
    dashed line. ``table``: from :func:`~mbrl_bench.reporting.ablation.ablation_table`."""
    keys = list(dict.fromkeys(zip(table["task"], table["base"], table["budget"], strict=True)))
    colors = algorithm_colors(list(table["base"]) + list(table["ablation"]))
    panels = [table[(table["task"] == t) & (table["base"] == b) & (table["budget"] == n)]
              for t, b, n in keys]
    fig, axes = _new_figure(len(keys), (4.5, 0.8 + 0.5 * max(1 + len(p) for p in panels)))
    for ax, (task, base, budget), panel in zip(axes, keys, panels, strict=True):
        rows = panel.to_dict("records")
        first = rows[0]
        entries = [(str(base), first["base_mean"], first["base_lo"], first["base_hi"],
                    first["base_returns"])]
        entries += [(str(r["ablation"]), r["ablation_mean"], r["ablation_lo"], r["ablation_hi"],
                     r["ablation_returns"]) for r in rows]
        for y, (algo, mean, lo, hi, returns) in enumerate(entries):
            c = colors[algo]
            ax.plot([lo, hi], [y, y], color=c, lw=6, alpha=0.45, solid_capstyle="butt")
            ax.plot([mean], [y], "|", color="k", ms=14)
            ax.plot(list(returns), [y] * len(returns), "o", color=c, ms=4, alpha=0.9)
        ax.axvline(first["base_mean"], color="grey", ls="--", lw=1)
        ax.set_yticks(range(len(entries)), [e[0] for e in entries])
        ax.invert_yaxis()
        ax.set_title(f"{task} @ {int(budget)} steps", fontsize="medium")
        ax.set_xlabel("evaluation return")
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, out_path)
