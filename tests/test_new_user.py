"""What a new user hit (issue: run where researchers run): each is a one-line error or a
warning, never a traceback or a silent fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mbrl_bench.cli import app
from mbrl_bench.errors import ConfigError
from mbrl_bench.runner.execute import expand, random_phase_warnings
from mbrl_bench.spec import load_recipe, load_suite

runner = CliRunner()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--seeds", ","], "no seeds"),
    (["--algos", ""], "--algos names no recipe"),
    (["--algos", " , "], "--algos names no recipe"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--seeds", "x"], "--seeds: expected N (seeds 0..N-1) or a list like 1,2,3; got 'x'"),
    (["--seeds", "1,1"], "--seeds: seeds must be distinct non-negative integers"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--runs-per-gpu", "0"], "--runs-per-gpu must be at least 1"),
    (["--algorithms-dir", "no-such-folder"], "--algorithms-dir no-such-folder: no such folder"),
    (["--suites-dir", "no-such-folder"], "--suites-dir no-such-folder: no such folder"),
])
def test_bad_run_options_are_one_line_errors(tmp_path: Path, args: list[str], fragment: str
                                             ) -> None:
    res = runner.invoke(app, ["run", "--suite", "smoke", "--out", str(tmp_path), *args])
    assert res.exit_code == 2 and fragment in res.output, res.output
    assert res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "smoke").exists()


def test_duplicate_seeds_in_a_suite_file_are_an_error(tmp_path: Path) -> None:
    p = tmp_path / "dup.toml"
    p.write_text('description = "d"\nseeds = [0, 1, 0]\n[[envs]]\nid = "Pendulum-v1"\n'
                 'budget = 100\neval_every = 100\n')
    with pytest.raises(ConfigError, match=r"dup\.toml: seeds: distinct seeds"):
        load_suite(str(p))


def test_a_missing_base_names_the_file_and_the_key(tmp_path: Path) -> None:
    p = tmp_path / "orphan.toml"
    p.write_text('base = "mbpoo"\n')
    with pytest.raises(ConfigError) as e:
        load_recipe(str(p))
    assert e.value.source == str(p) and e.value.key == "base"
    assert "no recipe 'mbpoo'" in str(e.value) and "known: " in str(e.value)


def test_a_budget_inside_the_random_phase_is_warned_about() -> None:
    suite = load_suite("mujoco")
    specs = expand(suite, ["mbpo", "pets", "sac"], [1], steps=300, env_filter="Hopper",
                   progress=lambda s: None)
    lines = random_phase_warnings(specs)
    assert len(lines) == 3 and all("nothing will be learned" in s for s in lines), lines
    assert any("5000 random-action steps" in s for s in lines)
    assert any("1000 random-action steps" in s for s in lines)  # pets on Hopper: one trial
    assert not random_phase_warnings(expand(suite, ["sac"], [1], steps=6000,
                                            env_filter="Hopper", progress=lambda s: None))


def test_pets_never_plans_with_an_unfitted_model(tmp_path: Path) -> None:
    """An evaluation before PETS's first fit measures random actions, in no time, instead of
    planning through a model that was never fitted (which took minutes per evaluation)."""
    import csv

    from mbrl_bench.runner.execute import run_all

    (tmp_path / "s.toml").write_text(
        'description = "d"\nseeds = [0]\n[[envs]]\nid = "mbrl_bench/PointMass-v0"\n'
        'budget = 60\neval_every = 30\neval_episodes = 2\n')
    (tmp_path / "p.toml").write_text('base = "pets"\n[loop]\ninitial_random_steps = 100\n')
    specs = expand(load_suite(str(tmp_path / "s.toml")), [str(tmp_path / "p.toml")], [0],
                   progress=lambda s: None)
    [outcome] = run_all(specs, tmp_path / "out", threads=1, progress=lambda s: None)
    assert outcome.status == "complete", outcome.error
    with (specs[0].run_dir(tmp_path / "out") / "evals.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["env_step"] for r in rows] == ["30", "60"]
    assert all(float(r["wall_clock_s"]) < 30 for r in rows)  # no planning at recipe settings


def test_the_last_progress_line_shows_the_evaluation_just_written(tmp_path: Path) -> None:
    import csv

    from mbrl_bench.runner.execute import run_all

    (tmp_path / "s.toml").write_text(
        'description = "d"\nseeds = [0]\n[[envs]]\nid = "mbrl_bench/PointMass-v0"\n'
        'budget = 200\neval_every = 100\neval_episodes = 1\ninitial_random_steps = 150\n')
    (tmp_path / "r.toml").write_text('base = "sac"\n[loop]\nlog_every = 100\n[optimizer]\n'
                                     'hidden_sizes = [16, 16]\nbatch_size = 32\n')
    specs = expand(load_suite(str(tmp_path / "s.toml")), [str(tmp_path / "r.toml")], [0],
                   progress=lambda s: None)
    lines: list[str] = []
    [outcome] = run_all(specs, tmp_path / "out", threads=1, progress=lines.append)
    assert outcome.status == "complete", outcome.error
    with (specs[0].run_dir(tmp_path / "out") / "evals.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    step_lines = [s for s in lines if "step 200/200" in s]
    assert step_lines and f"eval {float(last['return_mean']):.1f}" in step_lines[-1], lines


def test_out_naming_a_file_or_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd in (["run", "--suite", "smoke", "--out", str(afile)],
                ["table", str(tmp_path), "--out", str(afile)],
                ["plot", str(tmp_path), "--out", str(afile)],
                ["run", "--suite", "smoke", "--out", str(afile / "sub")]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2 and "--out" in res.output, (cmd, res.output)
        assert "Traceback" not in res.output


def test_make_kwargs_that_make_gymnasium_raise_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        'description = "d"\nseeds = [0]\n[[envs]]\nid = "Hopper-v5"\n'
        'kwargs = { xml_file = "/no/such/hopper.xml" }\nbudget = 100\neval_every = 100\n')
    res = runner.invoke(app, ["run", "--suite", str(tmp_path / "s.toml"), "--algos", "sac",
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "gymnasium.make failed" in res.output, res.output
    assert "Traceback" not in res.output


def test_a_corrupt_run_json_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        'description = "d"\nseeds = [0]\n[[envs]]\nid = "mbrl_bench/PointMass-v0"\n'
        'budget = 10\neval_every = 10\neval_episodes = 1\n')
    run_dir = tmp_path / "out" / "s" / "mbrl_bench_PointMass-v0" / "sac" / "seed_0"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"status": "comp')
    res = runner.invoke(app, ["run", "--suite", str(tmp_path / "s.toml"), "--algos", "sac",
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "not a valid run.json" in res.output, res.output
    assert "move" in res.output and "Traceback" not in res.output


def _running(pid: str) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"


def test_a_killed_worker_is_reported_lost_and_workers_die_with_a_killed_parent(
        tmp_path: Path) -> None:
    """`--workers 2`: `kill -9` of one worker makes `bench run` report its runs lost (exit 1,
    one line each, saying to run it again); `kill -9` of `bench run` itself takes its workers
    with it (no orphan holds a run's lock); the same command afterwards resumes and completes
    both runs."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "s.toml").write_text(
        'description = "d"\nseeds = [0, 1]\n[[envs]]\nid = "mbrl_bench/PointMass-v0"\n'
        'budget = 1500\neval_every = 500\neval_episodes = 1\ninitial_random_steps = 100\n')
    (tmp_path / "r.toml").write_text('base = "sac"\n[loop]\nlog_every = 500\n[optimizer]\n'
                                     'hidden_sizes = [32, 32]\nbatch_size = 64\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mbrl_bench", "run", "--suite", str(tmp_path / "s.toml"),
           "--algos", str(tmp_path / "r.toml"), "--workers", "2", "--threads", "1",
           "--out", str(out)]
    metas = [out / "s" / "mbrl_bench_PointMass-v0" / "r" / f"seed_{s}" / "run.json"
             for s in (0, 1)]

    def running(attempt: int) -> dict:
        """run.json of a run that is running its ``attempt``-th attempt."""
        deadline = time.time() + 120
        while time.time() < deadline:
            for m in metas:
                try:
                    meta = json.loads(m.read_text())
                except (OSError, ValueError):
                    continue
                if meta["attempts"] == attempt and meta["status"] == "running":
                    return meta
            time.sleep(0.1)
        raise AssertionError(f"no run started attempt {attempt}: "
                             f"{[m.read_text() for m in metas if m.exists()]}")

    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    os.kill(running(1)["pid"], signal.SIGKILL)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 1, output
    assert "lost: a worker process died" in output and "Traceback" not in output, output

    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running(2)
    children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True,
                              text=True).stdout.split()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    alive = children
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in children if _running(p)]
    assert not alive, f"workers outlived their parent: {alive}"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "busy" not in res.stdout
    assert all(json.loads(m.read_text())["status"] == "complete" for m in metas)


