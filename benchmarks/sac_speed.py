"""Wall-clock of SAC per 1,000 env steps: mbrl-bench against Stable-Baselines3, one process.

Both train with one update per env step at the same settings (256x256, batch 256) after 1,000
uniformly random steps; timing covers env steps 2,000 → N (no evaluation). The two libraries
alternate, `--reps` times each, so drift on the machine hits both.

    python benchmarks/sac_speed.py --envs Hopper-v5,Pendulum-v1 --steps 4000 --reps 2 \\
        --to results/reference/sac_speed
"""

from __future__ import annotations

import argparse
import csv
import itertools
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mbrl_bench.envs.make import make_env
from mbrl_bench.runner.execute import run_all
from mbrl_bench.runner.spec import RunSpec
from mbrl_bench.runner.store import code_version
from mbrl_bench.spec import EnvEntry, load_recipe

INIT, T0 = 1000, 2000


def ours(env_id: str, steps: int, seed: int, precision: str = "fp32") -> dict[str, float]:
    """Our full policy loop, env steps T0 → steps: seconds per 1,000 env steps in all
    (``total``) and in the updates (``update``), and milliseconds per update; ``precision``:
    the update's products (``optimizer.precision``)."""
    from dataclasses import replace

    entry = EnvEntry(id=env_id, budget=steps, eval_every=steps, eval_episodes=1)
    recipe = load_recipe("sac", env_id)
    recipe = recipe.with_config("loop", replace(recipe.config("loop"), initial_random_steps=INIT,
                                                log_every=T0 // 2))
    recipe = recipe.with_config("optimizer", replace(recipe.config("optimizer"),
                                                     precision=precision))
    spec = RunSpec("speed", entry, "sac", seed, recipe)
    with tempfile.TemporaryDirectory() as d:
        run_all([spec], Path(d), threads=torch.get_num_threads(), progress=lambda s: None)
        with (spec.run_dir(Path(d)) / "metrics.csv").open() as f:
            all_rows = list(csv.DictReader(f))
    # each row covers the steps since the row before (the last one may cover fewer)
    timed = [(int(r["env_step"]) - int(prev["env_step"]), r)
             for prev, r in itertools.pairwise(all_rows) if int(r["env_step"]) > T0]
    rows = [r for _, r in timed]
    total = sum(n / float(r["steps_per_s"]) for n, r in timed)
    update = sum(float(r["update_s"]) for r in rows)
    updates = sum(int(r["updates"]) for r in rows)
    k = 1000 / (steps - T0)
    return {"total": total * k, "update": update * k, "ms_per_update": 1e3 * update / updates}


def sb3(env_id: str, steps: int, seed: int) -> dict[str, float]:
    """Stable-Baselines3's SAC at the same settings, the same quantities as :func:`ours` (its
    ``train`` calls are the updates)."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    marks: dict[int, float] = {}

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps in (T0, steps):
                marks[self.num_timesteps] = time.perf_counter()
            return True

    cfg = load_recipe("sac", env_id).config("optimizer")
    model = SAC("MlpPolicy", make_env(env_id), learning_rate=cfg.actor_lr, learning_starts=INIT,
                batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma, train_freq=1,
                gradient_steps=1, policy_kwargs={"net_arch": list(cfg.hidden_sizes)}, seed=seed,
                device="cpu")
    train, spent = model.train, [0.0, 0]

    def timed_train(*args: object, **kwargs: object) -> None:
        t = time.perf_counter()
        train(*args, **kwargs)  # type: ignore[arg-type]
        if T0 <= model.num_timesteps < steps:  # the updates of env steps T0+1 .. steps
            spent[0] += time.perf_counter() - t
            spent[1] += 1

    model.train = timed_train  # type: ignore[method-assign]
    model.learn(total_timesteps=steps, callback=Clock())
    k = 1000 / (steps - T0)
    return {"total": (marks[steps] - marks[T0]) * k, "update": spent[0] * k,
            "ms_per_update": 1e3 * spent[0] / max(spent[1], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--envs", default="Hopper-v5,Pendulum-v1")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--to", type=Path, default=Path("results/reference/sac_speed"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for env_id in a.envs.split(","):
        for rep in range(a.reps):
            for lib, fn in (("mbrl-bench", ours), ("sb3", sb3)):
                s = fn(env_id, a.steps, rep)["total"]
                rows.append((env_id, lib, rep, s))
                print(f"{env_id} {lib} rep {rep}: {s:.2f} s / 1k steps ({1000 / s:.0f} steps/s)",
                      flush=True)
    a.to.parent.mkdir(parents=True, exist_ok=True)
    with a.to.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "lib", "rep", "s_per_1k_steps"])
        w.writerows([(e, lib, r, f"{s:.3f}") for e, lib, r, s in rows])
    lines = ["| env | mbrl-bench s / 1k steps | SB3 s / 1k steps | mbrl-bench steps/s | "
             "SB3 steps/s | speed-up |", "|---|--:|--:|--:|--:|--:|"]
    for env_id in a.envs.split(","):
        o = np.mean([s for e, lib, _, s in rows if e == env_id and lib == "mbrl-bench"])
        b = np.mean([s for e, lib, _, s in rows if e == env_id and lib == "sb3"])
        lines.append(f"| {env_id} | {o:.2f} | {b:.2f} | {1000 / o:.0f} | {1000 / b:.0f} | "
                     f"{b / o:.2f}× |")
    note = (f"Measured by `benchmarks/sac_speed.py --steps {a.steps} --reps {a.reps}` with "
            f"{a.threads} torch threads on {platform.machine()} "
            f"({torch.get_num_threads()} threads), code {code_version()}: env steps {T0}→"
            f"{a.steps} after {INIT} random steps, one update per step, no evaluation; "
            "libraries alternate in one process.")
    md = "\n".join(lines) + "\n\n" + note + "\n"
    a.to.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
