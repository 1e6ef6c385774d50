"""Golden files: small same-seed runs of every shipped recipe reproduce their committed rows.

See ``tests/golden_runs.py`` for what runs and how to regenerate the files after a deliberate
numeric change (in its own commit). The runs are made with torch's default device set to
``meta`` inside every loop (``execute.CHECK_DEVICE_ENV``): a tensor that a loop or part creates
off the run's device is a meta tensor and fails the run, so equal rows also show the device
discipline. Runs made again in the same process give the same rows (two recipes where golden
files exist; on a CPU without them, every recipe).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from golden_runs import GOLDEN_DIR, read_rows, run_golden, signature

from mbrl_bench.runner.execute import CHECK_DEVICE_ENV
from mbrl_bench.spec import available


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(CHECK_DEVICE_ENV, "1")
            return run_golden(tmp_path_factory.mktemp("golden"))
    finally:
        torch.set_num_threads(threads)


def test_every_shipped_recipe_has_a_golden_run(golden_runs: dict[str, Path]) -> None:
    names = {n.split("/")[-1] for n in golden_runs if n.startswith("golden/")}
    assert names == set(available("algorithms"))


def test_runs_reproduce_the_golden_files(golden_runs: dict[str, Path]) -> None:
    folder = GOLDEN_DIR / signature()
    if not folder.is_dir():
        known = ", ".join(p.name for p in GOLDEN_DIR.iterdir() if p.is_dir())
        pytest.skip(f"no golden files for this CPU ({signature()}; have: {known}): make them "
                    "at the commit that last wrote them with `python tests/golden_runs.py "
                    "--write` (see tests/golden_runs.py)")
    stored = {str(p.parent.relative_to(folder)) for p in folder.rglob("evals.csv")}
    assert stored == set(golden_runs), (
        "golden runs and golden files differ: regenerate in a commit of its own "
        f"(missing files: {sorted(set(golden_runs) - stored)}, "
        f"stale files: {sorted(stored - set(golden_runs))})")
    for name, run_dir in sorted(golden_runs.items()):
        for file in ("evals.csv", "metrics.csv"):
            want, got = read_rows(folder / name / file), read_rows(run_dir / file)
            assert len(got) == len(want), f"{name}/{file}: {len(got)} rows, golden {len(want)}"
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                diff = {k: (g.get(k), w.get(k)) for k in set(g) | set(w) if g.get(k) != w.get(k)}
                assert not diff, f"{name}/{file} row {i}: (now, golden) {diff}"


def test_same_seed_twice_gives_the_same_rows_for_every_shipped_recipe(
    golden_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs made again in this process, after all the others, give the same rows: nothing
    leaks from one run into the next. Where golden files exist (which the first pass
    reproduced) two recipes suffice, run without the device check (the ordinary path);
    elsewhere every recipe runs again, with the check."""
    only = None
    if (GOLDEN_DIR / signature()).is_dir():
        only = ("sac", "pets-rs")
    else:
        monkeypatch.setenv(CHECK_DEVICE_ENV, "1")
    threads = torch.get_num_threads()
    try:
        again = run_golden(tmp_path, smoke=False, only=only)
    finally:
        torch.set_num_threads(threads)
    assert again and set(again) <= set(golden_runs)
    assert only is None or {n.split("/")[-1] for n in again} == set(only)
    for name, run_dir in again.items():
        for file in ("evals.csv", "metrics.csv"):
            assert read_rows(run_dir / file) == read_rows(golden_runs[name] / file), name
