"""Where a SAC update's time goes on this machine: torch.profiler over ``--updates`` updates.

The update as a run makes it (256x256 actor and twin critics, batch 256, Hopper's sizes) at
``--precision`` (``optimizer.precision``), after 10 warm-up updates; the table is torch's
operator summary sorted by self time, and the first lines sum it into the matrix products
(``baddbmm``, ``bmm``, ``addmm``, ``mm``), the precision casts (``copy_``, ``_to_copy``), the
optimiser step and the rest (issue 13: what limits SAC against Stable-Baselines3). The
profiler adds its own per-operator overhead, so the shares matter, not the total.

    python benchmarks/sac_profile.py [--precision bf16] [--updates 50] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sac_compile import ACT, BATCH, OBS, batches, make_sac
from torch.profiler import ProfilerActivity, profile

from mbrl_bench.reporting.speed import cpu_flags, cpu_id, print_report, profile_by_kind

GROUPS = {
    "matrix products": ("aten::baddbmm", "aten::bmm", "aten::addmm", "aten::mm"),
    "precision casts": ("aten::copy_", "aten::_to_copy"),
    # the optimiser's record_function wraps its kernel: its self time is the Python around it
    "optimiser step (Python and kernel)": ("Optimizer.step#Adam.step", "aten::_fused_adam_"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cpu = torch.device("cpu")
    sac = make_sac(cpu, a.precision)
    data = batches(a.updates + 10, cpu)
    for b in data[:10]:
        sac.update(b)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in data[10:]:
            sac.update(b)
    events = prof.key_averages()
    total, by_kind = profile_by_kind(events, a.updates, GROUPS, "ms", "update")
    lines = [
        "command: python benchmarks/sac_profile.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if v is not None),
        f"machine: {cpu_id()} ({' '.join(cpu_flags())}); torch {torch.__version__}; "
        f"{a.threads} thread(s); SAC update batch {BATCH}, 256x256, {OBS} obs / {ACT} actions, "
        f"precision {a.precision}",
        f"profiled: {total:.2f} ms per update (with the profiler's overhead); self time per "
        "update by kind:",
        *by_kind,
    ]
    lines.append(events.table(sort_by="self_cpu_time_total", row_limit=25))
    print_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
