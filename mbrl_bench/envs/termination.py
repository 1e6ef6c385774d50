"""Termination functions on batched tensors, for ending imagined (model) rollouts.

A learned model predicts observations, so each rule here is the environment's own termination
rule (read from the installed gymnasium source) rewritten in terms of the observation alone, with
the parameters it needs read from the actual env instance, so that ``gymnasium.make`` kwargs
(healthy ranges, ``terminate_when_unhealthy``, observation-layout options, goal position /
velocity, a custom ``xml_file`` for the double pendulum) are respected.

Interface::

    fn = termination_fn_for(env)          # env made with gymnasium.make
    done = fn(obs, action, next_obs)      # (B x O, B x A, B x O) -> bool B

The rule is evaluated on ``next_obs`` only; ``obs`` and ``action`` are part of the signature so
that every recipe can call every function the same way. Any leading batch shape works
(``(*B, O) -> (*B,)``); ``O`` must be the env's observation size, else :class:`ValueError`.
The observations must be the env's own (unnormalised) observations.

Envs that never terminate (HalfCheetah, Swimmer, Reacher, Pendulum) return all ``False``
explicitly: that *is* their rule. An env with no registered rule is an
:class:`~mbrl_bench.errors.UnsupportedEnvError` from :func:`termination_fn_for`, never a silent
"never terminates".

Where the env's rule looks at something the observation does not carry exactly, the gap is
stated in the factory's docstring (Hopper: velocities clipped to +-10 in the observation;
Ant: finiteness of the excluded x/y; InvertedDoublePendulum: ``site_xpos`` comes from the last
RK4 stage, not the final state; MountainCarContinuous: float32 rounding of the state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mbrl_bench.errors import UnsupportedEnvError

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(obs B x O, action B x A, next_obs B x O) -> terminated, bool tensor of shape B.

Decides on next_obs.
"""

TerminationFactory = Callable[[gym.Env], TerminationFn]
"""Builds the :data:`TerminationFn` of one env instance, reading its parameters from
``env.unwrapped``."""

TERMINATIONS: dict[str, tuple[str, TerminationFactory]] = {}
"""Full gymnasium env id (``env.spec.id``) -> (one-line description, factory)."""


def register_termination(env_id: str, description: str, factory: TerminationFactory) -> None:
    """Register ``factory`` as the termination rule of ``env_id``; :class:`ValueError` if taken."""
    if env_id in TERMINATIONS:
        raise ValueError(f"a termination function for {env_id!r} is already registered")
    TERMINATIONS[env_id] = (description, factory)


def termination_fn_for(env: gym.Env) -> TerminationFn:
    """The batched termination function of ``env`` (keyed by ``env.spec.id``).

    Raises :class:`UnsupportedEnvError` naming the id and the supported ids when none is
    registered, or when the env's options make its rule inexpressible from the observation.
    """
    env_id = _env_id(env)
    if env_id is None or env_id not in TERMINATIONS:
        supported = ", ".join(sorted(TERMINATIONS))
        raise UnsupportedEnvError(
            f"no termination function for environment {env_id or type(env.unwrapped).__name__!r}"
            f" (model-based recipes need one); supported: {supported}"
        )
    return TERMINATIONS[env_id][1](env)


# ---------------------------------------------------------------------------------------------
# helpers


def _env_id(env: gym.Env) -> str | None:
    spec = env.spec if env.spec is not None else env.unwrapped.spec
    return spec.id if spec is not None else None


def _name(env: gym.Env) -> str:
    return _env_id(env) or type(env.unwrapped).__name__


def _param(env: gym.Env, attr: str) -> Any:
    """``env.unwrapped.<attr>``, or :class:`UnsupportedEnvError` if this env has no such thing."""
    base = env.unwrapped
    if not hasattr(base, attr):
        raise UnsupportedEnvError(
            f"{_name(env)}: {type(base).__name__} has no attribute {attr!r}; its termination"
            " rule was written for the gymnasium implementation of this id"
        )
    return getattr(base, attr)


