"""Does bf16 change what is learned? MBPO on InvertedPendulum-v5 (bf16: ``model.precision`` and
SAC's ``optimizer.precision``, as benchmarks/speed.py times it; ``--model-only``: the model's
alone) and PETS on the continuous cart-pole (``model.precision``), fp32 against bf16, the same
seeds, with the model's holdout error beside each return (issue 13's check; on a device with
bf16 matrix units, where bf16 pays).

    python benchmarks/precision_learning.py [--device cuda] [--algos mbpo,pets] [--seeds 3]
        [--mbpo-steps 3000] [--pets-steps 500] [--workers 12] [--threads 0] [--deadline 0]
        [--model-only] [--out results/precision_learning]

The algorithms and precisions run at once, one ``bench run`` each (``--workers`` runs in
parallel, split evenly between them;
``--threads`` torch threads per run, 0: bench run's default). With
``--deadline S`` (seconds) the runs are stopped after S seconds and compared at the largest
evaluation step every run reached; runs resume, so the same command continues them later.
Writes ``report.txt`` and ``evals.csv`` in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

SUITE = """
description = "fp32 against bf16 model products (benchmarks/precision_learning.py)"
seeds = [0]
[[envs]]
id = "InvertedPendulum-v5"
budget = {mbpo_steps}
eval_every = 250
eval_episodes = 5
[[envs]]
id = "mbrl_bench/ContinuousCartPole-v0"
budget = {pets_steps}
eval_every = 250
eval_episodes = 1
initial_random_steps = 200
"""
HOLDOUT = ("model_holdout_mse", "model_holdout_nll")


def last_finite(rows: list[dict[str, str]], key: str, upto: int | None = None) -> float:
    """The last finite ``key`` in ``rows`` at or before env step ``upto``."""
    for r in reversed(rows):
        if upto is not None and int(float(r["env_step"])) > upto:
            continue
        v = r.get(key)
        if v not in (None, "", "nan") and math.isfinite(float(v)):
            return float(v)
    return math.nan


def read_runs(out: Path) -> list[dict[str, object]]:
    """One record per run: algorithm, precision, seed, evaluations, last holdout errors."""
    runs = []
    for run_json in sorted(out.rglob("run.json")):
        meta = json.loads(run_json.read_text())
        d = run_json.parent
        evals_path, metrics_path = d / "evals.csv", d / "metrics.csv"
        evals = list(csv.DictReader(evals_path.open())) if evals_path.exists() else []
        metrics = list(csv.DictReader(metrics_path.open())) if metrics_path.exists() else []
        sets = meta.get("settings") or {}
        runs.append({
            "algo": str(meta["algo"]).split("[")[0], "env": meta["env_id"],
            "precision": sets.get("model.precision", "fp32"), "settings": sets,
            "seed": int(d.name.removeprefix("seed_")),
            "evals": {int(float(r["env_step"])): float(r["return_mean"]) for r in evals},
            "metrics": metrics,
            "wall_s": float(meta.get("wall_clock_s") or last_finite(metrics, "wall_clock_s")),
            "status": meta.get("status", "?"),
        })
    return runs


def report(runs: list[dict[str, object]], header: list[str]) -> str:
    lines = [*header, "", "algo | precision | seeds | step | return per seed | mean | "
             "holdout MSE of the last fit logged by then (mean over seeds) | holdout NLL | "
             "wall-clock s per run (a stopped run: at its last row)"]
    for algo in sorted({str(r["algo"]) for r in runs}):
        mine = [r for r in runs if r["algo"] == algo]
        common = set.intersection(*(set(r["evals"]) for r in mine))  # type: ignore[arg-type]
        step = max(common) if common else None
        for prec in ("fp32", "bf16"):
            rs = sorted((r for r in mine if r["precision"] == prec), key=lambda r: r["seed"])  # type: ignore[arg-type,return-value]
            if not rs or step is None:
                continue
            rets = [r["evals"][step] for r in rs]  # type: ignore[index]
            mse, nll = (statistics.mean(last_finite(r["metrics"], k, step)  # type: ignore[arg-type]
                                        for r in rs) for k in HOLDOUT)
            walls = ", ".join(f"{float(r['wall_s']):.0f}" for r in rs)  # type: ignore[arg-type]
            lines.append(f"{algo} | {prec} | {len(rs)} | {step} | "
                         + ", ".join(f"{x:.1f}" for x in rets)
                         + f" | {statistics.mean(rets):.1f} | {mse:.4g} | {nll:.4g} | {walls}")
    return "\n".join(lines) + "\n"


def settings(algo: str, precision: str, model_only: bool) -> dict[str, str]:
    """The ``--set`` settings of one precision: the model's, and MBPO's SAC products too (what
    benchmarks/speed.py times as MBPO's bf16) unless ``model_only``."""
    keys = ["model.precision"]
    if algo == "mbpo" and not model_only:
        keys.append("optimizer.precision")
    return {k: precision for k in keys}


def commands(args: argparse.Namespace, algos: list[str], suite: Path, per: int) -> list[list[str]]:
    """One ``bench run`` per algorithm and precision, ``per`` runs at a time each."""
    common = ["--suite", str(suite), "--seeds", args.seeds, "--device", args.device,
              "--workers", str(per), "--out", str(args.out / "runs")]
    if args.device.startswith("cuda"):
        common += ["--runs-per-gpu", str(per)]
    if args.threads:
        common += ["--threads", str(args.threads)]
    env = {"mbpo": "InvertedPendulum*", "pets": "*CartPole*"}

    def sets(algo: str, precision: str) -> list[str]:
        return [x for k, v in settings(algo, precision, args.model_only).items()
                for x in ("--set", f"{k}={v}")]

    return [[sys.executable, "-m", "mbrl_bench", "run", *common, *sets(a, p), "--algos", a,
             "--env", env[a]] for a in algos for p in ("fp32", "bf16")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--algos", default="mbpo,pets")
    ap.add_argument("--seeds", default="3")
    ap.add_argument("--mbpo-steps", type=int, default=3000)
    ap.add_argument("--pets-steps", type=int, default=500)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--deadline", type=float, default=0.0, help="seconds; 0: none")
    ap.add_argument("--model-only", action="store_true",
                    help="MBPO's bf16 in the model only (default: the model and SAC's products)")
    ap.add_argument("--out", type=Path, default=Path("results/precision_learning"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suite = args.out / "precision.toml"
    suite.write_text(SUITE.format(mbpo_steps=args.mbpo_steps, pets_steps=args.pets_steps))
    algos = [x for x in args.algos.split(",") if x]
    if not algos or set(algos) - {"mbpo", "pets"}:
        ap.error(f"--algos: mbpo, pets or both, not {args.algos!r}")
    per = max(1, args.workers // (2 * len(algos)))  # each algorithm: two commands (fp32, bf16)
    cmds = commands(args, algos, suite, per)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, start_new_session=True) for c in cmds]
    stopped = False
    while any(p.poll() is None for p in procs):
        if args.deadline and time.perf_counter() - t0 > args.deadline:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
            stopped = True
            break
        time.sleep(1.0)
    for p in procs:
        p.wait()
    wall = time.perf_counter() - t0
    import torch

    from mbrl_bench.devices import has_bf16_units
    from mbrl_bench.reporting.speed import cpu_flags, cpu_id

    where = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
             and torch.cuda.is_available() else
             f"CPU {cpu_id()} ({' '.join(cpu_flags())}; bf16 matrix units: "
             f"{'yes' if has_bf16_units(torch.device('cpu')) else 'no'})")
    header = [
        "command: python benchmarks/precision_learning.py " + " ".join(sys.argv[1:]),
        f"device: {where}; torch {torch.__version__}; {os.cpu_count()} cores; "
        f"{len(cmds)} suites at once, {per} runs each at a time; {wall:.0f} s"
        + (" (stopped at the deadline: compared at the last step every run reached)"
           if stopped else ""),
        "exit codes: " + ", ".join(str(p.returncode) for p in procs),
    ]
    found = read_runs(args.out / "runs")
    runs = [r for r in found
            if r["settings"] == settings(str(r["algo"]), str(r["precision"]), args.model_only)]
    if len(runs) < len(found):  # an earlier command's runs in the same folder, other settings
        header.append(f"left out: {len(found) - len(runs)} runs of other settings in {args.out}")
    text = report(runs, header)
    (args.out / "report.txt").write_text(text)
    with (args.out / "evals.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "precision", "seed", "env_step", "return_mean"])
        for r in runs:
            for step, ret in sorted(r["evals"].items()):  # type: ignore[attr-defined]
                w.writerow([r["algo"], r["precision"], r["seed"], step, ret])
    print(text, end="")


if __name__ == "__main__":
    main()
