"""Probabilistic ensemble of MLP dynamics models, vectorised over members (MBPO / PETS).

Follows the official MBPO code (Janner et al. 2019, ``mbpo/models/bnn.py``):

* ``E`` members, each an MLP with ``num_layers`` hidden SiLU (swish) layers and one output layer;
  all members run at once, one :func:`torch.baddbmm` per layer with weights ``E x in x out``.
* Inputs ``[obs, act]`` are standardised by a :class:`Normalizer` (fitted on the training split
  by the trainer).
* Targets are the **raw** ``[Δobs, reward]`` (``Δobs = next_obs - obs``), not standardised, as in
  the official code: the holdout MSE that drives early stopping and elite choice is then measured
  in the environment's own units, and predictions need no un-scaling. (Reward is the *last*
  output column here; the official code puts it first.)
* Each output is Gaussian: a mean head and a log-variance head whose values are soft-bounded by
  learnable per-dimension ``max_logvar`` (init 0.5) and ``min_logvar`` (init -10), shared by all
  members.
* The elites (``elite_idx``) and each member's holdout MSE are state of the network, saved in its
  ``state_dict``.

Training (loss, holdout split, early stopping, elite selection, the Adam optimiser) is
:class:`mbrl_bench.models.trainer.ModelTrainer`'s job; :class:`ProbabilisticEnsembleConfig` holds
the settings of both, as one ``[model]`` recipe table.

``deterministic=True`` gives a deterministic MLP ensemble with the same interface: only a mean head,
trained with the MSE, ``predict`` returns zero variance.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from mbrl_bench.config import check
from mbrl_bench.errors import NonFiniteError

PREDICT_CHUNK_ROWS_CPU = 1024
"""Rows per member per forward pass of :meth:`ProbabilisticEnsemble.predict` (and the trainer's
evaluation passes) on CPU.

Measured on one shared CPU thread (E=7, 4x200 hidden, O=17, A=6, 100k rows shared by all members,
best of 2, two sweeps): 256-2048 rows -> 2.9-3.4 s, 4096 -> 3.3-4.3 s, 8192 -> 5.2-6.7 s,
unchunked -> 6.9 s. Small chunks keep each ``7 x chunk x 200`` activation (5.7 MiB at 1024) in
cache; the unchunked pass builds ~0.5 GiB per hidden activation.
"""

PREDICT_CHUNK_ROWS_ACCELERATOR = 16384
"""The same on GPUs: larger chunks keep the device busy; ~88 MiB per activation at E=7, 200 wide.

Not measured (no GPU was available when this was written); chosen by memory.
"""


def default_chunk_rows(device: torch.device) -> int:
    """Rows per member per chunk for ``device`` (see the two constants above)."""
    return PREDICT_CHUNK_ROWS_CPU if device.type == "cpu" else PREDICT_CHUNK_ROWS_ACCELERATOR


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied at once with one batched matmul.

    Weight ``E x in x out``, bias ``E x 1 x out``. Initialised like the official MBPO code:
    weights from a normal with std ``1 / (2 sqrt(in))`` truncated at two std, biases zero.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(
        self,
        ensemble_size: int,
        in_features: int,
        out_features: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_features))
        self.held: tuple[torch.Tensor, torch.Tensor] | None = None
        """The low-precision weight and bias inside :meth:`hold_cast`."""
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the weights (truncated normal, std ``1/(2 sqrt(in))``) and zero the biases."""
        std = 1.0 / (2.0 * math.sqrt(self.in_features))
        nn.init.trunc_normal_(self.weight, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)
        self.bias.zero_()

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """``E x B x in -> E x B x out``.

        With ``members`` (``K`` member indices) only those members run:
        ``K x B x in -> K x B x out``.
        """
        weight, bias = self.weight, self.bias
        if self.held is not None and torch.is_autocast_enabled(x.device.type):
            if torch.is_grad_enabled():
                raise RuntimeError("hold_cast: a forward that takes gradients would not reach "
                                   "the weights through their held copies")
            weight, bias = self.held
        if members is not None:
            weight, bias = weight[members], bias[members]
        return torch.baddbmm(bias, x, weight)

    @contextlib.contextmanager
    def hold_cast(self, dtype: torch.dtype) -> Iterator[None]:
        """Within this context, forwards under autocast use the weight and bias cast to
        ``dtype`` once at its start, as autocast would cast them at every call. Only for
        passes that change no weight (autocast casts again at every call where no gradient is
        taken: a planned PETS step makes thousands of forwards of the same weights)."""
        self.held = (self.weight.detach().to(dtype), self.bias.detach().to(dtype))
        try:
            yield
        finally:
            self.held = None

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in={self.in_features}, out={self.out_features}"