TWENTY_RANDOM_STEPS = (
    'description = "d"\nseeds = [0]\n[[envs]]\nid = "mbrl_bench/PointMass-v0"\n'
    'budget = 20\neval_every = 10\neval_episodes = 1\ninitial_random_steps = 20\n')
"""A suite of one 20-step point-mass run inside the random phase (seconds, no update)."""


def test_a_corrupt_checkpoint_fails_the_run_saying_what_to_do(tmp_path: Path) -> None:
    import json

    (tmp_path / "s.toml").write_text(TWENTY_RANDOM_STEPS)
    args = ["run", "--suite", str(tmp_path / "s.toml"), "--algos", "sac", "--out",
            str(tmp_path / "out")]
    run_dir = tmp_path / "out" / "s" / "mbrl_bench_PointMass-v0" / "sac" / "seed_0"
    assert runner.invoke(app, args).exit_code == 0
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "status": "interrupted"}))
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "delete it to restart this run" in res.output, res.output
    (run_dir / "checkpoint.pt").unlink()
    assert runner.invoke(app, args).exit_code == 1  # a failed run is left as it is...
    assert runner.invoke(app, [*args, "--retry-failed"]).exit_code == 0  # ...unless asked


def test_diagnostics_with_nothing_to_plot_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(TWENTY_RANDOM_STEPS)
    args = ["run", "--suite", str(tmp_path / "s.toml"), "--algos", "mbpo", "--out",
            str(tmp_path / "out")]
    assert runner.invoke(app, args).exit_code == 0  # budget inside the random phase: no refit
    res = runner.invoke(app, ["diagnostics", str(tmp_path / "out")])
    assert res.exit_code == 2 and "error:" in res.output, res.output


