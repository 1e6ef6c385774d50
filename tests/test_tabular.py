"""Dyna-Q: Q-learning, the tabular model, the Dyna maze, the tabular loop, its reporting."""

from __future__ import annotations

import csv
import io
from collections import Counter, deque
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mbrl_bench.loops.tabular as tabular_loop
from mbrl_bench.cli import app
from mbrl_bench.envs.dyna_maze import GOAL, MAZE, START
from mbrl_bench.envs.make import get_env_state, make_env, set_env_state
from mbrl_bench.errors import ConfigError, UnsupportedEnvError
from mbrl_bench.models.tabular import TabularModel, TabularModelConfig
from mbrl_bench.optimizers.q_learning import QLearning, QLearningConfig
from mbrl_bench.reporting.aggregate import episodes_to_optimal, optimal_episodes
from mbrl_bench.runner.execute import execute_run, expand, preflight, run_all
from mbrl_bench.spec import load_recipe, load_suite

VOLATILE = {"wall_clock_s"}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


def suite_text(env_id: str, budget: int, eval_every: int, extra: str = "") -> str:
    return f"""
description = "tiny tabular suite"
algorithms = ["dyna-q"]
seeds = [0]
[[envs]]
id = "{env_id}"
budget = {budget}
eval_every = {eval_every}
eval_episodes = 1
{extra}
"""


def recipe(tmp_path: Path, name: str, text: str) -> None:
    d = tmp_path / "algorithms"
    d.mkdir(exist_ok=True)
    (d / f"{name}.toml").write_text(f'base = "dyna-q"\n{text}\n')


def specs(tmp_path: Path, text: str, algos: list[str], seeds: tuple[int, ...] = (0,)):  # type: ignore[no-untyped-def]
    (tmp_path / "t.toml").write_text(text)
    return expand(load_suite(str(tmp_path / "t.toml")), algos, list(seeds),
                  extra_dirs=(tmp_path / "algorithms",), progress=lambda s: None)


# ----------------------------------------------------------------------------- Q-learning


def test_q_learning_update_by_hand() -> None:
    agent = QLearning(3, 4, QLearningConfig(alpha=0.1, gamma=0.9))
    agent.q[2] = [0.5, 2.0, -1.0, 0.0]
    td = agent.update(0, 1, -1.0, 2, terminated=False)  # target -1 + 0.9 * 2 = 0.8
    assert td == pytest.approx(0.8) and agent.q[0, 1] == pytest.approx(0.08)
    agent.update(0, 1, -1.0, 2, terminated=False)  # 0.08 + 0.1 * (0.8 - 0.08)
    assert agent.q[0, 1] == pytest.approx(0.152)
    # a terminal next state is worth 0, whatever the initial values are
    optimistic = QLearning(3, 4, QLearningConfig(alpha=0.5, gamma=0.9, initial_q=5.0))
    optimistic.update(1, 0, 1.0, 2, terminated=True)  # 5 + 0.5 * (1 - 5)
    assert optimistic.q[1, 0] == pytest.approx(3.0)
    optimistic.update(1, 2, 1.0, 2, terminated=False)  # 5 + 0.5 * (1 + 4.5 - 5)
    assert optimistic.q[1, 2] == pytest.approx(5.25)


