"""One speed benchmark: SAC, MBPO and PETS at paper settings, per phase, ours against
Stable-Baselines3 and mbrl-lib in the same run, alternating, medians of repeats.

    python benchmarks/speed.py [--algos sac,mbpo,pets] [--reps 3] [--threads 1]
        [--precisions auto] [--peer /work/peer_mbrl] [--sac-steps 3000]
        [--mbpo-random 5000] [--mbpo-steps 500] [--pets-steps 3]
        [--out results/reference/speed] [--no-write]

- **SAC** on Hopper-v5 (our `sac` recipe; SB3's SAC at the same settings): env steps 2,000 →
  ``--sac-steps`` after 1,000 random steps, one update per step; phases: the updates and the
  rest (acting, env, buffer), per 1,000 env steps, and milliseconds per update
  (``sac_speed.py``).
- **MBPO** on Hopper-v5 (our `mbpo` recipe at its official per-task settings; mbrl-lib's MBPO at
  the same ones), ``--mbpo-steps`` after ``--mbpo-random`` random steps; phases: env, model
  fit, rollouts, SAC updates, other, per 1,000 env steps, plus milliseconds per SAC update and
  seconds per refit (``mbpo_speed.py``). Both fit by mbrl-lib's stopping rule, so that the fit
  phase compares like with like (ours ends fits by the official rule, which trains much
  longer: ``fit_cap.py``). mbrl-lib's window starts with a fit from fresh weights (its first),
  ours refits a model first fitted at the end of the random steps, so ours counts that first
  fit in place of the window's last refit (the same number of fits, one from fresh weights on
  each side). mbrl-lib makes (almost) no SAC update before its first refit, so the total is
  also given with the updates counted at ``--updates`` per step for both
  (``total_equal_updates``).
- **PETS** on HalfCheetah-v5 (our `pets` recipe; mbrl-lib's `pets_halfcheetah` at our CEM
  settings): the model fit on the same 1,000 random transitions (12 epochs each; ours holds
  out 10% and evaluates it every epoch, mbrl-lib holds out nothing, so the fits are close but
  not equal work), then seconds of planning per env step over ``--pets-steps`` steps
  (``pets_speed.py``).

Ours runs at fp32 and, where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16), also
with every bf16 option of the recipe (``optimizer.precision = bf16`` for SAC; that and
``model.precision = bf16`` for MBPO; ``model.precision = bf16`` for PETS, which has no
optimizer); ``--precisions fp32,bf16`` forces both. Each repeat runs
every library once, in turn, in reverse order on odd repeats. The output names the CPU model,
its flags and the measured fp32 (and bf16) matrix throughput, and what that throughput allows:
the arithmetic floor of a SAC update and of a PETS planning step against the measured times.

Results go to ``--out``/speed-<cpu>.{csv,md} (one file per CPU: model name, torch's CPU
capability and the bf16/AMX units, such as ``speed-amd-epyc-avx512-bf16``; a run replaces the
figures it measured again and keeps the others). Before writing, the new figures of ours are
compared with the committed ones for the same CPU, thread count and benchmark settings (every
``speed-*.csv`` in ``--out``): a quantity more than 30% slower is printed as a warning; the
benchmark never fails on it.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mbpo_speed
import pets_speed
import precision_speed
import sac_speed

from mbrl_bench.devices import has_bf16_units
from mbrl_bench.envs.make import make_env
from mbrl_bench.models.ensemble import PREDICT_CHUNK_ROWS_CPU
from mbrl_bench.reporting.speed import (
    CODE,
    OURS,
    cpu_flags,
    cpu_id,
    cpu_model,
    medians,
    merge,
    read_reference,
    read_rows,
    regressions,
    uncovered,
    write_rows,
)
from mbrl_bench.runner.store import code_version
from mbrl_bench.spec import load_recipe

TASKS = {"sac": "Hopper-v5", "mbpo": "Hopper-v5", "pets": pets_speed.ENV_ID}
PEERS = {"sac": "sb3", "mbpo": "mbrl-lib", "pets": "mbrl-lib"}
DERIVED = {("sac", "env"), ("mbpo", "other")}
"""Remainders (a total minus its timed phases): too noisy for the regression check."""
S1K = "s/1k steps"
Phases = list[tuple[str, str, float]]


# --------------------------------------------------------------------------- measurements
def sac(lib: str, precision: str, rep: int, a: argparse.Namespace, _: Path) -> Phases:
    r = (sac_speed.ours(TASKS["sac"], a.sac_steps, rep, precision) if lib == OURS
         else sac_speed.sb3(TASKS["sac"], a.sac_steps, rep))
    return [("env", S1K, r["total"] - r["update"]), ("updates", S1K, r["update"]),
            ("total", S1K, r["total"]), ("update", "ms", r["ms_per_update"])]


def mbpo(lib: str, precision: str, rep: int, a: argparse.Namespace, _: Path) -> Phases:
    if lib == OURS:
        r = mbpo_speed.ours(TASKS["mbpo"], a.mbpo_random, a.mbpo_steps, a.updates, rep,
                            improve_from_initial=True, precision=precision, cold_first=True)
    else:
        epoch = load_recipe("mbpo", TASKS["mbpo"]).config("rollout").epoch_length
        r = mbpo_speed.mbrl_lib(a.peer, TASKS["mbpo"], a.mbpo_random, a.mbpo_steps, a.updates,
                                rep, a.threads, epoch_length=min(epoch, a.mbpo_steps))
    per_1k = 1000 / r["steps"]
    out = [(k, S1K, r[k] * per_1k) for k in (*mbpo_speed.PHASES, "total")]
    equal = (r["total"] - r["sac"]) * per_1k + r["sac_ms_per_update"] * a.updates
    return [*out, ("total_equal_updates", S1K, equal),
            ("sac_update", "ms", r["sac_ms_per_update"]),
            ("model_fit_per_refit", "s", r["fit_s_per_refit"])]


def pets(lib: str, precision: str, rep: int, a: argparse.Namespace, data: Path) -> Phases:
    if lib == OURS:
        times, settings = pets_speed.ours(data, a.pets_steps, precision)
    else:
        times, settings = pets_speed.run_peer(data, a.pets_steps, a.threads,
                                              str(a.peer / "bin" / "python"))
    return [("model_fit", "s", settings["fit_s"]),
            ("plan", "s/step", float(statistics.median(times)))]


def settings(algo: str, a: argparse.Namespace) -> str:
    """The benchmark's settings for ``algo``: figures compare only at equal settings."""
    return {"sac": f"steps={a.sac_steps}",
            "mbpo": f"random={a.mbpo_random} steps={a.mbpo_steps} updates={a.updates}",
            "pets": f"steps={a.pets_steps}"}[algo]


