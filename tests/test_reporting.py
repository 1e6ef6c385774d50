"""Tests of mbrl_bench.reporting: aggregate statistics, run-store table and plots."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mbrl_bench.reporting import aggregate as agg
from mbrl_bench.reporting.plots import plot_curves, plot_metrics
from mbrl_bench.reporting.table import (
    EVAL_COLUMNS,
    RUN_KEY_COLUMNS,
    TABLE_COLUMNS,
    RunStoreWarning,
    format_markdown,
    load_metrics,
    load_runs,
    return_at_budget,
    sample_efficiency_table,
    write_table,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ----------------------------------------------------------------------------- aggregate


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([1, 2, 3, 4], 2.5),  # n=4: drop 1 each side -> mean(2, 3)
        ([4, 1, 3, 2], 2.5),  # order does not matter
        ([1, 2, 3, 4, 5, 6, 7, 8], 4.5),  # n=8: drop 2 each side -> mean(3..6)
        ([1, 2, 3, 4, 1000], 3.0),  # n=5: drop 1 each side -> mean(2, 3, 4); outlier ignored
        ([1, 2, 9], 4.0),  # n=3: int(0.75) = 0 cut -> plain mean
        ([7], 7.0),
        ([[1, 2], [3, 4]], 2.5),  # (num_runs x num_tasks) is flattened
    ],
)
def test_iqm_hand_computed(scores: list[Any], expected: float) -> None:
    assert agg.iqm(scores) == pytest.approx(expected)


def test_iqm_matches_scipy_trim_mean() -> None:
    stats = pytest.importorskip("scipy.stats")
    scores = np.random.default_rng(3).normal(size=(7, 5))
    assert agg.iqm(scores) == pytest.approx(stats.trim_mean(scores, 0.25, axis=None))


def test_iqm_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError, match="empty"):
        agg.iqm([])
    with pytest.raises(ValueError, match="NaN"):
        agg.iqm([1.0, math.nan])


def test_mean_ci_contains_mean_and_shrinks_with_more_data() -> None:
    data = np.random.default_rng(0).normal(loc=10.0, scale=2.0, size=400)
    mean_s, lo_s, hi_s = agg.mean_ci(data[:5], np.random.default_rng(1))
    mean_l, lo_l, hi_l = agg.mean_ci(data, np.random.default_rng(1))
    assert lo_s <= mean_s <= hi_s
    assert lo_l <= mean_l <= hi_l
    assert mean_s == pytest.approx(data[:5].mean())
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3


def test_mean_ci_single_run_and_constant() -> None:
    assert agg.mean_ci([3.5], np.random.default_rng(0)) == (3.5, 3.5, 3.5)
    assert agg.mean_ci([2.0, 2.0, 2.0], np.random.default_rng(0)) == (2.0, 2.0, 2.0)


def test_mean_ci_is_deterministic_for_a_seed() -> None:
    x = [1.0, 5.0, 2.0, 8.0]
    first = agg.mean_ci(x, np.random.default_rng(42), reps=500)
    assert agg.mean_ci(x, np.random.default_rng(42), reps=500) == first
    assert agg.mean_ci(x, np.random.default_rng(43), reps=500) != first


def test_mean_ci_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="NaN"):
        agg.mean_ci([1.0, math.nan], rng)
    with pytest.raises(ValueError, match="empty"):
        agg.mean_ci([], rng)
    with pytest.raises(ValueError, match="confidence"):
        agg.mean_ci([1.0, 2.0], rng, confidence=1.5)


def test_stratified_bootstrap_resamples_within_tasks() -> None:
    # Every run scores 0 on task 0 and 10 on task 1: resampling runs within each task can
    # never change the mean, whereas mixing tasks would.
    scores = {"a": np.array([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0]])}
    out = agg.stratified_bootstrap_ci(scores, np.mean, np.random.default_rng(0), reps=200)
    assert out == {"a": (5.0, 5.0, 5.0)}


def test_stratified_bootstrap_point_interval_and_determinism() -> None:
    rng_data = np.random.default_rng(5)
    scores = {"x": rng_data.normal(size=(6, 3)), "y": rng_data.normal(1.0, size=(6, 3))}
    first = agg.stratified_bootstrap_ci(scores, agg.iqm, np.random.default_rng(7), reps=300)
    again = agg.stratified_bootstrap_ci(scores, agg.iqm, np.random.default_rng(7), reps=300)
    assert first == again
    assert list(first) == ["x", "y"]
    for name, (point, lo, hi) in first.items():
        assert point == pytest.approx(agg.iqm(scores[name]))
        assert lo <= point <= hi
        assert lo < hi


def test_stratified_bootstrap_requires_scalar_statistic() -> None:
    with pytest.raises(ValueError, match="scalar"):
        agg.stratified_bootstrap_ci(
            {"a": np.ones((2, 2))}, lambda m: m.mean(axis=0), np.random.default_rng(0), reps=5
        )


def test_probability_of_improvement_hand_computed() -> None:
    # pairs (1,2) (1,2) (3,2) (3,2): two wins out of four
    assert agg.probability_of_improvement([[1.0], [3.0]], [[2.0], [2.0]]) == 0.5
    # pairs (3,3)=tie (3,1)=win, twice: (0.5 + 1 + 0.5 + 1) / 4
    assert agg.probability_of_improvement([3.0, 3.0], [3.0, 1.0]) == 0.75
    # task 0: X always better (1), task 1: X always worse (0) -> average 0.5
    x = np.array([[5.0, 0.0], [6.0, 1.0]])
    y = np.array([[1.0, 9.0], [2.0, 8.0], [3.0, 7.0]])
    assert agg.probability_of_improvement(x, y) == 0.5


def test_probability_of_improvement_is_complementary() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 4, size=(5, 3)), rng.integers(0, 4, size=(4, 3))
    p_xy = agg.probability_of_improvement(x, y)
    assert p_xy + agg.probability_of_improvement(y, x) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tasks"):
        agg.probability_of_improvement(np.ones((2, 3)), np.ones((2, 2)))


def test_performance_profile() -> None:
    scores = np.array([[1.0, 2.0], [3.0, 4.0]])
    profile = agg.performance_profile(scores, np.array([0.0, 1.0, 2.5, 4.0]))
    np.testing.assert_allclose(profile, [1.0, 0.75, 0.5, 0.0])
    assert profile.shape == (4,)


def test_steps_to_threshold() -> None:
    steps, returns = [0, 10, 20, 30], [1.0, 5.0, 3.0, 9.0]
    assert agg.steps_to_threshold(steps, returns, 5.0) == 10  # equality counts
    assert agg.steps_to_threshold(steps, returns, 6.0) == 30
    assert agg.steps_to_threshold(steps, returns, 10.0) is None
    assert agg.steps_to_threshold([0, 1], [math.nan, 2.0], 1.0) == 1


# ----------------------------------------------------------------------------- run store

BUDGETS = [1000, 2000]
STEPS = [0, 500, 1000, 1500, 2000]


def write_run(
    root: Path,
    algo: str,
    seed: int,
    steps: list[int] | None,
    returns: list[float] | None,
    *,
    status: str = "complete",
    threshold: float | None = 30.0,
    env: str = "Pendulum-v1",
    suite: str = "smoke",
    subdir: str | None = None,
) -> Path:
    """Write one run directory in the run-store format; ``steps=None`` omits evals.csv."""
    run_dir = root / (subdir or f"{suite}/{env}/{algo}/seed_{seed}")
    run_dir.mkdir(parents=True)
    run = {
        "run_id": f"{suite}/{env}/{algo}/seed_{seed}",
        "suite": suite,
        "env": env,
        "env_id": env,
        "algo": algo,
        "seed": seed,
        "status": status,
        "budget": 2000,
        "reporting_budgets": BUDGETS,
        "threshold": threshold,
        "error": "NonFiniteError: loss is nan" if status == "failed" else None,
        "code_version": "abc123",
        "config": {"nested": "not a scalar"},
    }
    (run_dir / "run.json").write_text(json.dumps(run))
    if steps is not None and returns is not None:
        lines = [",".join(EVAL_COLUMNS)]
        for i, (step, ret) in enumerate(zip(steps, returns, strict=True)):
            lines.append(f"{step},5,{ret},1.0,{ret - 1},{ret + 1},{0.1 * i}")
        (run_dir / "evals.csv").write_text("\n".join(lines) + "\n")
        metric_lines = ["env_step,model_loss,rollout_error"]
        metric_lines += [f"{s},{1.0 / (1 + s)},{0.01 * s + seed}" for s in steps]
        (run_dir / "metrics.csv").write_text("\n".join(metric_lines) + "\n")
    return run_dir


def build_store(root: Path, damaged: bool = True) -> Path:
    """sac: seeds 0-2 return (seed+1)*step/100; seed 3 running (to step 1500); seed 4 failed.

    pets: seed 0 returns 7 throughout, no threshold; with ``damaged`` also a run with a
    corrupt evals.csv, one without evals.csv and an unreadable run.json.
    """
    for seed in range(3):
        write_run(root, "sac", seed, STEPS, [(seed + 1) * s / 100 for s in STEPS])
    write_run(root, "sac", 3, STEPS[:4], [0.5 * s / 100 for s in STEPS[:4]], status="running")
    write_run(root, "sac", 4, STEPS, [1000.0] * 5, status="failed")
    write_run(root, "pets", 0, STEPS, [7.0] * 5, threshold=None, subdir="reference/pets_0")
    if damaged:
        bad = write_run(root, "pets", 1, None, None, threshold=None, status="interrupted")
        (bad / "evals.csv").write_text("not,a\ncsv,file\n")
        write_run(root, "pets", 2, None, None, threshold=None, status="interrupted")
        broken = root / "broken" / "run"
        broken.mkdir(parents=True)
        (broken / "run.json").write_text("{not json")
    return root


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return build_store(tmp_path / "results")


@pytest.fixture
def loaded(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with pytest.warns(RunStoreWarning) as record:
        runs, evals = load_runs(store)
    messages = " ".join(str(w.message) for w in record)
    assert "broken" in messages and "run skipped" in messages
    assert "missing column" in messages  # corrupt evals.csv of pets seed 1
    assert "seed_2/evals.csv: missing" in messages
    return runs, evals


def test_load_runs_frames(loaded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    runs, evals = loaded
    assert len(runs) == 8  # 5 sac + 3 pets; the broken run.json is skipped
    assert {"run_id", "suite", "env", "env_id", "algo", "seed", "status", "budget",
            "reporting_budgets", "threshold", "error", "code_version", "path"} <= set(runs)
    assert "config" not in runs.columns  # non-scalar fields are not columns
    assert runs["reporting_budgets"].iloc[0] == (1000, 2000)
    pets = runs.loc[runs["algo"] == "pets"].set_index("seed")
    assert pets.loc[1, "status"] == "interrupted"
    assert list(evals.columns) == RUN_KEY_COLUMNS + EVAL_COLUMNS
    assert len(evals) == 3 * 5 + 4 + 5 + 5
    assert set(evals.loc[evals["algo"] == "pets", "seed"]) == {0}
    assert evals["env_step"].dtype == np.int64
    seed1 = evals.loc[(evals["algo"] == "sac") & (evals["seed"] == 1)]
    assert seed1["return_mean"].tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert (seed1["run_id"] == "smoke/Pendulum-v1/sac/seed_1").all()


def test_load_runs_without_runs_names_directory(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "empty"))):
        load_runs(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        load_runs(tmp_path / "nope")


def test_return_at_budget() -> None:
    ev = pd.DataFrame({"env_step": [2000, 0, 1000, 3000], "return_mean": [2.0, 0.0, 1.0, 3.0]})
    assert return_at_budget(ev, 1000) == 1.0
    assert return_at_budget(ev, 2500) == 2.0  # last evaluation at or before the budget
    assert return_at_budget(ev, 3000) == 3.0
    assert return_at_budget(ev, 3001) is None  # the run never got that far
    assert return_at_budget(ev.iloc[:0], 1000) is None
    assert return_at_budget(pd.DataFrame({"env_step": [500], "return_mean": [1.0]}), 100) is None


def _row(table: pd.DataFrame, algo: str, budget: int) -> pd.Series:
    match = table.loc[(table["algo"] == algo) & (table["budget"] == budget)]
    assert len(match) == 1
    return match.iloc[0]


def test_sample_efficiency_table_values(loaded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    runs, evals = loaded
    table = sample_efficiency_table(runs, evals)
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 4  # 2 algos x 2 budgets
    assert table[["algo", "budget"]].values.tolist() == [
        ["pets", 1000], ["pets", 2000], ["sac", 1000], ["sac", 2000]
    ]

    early = _row(table, "sac", 1000)  # seeds 0-2: 10, 20, 30; running seed 3: 5
    assert early["n_seeds"] == 4
    assert early["mean"] == pytest.approx(16.25)
    assert early["iqm"] == pytest.approx(15.0)  # mean(10, 20)
    assert early["ci_low"] <= early["mean"] <= early["ci_high"]
    late = _row(table, "sac", 2000)  # the running seed stopped at 1500
    assert late["n_seeds"] == 3
    assert late["mean"] == pytest.approx(40.0)
    assert late["iqm"] == pytest.approx(40.0)
    for row in (early, late):
        assert row["failed"] == 1  # the failed seed (returns 1000) is excluded
        assert row["threshold"] == 30.0
        assert row["reached"] == 2  # seed 1 at 1500, seed 2 at 1000
        assert row["steps_to_threshold_mean"] == pytest.approx(1250.0)

    pets = _row(table, "pets", 2000)
    assert pets["n_seeds"] == 1 and pets["failed"] == 0
    assert (pets["mean"], pets["ci_low"], pets["ci_high"]) == (7.0, 7.0, 7.0)
    assert math.isnan(pets["threshold"]) and pets["reached"] == 0
    assert math.isnan(pets["steps_to_threshold_mean"])
    # wall_clock_s 0.1 * i at the i-th evaluation (steps 0, 500, ...): 0.2 s at 1000, 0.4 at 2000
    assert early["s_per_1k_steps"] == pytest.approx(0.2)
    assert late["s_per_1k_steps"] == pytest.approx(0.2)


def test_sample_efficiency_table_is_deterministic(tmp_path: Path) -> None:
    store = build_store(tmp_path / "r", damaged=False)
    runs, evals = load_runs(store)
    first = sample_efficiency_table(runs, evals, rng_seed=3)
    pd.testing.assert_frame_equal(first, sample_efficiency_table(runs, evals, rng_seed=3))
    # Bootstrap draws depend on the row's key, not on which other algos are present.
    sac_only = sample_efficiency_table(
        runs.loc[runs["algo"] == "sac"], evals.loc[evals["algo"] == "sac"], rng_seed=3
    )
    pd.testing.assert_frame_equal(
        sac_only, first.loc[first["algo"] == "sac"].reset_index(drop=True)
    )


def test_budget_not_reached_by_anyone(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_run(root, "sac", 0, [0, 500], [1.0, 2.0], status="running")
    table = sample_efficiency_table(*load_runs(root))
    row = _row(table, "sac", 2000)
    assert row["n_seeds"] == 0 and math.isnan(row["mean"]) and math.isnan(row["iqm"])
    assert "| 2000 | 0 | — |" in format_markdown(table)


def test_format_markdown(loaded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    md = format_markdown(sample_efficiency_table(*loaded))
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 4
    assert lines[0].startswith("| suite | env | algo | budget |")
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    sac_late = next(line for line in lines if "| sac | 2000 |" in line)
    assert re.search(r"\| 40\.0 \[\d+\.\d, \d+\.\d\] \| 40\.0 \| 30\.0 \| 2 \| 1250\.0 \| 1 "
                     r"\| 0\.2 \|$", sac_late)
    pets = next(line for line in lines if "| pets | 1000 |" in line)
    assert pets.endswith("| 1 | 7.0 [7.0, 7.0] | 7.0 | — | — | — | 0 | 0.2 |")


def test_write_table(tmp_path: Path) -> None:
    store = build_store(tmp_path / "r", damaged=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = write_table(store)
        write_table(store, tmp_path / "out" / "nested")
    for target in (store, tmp_path / "out" / "nested"):
        csv = pd.read_csv(target / "table.csv")
        assert list(csv.columns) == TABLE_COLUMNS and len(csv) == len(table) == 4
        assert (target / "table.md").read_text() == format_markdown(table)


# ----------------------------------------------------------------------------- plots


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_plot_curves(loaded: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    _, evals = loaded
    # a second environment with unaligned evaluation steps
    extra = evals.loc[evals["algo"] == "sac"].copy()
    extra["env"] = "HalfCheetah-v5"
    extra["env_step"] = extra["env_step"] + extra["seed"] * 10
    out = plot_curves(pd.concat([evals, extra], ignore_index=True), tmp_path / "p" / "c.png",
                      reps=200)
    assert out == tmp_path / "p" / "c.png"
    assert _is_png(out)
    with pytest.raises(ValueError, match="no evaluations"):
        plot_curves(evals.iloc[:0], tmp_path / "empty.png")


def test_plot_metrics(tmp_path: Path) -> None:
    runs, _ = load_runs(build_store(tmp_path / "r", damaged=False))
    metrics = load_metrics(runs)
    assert {"model_loss", "rollout_error", "env_step", *RUN_KEY_COLUMNS} <= set(metrics)
    assert len(metrics) == 3 * 5 + 4 + 5 + 5
    out = plot_metrics(metrics, ["model_loss", "rollout_error"], tmp_path / "m.png", "diag")
    assert _is_png(out)
    with pytest.raises(ValueError, match="lacks"):
        plot_metrics(metrics, ["nope"], tmp_path / "x.png", "diag")


def test_the_cli_prints_what_the_store_warns_about_as_one_line_each(store: Path) -> None:
    from typer.testing import CliRunner

    from mbrl_bench.cli import app

    res = CliRunner().invoke(app, ["table", str(store), "--out", str(store.parent / "t")])
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if line.startswith("warning: ")]
    assert any("broken" in line and "run skipped" in line for line in warned), res.output
    assert "RunStoreWarning" not in res.output and "warnings.warn" not in res.output
