"""Where a PETS planned step's time goes on this machine: torch.profiler over ``--steps`` steps.

The agent of ``benchmarks/pets_speed.py`` (PETS's HalfCheetah settings: CEM 400 x 5
iterations, horizon 30, 20 particles TS-∞ through 5 Gaussian MLPs of 4x200, learned reward),
its model fitted on 1,000 random HalfCheetah-v5 transitions at ``--precision``
(``model.precision``); one warm-up step, then ``--steps`` profiled steps of the real env. The
table is torch's operator summary sorted by self time; the first lines sum it into the matrix
products, the precision casts, the activations, the random draws and the rest (issue 13: what
limits PETS against the machine's measured bf16 and fp32 throughput). The profiler adds its own
per-operator overhead, so the shares matter, not the total.

    python benchmarks/pets_profile.py [--precision bf16] [--steps 3] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from pets_speed import build_ours, control, random_data
from torch.profiler import ProfilerActivity, profile

from mbrl_bench.reporting.speed import cpu_flags, cpu_id, print_report, profile_by_kind

GROUPS = {
    "matrix products": ("aten::baddbmm", "aten::bmm", "aten::addmm", "aten::mm"),
    "precision casts": ("aten::copy_", "aten::_to_copy"),
    "activations": ("aten::silu", "aten::silu_", "aten::sigmoid", "aten::softplus"),
    "random draws": ("aten::normal_", "aten::randn", "aten::uniform_", "aten::randint",
                     "aten::random_"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "random.npz"
        random_data(data)
        agent, settings = build_ours(data, a.precision)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        seconds = control(agent.act, a.steps)  # its warm-up step is profiled too
    events = prof.key_averages()
    total, by_kind = profile_by_kind(events, a.steps + 1, GROUPS, "s", "planned step")
    lines = [
        "command: python benchmarks/pets_profile.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if v is not None),
        f"machine: {cpu_id()} ({' '.join(cpu_flags())}); torch {torch.__version__}; "
        f"{a.threads} thread(s); settings {settings}",
        f"timed steps under the profiler: {', '.join(f'{s:.2f}' for s in seconds)} s; "
        f"profiled self time {total:.2f} s per planned step (the warm-up step included); "
        "by kind:",
        *by_kind,
    ]
    lines.append(events.table(sort_by="self_cpu_time_total", row_limit=25))
    print_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
