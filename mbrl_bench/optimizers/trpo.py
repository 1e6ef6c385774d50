"""Trust region policy optimization (Schulman et al. 2015), as SLBO and ME-TRPO use it.

One :meth:`TRPO.update` is one policy iteration on a batch of whole trajectories
(:class:`~mbrl_bench.buffer.Trajectories`, real or imagined):

1. **advantages**: GAE(λ) with the value-function baseline, bootstrapping from ``V(next_obs)``
   at every step that is not terminal (a time-limit or batch end is not a termination);
   advantages are standardised over the batch;
2. **policy step**: the surrogate ``mean(ratio * A) + ent_coef * entropy``; its gradient ``g``;
   the natural direction ``s ≈ F⁻¹ g`` by conjugate gradient on Fisher-vector products (the
   Hessian of the mean KL(old ‖ new), plus ``cg_damping``); the full step
   ``sqrt(2 max_kl / sᵀFs) s``; a backtracking line search that accepts the first fraction
   whose mean KL is at most ``accept_kl_ratio * max_kl`` and whose surrogate improves;
   otherwise the policy stays as it was;
3. **value step**: ``vf_iters`` passes of Adam on the squared error to the GAE returns, in
   minibatches of ``vf_batch_size`` rows.

The policy and the value function see observations standardised by running statistics that
the loop updates with real data (:meth:`TRPO.observe`; SLBO: once per stage), never inside an
update, so an update's old policy is the one that sampled its data.

The policy is a Gaussian MLP with a state-independent log-std over actions scaled to
``[-1, 1]`` (SLBO's policy units); the env is given ``low + (clip(u, -1, 1) + 1) (high - low) / 2``
(:meth:`TRPO.clip`), the update sees the sampled ``u``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from mbrl_bench.buffer import Trajectories
from mbrl_bench.config import check
from mbrl_bench.devices import randn, randperm

Activation = Literal["tanh", "relu"]


@dataclass(frozen=True)
class TRPOConfig:
    """Settings of TRPO. Defaults are SLBO's (``slbo/configs``; see ``algorithms/slbo.toml``)."""

    policy_hidden_sizes: tuple[int, ...] = (32, 32)
    """Hidden widths of the Gaussian policy's mean network."""
    value_hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the value function."""
    activation: Activation = "tanh"
    """Hidden activation of the policy and the value function."""
    init_log_std: float = 0.0
    """Initial log-std of every action dimension (state-independent, learned)."""
    max_kl: float = 0.01
    """Trust region: the largest mean KL(old ‖ new) an accepted step may have."""
    cg_iters: int = 10
    """Conjugate-gradient iterations per step."""
    cg_damping: float = 0.1
    """Added to the Fisher matrix (``F + damping I``) in conjugate gradient."""
    line_search_steps: int = 10
    backtrack_ratio: float = 0.5
    """The line search tries the full step times ``backtrack_ratio ** i``, i = 0, 1, …"""
    accept_kl_ratio: float = 1.5
    """A line-search point is accepted only if its mean KL is at most ``accept_kl_ratio *
    max_kl`` (SLBO and OpenAI baselines: 1.5) and its surrogate improved."""
    ent_coef: float = 0.0
    """Entropy bonus in the surrogate."""
    ent_coef_updates: int | None = None
    """The entropy bonus applies to the first this many updates only, then 0 (SLBO: from
    stage 50 on, i.e. after 50 x 20 x 40 = 40,000 updates); None = always."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """λ of GAE(λ)."""
    vf_lr: float = 1e-3
    """Adam learning rate of the value function."""
    vf_iters: int = 5
    """Passes over the batch per value update."""
    vf_batch_size: int = 64
    """Minibatch rows of the value update."""
    normalize_obs: bool = True
    """Standardise observations with running statistics of the real observations the loop
    hands to :meth:`TRPO.observe` (SLBO: once per stage, from the stage's new data)."""

    def __post_init__(self) -> None:
        for name in ("policy_hidden_sizes", "value_hidden_sizes"):
            sizes = getattr(self, name)
            check(len(sizes) >= 1 and min(sizes) > 0, name, "at least one positive width")
        check(self.max_kl > 0, "max_kl", "a positive number")
        check(self.cg_iters >= 1, "cg_iters", "a positive integer")
        check(self.cg_damping >= 0, "cg_damping", "a non-negative number")
        check(self.line_search_steps >= 1, "line_search_steps", "a positive integer")
        check(0 < self.backtrack_ratio < 1, "backtrack_ratio", "a number in (0, 1)")
        check(self.accept_kl_ratio >= 1, "accept_kl_ratio", "a number >= 1")
        check(self.ent_coef_updates is None or self.ent_coef_updates >= 0, "ent_coef_updates",
              "a non-negative integer or no value")
        check(self.ent_coef >= 0, "ent_coef", "a non-negative number")
        check(0 < self.gamma <= 1, "gamma", "a number in (0, 1]")
        check(0 <= self.gae_lambda <= 1, "gae_lambda", "a number in [0, 1]")
        check(self.vf_lr > 0, "vf_lr", "a positive number")
        check(self.vf_iters >= 0, "vf_iters", "a non-negative integer")
        check(self.vf_batch_size >= 1, "vf_batch_size", "a positive integer")


def mlp(sizes: tuple[int, ...], activation: Activation) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    act: Callable[[], nn.Module] = nn.Tanh if activation == "tanh" else nn.ReLU
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class RunningNormalizer(nn.Module):
    """Running mean and variance of ``D``-dimensional data (parallel-variance updates);
    ``forward`` standardises ``... x D`` (identity before any data, or when disabled)."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, dim: int, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (``N x D``) to the statistics."""
        if not self.enabled or x.shape[0] == 0:
            return
        x = x.double()
        n = float(x.shape[0])
        mean, var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta.square() * self.count * n / total
        self.mean.copy_(self.mean + delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or float(self.count) == 0.0:
            return x
        std = self.var.clamp_min(1e-8).sqrt()
        return ((x - self.mean) / std).to(x.dtype)


class GaussianPolicy(nn.Module):
    """``obs B x O -> N(mean(obs), diag(exp(log_std))²)`` over ``A`` action dimensions."""

    def __init__(self, obs_dim: int, act_dim: int, config: TRPOConfig) -> None:
        super().__init__()
        self.mean_net = mlp((obs_dim, *config.policy_hidden_sizes, act_dim), config.activation)
        with torch.no_grad():  # small initial means, as in rllab/baselines policies
            last = self.mean_net[-1]
            assert isinstance(last, nn.Linear)
            last.weight.mul_(0.01)
            last.bias.zero_()
        self.log_std = nn.Parameter(torch.full((act_dim,), config.init_log_std))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean B x A, log_std B x A)`` for normalised observations ``B x O``."""
        mean = self.mean_net(obs)
        return mean, self.log_std.expand_as(mean)


def log_prob(mean: torch.Tensor, log_std: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Log-density ``B`` of actions ``B x A`` under diagonal Gaussians ``B x A``."""
    z = (act - mean) / log_std.exp()
    return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def kl_divergence(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor,
                  log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) ``B`` of diagonal Gaussians ``B x A``."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q).square()) / (2 * var_q)
            - 0.5).sum(-1)


