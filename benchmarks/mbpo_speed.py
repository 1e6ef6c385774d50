"""Wall-clock of MBPO per 1,000 env steps, split by phase: mbrl-bench against mbrl-lib 0.2.0.

Both run MBPO on the same task at the same settings: the official per-task values of our
`mbpo` recipe (SAC 256x256, batch 256, auto-entropy with the task's target entropy, target
update every step, `--updates` SAC updates per env step, 5% real data; ensemble 7 x 4 x 200,
5 elites, batch 256, lr 1e-3, 20% holdout, patience 6; model refit every 250 steps; 400 rollout
starts per env step; the task's k schedule), after `--random` uniformly random steps. Timing
covers the `--steps` env steps after them, evaluation excluded, phases:

- env: acting and stepping the real environment (and adding to the replay buffer);
- model fit: every refit of the ensemble (each library's own stopping rule: mbrl-lib trains
  until 5 epochs without 1% improvement over the warm-started model's holdout error; ours, as
  the official code, until 6 epochs without 1% improvement over the best error of this fit,
  from +inf, with no step cap; `--same-rule` adds a run of ours with mbrl-lib's rule);
- rollout: the branched rollouts of 100,000 start states after each refit;
- SAC: the policy updates.

mbrl-lib runs in its own virtualenv (`../shared/peers/mbrl_lib/setup.sh DIR`), launched from
here with the same thread count; the two libraries alternate `--reps` times. Its output is its
harness's own phase timers (`run.py`). Example (what results/reference/mbpo_speed.* holds):

    python benchmarks/mbpo_speed.py --env Hopper-v5 --random 5000 --steps 1000 --reps 1 \\
        --threads 2 --peer /work/peer_mbrl --to results/reference/mbpo_speed
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import mbrl_bench.rollouts.branched as rollouts
from mbrl_bench.models.trainer import ModelTrainer
from mbrl_bench.runner.execute import run_all
from mbrl_bench.runner.spec import RunSpec
from mbrl_bench.runner.store import code_version
from mbrl_bench.spec import EnvEntry, load_recipe

PHASES = ("env", "model_fit", "rollout", "sac", "other")
SAME_RULE = "mbrl-bench, mbrl-lib's fit stop"
ALL_LIBS = ("mbrl-bench", SAME_RULE, "mbrl-lib")
"""Ours as the recipe says (the official code's model-fit stopping rule), ours with mbrl-lib's
rule (improvement counted from the warm-started model's holdout error; with `--same-rule`), and
mbrl-lib."""


def _timed(owner: Any, name: str, calls: list[float]) -> Callable[[], None]:
    """Wrap ``owner.name`` to record each call's duration; returns the undo."""
    inner = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = inner(*args, **kwargs)
        calls.append(time.perf_counter() - t)
        return out

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, inner)


def ours(env_id: str, random_steps: int, steps: int, updates: int, seed: int,
         improve_from_initial: bool = False, precision: str = "fp32",
         cold_first: bool = False) -> dict[str, float]:
    """Seconds per phase over env steps (random_steps, random_steps + steps] of our loop;
    ``improve_from_initial``: the model fit's stopping rule of mbrl-lib (see the model config);
    ``precision``: the model's and SAC's (``model.precision``, ``optimizer.precision``).
    ``cold_first``: count the fits as
    mbrl-lib's window holds them, the first from fresh weights: our first fit (at the end of
    the random steps, on fresh weights) and the refits after it, not the last refit (at the
    window's end), so both count one cold fit and the same number of warm ones."""
    budget = random_steps + steps
    entry = EnvEntry(id=env_id, budget=budget, eval_every=budget, eval_episodes=1)
    recipe = load_recipe("mbpo", env_id)
    recipe = recipe.with_config("loop", replace(
        recipe.config("loop"), initial_random_steps=random_steps, log_every=250))
    recipe = recipe.with_config("optimizer", replace(recipe.config("optimizer"),
                                                     updates_per_step=updates,
                                                     precision=precision))
    recipe = recipe.with_config("model", replace(recipe.config("model"),
                                                 improve_from_initial=improve_from_initial,
                                                 precision=precision))
    spec = RunSpec("speed", entry, "mbpo", seed, recipe)
    fits: list[float] = []
    rolls: list[float] = []
    undo = [_timed(ModelTrainer, "fit", fits),
            _timed(rollouts, "branched_rollout", rolls)]
    try:
        with tempfile.TemporaryDirectory() as d:
            run_all([spec], Path(d), threads=torch.get_num_threads(), progress=lambda s: None)
            with (spec.run_dir(Path(d)) / "metrics.csv").open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["env_step"]) > random_steps]
    finally:
        for u in undo:
            u()
    # the first fit and rollout happen at the last random step (outside the timed window)
    window_fit, roll = sum(fits[1:]), sum(rolls[1:])
    total = sum(250 / float(r["steps_per_s"]) for r in rows)
    env, model, sac = (sum(float(r[k]) for r in rows) for k in ("env_s", "model_s", "update_s"))
    diagnostics = model - window_fit - roll
    fit = sum(fits[:-1]) if cold_first else window_fit
    total += fit - window_fit
    n_updates = sum(int(r["updates"]) for r in rows)
    return {"env": env, "model_fit": fit, "rollout": roll, "sac": sac,
            "other": total - env - sac - fit - roll, "total": total, "steps": steps,
            "fits": len(fits) - 1, "sac_updates": n_updates,
            "sac_ms_per_update": 1e3 * sac / max(n_updates, 1),
            "fit_s_per_refit": fit / max(len(fits) - 1, 1), "diagnostics": diagnostics}


