"""MBPO's cap on gradient steps per model fit (``model.max_steps``), measured on real Hopper-v5
data against the official stopping rule alone (issue 14).

    python benchmarks/fit_cap.py --checkpoint RUN/checkpoint.pt [--sizes 15000,50000,100000]
        [--threads 2] [--seed 0] [--official-seconds 0] [--cap 5000]
        [--out results/reference/provenance/fit_cap.txt]

The data are the first N transitions, in the order they were collected, of a Hopper-v5 run's
replay buffer (its ``checkpoint.pt``; e.g. `bench run --suite mujoco --env Hopper --algos sac
--seeds 0, --steps 100000`). The ensemble and trainer settings are `mbpo`'s for Hopper-v5 as the
recipe resolves them, with ``max_steps`` set to ``--cap`` for the capped fits (the recipe itself
no longer caps its fits: the cap was dropped after this measurement). For each N:

- cold: a fresh ensemble fitted on the first N - 500 transitions, with the official rule
  (early stopping alone: 6 epochs without a 1% holdout improvement) and with our cap;
- warm: from the official cold fit (weights and Adam state), a refit on the first N - 250
  transitions with each rule, as MBPO refits every 250 steps.

Each fit reports epochs, gradient steps, seconds, what stopped it (``rule``: the early
stopping; ``cap``: our step cap; ``time``: ``--official-seconds``, a bound on the official
fits so that a measurement ends, like the official code's optional ``max_model_t``), its
holdout MSE/NLL (the same holdout split for both rules: the split is drawn first from the same
seed) and the elites' MSE/NLL on the next 250 transitions, which no fit saw.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from mbrl_bench.models.ensemble import ProbabilisticEnsembleConfig
from mbrl_bench.models.trainer import ModelTrainer
from mbrl_bench.parts import MODELS
from mbrl_bench.spec import load_recipe

OBS, ACT = 11, 3  # Hopper-v5


def columns(rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """obs, act, next_obs, reward of replay-buffer rows ``[obs | act | rew | next_obs | ...]``."""
    o, a = OBS, ACT
    return (rows[:, :o], rows[:, o:o + a], rows[:, o + a + 1:2 * o + a + 1], rows[:, o + a])


def fit(trainer: ModelTrainer, rows: torch.Tensor, nxt: torch.Tensor, seed: int
        ) -> dict[str, float]:
    out = trainer.fit(*columns(rows), generator=torch.Generator().manual_seed(seed))
    ev = trainer.evaluate(*columns(nxt))
    return {**out, "next_mse": float(ev["elite_mse"]), "next_nll": float(ev["elite_nll"])}


def stopped_by(r: dict[str, float], cfg: ProbabilisticEnsembleConfig) -> str:
    if cfg.max_train_seconds is not None and r["seconds"] >= cfg.max_train_seconds:
        return "time"
    if cfg.max_steps is not None and r["steps"] >= cfg.max_steps:
        return "cap"
    return "rule"


def line(kind: str, n: int, rule: str, r: dict[str, float], by: str) -> str:
    return (f"{kind} | {n} | {rule} | {by} | {r['epochs']:.0f} | {r['steps']:.0f} | "
            f"{r['seconds']:.1f} "
            f"| {r['holdout_mse']:.5f} | {r['holdout_nll']:.3f} | {r['next_mse']:.5f} | "
            f"{r['next_nll']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--sizes", default="15000,50000,100000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--official-seconds", type=float, default=0.0,
                    help="bound each official-rule fit to this many seconds (0: none)")
    ap.add_argument("--cap", type=int, default=5000,
                    help="gradient steps per fit of the capped rule (the dropped cap was 5000)")
    ap.add_argument("--out", type=Path, default=Path("results/reference/provenance/fit_cap.txt"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["buffer"]
    if state["size"] == state["capacity"] and state["pos"] != 0:
        raise SystemExit("the buffer has wrapped: its rows are no longer in collection order")
    data = state["data"][: state["size"]]  # full with pos 0: oldest row first all the same
    part = load_recipe("mbpo", "Hopper-v5").part("model")
    assert part is not None
    capped = replace(part.config, max_steps=args.cap, max_train_seconds=None)
    official = replace(capped, max_steps=None,
                       max_train_seconds=args.official_seconds or None)
    lines = [
        f"command: python benchmarks/fit_cap.py --checkpoint {args.checkpoint} --sizes "
        f"{args.sizes} --threads {args.threads} --seed {args.seed} --official-seconds "
        f"{args.official_seconds:g} --cap {args.cap}",
        f"data: {data.shape[0]} transitions in the buffer; torch {torch.__version__}, "
        f"{args.threads} threads, {os.cpu_count()} cores",
        f"mbpo's Hopper-v5 model: {capped.ensemble_size} x {capped.num_layers} x "
        f"{capped.hidden_size}, batch {capped.batch_size}, holdout {capped.holdout_ratio} (at most "
        f"{capped.max_holdout}), patience {capped.patience}, cap {capped.max_steps} steps",
        "",
        "fit | transitions | rule | stopped by | epochs | steps | s | holdout MSE | "
        "holdout NLL | next-250 MSE | next-250 NLL",
    ]
    print("\n".join(lines), flush=True)
    for n in (int(s) for s in args.sizes.split(",")):
        if n > data.shape[0]:
            raise SystemExit(f"--sizes: {n} > the {data.shape[0]} transitions in the buffer")
        cold_rows, warm_rows = data[: n - 500], data[: n - 250]
        results = {}
        for rule, cfg in (("official", official), ("cap", capped)):
            model = MODELS.get(part.name).factory(OBS, ACT, cfg, torch.Generator().manual_seed(
                args.seed), "cpu")
            trainer = ModelTrainer(model, cfg)
            results[rule] = (model, trainer)
            r = fit(trainer, cold_rows, data[n - 500:n - 250], args.seed)
            lines.append(line("cold", n - 500, rule, r, stopped_by(r, cfg)))
            print(lines[-1], flush=True)
        base_model, base_trainer = results["official"]
        for rule, cfg in (("official", official), ("cap", capped)):
            model = copy.deepcopy(base_model)
            trainer = ModelTrainer(model, cfg)
            trainer.load_state_dict(copy.deepcopy(base_trainer.state_dict()))
            r = fit(trainer, warm_rows, data[n - 250:n], args.seed + 1)
            lines.append(line("warm", n - 250, rule, r, stopped_by(r, cfg)))
            print(lines[-1], flush=True)
    text = "\n".join(lines) + f"\n(finished {time.strftime('%Y-%m-%d %H:%M')})\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
