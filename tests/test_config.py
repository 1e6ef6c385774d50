"""Recipe and suite files: loading, merging, and the errors bad files give."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbrl_bench.errors import ConfigError
from mbrl_bench.optimizers.sac import SACConfig
from mbrl_bench.spec import available, load_recipe, load_suite


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_recipes_and_suites_load() -> None:
    for name in available("algorithms"):
        load_recipe(name)
    for name in available("suites"):
        suite = load_suite(name)
        for entry in suite.envs:
            for algo in suite.algorithms:
                load_recipe(algo, entry.id)


def test_sac_recipe_has_paper_settings() -> None:
    cfg = load_recipe("sac").config("optimizer")
    assert cfg == SACConfig(hidden_sizes=(256, 256), actor_lr=3e-4, critic_lr=3e-4,
                            batch_size=256, gamma=0.99, tau=0.005)
    assert load_recipe("sac").config("loop").initial_random_steps == 5000


def test_base_and_overrides_merge(tmp_path: Path) -> None:
    p = write(tmp_path, "fast.toml", """
description = "fast"
base = "sac"
[optimizer]
updates_per_step = 4
[overrides."Hopper-v5".optimizer]
target_entropy = -1.0
""")
    plain = load_recipe(str(p))
    hopper = load_recipe(str(p), "Hopper-v5")
    assert plain.config("optimizer").updates_per_step == 4
    assert plain.config("optimizer").hidden_sizes == (256, 256)  # from the base
    assert plain.config("optimizer").target_entropy is None
    assert hopper.config("optimizer").target_entropy == -1.0


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('base = "sac"\n[optimizer]\nlearning_rate = 1e-3', "optimizer.learning_rate",
         "unknown key"),
        ('base = "sac"\n[optimizer]\nbatch_size = "big"', "optimizer.batch_size", "an integer"),
        ('base = "sac"\n[optimizer]\nbatch_size = 2.5', "optimizer.batch_size", "an integer"),
        ('base = "sac"\n[optimizer]\ngamma = 1.5', "optimizer.gamma", "(0, 1]"),
        ('base = "sac"\n[optimizer]\nname = "ppo"', "optimizer.name", "unknown policy optimizer"),
        ('base = "sac"\n[optimizer]\nhidden_sizes = [256, -1]', "optimizer.hidden_sizes",
         "positive"),
        ('base = "sac"\n[loop]\ninitial_random_steps = -5', "loop.initial_random_steps",
         "non-negative"),
        ('base = "sac"\nbudget = 5', "budget", "unknown key"),
        ('base = "no-such-recipe"', "base", "no recipe 'no-such-recipe'"),
        ('[optimizer]\nname = "sac"', "loop", "missing"),
        ('base = "sac"\n[model]\nname = "x"', "model.name", "unknown dynamics model"),
        ('base = "sac"\n[overrides."Hoper-v5".optimizer]\ngamma = 0.9', "overrides.Hoper-v5",
         "not a registered gymnasium id"),
        ('base = "sac"\n[overrides."Hopper-v5".optimizer]\ntau = 0', "overrides.Hopper-v5"
         ".optimizer.tau", "(0, 1]"),
        ('base = "sac"\n[optimizer\n', "", "not valid TOML"),
    ],
)
def test_bad_recipe_errors_name_file_key_and_expectation(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    p = write(tmp_path, "bad.toml", f'description = "bad"\n{text}\n')
    with pytest.raises(ConfigError) as e:
        load_recipe(str(p))
    assert e.value.key == key
    assert fragment in str(e.value)
    if key:
        assert str(p) in str(e.value)


def test_recipe_base_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", 'base = "b"\n')
    write(tmp_path, "b.toml", 'base = "a"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_recipe("a", extra_dirs=(tmp_path,))


SUITE_OK = """
description = "ok"
algorithms = ["sac"]
[[envs]]
id = "Pendulum-v1"
budget = 1000
eval_every = 500
"""


def test_suite_loads_with_defaults(tmp_path: Path) -> None:
    s = load_suite(str(write(tmp_path, "s.toml", SUITE_OK)))
    assert s.name == "s" and s.seeds == (0, 1, 2) and s.envs[0].eval_episodes == 10
    assert s.envs[0].budgets == (1000,)


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        (("budget = 1000", "budget = -1"), "envs[0].budget", "positive"),
        (('id = "Pendulum-v1"', 'id = "Pendulumm-v1"'), "envs[0].id", "registered gymnasium id"),
        (("eval_every = 500", "eval_every = 5000"), "envs[0].eval_every", "1..budget"),
        (("eval_every = 500", "eval_every = 500\nreporting_budgets = [800, 400]"),
         "envs[0].reporting_budgets", "increasing"),
        (("eval_every = 500", "eval_every = 500\nthreshhold = 3"), "envs[0].threshhold",
         "unknown key"),
        (('algorithms = ["sac"]', 'algorithms = "sac"'), "algorithms", "a list of a string"),
        (('algorithms = ["sac"]', 'algorithms = ["sac"]\nseeds = [-1]'), "seeds",
         "non-negative"),
    ],
)
def test_bad_suite_errors(tmp_path: Path, change: tuple[str, str], key: str, fragment: str
                          ) -> None:
    p = write(tmp_path, "s.toml", SUITE_OK.replace(*change))
    with pytest.raises(ConfigError) as e:
        load_suite(str(p))
    assert e.value.key == key, str(e.value)
    assert fragment in str(e.value)
    assert str(p) in str(e.value)


def test_duplicate_env_names_need_a_name(tmp_path: Path) -> None:
    text = SUITE_OK + '[[envs]]\nid = "Pendulum-v1"\nbudget = 10\neval_every = 5\n'
    with pytest.raises(ConfigError, match="distinct names"):
        load_suite(str(write(tmp_path, "s.toml", text)))
    load_suite(str(write(tmp_path, "s2.toml", text + 'name = "pendulum-short"\n')))


def test_an_ablation_beats_its_bases_per_task_values(tmp_path: Path) -> None:
    """Base per-task < child top-level < child per-task (each level resolved for the env)."""
    write(tmp_path, "parent.toml", """
