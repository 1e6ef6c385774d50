"""Batched termination functions reproduce each real env's ``terminated`` flag.

Every covered env is rolled out with a seeded random policy (MountainCarContinuous from
constructed near-goal states) and the function, applied to the whole batch of transitions at
once, must match the env on every transition.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import gymnasium.envs.mujoco
import numpy as np
import pytest
import torch

from mbrl_bench.envs.termination import (
    INVERTED_DOUBLE_PENDULUM_MIN_TIP_HEIGHT,
    TERMINATIONS,
    _double_pendulum_tip_height,
    register_termination,
    termination_fn_for,
)
from mbrl_bench.errors import UnsupportedEnvError

COVERED = [
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",
    "Humanoid-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
    "HalfCheetah-v5",
    "Swimmer-v5",
    "Reacher-v5",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
]

MBPO_HUMANOID = {
    "include_cinert_in_observation": False,
    "include_cvel_in_observation": False,
    "include_qfrc_actuator_in_observation": False,
    "include_cfrc_ext_in_observation": False,
}

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(autouse=True)
def _mujoco_log_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MuJoCo appends XML warnings (HalfCheetah's) to ./MUJOCO_LOG.TXT: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


def _make(env_id: str, **kwargs: Any) -> gym.Env:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter from some MuJoCo XMLs
        return gym.make(env_id, **kwargs)


def rollout(env: gym.Env, steps: int, seed: int) -> Batch:
    """Random-policy transitions: obs N x O, action N x A, next_obs N x O, terminated N (bool)."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]] = []
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, _, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, bool(terminated)))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    return _stack(rows)


def _stack(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]) -> Batch:
    o, a, n, t = zip(*rows, strict=True)
    return (
        torch.as_tensor(np.stack(o), dtype=torch.float64),
        torch.as_tensor(np.stack(a), dtype=torch.float64),
        torch.as_tensor(np.stack(n), dtype=torch.float64),
        torch.as_tensor(np.array(t, dtype=bool)),
    )


# (env id, make kwargs, steps, the env can terminate under these kwargs)
EXACT_CASES: list[tuple[str, dict[str, Any], int, bool]] = [
    ("Hopper-v5", {}, 1500, True),
    ("Hopper-v5", {"exclude_current_positions_from_observation": False}, 600, True),
    # Velocity bounds inside the observation's +-10 clip: the state-range check is exact.
    ("Hopper-v5", {"healthy_state_range": (-3.0, 3.0), "healthy_angle_range": (-1, 1)}, 600, True),
    ("Hopper-v5", {"terminate_when_unhealthy": False}, 300, False),
    ("Walker2d-v5", {}, 1500, True),
    (
        "Walker2d-v5",
        {"exclude_current_positions_from_observation": False, "healthy_z_range": (0.9, 1.5)},
        600,
        True,
    ),
    ("Walker2d-v5", {"terminate_when_unhealthy": False}, 300, False),
    ("Ant-v5", {}, 2500, True),
    ("Ant-v5", {"include_cfrc_ext_in_observation": False}, 2500, True),
    (
        "Ant-v5",
        {"exclude_current_positions_from_observation": False, "healthy_z_range": (0.3, 0.9)},
        800,
        True,
    ),
    ("Ant-v5", {"terminate_when_unhealthy": False}, 300, False),
    ("Humanoid-v5", {}, 1000, True),
    ("Humanoid-v5", MBPO_HUMANOID, 1000, True),
    (
        "Humanoid-v5",
        {"exclude_current_positions_from_observation": False, "healthy_z_range": (1.1, 2.0)},
        400,
        True,
    ),
    ("Humanoid-v5", {"terminate_when_unhealthy": False}, 300, False),
    ("InvertedPendulum-v5", {}, 2000, True),
    ("HalfCheetah-v5", {}, 500, False),
    ("Swimmer-v5", {}, 500, False),
    ("Reacher-v5", {}, 500, False),
    ("Pendulum-v1", {}, 500, False),
    ("MountainCarContinuous-v0", {}, 500, False),
]


@pytest.mark.parametrize(
    ("env_id", "kwargs", "steps", "can_terminate"),
    EXACT_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(EXACT_CASES)],
)
def test_reproduces_env_terminated_exactly(
    env_id: str, kwargs: dict[str, Any], steps: int, can_terminate: bool
) -> None:
    env = _make(env_id, **kwargs)
    obs, act, next_obs, terminated = rollout(env, steps, seed=0)
    fn = termination_fn_for(env)
    got = fn(obs, act, next_obs)
    assert got.dtype == torch.bool and got.shape == (steps,)
    mismatch = (got != terminated).nonzero().flatten().tolist()
    assert mismatch == [], f"{env_id} {kwargs}: disagrees with the env at steps {mismatch[:10]}"
    if can_terminate:
        assert bool(terminated.any()), "rollout produced no terminating transition"
    else:
        assert not bool(terminated.any())
    env.close()


