"""The device setting: validation, what run.json records, resume on the device a run started
on, GPU slots of the local pool. (That no loop creates a tensor off the run's device is checked
for every shipped recipe by the golden test's second pass, ``CHECK_DEVICE_ENV``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mbrl_bench.cli import app
from mbrl_bench.devices import resolve_device
from mbrl_bench.errors import ConfigError
from mbrl_bench.runner.execute import device_mismatch, gpu_slots

runner = CliRunner()
NO_CUDA = not torch.cuda.is_available()
SUITE = ('description = "d"\nseeds = [0]\n[[envs]]\nid = "mbrl_bench/PointMass-v0"\n'
         'budget = 40\neval_every = 20\neval_episodes = 1\ninitial_random_steps = 20\n')


def _run(tmp_path: Path, *extra: str) -> tuple[int, str]:
    (tmp_path / "s.toml").write_text(SUITE)
    res = runner.invoke(app, ["run", "--suite", str(tmp_path / "s.toml"), "--algos", "sac",
                              "--out", str(tmp_path / "out"), "--threads", "1", *extra])
    return res.exit_code, res.output


def _meta(tmp_path: Path) -> dict:
    path = tmp_path / "out" / "s" / "mbrl_bench_PointMass-v0" / "sac" / "seed_0" / "run.json"
    return dict(json.loads(path.read_text()))


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", ""])
def test_a_bad_device_is_one_line(tmp_path: Path, name: str) -> None:
    code, out = _run(tmp_path, "--device", name)
    assert code == 2 and "--device" in out and "auto, cpu, cuda or cuda:N" in out, out
    assert "Traceback" not in out


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_where_there_is_none_is_one_line_and_auto_is_the_cpu(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "--device", "cuda")
    assert code == 2 and "CUDA is not available here" in out, out
    assert len(out.strip().splitlines()) == 1, out  # refused before any run is announced
    assert resolve_device("auto") == torch.device("cpu")
    assert gpu_slots("auto", 4) == []
    code, out = _run(tmp_path)  # the default: auto
    assert code == 0, out
    assert _meta(tmp_path)["device"] == "cpu" and "gpu" not in _meta(tmp_path)


def test_a_run_resumes_only_on_the_kind_of_device_it_started_on(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "--device", "cpu")
    assert code == 0, out
    meta = _meta(tmp_path)
    assert device_mismatch(meta, "cuda:0") is None  # complete: nothing to resume
    started_on_gpu = {**meta, "status": "running", "device": "cuda:1"}
    assert device_mismatch(started_on_gpu, "cuda") is None
    assert "resume it with --device cuda" in str(device_mismatch(started_on_gpu, "cpu"))
    before_devices = {k: v for k, v in started_on_gpu.items() if k != "device"}
    assert "resume it with --device cpu" in str(device_mismatch(before_devices, "cuda:0"))
    path = tmp_path / "out" / "s" / "mbrl_bench_PointMass-v0" / "sac" / "seed_0" / "run.json"
    path.write_text(json.dumps(started_on_gpu))
    code, out = _run(tmp_path, "--device", "cpu")
    assert code == 2 and "this run started on cuda:1; resume it with --device cuda" in out, out


def test_runs_per_gpu_must_be_positive(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "--runs-per-gpu", "0")
    assert code == 2 and "--runs-per-gpu" in out and "Traceback" not in out


def test_device_names_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if NO_CUDA:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_a_suite_names_its_device_and_the_command_line_overrides_it(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(SUITE.replace('seeds = [0]', 'seeds = [0]\ndevice = "gpu"'))
    res = runner.invoke(app, ["run", "--suite", str(tmp_path / "bad.toml"), "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 2 and "device: auto, cpu, cuda or cuda:N" in res.output, res.output
    (tmp_path / "s.toml").write_text(SUITE.replace('seeds = [0]', 'seeds = [0]\ndevice = "cpu"'))
    res = runner.invoke(app, ["run", "--suite", str(tmp_path / "s.toml"), "--algos", "sac",
                              "--out", str(tmp_path / "out"), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert _meta(tmp_path)["device"] == "cpu"
    if NO_CUDA:  # the command line wins over the suite
        res = runner.invoke(app, ["run", "--suite", str(tmp_path / "s.toml"), "--algos", "sac",
                                  "--out", str(tmp_path / "o2"), "--device", "cuda"])
        assert res.exit_code == 2 and "CUDA is not available" in res.output


@pytest.mark.parametrize("has_units", [False, True])
def test_bf16_products_warn_only_on_a_device_without_bf16_units(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_units: bool) -> None:
    """``optimizer.precision = bf16`` runs on any CPU and is recorded in ``run.json``; where
    the device has no bf16 matrix units a one-line warning says its products are emulated."""
    import mbrl_bench.devices as devices
    monkeypatch.setattr(devices, "has_bf16_units", lambda device: has_units)
    code, out = _run(tmp_path, "--set", "optimizer.precision=bf16")
    assert code == 0, out
    warned = [x for x in out.splitlines() if "warning: optimizer.precision = bf16" in x]
    assert len(warned) == (0 if has_units else 1), out
    (run_json,) = (tmp_path / "out").rglob("run.json")
    assert "bf16" in run_json.parent.parent.name  # sac[optimizer.precision=bf16]
    assert json.loads(run_json.read_text())["settings"]["optimizer.precision"] == "bf16"