MEASURE: dict[str, Callable[[str, str, int, argparse.Namespace, Path], Phases]] = {
    "sac": sac, "mbpo": mbpo, "pets": pets}


# --------------------------------------------------------------------------- machine limits
def gflops(shape: tuple[int, int, int, int], dtype: torch.dtype, repeats: int = 5) -> float:
    """Measured GFLOP/s of a batched product ``[b, m, k] @ [b, k, n]`` at this thread count
    (median of ``repeats`` timings of enough calls to last about 0.05 s each)."""
    b, m, k, n = shape
    x, w = torch.randn(b, m, k).to(dtype), torch.randn(b, k, n).to(dtype)
    cpu = torch.device("cpu")
    calls = max(1, round(0.05 / precision_speed.timed(lambda: torch.bmm(x, w), 1, cpu)))
    seconds = statistics.median(precision_speed.timed(lambda: torch.bmm(x, w), calls, cpu)
                                for _ in range(repeats))
    return 2 * b * m * k * n / seconds / 1e9


def sac_update_flops(obs: int, act: int, hidden: tuple[int, ...], batch: int) -> float:
    """Arithmetic of one SAC update (twin critics), counted in forward-pass equivalents (a
    backward pass through a layer ≈ twice its forward, once when only input gradients are
    needed): actor 4 (next-state actions; the actor loss's forward and backward), each critic
    6 (target forward; the TD loss's forward and backward; the actor loss's forward through it
    and its backward to the actions alone, the critic's weights detached there), 12 for the
    twin."""
    def macs(sizes: list[int]) -> int:
        return sum(i * o for i, o in pairwise(sizes))

    actor = macs([obs, *hidden, 2 * act])
    critic = macs([obs + act, *hidden, 1])
    return 2.0 * batch * (4 * actor + 12 * critic)


