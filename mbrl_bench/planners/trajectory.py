"""Trajectory sampling (PETS, Chua et al. 2018): the return of action sequences in a model.

:func:`trajectory_returns` is the objective a planner maximises. Each of ``C`` candidate
sequences is rolled out from the current observation by ``P`` particles through a
:class:`~mbrl_bench.models.model_env.ModelEnv`, propagated as the model environment says:
TS-∞ (``fixed_member``: each particle keeps one ensemble member for the whole horizon, PETS's
choice and the layout below), TS-1 (``random_member``: a new member every step), ``elites``, or
the members' ``mean`` (PETS's ablations). Rewards are summed up
to and including the step where a particle terminates (nothing after it) and averaged over the
particles.

Layout: rows are candidate-major, row ``c * P + p`` is particle ``p`` of candidate ``c``, and
row ``i`` uses member ``i % E``. When ``P`` is a multiple of ``E`` every candidate is thus
evaluated by the same members, ``P / E`` particles each, so candidates differ by their actions
and the sampling noise only. Each horizon step is one batched forward over all ``C * P`` rows
(the ensemble runs each member on its own rows, in chunks; see ``ProbabilisticEnsemble``).

A particle whose state or reward becomes NaN or infinite while it is alive makes its
candidate's return NaN, which every planner ranks last. (The model environment is asked not
to raise for it: a diverging candidate is information for the planner, not a failed run.)
"""

from __future__ import annotations

import torch

from mbrl_bench.models.ensemble import default_chunk_rows
from mbrl_bench.models.model_env import ModelEnv

PLANNING_CHUNK_ROWS_CPU = 256
"""Rows per member per forward when planning on CPU (``ProbabilisticEnsemble.predict_chunk_rows``).

Measured on one thread, PETS HalfCheetah settings (ensemble 5 x 4x200, 400 candidates x 20
particles, horizon 30, CEM 5 iterations): 4.9 s per plan with 256 or 400 rows, 6.0-6.5 s with
the ensemble's default 1,024 (each layer's ``5 x 256 x 200`` activation, 1 MiB, stays in cache
for the SiLU that follows), on an AVX2 AMD EPYC. Chunking does not change any row's result.
"""
PLANNING_CHUNK_ROWS_CPU_BF16 = 1024
"""The same with ``model.precision = bf16``, whose activations take half the bytes: on an
AVX-512 AMD EPYC with AVX512-BF16, one thread, 3.11 s per plan with 1,024 rows against 3.19 s
with 512 and 3.29 s with 256 (medians of 3, alternating; fp32 there: 5.03 s at 256, 4.92 s at
512, 5.18 s at 1,024)."""


def planning_chunk_rows(device: torch.device, precision: str = "fp32") -> int:
    """Rows per member per forward for planning on ``device`` with the model's ``precision``
    (accelerators: the ensemble's default)."""
    if device.type != "cpu":
        return default_chunk_rows(device)
    return PLANNING_CHUNK_ROWS_CPU_BF16 if precision == "bf16" else PLANNING_CHUNK_ROWS_CPU


def particle_members(candidates: int, particles: int, ensemble_size: int,
                     device: torch.device | None = None) -> torch.Tensor:
    """Member of each row in the candidate-major layout: ``C * P`` longs, row ``i -> i % E``."""
    return torch.arange(candidates * particles, device=device) % ensemble_size


def trajectory_returns(
    model_env: ModelEnv, obs: torch.Tensor, actions: torch.Tensor, particles: int
) -> torch.Tensor:
    """Mean return over ``particles`` TS-∞ particles of each candidate sequence.

    ``obs``: the current observation ``O``; ``actions``: candidates ``C x H x A``. Returns ``C``
    (NaN for a candidate with a diverged particle). ``model_env`` is reset here (its
    generator draws the model's sampling noise and, except for TS-∞, the members).
    """
    if actions.dim() != 3 or obs.dim() != 1:
        raise ValueError(f"expected obs O and actions C x H x A, got {tuple(obs.shape)}, "
                         f"{tuple(actions.shape)}")
    c, horizon, _ = actions.shape
    n = c * particles
    if model_env.propagation == "fixed_member":
        members = particle_members(c, particles, model_env.model.ensemble_size, obs.device)
        model_env.reset(obs.expand(n, -1), members=members)
    else:
        model_env.reset(obs.expand(n, -1))
    total = torch.zeros(n, device=obs.device)
    alive = torch.ones(n, dtype=torch.bool, device=obs.device)
    diverged = torch.zeros(n, dtype=torch.bool, device=obs.device)
    per_row = actions.repeat_interleave(particles, dim=0)  # C*P x H x A, candidate-major
    for t in range(horizon):
        next_obs, reward, terminated = model_env.step(per_row[:, t], sample=True,
                                                      check_finite=False)
        finite = torch.isfinite(reward) & torch.isfinite(next_obs).all(dim=-1)
        diverged |= alive & ~finite
        total += torch.where(alive, reward, 0.0)
        alive &= ~terminated
    total = torch.where(diverged, torch.nan, total)
    return total.view(c, particles).mean(dim=1)
