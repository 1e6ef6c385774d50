"""A batched environment whose dynamics are a fitted :class:`ProbabilisticEnsemble`.

:class:`ModelEnv` turns a model, a termination function and optionally a known reward function
into a batched environment: ``reset(obs)`` then repeated ``step(act)``. How the ensemble is used
for each row is the *propagation* mode (PETS terminology, Chua et al. 2018):

``random_member`` (TS-1)
    Every step each row draws a member uniformly from all ``E`` members (with replacement).
``fixed_member`` (TS-∞)
    Each row gets a member at :meth:`ModelEnv.reset` and keeps it for every step. By default the
    assignment is balanced and random: a random permutation of ``arange(B) % E``, so every member
    gets ``floor(B/E)`` or ``ceil(B/E)`` rows. Pass ``members=`` to choose it, e.g.
    ``torch.arange(B) % E`` for PETS particles laid out candidate-major (row ``c * P + p``): with
    ``P`` a multiple of ``E`` every candidate is then evaluated by the same members.
``mean``
    Every member predicts every row; the step uses the mean over members of the means and, with
    ``sample``, samples ``N(mean of means, mean of variances)`` — the average aleatoric variance,
    i.e. the member disagreement is *not* added.
``elites``
    Like ``random_member`` but the member is drawn among the model's elites (``elite_idx``), as in
    the official MBPO rollouts.

Only ``elites`` restricts itself to the elites; the other modes use all ``E`` members.

Efficiency: in the per-row member modes each member computes only its own rows. Rows are grouped
by member into a padded ``K x L`` layout (``K`` members used, ``L`` = size of the largest group;
padding rows are zeros and their outputs are dropped) and the ensemble runs once on it, one
batched matmul per layer. The work is ``K * L`` rows instead of ``E * B`` for "all members on all
rows": exactly ``B`` for balanced ``fixed_member`` assignments and ``B`` plus a few standard
deviations of a multinomial for the random modes. For ``fixed_member`` the grouping (one sort) is
built once at reset; the random modes sort ``B`` integers per step, which is negligible next to
the MLP. Only ``mean`` computes all members on all rows, because it needs them all.

The caller tracks which rows have terminated; :class:`ModelEnv` only returns the flags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from mbrl_bench.devices import randint, randn, randperm
from mbrl_bench.errors import NonFiniteError
from mbrl_bench.models.ensemble import ProbabilisticEnsemble

Propagation = Literal["random_member", "fixed_member", "mean", "elites"]
PROPAGATIONS: tuple[str, ...] = get_args(Propagation)

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(obs B x O, act B x A, next_obs B x O) -> terminated bool B``."""
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(obs B x O, act B x A, next_obs B x O) -> reward float B``."""


@dataclass(frozen=True)
class ModelState:
    """The batch a :class:`ModelEnv` is at.

    ``obs``: ``B x O``. ``members``: ``B`` (long) — for ``fixed_member`` the assignment made at
    reset; for ``random_member`` / ``elites`` the members the latest step used (None right after
    reset); always None for ``mean``.
    """

    obs: torch.Tensor
    members: torch.Tensor | None = None


class MemberLayout:
    """Groups ``B`` rows by slot (``0..K-1``) into a padded ``K x L`` layout and back.

    ``L`` is the size of the largest group; padded positions are filled with zeros.
    """

    def __init__(self, slots: torch.Tensor, num_slots: int) -> None:
        if slots.dim() != 1:
            raise ValueError(f"slots must be 1-D, got shape {tuple(slots.shape)}")
        b = slots.shape[0]
        counts = torch.bincount(slots, minlength=num_slots)
        order = torch.argsort(slots, stable=True)
        sorted_slots = slots[order]
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(b, device=slots.device) - starts[sorted_slots]
        self.num_slots = num_slots
        self.group_size = int(counts.max()) if b > 0 else 0
        flat = torch.empty_like(slots)
        flat[order] = sorted_slots * self.group_size + pos
        self.flat = flat
        """``B``: position of each row in the flattened ``K * L`` layout."""

    def group(self, x: torch.Tensor) -> torch.Tensor:
        """``B x D -> K x L x D``."""
        out = x.new_zeros(self.num_slots * self.group_size, x.shape[-1])
        out[self.flat] = x
        return out.view(self.num_slots, self.group_size, x.shape[-1])

    def ungroup(self, y: torch.Tensor) -> torch.Tensor:
        """``K x L x D -> B x D``."""
        return y.reshape(self.num_slots * self.group_size, y.shape[-1])[self.flat]


class ModelEnv:
    """Batched environment driven by ``model`` (see the module docstring for propagation modes).

    ``termination_fn(obs, act, next_obs) -> bool B`` decides termination; ``reward_fn`` (same
    arguments, ``-> float B``), when given, replaces the model's predicted reward. All sampling
    (members, Gaussian noise) uses ``generator``.
    """

    def __init__(
        self,
        model: ProbabilisticEnsemble,
        termination_fn: TerminationFn,
        reward_fn: RewardFn | None = None,
        propagation: Propagation = "random_member",
        *,
        generator: torch.Generator,
    ) -> None:
        if propagation not in PROPAGATIONS:
            raise ValueError(
                f"propagation: expected one of {', '.join(PROPAGATIONS)}, got {propagation!r}"
            )
        self.model = model
        self.termination_fn = termination_fn
        self.reward_fn = reward_fn
        self.propagation: Propagation = propagation
        self.generator = generator
        self._state: ModelState | None = None
        self._layout: MemberLayout | None = None

    @property
    def state(self) -> ModelState:
        """The current batch; raises RuntimeError before :meth:`reset`."""
        if self._state is None:
            raise RuntimeError("ModelEnv.step called before reset")
        return self._state

    def _randint(self, high: int, n: int) -> torch.Tensor:
        return randint(high, (n,), self.generator, self.model.device)

    def reset(self, obs: torch.Tensor, members: torch.Tensor | None = None) -> ModelState:
        """Start ``B`` rows at ``obs`` (``B x O``).

        ``members`` (``B`` ints in ``[0, E)``) sets the ``fixed_member`` assignment; by default it
        is balanced and random (see the module docstring). Other modes take no ``members``.
        """
        model = self.model
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=model.device)
        if obs_t.dim() != 2 or obs_t.shape[1] != model.obs_dim:
            raise ValueError(f"reset: expected obs B x {model.obs_dim}, got {tuple(obs_t.shape)}")
        b, E = obs_t.shape[0], model.ensemble_size
        self._layout = None
        if self.propagation == "fixed_member":
            if members is None:
                perm = randperm(b, self.generator, model.device)
                members = torch.empty(b, dtype=torch.long, device=model.device)
                members[perm] = torch.arange(b, device=model.device) % E
            else:
                members = torch.as_tensor(members, dtype=torch.long, device=model.device)
                if members.shape != (b,) or (b > 0 and (members.min() < 0 or members.max() >= E)):
                    raise ValueError(f"reset: members must be {b} integers in [0, {E})")
            self._layout = MemberLayout(members, E)
        elif members is not None:
            raise ValueError(f"reset: members is only used by fixed_member, not {self.propagation}")
        self._state = ModelState(obs=obs_t, members=members)
        return self._state

    def _predict(
        self, obs: torch.Tensor, act: torch.Tensor, check_finite: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-row mean and variance ``B x (O+1)`` and the member each row used (or None)."""
        model, b = self.model, obs.shape[0]
        if self.propagation == "mean":
            mean, var = model.predict(obs, act, check_finite=check_finite)
            return mean.mean(dim=0), var.mean(dim=0), None
        subset: torch.Tensor | None = None
        if self.propagation == "fixed_member":
            layout, members = self._layout, self.state.members
            assert layout is not None and members is not None
        elif self.propagation == "random_member":
            members = self._randint(model.ensemble_size, b)
            layout = MemberLayout(members, model.ensemble_size)
        else:  # elites
            subset = model.elite_idx
            slots = self._randint(subset.shape[0], b)
            members = subset[slots]
            layout = MemberLayout(slots, subset.shape[0])
        mean, var = model.predict(layout.group(obs), layout.group(act), members=subset,
                                  check_finite=check_finite)
        return layout.ungroup(mean), layout.ungroup(var), members

    def step(
        self, act: torch.Tensor, sample: bool = True, check_finite: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Apply ``act`` (``B x A``) -> ``(next_obs B x O, reward B, terminated bool B)``.

        ``sample``: draw ``[Δobs, reward]`` from the predicted Gaussian (else use its mean).
        Raises :class:`NonFiniteError` if the next observation or reward is not finite, unless
        ``check_finite`` is false: then non-finite rows are returned as they are (and stay
        confined to their rows) for the caller to handle, as a planner's objective does.
        """
        model, state = self.model, self.state
        obs = state.obs
        b, od = obs.shape[0], model.obs_dim
        act_t = torch.as_tensor(act, dtype=torch.float32, device=model.device)
        if act_t.shape != (b, model.act_dim):
            raise ValueError(f"step: expected act {b} x {model.act_dim}, got {tuple(act_t.shape)}")
        mean, var, members = self._predict(obs, act_t, check_finite)
        if sample and not model.deterministic:
            noise = randn(mean.shape, self.generator, mean.device)
            out = mean + var.sqrt() * noise
        else:
            out = mean
        next_obs = obs + out[:, :od]
        if self.reward_fn is not None:
            reward = torch.as_tensor(self.reward_fn(obs, act_t, next_obs), device=model.device)
            if reward.shape != (b,):
                raise ValueError(f"reward_fn returned shape {tuple(reward.shape)}, expected ({b},)")
        else:
            reward = out[:, od]
        terminated = torch.as_tensor(self.termination_fn(obs, act_t, next_obs), device=model.device)
        if terminated.shape != (b,):
            raise ValueError(
                f"termination_fn returned shape {tuple(terminated.shape)}, expected ({b},)"
            )
        if check_finite and not (bool(torch.isfinite(next_obs).all())
                                 and bool(torch.isfinite(reward).all())):
            raise NonFiniteError("model rollout produced a NaN/inf observation or reward")
        self._state = ModelState(obs=next_obs, members=members)
        return next_obs, reward, terminated.bool()
