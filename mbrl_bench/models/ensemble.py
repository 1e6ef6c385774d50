"""Probabilistic ensemble of MLP dynamics models, vectorised over members (MBPO / PETS).

Follows the official MBPO code (Janner et al. 2019, ``mbpo/models/bnn.py``):

* ``E`` members, each an MLP with ``num_layers`` hidden SiLU (swish) layers and one output layer;
  all members run at once, one :func:`torch.baddbmm` per layer with weights ``E x in x out``.
* Inputs ``[obs, act]`` are standardised by a :class:`Normalizer` fitted on the training split.
* Targets are the **raw** ``[Δobs, reward]`` (``Δobs = next_obs - obs``), not standardised, as in
  the official code: the holdout MSE that drives early stopping and elite choice is then measured
  in the environment's own units, and predictions need no un-scaling. (Reward is the *last*
  output column here; the official code puts it first.)
* Each output is Gaussian: a mean head and a log-variance head whose values are soft-bounded by
  learnable per-dimension ``max_logvar`` (init 0.5) and ``min_logvar`` (init -10), shared by all
  members, with the official regulariser ``w * (sum(max_logvar) - sum(min_logvar))``.
* Loss per member: ``mean((mu - y)^2 * exp(-logvar)) + mean(logvar)`` (the Gaussian NLL up to a
  factor 2 and a constant), summed over members, plus per-layer L2 weight decay
  ``wd_l * 0.5 * sum(W_l^2)`` on the weights (not biases) — ``tf.nn.l2_loss`` in the original.
* Training: a random holdout split, per-member independent shuffles of the training split each
  epoch, early stopping on the holdout MSE with per-member snapshots, then the ``num_elites``
  members with the lowest holdout MSE become the elites.

``deterministic=True`` gives a deterministic MLP ensemble with the same interface: only a mean head,
MSE loss, ``predict`` returns zero variance.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mbrl_bench.config import check
from mbrl_bench.errors import NonFiniteError

PREDICT_CHUNK_ROWS_CPU = 1024
"""Rows per member per forward pass of :meth:`ProbabilisticEnsemble.predict` / ``evaluate`` on CPU.

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
        if members is not None:
            weight, bias = weight[members], bias[members]
        return torch.baddbmm(bias, x, weight)

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
    """Settings of :class:`ProbabilisticEnsemble`; defaults are the official MBPO ones."""

    added_later: ClassVar[tuple[str, ...]] = ("improve_from_initial",)
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
    """Cap on epochs per :meth:`ProbabilisticEnsemble.fit`; None = no cap."""
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
        check(0 < self.holdout_ratio < 1, "holdout_ratio", "expected a number in (0, 1)")
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
    ``member_holdout_mse`` (``E``) are set by :meth:`fit` and saved in the ``state_dict``; the
    Adam optimiser is ``self.optimizer`` (checkpoint its ``state_dict`` separately).
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
        """Rows per member per chunk in predict/evaluate; may be changed after construction."""
        self.optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], cfg.lr)

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
        for layer in self.hidden:
            h = F.silu(layer(h, members))
        out = self.head(h, members)
        if self.deterministic:
            return out, torch.zeros_like(out)
        mean, logvar = out.split(self.out_dim, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def _member_loss(
        self, mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Per-member training loss ``E``: Gaussian NLL (no 1/2, no constant) or MSE."""
        sq = (mean - target).square()
        if self.deterministic:
            return sq.mean(dim=(1, 2))
        return (sq * torch.exp(-logvar)).mean(dim=(1, 2)) + logvar.mean(dim=(1, 2))

    def _regulariser(self) -> torch.Tensor:
        cfg = self.config
        reg = sum(
            (
                0.5 * wd * layer.weight.square().sum()
                for wd, layer in zip(cfg.weight_decays, self.linear_layers(), strict=True)
            ),
            torch.zeros((), device=self.device),
        )
        if not self.deterministic and cfg.learn_logvar_bounds:
            reg = reg + cfg.logvar_bound_weight * (self.max_logvar.sum() - self.min_logvar.sum())
        return reg

    # ------------------------------------------------------------------ data
    def _inputs_targets(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate transitions; return inputs ``N x (O+A)`` and targets ``N x (O+1)``."""
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

    @torch.no_grad()
    def _member_errors(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member MSE and NLL (``E`` each, means over rows and outputs) on shared data.

        ``x``: ``N x (O+A)``, ``y``: ``N x (O+1)``; evaluated in chunks of rows.
        """
        E, n = self.ensemble_size, x.shape[0]
        se_sum = torch.zeros(E, device=self.device)
        nll_sum = torch.zeros(E, device=self.device)
        for s in range(0, n, self.predict_chunk_rows):
            xc, yc = x[s : s + self.predict_chunk_rows], y[s : s + self.predict_chunk_rows]
            mean, logvar = self(xc.expand(E, -1, -1))
            se = (mean - yc).square()
            se_sum += se.sum(dim=(1, 2))
            nll_sum += (se * torch.exp(-logvar) + logvar).sum(dim=(1, 2))
        count = n * self.out_dim
        return se_sum / count, nll_sum / count

    # ------------------------------------------------------------------ training
    def fit(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        generator: torch.Generator,
    ) -> dict[str, float]:
        """Train on transitions ``obs N x O, act N x A, next_obs N x O, reward N``.

        Warm-starts from the current weights (and Adam state), like the official code. All
        randomness (holdout split, per-member shuffles) comes from ``generator``. Returns
        ``epochs``, ``train_loss`` (mean total loss over the last epoch's minibatches, summed over
        members), ``holdout_mse`` / ``holdout_nll`` (mean over elites, restored weights) and
        ``seconds``. Raises :class:`NonFiniteError` on non-finite data or loss.
        """
        cfg = self.config
        start = time.perf_counter()
        x, y = self._inputs_targets(obs, act, next_obs, reward)
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"fit needs at least 2 transitions (1 held out), got {n}")
        n_hold = max(1, min(int(n * cfg.holdout_ratio), cfg.max_holdout))
        gdev = generator.device
        perm = torch.randperm(n, generator=generator, device=gdev).to(self.device)
        x_hold, y_hold = x[perm[:n_hold]], y[perm[:n_hold]]
        x_train, y_train = x[perm[n_hold:]], y[perm[n_hold:]]
        n_train = x_train.shape[0]
        self.normalizer.fit(x_train)

        E = self.ensemble_size
        member_params = [p for layer in self.linear_layers() for p in (layer.weight, layer.bias)]
        snapshots = [p.detach().clone() for p in member_params]
        best = (self._member_errors(x_hold, y_hold)[0] if cfg.improve_from_initial
                else torch.full((E,), float("inf"), device=self.device))
        epochs = epochs_since_improvement = steps = 0
        train_loss = float("nan")
        while True:
            # one independent permutation of the training rows per member
            order = torch.rand(E, n_train, generator=generator, device=gdev).argsort(dim=1)
            order = order.to(self.device)
            total = torch.zeros((), device=self.device)
            num_batches = 0
            for s in range(0, n_train, cfg.batch_size):
                idx = order[:, s : s + cfg.batch_size]  # E x b
                mean, logvar = self(x_train[idx])
                loss = self._member_loss(mean, logvar, y_train[idx]).sum() + self._regulariser()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += loss.detach()
                num_batches += 1
                steps += 1
                if cfg.max_steps is not None and steps >= cfg.max_steps:
                    break
            epochs += 1
            train_loss = float(total) / num_batches
            if not math.isfinite(train_loss):
                raise NonFiniteError(f"model training loss became {train_loss} in epoch {epochs}")
            mse, _ = self._member_errors(x_hold, y_hold)
            if not bool(torch.isfinite(mse).all()):
                raise NonFiniteError(f"model holdout MSE became {mse.tolist()} in epoch {epochs}")
            improved = mse < best * (1.0 - cfg.improvement_threshold)
            if bool(improved.any()):
                with torch.no_grad():
                    for snap, p in zip(snapshots, member_params, strict=True):
                        snap.copy_(torch.where(improved.view(-1, 1, 1), p, snap))
                best = torch.where(improved, mse, best)
                epochs_since_improvement = 0
            else:
                epochs_since_improvement += 1
            if (
                epochs_since_improvement >= cfg.patience
                or (cfg.max_epochs is not None and epochs >= cfg.max_epochs)
                or (cfg.max_steps is not None and steps >= cfg.max_steps)
                or (
                    cfg.max_train_seconds is not None
                    and time.perf_counter() - start >= cfg.max_train_seconds
                )
            ):
                break

        with torch.no_grad():
            for snap, p in zip(snapshots, member_params, strict=True):
                p.copy_(snap)
        mse, nll = self._member_errors(x_hold, y_hold)
        elites = torch.argsort(mse)[: self.num_elites]
        self.elite_idx.copy_(elites)
        self.member_holdout_mse.copy_(mse)
        return {
            "epochs": float(epochs),
            "steps": float(steps),
            "train_loss": train_loss,
            "holdout_mse": float(mse[elites].mean()),
            "holdout_nll": float(nll[elites].mean()),
            "seconds": time.perf_counter() - start,
        }

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
        for s in range(0, b, step):
            xc = x[s : s + step].expand(k, -1, -1) if shared else x[:, s : s + step]
            m, logvar = self(xc, members)
            mean[:, s : s + step] = m
            if not self.deterministic:
                var[:, s : s + step] = torch.exp(logvar)
        if check_finite and not bool(torch.isfinite(mean).all()):
            raise NonFiniteError("model prediction has NaN/inf values")
        return mean, var

    @torch.no_grad()
    def evaluate(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Holdout-style errors on given transitions (e.g. the newest real data, MBPO's ε_m).

        Returns ``mse`` and ``nll`` (``E``, per member, means over rows and the ``O+1`` outputs,
        same definitions as the holdout loss; for deterministic models ``nll == mse``) and
        ``elite_mse`` / ``elite_nll`` (scalars, mean over the elites), all on the CPU.
        """
        x, y = self._inputs_targets(obs, act, next_obs, reward)
        if x.shape[0] == 0:
            raise ValueError("evaluate needs at least one transition")
        mse, nll = self._member_errors(x, y)
        e = self.elite_idx
        return {
            "mse": mse.cpu(),
            "nll": nll.cpu(),
            "elite_mse": mse[e].mean().cpu(),
            "elite_nll": nll[e].mean().cpu(),
        }
