"""fp32 against bf16 (``model.precision``) for the dynamics ensemble on this machine: a forward
pass of 1,024 rows per member (rollouts and planning) and a training step of 256 rows per
member (fits), MBPO's 7 x 4 x 200 ensemble on Hopper's sizes (11 + 3 inputs), one thread.

    python benchmarks/precision_speed.py [--repeats 7] [--threads 1] [--device cpu]
        [--forward-rows 1024] [--out FILE]

fp32 and bf16 alternate within each repeat; medians are reported with the CPU model, torch's
CPU capability and whether the device has bf16 matrix units (AVX512-BF16 or AMX-BF16 on a CPU,
compute capability 8 or later on a GPU). On a GPU every timed call ends with a synchronisation,
and ``--forward-rows 1024,14286`` adds the size of one of MBPO's 100,000-row rollout chunks
spread over 7 members.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from mbrl_bench.devices import has_bf16_units
from mbrl_bench.models.ensemble import ProbabilisticEnsemble, ProbabilisticEnsembleConfig
from mbrl_bench.models.trainer import ModelTrainer
from mbrl_bench.reporting.speed import cpu_model

OBS, ACT = 11, 3


def timed(fn: object, calls: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` (after one warm-up call), the device's queue drained."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    fn()  # type: ignore[operator]
    sync()
    t = time.perf_counter()
    for _ in range(calls):
        fn()  # type: ignore[operator]
    sync()
    return (time.perf_counter() - t) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--forward-rows", default="1024",
                    help="comma-separated rows per member of the timed forward passes")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [int(r) for r in args.forward_rows.split(",")]
    cfg = ProbabilisticEnsembleConfig()
    models = {p: ProbabilisticEnsemble(OBS, ACT, replace(cfg, precision=p), device=device,
                                       generator=torch.Generator().manual_seed(0))
              for p in ("fp32", "bf16")}
    g = torch.Generator().manual_seed(1)
    x_fwd = {r: torch.randn(cfg.ensemble_size, r, OBS + ACT, generator=g).to(device)
             for r in rows}
    x_fit = torch.randn(cfg.ensemble_size, 256, OBS + ACT, generator=g).to(device)
    y_fit = torch.randn(cfg.ensemble_size, 256, OBS + 1, generator=g).to(device)
    steps = {}
    for p, m in models.items():
        trainer = ModelTrainer(m)

        def step(m: ProbabilisticEnsemble = m, trainer: ModelTrainer = trainer) -> None:
            mean, logvar = m(x_fit)
            loss = (((mean - y_fit) ** 2) * torch.exp(-logvar) + logvar).mean()
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
        steps[p] = step
    kinds = [f"forward{r}" for r in rows] + ["train"]
    times: dict[str, list[float]] = {f"{k}_{p}": [] for k in kinds for p in models}
    for _ in range(args.repeats):
        for p, m in models.items():
            with torch.no_grad():
                for r in rows:
                    times[f"forward{r}_{p}"].append(
                        timed(lambda m=m, x=x_fwd[r]: m(x), 5, device))
            times[f"train_{p}"].append(timed(steps[p], 5, device))
    with torch.no_grad():
        a, _ = models["fp32"](x_fwd[rows[0]])
        b, _ = models["bf16"](x_fwd[rows[0]])
    rel = float((a - b).abs().max() / a.abs().max())
    med = {k: statistics.median(v) for k, v in times.items()}
    where = (f"GPU: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
             if device.type == "cuda" else
             f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    lines = [
        f"command: python benchmarks/precision_speed.py --repeats {args.repeats} --threads "
        f"{args.threads} --device {args.device} --forward-rows {args.forward_rows}",
        f"machine: {cpu_model()}; torch {torch.__version__}, {where}; bf16 matrix units: "
        f"{'yes' if has_bf16_units(device) else 'no'}",
        "ensemble 7 x 4 x 200 (Hopper sizes), medians of "
        f"{args.repeats} repeats of 5 calls, fp32 and bf16 alternating:",
        *(f"forward {r} rows/member: fp32 {med[f'forward{r}_fp32'] * 1e3:.3f} ms, bf16 "
          f"{med[f'forward{r}_bf16'] * 1e3:.3f} ms, bf16 speed-up "
          f"{med[f'forward{r}_fp32'] / med[f'forward{r}_bf16']:.2f}x" for r in rows),
        f"train step 256 rows/member: fp32 {med['train_fp32'] * 1e3:.3f} ms, bf16 "
        f"{med['train_bf16'] * 1e3:.3f} ms, bf16 speed-up "
        f"{med['train_fp32'] / med['train_bf16']:.2f}x",
        f"largest relative difference of the forward (bf16 against fp32): {rel:.4f}",
    ]
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
