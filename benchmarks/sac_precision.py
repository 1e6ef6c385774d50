"""SAC's update at ``optimizer.precision = "fp32"`` against ``"bf16"`` on this machine.

The SAC update (256x256 actor and twin critics, batch 256, Hopper's sizes: 11 observations,
3 actions) is timed as a run makes it at each precision: two agents built alike, one with
``SACConfig()``, one with ``SACConfig(precision="bf16")`` (forward passes under bf16 autocast,
entered and left by every update, so each update casts the weights its optimiser step just
changed; fp32 weights, Adam state, outputs and losses), alternating, ``--repeats`` times
``--updates`` updates each; the figure is the median milliseconds per update. Beside it, one
256x256x256 product in each precision (a critic layer at batch 256), so the update's figure
can be read against what the matrix units give on a bare product (issue 13).

    python benchmarks/sac_precision.py [--repeats 7] [--updates 50] [--threads 1]
        [--device cpu] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from sac_compile import ACT, BATCH, OBS, batches

from mbrl_bench.devices import has_bf16_units
from mbrl_bench.optimizers.sac import SAC, SACConfig
from mbrl_bench.reporting.speed import cpu_flags, cpu_id, print_report


def per_call_ms(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Milliseconds per call of ``fn`` over ``calls`` calls (the device's queue drained)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sync()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - t) / calls * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    agents = {p: SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT), SACConfig(precision=p),
                     torch.Generator(device="cpu").manual_seed(0), device=device)
              for p in ("fp32", "bf16")}
    data = batches(a.updates, device)
    x = torch.randn(256, 256, device=device)
    w = torch.randn(256, 256, device=device)
    xb, wb = x.bfloat16(), w.bfloat16()

    def updates(sac: SAC) -> Callable[[], None]:
        def run() -> None:
            for b in data:
                sac.update(b)
        return run

    forms: dict[str, Callable[[], object]] = {
        "update fp32": updates(agents["fp32"]), "update bf16": updates(agents["bf16"]),
        "256x256x256 product fp32": lambda: x @ w, "256x256x256 product bf16": lambda: xb @ wb}
    calls = {k: (1 if k.startswith("update") else 200) for k in forms}
    for name, fn in forms.items():  # warm-up
        per_call_ms(fn, calls[name], device)
    times: dict[str, list[float]] = {k: [] for k in forms}
    for rep in range(a.repeats):
        for name in (list(forms) if rep % 2 == 0 else list(forms)[::-1]):
            ms = per_call_ms(forms[name], calls[name], device)
            times[name].append(ms / a.updates if name.startswith("update") else ms)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = 2 * 256 ** 3
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{cpu_id()} ({' '.join(cpu_flags())})")
    lines = [
        "command: python benchmarks/sac_precision.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if v is not None),
        f"machine: {where}; torch {torch.__version__}; {a.threads} thread(s); bf16 matrix "
        f"units: {'yes' if has_bf16_units(device) else 'no'}",
        f"medians of {a.repeats} repeats, forms alternating (reversed on odd repeats):",
        f"SAC update (batch {BATCH}, 256x256, Hopper sizes): fp32 {med['update fp32']:.3f} ms, "
        f"bf16 {med['update bf16']:.3f} ms, bf16 speed-up "
        f"{med['update fp32'] / med['update bf16']:.2f}x (optimizer.precision)",
        f"256x256x256 product: fp32 {med['256x256x256 product fp32'] * 1e3:.1f} us "
        f"({flops / med['256x256x256 product fp32'] / 1e6:.1f} GFLOP/s), bf16 "
        f"{med['256x256x256 product bf16'] * 1e3:.1f} us "
        f"({flops / med['256x256x256 product bf16'] / 1e6:.1f} GFLOP/s), bf16 speed-up "
        f"{med['256x256x256 product fp32'] / med['256x256x256 product bf16']:.2f}x",
    ]
    print_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
