"""Model-trust diagnostics from MBPO (Janner et al. 2019), as pure functions.

The return of a policy in the real environment ``η`` is bounded below by its return in the
model ``η̂`` minus a penalty (Theorem 4.1)::

    C(ε_m, ε_π) = 2 γ r_max (ε_m + 2 ε_π) / (1 - γ)^2 + 4 r_max ε_π / (1 - γ)

and, for k-step branched rollouts, by the branched return minus (the form of the paper's
Theorem 4.2, with the model error ε_m measured under the data-collecting policy; DESIGN.md §5)::

    2 r_max [ γ^(k+1) ε_π / (1 - γ)^2 + (γ^k + 2) ε_π / (1 - γ) + k (ε_m + 2 ε_π) / (1 - γ) ]

ε_π is the policy shift (a total-variation distance between the policy that collected the data
and the current one), ε_m the model error. In practice (DESIGN.md §5) ε_m is estimated by the
model's error on the newest real data (before it is trained on it) and ε_π from the KL between
the two policies through Pinsker's inequality, TV ≤ sqrt(KL / 2). The theorems take ε_π as a
maximum over states; the logs carry the mean over the newest real states (``eps_pi``, used in
the bounds: a typical-case reading) and the maximum (``eps_pi_max``).
"""

from __future__ import annotations

import math

import torch


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor,
                log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last dimension: ``B x A -> B``.

    For tanh-squashed Gaussian policies this is also the KL of the squashed distributions:
    KL is invariant under the same invertible map applied to both.
    """
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5
    return kl.sum(-1)


def pinsker_tv(kl: torch.Tensor) -> torch.Tensor:
    """Upper bound on total variation from KL: ``sqrt(KL / 2)``, capped at 1 (same shape)."""
    return torch.sqrt(kl.clamp_min(0) / 2).clamp_max(1.0)


def mbpo_bound(eps_m: float, eps_pi: float, gamma: float, r_max: float) -> float:
    """Penalty C(ε_m, ε_π) of MBPO's Theorem 4.1 (full model rollouts)."""
    g = gamma
    return 2 * g * r_max * (eps_m + 2 * eps_pi) / (1 - g) ** 2 + 4 * r_max * eps_pi / (1 - g)


def branched_bound(eps_m: float, eps_pi: float, gamma: float, r_max: float, k: int) -> float:
    """Penalty for k-step branched rollouts (MBPO's Theorem 4.2 form)."""
    g = gamma
    return 2 * r_max * (
        g ** (k + 1) * eps_pi / (1 - g) ** 2
        + (g**k + 2) * eps_pi / (1 - g)
        + k * (eps_m + 2 * eps_pi) / (1 - g)
    )


def rollout_length(epoch: int, schedule: tuple[int, int, int, int]) -> int:
    """MBPO's rollout length k at ``epoch`` for ``[epoch_a, epoch_b, k_min, k_max]``:
    k_min until epoch_a, linear to k_max at epoch_b, k_max after."""
    epoch_a, epoch_b, k_min, k_max = schedule
    if epoch <= epoch_a:
        return k_min
    frac = min((epoch - epoch_a) / max(epoch_b - epoch_a, 1), 1.0)
    return int(frac * (k_max - k_min) + k_min)


def finite_or_nan(x: float) -> float:
    return x if math.isfinite(x) else math.nan
