"""Making environments from suite entries, checking their spaces, and saving their exact state.

Our own environments are registered with gymnasium under the ``mbrl_bench/`` namespace when this
module is imported. :func:`get_env_state` / :func:`set_env_state` capture everything needed to
continue a training episode bit for bit after a resume: for MuJoCo tasks the integration state
(``mj_getState`` with ``mjSTATE_INTEGRATION``), for classic-control and our own tasks the
``state`` array, for gymnasium's toy-text tasks (CliffWalking, FrozenLake, Taxi) and our Dyna maze
the current cell ``s`` and the few attributes their ``step`` reads; in every case the
environment's ``np_random`` and the time limit's elapsed steps.
(``copy.deepcopy`` of a MuJoCo env does not reproduce its trajectory: see DESIGN.md §8.)
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np

from mbrl_bench.errors import UnsupportedEnvError

OUR_ENVS: dict[str, tuple[str, int | None]] = {
    "mbrl_bench/PointMass-v0": ("mbrl_bench.envs.point_mass:PointMassEnv", 50),
    "mbrl_bench/DynaMaze-v0": ("mbrl_bench.envs.dyna_maze:DynaMazeEnv", None),
    "mbrl_bench/ContinuousCartPole-v0": ("mbrl_bench.envs.cartpole:ContinuousCartPoleEnv", 200),
}
"""Our environments: id -> (entry point, time limit in steps or None)."""

for _id, (_entry, _steps) in OUR_ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, max_episode_steps=_steps)

SpaceKind = Literal["box", "discrete"]


def make_env(env_id: str, kwargs: dict[str, Any] | None = None) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` with errors that say what went wrong."""
    if env_id not in gym.registry:
        raise UnsupportedEnvError(f"unknown environment id {env_id!r} (not in gymnasium's "
                                  "registry)")
    try:
        return gym.make(env_id, **(kwargs or {}))
    except TypeError as e:
        raise UnsupportedEnvError(f"{env_id}: bad make kwargs {kwargs!r} ({e})") from e
    except Exception as e:  # e.g. an xml_file that does not exist: the env's own error
        raise UnsupportedEnvError(f"{env_id}: gymnasium.make failed with make kwargs "
                                  f"{kwargs!r}: {type(e).__name__}: {e}") from e


def check_spaces(env: gym.Env, kind: SpaceKind) -> None:
    """Raise :class:`UnsupportedEnvError` unless the env's spaces suit a loop of ``kind``.

    ``box``: flat continuous Box observations and bounded continuous Box actions.
    ``discrete``: Discrete observations and actions.
    """
    env_id = env.spec.id if env.spec else type(env).__name__
    obs, act = env.observation_space, env.action_space
    if kind == "box":
        if not (isinstance(obs, gym.spaces.Box) and len(obs.shape) == 1):
            raise UnsupportedEnvError(f"{env_id}: needs a flat Box observation space, has {obs}")
        if not (isinstance(act, gym.spaces.Box) and len(act.shape) == 1):
            raise UnsupportedEnvError(f"{env_id}: needs a continuous Box action space, has {act}")
        if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
            raise UnsupportedEnvError(f"{env_id}: action space must be bounded, has {act}")
    else:
        if not isinstance(obs, gym.spaces.Discrete) or not isinstance(act, gym.spaces.Discrete):
            raise UnsupportedEnvError(
                f"{env_id}: a tabular loop needs Discrete observations and actions, "
                f"has {obs}, {act}"
            )


def space_kind(env: gym.Env) -> SpaceKind | None:
    """The kind of loop whose spaces ``env`` has (see :func:`check_spaces`), or None."""
    kinds: tuple[SpaceKind, ...] = ("box", "discrete")
    for kind in kinds:
        try:
            check_spaces(env, kind)
        except UnsupportedEnvError:
            continue
        return kind
    return None


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.wrappers.TimeLimit):
            return e
        e = e.env
    return None


DISCRETE_STATE = ("s", "lastaction", "fickle_step", "taxi_orientation")
"""Attributes that make up a toy-text env's state (those it has): the current cell, and what
Taxi's ``step`` and rendering read."""


def _plain(value: Any) -> int | bool | None:
    """An attribute of :data:`DISCRETE_STATE` as plain data (numpy scalars are not)."""
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    return int(value)


def get_env_state(env: gym.Env) -> dict[str, Any] | None:
    """Everything needed to continue the current episode exactly, as plain data; None if unknown."""
    base: Any = env.unwrapped
    out: dict[str, Any] = {"np_random": base.np_random.bit_generator.state}
    limit = _time_limit(env)
    out["elapsed_steps"] = getattr(limit, "_elapsed_steps", None) if limit else None
    try:
        import mujoco
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    except ImportError:  # pragma: no cover - mujoco is a dependency
        MujocoEnv = ()  # type: ignore[assignment,misc]
    if isinstance(base, MujocoEnv):
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(base.model, spec), dtype=np.float64)
        mujoco.mj_getState(base.model, base.data, state, spec)
        out["mujoco"] = state.tolist()
        return out
    if isinstance(getattr(base, "state", None), np.ndarray | tuple | list):
        out["state"] = np.asarray(base.state, dtype=np.float64).tolist()
        return out
    if isinstance(getattr(base, "s", None), int | np.integer):
        out["discrete"] = {k: _plain(getattr(base, k)) for k in DISCRETE_STATE if hasattr(base, k)}
        return out
    return None


def set_env_state(env: gym.Env, saved: dict[str, Any]) -> None:
    """Restore what :func:`get_env_state` captured (the env must have been reset once)."""
    base: Any = env.unwrapped
    base.np_random.bit_generator.state = saved["np_random"]
    limit = _time_limit(env)
    if limit is not None and saved.get("elapsed_steps") is not None:
        limit._elapsed_steps = saved["elapsed_steps"]
    if "mujoco" in saved:
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(base.model, base.data, np.asarray(saved["mujoco"]), spec)
        mujoco.mj_forward(base.model, base.data)
    elif "state" in saved:
        base.state = np.asarray(saved["state"], dtype=np.float64)
    elif "discrete" in saved:
        for key, value in saved["discrete"].items():
            setattr(base, key, value)


def _register_our_terminations() -> None:
    from mbrl_bench.envs.cartpole import cartpole_termination
    from mbrl_bench.envs.point_mass import point_mass_termination
    from mbrl_bench.envs.termination import TERMINATIONS, register_termination

    if "mbrl_bench/PointMass-v0" not in TERMINATIONS:
        register_termination("mbrl_bench/PointMass-v0", "leaves the box |x|, |y| <= 2",
                             point_mass_termination)
    if "mbrl_bench/ContinuousCartPole-v0" not in TERMINATIONS:
        register_termination("mbrl_bench/ContinuousCartPole-v0", "|x| > 2.4 or |theta| > 12 deg",
                             cartpole_termination)


_register_our_terminations()
