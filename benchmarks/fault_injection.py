"""Fault injection: kill a running suite at random moments, again and again, and check that
the suite still ends with exactly the rows of an uninterrupted run, none lost or duplicated.

    python benchmarks/fault_injection.py [--kills-per-mode 8] [--seed 0] [--out DIR]

Three ways to die, each with its own results folder, each repeated ``--kills-per-mode`` times
at moments (0-6 s after a run is first in progress after each restart; for Ray nodes, 0.5-10 s
after the last kill):
- ``driver``: ``kill -9`` of ``bench run --workers 2`` (its workers die with it), then the same
  command again;
- ``worker``: ``kill -9`` of the worker process of a running run (the driver reports its runs
  lost and exits 1), then the same command again;
- ``ray-node``: a Ray cluster of a head and two worker nodes on this machine; a worker node
  running a run is killed (its raylet and workers with it) and a fresh node joins, while the
  driver goes on; Ray retries the lost runs, which resume from their checkpoints.
After the last kill of a mode the command runs to the end. The reference rows are the smoke
suite's golden files for this CPU (the local executor's rows, ``tests/test_golden.py``), or an
uninterrupted local run where this CPU has none. Writes ``report.txt`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from golden_runs import GOLDEN_DIR, read_rows, signature
from ray_nodes import node_of, reference_dir

SUITE = "smoke"
RUNS = 11  # the smoke suite's runs


def bench(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mbrl_bench", "run", "--suite", SUITE, "--threads", "1",
            "--device", "cpu", "--out", str(out), *extra]


def running_metas(out: Path) -> list[dict[str, Any]]:
    metas = []
    for path in out.rglob("run.json"):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("status") == "running" and meta.get("pid"):
            metas.append({**meta, "dir": path.parent})
    return metas


def live_runs(out: Path) -> list[dict[str, Any]]:
    """Runs in progress: marked running by a process that is alive."""
    return [m for m in running_metas(out) if alive(int(m["pid"]))]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def local_mode(mode: str, out: Path, kills: int, rng: random.Random, log: list[str]) -> None:
    """Kill the driver or one worker ``kills`` times, then run to the end."""
    done = 0
    while done < kills:
        proc = subprocess.Popen(bench(out, "--workers", "2"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        started = time.monotonic()
        while proc.poll() is None and not live_runs(out) and time.monotonic() < started + 120:
            time.sleep(0.05)  # the moment counts from the first run in progress
        delay = rng.uniform(0.0, 6.0)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            log.append(f"{mode}: the suite ended before the kill at {delay:.1f} s")
            break
        victims = live_runs(out)
        if mode == "driver":
            os.kill(proc.pid, signal.SIGKILL)
            what = (f"driver {delay:.1f} s into a run (runs in progress: "
                    f"{', '.join(str(m['dir'].relative_to(out)) for m in victims)})")
        elif victims:
            victim = rng.choice(victims)
            os.kill(int(victim["pid"]), signal.SIGKILL)
            what = f"worker of {victim['dir'].relative_to(out)}, {delay:.1f} s into a run"
        else:  # nothing running yet (workers starting): kill the driver instead
            os.kill(proc.pid, signal.SIGKILL)
            what = f"driver at {delay:.1f} s (no worker running yet)"
        rc = proc.wait()
        done += 1
        log.append(f"{mode} kill {done}: {what}; driver exit {rc}")
    final = subprocess.run(bench(out, "--workers", "2"), capture_output=True, text=True)
    last = final.stdout.strip().splitlines()[-1] if final.stdout.strip() else ""
    log.append(f"{mode}: final run exit {final.returncode}: {last}")


def ray_mode(out: Path, kills: int, rng: random.Random, log: list[str]) -> None:
    """Kill a worker node running a run ``kills`` times while one driver goes on (a new
    driver if the old one gives up on a run lost too often), then run to the end."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        done = 0
        while True:
            proc = subprocess.Popen(bench(out, "--executor", "ray", "--address",
                                          cluster.address), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            while done < kills and proc.poll() is None:
                delay = rng.uniform(0.5, 10.0)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.05)
                victims = live_runs(out)
                if proc.poll() is not None or not victims:
                    continue
                victim = rng.choice(victims)
                node = node_of(int(victim["pid"]), nodes)
                if node is None:
                    continue
                cluster.remove_node(node, allow_graceful=False)
                nodes.remove(node)
                nodes.append(cluster.add_node(num_cpus=1))
                done += 1
                log.append(f"ray-node kill {done}: the node running "
                           f"{victim['dir'].relative_to(out)}, {delay:.1f} s after the last")
            output = proc.communicate()[0]
            last = output.strip().splitlines()[-1] if output.strip() else ""
            log.append(f"ray-node: driver exit {proc.returncode}: {last}")
            if proc.returncode == 0:
                break
    finally:
        cluster.shutdown()


def compare(out: Path, reference: Path) -> list[str]:
    """Differences between the suite's rows under ``out`` and the reference rows."""
    problems = []
    runs = sorted(p.parent for p in (out / SUITE).rglob("run.json"))
    if len(runs) != RUNS:
        problems.append(f"{len(runs)} runs, expected {RUNS}")
    for run_dir in runs:
        meta = json.loads((run_dir / "run.json").read_text())
        rel = run_dir.relative_to(out / SUITE)
        if meta["status"] != "complete":
            problems.append(f"{rel}: {meta['status']}")
        want_dir = reference_dir(reference, rel)
        for name in ("evals.csv", "metrics.csv"):
            got, want = read_rows(run_dir / name), read_rows(want_dir / name)
            steps = [r.get("env_step") for r in got]
            if len(steps) != len(set(steps)):
                problems.append(f"{rel}/{name}: duplicated rows")
            if got != want:
                problems.append(f"{rel}/{name}: {len(got)} rows differ from the reference's "
                                f"{len(want)}")
    return problems


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills-per-mode", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/faults"))
    ap.add_argument("--modes", default="driver,worker,ray-node")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    reference = GOLDEN_DIR / signature() / SUITE
    log = [f"command: python benchmarks/fault_injection.py --kills-per-mode "
           f"{args.kills_per_mode} --seed {args.seed} --modes {args.modes}",
           f"machine: {cpu_model()}, {os.cpu_count()} cores; reference rows: "
           + (f"golden files {reference}" if reference.is_dir() else "an uninterrupted run")]
    if not reference.is_dir():
        subprocess.run(bench(args.out / "reference"), check=True, capture_output=True)
        reference = args.out / "reference" / SUITE
    started = time.monotonic()
    verdicts = []
    for mode in args.modes.split(","):
        out = args.out / mode
        if mode == "ray-node":
            ray_mode(out, args.kills_per_mode, rng, log)
        else:
            local_mode(mode, out, args.kills_per_mode, rng, log)
        problems = compare(out, reference)
        verdicts.append(f"{mode}: " + ("all 11 runs complete, rows equal to the reference, none "
                                       "duplicated" if not problems else "; ".join(problems)))
    kills = sum(" kill " in line for line in log)
    log += [f"kills in all: {kills}; {time.monotonic() - started:.0f} s", *verdicts]
    report = "\n".join(log) + "\n"
    (args.out / "report.txt").write_text(report)
    print(report, end="")
    sys.exit(1 if any("rows equal" not in v for v in verdicts) else 0)


if __name__ == "__main__":
    main()
