"""Shared fixtures: tiny suites and recipes written into a temporary folder."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_SAC = """
description = "SAC with small networks, for tests"
base = "sac"
[loop]
initial_random_steps = 300
log_every = 200
[optimizer]
hidden_sizes = [64, 64]
batch_size = 128
"""


def tiny_suite(budget: int, eval_every: int, env_id: str = "mbrl_bench/PointMass-v0",
               episodes: int = 5, extra: str = "", algorithm: str = "tiny-sac",
               threshold: float = -15.0) -> str:
    return f"""
description = "tiny test suite"
algorithms = ["{algorithm}"]
seeds = [0]
[[envs]]
id = "{env_id}"
budget = {budget}
eval_every = {eval_every}
eval_episodes = {episodes}
reporting_budgets = [{budget}]
threshold = {threshold}
{extra}
"""


@pytest.fixture(autouse=True)
def _chdir_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own folder (MuJoCo writes MUJOCO_LOG.TXT into the cwd)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with `algorithms/tiny-sac.toml` and `suites/`."""
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "suites").mkdir()
    (tmp_path / "algorithms" / "tiny-sac.toml").write_text(TINY_SAC)
    (tmp_path / "algorithms" / "tiny-mbpo.toml").write_text(TINY_MBPO)
    return tmp_path

TINY_MBPO = """
description = "MBPO at a tiny scale, for tests"
base = "mbpo"
[loop]
initial_random_steps = 200
log_every = 100
[optimizer]
hidden_sizes = [64, 64]
batch_size = 128
updates_per_step = 10
[model]
ensemble_size = 5
num_elites = 3
hidden_size = 64
num_layers = 2
weight_decays = [2.5e-5, 5e-5, 1e-4]
batch_size = 32
max_epochs = 40
[rollout]
model_train_freq = 200
rollout_batch_size = 2000
epoch_length = 200
k_schedule = [0, 1, 1, 1]
"""


def member_indexed_model(
    ensemble_size: int, obs_dim: int, act_dim: int, elites: list[int],
    deterministic: bool = False, std: float = 0.1,
):  # type: ignore[no-untyped-def]
    """A real ensemble whose member ``m`` predicts Δobs = (m, m) and reward = 10 m (obs_dim 2).

    All weights are zero, so every member outputs its head bias; log-variance is log(std^2).
    """
    from mbrl_bench.models.ensemble import ProbabilisticEnsemble, ProbabilisticEnsembleConfig

    cfg = ProbabilisticEnsembleConfig(
        ensemble_size=ensemble_size, num_elites=len(elites), hidden_size=8, num_layers=1,
        weight_decays=(0.0, 0.0), deterministic=deterministic)
    model = ProbabilisticEnsemble(obs_dim, act_dim, cfg)
    with torch.no_grad():
        for layer in model.linear_layers():
            layer.weight.zero_()
            layer.bias.zero_()
        m = torch.arange(ensemble_size, dtype=torch.float32)
        model.head.bias[:, 0, 0] = m
        model.head.bias[:, 0, 1] = m
        model.head.bias[:, 0, 2] = 10 * m
        if not deterministic:
            model.head.bias[:, 0, 3:] = math.log(std**2)
        model.elite_idx.copy_(torch.tensor(elites))
    return model


def kill_then_rerun(files: Path, suite_text: str, algo: str, out: str, kill_at_rows: int
                    ) -> tuple[Path, Any]:
    """Run ``algo`` on ``suite_text`` with ``bench run`` in a subprocess, kill -9 its process
    group once its ``evals.csv`` has ``kill_at_rows`` rows, then run the same command again.
    Returns the run folder and the second run's completed process."""
    import signal
    import subprocess
    import sys
    import time

    import mbrl_bench

    (files / "suites" / "k.toml").write_text(suite_text)
    cmd = [sys.executable, "-m", "mbrl_bench", "run", "--suite", str(files / "suites" /
           "k.toml"), "--algos", algo, "--out", str(files / out), "--algorithms-dir",
           str(files / "algorithms"), "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(Path(mbrl_bench.__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    runs = list((files / out / "k").glob(f"*/{algo}/seed_0"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((files / out / "k").glob(f"*/{algo}/seed_0"))
        evals = runs[0] / "evals.csv" if runs else None
        if evals is not None and evals.exists() and len(
                evals.read_text().splitlines()) >= kill_at_rows + 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return runs[0], done