def _obs_dim(env: gym.Env) -> int:
    """The env's own observation size; refuses wrappers that change the observation shape."""
    own = env.unwrapped.observation_space.shape
    seen = env.observation_space.shape
    if own is None or len(own) != 1:
        raise UnsupportedEnvError(f"{_name(env)}: needs a flat observation, has shape {own}")
    if seen != own:
        raise UnsupportedEnvError(
            f"{_name(env)}: a wrapper changes the observation shape from {own} to {seen};"
            " termination rules are written for the env's own observation"
        )
    return int(own[0])


def _check(next_obs: torch.Tensor, obs_dim: int, env_id: str) -> None:
    if next_obs.ndim < 1 or next_obs.shape[-1] != obs_dim:
        raise ValueError(
            f"{env_id}: next_obs must have shape (B, {obs_dim}), got {tuple(next_obs.shape)}"
        )


def _open(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``lo < x < hi`` elementwise (False for NaN, as in numpy)."""
    return (x > lo) & (x < hi)


def _closed(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``lo <= x <= hi`` elementwise (False for NaN, as in numpy)."""
    return (x >= lo) & (x <= hi)


def _range(value: Any) -> tuple[float, float]:
    lo, hi = value
    return float(lo), float(hi)


def _never_fn(obs_dim: int, env_id: str) -> TerminationFn:
    def never(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x O, B x A, B x O) -> bool B, all False."""
        _check(next_obs, obs_dim, env_id)
        return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)

    return never


def _skipped_qpos(env: gym.Env, n: int) -> int:
    """How many leading qpos entries (x, or x and y) the observation omits: ``n`` or 0."""
    return n if bool(_param(env, "_exclude_current_positions_from_observation")) else 0


# ---------------------------------------------------------------------------------------------
# rules


def never_terminates(env: gym.Env) -> TerminationFn:
    """HalfCheetah, Swimmer, Reacher, Pendulum: ``step`` always returns ``terminated=False``.

    Returns ``(B x O, B x A, B x O) -> bool B`` of all False.
    """
    return _never_fn(_obs_dim(env), _name(env))


def hopper_termination(env: gym.Env) -> TerminationFn:
    """Hopper-v5: unhealthy iff not (state in open ``healthy_state_range`` elementwise, z in
    open ``healthy_z_range``, torso angle in open ``healthy_angle_range``).

    ``state = state_vector()[2:] = qpos[2:] ++ qvel`` is ``next_obs[..., 2 - s:]`` and
    z, angle are ``next_obs[..., 1 - s]``, ``next_obs[..., 2 - s]``, where ``s = 1`` when
    ``exclude_current_positions_from_observation`` (the default) and 0 otherwise.
    ``(B x O, B x A, B x O) -> bool B``.

    Gap: the observation clips velocities to [-10, 10] while the env checks the unclipped
    ``qvel``. With a ``healthy_state_range`` inside (-10, 10) the rule is exact; with a wider one
    (the default is (-100, 100)) a velocity beyond the range is invisible (the observation shows
    +-10), so that rare termination is missed. NaN anywhere terminates, as in the env.
    """
    env_id, obs_dim = _name(env), _obs_dim(env)
    if not bool(_param(env, "_terminate_when_unhealthy")):
        return _never_fn(obs_dim, env_id)
    s = _skipped_qpos(env, 1)
    state_lo, state_hi = _range(_param(env, "_healthy_state_range"))
    z_lo, z_hi = _range(_param(env, "_healthy_z_range"))
    a_lo, a_hi = _range(_param(env, "_healthy_angle_range"))
    z_i, angle_i, state_from = 1 - s, 2 - s, 2 - s

    def hopper(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x O, B x A, B x O) -> bool B."""
        _check(next_obs, obs_dim, env_id)
        healthy = (
            _open(next_obs[..., state_from:], state_lo, state_hi).all(dim=-1)
            & _open(next_obs[..., z_i], z_lo, z_hi)
            & _open(next_obs[..., angle_i], a_lo, a_hi)
        )
        return ~healthy

    return hopper


def walker2d_termination(env: gym.Env) -> TerminationFn:
    """Walker2d-v5: unhealthy iff not (z in open ``healthy_z_range`` and angle in open
    ``healthy_angle_range``), with ``z, angle = qpos[1:3]`` = ``next_obs[..., 1 - s]``,
    ``next_obs[..., 2 - s]`` (``s = 1`` when x is excluded, the default). Exact (NaN
    terminates, as in the env). ``(B x O, B x A, B x O) -> bool B``.
    """
    env_id, obs_dim = _name(env), _obs_dim(env)
    if not bool(_param(env, "_terminate_when_unhealthy")):
        return _never_fn(obs_dim, env_id)
    s = _skipped_qpos(env, 1)
    z_lo, z_hi = _range(_param(env, "_healthy_z_range"))
    a_lo, a_hi = _range(_param(env, "_healthy_angle_range"))
    z_i, angle_i = 1 - s, 2 - s

    def walker2d(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x O, B x A, B x O) -> bool B."""
        _check(next_obs, obs_dim, env_id)
        healthy = _open(next_obs[..., z_i], z_lo, z_hi) & _open(next_obs[..., angle_i], a_lo, a_hi)
        return ~healthy

    return walker2d


def ant_termination(env: gym.Env) -> TerminationFn:
    """Ant-v5: unhealthy iff not (``state_vector()`` all finite and ``min_z <= qpos[2] <= max_z``
    with the *closed* ``healthy_z_range``).

    The observation is ``qpos[s:] ++ qvel (++ clipped cfrc_ext[1:] if
    include_cfrc_ext_in_observation)`` with ``s = 2`` when x, y are excluded (the default), so
    z is ``next_obs[..., 2 - s]`` and the finiteness check covers ``next_obs[..., :nq - s + nv]``
    (the contact forces are not part of the env's check). ``(B x O, B x A, B x O) -> bool B``.

    Gap: with x and y excluded their finiteness cannot be seen; a non-finite x or y with every
    other coordinate finite (not a state the simulator produces in practice) is missed.
    """
    env_id, obs_dim = _name(env), _obs_dim(env)
    if not bool(_param(env, "_terminate_when_unhealthy")):
        return _never_fn(obs_dim, env_id)
    s = _skipped_qpos(env, 2)
    model = _param(env, "model")
    n_state = int(model.nq) - s + int(model.nv)
    z_lo, z_hi = _range(_param(env, "_healthy_z_range"))
    z_i = 2 - s

    def ant(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x O, B x A, B x O) -> bool B."""
        _check(next_obs, obs_dim, env_id)
        finite = torch.isfinite(next_obs[..., :n_state]).all(dim=-1)
        return ~(finite & _closed(next_obs[..., z_i], z_lo, z_hi))

    return ant


def humanoid_termination(env: gym.Env) -> TerminationFn:
    """Humanoid-v5: unhealthy iff not ``min_z < qpos[2] < max_z`` (open ``healthy_z_range``).

    The observation starts with ``qpos[s:]`` (``s = 2`` when x, y are excluded, the default)
    whatever the ``include_*_in_observation`` flags, so z is ``next_obs[..., 2 - s]``. Exact
    (NaN terminates, as in the env). ``(B x O, B x A, B x O) -> bool B``.
    """
    env_id, obs_dim = _name(env), _obs_dim(env)
    if not bool(_param(env, "_terminate_when_unhealthy")):
        return _never_fn(obs_dim, env_id)
    s = _skipped_qpos(env, 2)
    z_lo, z_hi = _range(_param(env, "_healthy_z_range"))
    z_i = 2 - s

    def humanoid(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B x O, B x A, B x O) -> bool B."""
        _check(next_obs, obs_dim, env_id)
        return ~_open(next_obs[..., z_i], z_lo, z_hi)

    return humanoid


INVERTED_PENDULUM_MAX_ANGLE = 0.2
"""InvertedPendulum-v5 terminates when ``|hinge angle| > 0.2`` (a constant in its ``step``)."""


def inverted_pendulum_termination(env: gym.Env) -> TerminationFn:
    """InvertedPendulum-v5: terminated iff any observation entry is non-finite or
    ``|next_obs[..., 1]| > 0.2`` (the pole angle). Exact: the env decides on the same
    observation. ``(B x 4, B x 1, B x 4) -> bool B``.
    """
    env_id, obs_dim = _name(env), _obs_dim(env)

    def inverted_pendulum(
        obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor
    ) -> torch.Tensor:
        """(B x O, B x A, B x O) -> bool B."""
        _check(next_obs, obs_dim, env_id)
        finite = torch.isfinite(next_obs).all(dim=-1)
        return ~finite | (next_obs[..., 1].abs() > INVERTED_PENDULUM_MAX_ANGLE)

    return inverted_pendulum


def _double_pendulum_tip_height(env: gym.Env) -> Callable[[torch.Tensor], torch.Tensor]:
    """World z of the ``tip`` site (``site_xpos[0][2]``) from an InvertedDoublePendulum obs.

    The observation is ``[x, sin q1, sin q2, cos q1, cos q2, qvel (3), qfrc_constraint[0]]``.
    With identity body orientations and hinges about +y, rotating a local offset ``(px, pz)`` by
    ``q`` gives world ``z = -px sin q + pz cos q``, so

        tip_z = cart_z + slider_axis_z * x + pole_z
                + (-p2x sin q1 + p2z cos q1) + (-tx sin(q1+q2) + tz cos(q1+q2)),

    where ``p2`` is pole2's position in the pole frame and ``t`` the tip site's position in the
    pole2 frame. The constants are read from the env's MuJoCo model (the default XML gives
    ``0.6 cos q1 + 0.6 cos(q1 + q2)``); a model of another shape is an UnsupportedEnvError.
    Returns a function ``(*B, 9) -> (*B,)``.
    """
    model = _param(env, "model")
    name = _name(env)

    def refuse(why: str) -> UnsupportedEnvError:
        return UnsupportedEnvError(
            f"{name}: cannot express the tip height from the observation for this model ({why});"
            " expected a world-parented cart on a slider with two +y hinges (pole, pole2) and"
            " site 0 on pole2, all with identity orientations and hinges at the body origins"
        )

    if int(model.nq) != 3 or int(model.nsite) < 1:
        raise refuse(f"nq={int(model.nq)}, nsite={int(model.nsite)}")
    jtype = [int(t) for t in model.jnt_type]
    slide, hinge = 2, 3  # mjtJoint: mjJNT_SLIDE, mjJNT_HINGE
    if jtype != [slide, hinge, hinge]:
        raise refuse(f"joint types {jtype}")
    cart, pole, pole2 = (int(b) for b in model.jnt_bodyid)
    parents = [int(model.body_parentid[b]) for b in (cart, pole, pole2)]
    if parents != [0, cart, pole] or int(model.site_bodyid[0]) != pole2:
        raise refuse("unexpected body tree")
    identity = np.array([1.0, 0.0, 0.0, 0.0])
    if not all(np.allclose(model.body_quat[b], identity) for b in (cart, pole, pole2)):
        raise refuse("rotated bodies")
    if not all(np.allclose(model.jnt_axis[j], [0.0, 1.0, 0.0]) for j in (1, 2)):
        raise refuse("hinge axes are not +y")
    if not all(np.allclose(model.jnt_pos[j], 0.0) for j in (1, 2)):
        raise refuse("hinges not at their body origins")

    base_z = float(model.body_pos[cart][2] + model.body_pos[pole][2])
    slide_z = float(model.jnt_axis[0][2])
    p2x, p2z = float(model.body_pos[pole2][0]), float(model.body_pos[pole2][2])
    tx, tz = float(model.site_pos[0][0]), float(model.site_pos[0][2])

    def tip_height(next_obs: torch.Tensor) -> torch.Tensor:
        """(*B, 9) -> (*B,) world z of the tip."""
        x, s1, s2, c1, c2 = (next_obs[..., i] for i in range(5))
        s12 = s1 * c2 + c1 * s2
        c12 = c1 * c2 - s1 * s2
        return base_z + slide_z * x + (p2z * c1 - p2x * s1) + (tz * c12 - tx * s12)

    return tip_height


INVERTED_DOUBLE_PENDULUM_MIN_TIP_HEIGHT = 1.0
"""InvertedDoublePendulum-v5 terminates when the tip's world z is ``<= 1`` (a constant in its
``step``)."""


def inverted_double_pendulum_termination(env: gym.Env) -> TerminationFn:
    """InvertedDoublePendulum-v5: terminated iff the tip site's height ``y <= 1``.

    The height is rebuilt from the observation's sines and cosines and the model's geometry (see
    :func:`_double_pendulum_tip_height`). ``(B x 9, B x 1, B x 9) -> bool B``.

    Gap: the env reads ``data.site_xpos`` after ``mj_step``, which MuJoCo last computed at the
    final RK4 stage, not at the final ``qpos`` the observation reports. The two heights differ by
    ~1e-5 (median 2e-6, 99.9th percentile 5e-5), and by up to ~1e-2 in a step where the cart
    hits the end of its rail (joint-limit impulse), so a step whose height is that close to 1 can
    be decided differently: about 1 transition in 20,000 under a random policy. The observation
    alone cannot settle those steps, since the env's value depends on the unobserved RK4 stage.
    """
    env_id, obs_dim = _name(env), _obs_dim(env)
    tip_height = _double_pendulum_tip_height(env)

    def inverted_double_pendulum(
        obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor
    ) -> torch.Tensor:
        """(B x O, B x A, B x O) -> bool B."""
        _check(next_obs, obs_dim, env_id)
        # NaN compares False, as ``bool(y <= 1)`` does in the env.
        return tip_height(next_obs) <= INVERTED_DOUBLE_PENDULUM_MIN_TIP_HEIGHT

    return inverted_double_pendulum


def mountain_car_continuous_termination(env: gym.Env) -> TerminationFn:
    """MountainCarContinuous-v0: terminated iff ``position >= goal_position and velocity >=
    goal_velocity`` (``goal_velocity`` is the make kwarg), with ``next_obs = [position,
    velocity]``. ``(B x 2, B x 1, B x 2) -> bool B``.

    The env keeps its state in float32 and (with float32 actions) compares in float32, so both
    sides are compared as float32 here, whatever the dtype of ``next_obs``. Gap: when the env is
    stepped with float64 actions it compares float64 values that it then rounds to float32 for
    the observation, so a state within float32 rounding (~3e-8) of the goal can differ.
    """
    env_id, obs_dim = _name(env), _obs_dim(env)
    goal_pos = float(np.float32(_param(env, "goal_position")))
    goal_vel = float(np.float32(_param(env, "goal_velocity")))

    def mountain_car(
        obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor
    ) -> torch.Tensor:
        """(B x 2, B x A, B x 2) -> bool B."""
        _check(next_obs, obs_dim, env_id)
        state = next_obs.to(torch.float32)
        return (state[..., 0] >= goal_pos) & (state[..., 1] >= goal_vel)

    return mountain_car


for _id, _description, _factory in (
    ("Hopper-v5", "torso z, angle or qpos[2:]/qvel leave their healthy ranges", hopper_termination),
    ("Walker2d-v5", "torso z or angle leave their healthy ranges", walker2d_termination),
    ("Ant-v5", "torso z leaves healthy_z_range or the state is non-finite", ant_termination),
    ("Humanoid-v5", "torso z leaves healthy_z_range", humanoid_termination),
    (
        "InvertedPendulum-v5",
        "pole angle beyond 0.2 rad or a non-finite observation",
        inverted_pendulum_termination,
    ),
    (
        "InvertedDoublePendulum-v5",
        "tip height (from the angles' sin/cos) at or below 1",
        inverted_double_pendulum_termination,
    ),
    ("HalfCheetah-v5", "never terminates", never_terminates),
    ("Swimmer-v5", "never terminates", never_terminates),
    ("Reacher-v5", "never terminates", never_terminates),
    ("Pendulum-v1", "never terminates", never_terminates),
    (
        "MountainCarContinuous-v0",
        "position >= goal_position and velocity >= goal_velocity",
        mountain_car_continuous_termination,
    ),
):
    register_termination(_id, _description, _factory)