def test_hopper_state_range_terminations_are_covered() -> None:
    """With a narrow healthy_state_range, some terminations come from the velocity bounds alone."""
    env = _make("Hopper-v5", healthy_state_range=(-3.0, 3.0), healthy_angle_range=(-1, 1))
    obs, act, next_obs, terminated = rollout(env, 600, seed=0)
    z, angle = next_obs[:, 0], next_obs[:, 1]
    z_or_angle = ~((z > 0.7) & (angle > -1) & (angle < 1))
    assert bool((terminated & ~z_or_angle).any())
    assert torch.equal(termination_fn_for(env)(obs, act, next_obs), terminated)


def test_inverted_double_pendulum_matches_up_to_site_lag() -> None:
    """Exact except within a hair of the threshold, where the env's site_xpos lags (documented)."""
    env = _make("InvertedDoublePendulum-v5")
    obs, act, next_obs, terminated = rollout(env, 3000, seed=0)
    got = termination_fn_for(env)(obs, act, next_obs)
    assert got.dtype == torch.bool and got.shape == (3000,)
    assert int(terminated.sum()) > 100
    tip = _double_pendulum_tip_height(env)(next_obs)
    near = (tip - INVERTED_DOUBLE_PENDULUM_MIN_TIP_HEIGHT).abs() < 2e-2
    assert torch.equal(got[~near], terminated[~near])
    assert int((got != terminated).sum()) <= 2


@pytest.mark.parametrize("pole2_pos", ["0 0 0.6", "0.05 0 0.45"])
def test_double_pendulum_tip_height_is_site_xpos(tmp_path: Path, pole2_pos: str) -> None:
    """The rebuilt tip height equals MuJoCo's site_xpos z, for the stock and a modified XML."""
    assets = Path(gymnasium.envs.mujoco.__file__).parent / "assets"
    xml = (assets / "inverted_double_pendulum.xml").read_text()
    if pole2_pos != "0 0 0.6":
        old = '<body name="pole2" pos="0 0 0.6">'
        xml = xml.replace(old, f'<body name="pole2" pos="{pole2_pos}">')
        xml = xml.replace('<site name="tip" pos="0 0 .6"', '<site name="tip" pos="-0.1 0 .7"')
        assert pole2_pos in xml and "-0.1 0 .7" in xml
    path = tmp_path / "idp.xml"
    path.write_text(xml)
    env = _make("InvertedDoublePendulum-v5", xml_file=str(path))
    env.reset(seed=0)
    base: Any = env.unwrapped
    rng = np.random.default_rng(0)
    obs, heights = [], []
    for _ in range(200):
        qpos = np.array([rng.uniform(-1, 1), *rng.uniform(-np.pi, np.pi, size=2)])
        base.set_state(qpos, rng.normal(size=3))  # runs mj_forward: site_xpos is current
        obs.append(base._get_obs())
        heights.append(base.data.site_xpos[0][2])
    tip = _double_pendulum_tip_height(env)(torch.as_tensor(np.stack(obs)))
    np.testing.assert_allclose(tip.numpy(), np.array(heights), rtol=0, atol=1e-12)


def _dim(space: gym.Space[Any]) -> int:
    assert space.shape is not None
    return int(space.shape[0])


# env id -> (qpos index of z, qpos index of the torso angle or None)
HEALTH_INDICES = {
    "Hopper-v5": (1, 2),
    "Walker2d-v5": (1, 2),
    "Ant-v5": (2, None),
    "Humanoid-v5": (2, None),
}


@pytest.mark.parametrize("env_id", list(HEALTH_INDICES))
def test_range_boundaries_match_is_healthy(env_id: str) -> None:
    """On and beside each bound (open or closed, as the env has it) we agree with is_healthy."""
    env = _make(env_id)
    env.reset(seed=0)
    base: Any = env.unwrapped
    fn = termination_fn_for(env)
    z_i, angle_i = HEALTH_INDICES[env_id]
    values: list[tuple[int, float]] = []
    for index, name in ((z_i, "_healthy_z_range"), (angle_i, "_healthy_angle_range")):
        if index is None:
            continue
        for bound in getattr(base, name):
            if np.isfinite(bound):
                b = float(bound)
                values += [
                    (index, b),
                    (index, np.nextafter(b, -np.inf)),
                    (index, np.nextafter(b, np.inf)),
                ]
    qpos0, qvel0 = base.data.qpos.copy(), base.data.qvel.copy()
    obs, unhealthy = [], []
    for index, value in values:
        qpos = qpos0.copy()
        qpos[index] = value
        base.set_state(qpos, qvel0)
        obs.append(base._get_obs())
        unhealthy.append(not base.is_healthy)
    next_obs = torch.as_tensor(np.stack(obs))
    assert fn(next_obs, torch.zeros(len(obs), 1), next_obs).tolist() == unhealthy
    assert any(unhealthy) and not all(unhealthy)


def _mountain_car_batch(env: gym.Env, n: int, seed: int) -> Batch:
    """Transitions from states set near the goal (random actions rarely get there)."""
    env.reset(seed=seed)
    base: Any = env.unwrapped
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        state = np.array([rng.uniform(0.3, 0.6), rng.uniform(-0.07, 0.07)], dtype=np.float32)
        base.state = state.copy()
        action = rng.uniform(-1.0, 1.0, size=1).astype(np.float32)
        next_obs, _, terminated, _, _ = env.step(action)
        rows.append((state, action, next_obs, bool(terminated)))
    return _stack(rows)


