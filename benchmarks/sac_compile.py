"""Does ``torch.compile`` speed up our SAC update? Eager against compiled, one process.

The SAC update (256x256 actor and twin critics, batch 256, Hopper's sizes: 11 observations,
3 actions) is timed in three forms, alternating, ``--repeats`` times each; the figure is the
median milliseconds per update:

- ``eager``: :meth:`SAC.update` as every run uses it;
- ``compiled``: ``torch.compile(sac.update)`` as it is (dynamo breaks the graph at each draw
  from the run's ``torch.Generator``, at ``backward`` and at the fused Adam step);
- ``compiled-no-generator``: the same, with the policy's noise drawn by ``torch.randn_like``
  (no generator: no graph break there; the numbers are then not the run's, so this form
  measures what compilation could give at best; it is no option of a run).

On a CUDA device a fourth form is timed: ``mode="reduce-overhead"`` (CUDA graphs). The first
calls of each compiled form (compilation) are left out of the timing and reported apart.

    python benchmarks/sac_compile.py --repeats 5 [--precision bf16] \\
        --out results/reference/speed/sac_compile_amd_epyc.txt
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from mbrl_bench.buffer import Batch
from mbrl_bench.devices import describe
from mbrl_bench.optimizers import sac as sac_module
from mbrl_bench.optimizers.sac import SAC, SACConfig
from mbrl_bench.reporting.speed import cpu_flags, cpu_model, print_report

OBS, ACT, BATCH = 11, 3, 256


def make_sac(device: torch.device, precision: Literal["fp32", "bf16"] = "fp32") -> SAC:
    gen = torch.Generator(device="cpu").manual_seed(0)
    return SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT), SACConfig(precision=precision), gen,
               device=device)


def batches(n: int, device: torch.device) -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        obs, nxt = torch.randn(BATCH, OBS, generator=g), torch.randn(BATCH, OBS, generator=g)
        act = torch.rand(BATCH, ACT, generator=g) * 2 - 1
        rew = torch.randn(BATCH, generator=g)
        out.append(Batch(obs.to(device), act.to(device), rew.to(device), nxt.to(device),
                         torch.zeros(BATCH, device=device)))
    return out


def no_generator_normal(like: torch.Tensor, generator: Any) -> torch.Tensor:
    return torch.randn_like(like)


def timed(fn: Callable[[Batch], Any], data: list[Batch], device: torch.device) -> float:
    """Milliseconds per call over ``data``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for b in data:
        fn(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / len(data) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--updates", type=int, default=50, help="updates per timed repeat")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="the agents' optimizer.precision (every form alike)")
    p.add_argument("--out", type=Path, help="write the report here as well")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    data = batches(a.updates, device)

    forms: dict[str, Callable[[Batch], Any]] = {"eager": make_sac(device, a.precision).update}
    forms["compiled"] = torch.compile(make_sac(device, a.precision).update)
    forms["compiled-no-generator"] = torch.compile(make_sac(device, a.precision).update)
    if device.type == "cuda":
        forms["reduce-overhead-no-generator"] = torch.compile(
            make_sac(device, a.precision).update, mode="reduce-overhead")
    compile_s: dict[str, float] = {}
    ms: dict[str, list[float]] = {name: [] for name in forms}
    original = sac_module._normal
    for name, fn in forms.items():
        sac_module._normal = no_generator_normal if name.endswith("no-generator") else original
        t = time.perf_counter()
        for b in data[:3]:
            fn(b)
        compile_s[name] = time.perf_counter() - t
    for _ in range(a.repeats):
        for name, fn in forms.items():
            sac_module._normal = (no_generator_normal if name.endswith("no-generator")
                                  else original)
            ms[name].append(timed(fn, data, device))
    sac_module._normal = original

    eager = statistics.median(ms["eager"])
    lines = [
        f"command: python benchmarks/sac_compile.py --repeats {a.repeats} --updates "
        f"{a.updates} --threads {a.threads} --device {a.device} --precision {a.precision}",
        f"machine: {cpu_model()} ({' '.join(cpu_flags())}); "
        f"{' '.join(describe(device).values())}; torch {torch.__version__}; {a.threads} thread(s)",
        f"SAC update, 256x256, batch {BATCH}, {OBS} obs / {ACT} actions; median of "
        f"{a.repeats} repeats of {a.updates} updates, forms alternating:",
    ]
    for name, values in ms.items():
        med = statistics.median(values)
        lines.append(f"{name}: {med:.2f} ms per update ({eager / med:.2f}x eager's speed; "
                     f"repeats {', '.join(f'{v:.2f}' for v in values)}; first 3 calls "
                     f"{compile_s[name]:.1f} s)")
    print_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
