"""Wall-clock of PETS's planning per env step: mbrl-bench against mbrl-lib, same machine.

Both plan at PETS's HalfCheetah settings (our recipe ``pets`` for HalfCheetah-v5 and
mbrl-lib's ``pets_halfcheetah`` config): CEM with population 400, 5 iterations, elite ratio
0.16, momentum 0.12, horizon 30, 20 particles propagated TS-∞ through an ensemble of 5
Gaussian MLPs with 4 hidden SiLU layers of 200, learned reward. Each library fits its model
on the same 1,000 random HalfCheetah-v5 transitions (its own trainer, 12 epochs), then
controls the real env from the same reset seed: one step of warm-up, then ``--steps`` timed
steps (planning, i.e. the controller's ``act``; the env step itself is not timed).

mbrl-lib runs in its own virtualenv (``--peer-python``; see ``../shared/PEERS.md``) as a child
process with the same thread count; the two alternate, ``--reps`` times each, so drift on the
machine hits both. mbrl-lib's propagation is set to ``fixed_model`` (TS-∞, its default config
says ``random_model``, TS-1: same cost) and its ensemble to 5 members, all elites.

    python benchmarks/pets_speed.py --steps 5 --reps 3 --threads 2 \\
        --to results/reference/pets_speed
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ENV_ID, RANDOM_STEPS, SEED, FIT_EPOCHS = "HalfCheetah-v5", 1000, 0, 12
PEER_PYTHON = "/work/peer_mbrl/bin/python"


def random_data(path: Path) -> None:
    """``RANDOM_STEPS`` uniformly random transitions of HalfCheetah-v5, saved to ``path``."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    env.action_space.seed(SEED)
    obs, _ = env.reset(seed=SEED)
    rows: dict[str, list[Any]] = {k: [] for k in ("obs", "act", "next_obs", "rew")}
    for _ in range(RANDOM_STEPS):
        act = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(act)
        for k, v in zip(rows, (obs, act, nxt, r), strict=True):
            rows[k].append(v)
        obs = env.reset()[0] if term or trunc else nxt
    np.savez(path, **{k: np.asarray(v, dtype=np.float32) for k, v in rows.items()})