@pytest.mark.parametrize("goal_velocity", [0.0, 0.03])
def test_mountain_car_continuous_near_goal(goal_velocity: float) -> None:
    env = _make("MountainCarContinuous-v0", goal_velocity=goal_velocity)
    obs, act, next_obs, terminated = _mountain_car_batch(env, 2000, seed=0)
    fn = termination_fn_for(env)
    assert torch.equal(fn(obs, act, next_obs), terminated)
    assert fn(obs.float(), act.float(), next_obs.float()).equal(terminated)
    assert 0 < int(terminated.sum()) < len(terminated)


def test_mountain_car_compares_like_the_env_in_float32() -> None:
    """float32(0.45) is below the float64 0.45, yet the env (float32 state) counts it as at goal."""
    env = _make("MountainCarContinuous-v0")
    fn = termination_fn_for(env)
    at_goal = float(np.float32(0.45))
    below = float(np.nextafter(np.float32(0.45), np.float32(0)))
    next_obs = torch.tensor([[at_goal, 0.0], [below, 0.0], [at_goal, -1e-9], [0.6, 0.07]])
    expected = [bool(np.float32(p) >= 0.45 and np.float32(v) >= 0) for p, v in next_obs.tolist()]
    assert expected == [True, False, False, True]
    for dtype in (torch.float32, torch.float64):
        x = next_obs.to(dtype)
        assert fn(x, torch.zeros(4, 1), x).tolist() == expected


@pytest.mark.parametrize("env_id", COVERED)
def test_dtype_shape_and_batch_handling(env_id: str) -> None:
    env = _make(env_id)
    fn = termination_fn_for(env)
    obs_dim, act_dim = _dim(env.observation_space), _dim(env.action_space)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        obs = torch.randn(7, obs_dim, generator=g).to(dtype)
        act = torch.randn(7, act_dim, generator=g).to(dtype)
        out = fn(obs, act, obs)
        assert out.dtype == torch.bool and out.shape == (7,)
    assert fn(obs[:0], act[:0], obs[:0]).shape == (0,)
    with pytest.raises(ValueError, match=env_id):
        fn(obs[:, :-1], act, obs[:, :-1])


def test_nan_observation_terminates_where_the_env_would() -> None:
    for env_id in ["Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5", "InvertedPendulum-v5"]:
        env = _make(env_id)
        obs, act, next_obs, _ = rollout(env, 1, seed=0)
        assert not bool(termination_fn_for(env)(obs, act, next_obs)[0])
        bad = next_obs.clone()
        bad[0, 0] = float("nan")
        assert bool(termination_fn_for(env)(obs, act, bad)[0]), env_id


def test_registry_covers_the_benchmark_envs() -> None:
    assert set(COVERED) <= set(TERMINATIONS)
    for description, factory in TERMINATIONS.values():
        assert description and "\n" not in description and callable(factory)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pusher-v5"])
def test_unknown_env_is_a_clear_error(env_id: str) -> None:
    env = _make(env_id)
    with pytest.raises(UnsupportedEnvError, match=env_id) as info:
        termination_fn_for(env)
    assert "Hopper-v5" in str(info.value)


def test_env_without_spec_is_a_clear_error() -> None:
    base = _make("Hopper-v5").unwrapped
    base.spec = None
    with pytest.raises(UnsupportedEnvError, match="HopperEnv"):
        termination_fn_for(base)


def test_wrapper_changing_the_observation_is_refused() -> None:
    env = gym.wrappers.FlattenObservation(
        gym.wrappers.FrameStackObservation(_make("Hopper-v5"), stack_size=2)
    )
    with pytest.raises(UnsupportedEnvError, match="wrapper"):
        termination_fn_for(env)


def test_register_termination_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="Hopper-v5"):
        register_termination("Hopper-v5", "again", lambda env: TERMINATIONS["Hopper-v5"][1](env))
    key = "mbrl_bench/TestOnly-v0"
    try:
        register_termination(key, "test", lambda env: TERMINATIONS["Pendulum-v1"][1](env))
        assert TERMINATIONS[key][0] == "test"
        with pytest.raises(ValueError):
            register_termination(key, "test", TERMINATIONS["Pendulum-v1"][1])
    finally:
        TERMINATIONS.pop(key, None)


def test_custom_mujoco_model_shape_is_refused(tmp_path: Path) -> None:
    assets = Path(gymnasium.envs.mujoco.__file__).parent / "assets"
    xml = (assets / "inverted_double_pendulum.xml").read_text()
    xml = xml.replace('name="hinge2" pos="0 0 0"', 'name="hinge2" pos="0 0 0.1"')
    assert 'pos="0 0 0.1"' in xml
    path = tmp_path / "idp.xml"
    path.write_text(xml)
    env = _make("InvertedDoublePendulum-v5", xml_file=str(path))
    with pytest.raises(UnsupportedEnvError, match="hinges not at their body origins"):
        termination_fn_for(env)