def test_epsilon_greedy_breaks_ties_with_the_generator() -> None:
    greedy = QLearning(1, 4, QLearningConfig(epsilon=0.0))
    greedy.q[0] = [1.0, 3.0, 3.0, -2.0]
    rng = np.random.default_rng(0)
    picks = Counter(greedy.act(0, rng) for _ in range(2000))
    assert set(picks) == {1, 2} and 900 < picks[1] < 1100  # only the tied best, evenly
    explore = QLearning(1, 4, QLearningConfig(epsilon=1.0))
    explore.q[0] = [0.0, 9.0, 0.0, 0.0]
    rng = np.random.default_rng(1)
    picks = Counter(explore.act(0, rng) for _ in range(4000))
    assert all(900 < picks[a] < 1100 for a in range(4))  # ε = 1: uniform over all actions
    same = [greedy.act(0, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(same)) == 1  # same generator state, same choice


# ----------------------------------------------------------------------------- tabular model


def test_last_seen_model_keeps_the_last_outcome() -> None:
    model = TabularModel(10, 4, TabularModelConfig(outcomes="last"))
    model.observe(0, 1, -1.0, 3, False)
    model.observe(0, 1, -1.0, 4, True)
    assert model.counts(0, 1) == {(-1.0, 4, True): 1}
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert model.sample(0, 1, rng) == (-1.0, 4, True)
    assert rng.bit_generator.state == state  # a single outcome is returned without a draw


def test_count_model_samples_in_proportion_and_plans_from_visited_pairs() -> None:
    model = TabularModel(10, 4, TabularModelConfig(outcomes="counts"))
    for _ in range(3):
        model.observe(0, 1, 0.0, 3, False)
    model.observe(0, 1, 1.0, 9, True)
    assert model.counts(0, 1) == {(0.0, 3, False): 3, (1.0, 9, True): 1}
    rng = np.random.default_rng(0)
    draws = Counter(model.sample(0, 1, rng) for _ in range(4000))
    assert 2850 < draws[(0.0, 3, False)] < 3150  # 3/4 of 4000
    # planning: a visited state uniformly, then an action taken there uniformly
    model.observe(0, 2, 0.0, 0, False)
    model.observe(0, 3, 0.0, 0, False)
    model.observe(5, 0, 0.0, 6, False)
    pairs = Counter(model.sample_visited(rng) for _ in range(6000))
    assert set(pairs) == {(0, 1), (0, 2), (0, 3), (5, 0)}
    assert 2800 < pairs[(5, 0)] < 3200 and all(850 < pairs[(0, a)] < 1150 for a in (1, 2, 3))
    # the state dict survives a weights-only checkpoint and rebuilds the same model
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = TabularModel(10, 4, TabularModelConfig(outcomes="counts"))
    again.load_state_dict(torch.load(buf, weights_only=True))
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    assert [model.sample(*model.sample_visited(r1), r1) for _ in range(50)] == [
        again.sample(*again.sample_visited(r2), r2) for _ in range(50)]
    with pytest.raises(ValueError, match="no transition"):
        TabularModel(2, 2, TabularModelConfig()).sample_visited(rng)


# ----------------------------------------------------------------------------- Dyna maze


def _shortest_path(env_id: str, start: int, n_states: int) -> int:
    """Breadth-first search over the env's own transitions (its state set by hand)."""
    env = make_env(env_id)
    env.reset(seed=0)
    dist, queue = {start: 0}, deque([start])
    while queue:
        s = queue.popleft()
        for a in range(int(env.action_space.n)):  # type: ignore[attr-defined]
            env.unwrapped.s = s  # type: ignore[attr-defined]
            s2, _, term, _, _ = env.step(a)
            if term:
                return dist[s] + 1
            if s2 not in dist:
                dist[s2] = dist[s] + 1
                queue.append(s2)
    raise AssertionError(f"goal unreachable after visiting {len(dist)} of {n_states} states")


def test_dyna_maze_is_the_books_example_8_1() -> None:
    walls = {(r, c) for r, row in enumerate(MAZE) for c, x in enumerate(row) if x == "#"}
    assert len(MAZE) == 6 and all(len(row) == 9 for row in MAZE)
    assert walls == {(1, 2), (2, 2), (3, 2), (4, 5), (0, 7), (1, 7), (2, 7)}
    assert (START, GOAL) == (2 * 9 + 0, 0 * 9 + 8)
    env = make_env("mbrl_bench/DynaMaze-v0")
    assert env.reset(seed=1)[0] == START
    assert env.step(3)[:3] == (START, 0.0, False)  # left edge: stays
    assert env.step(1)[:3] == (START + 1, 0.0, False)  # right
    assert env.step(1)[:3] == (START + 1, 0.0, False)  # wall at (2, 2): stays
    env.unwrapped.s = GOAL + 9  # type: ignore[attr-defined]  # just below the goal
    assert env.step(0)[:3] == (GOAL, 1.0, True)
    assert _shortest_path("mbrl_bench/DynaMaze-v0", START, 54) == 14
    assert _shortest_path("CliffWalking-v1", 36, 48) == 13


@pytest.mark.parametrize(("env_id", "kwargs"), [
    ("mbrl_bench/DynaMaze-v0", {}), ("CliffWalking-v1", {}), ("Taxi-v4", {}),
    ("FrozenLake-v1", {"is_slippery": True}),
])
def test_discrete_env_state_restores_the_rest_of_the_episode(env_id: str, kwargs: dict) -> None:
    env, other = make_env(env_id, kwargs), make_env(env_id, kwargs)
    env.reset(seed=3)
    other.reset(seed=99)
    rng = np.random.default_rng(0)
    actions = rng.integers(int(env.action_space.n), size=40).tolist()  # type: ignore[attr-defined]
    for a in actions[:7]:
        env.step(a)
    buf = io.BytesIO()
    torch.save(get_env_state(env), buf)
    buf.seek(0)
    set_env_state(other, torch.load(buf, weights_only=True))

    def rollout(e):  # type: ignore[no-untyped-def]
        out = []
        for a in actions[7:]:
            s, r, term, trunc, _ = e.step(a)
            out.append((int(s), float(r), term, trunc))
            if term or trunc:
                out.append(int(e.reset()[0]))
        return out

    assert rollout(env) == rollout(other)


# ----------------------------------------------------------------------------- the loop


def _first_optimal(run_dir: Path) -> tuple[int | None, list[float]]:
    ep = rows(run_dir / "metrics.csv")
    rets = [float(r["return"]) for r in ep]
    lens = [int(r["length"]) for r in ep]
    return episodes_to_optimal(optimal_episodes(rets, lens, -13.0, None)), rets


def test_dyna_q_n20_reaches_the_optimal_cliff_return_in_fewer_episodes_than_n0(
    tmp_path: Path,
) -> None:
    """Seed 1 (measured): n = 0 first walks the optimal path (return -13) in episode 115,
    n = 20 in episode 8; episodes 51-60 average -58.0 and -23.0 (n = 20 fell off the cliff
    once while exploring). Run twice: the same rows."""
    recipe(tmp_path, "n0", "[loop]\nplanning_steps = 0")
    recipe(tmp_path, "n20", "[loop]\nplanning_steps = 20")
    text = suite_text("CliffWalking-v1", 9000, 3000)
    for out in ("a", "b"):
        outcomes = run_all(specs(tmp_path, text, ["n0", "n20"], seeds=(1,)), tmp_path / out,
                           progress=lambda s: None)
        assert [o.status for o in outcomes] == ["complete", "complete"], outcomes
    d = {n: tmp_path / "a" / "t" / "CliffWalking-v1" / n / "seed_1" for n in ("n0", "n20")}
    first0, rets0 = _first_optimal(d["n0"])
    first20, rets20 = _first_optimal(d["n20"])
    assert first0 is not None and first20 is not None and 5 * first20 < first0, (first0, first20)
    assert np.mean(rets20[50:60]) > np.mean(rets0[50:60]) + 20
    for n in ("n0", "n20"):
        again = tmp_path / "b" / "t" / "CliffWalking-v1" / n / "seed_1"
        assert rows(d[n] / "metrics.csv") == rows(again / "metrics.csv")
        assert rows(d[n] / "evals.csv") == rows(again / "evals.csv")


def test_last_seen_and_count_models_give_the_same_run_on_a_deterministic_task(
    tmp_path: Path,
) -> None:
    recipe(tmp_path, "last", '[model]\noutcomes = "last"')
    recipe(tmp_path, "counts", '[model]\noutcomes = "counts"')
    text = suite_text("mbrl_bench/DynaMaze-v0", 3000, 1000)
    run_all(specs(tmp_path, text, ["last", "counts"]), tmp_path / "o", progress=lambda s: None)
    d = tmp_path / "o" / "t" / "mbrl_bench_DynaMaze-v0"
    assert rows(d / "last" / "seed_0" / "metrics.csv") == rows(
        d / "counts" / "seed_0" / "metrics.csv")
    assert len(rows(d / "last" / "seed_0" / "metrics.csv")) > 20


def test_an_interrupted_run_resumes_to_the_same_rows(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop a run at an arbitrary real step (mid-episode, between checkpoints), leave a row
    past its checkpoint as a kill could, run it again: the rows equal an uninterrupted run's."""
    [spec] = specs(tmp_path, suite_text("CliffWalking-v1", 3000, 410), ["dyna-q"])
    real_plan, calls = tabular_loop._plan, [0]

    def stop_at_1301(*args):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 1301:
            raise KeyboardInterrupt
        real_plan(*args)

    monkeypatch.setattr(tabular_loop, "_plan", stop_at_1301)
    with pytest.raises(KeyboardInterrupt):
        execute_run(spec, tmp_path / "killed", progress=lambda s: None)
    monkeypatch.setattr(tabular_loop, "_plan", real_plan)
    run = spec.run_dir(tmp_path / "killed")
    assert [r["env_step"] for r in rows(run / "evals.csv")] == ["410", "820", "1230"]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 1230 and ckpt["ep_length"] > 0  # checkpointed mid-episode
    with (run / "evals.csv").open("a") as f:  # written after the checkpoint, then killed
        f.write("1640,99,0,0,0,0,0\n")
    messages: list[str] = []
    assert execute_run(spec, tmp_path / "killed", progress=messages.append).status == "complete"
    assert any("resumed at step 1230" in m for m in messages)
    execute_run(spec, tmp_path / "straight", progress=lambda s: None)
    straight = spec.run_dir(tmp_path / "straight")
    for name in ("evals.csv", "metrics.csv"):
        assert rows(run / name) == rows(straight / name), name
    assert len(rows(run / "metrics.csv")) > 10


def test_tabular_runs_need_no_termination_function_and_mixed_suites_pair_by_spaces(
    tmp_path: Path,
) -> None:
    text = suite_text("mbrl_bench/DynaMaze-v0", 100, 50) + """
[[envs]]
id = "Pendulum-v1"
budget = 100
eval_every = 50
"""
    notes: list[str] = []
    (tmp_path / "t.toml").write_text(text)
    suite = load_suite(str(tmp_path / "t.toml"))
    got = expand(suite, ["dyna-q", "sac"], [0], progress=notes.append)
    assert [(s.env.label, s.algo) for s in got] == [("mbrl_bench_DynaMaze-v0", "dyna-q"),
                                                    ("Pendulum-v1", "sac")]
    assert "mbrl_bench_DynaMaze-v0 × sac" in notes[0] and "Pendulum-v1 × dyna-q" in notes[0]
    preflight(got[:1], tmp_path / "out")  # no termination function for the maze: fine
    only_sac = expand(suite, ["dyna-q", "sac"], [0], env_filter="Pendulum", progress=notes.append)
    assert [s.algo for s in only_sac] == ["sac"] and "Pendulum-v1 × dyna-q" in notes[-1]
    with pytest.raises(ConfigError, match=r"\(dyna-q needs discrete; Pendulum-v1 is box\)"):
        expand(suite, ["dyna-q"], [0], env_filter="Pendulum", progress=notes.append)
    (tmp_path / "t.toml").write_text(text + '[[envs]]\nid = "CartPole-v1"\nbudget = 10\n'
                                     'eval_every = 5\n')
    with pytest.raises(UnsupportedEnvError, match=r"CartPole-v1 .*: no loop can run"):
        expand(load_suite(str(tmp_path / "t.toml")), ["dyna-q", "sac"], [0],
               progress=notes.append)


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ("[loop]\nplanning_steps = -1", "loop.planning_steps", "non-negative"),
    ("[loop]\nplanning_steps = 2.5", "loop.planning_steps", "an integer"),
    ("[optimizer]\nepsilon = 1.5", "optimizer.epsilon", "[0, 1]"),
    ("[optimizer]\nalpha = 0", "optimizer.alpha", "(0, 1]"),
    ('[model]\noutcomes = "all"', "model.outcomes", "one of 'last', 'counts'"),
    ('[overrides."CliffWalking-v1".optimizer]\nepsilon = -0.1',
     "overrides.CliffWalking-v1.optimizer.epsilon", "[0, 1]"),
])
def test_bad_tabular_settings_give_one_line_errors(tmp_path: Path, text: str, key: str,
                                                   fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'base = "dyna-q"\n{text}\n')
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    assert e.value.key == key and fragment in str(e.value)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_the_tabular_loop_takes_only_tabular_parts(tmp_path: Path) -> None:
    path = tmp_path / "neural.toml"
    path.write_text('[loop]\nname = "tabular"\n[optimizer]\nname = "q-learning"\n'
                    '[model]\nname = "pe"\n')
    with pytest.raises(ConfigError, match="the 'tabular' loop takes 'tabular', not 'pe'") as e:
        load_recipe(str(path))
    assert e.value.key == "model.name"
    path.write_text('[loop]\nname = "tabular"\n[optimizer]\nname = "q-learning"\n')
    with pytest.raises(ConfigError, match="needs a model"):
        load_recipe(str(path))