_LINE = re.compile(r"^\s+(\w+)\s+calls=\s*(\d+)\s+total=\s*([\d.]+)s")


def mbrl_lib(peer: Path, env_id: str, random_steps: int, steps: int, updates: int, seed: int,
             threads: int, epoch_length: int | None = None) -> dict[str, float]:
    """Run mbrl-lib's MBPO at our settings; its phase timers over the steps after exploration.

    Its loop always finishes an epoch (``epoch_length`` steps), so the steps it took are read
    from its timers (one ``env_step_and_act`` call per env step, exploration included). It
    refits the model first after ``model_train_freq`` loop steps and makes no SAC update before
    (its model buffer is empty), where ours refits at the end of exploration and updates from
    the first step: the table counts updates and gives the time per update. ``epoch_length``
    (default: the recipe's) shortens its epoch for windows shorter than one; where the task's k
    schedule is constant over the first epochs (Hopper: k = 1 to epoch 20) this changes only
    where it resets the env and its model buffer's capacity, not what it computes per step."""
    recipe = load_recipe("mbpo", env_id)
    sac, model, roll = (recipe.config(k) for k in ("optimizer", "model", "rollout"))
    per_step = roll.rollout_batch_size // roll.model_train_freq
    args = [
        "algorithm=mbpo", "overrides=mbpo_hopper", f"overrides.env=gym___{env_id}", "device=cpu",
        f"seed={seed}", f"overrides.num_steps={steps}",
        # its replay buffer's capacity defaults to `num_steps`: without this it would keep only
        # the last `steps` transitions and fit its model on them instead of on all the data
        f"+algorithm.dataset_size={random_steps + steps}",
        f"algorithm.initial_exploration_steps={random_steps}",
        "algorithm.random_initial_explore=true", f"algorithm.real_data_ratio={roll.real_ratio}",
        f"overrides.num_sac_updates_per_step={updates}",
        f"overrides.sac_hidden_size={sac.hidden_sizes[0]}",
        f"overrides.sac_batch_size={sac.batch_size}", f"overrides.sac_lr={sac.actor_lr}",
        "overrides.sac_target_update_interval=1", "overrides.sac_automatic_entropy_tuning=true",
        f"overrides.sac_target_entropy={sac.target_entropy}",
        f"overrides.freq_train_model={roll.model_train_freq}",
        f"overrides.effective_model_rollouts_per_step={per_step}",
        f"overrides.rollout_schedule=[{','.join(str(v) for v in roll.k_schedule)}]",
        f"overrides.epoch_length={epoch_length or roll.epoch_length}",
        f"overrides.num_elites={model.num_elites}", f"overrides.patience={model.patience}",
        f"overrides.model_lr={model.lr}", f"overrides.model_batch_size={model.batch_size}",
        f"overrides.validation_ratio={model.holdout_ratio}",
        f"dynamics_model.ensemble_size={model.ensemble_size}",
        f"dynamics_model.hid_size={model.hidden_size}",
        f"dynamics_model.num_layers={model.num_layers}",
    ]
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "MBRL_THREADS": str(threads), "MBRL_OUT": d,
               "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run([str(peer / "bin" / "python"), str(peer / "run.py"), *args],
                             cwd=d, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"mbrl-lib failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    totals = {m[1]: float(m[3]) for m in map(_LINE.match, out.stdout.splitlines()) if m}
    calls = {m[1]: int(m[2]) for m in map(_LINE.match, out.stdout.splitlines()) if m}
    total_all = float(re.search(r"TOTAL ([\d.]+)s", out.stdout)[1])  # type: ignore[index]
    total = total_all - totals.get("initial_explore", 0.0) - totals.get("eval", 0.0)
    env_s, fit, r, s = (totals.get(k, 0.0) for k in (
        "env_step_and_act", "model_train", "model_rollout", "sac_update"))
    # its exploration steps go through the same timed function (inside `initial_explore`)
    env_calls = calls.get("env_step_and_act", 0)
    loop_steps = env_calls - random_steps
    env_s *= loop_steps / max(env_calls, 1)
    return {"env": env_s, "model_fit": fit, "rollout": r, "sac": s,
            "other": total - env_s - fit - r - s, "total": total,
            "steps": loop_steps, "fits": calls.get("model_train", 0),
            "sac_updates": calls.get("sac_update", 0),
            "sac_ms_per_update": 1e3 * s / max(calls.get("sac_update", 1), 1),
            "fit_s_per_refit": fit / max(calls.get("model_train", 1), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--random", type=int, default=5000, help="uniformly random steps first")
    p.add_argument("--steps", type=int, default=1000, help="timed env steps (multiple of 250)")
    p.add_argument("--updates", type=int, default=20, help="SAC updates per env step")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--same-rule", action="store_true",
                   help="also time ours with mbrl-lib's model-fit stopping rule")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer", type=Path, default=Path("/work/peer_mbrl"))
    p.add_argument("--to", type=Path, default=Path("results/reference/mbpo_speed"))
    a = p.parse_args()
    if a.steps % 250 or a.random % 250:
        p.error("--steps and --random must be multiples of 250 (the refit period)")
    torch.set_num_threads(a.threads)
    libs = ALL_LIBS if a.same_rule else ("mbrl-bench", "mbrl-lib")
    rows: list[tuple[str, int, dict[str, float]]] = []
    for rep in range(a.reps):
        for lib in libs:
            r = (mbrl_lib(a.peer, a.env, a.random, a.steps, a.updates, rep, a.threads)
                 if lib == "mbrl-lib" else
                 ours(a.env, a.random, a.steps, a.updates, rep, lib == SAME_RULE))
            rows.append((lib, rep, r))
            print(lib, rep, {k: round(v, 2) for k, v in r.items()}, flush=True)
    keys = [*PHASES, "total", "steps", "fits", "sac_updates", "sac_ms_per_update",
            "fit_s_per_refit"]
    a.to.parent.mkdir(parents=True, exist_ok=True)
    with a.to.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "lib", "rep", *keys])
        w.writerows([(a.env, lib, rep, *(f"{r[k]:.3f}" for k in keys)) for lib, rep, r in rows])

    def mean(lib: str, key: str, per_1k: bool = False) -> float:
        vals = [r[key] * (1000 / r["steps"] if per_1k else 1) for name, _, r in rows
                if name == lib]
        return sum(vals) / len(vals)

    def equal_updates(lib: str) -> float:
        """Seconds per 1,000 steps with the SAC phase counted at ``--updates`` per step."""
        return mean(lib, "total", per_1k=True) - mean(lib, "sac", per_1k=True) + (
            mean(lib, "sac_ms_per_update") * a.updates)

    lines = [f"| phase | {' | '.join(libs)} | mbrl-lib ÷ mbrl-bench |",
             "|---|" + "--:|" * (len(libs) + 1)]
    rows_spec = [*((f"{k} (s per 1,000 steps)", k, True, 1) for k in (*PHASES, "total")),
                 ("SAC ms per update", "sac_ms_per_update", False, 2),
                 ("model fit s per refit", "fit_s_per_refit", False, 2),
                 ("SAC updates in the window", "sac_updates", False, 0)]
    for label, k, per, digits in rows_spec:
        vals = [mean(lib, k, per_1k=per) for lib in libs]
        ours_v, theirs = vals[0], vals[-1]
        ratio = f"{theirs / ours_v:.2f}×" if ours_v > 0.05 and k != "sac_updates" else "—"
        lines.append(f"| {label} | {' | '.join(f'{v:.{digits}f}' for v in vals)} | {ratio} |")
    eq = [equal_updates(lib) for lib in libs]
    lines.append(f"| total, {a.updates} SAC updates per step for both (s per 1,000 steps) | "
                 f"{' | '.join(f'{v:.1f}' for v in eq)} | {eq[-1] / eq[0]:.2f}× |")
    note = (f"Measured by `benchmarks/mbpo_speed.py --env {a.env} --random {a.random} --steps "
            f"{a.steps} --updates {a.updates} --reps {a.reps} --threads {a.threads}"
            f"{' --same-rule' if a.same_rule else ''}` on "
            f"{platform.machine()} ({platform.processor() or 'cpu'}), {a.threads} torch threads "
            f"each, code {code_version()}: env steps {a.random}→{a.random + a.steps} after "
            f"{a.random} uniformly random steps (mbrl-lib: {mean('mbrl-lib', 'steps'):.0f} steps, "
            "it always completes an epoch), evaluation excluded; model refits timed: "
            f"{mean('mbrl-bench', 'fits'):.0f} (ours), {mean('mbrl-lib', 'fits'):.0f} (mbrl-lib).")
    md = "\n".join(lines) + "\n\n" + note + "\n"
    a.to.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
