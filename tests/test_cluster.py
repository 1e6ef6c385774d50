"""The Ray executor on a real cluster: a head and two worker nodes started as separate
processes on this machine (Ray's ``cluster_utils.Cluster``), the smoke suite run through
``bench run --executor ray``, and one worker node killed in the middle of the suite.

The smoke suite's rows must equal the local executor's: its golden files are the local
executor's rows (``tests/test_golden.py`` checks that), and where this CPU has none, the suite
is run locally here for comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from golden_runs import GOLDEN_DIR, read_rows, signature
from ray_nodes import node_of, reference_dir
from typer.testing import CliRunner

from mbrl_bench.cli import app

ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install -e '.[ray]'")


def _running_with_checkpoint(out: Path) -> dict[str, Any] | None:
    """``run.json`` of a run on its first attempt that has written a checkpoint."""
    for ck in sorted(out.rglob("checkpoint.pt")):
        try:
            meta = json.loads((ck.parent / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("status") == "running" and meta.get("attempts") == 1:
            return {**meta, "dir": ck.parent}
    return None


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    """Wait until process ``pid`` has exited."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived its node"


def _status(run_dir: Path) -> Any:
    return json.loads((run_dir / "run.json").read_text()).get("status")


def _local_rows(out: Path) -> Path:
    """The smoke suite's rows from the local executor: the golden files, or a local run."""
    golden = GOLDEN_DIR / signature() / "smoke"
    if golden.is_dir():
        return golden
    res = CliRunner().invoke(app, ["run", "--suite", "smoke", "--threads", "1", "--device",
                                   "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out / "smoke"


@pytest.mark.timeout(600)
def test_the_smoke_suite_on_a_ray_cluster_survives_a_lost_node(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        out = tmp_path / "ray"
        driver = subprocess.Popen(
            [sys.executable, "-m", "mbrl_bench", "run", "--suite", "smoke", "--executor", "ray",
             "--address", cluster.address, "--threads", "1", "--device", "cpu", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # A run can finish between being chosen and its node dying (the smoke runs are short):
        # the kill counts only if the run's process is gone while its run.json still says
        # running; otherwise another run is chosen and its node killed.
        victim, raced = None, 0
        deadline = time.monotonic() + 400
        while driver.poll() is None and time.monotonic() < deadline:
            chosen = None if victim is not None else _running_with_checkpoint(out)
            if chosen is not None:
                node = node_of(chosen["pid"], nodes)
                if node is None:  # its worker process is gone: the run must have finished
                    assert _status(chosen["dir"]) != "running", (
                        f"no worker node runs process {chosen['pid']}")
                    continue
                cluster.remove_node(node, allow_graceful=False)  # its raylet and workers die
                nodes = [n for n in nodes if n is not node] + [cluster.add_node(num_cpus=1)]
                _wait_gone(chosen["pid"])
                if _status(chosen["dir"]) == "running":
                    victim = chosen
                else:
                    raced += 1
                    assert raced < 5, "every chosen run finished before its node died"
            time.sleep(0.1)
        output = driver.communicate(timeout=60)[0]
    finally:
        cluster.shutdown()
    assert victim is not None, "no node died under a running run with a checkpoint:\n" + output
    assert driver.returncode == 0, output
    assert "done: 11 complete" in output, output
    lost = victim["dir"]
    meta = json.loads((lost / "run.json").read_text())
    assert meta["status"] == "complete" and meta["attempts"] == 2, meta
    assert f"{lost.relative_to(out)}: resumed at step" in output

    local = _local_rows(tmp_path / "local")
    runs = sorted(p.parent for p in (out / "smoke").rglob("run.json"))
    assert len(runs) == 11
    for run_dir in runs:
        for name in ("evals.csv", "metrics.csv"):
            got = read_rows(run_dir / name)
            want = read_rows(reference_dir(local, run_dir.relative_to(out / "smoke")) / name)
            assert got == want, f"{run_dir.relative_to(out)}/{name} differs from the local run"
            steps = [r["env_step"] for r in got]
            assert len(steps) == len(set(steps)), f"{run_dir}/{name}: a row is duplicated"


def test_an_address_where_no_cluster_answers_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--suite", "smoke", "--executor", "ray", "--address",
                                   "127.0.0.1:1", "--steps", "10", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "error: --address: 127.0.0.1:1: no Ray cluster answers there" in res.output
    assert "Traceback" not in res.output


def test_an_address_needs_the_ray_executor(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--suite", "smoke", "--address", "127.0.0.1:1",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "give --executor ray" in res.output