def pets_step_flops(obs: int, act: int) -> tuple[float, tuple[int, int, int, int]]:
    """Arithmetic of one planned PETS step (forward passes only: population x particles rows,
    horizon steps, CEM iterations, through one member each) and the shape of the products it
    is made of (hidden x hidden, in chunks of at most ``PREDICT_CHUNK_ROWS_CPU`` rows per
    member)."""
    recipe = load_recipe("pets", pets_speed.ENV_ID)
    loop, model, planner = (recipe.config("loop"), recipe.config("model"),
                            recipe.config("planner"))
    h, layers, e = model.hidden_size, model.num_layers, model.ensemble_size
    member = (obs + act) * h + (layers - 1) * h * h + h * 2 * (obs + 1)
    rows = planner.population_size * loop.particles
    flops = 2.0 * rows * member * loop.horizon * planner.iterations
    return flops, (e, min(rows // e, PREDICT_CHUNK_ROWS_CPU), h, h)


def limits(a: argparse.Namespace, bf16: bool, result: dict[tuple[str, str, str], float]
           ) -> list[str]:
    """What the machine's measured matrix throughput allows, against what we measured."""
    out = []
    hopper = make_env("Hopper-v5")
    o, ac = hopper.observation_space.shape[0], hopper.action_space.shape[0]  # type: ignore[index]
    sac_cfg = load_recipe("sac", "Hopper-v5").config("optimizer")
    f_sac = sac_update_flops(o, ac, tuple(sac_cfg.hidden_sizes), sac_cfg.batch_size)
    shape_sac = (1, sac_cfg.batch_size, sac_cfg.hidden_sizes[0], sac_cfg.hidden_sizes[1])
    cheetah = make_env(pets_speed.ENV_ID)
    o2, ac2 = cheetah.observation_space.shape[0], cheetah.action_space.shape[0]  # type: ignore[index]
    f_pets, shape_pets = pets_step_flops(o2, ac2)
    for dtype in ((torch.float32, torch.bfloat16) if bf16 else (torch.float32,)):
        name = "fp32" if dtype == torch.float32 else "bf16"
        g_sac, g_pets = gflops(shape_sac, dtype), gflops(shape_pets, dtype)
        out.append(f"- {name} matrix throughput, {a.threads} thread(s): {g_sac:.1f} GFLOP/s on "
                   f"a {'x'.join(map(str, shape_sac[1:]))} product (a SAC layer), {g_pets:.1f} "
                   f"GFLOP/s on {shape_pets[0]} x {'x'.join(map(str, shape_pets[1:]))} (a PETS "
                   "planning product).")
        floor_sac = f_sac / g_sac / 1e6
        ours_sac = result.get(("sac", "update", name))
        if ours_sac:
            out.append(f"  - SAC update: {f_sac / 1e9:.2f} GFLOP of products → {floor_sac:.2f} "
                       f"ms at that rate; ours at {name} takes {ours_sac:.2f} ms "
                       f"({ours_sac / floor_sac:.1f}× that floor).")
        floor_pets = f_pets / g_pets / 1e9
        ours_pets = result.get(("pets", "plan", name))
        if ours_pets:
            out.append(f"  - PETS planned step: {f_pets / 1e9:.0f} GFLOP of forward passes → "
                       f"{floor_pets:.2f} s at that rate; ours at {name} takes {ours_pets:.2f} s "
                       f"({ours_pets / floor_pets:.1f}× that floor).")
    return out


# --------------------------------------------------------------------------- report
def last_settings(rows: Sequence[Mapping[str, Any]], algo: str, threads: int) -> str:
    """The settings of ``algo``'s last timed run in ``rows`` at ``threads`` threads: a kept
    algorithm is reported at one set of settings, never a mix of them."""
    return next(str(r["settings"]) for r in reversed(rows)
                if r["algo"] == algo and str(r["threads"]) == str(threads))


def markdown(rows: list[dict[str, Any]], a: argparse.Namespace, machine: str,
             limit_lines: list[str], warnings: list[str], command: str) -> str:
    """The report of ``rows``: this run's and, for algorithms it did not time, those kept in
    the CPU's file from earlier runs."""
    med = {(k[2], k[5], k[6], k[7], k[8]): v for k, v in medians(rows).items()}
    algos = [x for x in MEASURE if any(r["algo"] == x for r in rows)]
    kept = [x for x in algos if x not in a.algos]
    lines = [f"# Speed on {machine}", "", f"Command: `{command}`; code {code_version()}, torch "
             f"{torch.__version__}, Python {sys.version.split()[0]}. Medians of the repeats "
             "(each algorithm's heading gives their number); the libraries alternate within "
             "each repeat.", ""]
    if kept:
        lines += [f"Figures of {', '.join(kept)} are kept from an earlier run of this file "
                  "(this command did not time them; the heading names the code that did).", ""]
    for algo in algos:
        reps = len({str(r["rep"]) for r in rows if r["algo"] == algo})
        codes = sorted({str(r.get(CODE) or "not recorded") for r in rows if r["algo"] == algo})
        cols = sorted({(r["lib"], r["precision"]) for r in rows if r["algo"] == algo},
                      key=lambda c: (c[0] != OURS, c[1]))
        peer = next((c for c in cols if c[0] != OURS), None)
        ours = [p for lib, p in cols if lib == OURS] if peer else []
        lines += [f"## {algo} on {TASKS[algo]} ({reps} repeats; code {', '.join(codes)})", "",
                  "| phase | unit | " + " | ".join(f"{lib} {p}" for lib, p in cols)
                  + "".join(f" | {peer[0]} ÷ ours {p}" for p in ours) + " |",
                  "|---|---|" + "--:|" * (len(cols) + len(ours))]
        phases = list(dict.fromkeys((r["phase"], r["unit"]) for r in rows if r["algo"] == algo))
        for phase, unit in phases:
            vals = {(lib, p): med.get((algo, lib, p, phase, unit), float("nan"))
                    for lib, p in cols}
            cells = " | ".join("—" if np.isnan(v) else f"{v:.3g}" for v in vals.values())
            ratio = ""
            for p in ours:
                mine, theirs = vals[(OURS, p)], vals[peer]  # type: ignore[index]
                ratio += (f" | {theirs / mine:.2f}×" if mine > 1e-3 and not np.isnan(theirs)
                          else " | —")
            lines.append(f"| {phase} | {unit} | {cells}{ratio} |")
        lines.append("")
    lines += ["## What the machine allows", "", *limit_lines, "",
              "## Against the committed figures", ""]
    lines += ([f"- warning: {w}" for w in warnings] if warnings
              else ["- no quantity of ours more than 30% slower than the committed figure on "
                    "this CPU (or none committed yet)."])
    return "\n".join(lines) + "\n"


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    """The arguments, checked (a one-line error each), and the precisions to time."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--algos", default="sac,mbpo,pets")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precisions", default="auto",
                   help="auto (bf16 too where the CPU has bf16 units), fp32, or fp32,bf16")
    p.add_argument("--peer", type=Path, default=Path("/work/peer_mbrl"),
                   help="mbrl-lib's virtualenv (../shared/peers/mbrl_lib/setup.sh DIR)")
    p.add_argument("--sac-steps", type=int, default=3000)
    p.add_argument("--mbpo-random", type=int, default=5000)
    p.add_argument("--mbpo-steps", type=int, default=500)
    p.add_argument("--updates", type=int, default=20, help="MBPO's SAC updates per env step")
    p.add_argument("--pets-steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("results/reference/speed"))
    p.add_argument("--no-write", action="store_true", help="compare only; write nothing")
    a = p.parse_args()
    a.algos = a.algos.split(",")
    bad = [x for x in a.algos if x not in MEASURE]
    if bad:
        p.error(f"--algos: unknown {', '.join(bad)} (choose from {', '.join(MEASURE)})")
    if a.mbpo_steps % 250 or a.mbpo_random % 250 or a.mbpo_steps < 500:
        p.error("--mbpo-steps (>= 500: mbrl-lib updates SAC only after its first refit) and "
                "--mbpo-random must be multiples of 250 (the refit period)")
    if a.sac_steps <= sac_speed.T0:
        p.error(f"--sac-steps must exceed {sac_speed.T0} (the timed window starts there)")
    if ("mbpo" in a.algos or "pets" in a.algos) and not (a.peer / "bin" / "python").exists():
        p.error(f"--peer: no virtualenv at {a.peer} (make it with "
                "../shared/peers/mbrl_lib/setup.sh DIR)")
    if "sac" in a.algos:
        try:
            import stable_baselines3  # noqa: F401
        except ImportError:
            p.error("sac needs Stable-Baselines3 beside us: pip install stable-baselines3")
    if a.precisions == "auto":
        return a, ["fp32", "bf16"] if has_bf16_units(torch.device("cpu")) else ["fp32"]
    precisions = a.precisions.split(",")
    if any(x not in ("fp32", "bf16") for x in precisions) or "fp32" not in precisions:
        p.error("--precisions: auto, fp32 or fp32,bf16 (fp32 is what the peers and the "
                "ratios compare)")
    return a, precisions


def measure_all(a: argparse.Namespace, precisions: list[str], cpu: str) -> list[dict[str, Any]]:
    """Every repeat of every algorithm, each library (and precision of ours) in turn."""
    rows: list[dict[str, Any]] = []
    code = code_version()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "random.npz"
        if "pets" in a.algos:
            pets_speed.random_data(data)
        for rep in range(a.reps):
            for algo in a.algos:
                runs = [*((OURS, x) for x in precisions),
                        (PEERS[algo], "fp32")]
                for lib, precision in (runs if rep % 2 == 0 else runs[::-1]):
                    t = time.perf_counter()
                    phases = MEASURE[algo](lib, precision, rep, a, data)
                    print(f"rep {rep} {algo} {lib} {precision} ({time.perf_counter() - t:.0f} s):"
                          f" {', '.join(f'{ph} {v:.3g} {u}' for ph, u, v in phases)}", flush=True)
                    rows += [{"cpu": cpu, "threads": a.threads, "torch": torch.__version__,
                              "algo": algo, "task": TASKS[algo], "settings": settings(algo, a),
                              "lib": lib,
                              "precision": precision, "phase": ph, "unit": u, "rep": rep,
                              "value": f"{v:.6g}", CODE: code} for ph, u, v in phases]
    return rows


def main() -> None:
    a, precisions = parse_args()
    torch.set_num_threads(a.threads)
    cpu, bf16_units = cpu_id(), has_bf16_units(torch.device("cpu"))
    machine = (f"{cpu_model()} (flags {', '.join(cpu_flags()) or 'none of avx2/avx512/bf16/amx'}"
               f"; torch CPU capability {torch.backends.cpu.get_cpu_capability()}; bf16 matrix "
               f"units: {'yes' if bf16_units else 'no'}), {a.threads} torch thread(s)")
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    print(machine, flush=True)
    if "bf16" not in precisions:
        print("bf16 not timed: this CPU has no bf16 matrix units (torch emulates bf16 products "
              "here, 10-20x slower than fp32; --precisions fp32,bf16 times it anyway)",
              flush=True)
    reference = read_reference(a.out)
    rows = measure_all(a, precisions, cpu)
    warnings = regressions(rows, reference, ignore=DERIVED)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for m in uncovered(rows, reference):
        print(f"no committed speed figures for {m}: nothing to compare against", flush=True)
    result = {(k[2], k[7], k[6]): v for k, v in medians(rows).items() if k[5] == OURS}
    limit_lines = limits(a, "bf16" in precisions, result)
    print(markdown(rows, a, machine, limit_lines, warnings, command))
    if not a.no_write:
        slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-") or "unknown"
        path = a.out / f"speed-{slug}.csv"
        merged = merge(read_rows(path) if path.exists() else [], rows)
        write_rows(path, merged)
        mine = [r for r in merged if str(r["threads"]) == str(a.threads)]
        shown = {algo: settings(algo, a) if algo in a.algos else last_settings(mine, algo,
                                                                              a.threads)
                 for algo in {str(r["algo"]) for r in mine}}
        same = [r for r in mine if str(r["settings"]) == shown[str(r["algo"])]]
        (a.out / f"speed-{slug}.md").write_text(markdown(same, a, machine, limit_lines,
                                                           warnings, command))


if __name__ == "__main__":
    main()