class Normalizer(nn.Module):
    """Per-dimension standardisation ``(x - mean) / std`` with statistics kept as buffers.

    Before :meth:`fit` it is the identity. Dimensions whose std is below ``min_std`` (e.g. a
    constant input) get std 1, as in the official code, so they are centred but never blown up.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int, min_std: float = 1e-6) -> None:
        super().__init__()
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set mean/std from ``x``: ``N x D``."""
        if x.dim() != 2 or x.shape[1] != self.mean.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"Normalizer.fit: expected N x {self.mean.shape[0]}, got {tuple(x.shape)}"
            )
        mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        std = torch.where(std < self.min_std, torch.ones_like(std), std)
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``... x D -> ... x D``."""
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class ProbabilisticEnsembleConfig:
    """Settings of :class:`ProbabilisticEnsemble` and of its
    :class:`~mbrl_bench.models.trainer.ModelTrainer`, one ``[model]`` recipe table: the network
    reads the sizes, ``num_elites``, ``learn_logvar_bounds`` and ``deterministic``, the trainer
    the rest. Defaults are the official MBPO ones."""

    added_later: ClassVar[tuple[str, ...]] = (
        "improve_from_initial", "activation", "loss", "multi_step", "grad_clip", "precision")
    """Fields left out of run hashes while at their default (``spec.hashed_form``)."""

    ensemble_size: int = 7
    """Number of members ``E``."""
    num_elites: int = 5
    """Members with the lowest holdout MSE after fitting; used by ``elites`` propagation."""
    hidden_size: int = 200
    """Width of every hidden layer."""
    num_layers: int = 4
    """Number of hidden (SiLU) layers; the network has ``num_layers + 1`` linear layers."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    """L2 coefficient per linear layer, output layer last; length must be ``num_layers + 1``."""
    batch_size: int = 256
    """Minibatch rows per member."""
    holdout_ratio: float = 0.2
    """Fraction of the data held out for early stopping and elite selection."""
    max_holdout: int = 5000
    """Cap on the number of holdout rows."""
    patience: int = 5
    """Stop after this many epochs in a row in which no member improved its holdout MSE.

    (The official code's counter test is ``> 5``, i.e. it stops after the 6th such epoch.)"""
    improvement_threshold: float = 0.01
    """Relative holdout-MSE decrease that counts as an improvement of one member."""
    improve_from_initial: bool = False
    """Measure improvement from each member's holdout MSE before the fit (the warm-started
    weights, as mbrl-lib does), so a fit whose model already predicts the new data well stops
    after ``patience`` epochs; False (the official MBPO code): from +inf at every fit."""
    max_epochs: int | None = None
    """Cap on epochs per :meth:`~mbrl_bench.models.trainer.ModelTrainer.fit`; None = no cap."""
    max_train_seconds: float | None = None
    """Wall-clock cap per fit, checked after each epoch; None = no cap (a time cap makes runs
    depend on the machine: prefer ``max_steps``)."""
    max_steps: int | None = None
    """Cap on gradient steps per fit (the epoch in progress stops there); None = no cap. Unlike
    an epoch cap it bounds a fit's cost whatever the amount of data."""
    learn_logvar_bounds: bool = True
    """Learn ``max_logvar`` / ``min_logvar`` (else they stay at 0.5 / -10)."""
    logvar_bound_weight: float = 0.01
    """Coefficient of the regulariser ``sum(max_logvar) - sum(min_logvar)``."""
    deterministic: bool = False
    """Deterministic MLP ensemble trained with MSE; ``predict`` returns zero variance."""
    activation: Literal["silu", "relu"] = "silu"
    """Activation of the hidden layers (MBPO/PETS: SiLU, i.e. swish; SLBO: ReLU)."""
    loss: Literal["auto", "mse", "l2"] = "auto"
    """Training loss per step: ``auto`` = the Gaussian NLL (or the MSE for a deterministic
    model); ``mse``; ``l2`` = SLBO's un-squared norm of the error of each row divided by each
    target column's standard deviation in the training data,
    ``sqrt(mean_d ((pred_d - y_d) / std_d)^2)`` (deterministic models only)."""
    multi_step: int = 1
    """H of the multi-step loss (SLBO: 2): each training unit is H consecutive real
    transitions; step h > 1 starts from the model's own prediction of step h - 1 (from the real
    state again where the data's episode ended) and the loss is the mean over the H steps.
    1 = the ordinary one-step loss."""
    grad_clip: float = 0.0
    """Clip the global gradient norm of every step to this (SLBO: 2.0); 0 = no clipping."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Arithmetic of the network's matrix products in fits, rollouts, planning and every other
    prediction: ``fp32``, or ``bf16`` (autocast: bf16 products with fp32 weights, optimiser
    state, normalisation, outputs and losses). bf16 pays only where the hardware has bf16
    matrix units (CPUs with AVX512-BF16 or AMX, recent GPUs); elsewhere it is emulated and far
    slower (a warning says so when a run starts)."""

    def __post_init__(self) -> None:
        check(self.ensemble_size >= 1, "ensemble_size", "expected an integer >= 1")
        check(
            1 <= self.num_elites <= self.ensemble_size,
            "num_elites",
            f"expected an integer in [1, ensemble_size={self.ensemble_size}]",
        )
        check(self.hidden_size >= 1, "hidden_size", "expected an integer >= 1")
        check(self.num_layers >= 1, "num_layers", "expected an integer >= 1")
        check(self.lr > 0 and math.isfinite(self.lr), "lr", "expected a finite number > 0")
        check(
            len(self.weight_decays) == self.num_layers + 1,
            "weight_decays",
            f"expected num_layers + 1 = {self.num_layers + 1} values (one per linear layer, "
            f"output last), got {len(self.weight_decays)}",
        )
        check(
            all(w >= 0 and math.isfinite(w) for w in self.weight_decays),
            "weight_decays",
            "expected finite numbers >= 0",
        )
        check(self.batch_size >= 1, "batch_size", "expected an integer >= 1")
        check(0 <= self.holdout_ratio < 1, "holdout_ratio", "expected a number in [0, 1) (0: "
              "no holdout, no early stopping; then set max_steps or max_epochs)")
        check(self.holdout_ratio > 0 or self.max_steps is not None or self.max_epochs is not None,
              "holdout_ratio", "0 (no early stopping) needs max_steps or max_epochs to end a fit")
        check(self.multi_step >= 1, "multi_step", "expected an integer >= 1 (1: one-step loss)")
        check(self.multi_step == 1 or self.holdout_ratio == 0, "multi_step",
              "> 1 trains on runs of consecutive rows, which a random holdout split would "
              "share with the training rows: set holdout_ratio = 0 (SLBO has no holdout)")
        check(self.grad_clip >= 0, "grad_clip", "expected a number >= 0 (0: no clipping)")
        check(self.precision in ("fp32", "bf16"), "precision", "fp32 or bf16")
        check(self.max_holdout >= 1, "max_holdout", "expected an integer >= 1")
        check(self.patience >= 1, "patience", "expected an integer >= 1")
        check(
            0 <= self.improvement_threshold < 1,
            "improvement_threshold",
            "expected a number in [0, 1)",
        )
        check(
            self.max_epochs is None or self.max_epochs >= 1,
            "max_epochs",
            "expected an integer >= 1 or no value",
        )
        check(
            self.max_steps is None or self.max_steps >= 1,
            "max_steps",
            "expected an integer >= 1 or no value",
        )
        check(
            self.max_train_seconds is None or self.max_train_seconds > 0,
            "max_train_seconds",
            "expected a number > 0 or no value",
        )
        check(
            self.logvar_bound_weight >= 0 and math.isfinite(self.logvar_bound_weight),
            "logvar_bound_weight",
            "expected a finite number >= 0",
        )


class ProbabilisticEnsemble(nn.Module):
    """Ensemble of ``E`` Gaussian MLPs predicting ``[Δobs, reward]`` (``O + 1`` outputs).

    ``generator`` seeds the weight initialisation; without one a generator seeded with 0 is used
    (never the global RNG). Buffers ``elite_idx`` (``num_elites``, sorted best first) and
    ``member_holdout_mse`` (``E``) are set by :meth:`~mbrl_bench.models.trainer.ModelTrainer.fit`
    and saved in the ``state_dict``; the optimiser and its state belong to the trainer.
    """

    elite_idx: torch.Tensor
    member_holdout_mse: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: ProbabilisticEnsembleConfig | None = None,
        device: str | torch.device = "cpu",
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if obs_dim < 1 or act_dim < 0:
            raise ValueError(f"obs_dim must be >= 1 and act_dim >= 0, got {obs_dim}, {act_dim}")
        cfg = config if config is not None else ProbabilisticEnsembleConfig()
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        self.config = cfg
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.in_dim = obs_dim + act_dim
        self.out_dim = obs_dim + 1
        self.ensemble_size = cfg.ensemble_size
        self.num_elites = cfg.num_elites
        self.deterministic = cfg.deterministic

        E, H = cfg.ensemble_size, cfg.hidden_size
        self.normalizer = Normalizer(self.in_dim)
        sizes = [self.in_dim] + [H] * cfg.num_layers
        self.hidden = nn.ModuleList(
            EnsembleLinear(E, a, b, generator) for a, b in itertools.pairwise(sizes)
        )
        head_out = self.out_dim if cfg.deterministic else 2 * self.out_dim
        self.head = EnsembleLinear(E, H, head_out, generator)
        learn = cfg.learn_logvar_bounds and not cfg.deterministic
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), 0.5), requires_grad=learn)
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), -10.0), requires_grad=learn)
        self.register_buffer("elite_idx", torch.arange(cfg.num_elites))
        self.register_buffer("member_holdout_mse", torch.full((E,), float("inf")))
        self.to(device)
        self.predict_chunk_rows = default_chunk_rows(self.device)
        """Rows per member per chunk in predict and in the trainer's evaluation passes; may be
        changed after construction."""

    # ------------------------------------------------------------------ network
    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def linear_layers(self) -> list[EnsembleLinear]:
        """The ``num_layers + 1`` linear layers, input first, output head last."""
        layers: list[EnsembleLinear] = [m for m in self.hidden if isinstance(m, EnsembleLinear)]
        return [*layers, self.head]

    def forward(
        self, x: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ``[obs, act]`` ``E x B x (O+A)`` -> ``(mean, logvar)``, each ``E x B x (O+1)``.

        The normaliser is applied here; ``mean`` is in raw target units ``[Δobs, reward]``. With
        ``members`` (``K`` indices) only those members run and the leading dim is ``K``.
        Deterministic models return ``logvar = 0`` (the unit-variance Gaussian whose loss is the
        MSE); their :meth:`predict` reports variance 0.
        """
        h = self.normalizer(x)
        act = F.relu if self.config.activation == "relu" else F.silu
        with torch.autocast(h.device.type, dtype=torch.bfloat16,
                            enabled=self.config.precision == "bf16"):
            for layer in self.hidden:
                h = act(layer(h, members))
            out = self.head(h, members)
        out = out.float()  # fp32 outputs whatever the products' precision
        if self.deterministic:
            return out, torch.zeros_like(out)
        mean, logvar = out.split(self.out_dim, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    # ------------------------------------------------------------------ data
    def inputs_targets(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transitions as the network sees them: inputs ``[obs, act]`` ``N x (O+A)`` and raw
        targets ``[Δobs, reward]`` ``N x (O+1)``, from ``obs N x O, act N x A, next_obs N x O,
        reward N`` (or ``N x 1``). Raises ValueError on wrong shapes and
        :class:`NonFiniteError` on NaN/inf values."""
        dev = self.device
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=dev)
        act_t = torch.as_tensor(act, dtype=torch.float32, device=dev)
        nxt_t = torch.as_tensor(next_obs, dtype=torch.float32, device=dev)
        rew_t = torch.as_tensor(reward, dtype=torch.float32, device=dev)
        if rew_t.dim() == 2 and rew_t.shape[1] == 1:
            rew_t = rew_t[:, 0]
        n = obs_t.shape[0] if obs_t.dim() == 2 else -1
        od, ad = self.obs_dim, self.act_dim
        if (
            obs_t.shape != (n, od)
            or act_t.shape != (n, ad)
            or nxt_t.shape != (n, od)
            or rew_t.shape != (n,)
        ):
            raise ValueError(
                f"expected obs N x {od}, act N x {ad}, next_obs N x {od}, reward N; got "
                f"{tuple(obs_t.shape)}, {tuple(act_t.shape)}, {tuple(nxt_t.shape)}, "
                f"{tuple(rew_t.shape)}"
            )
        for name, t in (("obs", obs_t), ("act", act_t), ("next_obs", nxt_t), ("reward", rew_t)):
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).reshape(n, -1).any(dim=1).sum())
                raise NonFiniteError(f"model data: {name} has NaN/inf values in {bad} of {n} rows")
        x = torch.cat([obs_t, act_t], dim=-1)
        y = torch.cat([nxt_t - obs_t, rew_t[:, None]], dim=-1)
        return x, y

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        members: torch.Tensor | None = None,
        check_finite: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted ``[Δobs, reward]`` mean and variance, each ``E x B x (O+1)``, raw units.

        ``obs B x O, act B x A``: every member sees the same rows. ``obs E x B x O,
        act E x B x A``: member ``e`` sees batch ``e``. With ``members`` (``K`` member indices) only
        those run and ``E`` reads ``K``. Rows go through in chunks of ``predict_chunk_rows`` per
        member. Variance is 0 for deterministic models. Raises :class:`NonFiniteError` on a
        non-finite prediction unless ``check_finite`` is false (a planner that ranks diverged
        candidates last needs their NaNs; each row's outputs depend on that row only).
        """
        dev = self.device
        x = torch.cat(
            [
                torch.as_tensor(obs, dtype=torch.float32, device=dev),
                torch.as_tensor(act, dtype=torch.float32, device=dev),
            ],
            dim=-1,
        )
        k = self.ensemble_size if members is None else int(members.shape[0])
        if members is not None:
            members = members.to(dev)
        bad_shape = x.dim() not in (2, 3) or (x.dim() == 3 and x.shape[0] != k)
        if bad_shape or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"predict: expected obs/act B x {self.obs_dim}/{self.act_dim} or "
                f"{k} x B x {self.obs_dim}/{self.act_dim}, got {tuple(obs.shape)}, "
                f"{tuple(act.shape)}"
            )
        shared = x.dim() == 2
        b = x.shape[0] if shared else x.shape[1]
        mean = torch.empty(k, b, self.out_dim, device=dev)
        var = torch.zeros(k, b, self.out_dim, device=dev)
        step = self.predict_chunk_rows
        with contextlib.ExitStack() as held:
            if self.config.precision == "bf16":  # every chunk multiplies the same bf16 weights
                for layer in self.linear_layers():
                    held.enter_context(layer.hold_cast(torch.bfloat16))
            for s in range(0, b, step):
                xc = x[s : s + step].expand(k, -1, -1) if shared else x[:, s : s + step]
                m, logvar = self(xc, members)
                mean[:, s : s + step] = m
                if not self.deterministic:
                    var[:, s : s + step] = torch.exp(logvar)
        if check_finite and not bool(torch.isfinite(mean).all()):
            raise NonFiniteError("model prediction has NaN/inf values")
        return mean, var