def test_recipes_have_the_books_settings() -> None:
    maze = load_recipe("dyna-q", "mbrl_bench/DynaMaze-v0")
    assert maze.config("loop").planning_steps == 5
    opt = maze.config("optimizer")
    assert (opt.alpha, opt.gamma, opt.epsilon, opt.initial_q) == (0.1, 0.95, 0.1, 0.0)
    cliff = load_recipe("q-learning", "CliffWalking-v1")
    assert cliff.config("loop").planning_steps == 0
    assert (cliff.config("optimizer").epsilon, cliff.config("optimizer").gamma) == (0.01, 0.9)


# ----------------------------------------------------------------------------- reporting


def test_episodes_to_optimal_on_hand_made_episodes() -> None:
    ok = optimal_episodes([-20, -13, -13, -15, -13, -13, -13], [20, 13, 13, 15, 13, 13, 13],
                          -13.0, None)
    assert ok.tolist() == [False, True, True, False, True, True, True]
    assert episodes_to_optimal(ok) == 2
    assert episodes_to_optimal(ok, window=3) == 5
    assert episodes_to_optimal(ok, window=None) == 5
    assert episodes_to_optimal(ok, window=4) is None
    assert episodes_to_optimal([True, False], window=None) is None
    assert episodes_to_optimal([], window=1) is None
    # length and return together: a 6-step episode into a hole is not optimal
    both = optimal_episodes([0.0, 1.0, 1.0, np.nan], [6, 8, 6, 6], 1.0, 6)
    assert both.tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="window"):
        episodes_to_optimal(ok, window=0)
    with pytest.raises(ValueError, match="optimal_return, optimal_length"):
        optimal_episodes([1.0], [1], None, None)


