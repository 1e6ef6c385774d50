"""Soft actor-critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications").

Twin Q networks evaluated as one 2-member batched MLP, target networks with Polyak averaging,
automatic entropy tuning towards a configurable target entropy, tanh-squashed Gaussian policy
scaled to the action bounds. Targets bootstrap unless the next state is *terminal*; time-limit
truncation is not termination, so truncated transitions bootstrap.

As in the original SAC implementation (softlearning, on which the official MBPO code is built),
the critic, actor and temperature losses of one update are all computed from the same
parameters and applied together. That lets one update be one forward, one backward and one
fused Adam step: a SAC update here is ~0.55 GFLOP, so per-operator overhead matters as much as
arithmetic. Both critics run as one ``baddbmm`` per hidden layer (the scalar output layer is a
multiply-and-sum), the actor's loss sees the critics through detached weights (so it moves only
the actor), and the target update is a single ``_foreach_lerp_``.

**Model-based value expansion** (MVE, Feinberg et al. 2018), with ``value_expansion = H > 0``
and a model environment handed in: the critic's target for a real transition
``(s0, a0, r0, s1)`` follows the current policy H steps further in the model from ``s1``
(model rewards and terminations, the soft value's entropy term at every expanded state) and
bootstraps from the target critics at ``s_{H+1}`` (see :meth:`SAC.td_target`). The model adds
no data: it only changes the targets of real samples, as in the MBPO paper's MVE comparison.

**Precision** (``precision = "bf16"``): the update's forward passes run under bf16 autocast, so
its matrix products (and their backward) multiply bf16 with fp32 accumulation, while weights,
optimiser state, the networks' outputs (Q values, the policy's mean and log-std, hence noise,
log-probabilities and losses) and acting stay fp32. It pays only where the device multiplies
bf16 in hardware (``benchmarks/sac_precision.py``); fp32 is the default.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from mbrl_bench.buffer import Batch
from mbrl_bench.config import check
from mbrl_bench.devices import randn


@dataclass(frozen=True)
class SACConfig:
    """Settings of SAC. Defaults are the paper's and MBPO's (256x256, lr 3e-4, batch 256)."""

    added_later: ClassVar[tuple[str, ...]] = ("value_expansion", "precision")
    """Fields left out of run hashes while at their default (``spec.hashed_form``)."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each critic."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics (target <- (1 - tau) target + tau critic)."""
    updates_per_step: int = 1
    """Gradient updates per environment step (the update-to-data ratio)."""
    target_entropy: float | None = None
    """Entropy the temperature is tuned towards; omitted = -dim(action space)."""
    init_alpha: float = 1.0
    """Initial entropy temperature."""
    learn_alpha: bool = True
    """Tune the temperature automatically; if false it stays at ``init_alpha``."""
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    value_expansion: int = 0
    """H: expand the critic's targets H steps through the model (MVE, Feinberg et al. 2018);
    0 = ordinary one-step soft TD targets. H > 0 needs a model (a recipe with a model)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """The update's matrix products: fp32, or bf16 (autocast; weights and state stay fp32).

    bf16: products multiply bf16 with fp32 accumulation; weights, optimiser state, network
    outputs and losses stay fp32, and acting is fp32. It pays only where the device multiplies
    bf16 in hardware."""

    def __post_init__(self) -> None:
        check(len(self.hidden_sizes) >= 1 and min(self.hidden_sizes) > 0, "hidden_sizes",
              "at least one positive width")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
            check(getattr(self, name) > 0, name, "a positive number")
        check(self.batch_size > 0, "batch_size", "a positive integer")
        check(0 < self.gamma <= 1, "gamma", "a number in (0, 1]")
        check(0 < self.tau <= 1, "tau", "a number in (0, 1]")
        check(self.updates_per_step >= 1, "updates_per_step", "an integer >= 1")
        check(self.log_std_min < self.log_std_max, "log_std_min", "less than log_std_max")
        check(self.value_expansion >= 0, "value_expansion", "a horizon H >= 0 (0: no expansion)")
        check(self.precision in ("fp32", "bf16"), "precision", "fp32 or bf16")


