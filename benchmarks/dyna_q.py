"""Dyna-Q against the published numbers (DESIGN.md §6): CliffWalking and the Dyna maze.

Runs the `dyna-q` recipe through the library's tabular loop (suite `tabular`) with
n = 0, 2, 20 planning steps on CliffWalking-v1 (ε 0.01, α 0.1, γ 0.9: the recipe's cliff
overrides) and n = 0, 5, 50 on the Dyna maze (ε 0.1, α 0.1, γ 0.95), over many seeds. Each n is
an ablation recipe written next to the runs (``base = "dyna-q"``, ``planning_steps = n``).
Resumable: the runs live in the run store, so running the same command again only summarises.

    python benchmarks/dyna_q.py --seeds 30 --out results/bench/dyna_q \\
        --to results/reference/dyna_q

Writes ``runs.csv`` (one row per run), ``curves.csv`` (mean over seeds per episode),
``table.md`` (ours against the published numbers) and ``curves.png`` into ``--to``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mbrl_bench.reporting.aggregate import episodes_to_optimal, optimal_episodes
from mbrl_bench.reporting.table import load_metrics, load_runs
from mbrl_bench.runner.execute import expand, run_all
from mbrl_bench.runner.store import code_version, versions
from mbrl_bench.spec import load_suite

CLIFF, MAZE = "CliffWalking-v1", "DynaMaze"
PUBLISHED = {
    CLIFF: {0: -64.0, 2: -37.0, 20: -14.0},  # mean return over episodes 51-60
    MAZE: {0: 25.0, 5: 5.0, 50: 3.0},  # episodes to (ε-)optimal performance
}
CLIFF_EPISODES = (51, 60)
MAZE_EPISODES = 50  # Figure 8.2 shows episodes 1-50
CLIFF_PLOTTED = 100  # episodes of the cliff curve in curves.png / curves.csv
NEAR = 2.0
"""Our reading of "reached (ε-)optimal performance" in Figure 8.2 (steps per episode, mean of
30 runs, y axis up to 800): the mean over seeds stays within NEAR x the optimal 14 steps."""


def run(seeds: list[int], out: Path, workers: int) -> tuple[pd.DataFrame, str]:
    """Run (or resume, or skip) every run; return their per-episode rows and the code
    version(s) that made them."""
    algos = out / "algorithms"
    algos.mkdir(parents=True, exist_ok=True)
    for n in sorted({*PUBLISHED[CLIFF], *PUBLISHED[MAZE]}):
        (algos / f"dyna-q-n{n}.toml").write_text(
            f'description = "Dyna-Q with n = {n}"\nbase = "dyna-q"\n[loop]\nplanning_steps = {n}\n')
    suite = load_suite("tabular")
    specs = [*expand(suite, [f"dyna-q-n{n}" for n in PUBLISHED[CLIFF]], seeds, None, CLIFF,
                     (algos,)),
             *expand(suite, [f"dyna-q-n{n}" for n in PUBLISHED[MAZE]], seeds, None, MAZE,
                     (algos,))]
    failed = [o for o in run_all(specs, out / "runs", workers=workers, threads=1,
                                 progress=lambda s: None) if o.status == "failed"]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed, e.g. {failed[0].run_id}: "
                           f"{failed[0].error}")
    runs, _ = load_runs(out / "runs")
    ep = load_metrics(runs).merge(runs[["path", "optimal_length", "threshold"]], on="path")
    ep["n"] = ep["algo"].str.removeprefix("dyna-q-n").astype(int)
    made_by = ", ".join(sorted(runs["code_version"].astype(str).unique()))
    return ep.sort_values(["env", "n", "seed", "episode"]).reset_index(drop=True), made_by


def per_run(ep: pd.DataFrame) -> pd.DataFrame:
    """One row per run: episodes, cliff return over episodes 51-60, episodes to optimal."""
    rows = []
    for (env, n, seed), g in ep.groupby(["env", "n", "seed"]):
        opt_ret, opt_len = float(g["threshold"].iloc[0]), int(g["optimal_length"].iloc[0])
        first = episodes_to_optimal(optimal_episodes(g["return"], g["length"], opt_ret, opt_len))
        stays = episodes_to_optimal(optimal_episodes(
            g["greedy_return"], g["greedy_length"], opt_ret, opt_len), window=None)
        lo, hi = CLIFF_EPISODES
        if env == CLIFF and len(g) < hi:
            raise RuntimeError(f"{env} n={n} seed {seed}: only {len(g)} episodes; raise the "
                               "suite's budget")
        rows.append({"env": env, "n": n, "seed": seed, "episodes": len(g),
                     "return_51_60": float(g["return"].iloc[lo - 1:hi].mean()),
                     "first_optimal_episode": first, "greedy_optimal_from": stays})
    return pd.DataFrame(rows)


def curves(ep: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of each episode's return and length: the cliff's first CLIFF_PLOTTED
    episodes, the maze's first MAZE_EPISODES (every seed reaches both)."""
    common = (ep.groupby(["env", "n", "seed"])["episode"].max().groupby(["env", "n"]).min()
              .rename("common").reset_index())
    keep = ep.merge(common, on=["env", "n"])
    shown = np.where(keep["env"] == CLIFF, CLIFF_PLOTTED, MAZE_EPISODES)
    keep = keep[keep["episode"] <= np.minimum(keep["common"], shown)]
    return (keep.groupby(["env", "n", "episode"])[["return", "length"]].mean().reset_index()
            .rename(columns={"return": "return_mean", "length": "length_mean"}))


def _near_optimal_from(lengths: np.ndarray, optimal: int) -> int | None:
    """First episode from which the mean length stays <= NEAR x optimal (through the end)."""
    return episodes_to_optimal(lengths <= NEAR * optimal, window=None)