def control(act: Any, steps: int) -> list[float]:
    """Seconds of ``act(obs)`` for ``steps`` steps of HalfCheetah-v5 after one warm-up step."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=SEED + 1)
    obs = env.step(act(obs))[0]
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        a = act(obs)
        times.append(time.perf_counter() - t)
        obs = env.step(a)[0]
    return times


def build_ours(data: Path, precision: str = "fp32") -> tuple[Any, dict[str, Any]]:
    """Our PETS agent with its model fitted on ``data``, and the settings (with ``fit_s``, the
    model fit's seconds); ``precision``: the model's (``model.precision``)."""
    from dataclasses import replace

    import torch

    from mbrl_bench.envs.make import make_env
    from mbrl_bench.envs.termination import termination_fn_for
    from mbrl_bench.models.trainer import ModelTrainer
    from mbrl_bench.parts import MODELS, PLANNERS
    from mbrl_bench.planners.mpc import MPCAgent
    from mbrl_bench.spec import load_recipe

    recipe = load_recipe("pets", ENV_ID)
    loop, model_part, planner_part = (recipe.config("loop"), recipe.part("model"),
                                      recipe.part("planner"))
    assert model_part is not None and planner_part is not None
    env = make_env(ENV_ID)
    space: Any = env.action_space
    d = np.load(data)
    g = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    model_cfg = replace(model_part.config, precision=precision)
    model = MODELS.get(model_part.name).factory(d["obs"].shape[1], d["act"].shape[1],
                                                model_cfg, g)
    fit_start = time.perf_counter()
    ModelTrainer(model).fit(torch.as_tensor(d["obs"]), torch.as_tensor(d["act"]),
                            torch.as_tensor(d["next_obs"]), torch.as_tensor(d["rew"]), g)
    fit_s = time.perf_counter() - fit_start
    planner = PLANNERS.get(planner_part.name).factory(space.low, space.high, loop.horizon,
                                                      planner_part.config)
    agent = MPCAgent(model, termination_fn_for(env), None, planner, loop.propagation,
                     loop.particles, g)
    cfg = planner_part.config
    settings = {"population": cfg.population_size, "iterations": cfg.iterations,
                "elite_ratio": cfg.elite_ratio, "momentum": cfg.momentum,
                "horizon": loop.horizon, "particles": loop.particles,
                "ensemble": model_part.config.ensemble_size,
                "hidden": f"{model_part.config.num_layers}x{model_part.config.hidden_size}",
                "epochs": model_part.config.max_epochs, "precision": precision, "fit_s": fit_s}
    return agent, settings


def ours(data: Path, steps: int, precision: str = "fp32") -> tuple[list[float], dict[str, Any]]:
    """Seconds of planning per env step, and the settings (:func:`build_ours`)."""
    agent, settings = build_ours(data, precision)
    return control(agent.act, steps), settings


def peer(data: Path, steps: int) -> tuple[list[float], dict[str, Any]]:
    """mbrl-lib's PETS (run inside its virtualenv)."""
    import mbrl.models
    import mbrl.planning
    import mbrl.util
    import mbrl.util.common
    import torch
    from hydra import compose, initialize_config_dir

    overrides = [
        "algorithm=pets", "overrides=pets_halfcheetah", f"overrides.env=gym___{ENV_ID}",
        "overrides.learned_rewards=true", "overrides.obs_process_fn=null", "device=cpu",
        "dynamics_model.ensemble_size=5", "dynamics_model.propagation_method=fixed_model",
        "overrides.num_elites=5", "overrides.cem_population_size=400",
        "overrides.cem_num_iters=5", "overrides.cem_elite_ratio=0.16", "overrides.cem_alpha=0.12",
        "overrides.planning_horizon=30", "algorithm.num_particles=20",
        f"overrides.num_epochs_train_model={FIT_EPOCHS}", "overrides.validation_ratio=0",
        f"seed={SEED}",
    ]
    # the peer's virtualenv holds its patched configs (../shared/peers/mbrl_lib/setup.sh)
    with initialize_config_dir(config_dir=str(Path(sys.prefix) / "conf"), version_base=None):
        cfg = compose(config_name="main", overrides=overrides)
    env, term_fn, reward_fn = mbrl.util.create_handler(cfg).make_env(cfg)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
    dyn = mbrl.util.common.create_one_dim_tr_model(cfg, obs_shape, act_shape)
    buf = mbrl.util.common.create_replay_buffer(cfg, obs_shape, act_shape,
                                                rng=np.random.default_rng(SEED))
    d = np.load(data)
    for o, a, n, r in zip(d["obs"], d["act"], d["next_obs"], d["rew"], strict=True):
        buf.add(o, a, n, float(r), False, False)
    trainer = mbrl.models.ModelTrainer(dyn, optim_lr=cfg.overrides.model_lr,
                                       weight_decay=cfg.overrides.model_wd)
    fit_start = time.perf_counter()
    mbrl.util.common.train_model_and_save_model_and_data(dyn, trainer, cfg.overrides, buf)
    fit_s = time.perf_counter() - fit_start
    model_env = mbrl.models.ModelEnv(env, dyn, term_fn, reward_fn, generator=g)
    agent = mbrl.planning.create_trajectory_optim_agent_for_model(
        model_env, cfg.algorithm.agent, num_particles=cfg.algorithm.num_particles)
    o = cfg.overrides
    settings = {"population": o.cem_population_size, "iterations": o.cem_num_iters,
                "elite_ratio": o.cem_elite_ratio, "momentum": o.cem_alpha,
                "horizon": o.planning_horizon, "particles": cfg.algorithm.num_particles,
                "ensemble": cfg.dynamics_model.ensemble_size,
                "hidden": f"{cfg.dynamics_model.num_layers}x{cfg.dynamics_model.hid_size}",
                "epochs": o.num_epochs_train_model,
                "propagation": cfg.dynamics_model.propagation_method, "fit_s": fit_s}
    return control(agent.act, steps), settings


def run_peer(data: Path, steps: int, threads: int, python: str) -> tuple[list[float], dict]:
    script = Path(__file__).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": ""}
    out = subprocess.run([python, str(script), "--peer-child", str(data), "--steps", str(steps),
                          "--threads", str(threads)], env=env, capture_output=True, text=True,
                         check=False, cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise RuntimeError(f"mbrl-lib child failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["times"], result["settings"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer-python", default=PEER_PYTHON)
    p.add_argument("--to", type=Path, default=Path("results/reference/pets_speed"))
    p.add_argument("--peer-child", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    if a.peer_child is not None:  # inside mbrl-lib's virtualenv
        times, settings = peer(a.peer_child, a.steps)
        print(json.dumps({"times": times, "settings": settings}))
        return
    from mbrl_bench.runner.store import code_version

    rows: list[tuple[str, int, int, float]] = []
    settings: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "random.npz"
        random_data(data)
        for rep in range(a.reps):
            for lib in ("mbrl-bench", "mbrl-lib"):
                if lib == "mbrl-bench":
                    times, settings[lib] = ours(data, a.steps)
                else:
                    times, settings[lib] = run_peer(data, a.steps, a.threads, a.peer_python)
                rows.extend((lib, rep, i, t) for i, t in enumerate(times))
                print(f"{lib} rep {rep}: {np.mean(times):.3f} s per env step "
                      f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)
    a.to.parent.mkdir(parents=True, exist_ok=True)
    with a.to.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lib", "rep", "step", "plan_s"])
        w.writerows([(lib, r, i, f"{t:.4f}") for lib, r, i, t in rows])
    ours_s = [t for lib, *_, t in rows if lib == "mbrl-bench"]
    peer_s = [t for lib, *_, t in rows if lib == "mbrl-lib"]
    lines = ["| library | s per env step (mean) | median | min | max | steps timed |",
             "|---|--:|--:|--:|--:|--:|"]
    for lib, ts in (("mbrl-bench", ours_s), ("mbrl-lib 0.2.0", peer_s)):
        lines.append(f"| {lib} | {np.mean(ts):.3f} | {np.median(ts):.3f} | {np.min(ts):.3f} | "
                     f"{np.max(ts):.3f} | {len(ts)} |")
    s = settings["mbrl-bench"]
    peer_settings = {k: v for k, v in settings["mbrl-lib"].items() if k != "fit_s"}
    note = (
        f"Speed-up (mean mbrl-lib / mean mbrl-bench): **{np.mean(peer_s) / np.mean(ours_s):.2f}×**"
        f" (medians: {np.median(peer_s) / np.median(ours_s):.2f}×).\n\n"
        f"Measured by `benchmarks/pets_speed.py --steps {a.steps} --reps {a.reps} --threads "
        f"{a.threads}` on {platform.machine()} with {a.threads} torch threads per library, code "
        f"{code_version()}, python {platform.python_version()}, torch {torch.__version__}. "
        f"{ENV_ID}, after each library fitted its model on the same {RANDOM_STEPS} random "
        f"transitions; CEM population {s['population']}, {s['iterations']} iterations, elite "
        f"ratio {s['elite_ratio']}, momentum {s['momentum']}, horizon {s['horizon']}, "
        f"{s['particles']} particles TS-∞, ensemble of {s['ensemble']} with {s['hidden']} hidden "
        f"units, learned reward. mbrl-lib's settings as it reported them: "
        f"{json.dumps(peer_settings)}. The libraries alternate, one run of "
        f"{a.steps} timed steps each per repetition (after one warm-up step).")
    md = "\n".join(lines) + "\n\n" + note + "\n"
    a.to.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