def test_bench_episodes_reports_tabular_runs(tmp_path: Path) -> None:
    out = tmp_path / "res"
    extra = "threshold = 1.0\noptimal_length = 14"
    no_optimum = '[[envs]]\nid = "FrozenLake-v1"\nbudget = 500\neval_every = 500\n'
    (tmp_path / "t.toml").write_text(suite_text("mbrl_bench/DynaMaze-v0", 3000, 1000, extra)
                                     + no_optimum)
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--suite", str(tmp_path / "t.toml"), "--seeds", "0,1",
                              "--algos", "dyna-q,q-learning", "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["episodes", str(out)])
    assert res.exit_code == 0, res.output
    with (out / "episodes.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {(r["env"], r["algo"], r["seed"]) for r in table} == {
        (e, a, s) for e in ("mbrl_bench_DynaMaze-v0", "FrozenLake-v1")
        for a in ("dyna-q", "q-learning") for s in ("0", "1")}
    lake = [r for r in table if r["env"] == "FrozenLake-v1"]
    assert all(r["first_optimal"] == r["optimal_length"] == "" for r in lake)
    assert "| FrozenLake-v1 | dyna-q | 2 |" in (out / "episodes.md").read_text()
    assert "no optimum set" in (out / "episodes.md").read_text()
    for r in (r for r in table if r["env"] != "FrozenLake-v1"):
        ep = rows(out / "t" / "mbrl_bench_DynaMaze-v0" / r["algo"] / f"seed_{r['seed']}"
                  / "metrics.csv")
        assert int(r["episodes"]) == len(ep)
        first = next((int(e["episode"]) for e in ep if int(e["length"]) <= 14), None)
        assert r["first_optimal"] == ("" if first is None else f"{first}.0")
    assert "| t | mbrl_bench_DynaMaze-v0 | dyna-q | 2 |" in (out / "episodes.md").read_text()
    res = runner.invoke(app, ["table", str(out)])  # the evaluation rows feed the usual table
    assert res.exit_code == 0 and "dyna-q" in res.output
