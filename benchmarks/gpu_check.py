"""GPU check (one GPU machine, a few minutes): the smoke suite, MBPO on InvertedPendulum-v5 for
1,000 steps and PETS on the continuous cart-pole for 50 steps, on each device given, with
each run's wall-clock per phase, then the same runs side by side across devices.

    python benchmarks/gpu_check.py [--devices cuda,cpu] [--out results/gpu_check] [--report-only]

Returns need not be equal across devices (GPU arithmetic differs), only in the same range: the
table prints them side by side. Writes ``report.txt`` in ``--out``; ``--report-only`` writes it
from the runs already in ``--out`` (one process per device run at once, then one report).
Without CUDA, say so and stop unless ``--devices cpu`` (which checks the script itself).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

CHECK_SUITE = """
description = "GPU check: MBPO for 1,000 steps, PETS for 50 (with a 50-step evaluation)"
seeds = [0]
[[envs]]
id = "InvertedPendulum-v5"
budget = 1000
eval_every = 500
eval_episodes = 2
[[envs]]
id = "mbrl_bench/ContinuousCartPole-v0"
budget = 50
eval_every = 50
eval_episodes = 1
initial_random_steps = 25
kwargs = { max_episode_steps = 50 }
"""
PHASES = ("env_s", "model_s", "update_s", "model_fit_s", "rollout_s", "policy_s")


def bench(*args: str) -> tuple[float, str | None]:
    """Run the CLI; seconds taken and, when it failed, the end of its output."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "mbrl_bench", *args], capture_output=True,
                         text=True)
    failed = None
    if res.returncode != 0:
        failed = "\n".join((res.stdout + res.stderr).splitlines()[-25:])
    return time.perf_counter() - t, failed


def summary(run_dir: Path) -> dict[str, object]:
    """Final return, wall-clock and summed phase seconds of one run."""
    meta = json.loads((run_dir / "run.json").read_text())
    def rows(name: str) -> list[dict[str, str]]:
        path = run_dir / name
        if not path.exists():
            return []
        with path.open() as f:
            return list(csv.DictReader(f))
    evals, metrics = rows("evals.csv"), rows("metrics.csv")
    phases = {k: sum(float(r[k]) for r in metrics if r.get(k) not in (None, "", "nan"))
              for k in PHASES if metrics and k in metrics[0]}
    plan = [float(r["plan_s_per_step"]) for r in metrics
            if r.get("plan_s_per_step") not in (None, "", "nan")]
    if plan:
        phases["plan_s_per_step"] = sum(plan) / len(plan)
    return {"return": float(evals[-1]["return_mean"]) if evals else float("nan"),
            "wall_s": float(meta.get("wall_clock_s") or "nan"),
            "device": meta.get("device"), "gpu": meta.get("gpu", ""), **phases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="cuda,cpu")
    ap.add_argument("--out", type=Path, default=Path("results/gpu_check"))
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: tabulate the runs already in --out")
    args = ap.parse_args()
    devices = args.devices.split(",")
    if (not args.report_only and any(d.startswith("cuda") for d in devices)
            and not torch.cuda.is_available()):
        raise SystemExit("no CUDA here (torch.cuda.is_available() is false): run this on a GPU "
                         "machine, or with --devices cpu to check the script")
    args.out.mkdir(parents=True, exist_ok=True)
    suite = args.out / "gpu-check.toml"
    suite.write_text(CHECK_SUITE)
    lines = [f"command: python benchmarks/gpu_check.py --devices {args.devices}"
             + (" --report-only" if args.report_only else ""),
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} cores"]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}")
    rows: dict[str, dict[str, dict[str, object]]] = {}
    for device in devices:
        out = args.out / device.replace(":", "_")
        runs = [("smoke", ["run", "--suite", "smoke", "--device", device, "--out", str(out)]),
                ("MBPO InvertedPendulum-v5", ["run", "--suite", str(suite), "--algos", "mbpo",
                                              "--env", "InvertedPendulum*", "--device",
                                              device, "--out", str(out)]),
                ("PETS cart-pole", ["run", "--suite", str(suite), "--algos", "pets", "--env",
                                    "*CartPole*", "--device", device, "--out", str(out)])]
        for name, cmd in runs if not args.report_only else []:
            seconds, failed = bench(*cmd)
            lines.append(f"{device}: {name}: {seconds:.1f} s (process start included)"
                         + (f" FAILED:\n{failed}" if failed else ""))
            print(lines[-1], flush=True)
        for run_json in sorted(out.rglob("run.json")):
            run_id = str(run_json.parent.relative_to(out))
            rows.setdefault(run_id, {})[device] = summary(run_json.parent)
    lines.append("")
    lines.append("run | " + " | ".join(f"{d} return | {d} wall s | {d} phases (s)"
                                       for d in devices))
    for run_id, per_device in sorted(rows.items()):
        cells = []
        for d in devices:
            s = per_device.get(d)
            if s is None:
                cells.append("- | - | -")
                continue
            phases = ", ".join(f"{k} {float(v):.3g}" for k, v in s.items()  # type: ignore[arg-type]
                               if k not in ("return", "wall_s", "device", "gpu"))
            cells.append(f"{s['return']:.1f} | {s['wall_s']:.1f} | {phases}")
        lines.append(f"{run_id} | " + " | ".join(cells))
    report = "\n".join(lines) + "\n"
    (args.out / "report.txt").write_text(report)
    print(report, end="")


if __name__ == "__main__":
    main()
