"""Sweeps from the command line (`bench run --set KIND.FIELD=V1,V2,...`): parsing, expansion,
the identity of swept runs, errors, and a tiny sweep end to end with its table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import tiny_suite
from typer.testing import CliRunner

from mbrl_bench.cli import app
from mbrl_bench.errors import ConfigError
from mbrl_bench.runner.execute import expand
from mbrl_bench.spec import load_recipe, load_suite, recipe_hash
from mbrl_bench.sweep import parse_set, settings_label, split_values, sweep_points


def mujoco_specs(algos: list[str], options: list[str], seeds: tuple[int, ...] = (0,)):
    return expand(load_suite("mujoco"), algos, list(seeds), env_filter="Hopper",
                  progress=lambda s: None, sets=[parse_set(o) for o in options])


def test_values_split_on_commas_outside_brackets_and_quotes() -> None:
    assert split_values('1, [2, 3], "a,b", {x = 1, y = 2}') == [
        "1", "[2, 3]", '"a,b"', "{x = 1, y = 2}"]
    assert parse_set("rollout.k=1,5,15") == ("rollout.k", (1, 5, 15))
    assert parse_set('optimizer.hidden_sizes=[64, 64],[32]') == (
        "optimizer.hidden_sizes", ([64, 64], [32]))
    assert parse_set('rollout.propagation=mean,"elites"') == (
        "rollout.propagation", ("mean", "elites"))
    assert parse_set("optimizer.learn_alpha=true,0.5") == ("optimizer.learn_alpha", (True, 0.5))


def test_a_sweep_is_the_product_of_algos_values_and_seeds() -> None:
    specs = mujoco_specs(["mbpo", "mbpo-k1"], ["rollout.k=1,5,15",
                                               "optimizer.updates_per_step=10,20"], (0, 1))
    assert len(specs) == 2 * 3 * 2 * 2
    got = {(s.algo, s.seed, s.settings) for s in specs}
    assert len(got) == len(specs)
    assert {s.settings for s in specs} == {
        (("rollout.k", k), ("optimizer.updates_per_step", u)) for k in (1, 5, 15) for u in (10, 20)}
    for s in specs:  # the values are in the resolved configs the runs are built from
        values = dict(s.settings)
        assert s.recipe.config("rollout").k == values["rollout.k"]
        assert s.recipe.config("optimizer").updates_per_step == values["optimizer.updates_per_step"]
        assert s.recipe.config("rollout").k_schedule == (20, 150, 1, 15)  # Hopper's, kept
        assert s.meta()["settings"] == values
        assert s.meta()["recipe"] == s.algo and s.meta()["algo"] == s.label
    ids = {s.run_id for s in specs}
    dirs = {s.run_dir(Path("out")) for s in specs}
    hashes = {s.config_hash for s in specs}
    assert len(ids) == len(dirs) == len(hashes) == len(specs)
    assert "mujoco/Hopper-v5/mbpo[optimizer.updates_per_step=10,rollout.k=5]/seed_1" in ids


def test_a_set_beats_the_recipe_its_base_and_its_per_task_values() -> None:
    [spec] = mujoco_specs(["mbpo"], ["optimizer.target_entropy=-2"])  # Hopper override: -1.0
    assert spec.recipe.config("optimizer").target_entropy == -2.0
    assert spec.settings == (("optimizer.target_entropy", -2.0),)  # as the config holds it
    assert spec.label == "mbpo[optimizer.target_entropy=-2.0]"
    [k1] = mujoco_specs(["mbpo-k1"], ["rollout.k=3"])  # over the ablation's own k = 1
    assert k1.recipe.config("rollout").k == 3


def test_runs_without_set_keep_their_id_folder_and_hash() -> None:
    suite = load_suite("mujoco")
    [spec] = mujoco_specs(["mbpo"], [])
    entry = next(e for e in suite.envs if e.id == "Hopper-v5")
    assert spec.settings == () and spec.label == "mbpo"
    assert spec.run_id == "mujoco/Hopper-v5/mbpo/seed_0"
    assert spec.run_dir(Path("out")) == Path("out/mujoco/Hopper-v5/mbpo/seed_0")
    assert spec.config_hash == recipe_hash(load_recipe("mbpo", "Hopper-v5"), entry, 0)
    assert spec.recipe == load_recipe("mbpo", "Hopper-v5", settings=())
    # a set that gives a recipe's own value is another folder, with the same configuration
    [same] = mujoco_specs(["mbpo-k1"], ["rollout.k=1"])
    [plain] = mujoco_specs(["mbpo-k1"], [])
    assert same.config_hash == plain.config_hash and same.run_id != plain.run_id


def test_labels_are_stable_and_safe_in_file_names() -> None:
    a = settings_label("mbpo", (("rollout.k", 5), ("optimizer.hidden_sizes", [64, 64])))
    b = settings_label("mbpo", (("optimizer.hidden_sizes", [64, 64]), ("rollout.k", 5)))
    assert a == b == "mbpo[optimizer.hidden_sizes=[64,64],rollout.k=5]"
    assert settings_label("x", (("rollout.propagation", "a/b c"),)) == (
        "x[rollout.propagation=a_b_c]")
    assert settings_label("sac", ()) == "sac"


@pytest.mark.parametrize(
    ("algos", "option", "key", "fragment"),
    [
        (["mbpo"], "foo.k=1", "--set foo.k", "unknown part kind 'foo'; expected one of: loop,"),
        (["mbpo"], "rollout.kk=1", "--set rollout.kk",
         "unknown key for BranchedRolloutConfig; expected one of: "),
        (["mbpo"], "rollout.k=1,x", "--set rollout.k", "expected an integer"),
        (["mbpo"], "optimizer.updates_per_step=2.5", "--set optimizer.updates_per_step",
         "expected an integer, got 2.5"),
        (["mbpo"], "rollout.k=0", "--set rollout.k", "a rollout length >= 1"),
        (["mbpo"], "optimizer.gamma=1.5", "--set optimizer.gamma", "(0, 1]"),
        (["mbpo"], "rollout.propagation=bogus", "--set rollout.propagation", "expected one of"),
        (["mbpo"], "rollout.name=x", "--set rollout.name", "unknown key"),
        (["mbpo", "sac"], "rollout.k=5", "--set rollout.k", "recipe 'sac' has no rollout"),
        (["mbpo"], "rollout.k", "--set rollout.k", "expected KIND.FIELD=V1,V2,..."),
        (["mbpo"], "rollout.k=1,,2", "--set rollout.k", "an empty value"),
        (["mbpo"], "rollout.real_ratio=1,1.0", "--set", "the same value"),
    ],
)
def test_bad_sets_are_one_line_errors_naming_the_option(
    algos: list[str], option: str, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as e:
        mujoco_specs(algos, [option])
    message = str(e.value)
    assert "\n" not in message and message.startswith(key + ":"), message
    assert fragment in message, message


def test_a_key_given_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        sweep_points([parse_set("rollout.k=1"), parse_set("rollout.k=2")])
    assert sweep_points([]) == [()]


def test_a_set_of_the_initial_random_steps_beats_the_suites() -> None:
    def random_steps(options: list[str]) -> list[int]:
        specs = expand(load_suite("smoke"), ["sac"], [0], env_filter="Pendulum",
                       progress=lambda s: None, sets=[parse_set(o) for o in options])
        return [s.recipe.config("loop").initial_random_steps for s in specs]

    assert random_steps([]) == [200]  # the suite's, over the recipe's 5000
    assert random_steps(["loop.initial_random_steps=7,9"]) == [7, 9]
    assert random_steps(["optimizer.batch_size=64"]) == [200]


runner = CliRunner()


def test_a_sweep_runs_end_to_end_and_the_table_has_its_column(files: Path) -> None:
    (files / "suites" / "t.toml").write_text(tiny_suite(300, 150, episodes=1))
    out = files / "out"
    common = ["run", "--suite", str(files / "suites" / "t.toml"), "--algorithms-dir",
              str(files / "algorithms"), "--out", str(out)]
    res = runner.invoke(app, [*common, "--set", "loop.initial_random_steps=200,300"])
    assert res.exit_code == 0, res.output
    assert "2 runs" in res.output and "2 complete" in res.output
    res = runner.invoke(app, common)  # the same recipe without settings: its usual folder
    assert res.exit_code == 0, res.output
    algos = out / "t" / "mbrl_bench_PointMass-v0"
    assert sorted(p.name for p in algos.iterdir()) == [
        "tiny-sac", "tiny-sac[loop.initial_random_steps=200]",
        "tiny-sac[loop.initial_random_steps=300]"]
    meta = json.loads((algos / "tiny-sac[loop.initial_random_steps=200]" / "seed_0" /
                       "run.json").read_text())
    assert meta["settings"] == {"loop.initial_random_steps": 200}
    assert meta["config"]["recipe"]["parts"]["loop"]["initial_random_steps"] == 200
    assert meta["recipe"] == "tiny-sac"
    res = runner.invoke(app, [*common, "--set", "loop.initial_random_steps=200,300"])
    assert "2 skipped" in res.output, res.output
    res = runner.invoke(app, ["table", str(out)])
    assert res.exit_code == 0, res.output
    assert "| loop.initial_random_steps |" in res.output
    with (out / "table.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(r["algo"], r["loop.initial_random_steps"]) for r in table] == [
        ("tiny-sac", ""), ("tiny-sac[loop.initial_random_steps=200]", "200"),
        ("tiny-sac[loop.initial_random_steps=300]", "300")]
    res = runner.invoke(app, [*common, "--set", "model.lr=0.1"])
    assert res.exit_code == 2
    assert "--set model.lr: recipe 'tiny-sac' has no model" in res.output
