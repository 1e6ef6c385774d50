"""`bench show`: every setting of a resolved recipe with its value, doc and source, and the
settings two recipes differ in; the field docs read from the config classes' source."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mbrl_bench.cli import app
from mbrl_bench.config import field_docs
from mbrl_bench.explain import differences, settings_of
from mbrl_bench.parts import PART_KINDS, registry_for
from mbrl_bench.spec import available, citations, load_recipe, resolve_recipe

runner = CliRunner()


@dataclass(frozen=True)
class _Base:
    a: int = 1
    """First line of a.

    More about a."""
    b: str = "x"
    undocumented: float = 0.0


@dataclass(frozen=True)
class _Child(_Base):
    b: str = "y"
    """B, as the child says."""
    c: tuple[int, ...] = ()
    """``c`` items."""
    # a comment is not a docstring
    d: int = 0


def test_field_docs_are_the_first_line_of_each_fields_docstring() -> None:
    assert field_docs(_Base) == {"a": "First line of a."}
    assert field_docs(_Child) == {"a": "First line of a.", "b": "B, as the child says.",
                                  "c": "``c`` items."}


def test_every_registered_config_field_has_a_doc_or_is_known_undocumented() -> None:
    documented = total = 0
    for kind in PART_KINDS:
        for entry in registry_for(kind):
            docs = field_docs(entry.config_cls)
            assert set(docs) <= {f.name for f in fields(entry.config_cls)}
            documented += len(docs)
            total += len(fields(entry.config_cls))
    assert documented > total // 2  # the extractor finds the docs the classes have


@pytest.mark.parametrize("recipe", available("algorithms"))
@pytest.mark.parametrize("env", [None, "Hopper-v5"])
def test_show_prints_every_setting_of_every_shipped_recipe(recipe: str, env: str | None) -> None:
    res = runner.invoke(app, ["show", recipe, *(["--env", env] if env else [])])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1].split() == ["setting", "value", "source", "cites", "doc"]
    shown = {line.split()[0]: line for line in lines[2:]}
    resolved, sources = resolve_recipe(recipe, env)
    expected = settings_of(resolved, sources, citations(sources))
    assert list(shown) == [s.key for s in expected]
    for s in expected:
        assert s.source in shown[s.key]
        assert not s.doc or s.doc in shown[s.key]
        assert s.cite in shown[s.key]


def write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.toml").write_text(text)


def test_sources_of_base_file_override_and_set(tmp_path: Path) -> None:
    write(tmp_path, "parent", """
base = "sac"
[optimizer]
updates_per_step = 4
[overrides."Hopper-v5".optimizer]
target_entropy = -1.0
tau = 0.02
""")
    write(tmp_path, "child", """
base = "parent"
[optimizer]
tau = 0.01
[overrides."Hopper-v5".optimizer]
batch_size = 64
""")
    recipe, sources = resolve_recipe("child", "Hopper-v5", (tmp_path,),
                                     (("optimizer.gamma", 0.9), ("loop.log_every", 10)))
    got = {s.key: (s.value, s.source) for s in settings_of(recipe, sources)}
    assert got["optimizer.name"] == ("sac", "sac")
    assert got["optimizer.hidden_sizes"] == ([256, 256], "sac")
    assert got["optimizer.updates_per_step"] == (4, "parent")
    assert got["optimizer.target_entropy"] == (-1.0, "override Hopper-v5 in parent")
    assert got["optimizer.tau"] == (0.01, "child")  # the child's top level beats the parent's
    assert got["optimizer.batch_size"] == (64, "override Hopper-v5 in child")
    assert got["optimizer.gamma"] == (0.9, "--set")
    assert got["loop.log_every"] == (10, "--set")
    assert got["optimizer.init_alpha"] == (1.0, "sac")  # the file sets the default value
    assert got["optimizer.log_std_min"] == (-20.0, "default")
    assert recipe == load_recipe("child", "Hopper-v5", (tmp_path,),
                                 (("optimizer.gamma", 0.9), ("loop.log_every", 10)))
    plain, plain_sources = resolve_recipe("child", None, (tmp_path,))
    got = {s.key: (s.value, s.source) for s in settings_of(plain, plain_sources)}
    assert got["optimizer.target_entropy"] == (None, "default")
    assert got["optimizer.batch_size"] == (256, "sac")


def test_a_replaced_part_forgets_the_bases_sources(tmp_path: Path) -> None:
    write(tmp_path, "swap", 'base = "pets"\n[planner]\nname = "random_shooting"\n')
    recipe, sources = resolve_recipe("swap", "HalfCheetah-v5", (tmp_path,))
    got = {s.key: (s.value, s.source) for s in settings_of(recipe, sources)}
    assert got["planner.name"] == ("random_shooting", "swap")
    assert got["planner.population_size"][1] == "default"  # not pets' CEM 500 nor its override
    assert got["model.ensemble_size"] == (5, "pets")


def test_a_diff_lists_exactly_the_dropped_parts() -> None:
    res = runner.invoke(app, ["show", "mbpo-no-model", "--diff", "mbpo", "--env", "Hopper-v5"])
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.output.splitlines()[1:]]
    assert rows == [["model.name", "—", '"pe"', "mbpo"], ["rollout.name", "—", '"branched"',
                                                        "mbpo"]]


def test_a_diff_gives_both_values_and_their_sources() -> None:
    a = settings_of(*resolve_recipe("mbpo-k1", "Hopper-v5"))
    b = settings_of(*resolve_recipe("mbpo", "Hopper-v5"))
    [d] = differences(a, b)
    assert d.key == "rollout.k"
    assert (d.a and (d.a.value, d.a.source)) == (1, "mbpo-k1")
    assert (d.b and (d.b.value, d.b.source)) == (None, "default")
    pets = settings_of(*resolve_recipe("pets", "HalfCheetah-v5"))
    mppi = settings_of(*resolve_recipe("pets-mppi", "HalfCheetah-v5"))
    diff = {d.key: d for d in differences(pets, mppi)}
    assert diff["planner.name"].b is not None and diff["planner.name"].b.value == "mppi"
    assert diff["planner.elite_ratio"].b is None  # a CEM setting MPPI has not
    assert diff["planner.smoothing"].a is None
    res = runner.invoke(app, ["show", "sac", "--diff", "sac"])
    assert res.exit_code == 0 and "the same settings" in res.output


def test_show_errors_are_one_line() -> None:
    res = runner.invoke(app, ["show", "sac", "--set", "rollout.k=5"])
    assert res.exit_code == 2 and "--set rollout.k: recipe 'sac' has no rollout" in res.output
    res = runner.invoke(app, ["show", "mbpo", "--set", "rollout.k=1,5"])
    assert res.exit_code == 2 and "takes one value" in res.output
    res = runner.invoke(app, ["show", "nope"])
    assert res.exit_code == 2 and "unknown algorithm" in res.output
    for cmd in (["show", "sac"], ["list"]):  # a misspelt folder is not searched in silence
        res = runner.invoke(app, [*cmd, "--algorithms-dir", "no-such-folder"])
        assert res.exit_code == 2 and res.output.strip() == (
            "error: --algorithms-dir no-such-folder: no such folder"), res.output
    res = runner.invoke(app, ["show", "mbpo", "--env", "Hoper-v5"])  # misspelt: no silent default
    assert res.exit_code == 2 and res.output.strip() == (
        "error: --env: Hoper-v5: no gymnasium environment has this id (e.g. Hopper-v5, "
        "Pendulum-v1, mbrl_bench/PointMass-v0)")