base = "sac"
[overrides."Hopper-v5".optimizer]
updates_per_step = 20
target_entropy = -1.0
""")
    write(tmp_path, "child.toml", """
base = "parent"
[optimizer]
updates_per_step = 1
[overrides."Walker2d-v5".optimizer]
updates_per_step = 7
""")
    hopper = load_recipe("child", "Hopper-v5", extra_dirs=(tmp_path,)).config("optimizer")
    walker = load_recipe("child", "Walker2d-v5", extra_dirs=(tmp_path,)).config("optimizer")
    assert (hopper.updates_per_step, hopper.target_entropy) == (1, -1.0)
    assert (walker.updates_per_step, walker.target_entropy) == (7, None)
    assert load_recipe("parent", "Hopper-v5", extra_dirs=(tmp_path,)).config(
        "optimizer").updates_per_step == 20


def test_a_field_added_later_keeps_old_run_hashes_while_at_its_default() -> None:
    from dataclasses import replace

    from mbrl_bench.runner.execute import expand
    from mbrl_bench.spec import EnvEntry, load_recipe, load_suite, recipe_hash
    from mbrl_bench.sweep import parse_set

    # written into run.json by code df6730b, before `improve_from_initial` and `optimal_length`
    # (and before mbpo's patience became 6 and its 5,000-step fit cap was dropped: that run had
    # patience 5 and the cap)
    (spec,) = expand(load_suite("mujoco"), ["mbpo"], [1], steps=5000,
                     env_filter="InvertedPendulum", progress=lambda s: None,
                     sets=[parse_set("model.patience=5"), parse_set("model.max_steps=5000")])
    assert spec.config_hash == "92a1f3a59199"
    recipe = load_recipe("mbpo", "Hopper-v5")
    entry = EnvEntry(id="Hopper-v5", budget=1000, eval_every=500)
    base = recipe_hash(recipe, entry, 0)
    full = recipe.to_dict()
    assert "improve_from_initial" in full["parts"]["model"]  # run.json still records it
    changed = recipe.with_config("model", replace(recipe.config("model"),
                                                  improve_from_initial=True))
    assert recipe_hash(changed, entry, 0) != base
    assert recipe_hash(recipe, replace(entry, optimal_length=14), 0) != base


def test_drop_removes_parts_of_the_base(tmp_path: Path) -> None:
    p = write(tmp_path, "nomodel.toml", 'base = "mbpo"\ndrop = ["model", "rollout"]\n')
    recipe = load_recipe(str(p), "Hopper-v5")
    assert [part.kind for part in recipe.parts] == ["loop", "optimizer"]
    assert recipe.config("optimizer") == load_recipe("mbpo", "Hopper-v5").config("optimizer")


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('base = "mbpo"\ndrop = ["loop"]', "drop", "a list of part kinds"),
        ('base = "mbpo"\ndrop = "model"', "drop", "a list of part kinds"),
        ('base = "sac"\ndrop = ["model"]', "drop", "the base recipe has no model"),
        ('base = "mbpo"\ndrop = ["model", "rollout"]\n[model]\nlr = 1.0', "model", "drops it"),
    ],
)
def test_bad_drop_is_one_line(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    p = write(tmp_path, "bad.toml", text)
    with pytest.raises(ConfigError) as e:
        load_recipe(str(p))
    assert e.value.key == key and fragment in str(e.value), str(e.value)
