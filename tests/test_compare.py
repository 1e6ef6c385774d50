"""`bench compare`: probability of improvement per task and overall, with intervals; only
complete runs count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reporting import write_run
from typer.testing import CliRunner

from mbrl_bench.cli import app
from mbrl_bench.reporting.aggregate import iqm, probability_of_improvement_ci
from mbrl_bench.reporting.normalise import random_scores

runner = CliRunner()


def test_point_estimate_by_hand() -> None:
    # task 1: pairs (1,0) win, (1,3) lose, (2,0) win, (2,3) lose -> 0.5
    # task 2: x = 5 against y = 5 and 4: a tie and a win -> 0.75
    p, lo, hi = probability_of_improvement_ci([[1.0, 2.0], [5.0]], [[0.0, 3.0], [5.0, 4.0]],
                                              np.random.default_rng(0), reps=500)
    assert p == pytest.approx((0.5 + 0.75) / 2)
    assert 0.0 <= lo <= p <= hi <= 1.0


def test_interval_is_seeded_and_covers_about_as_stated() -> None:
    """X ~ N(0.5, 1), Y ~ N(0, 1), 10 runs each: the true P(X > Y) is Φ(0.5 / √2) = 0.638;
    the 95% intervals of 200 synthetic experiments cover it in 85-100% of them (percentile
    bootstrap intervals of small samples run a little narrow)."""
    rng = np.random.default_rng(1)
    truth = 0.6382
    covered = 0
    for _ in range(200):
        x, y = rng.normal(0.5, 1, 10), rng.normal(0, 1, 10)
        _, lo, hi = probability_of_improvement_ci([x], [y], np.random.default_rng(2), reps=400)
        covered += lo <= truth <= hi
    assert 0.85 <= covered / 200 <= 1.0, covered
    once = probability_of_improvement_ci([x], [y], np.random.default_rng(7), reps=300)
    assert once == probability_of_improvement_ci([x], [y], np.random.default_rng(7), reps=300)


def test_bench_compare_one_line_per_task_and_overall(tmp_path: Path) -> None:
    for seed in range(3):
        write_run(tmp_path, "slbo", seed, [1000, 2000], [10.0, 20.0 + seed])
        write_run(tmp_path, "trpo", seed, [1000, 2000], [5.0, 10.0 + seed])
        write_run(tmp_path, "slbo", seed, [1000, 2000], [1.0, 2.0 + seed], env="Hopper-v5")
        write_run(tmp_path, "trpo", seed, [1000, 2000], [1.0, 2.0 + seed], env="Hopper-v5")
    write_run(tmp_path, "trpo", 3, [1000], [99.0], status="failed")
    write_run(tmp_path, "trpo", 4, [1000], [99.0], status="running")
    res = runner.invoke(app, ["compare", str(tmp_path), "slbo", "trpo"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("smoke/Hopper-v5 @2000: P(slbo > trpo) = 0.50")
    assert lines[1].startswith("smoke/Pendulum-v1 @2000: P(slbo > trpo) = 1.00 [1.00, 1.00]")
    assert "(3 vs 3 runs, 2 not complete or short, left out)" in lines[1]
    assert lines[2].startswith("overall: P(slbo > trpo) = 0.75")
    res = runner.invoke(app, ["compare", str(tmp_path), "slbo", "sac"])
    assert res.exit_code == 2 and "no runs of 'sac'" in res.output


def test_latex_table_parses_and_marks_best_only_without_overlap(tmp_path: Path) -> None:
    from mbrl_bench.reporting.table import write_table

    for seed in range(3):  # Pendulum: slbo clearly above trpo; Hopper: overlapping
        write_run(tmp_path, "slbo", seed, [1000, 2000], [10.0, 20.0 + seed])
        write_run(tmp_path, "trpo", seed, [1000, 2000], [5.0, 10.0 + seed])
        write_run(tmp_path, "slbo", seed, [1000, 2000], [1.0, 2.0 + seed], env="Hopper-v5")
        write_run(tmp_path, "trpo", seed, [1000, 2000], [1.0, 2.5 + seed], env="Hopper-v5")
    write_run(tmp_path, "trpo", 3, [1000], [99.0], status="failed", env="mbrl_bench_PointMass")
    write_table(tmp_path)
    tex = (tmp_path / "table.tex").read_text().splitlines()
    assert tex[0] == r"\begin{tabular}{llrrrlr}" and tex[-1] == r"\end{tabular}"
    assert tex[1] == r"\toprule" and tex[-2] == r"\bottomrule" and r"\midrule" in tex
    rows = [line for line in tex if line.endswith(r"\\")]
    assert all(line.count("&") == 6 for line in rows)  # 7 columns on every row
    body = rows[1:]
    bold = [line for line in body if r"\textbf" in line]
    assert bold and all("Pendulum" in line and "& slbo &" in line for line in bold)
    assert any(r"mbrl\_bench\_PointMass" in line and "& 1 &" in line for line in body)


def test_table_reference_puts_published_numbers_beside_ours(tmp_path: Path) -> None:
    from mbrl_bench.reporting.table import published_references

    refs = published_references()
    assert all(r.source and r.budget > 0 for r in refs)
    sac = next(r for r in refs if (r.env_id, r.algo) == ("Pendulum-v1", "sac"))
    for seed in range(2):
        write_run(tmp_path, "sac", seed, [1000, 2000, sac.budget], [-900.0, -400.0, -160.0])
    res = runner.invoke(app, ["table", str(tmp_path), "--budgets", f"2000,{sac.budget}",
                              "--reference"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "table.md").read_text()
    row = next(line for line in md.splitlines() if f"| {sac.budget} |" in line)
    assert row.endswith(f"| {sac.value:.1f} [1] |")
    assert f"[1] {sac.source}" in md
    other = next(line for line in md.splitlines() if "| 2000 |" in line)
    assert other.endswith("| — |")


def _runs_at(tmp_path: Path, env: str, budget: int, algo: str, returns: list[float]) -> None:
    import json

    for seed, ret in enumerate(returns):
        d = write_run(tmp_path, algo, seed, [budget // 2, budget], [ret / 2, ret], env=env)
        meta = json.loads((d / "run.json").read_text())
        meta.update(budget=budget, reporting_budgets=[budget // 2, budget])
        (d / "run.json").write_text(json.dumps(meta))


def test_normalised_scores_and_aggregates_by_hand(tmp_path: Path) -> None:
    from mbrl_bench.reporting.normalise import aggregate, normalised_scores, task_scales
    from mbrl_bench.reporting.table import Published, load_runs

    _runs_at(tmp_path, "Pendulum-v1", 20000, "sac", [-200.0, -600.0])
    _runs_at(tmp_path, "InvertedPendulum-v5", 20000, "sac", [1000.0, 500.0])
    _runs_at(tmp_path, "Reacher-v5", 20000, "sac", [-5.0, -6.0])  # no published return
    runs, evals = load_runs(tmp_path)
    published = [Published("Pendulum-v1", "sac", 20000, -200.0, "s", ""),
                 Published("InvertedPendulum-v5", "mbpo", 20000, 1000.0, "s", "")]
    scales, skipped = task_scales(runs, {"Pendulum-v1": -1000.0, "InvertedPendulum-v5": 0.0,
                                         "Reacher-v5": -40.0}, published)
    assert skipped == ["smoke/Reacher-v5 (no published return at 20000)"]
    scores = normalised_scores(runs, evals, scales)
    got = sorted(zip(scores["task"], scores["seed"], scores["score"], strict=True))
    assert got == [("smoke/InvertedPendulum-v5", 0, 1.0), ("smoke/InvertedPendulum-v5", 1, 0.5),
                   ("smoke/Pendulum-v1", 0, 1.0), ("smoke/Pendulum-v1", 1, 0.5)]
    table = aggregate(scores, reps=200)
    row = table.iloc[0]
    assert (row["tasks"], row["runs"]) == (2, 2)
    assert row["mean"] == pytest.approx(0.75) and row["median"] == pytest.approx(0.75)
    assert row["optimality_gap"] == pytest.approx(0.25)
    assert row["iqm_lo"] <= row["iqm"] <= row["iqm_hi"]


def test_bench_aggregate_writes_tables_and_names_left_out_tasks(tmp_path: Path) -> None:
    _runs_at(tmp_path, "Pendulum-v1", 20000, "sac", [-200.0, -600.0, -157.0])
    _runs_at(tmp_path, "Reacher-v5", 20000, "sac", [-5.0, -6.0, -7.0])
    res = runner.invoke(app, ["aggregate", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "| sac | 1 | 3 |" in res.output
    assert "Not normalised: smoke/Reacher-v5" in res.output
    assert (tmp_path / "aggregate.csv").exists() and (tmp_path / "aggregate.md").exists()
    over = pd.read_csv(tmp_path / "iqm_over_budget.csv")
    # evaluations at 10k and 20k: nothing before 50% of the budget, then two points
    assert list(over["fraction"]) == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    low = random_scores()["Pendulum-v1"]
    assert over["iqm"].iloc[-1] == pytest.approx(
        iqm([(r - low) / (-157.0 - low) for r in (-200.0, -600.0, -157.0)]))
    assert over["iqm"].iloc[0] == pytest.approx(  # at 50%: the returns at 10k (half)
        iqm([(r / 2 - low) / (-157.0 - low) for r in (-200.0, -600.0, -157.0)]))
    for stem in ("aggregate", "profiles", "iqm_over_budget"):  # vector versions for papers
        assert (tmp_path / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert b"<svg" in (tmp_path / f"{stem}.svg").read_bytes()[:2000]
    for name in ("aggregate.png", "profiles.png", "iqm_over_budget.png"):  # not blank
        from matplotlib.image import imread

        pixels = imread(tmp_path / name)
        assert pixels.shape[0] > 100 and float(pixels[..., :3].std()) > 0.01, name


def test_difference_of_means_by_hand_and_its_interval() -> None:
    from mbrl_bench.reporting.aggregate import difference_ci

    d, lo, hi = difference_ci([3.0, 5.0], [1.0], np.random.default_rng(0), reps=500)
    assert d == 3.0  # mean(3, 5) - 1
    assert (lo, hi) != (d, d) and 2.0 <= lo <= d <= hi <= 4.0  # resamples of {3, 5} minus 1
    assert difference_ci([2.0], [1.0], np.random.default_rng(0)) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="contains NaN"):
        difference_ci([1.0, float("nan")], [1.0], np.random.default_rng(0))


def test_each_ablation_against_its_base_table_figure_and_command(tmp_path: Path) -> None:
    from mbrl_bench.reporting.ablation import ablation_table, shipped_base

    assert [shipped_base(a) for a in ("mbpo-no-model", "mbpo-mve", "pets-ts1", "mbpo",
                                      "mbpo[rollout.k=1]", "not-a-recipe")] == [
        "mbpo", "mbpo", "pets", None, "mbpo", None]
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, "mbpo", seed, [1000, 2000], [10.0, 20.0 + seed])
        write_run(root, "mbpo-no-model", seed, [1000, 2000], [5.0, 10.0 + seed])
        write_run(root, "mbpo[rollout.k=1]", seed, [1000, 2000], [5.0, 30.0 + seed])
        write_run(root, "sac", seed, [1000, 2000], [1.0, 2.0])  # no base: not an ablation
    write_run(root, "mbpo-no-model", 3, [1000], [99.0], status="failed")
    from mbrl_bench.reporting.table import load_runs

    table = ablation_table(*load_runs(root))
    assert list(table["ablation"]) == ["mbpo-no-model", "mbpo[rollout.k=1]"]
    no_model, k1 = table.to_dict("records")
    assert (no_model["budget"], no_model["base_mean"], no_model["ablation_mean"]) == (2000, 21.0,
                                                                                    11.0)
    assert no_model["difference"] == -10.0 and no_model["difference_hi"] < 0
    assert no_model["p_improvement"] == 0.0 and no_model["left_out"] == 1
    assert no_model["ablation_returns"] == (10.0, 11.0, 12.0)
    assert k1["difference"] == 10.0 and k1["p_improvement"] == 1.0
    res = runner.invoke(app, ["ablations", str(root), "--budget", "1000", "--out",
                              str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "| smoke/Pendulum-v1 | mbpo | mbpo-no-model | 1000 | 10.0 [10.0, 10.0] | 5.0" in (
        res.output)
    for name in ("ablations.csv", "ablations.md", "ablations.png", "ablations.pdf",
                 "ablations.svg"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    only_sac = tmp_path / "sac-only"
    write_run(only_sac, "sac", 0, [1000], [1.0])
    res = runner.invoke(app, ["ablations", str(only_sac)])
    assert res.exit_code == 2 and "no ablation beside its base" in res.output
    res = runner.invoke(app, ["report", str(root), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    section = page[page.index("<h2>Ablations</h2>"):page.index("<h2>Runs</h2>")]
    assert "class='ablations'" in section or 'class="ablations"' in section, section[:300]
    assert section.count("data:image/png;base64,") == 1 and "mbpo-no-model" in section