class Dynamics(Protocol):
    """A batched model environment (e.g. :class:`~mbrl_bench.models.model_env.ModelEnv`)."""

    def reset(self, obs: torch.Tensor) -> Any: ...
    def step(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``act B x A -> (next_obs B x O, reward B, terminated bool B)``."""
        ...


class BatchedLinear(nn.Module):
    """``M`` independent linear layers applied as one batched matmul.

    Weight ``M x in x out``, bias ``M x 1 x out``; forward ``M x B x in -> M x B x out``.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # torch.nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class TwinCritic(nn.Module):
    """``members`` Q networks in one module: ``(obs B x O, act B x A) -> Q members x B``.

    Hidden layers are :class:`BatchedLinear`; the scalar output layer is a multiply-and-sum
    (a ``baddbmm`` with one output column runs ~25x slower per FLOP on CPU).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], members: int = 2):
        super().__init__()
        sizes = (obs_dim + act_dim, *hidden)
        self.obs_dim, self.act_dim, self.members = obs_dim, act_dim, members
        self.layers = nn.ModuleList(
            BatchedLinear(members, a, b) for a, b in itertools.pairwise(sizes)
        )
        bound = 1.0 / math.sqrt(hidden[-1])
        self.out_weight = nn.Parameter(torch.empty(members, 1, hidden[-1]).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.empty(members, 1).uniform_(-bound, bound))

    def forward(
        self, obs: torch.Tensor, act: torch.Tensor, detach_weights: bool = False
    ) -> torch.Tensor:
        """Q values ``members x B``; with ``detach_weights`` no gradient reaches the weights."""
        x = torch.cat([obs, act], dim=-1).unsqueeze(0).expand(self.members, -1, -1)
        weights = self.weights()
        return critic_q(x, [w.detach() for w in weights] if detach_weights else weights)

    def weights(self) -> list[torch.Tensor]:
        """The parameters in :func:`critic_q`'s order: each hidden layer's weight
        ``members x in x out`` and bias ``members x 1 x out``, then the output layer's weight
        ``members x 1 x H`` and bias ``members x 1``."""
        out: list[torch.Tensor] = []
        for layer in self.layers:
            lin: Any = layer
            out += [lin.weight, lin.bias]
        return [*out, self.out_weight, self.out_bias]


def critic_q(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """Q values ``M x B`` of M critics with ``weights`` (:meth:`TwinCritic.weights`, for M
    members) on inputs ``M x B x (O + A)``, each member on its own rows."""
    *hidden, w_out, b_out = weights
    for w, b in zip(hidden[::2], hidden[1::2], strict=True):
        x = torch.baddbmm(b, x, w).relu_()  # in place: baddbmm's backward needs no output
    return (x * w_out).sum(-1) + b_out


def _normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped and placed like ``like``, from ``generator`` (drawn on the
    generator's device; torch's default generator when None)."""
    if generator is None:
        return torch.randn(like.shape, dtype=like.dtype, device=like.device)
    return randn(like.shape, generator, like.device, like.dtype)


class SquashedGaussianActor(nn.Module):
    """Policy ``obs B x O -> action B x A`` in the env's bounds, tanh-squashed Gaussian."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], low: torch.Tensor,
        high: torch.Tensor, log_std_min: float, log_std_max: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = obs_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(prev, 2 * act_dim)
        self.scale: torch.Tensor
        self.offset: torch.Tensor
        self.register_buffer("scale", (high - low) / 2.0)
        self.register_buffer("offset", (high + low) / 2.0)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-squash mean and log-std, each ``B x A``, fp32 (under bf16 autocast too)."""
        mean, log_std = self.head(self.trunk(obs)).float().chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def act(self, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A sampled action ``B x A`` without its log-probability (for acting in the env)."""
        mean, log_std = self.dist_params(obs)
        eps = _normal(mean, generator)
        return torch.tanh(mean + log_std.exp() * eps) * self.scale + self.offset

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample: action ``B x A`` in the env's bounds and the log-probability
        ``B`` of its normalised form in ``[-1, 1]^A``."""
        mean, log_std = self.dist_params(obs)
        std = log_std.exp()
        eps = _normal(mean, generator)
        u = mean + std * eps
        a = torch.tanh(u)
        # log N(u; mean, std) - sum log|d tanh(u)/du|, the latter in a numerically stable form
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)
        # log-density of the action normalised to [-1, 1]^A (no Jacobian of the rescaling), as
        # in softlearning (MBPO's official code) and Stable-Baselines3: target entropies are in
        # those units whatever the env's bounds
        return a * self.scale + self.offset, logp

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean action ``B x A``."""
        mean, _ = self.dist_params(obs)
        return torch.tanh(mean) * self.scale + self.offset


def soft_td_target(batch: Batch, q_next: torch.Tensor, next_logp: torch.Tensor,
                   alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """The one-step soft TD target ``B``: r + γ (1 - terminated) (q_next - α log π(a'|s')),
    from the target critics' minimum ``q_next`` (``B``) at the sampled next actions."""
    v_next = q_next - alpha * next_logp
    return batch.rew + gamma * (1.0 - batch.terminated) * v_next


def sac_loss(
    q: torch.Tensor, target: torch.Tensor, q_pi: torch.Tensor, logp: torch.Tensor,
    alpha: torch.Tensor, log_alpha: torch.Tensor | None, target_entropy: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One update's summed loss (critic + actor + temperature) and its diagnostics.

    ``q``: the critics at the batch's actions, ``members x B``; ``target``: TD targets ``B``;
    ``q_pi``: the critics' minimum at the policy's actions ``B`` (through detached weights);
    ``logp``: their log-probabilities ``B``; ``log_alpha``: None when the temperature is fixed.
    """
    critic_loss = 0.5 * (q - target).pow(2).mean(-1).sum()
    actor_loss = (alpha * logp - q_pi).mean()
    entropy = -logp.detach().mean()
    loss = critic_loss + actor_loss
    if log_alpha is not None:
        loss = loss + log_alpha * (entropy - target_entropy)
    return loss, {
        "critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
        "alpha": alpha, "entropy": entropy, "q_mean": q.detach().mean(),
    }


class SAC:
    """SAC policy optimizer: ``update(batch)`` is one step of critic, actor and temperature.

    ``model_env``: the model the critic's targets are expanded through when
    ``config.value_expansion > 0`` (required then, unused otherwise); ``model_ready``: whether
    that model has been fitted (until it is, targets are the ordinary one-step ones).
    """

    on_policy = False
    update_keys = ("critic_loss", "actor_loss", "alpha", "entropy", "q_mean")
    """The diagnostics :meth:`update` returns."""

    def __init__(
        self, obs_dim: int, act_dim: int, action_low: Any, action_high: Any, config: SACConfig,
        generator: torch.Generator, model_env: Dynamics | None = None,
        model_ready: Callable[[], bool] | None = None, device: str | torch.device = "cpu",
    ) -> None:
        if config.value_expansion > 0 and model_env is None:
            raise ValueError("optimizer.value_expansion: needs a model (a recipe with a model)")
        self.config = config
        self.generator = generator
        self.model_env, self.model_ready = model_env, model_ready
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.actor = SquashedGaussianActor(obs_dim, act_dim, config.hidden_sizes, low, high,
                                           config.log_std_min, config.log_std_max)
        self._past_actor = copy.deepcopy(self.actor).requires_grad_(False)
        """Holds the weights of a past policy for :meth:`dist_params`."""
        self.critic = TwinCritic(obs_dim, act_dim, config.hidden_sizes)
        self.target_critic = TwinCritic(obs_dim, act_dim, config.hidden_sizes)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.device = torch.device(device)
        for net in (self.actor, self._past_actor, self.critic, self.target_critic):
            net.to(self.device)
        self.log_alpha = torch.tensor(math.log(config.init_alpha), device=self.device,
                                      requires_grad=True)
        self.target_entropy = (
            float(-act_dim) if config.target_entropy is None else config.target_entropy
        )
        groups: list[dict[str, Any]] = [
            {"params": list(self.actor.parameters()), "lr": config.actor_lr},
            {"params": list(self.critic.parameters()), "lr": config.critic_lr},
        ]
        if config.learn_alpha:
            groups.append({"params": [self.log_alpha], "lr": config.alpha_lr})
        self.optimizer = torch.optim.Adam(groups, fused=True)
        self._critic_params: list[torch.Tensor] = list(self.critic.parameters())
        self._target_params: list[torch.Tensor] = list(self.target_critic.parameters())
        self.updates = 0

    def products(self) -> contextlib.AbstractContextManager[Any]:
        """The context an update's forward passes run in: bf16 autocast at ``precision =
        "bf16"`` (see the module), none at fp32."""
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def act(self, obs: Any, deterministic: bool) -> Any:
        """Action for one observation (array ``O``) as a numpy array ``A``."""
        with torch.inference_mode():
            o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
            a = self.actor.deterministic(o) if deterministic else self.actor.act(o, self.generator)
        return a[0].cpu().numpy()

    def act_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions ``B x A`` for observations ``B x O`` (no gradient)."""
        with torch.no_grad():
            if deterministic:
                return self.actor.deterministic(obs)
            return self.actor.act(obs, self.generator)

    def sample_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """As :meth:`act_batch` (SAC's actions are in the bounds already; see :meth:`clip`)."""
        return self.act_batch(obs, deterministic)

    def clip(self, act: torch.Tensor) -> torch.Tensor:
        """The identity: squashed actions need no clipping."""
        return act

    def observe(self, obs: torch.Tensor) -> None:
        """Nothing: SAC's networks see raw observations."""

    # ------------------------------------------------------------------ policy protocol
    def dist_params(
        self, obs: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-squash mean and log-std ``B x A`` of the policy at ``obs`` (``B x O``): the
        current one, or the one whose weights ``state`` (from :meth:`policy_state`) holds."""
        if state is None:
            return self.actor.dist_params(obs)
        self._past_actor.load_state_dict(state)
        return self._past_actor.dist_params(obs)

    def policy_state(self) -> dict[str, torch.Tensor]:
        """A copy of the acting policy's weights (for :meth:`dist_params` later)."""
        return {k: v.detach().clone() for k, v in self.actor.state_dict().items()}

    # ------------------------------------------------------------------ update
    def td_target(
        self, batch: Batch, next_act: torch.Tensor, next_logp: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """Soft TD target ``B``: r + γ (1 - terminated) (min_i Q'_i(s', a') - α log π(a'|s')).

        Only termination stops bootstrapping; truncated transitions are not terminal. With
        ``value_expansion = H > 0`` the target is expanded H steps through the model from
        ``s1 = next_obs`` (``a_t ~ π(s_t)``, ``(s_{t+1}, r_t, d_{t+1})`` from the model):

            r0 + Σ_{t=1..H} γ^t m_t (r_t - α log π(a_t|s_t))
               + γ^{H+1} m_{H+1} (min_i Q'_i(s_{H+1}, a_{H+1}) - α log π(a_{H+1}|s_{H+1}))

        where ``m_t`` is 1 while no termination happened before step t (real ``d_1`` from the
        batch, model ones after). At H = 0 it is the ordinary target.
        """
        with torch.no_grad():
            if self.config.value_expansion == 0 or (self.model_ready is not None
                                                     and not self.model_ready()):
                q_next = self.target_critic(batch.next_obs, next_act).min(0).values
                return soft_td_target(batch, q_next, next_logp, alpha, self.config.gamma)
            return self._expanded_target(batch, next_act, next_logp, alpha)

    def _expanded_target(
        self, batch: Batch, act: torch.Tensor, logp: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """The H-step MVE target ``B`` of :meth:`td_target` (no gradient)."""
        assert self.model_env is not None
        gamma = self.config.gamma
        target = batch.rew.clone()
        alive = batch.terminated == 0
        discount = gamma
        obs = batch.next_obs
        self.model_env.reset(obs)
        for _ in range(self.config.value_expansion):
            next_obs, rew, term = self.model_env.step(act)
            target += torch.where(alive, discount * (rew - alpha * logp), 0.0)
            alive = alive & ~term
            discount *= gamma
            obs = next_obs
            act, logp = self.actor.sample(obs, self.generator)
        q = self.target_critic(obs, act).min(0).values
        return target + torch.where(alive, discount * (q - alpha * logp), 0.0)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One SAC step on ``batch``: critic, actor and temperature from the same parameters.

        Returns detached scalar diagnostics as tensors (no synchronisation on the hot path).
        """
        cfg = self.config
        alpha = self.log_alpha.detach().exp()
        with self.products():
            with torch.no_grad():
                next_act, next_logp = self.actor.sample(batch.next_obs, self.generator)
            target = self.td_target(batch, next_act, next_logp, alpha)
            pi, logp = self.actor.sample(batch.obs, self.generator)
            q = self.critic(batch.obs, batch.act)
            q_pi = self.critic(batch.obs, pi, detach_weights=True).min(0).values
            loss, out = sac_loss(q, target, q_pi, logp, alpha,
                                 self.log_alpha if cfg.learn_alpha else None,
                                 self.target_entropy)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
        self.updates += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "optimizer": self.optimizer.state_dict(), "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
