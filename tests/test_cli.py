"""The `bench` command: smoke suite end to end, the table it reads back, list and help."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mbrl_bench.cli import app

runner = CliRunner()


def test_smoke_suite_runs_and_table_reads_it(tmp_path: Path) -> None:
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", "--suite", "smoke", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 complete" in res.output
    res = runner.invoke(app, ["table", str(out)])
    assert res.exit_code == 0, res.output
    with (out / "table.csv").open() as f:
        table = list(csv.DictReader(f))
    got = {(r["env"], r["algo"], int(r["budget"])) for r in table}
    assert got == {("mbrl_bench_PointMass-v0", "sac", 300), ("mbrl_bench_PointMass-v0", "sac", 600),
                   ("Pendulum-v1", "sac", 200), ("Pendulum-v1", "sac", 400)}
    assert all(int(r["n_seeds"]) == 1 for r in table)
    assert "| smoke | Pendulum-v1 | sac |" in (out / "table.md").read_text()
    res = runner.invoke(app, ["plot", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "curves.png").stat().st_size > 1000
    # running the same command again skips everything
    res = runner.invoke(app, ["run", "--suite", "smoke", "--out", str(out)])
    assert "2 skipped" in res.output


def test_run_options_select_envs_seeds_and_steps(tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = runner.invoke(app, ["run", "--suite", "smoke", "--env", "Pendulum*", "--seeds", "3,5",
                              "--steps", "200", "--algos", "sac", "--out", str(out)])
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
    for name in ("sac", "policy", "smoke", "classic", "mujoco", "Hopper-v5"):
        assert name in res.output
    for cmd in ("run", "list", "table", "plot"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output
