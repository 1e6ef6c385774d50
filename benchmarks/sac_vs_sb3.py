"""SAC: mbrl-bench against Stable-Baselines3, side by side in one process.

Same tasks, budgets, seeds, settings (256x256, lr 3e-4, batch 256, gamma 0.99, tau 0.005, auto
entropy with target -dim(A), one update per env step, the suite's initial random steps) and the
same evaluation protocol (deterministic policy, the suite's episodes, the same reset seeds).
For each library and seed it records the evaluation curve and the training wall-clock per 1,000
env steps after updates start (evaluation time excluded). Resumable: our runs resume through
the run store; a finished SB3 run is a JSON file that is skipped when present, so running the
same command again only summarises (e.g. after running one env per process in parallel).

    python benchmarks/sac_vs_sb3.py --suite classic --envs Pendulum-v1,InvertedPendulum-v5 \\
        --seeds 0,1,2 --threads 1 --out results/bench/sac_vs_sb3 \\
        --to results/reference/sac_vs_sb3

Needs `pip install -e ".[bench]"` (stable-baselines3).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl_bench.envs.make import make_env
from mbrl_bench.loops.policy import eval_seeds, evaluate
from mbrl_bench.runner.execute import expand, run_all
from mbrl_bench.runner.store import code_version
from mbrl_bench.spec import EnvEntry, load_recipe, load_suite


class _SB3Policy:
    def __init__(self, model: Any) -> None:
        self.model = model

    def act(self, obs: Any, deterministic: bool) -> Any:
        return self.model.predict(obs, deterministic=deterministic)[0]


def run_sb3(entry: EnvEntry, seed: int, init_steps: int, out: Path) -> dict[str, Any]:
    """Train SB3's SAC at our recipe's settings; evaluate exactly as our loop does."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    path = out / "sb3" / entry.label / f"seed_{seed}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    cfg = load_recipe("sac", entry.id).config("optimizer")
    env, eval_env = make_env(entry.id, entry.kwargs), make_env(entry.id, entry.kwargs)
    model = SAC("MlpPolicy", env, learning_rate=cfg.actor_lr, buffer_size=1_000_000,
                learning_starts=init_steps, batch_size=cfg.batch_size, tau=cfg.tau,
                gamma=cfg.gamma, train_freq=1, gradient_steps=1, ent_coef="auto",
                policy_kwargs={"net_arch": list(cfg.hidden_sizes)}, seed=seed, device="cpu")
    rows: list[dict[str, float]] = []
    timing: list[tuple[int, float]] = []

    class Eval(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.train_time, self.t = 0.0, time.perf_counter()

        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n % 1000 == 0:
                now = time.perf_counter()
                self.train_time += now - self.t
                timing.append((n, self.train_time))
                self.t = now
            if n % entry.eval_every == 0 or n == entry.budget:
                rets, _ = evaluate(_SB3Policy(self.model), eval_env, entry.eval_episodes,  # type: ignore[arg-type]
                                   eval_seeds(seed, n, entry.eval_episodes))
                rows.append({"env_step": n, "return_mean": float(rets.mean())})
                self.t = time.perf_counter()  # evaluation time is not training time
            return True

    model.learn(total_timesteps=entry.budget, callback=Eval())
    result = {"lib": "sb3", "env": entry.label, "seed": seed, "evals": rows,
              "s_per_1k": _s_per_1k(timing, init_steps)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def _s_per_1k(timing: list[tuple[int, float]], init_steps: int) -> float:
    """Mean training seconds per 1,000 env steps over the intervals after updates started."""
    t = [(n, s) for n, s in timing if n >= init_steps + 1000]
    if len(t) < 2:
        return float("nan")
    return (t[-1][1] - t[0][1]) / (t[-1][0] - t[0][0]) * 1000


def run_ours(suite: str, entry: EnvEntry, seed: int, out: Path, threads: int) -> dict[str, Any]:
    [spec] = expand(load_suite(suite), ["sac"], [seed], env_filter=entry.label)
    [outcome] = run_all([spec], out / "ours", threads=threads,
                        progress=lambda s: print(s, flush=True))
    if outcome.status not in ("complete", "skipped"):
        raise RuntimeError(f"{outcome.run_id}: {outcome.error}")
    d = spec.run_dir(out / "ours")
    with (d / "evals.csv").open() as f:
        evals = [{"env_step": int(r["env_step"]), "return_mean": float(r["return_mean"])}
                 for r in csv.DictReader(f)]
    with (d / "metrics.csv").open() as f:
        metrics = list(csv.DictReader(f))
    init = spec.recipe.config("loop").initial_random_steps
    after = [float(r["steps_per_s"]) for r in metrics if int(r["env_step"]) >= init + 2000]
    s_per_1k = float(np.mean([1000 / v for v in after])) if after else float("nan")
    return {"lib": "mbrl-bench", "env": entry.label, "seed": seed, "evals": evals,
            "s_per_1k": s_per_1k}


def summarise(results: list[dict[str, Any]], suite: str, to: Path, note: str) -> str:
    """Write per-run CSV and a Markdown table (mean ± std over seeds) to ``to``.{csv,md}."""
    s = load_suite(suite)
    entries = {e.label: e for e in s.envs}
    to.parent.mkdir(parents=True, exist_ok=True)
    with to.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lib", "env", "seed", "budget", "final_return", "steps_to_threshold",
                    "train_s_per_1k_steps"])
        for r in results:
            e = entries[r["env"]]
            final = r["evals"][-1]["return_mean"]
            hit = next((x["env_step"] for x in r["evals"]
                        if e.threshold is not None and x["return_mean"] >= e.threshold), "")
            w.writerow([r["lib"], r["env"], r["seed"], r["evals"][-1]["env_step"],
                        f"{final:.1f}", hit, f"{r['s_per_1k']:.2f}"])
    lines = ["| env | library | seeds | final return (mean ± std) | final return per seed | "
             "steps to threshold (per seed) |", "|---|---|--:|--:|--:|--:|"]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["env"], r["lib"]), []).append(r)
    for (env, lib), rs in sorted(by.items()):
        finals = np.array([r["evals"][-1]["return_mean"] for r in rs])
        thr = entries[env].threshold
        hits = [next((x["env_step"] for x in r["evals"] if thr is not None
                      and x["return_mean"] >= thr), None) for r in rs]
        hit_txt = ", ".join("—" if h is None else str(h) for h in hits)
        per_seed = ", ".join(f"{f:.0f}" for f in finals)
        lines.append(f"| {env} (≥{thr:g}) | {lib} | {len(rs)} | {finals.mean():.1f} ± "
                     f"{finals.std():.1f} | {per_seed} | {hit_txt} |")
    md = "\n".join(lines) + "\n\n" + note + "\n"
    to.with_suffix(".md").write_text(md)
    return md


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--suite", default="classic")
    p.add_argument("--envs", default="Pendulum-v1,InvertedPendulum-v5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=Path("results/bench/sac_vs_sb3"))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--libs", default="mbrl-bench,sb3")
    p.add_argument("--to", type=Path, default=Path("results/reference/sac_vs_sb3"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    suite = load_suite(a.suite)
    wanted = a.envs.split(",")
    entries = [e for e in suite.envs if e.label in wanted]
    seeds = [int(x) for x in a.seeds.split(",")]
    libs = a.libs.split(",")
    results = []
    for entry in entries:
        init = entry.initial_random_steps if entry.initial_random_steps is not None else 5000
        for seed in seeds:
            if "mbrl-bench" in libs:
                results.append(run_ours(a.suite, entry, seed, a.out, a.threads))
            if "sb3" in libs:
                results.append(run_sb3(entry, seed, init, a.out))
    note = (f"Measured by `benchmarks/sac_vs_sb3.py` (suite `{a.suite}`, seeds {seeds}, "
            f"{a.threads} torch thread(s) per run) on {platform.processor() or platform.machine()}"
            f", code {code_version()}. Wall-clock is measured separately on a quiet machine by "
            "`benchmarks/sac_speed.py` (results/reference/sac_speed.md); the per-run training "
            "seconds per 1k steps are kept in the CSV for reference only.")
    print(summarise(results, a.suite, a.to, note))


if __name__ == "__main__":
    main()