def gae(rew: torch.Tensor, value: torch.Tensor, next_value: torch.Tensor,
        terminated: torch.Tensor, ended: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates ``M`` over consecutive trajectories (all inputs ``M``):
    ``δ_t = r_t + γ (1 - terminated_t) V(s'_t) - V(s_t)``, ``A_t = δ_t + γ λ (1 - ended_t)
    A_{t+1}``."""
    delta = (rew + gamma * (1.0 - terminated) * next_value - value).tolist()
    carry = (gamma * lam * (1.0 - ended)).tolist()
    adv = [0.0] * len(delta)
    running = 0.0
    for t in range(len(delta) - 1, -1, -1):  # plain floats: ~100x faster than tensor indexing
        running = delta[t] + carry[t] * running
        adv[t] = running
    return torch.tensor(adv, dtype=rew.dtype, device=rew.device)


def conjugate_gradient(fvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iters: int, tol: float = 1e-10) -> torch.Tensor:
    """Approximate solution ``x`` of ``F x = b`` (``F`` positive definite, given as ``fvp``)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if float(rr) < tol:
            break
        fp = fvp(p)
        alpha = rr / p.dot(fp)
        x += alpha * p
        r -= alpha * fp
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def _flat(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params])


def _assign(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    i = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[i : i + n].view_as(p))
            i += n


class TRPO:
    """TRPO policy optimizer (module docstring): :meth:`update` takes a batch of trajectories.

    ``action_low`` / ``action_high``: the env's bounds (the policy's ``[-1, 1]`` units are
    mapped onto them). All sampling uses ``generator``.
    """

    on_policy = True
    """Learns from whole trajectories of its current policy (:meth:`update`), not a buffer."""
    update_keys = ("surrogate_gain", "kl", "step_fraction", "entropy", "vf_loss", "log_std")

    def __init__(self, obs_dim: int, act_dim: int, action_low: Any, action_high: Any,
                 config: TRPOConfig, generator: torch.Generator,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.generator = generator
        self.device = torch.device(device)
        self.low = torch.as_tensor(action_low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(action_high, dtype=torch.float32, device=self.device)
        self.obs_norm = RunningNormalizer(obs_dim, config.normalize_obs)
        self.policy = GaussianPolicy(obs_dim, act_dim, config)
        self._past_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self._past_norm = copy.deepcopy(self.obs_norm)
        self.value = mlp((obs_dim, *config.value_hidden_sizes, 1), config.activation)
        for net in (self.obs_norm, self.policy, self._past_policy, self._past_norm, self.value):
            net.to(self.device)
        self.vf_optimizer = torch.optim.Adam(self.value.parameters(), lr=config.vf_lr)
        self.updates = 0

    # ------------------------------------------------------------------ acting
    def dist(self, obs: torch.Tensor, state: dict[str, Any] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std ``B x A`` (policy units) at raw observations ``B x O``: of the
        current policy, or of the one :meth:`policy_state` saved in ``state``."""
        net, norm = self.policy, self.obs_norm
        if state is not None:
            self._past_policy.load_state_dict(state["policy"])
            self._past_norm.load_state_dict(state["obs_norm"])
            net, norm = self._past_policy, self._past_norm
        return net(norm(obs.float()))  # type: ignore[no-any-return]

    def sample_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Sampled (unclipped) actions ``B x A`` at ``B x O``; the mean if ``deterministic``."""
        with torch.no_grad():
            mean, log_std = self.dist(obs)
            if deterministic:
                return mean
            eps = randn(mean.shape, self.generator, mean.device, mean.dtype)
            return mean + log_std.exp() * eps

    def clip(self, act: torch.Tensor) -> torch.Tensor:
        """Policy-unit actions ``B x A`` as the env takes them: clipped to ``[-1, 1]`` and
        mapped onto the env's bounds."""
        return self.low + (act.clamp(-1.0, 1.0) + 1.0) * (self.high - self.low) / 2.0

    def act_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions ``B x A`` in the env's bounds (sampled, or the mean) for ``B x O``."""
        return self.clip(self.sample_batch(obs, deterministic))

    def act(self, obs: Any, deterministic: bool) -> Any:
        """Action for one observation (array ``O``) as a numpy array ``A`` in the bounds."""
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        return self.act_batch(o, deterministic)[0].cpu().numpy()

    def dist_params(self, obs: torch.Tensor, state: dict[str, Any] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-std) ``B x A`` at ``B x O`` of the current policy, or of a past one
        (``state``, its normaliser included), for the policy-shift diagnostics (ε_π)."""
        with torch.no_grad():
            mean, log_std = self.dist(obs, state)
        return mean.detach(), log_std.detach()  # log_std is a view of the parameter

    def policy_state(self) -> dict[str, Any]:
        """A copy of the acting policy: its weights and its observation normaliser."""
        return {"policy": {k: v.detach().clone() for k, v in self.policy.state_dict().items()},
                "obs_norm": {k: v.clone() for k, v in self.obs_norm.state_dict().items()}}

    def observe(self, obs: torch.Tensor) -> None:
        """Add real observations ``N x O`` to the normaliser's statistics (this changes the
        policy's input: call it between updates, not inside one)."""
        self.obs_norm.update(obs)

    # ------------------------------------------------------------------ update
    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """``V`` at raw observations ``B x O`` -> ``B``."""
        return self.value(self.obs_norm(obs.float())).squeeze(-1)  # type: ignore[no-any-return]

    def update(self, traj: Trajectories) -> dict[str, float]:
        """One policy iteration (module docstring) on ``traj``; returns diagnostics."""
        cfg = self.config
        with torch.no_grad():
            v, v_next = self.values(traj.obs), self.values(traj.next_obs)
            adv = gae(traj.rew, v, v_next, traj.terminated, traj.ended, cfg.gamma,
                      cfg.gae_lambda)
            returns = adv + v
            adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
        obs = self.obs_norm(traj.obs.float())
        step = self._policy_step(obs, traj.act, adv)
        step["vf_loss"] = self._value_step(obs, returns)
        self.updates += 1
        return step

    def _policy_step(self, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor
                     ) -> dict[str, float]:
        """One natural-gradient step on normalised ``obs M x O``, sampled ``act M x A`` and
        standardised advantages ``adv M``; returns the step's diagnostics."""
        cfg, policy = self.config, self.policy
        params = list(policy.parameters())
        ent_coef = cfg.ent_coef if (cfg.ent_coef_updates is None
                                    or self.updates < cfg.ent_coef_updates) else 0.0
        with torch.no_grad():
            old_mean, old_log_std = (t.clone() for t in policy(obs))  # log_std is a view
            old_logp = log_prob(old_mean, old_log_std, act)

        def surrogate() -> torch.Tensor:
            mean, log_std = policy(obs)
            ratio = torch.exp(log_prob(mean, log_std, act) - old_logp)
            entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()
            return (ratio * adv).mean() + ent_coef * entropy

        def mean_kl() -> torch.Tensor:
            mean, log_std = policy(obs)
            return kl_divergence(old_mean, old_log_std, mean, log_std).mean()

        loss = surrogate()
        g = _flat(list(torch.autograd.grad(loss, params)))
        grad_kl = _flat(list(torch.autograd.grad(mean_kl(), params, create_graph=True)))

        def fvp(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(grad_kl.dot(v), params, retain_graph=True)
            return _flat(list(hv)) + cfg.cg_damping * v

        direction = conjugate_gradient(fvp, g, cfg.cg_iters)
        shs = 0.5 * direction.dot(fvp(direction))
        old = _flat([p.detach() for p in params]).clone()
        fraction, kl, gain = 0.0, 0.0, 0.0
        if float(shs) > 0 and bool(torch.isfinite(direction).all()):
            full_step = direction * torch.sqrt(cfg.max_kl / shs)
            base = float(loss.detach())
            for i in range(cfg.line_search_steps):
                frac = cfg.backtrack_ratio ** i
                _assign(params, old + frac * full_step)
                with torch.no_grad():
                    new_loss, new_kl = float(surrogate()), float(mean_kl())
                if (math.isfinite(new_loss) and new_kl <= cfg.accept_kl_ratio * cfg.max_kl
                        and new_loss > base):
                    fraction, kl, gain = frac, new_kl, new_loss - base
                    break
            else:
                _assign(params, old)
        with torch.no_grad():
            entropy = float((policy.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum())
        return {"surrogate_gain": gain, "kl": kl, "step_fraction": fraction,
                "entropy": entropy, "log_std": float(policy.log_std.detach().mean())}

    def _value_step(self, obs: torch.Tensor, returns: torch.Tensor) -> float:
        """``vf_iters`` passes of Adam on normalised ``obs M x O`` towards ``returns M``;
        the mean minibatch loss."""
        cfg, n = self.config, obs.shape[0]
        total, count = 0.0, 0
        for _ in range(cfg.vf_iters):
            order = randperm(n, self.generator, obs.device)
            for s in range(0, n, cfg.vf_batch_size):
                idx = order[s : s + cfg.vf_batch_size]
                loss = (self.value(obs[idx]).squeeze(-1) - returns[idx]).square().mean()
                self.vf_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.vf_optimizer.step()
                total, count = total + float(loss.detach()), count + 1
        return total / count if count else math.nan

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "value": self.value.state_dict(),
                "obs_norm": self.obs_norm.state_dict(),
                "vf_optimizer": self.vf_optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.vf_optimizer.load_state_dict(state["vf_optimizer"])
        self.updates = state["updates"]