def _median(values: pd.Series) -> str:
    v = values.fillna(np.inf).to_numpy(dtype=np.float64)
    k, med = int(np.isfinite(v).sum()), float(np.median(v))
    return f"{med:g} ({k}/{len(v)})" if np.isfinite(med) else f"— ({k}/{len(v)})"


def table(runs: pd.DataFrame, mean: pd.DataFrame, seeds: list[int], command: str,
          made_by: str) -> str:
    lo, hi = CLIFF_EPISODES
    lines = [f"## CliffWalking-v1: mean return over episodes {lo}–{hi} (ε 0.01, α 0.1, γ 0.9)",
             "", "| n | published | ours: mean ± std over seeds | per-seed range | first optimal "
             "episode (−13), median (reached) |", "|--:|--:|--:|--:|--:|"]
    for n, g in runs[runs["env"] == CLIFF].groupby("n"):
        r = g["return_51_60"]
        lines.append(f"| {n} | ≈ {PUBLISHED[CLIFF][n]:g} | {r.mean():.1f} ± {r.std(ddof=0):.1f}"
                     f" | {r.min():.1f} … {r.max():.1f} | {_median(g['first_optimal_episode'])} |")
    lines += ["", "## Dyna maze (Sutton & Barto Example 8.1): episodes to optimal "
              "(ε 0.1, α 0.1, γ 0.95)", "",
              f"| n | published | ours: mean steps/episode ≤ {NEAR:g} × 14 from episode | mean "
              "steps in episodes 1, 2, 3, 5, 10, 25, 50 | first 14-step episode, median "
              "(reached) | greedy path 14 steps from episode, median (reached) |",
              "|--:|--:|--:|--:|--:|--:|"]
    maze = mean[mean["env"] == MAZE]
    for n, g in runs[runs["env"] == MAZE].groupby("n"):
        lengths = maze[maze["n"] == n]["length_mean"].to_numpy()
        near = _near_optimal_from(lengths, 14)
        picks = ", ".join(f"{lengths[e - 1]:.0f}" for e in (1, 2, 3, 5, 10, 25, 50)
                          if e <= len(lengths))
        lines.append(f"| {n} | ≈ {PUBLISHED[MAZE][n]:g} | {'—' if near is None else near} | "
                     f"{picks} | {_median(g['first_optimal_episode'])} | "
                     f"{_median(g['greedy_optimal_from'])} |")
    v = versions()
    budgets = ", ".join(f"{e.label} {e.budget:,} env steps" for e in load_suite("tabular").envs
                        if e.label in (CLIFF, MAZE))
    lines += ["", f"Seeds {seeds[0]}–{seeds[-1]} ({len(seeds)} per row); published numbers "
              "from DESIGN.md §6 (Sutton & Barto 2018: the maze from section 8.2, whose text "
              "gives about 25, 5 and 3 episodes to (ε-)optimal performance).", "",
              "Definitions (episodes are numbered from 1; every number here is a training "
              "episode of the ε-greedy agent unless it says greedy):",
              f"- *mean steps/episode ≤ {NEAR:g} × 14 from episode*: the first episode from "
              f"which the mean over seeds of the steps per episode stays at most {NEAR * 14:g} "
              f"through episode {MAZE_EPISODES}; our reading of the book's "
              "\"reached (ε-)optimal performance\" on Figure 8.2's scale (the threshold is ours, "
              "the curve values are given so another can be applied);",
              "- *first 14-step episode*: the first training episode that walks a shortest "
              "path (first −13 return on the cliff), per seed; *greedy path 14 steps from "
              "episode*: the episode after which the greedy policy walks a shortest path and "
              "keeps doing so through the end of the run; medians count a seed that never got "
              "there as infinitely late.",
              "", f"Budgets (suite `tabular`): {budgets}; ties between greedy actions are "
              "broken at random with the run's generator; initial Q 0.", "",
              f"Command: `{command}` — runs made by code {made_by}, summarised by "
              f"{code_version()}; Python {v['python']}, numpy "
              f"{v['numpy']}, gymnasium {v['gymnasium']}, on {platform.machine()}."]
    return "\n".join(lines) + "\n"


def plot(mean: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for n, g in mean[mean["env"] == CLIFF].groupby("n"):
        left.plot(g["episode"], g["return_mean"], label=f"n = {n}")
    left.set(title="CliffWalking-v1: return per episode (mean over seeds)", xlabel="episode",
             ylabel="return", ylim=(-200, 0))
    for n, g in mean[mean["env"] == MAZE].groupby("n"):
        right.plot(g["episode"], g["length_mean"], label=f"n = {n}")
    right.set(title="Dyna maze: steps per episode (mean over seeds)", xlabel="episode",
              ylabel="steps", ylim=(0, 800))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=30, help="seeds 0..N-1")
    p.add_argument("--out", type=Path, default=Path("results/bench/dyna_q"))
    p.add_argument("--to", type=Path, default=Path("results/reference/dyna_q"))
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    seeds = list(range(a.seeds))
    ep, made_by = run(seeds, a.out, a.workers)
    runs, mean = per_run(ep), curves(ep)
    a.to.mkdir(parents=True, exist_ok=True)
    runs.to_csv(a.to / "runs.csv", index=False)
    mean.to_csv(a.to / "curves.csv", index=False, float_format="%.4g")
    command = f"python benchmarks/dyna_q.py --seeds {a.seeds} --out {a.out} --to {a.to}"
    text = table(runs, mean, seeds, command, made_by)
    (a.to / "table.md").write_text(text)
    plot(mean, a.to / "curves.png")
    print(text)


if __name__ == "__main__":
    main()
