"""Golden runs: same-seed rows of small runs of every shipped recipe, and of the smoke suite.

Each shipped recipe ``R`` runs as ``golden-R`` (``base = "R"`` with smaller networks, models,
planners and rollouts, so every distinctive key of ``R`` is kept and the run takes seconds) on
the tiny point-mass task (box recipes) or the Dyna maze (tabular recipes), seed 0. The smoke
suite runs as shipped. Their ``evals.csv`` and ``metrics.csv``, without the columns that measure
time, are the golden files under ``tests/golden/<cpu signature>/``: a refactor must reproduce
them exactly (``tests/test_golden.py``); a deliberate numeric change regenerates them in its
own commit, saying why::

    python tests/golden_runs.py --write

Float arithmetic may differ between CPU instruction sets, so the files are kept per CPU
signature (vendor and torch's CPU capability). On a CPU with no golden files yet, check out
the commit that last wrote them, run the command above there, and commit the new folder.
"""

from __future__ import annotations

import csv
import platform
import shutil
import sys
from pathlib import Path

import torch

from mbrl_bench.runner.execute import expand, run_all
from mbrl_bench.spec import available, load_recipe, load_suite

GOLDEN_DIR = Path(__file__).parent / "golden"

TIME_COLUMNS = frozenset({
    "wall_clock_s", "steps_per_s", "env_s", "model_s", "update_s", "model_fit_s", "rollout_s",
    "plan_s_per_step", "policy_s",
})
"""Columns that measure time: never compared."""

# Smaller sizes per part name, merged over the shipped recipe (keys each part's config has).
SHRINK: dict[tuple[str, str], dict[str, object]] = {
    ("loop", "policy"): {"log_every": 50},
    ("loop", "mpc"): {"initial_random_steps": 100, "model_train_freq": 100, "horizon": 5,
                      "particles": 4, "log_every": 50},
    ("optimizer", "sac"): {"hidden_sizes": [32, 32], "batch_size": 64, "updates_per_step": 2},
    ("model", "pe"): {"ensemble_size": 3, "num_elites": 2, "hidden_size": 16, "num_layers": 2,
                      "weight_decays": [1e-5, 1e-5, 1e-5], "batch_size": 32, "max_epochs": 5},
    ("rollout", "branched"): {"model_train_freq": 50, "rollout_batch_size": 200,
                              "epoch_length": 50},
    ("loop", "stages"): {"steps_per_stage": 100, "iterations_per_stage": 2,
                         "policy_iterations": 2, "offpolicy_updates": 5,
                         "model_buffer_iterations": 2, "log_every": 50},
    ("optimizer", "trpo"): {"policy_hidden_sizes": [16], "value_hidden_sizes": [16],
                            "vf_iters": 2},
    ("rollout", "full_horizon"): {"horizon": 20, "rollout_steps": 100},
    ("planner", "cem"): {"population_size": 24, "iterations": 2},
    ("planner", "mppi"): {"population_size": 24, "iterations": 2},
    ("planner", "random_shooting"): {"population_size": 24},
}
SHRINK[("model", "deterministic")] = SHRINK[("model", "pe")]

SUITE = """
description = "golden runs: every shipped recipe at a tiny size"
seeds = [0]
[[envs]]
id = "mbrl_bench/PointMass-v0"
budget = 300
eval_every = 100
eval_episodes = 2
initial_random_steps = 200
[[envs]]
name = "DynaMaze"
id = "mbrl_bench/DynaMaze-v0"
budget = 2000
eval_every = 1000
eval_episodes = 1
"""


def signature() -> str:
    """The CPU signature golden files are kept under (vendor and torch's CPU capability)."""
    vendor = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        vendor = platform.processor() or "unknown"
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}-torch{torch.__version__}"


def _toml_value(v: object) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v) if not isinstance(v, str) else f'"{v}"'


def write_golden_recipes(folder: Path) -> list[str]:
    """Write ``golden-R.toml`` for every shipped recipe ``R`` into ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in available("algorithms"):
        recipe = load_recipe(name)
        lines = [f'description = "{name} at a tiny size (golden files)"', f'base = "{name}"']
        for part in recipe.parts:
            shrink = SHRINK.get((part.kind, part.name))
            if shrink:
                lines.append(f"[{part.kind}]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in shrink.items()]
        path = folder / f"golden-{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV without the time columns (none if the run wrote no such file)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS}
                for row in csv.DictReader(f)]


def run_golden(out: Path, quiet: bool = True, smoke: bool = True,
               only: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Run every golden run into ``out`` (the smoke suite's too unless ``smoke`` is false; of
    the recipes named in ``only`` alone if given); ``{golden name: run folder}``.

    Golden names are ``golden/<env label>/<recipe>`` and ``smoke/<env label>/<recipe>``."""
    progress = (lambda s: None) if quiet else print
    recipes = write_golden_recipes(out / "recipes")
    if only is not None:
        recipes = [r for r in recipes if Path(r).stem.removeprefix("golden-") in only]
    (out / "golden.toml").write_text(SUITE)
    specs = expand(load_suite(str(out / "golden.toml")), recipes, [0], progress=progress)
    if smoke:
        suite = load_suite("smoke")
        specs += expand(suite, list(suite.algorithms), list(suite.seeds), progress=progress)
    outcomes = run_all(specs, out / "runs", workers=1, threads=1, progress=progress)
    failed = [o for o in outcomes if o.status != "complete"]
    if failed:
        raise RuntimeError(f"golden runs failed: {failed}")
    runs = {}
    for s in specs:
        algo = s.algo.removeprefix("golden-")
        runs[f"{s.suite}/{s.env.label}/{algo}"] = s.run_dir(out / "runs")
    return runs


def write(out: Path) -> Path:
    """Regenerate the golden files of this CPU signature from runs made into ``out``."""
    runs = run_golden(out, quiet=False)
    target = GOLDEN_DIR / signature()
    if target.exists():
        shutil.rmtree(target)
    for name, run_dir in runs.items():
        for file in ("evals.csv", "metrics.csv"):
            rows = read_rows(run_dir / file)
            dest = target / name / file
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
                w.writeheader()
                w.writerows(rows)
    return target


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/golden_runs.py --write")
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"golden files written to {write(Path(tmp))}")
