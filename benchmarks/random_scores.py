"""Measure the return of a uniformly random policy on the tasks of the shipped suites, the
zero point of normalised scores (``bench aggregate``). Writes ``references/random.toml``.

    python benchmarks/random_scores.py [EPISODES]

Each task: EPISODES episodes (default 20), reset seeds 0..EPISODES-1, actions drawn from the
action space seeded with 0; the mean return is recorded with the command and the machine.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np

from mbrl_bench.envs.make import make_env
from mbrl_bench.spec import available, load_suite

OUT = Path(__file__).resolve().parents[1] / "references" / "random.toml"


def random_return(env_id: str, kwargs: dict[str, object], episodes: int) -> float:
    env = make_env(env_id, kwargs)
    env.action_space.seed(0)
    total = []
    for seed in range(episodes):
        env.reset(seed=seed)
        ret, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            ret, done = ret + float(r), bool(term or trunc)
        total.append(ret)
    return float(np.mean(total))


def main() -> None:
    episodes = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    tasks: dict[str, dict[str, object]] = {}
    for name in available("suites"):
        for entry in load_suite(name).envs:
            if entry.kwargs:
                continue  # scores are per plain task id
            tasks.setdefault(entry.id, {})
    lines = [
        "# Mean return of a uniformly random policy (the zero of normalised scores), measured by",
        f"# `python benchmarks/random_scores.py {episodes}`: {episodes} episodes per task, reset",
        "# seeds 0.., actions from the action space seeded with 0, on "
        f"{platform.machine()} {platform.processor() or ''}".rstrip(),
        "",
    ]
    for env_id in sorted(tasks):
        value = random_return(env_id, {}, episodes)
        lines += ["[[random]]", f'env_id = "{env_id}"', f"value = {value:.3f}",
                  f"episodes = {episodes}", ""]
        print(f"{env_id}: {value:.1f}")
    OUT.write_text("\n".join(lines))
    print(f"written: {OUT}")


if __name__ == "__main__":
    main()
