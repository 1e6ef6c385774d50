"""Runs end to end: learning, determinism, kill-and-resume, failures, the run store."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_suite

import mbrl_bench.runner.compose as compose_mod
from mbrl_bench.errors import ConfigError
from mbrl_bench.loops.policy import PHASE_KEYS
from mbrl_bench.runner.execute import expand, run_all
from mbrl_bench.runner.store import RunStore
from mbrl_bench.spec import load_suite

VOLATILE = {"wall_clock_s", "steps_per_s", *PHASE_KEYS}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


def specs_for(files: Path, suite_text: str, seeds: tuple[int, ...] = (0,), algo: str = "tiny-sac"):
    (files / "suites" / "t.toml").write_text(suite_text)
    suite = load_suite(str(files / "suites" / "t.toml"))
    return expand(suite, [algo], list(seeds), extra_dirs=(files / "algorithms",))


def run_dir(out: Path, seed: int = 0) -> Path:
    return out / "t" / "mbrl_bench_PointMass-v0" / "tiny-sac" / f"seed_{seed}"


def test_sac_learns_point_mass_beyond_what_a_broken_sac_reaches(files: Path) -> None:
    """Random actions score about -46 and zero actions -39 here; SAC reaches about -6 by 2,000
    steps. The threshold (-15) needs a policy that actually steers to the goal."""
    specs = specs_for(files, tiny_suite(2000, 1000, episodes=10))
    out = files / "out"
    [outcome] = run_all(specs, out, progress=lambda s: None)
    assert outcome.status == "complete", outcome.error
    evals = rows(run_dir(out) / "evals.csv")
    assert [int(r["env_step"]) for r in evals] == [1000, 2000]
    assert float(evals[-1]["return_mean"]) > -15.0, evals


def test_same_seed_gives_identical_rows_and_store_layout(files: Path) -> None:
    specs = specs_for(files, tiny_suite(600, 200))
    run_all(specs, files / "a", progress=lambda s: None)
    run_all(specs, files / "b", progress=lambda s: None)
    ra, rb = run_dir(files / "a"), run_dir(files / "b")
    assert rows(ra / "evals.csv") == rows(rb / "evals.csv")
    assert rows(ra / "metrics.csv") == rows(rb / "metrics.csv")
    assert len(rows(ra / "evals.csv")) == 3
    meta = json.loads((ra / "run.json").read_text())
    assert meta["status"] == "complete" and meta["seed"] == 0 and meta["error"] is None
    assert meta["config"]["recipe"]["parts"]["loop"]["initial_random_steps"] == 300
    assert {"torch", "gymnasium", "numpy", "python"} <= set(meta["versions"])
    assert meta["code_version"] and meta["ended_at"] and meta["wall_clock_s"] > 0
    ckpt = torch.load(ra / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 600
    # a different seed gives different numbers
    other = specs_for(files, tiny_suite(600, 200), seeds=(1,))
    run_all(other, files / "a", progress=lambda s: None)
    assert rows(run_dir(files / "a", 1) / "evals.csv") != rows(ra / "evals.csv")


def test_truncation_is_stored_apart_from_termination(files: Path) -> None:
    """PointMass episodes are cut at 50 steps: those rows are truncated, not terminated."""
    import numpy as np

    from mbrl_bench.buffer import ReplayBuffer
    from mbrl_bench.envs.make import make_env

    env = make_env("mbrl_bench/PointMass-v0")
    buf = ReplayBuffer(4, 2, 200)
    obs, _ = env.reset(seed=0)
    for _ in range(100):
        nxt, r, term, trunc, _ = env.step(np.zeros(2, dtype=np.float32))
        buf.add_one(obs, np.zeros(2), float(r), nxt, term, trunc)
        obs = env.reset()[0] if term or trunc else nxt
    assert buf.truncated()[[49, 99]].tolist() == [1.0, 1.0]
    assert buf.all().terminated.sum() == 0


def test_killed_run_resumes_to_the_same_rows(files: Path) -> None:
    """Kill -9 a running suite mid-way, run the same command again: the rows equal an
    uninterrupted run's, with none lost or duplicated."""
    suite = files / "suites" / "t.toml"
    suite.write_text(tiny_suite(800, 100))
    cmd = [sys.executable, "-m", "mbrl_bench", "run", "--suite", str(suite), "--out",
           str(files / "killed"), "--algorithms-dir", str(files / "algorithms")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    evals = run_dir(files / "killed") / "evals.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if evals.exists() and len(evals.read_text().splitlines()) >= 4:  # header + 3 rows
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(rows(evals))
    assert 3 <= killed_at < 8
    assert json.loads((run_dir(files / "killed") / "run.json").read_text())["status"] == "running"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed at step" in done.stdout
    specs = specs_for(files, tiny_suite(800, 100))
    run_all(specs, files / "straight", progress=lambda s: None)
    straight = run_dir(files / "straight")
    resumed = run_dir(files / "killed")
    assert rows(resumed / "evals.csv") == rows(straight / "evals.csv")
    assert rows(resumed / "metrics.csv") == rows(straight / "metrics.csv")
    meta = json.loads((resumed / "run.json").read_text())
    assert meta["status"] == "complete" and meta["attempts"] == 2
    # a third invocation skips the finished run
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert "1 skipped" in again.stdout


def test_sigterm_records_the_run_interrupted_and_it_resumes(files: Path) -> None:
    """SIGTERM (a cluster's time limit) to `bench run` in process, SIGTERM to one pool worker,
    Ctrl-C (SIGINT to the process group) without and with a pool: each run in progress records
    itself interrupted instead of staying marked running, nothing prints a traceback, and the
    same command resumes."""
    suite = files / "suites" / "t.toml"
    suite.write_text(tiny_suite(400, 100).replace("seeds = [0]", "seeds = [0, 1]"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def command(out: Path, workers: str) -> list[str]:
        return [sys.executable, "-m", "mbrl_bench", "run", "--suite", str(suite), "--out",
                str(out), "--algorithms-dir", str(files / "algorithms"), "--workers", workers,
                "--threads", "1"]

    for workers, target in (("1", "pid"), ("1", "group"), ("2", "pid"), ("2", "group")):
        out = files / f"out-{workers}-{target}"
        metas = [run_dir(out, seed) / "run.json" for seed in (0, 1)]
        proc = subprocess.Popen(command(out, workers), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline, meta = time.monotonic() + 120, None
            while time.monotonic() < deadline and proc.poll() is None and meta is None:
                for m in metas:  # a run in progress with a checkpoint to resume from
                    try:
                        found = json.loads(m.read_text())
                    except (OSError, ValueError):
                        continue
                    if found["status"] == "running" and (m.parent / "checkpoint.pt").exists():
                        meta, signalled = found, m
                time.sleep(0.05)
            assert meta is not None and proc.poll() is None, proc.communicate()[0]
            if target == "pid":  # SIGTERM to the process running it: the driver or a worker
                os.kill(meta["pid"], signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGINT)
            output = proc.communicate(timeout=120)[0]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode != 0 and "Traceback" not in output, output
        statuses = {json.loads(m.read_text())["status"] for m in metas if m.exists()}
        assert json.loads(signalled.read_text())["status"] == "interrupted", output
        assert statuses <= {"interrupted", "complete"}, (statuses, output)  # none left running
    done = subprocess.run(command(out, "2"), env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "resumed at step" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert {json.loads(m.read_text())["status"] for m in metas} == {"complete"}


def test_a_failing_run_is_recorded_and_the_suite_goes_on(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_compose = compose_mod.compose

    def flaky(spec, *args):  # type: ignore[no-untyped-def]
        if spec.seed == 1:
            raise FloatingPointError("model loss became NaN")
        return real_compose(spec, *args)

    monkeypatch.setattr(compose_mod, "compose", flaky)
    specs = specs_for(files, tiny_suite(400, 200), seeds=(0, 1, 2))
    outcomes = run_all(specs, files / "out", progress=lambda s: None)
    assert [o.status for o in outcomes] == ["complete", "failed", "complete"]
    meta = json.loads((run_dir(files / "out", 1) / "run.json").read_text())
    assert meta["status"] == "failed" and "model loss became NaN" in meta["error"]
    # a rerun leaves the failed run as it is unless asked (its failure would repeat)
    monkeypatch.setattr(compose_mod, "compose", real_compose)
    again = run_all(specs, files / "out", progress=lambda s: None)
    assert [o.status for o in again] == ["skipped", "failed", "skipped"]
    assert json.loads((run_dir(files / "out", 1) / "run.json").read_text())["attempts"] == 1
    retried = run_all(specs, files / "out", progress=lambda s: None, retry_failed=True)
    assert [o.status for o in retried] == ["skipped", "complete", "skipped"]


def test_a_folder_with_another_configuration_is_refused_before_running(files: Path) -> None:
    run_all(specs_for(files, tiny_suite(400, 200)), files / "out", progress=lambda s: None)
    changed = specs_for(files, tiny_suite(400, 100))  # another evaluation schedule
    with pytest.raises(ConfigError, match="different configuration"):
        run_all(changed, files / "out", progress=lambda s: None)
    shorter = specs_for(files, tiny_suite(200, 200))  # this run, at a budget it has passed
    with pytest.raises(ConfigError, match="this run at a budget of 400 steps"):
        run_all(shorter, files / "out", progress=lambda s: None)


def test_a_larger_budget_continues_a_run_to_the_rows_of_one_made_at_that_budget(
        files: Path) -> None:
    """``--steps`` changes a run's budget, not its identity: asked again at a larger budget, a
    complete run continues from its final checkpoint and ends with the rows of a run made at
    that budget in one go; a budget off the evaluation schedule cannot be continued."""
    (files / "suites" / "t.toml").write_text(tiny_suite(600, 200))
    suite = load_suite(str(files / "suites" / "t.toml"))

    def specs(steps: int | None):  # as `bench run --steps`
        return expand(suite, ["tiny-sac"], [0], steps, extra_dirs=(files / "algorithms",),
                      progress=lambda s: None)

    out, lines = files / "out", []
    [first] = run_all(specs(400), out, progress=lambda s: None)
    assert first.status == "complete"
    [longer] = run_all(specs(None), out, progress=lines.append)
    assert longer.status == "complete", longer.error
    assert any("continues from its budget of 400 steps to 600" in line for line in lines)
    assert any("resumed at step 400" in line for line in lines), lines  # not started over
    run_all(specs(None), files / "whole", progress=lambda s: None)
    continued, whole = run_dir(out), run_dir(files / "whole")
    assert [int(r["env_step"]) for r in rows(continued / "evals.csv")] == [200, 400, 600]
    assert rows(continued / "evals.csv") == rows(whole / "evals.csv")
    assert rows(continued / "metrics.csv") == rows(whole / "metrics.csv")
    meta, meta_whole = (json.loads((d / "run.json").read_text()) for d in (continued, whole))
    assert meta["budget"] == 600 and meta["config_hash"] == meta_whole["config_hash"]
    assert meta["status"] == "complete" and meta["attempts"] == 2
    assert [c["budget"] for c in meta["continued_from"]] == [400]
    # off the evaluation schedule (300), or below the evaluation interval (100: --steps makes
    # it the interval): an extra evaluation at that budget, so these are not continued
    for steps in (300, 100):
        run_all(specs(steps), files / f"s{steps}", progress=lambda s: None)
        with pytest.raises(ConfigError, match=f"budget of {steps} steps, off its evaluation"):
            run_all(specs(None), files / f"s{steps}", progress=lambda s: None)


def test_model_based_recipe_needs_a_termination_function() -> None:
    from mbrl_bench.envs.make import make_env
    from mbrl_bench.envs.termination import termination_fn_for
    from mbrl_bench.errors import UnsupportedEnvError

    with pytest.raises(UnsupportedEnvError, match="CartPole"):
        termination_fn_for(make_env("CartPole-v1"))


def test_store_truncates_rows_past_the_checkpoint(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "r")
    store.dir.mkdir()
    for step in (100, 200, 300):
        store.append_eval({"env_step": step, "episodes": 1, "return_mean": step,
                           "return_std": 0, "return_min": 0, "return_max": 0,
                           "wall_clock_s": 0})
        store.append_metrics({"env_step": step, "loss": 1.0})
    store.truncate_after(200)
    assert [r["env_step"] for r in store.read_rows("evals.csv")] == ["100", "200"]
    assert [r["env_step"] for r in store.read_rows("metrics.csv")] == ["100", "200"]


def test_rows_with_new_columns_extend_the_header_of_an_older_file(tmp_path: Path) -> None:
    """A run resumed by a newer version that logs more columns keeps its old rows aligned."""
    (tmp_path / "r").mkdir()
    old = tmp_path / "r" / "evals.csv"
    old.write_text("env_step,return_mean\n100,1.5\n")
    store = RunStore(tmp_path / "r")
    store.append_metrics({"env_step": 100, "loss": 1.0})
    store.append_metrics({"env_step": 200, "loss": 0.5, "other": 2.0})
    assert store.read_rows("metrics.csv") == [
        {"env_step": "100", "loss": "1.0", "other": ""},
        {"env_step": "200", "loss": "0.5", "other": "2.0"}]
    store.append_eval({"env_step": 200, "return_mean": 2.5, "model_return_mean": 3.0})
    evals = store.read_rows("evals.csv")
    assert list(evals[0]) == ["env_step", "return_mean", "episodes", "return_std", "return_min",
                              "return_max", "wall_clock_s", "model_return_mean"]
    assert (evals[0]["return_mean"], evals[0]["model_return_mean"]) == ("1.5", "")
    assert (evals[1]["return_mean"], evals[1]["model_return_mean"]) == ("2.5", "3.0")


def test_mbpo_beats_sac_at_the_same_small_budget(files: Path) -> None:
    """At 1,400 env steps on PointMass, seed 0: SAC reaches about -19 (seed 1: -14), MBPO (UTD 10
    on rollouts of a well-fitted ensemble) about -7.5 (seed 1: -8.7); random actions score -46.
    One thread, so the numbers are the same on every machine."""
    out = files / "out"
    suite = tiny_suite(1400, 700, episodes=10)
    specs = [*specs_for(files, suite, algo="tiny-mbpo"), *specs_for(files, suite, algo="tiny-sac")]
    outcomes = run_all(specs, out, threads=1, progress=lambda s: None)
    assert [o.status for o in outcomes] == ["complete", "complete"], outcomes
    final = {}
    for algo in ("tiny-mbpo", "tiny-sac"):
        d = out / "t" / "mbrl_bench_PointMass-v0" / algo / "seed_0"
        final[algo] = float(rows(d / "evals.csv")[-1]["return_mean"])
    assert final["tiny-mbpo"] > -12.0 > final["tiny-sac"], final
    metrics = rows(out / "t" / "mbrl_bench_PointMass-v0" / "tiny-mbpo" / "seed_0" / "metrics.csv")
    last = metrics[-1]
    for key in ("k", "model_buffer", "eps_m", "eps_pi", "bound_full", "bound_branched",
                "compounding_mse_h1", "model_holdout_mse"):
        assert math.isfinite(float(last[key])), key
    # model exploitation beside each evaluation of a model-based run (empty for model-free)
    evals = {a: rows(out / "t" / "mbrl_bench_PointMass-v0" / a / "seed_0" / "evals.csv")
             for a in ("tiny-mbpo", "tiny-sac")}
    assert math.isfinite(float(evals["tiny-mbpo"][-1]["model_return_mean"]))
    assert all(r["model_return_mean"] == "" for r in evals["tiny-sac"])


def test_a_run_held_by_another_process_is_skipped_not_corrupted(files: Path) -> None:
    import fcntl

    from mbrl_bench.runner.execute import execute_run

    [spec] = specs_for(files, tiny_suite(400, 200))
    d = spec.run_dir(files / "out")
    d.mkdir(parents=True)
    with (d / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running `bench run` holds
        outcome = execute_run(spec, files / "out", progress=lambda s: None)
    assert outcome.status == "busy"
    assert not (d / "evals.csv").exists() and not (d / "run.json").exists()
    assert execute_run(spec, files / "out", progress=lambda s: None).status == "complete"


def test_an_empty_csv_left_by_a_kill_is_dropped_on_resume(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "r")
    store.dir.mkdir()
    (store.dir / "metrics.csv").write_text("")  # killed between open() and the header
    store.truncate_after(100)
    store.append_metrics({"env_step": 200, "loss": 1.0})
    assert store.read_rows("metrics.csv") == [{"env_step": "200", "loss": "1.0"}]


def test_two_recipes_with_one_name_are_refused(files: Path) -> None:
    (files / "suites" / "t.toml").write_text(tiny_suite(400, 200))
    suite = load_suite(str(files / "suites" / "t.toml"))
    other = files / "elsewhere"
    other.mkdir()
    (other / "tiny-sac.toml").write_text('base = "sac"\n')
    with pytest.raises(ConfigError, match="share a name"):
        expand(suite, ["tiny-sac", str(other / "tiny-sac.toml")], [0],
               extra_dirs=(files / "algorithms",))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_sigterm_during_a_store_write_interrupts_once_the_write_is_complete(
        signum: int) -> None:
    """A SIGTERM inside ``torch.save`` of a checkpoint left a half-written file and recorded the
    run failed (CI saw it); the loop's writes now finish first, then the run is interrupted.
    The same for Ctrl-C (SIGINT) in the process that runs ``bench run``."""
    from mbrl_bench.runner import execute

    written: list[dict[str, int]] = []

    class Store:
        def save_checkpoint(self, state: dict[str, int]) -> None:
            execute._interrupt(signum, None)  # the signal arrives mid-write
            written.append(state)

    try:
        with pytest.raises(KeyboardInterrupt):
            execute._HeldWrites(Store()).save_checkpoint({"step": 1})  # type: ignore[arg-type]
        assert written == [{"step": 1}]
        assert not execute._HOLD and not execute._PENDING
    finally:
        execute._HOLD = execute._PENDING = False


def test_a_second_ctrl_c_while_one_waits_interrupts_at_once() -> None:
    from mbrl_bench.runner import execute

    raised_by = None
    try:
        with contextlib.suppress(KeyboardInterrupt), execute._uninterruptible():
            execute._interrupt(signal.SIGINT, None)  # waits for the hold's end
            raised_by = "the first"
            assert execute._PENDING
            try:
                execute._interrupt(signal.SIGINT, None)  # the second: at once
            except KeyboardInterrupt:
                raised_by = "the second"
                raise
            raised_by = "none"
        assert raised_by == "the second"
        assert not execute._HOLD and not execute._PENDING
    finally:
        execute._HOLD = execute._PENDING = False
