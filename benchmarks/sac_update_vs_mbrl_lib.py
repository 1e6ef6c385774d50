"""One SAC update, ours against mbrl-lib's (its `pytorch_sac_pranz24` SAC), interleaved.

The MBPO benchmark (`mbpo_speed.py`) runs the libraries one after the other, so load on a
shared machine can hit one and not the other. This one times the phase that dominates MBPO,
the SAC update, for both in the same process, alternating rounds of `--updates` updates, on the
same batch: Hopper-v5 shapes and our `mbpo` recipe's SAC settings (256x256, batch 256,
auto-entropy, target update every step). Each side starts from numpy arrays, as in its loop.

It must run where both import: mbrl-lib's virtualenv (`../shared/PEERS.md`) with this checkout
on the path:

    PYTHONPATH=. /work/peer_mbrl/bin/python benchmarks/sac_update_vs_mbrl_lib.py \\
        --rounds 6 --to results/reference/sac_update_vs_mbrl_lib.md
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time
import types
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from mbrl.third_party.pytorch_sac_pranz24.sac import SAC as TheirSAC

from mbrl_bench.buffer import Batch
from mbrl_bench.optimizers.sac import SAC
from mbrl_bench.runner.store import code_version
from mbrl_bench.spec import load_recipe


def matrix_products(obs_dim: int, act_dim: int, batch: int, hidden: tuple[int, ...]
                    ) -> tuple[float, Callable[[], None]]:
    """GFLOP of the matrix products of one SAC update and a function doing only them: each
    forward ``(M, K, N)``, and the backward's input and weight gradients (no input gradient
    for first layers; critic weights are not differentiated through the actor loss). A floor
    for any fp32 implementation."""
    def mlp(i: int, o: int) -> list[tuple[int, int]]:
        return list(itertools.pairwise([i, *hidden, o]))

    def fwd(layers: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        return [(batch, i, o) for i, o in layers]

    def dw(layers: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        return [(i, batch, o) for i, o in layers]

    def dx(layers: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        return [(batch, o, i) for i, o in layers]

    actor, q = mlp(obs_dim, 2 * act_dim), mlp(obs_dim + act_dim, 1)
    gemms = (fwd(actor) + 2 * fwd(q)          # next action, twin target critics
             + fwd(actor) + 4 * fwd(q)        # actor; twin critics on data and on the policy
             + 2 * (dw(q) + dx(q[1:]))        # critic loss backward
             + 2 * dx(q)                      # actor loss through the critics to the action
             + dw(actor) + dx(actor[1:]))     # actor backward
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in gemms]

    def products() -> None:
        for x, y in mats:
            torch.mm(x, y)

    return sum(2 * m * k * n for m, k, n in gemms) / 1e9, products


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--updates", type=int, default=100, help="updates per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--to", type=Path, default=None, help="write the table here (markdown)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    env = gym.make(a.env)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]  # type: ignore[index]
    cfg = load_recipe("mbpo", a.env).config("optimizer")
    B = cfg.batch_size
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
    ours = SAC(obs_dim, act_dim, low, high, cfg, torch.Generator().manual_seed(0))
    args = types.SimpleNamespace(
        gamma=cfg.gamma, tau=cfg.tau, alpha=0.2, policy="Gaussian", target_update_interval=1,
        automatic_entropy_tuning=True, target_entropy=ours.target_entropy,
        hidden_size=cfg.hidden_sizes[0], device="cpu", lr=cfg.actor_lr)
    theirs = TheirSAC(obs_dim, env.action_space, args)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((B, obs_dim)).astype(np.float32)
    act = rng.uniform(low, high, (B, act_dim)).astype(np.float32)
    nxt = rng.standard_normal((B, obs_dim)).astype(np.float32)
    rew = rng.standard_normal(B).astype(np.float32)
    mask = np.ones(B, np.float32)

    class Memory:  # the one method its update calls
        def sample(self, n: int) -> types.SimpleNamespace:
            return types.SimpleNamespace(astuple=lambda: (obs, act, nxt, rew, mask, None))

    memory = Memory()

    def ours_update() -> None:
        ours.update(Batch(torch.from_numpy(obs), torch.from_numpy(act), torch.from_numpy(rew),
                          torch.from_numpy(nxt), torch.from_numpy(1.0 - mask)))

    def their_update() -> None:
        theirs.update_parameters(memory, B, 0)

    gflop, products = matrix_products(obs_dim, act_dim, B, cfg.hidden_sizes)
    sides: dict[str, Callable[[], None]] = {"mbrl-bench": ours_update, "mbrl-lib": their_update,
                                            "matrix products alone": products}
    for f in sides.values():
        for _ in range(20):
            f()
    ms: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(a.rounds):
        for k, f in sides.items():
            t = time.perf_counter()
            for _ in range(a.updates):
                f()
            ms[k].append((time.perf_counter() - t) * 1e3 / a.updates)
    med = {k: statistics.median(v) for k, v in ms.items()}
    lines = ["| library | ms per SAC update (median) | per round |", "|---|--:|---|"]
    lines += [f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in ms.items()]
    note = (f"mbrl-lib ÷ mbrl-bench: **{med['mbrl-lib'] / med['mbrl-bench']:.2f}×**; "
            f"the update's {gflop:.3f} GFLOP of matrix products alone take "
            f"{med['matrix products alone']:.2f} ms "
            f"({gflop / med['matrix products alone'] * 1e3:.0f} GFLOP/s). "
            f"{a.env} shapes, batch {B}, hidden {cfg.hidden_sizes}, {a.rounds} alternating rounds "
            f"of {a.updates} updates, {a.threads} torch thread(s), {platform.machine()}, "
            f"code {code_version()}; "
            f"`benchmarks/sac_update_vs_mbrl_lib.py --rounds {a.rounds} --updates {a.updates} "
            f"--threads {a.threads}`.")
    md = "\n".join(lines) + "\n\n" + note + "\n"
    print(md)
    if a.to is not None:
        a.to.parent.mkdir(parents=True, exist_ok=True)
        a.to.write_text(md)


if __name__ == "__main__":
    main()
