"""Every setting a shipped recipe writes cites where its value comes from (`[sources]`), the
citations name only settings that exist, and `bench show` prints them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mbrl_bench.cli import app
from mbrl_bench.config import load_toml
from mbrl_bench.errors import ConfigError
from mbrl_bench.spec import (
    available,
    citations,
    find_file,
    load_recipe,
    resolve_recipe,
    written_keys,
)

runner = CliRunner()


@pytest.mark.parametrize("recipe", available("algorithms"))
def test_every_shipped_setting_has_a_source(recipe: str) -> None:
    data = load_toml(find_file(recipe, "algorithms"))
    cited = set(data.get("sources", {}))
    missing = [k for k in written_keys(data) if k not in cited]
    assert not missing, f"{recipe}: settings without a source: {missing}"


def test_a_source_for_a_setting_the_file_does_not_write_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text('description = "x"\nbase = "sac"\n[optimizer]\n'
                                     'batch_size = 64\n[sources]\n"optimizer.batch_size" = '
                                     '"ours: small"\n"optimizer.tau" = "a paper"\n')
    with pytest.raises(ConfigError, match=r"sources\.optimizer\.tau"):
        load_recipe(str(tmp_path / "r.toml"))


def test_citations_follow_the_file_and_task_that_set_each_value(tmp_path: Path) -> None:
    (tmp_path / "parent.toml").write_text('''
description = "parent"
base = "sac"
[optimizer]
batch_size = 64
tau = 0.01
[overrides."Hopper-v5".optimizer]
tau = 0.02
[sources]
"optimizer.batch_size" = "parent: paper table 1"
"optimizer.tau" = "parent: code line 3"
"overrides.Hopper-v5.optimizer.tau" = "parent: Hopper config"
''')
    (tmp_path / "child.toml").write_text('''
description = "child"
base = "parent"
[optimizer]
batch_size = 32
[sources]
"optimizer.batch_size" = "ours: halved"
''')
    _, sources = resolve_recipe("child", "Hopper-v5", (tmp_path,))
    cites = citations(sources, (tmp_path,))["optimizer"]
    assert cites["batch_size"] == "ours: halved"
    assert cites["tau"] == "parent: Hopper config"
    _, sources = resolve_recipe("child", "Walker2d-v5", (tmp_path,))
    assert citations(sources, (tmp_path,))["optimizer"]["tau"] == "parent: code line 3"
    _, sources = resolve_recipe("child", None, (tmp_path,), (("optimizer.tau", 0.5),))
    assert "--set" in citations(sources, (tmp_path,))["optimizer"]["tau"]


def test_bench_show_prints_each_settings_source() -> None:
    res = runner.invoke(app, ["show", "slbo", "--env", "Pendulum-v1"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("model.multi_step "))
    assert "slbo.yml" in line
