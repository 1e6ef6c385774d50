"""Seeds side by side against seeds one after another: the SAC update's cost per seed.

S seeds of SAC at the paper's settings (256x256 actor and twin critics, batch 256, Hopper's
sizes: 11 observations, 3 actions) are updated two ways, alternating, ``--repeats`` times:

- ``alone``: each seed's own :meth:`SAC.update` in turn (S updates, what S runs cost);
- ``side by side``: one :meth:`SeedsSAC.update` of the S seeds (their critics one 2S-member
  batched network, actors and temperatures per seed; what ``bench run --side-by-side`` does).

The figure is the median milliseconds per update step of all S seeds, and its ratio to one
seed's update alone (the issue's GPU goal: five seeds in under 1.5x the time of one). Only the
updates are timed (no env steps, no batch sampling). On CUDA each timing ends with a
synchronisation.

    python benchmarks/side_by_side_speed.py --seeds 1,2,5 --repeats 5 \\
        --out results/reference/speed/side_by_side_amd_epyc.txt
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from mbrl_bench.buffer import Batch
from mbrl_bench.devices import describe
from mbrl_bench.optimizers.sac import SAC, SACConfig
from mbrl_bench.optimizers.sac_seeds import SeedsSAC
from mbrl_bench.reporting.speed import cpu_flags, cpu_model, print_report

OBS, ACT, BATCH = 11, 3, 256


def agents(seeds: int, device: torch.device) -> list[SAC]:
    out = []
    for s in range(seeds):
        torch.manual_seed(s)
        out.append(SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT), SACConfig(),
                       torch.Generator().manual_seed(s), device=device))
    return out


def batches(n: int, device: torch.device, seed: int) -> list[Batch]:
    g = torch.Generator().manual_seed(100 + seed)
    out = []
    for _ in range(n):
        obs, nxt = torch.randn(BATCH, OBS, generator=g), torch.randn(BATCH, OBS, generator=g)
        act = torch.rand(BATCH, ACT, generator=g) * 2 - 1
        out.append(Batch(obs.to(device), act.to(device), torch.randn(BATCH, generator=g).to(
            device), nxt.to(device), torch.zeros(BATCH, device=device)))
    return out


def timed(fn: object, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="1,2,5", help="seed counts S to time")
    p.add_argument("--updates", type=int, default=100, help="update steps per timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="write the report here as well")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    where = (describe(device).get("device_name") if device.type == "cuda"
             else f"{cpu_model()} ({' '.join(cpu_flags())})")
    lines = [f"command: python benchmarks/side_by_side_speed.py --seeds {a.seeds} --updates "
             f"{a.updates} --repeats {a.repeats} --threads {a.threads} --device {a.device}",
             f"machine: {where}; torch {torch.__version__}; {a.threads} thread(s); SAC 256x256,"
             f" batch {BATCH}, Hopper's sizes; median ms per update step of all S seeds over "
             f"{a.repeats} alternating repeats of {a.updates} steps"]
    one_alone = None
    for s in (int(x) for x in a.seeds.split(",")):
        alone, together = agents(s, device), SeedsSAC(agents(s, device))
        data = [batches(a.updates, device, i) for i in range(s)]
        for agent, d in zip(alone, data, strict=True):  # warm-up, not timed
            agent.update(d[0])
        together.update([d[0] for d in data])
        t_alone, t_side = [], []
        for _ in range(a.repeats):
            t_alone.append(timed(lambda alone=alone, data=data: [
                agent.update(b) for agent, d in zip(alone, data, strict=True) for b in d],
                device) / a.updates * 1000)
            t_side.append(timed(lambda data=data, together=together: [
                together.update([d[k] for d in data]) for k in range(a.updates)],
                device) / a.updates * 1000)
        m_alone, m_side = statistics.median(t_alone), statistics.median(t_side)
        if s == 1 or one_alone is None:
            one_alone = m_alone / s
        lines.append(f"S = {s}: alone {m_alone:.2f} ms (S updates one after another), side by "
                     f"side {m_side:.2f} ms: {m_alone / m_side:.2f}x faster per seed; side by "
                     f"side = {m_side / one_alone:.2f}x one seed's update alone")
    print_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