def test_status_tells_complete_failed_died_and_running_runs(tmp_path: Path) -> None:
    import fcntl
    import json

    out = tmp_path / "out"
    for name, status, error in (("a", "complete", None), ("b", "failed", "NonFiniteError: x\n.."),
                                ("c", "running", None), ("d", "running", None)):
        d = out / "s" / "env" / name / "seed_0"
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"status": status, "error": error,
                                                "host": "node1", "pid": 4200 + ord(name),
                                                **({"budget": 400} if name != "b" else {})}))
        (d / "evals.csv").write_text("env_step,return_mean\n100,1.0\n200,2.0\n")
        (d / ".lock").touch()
    with (out / "s" / "env" / "d" / "seed_0" / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live process running run d
        res = runner.invoke(app, ["status", str(out)])
    assert res.exit_code == 0, res.output
    lines = {line.split()[2]: line.split()[:2] for line in res.output.splitlines()
             if line.startswith(("complete", "failed", "died", "running"))}
    assert lines == {"s/env/a/seed_0": ["complete", "200/400"],  # last row / budget
                     "s/env/b/seed_0": ["failed", "200"], "s/env/c/seed_0": ["died", "200/400"],
                     "s/env/d/seed_0": ["running", "200/400"]}
    assert "s/env/c/seed_0  (process node1:4299)" in res.output  # the process that died
    assert "s/env/d/seed_0  (process node1:4300)" in res.output
    assert "s/env/a/seed_0  (process" not in res.output
    assert "NonFiniteError: x" in res.output and "total: 1 complete, 1 died, 1 failed, " \
        "1 running" in res.output
    assert runner.invoke(app, ["status", str(tmp_path / "empty")]).exit_code == 2


def test_a_worker_killed_while_idle_does_not_hang_bench_run(tmp_path: Path) -> None:
    """CPython 3.11's process pool hangs for ever in shutdown (and at exit) when a worker died
    while idle, e.g. killed after its last run: the pool `bench run` uses is closed so that it
    ends at once."""
    import subprocess
    import sys

    script = (
        "import multiprocessing, os, signal\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from mbrl_bench.runner.execute import _close\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn'))\n"
        "    pids = {pool.submit(os.getpid).result() for _ in range(4)}\n"
        "    os.kill(min(pids), signal.SIGKILL)\n"
        "    _close(pool)\n"
        "    print('closed')\n")
    (tmp_path / "idle.py").write_text(script)
    import os

    import mbrl_bench

    env = {**os.environ, "PYTHONPATH": str(Path(mbrl_bench.__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, str(tmp_path / "idle.py")], capture_output=True,
                         text=True, timeout=60, env=env)
    assert res.returncode == 0 and "closed" in res.stdout, res.stderr
