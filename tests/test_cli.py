"""The `bench` command: smoke suite end to end, the table it reads back, list and help."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mbrl_bench.cli import app

runner = CliRunner()


ALGOS = ("sac", "slbo", "metrpo", "trpo")
"""The smoke suite's box recipes but MBPO (the golden runs run all of it, MBPO included, and the
Ray cluster test runs all of it through the command line)."""


@pytest.mark.timeout(900)  # a suite end to end: ~20 s alone, far more on a loaded machine
def test_smoke_suite_runs_and_table_reads_it(tmp_path: Path) -> None:
    out = tmp_path / "results"
    algos = ",".join((*ALGOS, "dyna-q"))
    res = runner.invoke(app, ["run", "--suite", "smoke", "--algos", algos, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "9 complete" in res.output
    assert "DynaMaze × sac" in res.output  # mixed suite: pairs whose spaces differ are skipped
    res = runner.invoke(app, ["table", str(out)])
    assert res.exit_code == 0, res.output
    with (out / "table.csv").open() as f:
        table = list(csv.DictReader(f))
    got = {(r["env"], r["algo"], int(r["budget"])) for r in table}
    assert got == {(env, algo, b) for algo in ALGOS
                   for env, b in (
        ("mbrl_bench_PointMass-v0", 150), ("mbrl_bench_PointMass-v0", 300),
        ("Pendulum-v1", 150), ("Pendulum-v1", 300))} | {
        ("DynaMaze", "dyna-q", 1000), ("DynaMaze", "dyna-q", 2000)}
    assert all(int(r["n_seeds"]) == 1 for r in table)
    assert "| smoke | Pendulum-v1 | sac |" in (out / "table.md").read_text()
    res = runner.invoke(app, ["plot", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "curves.png").stat().st_size > 1000
    # other budgets on demand (e.g. where runs still in progress have got to)
    res = runner.invoke(app, ["table", str(out), "--budgets", "300", "--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    with (tmp_path / "t" / "table.csv").open() as f:
        assert {int(r["budget"]) for r in csv.DictReader(f)} == {300}
    res = runner.invoke(app, ["table", str(out), "--budgets", "3k"])
    assert res.exit_code == 2 and "--budgets" in res.output
    # running the same command again skips everything
    res = runner.invoke(app, ["run", "--suite", "smoke", "--algos", algos, "--out", str(out)])
    assert "9 skipped" in res.output


def test_run_options_select_envs_seeds_and_steps(tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = runner.invoke(app, ["run", "--suite", "smoke", "--env", "Pendulum*", "--seeds", "3,5",
                              "--steps", "100", "--algos", "sac", "--out", str(out)])
    assert res.exit_code == 0, res.output
    dirs = sorted(p.name for p in (out / "smoke" / "Pendulum-v1" / "sac").iterdir())
    assert dirs == ["seed_3", "seed_5"]
    assert not (out / "smoke" / "mbrl_bench_PointMass-v0").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--suite", "nope"], "unknown suite"),
        (["run", "--suite", "smoke", "--algos", "nope"], "unknown algorithm"),
        (["run", "--suite", "smoke", "--env", "Hopper"], "no environment of the suite matches"),
        (["run", "--suite", "smoke", "--steps", "-3"], "positive"),
        (["run", "--suite", "smoke", "--seeds", "x"], "expected N"),
        (["table", "does-not-exist"], "does-not-exist"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path: Path, args: list[str], fragment: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert fragment in res.output


def test_list_and_help() -> None:
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for name in ("sac", "policy", "smoke", "classic", "mujoco", "Hopper-v5", "dyna-q",
                 "q-learning", "tabular"):
        assert name in res.output
    for cmd in ("run", "list", "table", "plot", "episodes"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output


def test_help_texts_have_no_unescaped_rich_markup() -> None:
    """Typer renders help through rich, which drops a bracketed word such as ``[wandb]`` as a
    style tag: every such bracket in a help text must be escaped (``\\[``)."""
    import re

    import typer.main

    tag = re.compile(r"(?<!\\)\[[a-z#/@][^\[]*?\]")  # rich's markup tags, unescaped
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        for text in texts:
            assert not tag.search(text), f"bench {name}: unescaped markup in {text!r}"
    res = runner.invoke(app, ["run", "--help"])
    assert "mbrl-bench[tensorboard]" in "".join(res.output.split())
    res = runner.invoke(app, ["show", "--help"])
    assert "`[sources]`" in "".join(res.output.split())


def test_command_help_has_no_line_break_inside_a_paragraph() -> None:
    """Typer's rich help keeps a docstring's line breaks (they showed mid-sentence in
    ``bench --help``): each command's help paragraphs are single lines."""
    import typer.main

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        for paragraph in (cmd.help or "").split("\n\n"):
            assert "\n" not in paragraph, f"bench {name}: a line break in {paragraph!r}"
    res = runner.invoke(app, ["--help"], terminal_width=200)
    assert "Finished runs are skipped and interrupted ones resume" in res.output


def test_diagnostics_plots_model_based_runs(tmp_path: Path) -> None:
    import json

    run = tmp_path / "res" / "s" / "Hopper-v5" / "mbpo" / "seed_0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({
        "run_id": "s/Hopper-v5/mbpo/seed_0", "suite": "s", "env": "Hopper-v5",
        "env_id": "Hopper-v5", "algo": "mbpo", "seed": 0, "status": "complete",
        "budget": 2000, "reporting_budgets": [2000], "threshold": None, "error": None,
        "code_version": "test"}))
    (run / "evals.csv").write_text("env_step,episodes,return_mean,return_std,return_min,"
                                   "return_max,wall_clock_s\n1000,3,10,0,10,10,1\n"
                                   "2000,6,20,0,20,20,2\n")
    (run / "metrics.csv").write_text("env_step,eps_m,eps_pi,bound_branched,k\n"
                                     "1000,0.5,0.1,300,1\n2000,0.4,0.2,350,2\n")
    res = runner.invoke(app, ["diagnostics", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    png = tmp_path / "res" / "diagnostics_s_Hopper-v5_mbpo.png"
    assert png.stat().st_size > 1000
    (run / "metrics.csv").write_text("env_step,critic_loss\n1000,1.0\n")
    res = runner.invoke(app, ["diagnostics", str(tmp_path / "res")])
    assert res.exit_code != 0 and "no model-based diagnostics" in res.output
