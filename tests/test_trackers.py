"""`--logger tensorboard|wandb`: the rows a run writes to its CSV files, mirrored into
TensorBoard event files and a W&B offline run beside them (read back and compared), and a
resumed run's TensorBoard history without the rows the resume dropped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import tiny_suite
from typer.testing import CliRunner

from mbrl_bench.cli import app
from mbrl_bench.runner.store import RunStore

runner = CliRunner()


def scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_rows_are_mirrored_into_tensorboard_and_a_wandb_offline_run(files: Path) -> None:
    (files / "suites" / "t.toml").write_text(tiny_suite(300, 150))
    out = files / "out"
    res = runner.invoke(app, ["run", "--suite", str(files / "suites" / "t.toml"),
                              "--algorithms-dir", str(files / "algorithms"), "--out", str(out),
                              "--logger", "tensorboard", "--logger", "wandb"])
    assert res.exit_code == 0, res.output
    run_dir = out / "t" / "mbrl_bench_PointMass-v0" / "tiny-sac" / "seed_0"
    with (run_dir / "evals.csv").open() as f:
        evals = [(int(r["env_step"]), float(r["return_mean"])) for r in csv.DictReader(f)]
    assert [s for s, _ in evals] == [150, 300]
    board = scalars(run_dir / "tensorboard", "eval/return_mean")
    assert [s for s, _ in board] == [150, 300]
    assert all(abs(v - ret) < 1e-4 * max(1.0, abs(ret)) for (_, v), (_, ret) in zip(
        board, evals, strict=True))  # event files hold float32
    with (run_dir / "metrics.csv").open() as f:
        updates = [float(r["updates"]) for r in csv.DictReader(f)]
    assert [v for _, v in scalars(run_dir / "tensorboard", "train/updates")] == updates
    [wandb_log] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    blob = wandb_log.read_bytes()
    assert blob.startswith(b":W&B") and b"eval/return_mean" in blob
    for _, ret in evals:  # history values are stored as their JSON text
        assert json.dumps(ret).encode() in blob, ret
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["loggers"] == ["tensorboard", "wandb"] and meta["status"] == "complete"


def test_a_resumed_run_hides_the_events_its_resume_dropped(tmp_path: Path) -> None:
    first = RunStore(tmp_path, ("tensorboard",))
    first.append_eval({"env_step": 150, "return_mean": 1.0})
    first.append_eval({"env_step": 300, "return_mean": 2.0})  # past the checkpoint at 150
    first.close_trackers()
    second = RunStore(tmp_path, ("tensorboard",))
    second.truncate_after(150)
    second.append_eval({"env_step": 300, "return_mean": 5.0})
    second.close_trackers()
    assert scalars(tmp_path / "tensorboard", "eval/return_mean") == [(150, 1.0), (300, 5.0)]


def test_an_unknown_logger_is_a_one_line_error(files: Path) -> None:
    res = runner.invoke(app, ["run", "--suite", "smoke", "--logger", "mlflow",
                              "--out", str(files / "out")])
    assert res.exit_code == 2
    assert "unknown logger 'mlflow' (known: tensorboard, wandb)" in res.output
    assert not (files / "out").exists()


def test_a_failing_tracker_is_dropped_with_a_warning_and_the_rows_still_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mbrl_bench.runner.trackers as trackers

    def broken(*args: object) -> list[object]:
        raise OSError("disk full")

    monkeypatch.setattr(trackers, "open_trackers", broken)
    store = RunStore(tmp_path, ("tensorboard",))
    with pytest.warns(RuntimeWarning, match="logger tensorboard stopped .*disk full"):
        store.append_eval({"env_step": 150, "return_mean": 1.0})
    store.append_eval({"env_step": 300, "return_mean": 2.0})  # no second warning, no error
    store.close_trackers()
    assert [r["return_mean"] for r in store.read_rows("evals.csv")] == ["1.0", "2.0"]


def test_a_run_that_starts_over_drops_its_mirrors_with_its_rows(tmp_path: Path) -> None:
    store = RunStore(tmp_path, ("tensorboard",))
    store.append_eval({"env_step": 150, "return_mean": 1.0})
    store.close_trackers()
    (tmp_path / "wandb").mkdir()
    store.reset_files()
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()
    assert not (tmp_path / "evals.csv").exists()
