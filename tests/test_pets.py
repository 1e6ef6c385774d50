"""PETS: trajectory sampling, the continuous cart-pole, known rewards, the MPC agent and loop."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import kill_then_rerun, member_indexed_model, tiny_suite

from mbrl_bench.envs.make import get_env_state, make_env, set_env_state
from mbrl_bench.envs.rewards import REWARDS, reward_fn_for
from mbrl_bench.envs.termination import termination_fn_for
from mbrl_bench.errors import UnsupportedEnvError
from mbrl_bench.models.ensemble import ProbabilisticEnsemble
from mbrl_bench.models.model_env import ModelEnv
from mbrl_bench.planners.mpc import MPCAgent
from mbrl_bench.planners.trajectory import particle_members, trajectory_returns

CARTPOLE = "mbrl_bench/ContinuousCartPole-v0"
E, OD, AD = 5, 2, 1


def member_model() -> ProbabilisticEnsemble:
    """Deterministic ensemble whose member ``m`` predicts Δobs = (m, m) and reward 10 m."""
    return member_indexed_model(E, OD, AD, list(range(E)), deterministic=True)


def never(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(obs.shape[0], dtype=torch.bool)


def ts_env(termination: Any = never, reward: Any = None) -> ModelEnv:
    return ModelEnv(member_model(), termination, reward, "fixed_member",
                    generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- trajectory


def test_particles_are_candidate_major_with_member_i_mod_e() -> None:
    assert particle_members(3, 10, 5).tolist() == [i % 5 for i in range(30)]
    # P a multiple of E: every candidate sees each member P / E times
    rows = particle_members(4, 10, 5).view(4, 10)
    assert all(torch.bincount(r, minlength=5).tolist() == [2] * 5 for r in rows)


def test_returns_average_particles_over_their_members() -> None:
    """Each candidate's 5 particles use members 0..4: mean reward per step 10 * 2 = 20."""
    actions = torch.zeros(7, 4, AD)
    returns = trajectory_returns(ts_env(), torch.zeros(OD), actions, particles=5)
    assert returns.shape == (7,)
    torch.testing.assert_close(returns, torch.full((7,), 20.0 * 4))


