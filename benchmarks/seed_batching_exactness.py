"""Would S seeds of SAC batched into one network compute exactly what each seed computes alone?

A design check for training seeds side by side (issue 13): the twin critic already runs as a
2-member ``baddbmm``; S seeds side by side would make it 2S members, the actor an S-member
batched linear, and the losses' reductions rows of ``[S, ...]`` tensors. This script checks, on
this machine's torch and CPU, that each seed's slice of those batched operations (forward, the
weight gradient, the reductions SAC's losses use) is bitwise equal to the seed's own
computation, and that ``nn.Linear`` (the actor today) equals a 1-member ``baddbmm``. Where all
hold, side-by-side seeds could reproduce the solo runs' golden rows without a numeric change.

    python benchmarks/seed_batching_exactness.py \\
        --out results/reference/speed/seed_batching_amd_epyc.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mbrl_bench.reporting.speed import cpu_flags, cpu_model, print_report

BATCH = 256


def critic_layers_equal(seeds: int, in_dim: int, out_dim: int, g: torch.Generator) -> bool:
    """A 2S-member ``baddbmm`` layer, forward and weight gradient, against each seed's 2."""
    m = 2 * seeds
    x = torch.randn(m, BATCH, in_dim, generator=g)
    w = torch.randn(m, in_dim, out_dim, generator=g, requires_grad=True)
    b = torch.randn(m, 1, out_dim, generator=g)
    grad_out = torch.randn(m, BATCH, out_dim, generator=g)
    full = torch.baddbmm(b, x, w)
    full.backward(grad_out)
    assert w.grad is not None
    for s in range(seeds):
        part = slice(2 * s, 2 * s + 2)
        ws = w.detach()[part].clone().requires_grad_(True)
        own = torch.baddbmm(b[part], x[part], ws)
        own.backward(grad_out[part])
        if not (torch.equal(own, full.detach()[part]) and torch.equal(ws.grad, w.grad[part])):
            return False
    return True


def reductions_equal(seeds: int, act_dim: int, g: torch.Generator) -> bool:
    """The reductions of SAC's losses: rows of ``[S, ...]`` against each seed's tensor."""
    q = torch.randn(seeds, 2, BATCH, generator=g)
    logp = torch.randn(seeds, BATCH, act_dim, generator=g)
    return all(
        torch.equal(q.mean(-1)[s], q[s].mean(-1))
        and torch.equal(q[:, 0].mean(-1)[s], q[s, 0].mean())
        and torch.equal(logp.sum(-1)[s], logp[s].sum(-1))
        and torch.equal(logp.mean(dim=(1, 2))[s], logp[s].mean())
        for s in range(seeds))


def actor_linear_equal(in_dim: int, out_dim: int, g: torch.Generator) -> bool:
    """``nn.Linear`` (addmm) against a 1-member ``baddbmm`` with the weight as ``[in, out]``."""
    lin = torch.nn.Linear(in_dim, out_dim)
    x = torch.randn(BATCH, in_dim, generator=g)
    batched = torch.baddbmm(lin.bias.view(1, 1, -1), x.unsqueeze(0),
                            lin.weight.t().contiguous().unsqueeze(0))[0]
    return torch.equal(lin(x), batched)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="2,5,8", help="side-by-side seed counts S to check")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the report here as well")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    lines = [f"command: python benchmarks/seed_batching_exactness.py --seeds {a.seeds} "
             f"--threads {a.threads}",
             f"machine: {cpu_model()} ({' '.join(cpu_flags())}); torch {torch.__version__}; "
             f"{a.threads} thread(s); batch {BATCH}, Hopper's sizes (11 + 3 inputs, 256 wide)"]
    for seeds in (int(s) for s in a.seeds.split(",")):
        lines.append(
            f"S = {seeds}: critic input layer {critic_layers_equal(seeds, 14, 256, g)}, hidden "
            f"layer {critic_layers_equal(seeds, 256, 256, g)}, loss reductions "
            f"{reductions_equal(seeds, 3, g)} (True: every seed's slice bitwise equal to its own)")
    lines.append(f"actor: nn.Linear equals a 1-member baddbmm: input layer "
                 f"{actor_linear_equal(11, 256, g)}, hidden {actor_linear_equal(256, 256, g)}, "
                 f"head {actor_linear_equal(256, 6, g)}")
    print_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