def test_termination_stops_reward_accumulation() -> None:
    """Member m moves x by m per step and the episode ends once x > 2.5 (that step's reward
    counts, later ones do not): m=0 never ends (0), m=1 ends at step 3 (30), m=2 at 2 (40),
    m=3 at 1 (30), m=4 at 1 (40); mean 28 over a horizon of 4 (80 without termination)."""

    def past(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return next_obs[:, 0] > 2.5

    returns = trajectory_returns(ts_env(past), torch.zeros(OD), torch.zeros(3, 4, AD), 5)
    torch.testing.assert_close(returns, torch.full((3,), 28.0))


def test_each_candidate_is_scored_on_its_own_actions() -> None:
    """With a known reward -a^2 the return of candidate c is -sum_t a_ct^2 for every particle."""

    def reward(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return -(act**2).sum(-1)

    actions = torch.rand(6, 3, AD, generator=torch.Generator().manual_seed(1)) * 2 - 1
    returns = trajectory_returns(ts_env(reward=reward), torch.zeros(OD), actions, 10)
    torch.testing.assert_close(returns, -(actions**2).sum(dim=(1, 2)))


def test_a_diverged_particle_makes_its_candidate_nan_unless_it_had_terminated() -> None:
    def reward(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        # step 2 (x = 2 m) of member 3 diverges when the action is positive
        bad = (next_obs[:, 0] == 6.0) & (act[:, 0] > 0)
        return torch.where(bad, torch.nan, torch.ones_like(act[:, 0]))

    actions = torch.tensor([[[0.5]] * 3, [[-0.5]] * 3])
    returns = trajectory_returns(ts_env(reward=reward), torch.zeros(OD), actions, 5)
    assert math.isnan(float(returns[0])) and float(returns[1]) == 3.0

    def at_once(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return torch.ones(obs.shape[0], dtype=torch.bool)

    returns = trajectory_returns(ts_env(at_once, reward), torch.zeros(OD), actions, 5)
    assert returns.tolist() == [1.0, 1.0]  # terminated at step 1: its later NaN does not count


def test_a_model_predicting_nan_is_ranked_not_raised() -> None:
    env = ts_env()
    with torch.no_grad():
        env.model.head.bias[3, 0, 0] = math.inf  # member 3 sends x to inf
    returns = trajectory_returns(env, torch.zeros(OD), torch.zeros(2, 3, AD), 5)
    assert bool(returns.isnan().all())


# ----------------------------------------------------------------------------- cart-pole, rewards


def random_transitions(env_id: str, steps: int, seed: int = 0) -> list[tuple[Any, ...]]:
    """(obs, action, reward, next_obs, terminated) of a random policy, episodes reset."""
    env = make_env(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        out.append((obs, a, float(r), nxt, bool(term)))
        obs = env.reset()[0] if term or trunc else nxt
    return out


def batch(rows: list[tuple[Any, ...]]) -> tuple[torch.Tensor, ...]:
    o, a, r, n, t = zip(*rows, strict=True)
    return (torch.as_tensor(np.stack(o)), torch.as_tensor(np.stack(a)),
            torch.as_tensor(np.array(r)), torch.as_tensor(np.stack(n)), torch.as_tensor(t))


def test_cartpole_termination_and_reward_match_the_env_on_real_states() -> None:
    env = make_env(CARTPOLE)
    rows = random_transitions(CARTPOLE, 3000)
    obs, act, rew, nxt, term = batch(rows)
    assert 60 < int(term.sum()) < 200  # random episodes last ~30 steps
    assert torch.equal(termination_fn_for(env)(obs, act, nxt), term)
    assert torch.equal(reward_fn_for(env)(obs, act, nxt).double(), rew)
    # the 200-step limit truncates, it does not terminate
    spec = env.spec
    assert spec is not None and spec.max_episode_steps == 200


def test_cartpole_is_deterministic_and_resumes_from_its_saved_state() -> None:
    a, b = make_env(CARTPOLE), make_env(CARTPOLE)
    a.reset(seed=3)
    b.reset(seed=4)
    for _ in range(5):
        a.step(np.array([0.3], dtype=np.float32))
    set_env_state(b, get_env_state(a))  # type: ignore[arg-type]
    for _ in range(10):
        oa, ra, ta, tra, _ = a.step(np.array([-0.2], dtype=np.float32))
        ob, rb, tb, trb, _ = b.step(np.array([-0.2], dtype=np.float32))
        assert np.array_equal(oa, ob) and (ra, ta, tra) == (rb, tb, trb)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "InvertedPendulum-v5",
                                    "mbrl_bench/PointMass-v0"])
def test_known_rewards_match_the_env_on_real_transitions(env_id: str) -> None:
    env = make_env(env_id)
    obs, act, rew, nxt, term = batch(random_transitions(env_id, 1500))
    got = reward_fn_for(env)(obs.float(), act.float(), nxt.float()).double()
    torch.testing.assert_close(got, rew, atol=2e-4, rtol=1e-5)
    if env_id == "InvertedPendulum-v5":
        assert int(term.sum()) > 20 and float(rew[term].sum()) == 0.0


def test_pendulum_reward_clips_the_torque_and_wraps_the_angle() -> None:
    """Actions beyond max_torque are clipped by the env: same reward as at the bound."""
    env = make_env("Pendulum-v1")
    fn = reward_fn_for(env)
    obs = torch.tensor([[-1.0, 0.0, 0.0], [-1.0, -1e-6, 0.0]])  # theta = ±pi
    r = fn(obs, torch.tensor([[5.0], [-2.0]]), obs)
    torch.testing.assert_close(r, torch.full((2,), -(math.pi**2 + 0.004)))


def test_unknown_reward_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedEnvError, match="HalfCheetah-v5"):
        reward_fn_for(gym.make("HalfCheetah-v5"))
    assert {CARTPOLE, "Pendulum-v1", "InvertedPendulum-v5"} <= set(REWARDS)


# ----------------------------------------------------------------------------- MPC agent


class RecordingPlanner:
    """A stand-in planner returning a fixed plan and recording each search's start."""

    horizon = 3
    low, high = torch.full((3, 1), -1.0), torch.full((3, 1), 1.0)

    def __init__(self) -> None:
        self.starts: list[torch.Tensor | None] = []
        self.plan = torch.tensor([[0.5], [0.25], [-0.75]])

    def optimize(self, objective: Any, x0: torch.Tensor | None, generator: torch.Generator
                 ) -> torch.Tensor:
        self.starts.append(None if x0 is None else x0.clone())
        assert objective(self.plan[None]).shape == (1,)
        return self.plan


def test_agent_executes_the_first_action_and_warm_starts_shifted_by_one_step() -> None:
    planner = RecordingPlanner()
    agent = MPCAgent(member_model(), never, None, planner, "fixed_member", particles=5,  # type: ignore[arg-type]
                     generator=torch.Generator().manual_seed(0))
    a = agent.act(np.zeros(OD, dtype=np.float32))
    assert a.dtype == np.float32 and a.tolist() == [0.5]
    agent.act(np.zeros(OD, dtype=np.float32))
    assert planner.starts[0] is None
    torch.testing.assert_close(planner.starts[1], torch.tensor([[0.25], [-0.75], [0.0]]))
    state = agent.state_dict()
    agent.reset()
    agent.act(np.zeros(OD, dtype=np.float32))
    assert planner.starts[2] is None
    agent.load_state_dict(state)
    torch.testing.assert_close(agent.warm_start, state["warm_start"])


# ----------------------------------------------------------------------------- MPC loop

TINY_PETS = """
description = "PETS at a tiny scale, for tests"
base = "pets"
[loop]
initial_random_steps = 200
model_train_freq = 100
horizon = 15
particles = 5
log_every = 100
[model]
hidden_size = 48
num_layers = 2
lr = 1e-3
weight_decays = [1e-5, 1e-5, 1e-5]
batch_size = 32
max_epochs = 40
[planner]
population_size = 100
iterations = 3
"""

FAST_PETS = """
description = "PETS at the tiniest scale: for resume and determinism checks, not learning"
base = "tiny-pets"
[loop]
initial_random_steps = 100
horizon = 5
particles = 5
log_every = 50
[model]
max_epochs = 5
[planner]
population_size = 32
iterations = 2
"""

VOLATILE = {"wall_clock_s", "steps_per_s", "model_fit_s", "plan_s_per_step"}


def pets_suite(budget: int, eval_every: int, episodes: int = 1, env_id: str = CARTPOLE) -> str:
    return tiny_suite(budget, eval_every, env_id, episodes, algorithm="tiny-pets",
                      threshold=150.0)


@pytest.fixture
def pets_files(tmp_path: Any) -> Any:
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "suites").mkdir()
    (tmp_path / "algorithms" / "tiny-pets.toml").write_text(TINY_PETS)
    (tmp_path / "algorithms" / "fast-pets.toml").write_text(FAST_PETS)
    return tmp_path


def run_suite(files: Any, text: str, out: str, algo: str = "tiny-pets") -> Any:
    from mbrl_bench.runner.execute import expand, run_all
    from mbrl_bench.spec import load_suite

    (files / "suites" / "p.toml").write_text(text)
    specs = expand(load_suite(str(files / "suites" / "p.toml")), [algo], [0],
                   extra_dirs=(files / "algorithms",))
    [outcome] = run_all(specs, files / out, threads=1, progress=lambda s: None)
    assert outcome.status == "complete", outcome.error
    return specs[0].run_dir(files / out)


def csv_rows(path: Any) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


def test_pets_balances_the_cartpole_where_random_actions_cannot(pets_files: Any) -> None:
    """Random actions keep the pole up ~30 steps, zero force ~40; PETS (tiny model, 100
    candidates x 10 particles) balances it for the full 200 steps after 600 real steps on an
    AVX-512 CPU and for ~150 on an AVX2 one (same seed, other float rounding): at least 120,
    three times what random or zero actions reach."""
    d = run_suite(pets_files, pets_suite(600, 300, episodes=2), "out")
    evals = csv_rows(d / "evals.csv")
    assert [int(r["env_step"]) for r in evals] == [300, 600]
    assert float(evals[-1]["return_mean"]) >= 120.0, evals
    metrics = csv_rows(d / "metrics.csv")
    assert float(metrics[-1]["model_fit_epochs"]) >= 1 and metrics[-1]["train_return"]


def test_killed_mpc_run_resumes_to_the_same_rows(pets_files: Any) -> None:
    """Kill -9 a PETS run mid-way (model, buffer, generators, env state and warm start in the
    checkpoint), run the same command again: the rows equal an uninterrupted run's."""
    import json

    text = pets_suite(500, 100, env_id="mbrl_bench/PointMass-v0")
    run, done = kill_then_rerun(pets_files, text, "fast-pets", "killed", kill_at_rows=2)
    assert done.returncode == 0, done.stderr
    assert "resumed at step" in done.stdout
    straight = run_suite(pets_files, text, "straight", algo="fast-pets")
    assert csv_rows(run / "evals.csv") == csv_rows(straight / "evals.csv")
    assert csv_rows(run / "metrics.csv") == csv_rows(straight / "metrics.csv")
    assert len(csv_rows(run / "evals.csv")) == 5
    assert json.loads((run / "run.json").read_text())["attempts"] == 2


def test_pets_recipes_resolve_per_task_and_ablations_swap_the_planner() -> None:
    from mbrl_bench.planners.sampling import CEMConfig, MPPIConfig, RandomShootingConfig
    from mbrl_bench.spec import load_recipe

    pets = load_recipe("pets", CARTPOLE)
    assert pets.config("loop").horizon == 15 and pets.config("loop").known_reward
    assert pets.config("planner") == CEMConfig(population_size=350)
    cheetah = load_recipe("pets", "HalfCheetah-v5")
    assert not cheetah.config("loop").known_reward
    assert cheetah.config("planner").elite_ratio == 0.16
    assert cheetah.config("model").ensemble_size == 5 and cheetah.config("loop").particles == 20
    # an ablation naming another planner drops the base's CEM settings, per-task ones included
    mppi = load_recipe("pets-mppi", CARTPOLE)
    assert isinstance(mppi.config("planner"), MPPIConfig)
    assert mppi.config("loop").horizon == 15  # the loop's per-task settings still apply
    assert isinstance(load_recipe("pets-rs", "InvertedPendulum-v5").config("planner"),
                      RandomShootingConfig)


def test_a_known_reward_the_env_lacks_is_refused_before_running(pets_files: Any) -> None:
    from mbrl_bench.runner.execute import expand, run_all
    from mbrl_bench.spec import load_suite

    (pets_files / "algorithms" / "known.toml").write_text(
        'base = "tiny-pets"\n[loop]\nknown_reward = true\n')
    (pets_files / "suites" / "hc.toml").write_text(pets_suite(300, 300, env_id="HalfCheetah-v5"))
    specs = expand(load_suite(str(pets_files / "suites" / "hc.toml")), ["known"], [0],
                   extra_dirs=(pets_files / "algorithms",))
    with pytest.raises(UnsupportedEnvError, match="known reward"):
        run_all(specs, pets_files / "out", progress=lambda s: None)
    assert not (pets_files / "out").exists()
