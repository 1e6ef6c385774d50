"""Fitting a :class:`~mbrl_bench.models.ensemble.ProbabilisticEnsemble` to real transitions.

:class:`ModelTrainer` is the one fit every loop uses (MBPO's model phase, PETS's MPC loop). It
follows the official MBPO code (Janner et al. 2019, ``mbpo/models/bnn.py``):

* Loss per member: ``mean((mu - y)^2 * exp(-logvar)) + mean(logvar)`` (the Gaussian NLL up to a
  factor 2 and a constant), or the MSE for a deterministic ensemble, summed over members, plus
  per-layer L2 weight decay ``wd_l * 0.5 * sum(W_l^2)`` on the weights (not biases) —
  ``tf.nn.l2_loss`` in the original — and the log-variance bound regulariser
  ``w * (sum(max_logvar) - sum(min_logvar))``.
* A random holdout split; the input normaliser is fitted on the training split; per-member
  independent shuffles of the training split each epoch, minibatches of ``batch_size`` rows per
  member, one Adam step each.
* Early stopping on the holdout MSE (raw target units) with per-member snapshots of the best
  weights, restored at the end; then the ``num_elites`` members with the lowest holdout MSE become
  the model's elites.

The settings are the training fields of the model's recipe table
(:class:`~mbrl_bench.models.ensemble.ProbabilisticEnsembleConfig`). :meth:`ModelTrainer.loss` is the
loss of one minibatch; a trainer with another loss (e.g. SLBO's multi-step loss) replaces that
method and how batches are drawn, and keeps the rest.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from mbrl_bench.devices import randperm
from mbrl_bench.errors import NonFiniteError
from mbrl_bench.models.ensemble import ProbabilisticEnsemble, ProbabilisticEnsembleConfig


class ModelTrainer:
    """Fits ``model`` in place with Adam; the optimiser's state lives here (see :meth:`state_dict`).

    ``config``: the training settings (``lr``, ``weight_decays``, ``batch_size``, holdout, early
    stopping and caps, ``logvar_bound_weight``); default ``model.config``. The network's own
    settings (sizes, ``deterministic``, ``learn_logvar_bounds``) are read from ``model``.
    """

    def __init__(
        self, model: ProbabilisticEnsemble, config: ProbabilisticEnsembleConfig | None = None
    ) -> None:
        cfg = config if config is not None else model.config
        if len(cfg.weight_decays) != len(model.linear_layers()):
            raise ValueError(f"weight_decays: expected {len(model.linear_layers())} values (one "
                             f"per linear layer of the model), got {len(cfg.weight_decays)}")
        if cfg.loss == "l2" and not model.deterministic:
            raise ValueError("model.loss: 'l2' is for a deterministic model (name = "
                             "\"deterministic\"); a probabilistic one learns its variance "
                             "with 'auto'")
        self.model = model
        self.config = cfg
        self.target_std = torch.ones(model.out_dim, device=model.device)
        """Per-column std of the targets of the last fit's training rows (the ``l2`` loss's
        scale; 1 where a column is constant)."""
        self.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                          cfg.lr)

    # ------------------------------------------------------------------ loss
    def member_loss(
        self, mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Per-member loss ``E`` from ``mean, logvar, target`` (each ``E x B x (O+1)``), by
        ``config.loss``: Gaussian NLL (no 1/2, no constant), or the MSE for a deterministic
        model (``auto``); the MSE (``mse``); SLBO's un-squared scaled norm per row, averaged
        over rows (``l2``)."""
        sq = (mean - target).square()
        if self.config.loss == "l2":
            return ((sq / self.target_std.square()).mean(-1) + 1e-12).sqrt().mean(-1)
        if self.model.deterministic or self.config.loss == "mse":
            return sq.mean(dim=(1, 2))
        return (sq * torch.exp(-logvar)).mean(dim=(1, 2)) + logvar.mean(dim=(1, 2))

    def regulariser(self) -> torch.Tensor:
        """Scalar: L2 weight decay per linear layer plus the log-variance bound regulariser."""
        model, cfg = self.model, self.config
        reg = sum(
            (
                0.5 * wd * layer.weight.square().sum()
                for wd, layer in zip(cfg.weight_decays, model.linear_layers(), strict=True)
            ),
            torch.zeros((), device=model.device),
        )
        if not model.deterministic and model.max_logvar.requires_grad:
            reg = reg + cfg.logvar_bound_weight * (model.max_logvar.sum() - model.min_logvar.sum())
        return reg

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of one minibatch: inputs ``x`` ``E x b x (O+A)`` (member ``e``
        sees batch ``e``), raw targets ``y`` ``E x b x (O+1)``; member losses summed, plus the
        regulariser. The hook for another loss (e.g. a multi-step one)."""
        mean, logvar = self.model(x)
        return self.member_loss(mean, logvar, y).sum() + self.regulariser()

    def multi_step_loss(self, x: torch.Tensor, y: torch.Tensor, cont: torch.Tensor,
                        idx: torch.Tensor) -> torch.Tensor:
        """Scalar H-step loss (``config.multi_step = H``) of the units starting at rows ``idx``
        (``E x b``) of the time-ordered data ``x N x (O+A)``, ``y N x (O+1)``; ``cont`` (``N``)
        is 1 where the row's episode continues into the next row. Step ``h`` feeds the model
        its own predicted state (the real one again after an episode end) with the real action
        ``h``; the per-member loss is the mean of the steps' :meth:`member_loss`. At H = 1 it
        equals :meth:`loss` of those rows."""
        model, horizon, od = self.model, self.config.multi_step, self.model.obs_dim
        obs = x[idx][..., :od]
        total = torch.zeros(model.ensemble_size, device=model.device)
        for h in range(horizon):
            rows = idx + h
            xr = x[rows]
            mean, logvar = model(torch.cat([obs, xr[..., od:]], dim=-1))
            total = total + self.member_loss(mean, logvar, y[rows])
            if h + 1 < horizon:
                keep = cont[rows].unsqueeze(-1) > 0
                obs = torch.where(keep, obs + mean[..., :od], x[rows + 1][..., :od])
        return (total / horizon).sum() + self.regulariser()

    @torch.no_grad()
    def member_errors(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member MSE and NLL (``E`` each, means over rows and outputs) on shared data.

        ``x``: ``N x (O+A)``, ``y``: ``N x (O+1)``; evaluated in chunks of the model's
        ``predict_chunk_rows`` rows.
        """
        model = self.model
        E, n, step = model.ensemble_size, x.shape[0], model.predict_chunk_rows
        se_sum = torch.zeros(E, device=model.device)
        nll_sum = torch.zeros(E, device=model.device)
        for s in range(0, n, step):
            xc, yc = x[s : s + step], y[s : s + step]
            mean, logvar = model(xc.expand(E, -1, -1))
            se = (mean - yc).square()
            se_sum += se.sum(dim=(1, 2))
            nll_sum += (se * torch.exp(-logvar) + logvar).sum(dim=(1, 2))
        count = n * model.out_dim
        return se_sum / count, nll_sum / count

    # ------------------------------------------------------------------ training
    def fit(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        generator: torch.Generator,
        ended: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Train on transitions ``obs N x O, act N x A, next_obs N x O, reward N``.

        With ``config.multi_step = H > 1`` the rows must be in time order and ``ended`` (``N``,
        1 where a row ends its episode by termination or time limit) says where trajectories
        break; the training units are then the ``N - H + 1`` runs of H consecutive rows. With
        ``holdout_ratio = 0`` nothing is held out: the fit runs until ``max_steps`` /
        ``max_epochs``, no early stopping, all members stay elites and the holdout errors are
        NaN.

        Warm-starts from the model's current weights and this trainer's Adam state, like the
        official code. All randomness (holdout split, per-member shuffles) comes from
        ``generator``. Sets the model's normaliser, restores each member's best weights and sets
        ``elite_idx`` / ``member_holdout_mse``. Returns ``epochs``, ``steps``, ``train_loss``
        (mean total loss over the last epoch's minibatches, summed over members),
        ``holdout_mse`` / ``holdout_nll`` (mean over elites, restored weights) and ``seconds``.
        Raises :class:`NonFiniteError` on non-finite data or loss.
        """
        start = time.perf_counter()
        model, cfg = self.model, self.config
        x, y = model.inputs_targets(obs, act, next_obs, reward)
        cont, n_units = self._units(x.shape[0], ended)
        n_hold = (max(1, min(int(n_units * cfg.holdout_ratio), cfg.max_holdout))
                  if cfg.holdout_ratio > 0 else 0)
        perm = randperm(n_units, generator, model.device)
        hold, train = perm[:n_hold], perm[n_hold:]
        x_hold, y_hold = x[hold], y[hold]
        model.normalizer.fit(x[train])
        if cfg.loss == "l2":
            std = y[train].std(dim=0, unbiased=False)
            self.target_std = torch.where(std < 1e-6, torch.ones_like(std), std)

        stopper = None
        if n_hold:
            stopper = _EarlyStopping(model, cfg, self.member_errors(x_hold, y_hold)[0]
                                     if cfg.improve_from_initial else None)
        epochs = steps = 0
        train_loss = float("nan")
        while True:
            train_loss, steps = self._epoch(x, y, cont, train, generator, steps)
            epochs += 1
            if not math.isfinite(train_loss):
                raise NonFiniteError(f"model training loss became {train_loss} in epoch {epochs}")
            if stopper is not None:
                mse, _ = self.member_errors(x_hold, y_hold)
                if not bool(torch.isfinite(mse).all()):
                    raise NonFiniteError(
                        f"model holdout MSE became {mse.tolist()} in epoch {epochs}")
                stopper.update(mse)
                if stopper.patience_over():
                    break
            if self._cap_reached(epochs, steps, start):
                break

        out = {"epochs": float(epochs), "steps": float(steps), "train_loss": train_loss,
               "holdout_mse": math.nan, "holdout_nll": math.nan}
        if stopper is not None:
            stopper.restore_best()
            mse, nll = self.member_errors(x_hold, y_hold)
            elites = torch.argsort(mse)[: model.num_elites]
            model.elite_idx.copy_(elites)
            model.member_holdout_mse.copy_(mse)
            out.update(holdout_mse=float(mse[elites].mean()),
                       holdout_nll=float(nll[elites].mean()))
        return {**out, "seconds": time.perf_counter() - start}

    def _units(self, n: int, ended: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """``cont`` (``N``: 1 where a row's episode continues into the next row) and the number
        of training units (unit ``u`` = rows ``u .. u + H - 1``) of ``n`` time-ordered rows."""
        cfg, dev = self.config, self.model.device
        horizon = cfg.multi_step
        cont = torch.ones(n, device=dev)
        if horizon > 1:
            if ended is None:
                raise ValueError("fit: multi_step > 1 needs `ended` (where episodes end)")
            cont = 1.0 - torch.as_tensor(ended, dtype=torch.float32, device=dev)
        n_units = n - horizon + 1
        min_units = 2 if cfg.holdout_ratio > 0 else 1
        if n_units < min_units:
            raise ValueError(f"fit needs at least {min_units + horizon - 1} transitions "
                             f"(multi_step {horizon}, holdout {cfg.holdout_ratio}), got {n}")
        return cont, n_units

    def _epoch(
        self, x: torch.Tensor, y: torch.Tensor, cont: torch.Tensor, units: torch.Tensor,
        generator: torch.Generator, steps: int,
    ) -> tuple[float, int]:
        """One pass over the training units (first rows ``units``, ``U``) of ``x N x (O+A)``,
        ``y N x (O+1)`` in an independent order per member (stopping early at ``max_steps``);
        returns the mean minibatch loss and the gradient steps taken in this fit so far."""
        cfg, E, n = self.config, self.model.ensemble_size, units.shape[0]
        order = torch.rand(E, n, generator=generator, device=generator.device).argsort(dim=1)
        order = units[order.to(self.model.device)]
        total = torch.zeros((), device=self.model.device)
        num_batches = 0
        for s in range(0, n, cfg.batch_size):
            idx = order[:, s : s + cfg.batch_size]  # E x b
            loss = (self.loss(x[idx], y[idx]) if cfg.multi_step == 1
                    else self.multi_step_loss(x, y, cont, idx))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"],
                                               cfg.grad_clip)
            self.optimizer.step()
            total += loss.detach()
            num_batches += 1
            steps += 1
            if cfg.max_steps is not None and steps >= cfg.max_steps:
                break
        return float(total) / num_batches, steps

    def _cap_reached(self, epochs: int, steps: int, start: float) -> bool:
        """Whether ``max_epochs``, ``max_steps`` or ``max_train_seconds`` ends the fit."""
        cfg = self.config
        return (
            (cfg.max_epochs is not None and epochs >= cfg.max_epochs)
            or (cfg.max_steps is not None and steps >= cfg.max_steps)
            or (cfg.max_train_seconds is not None
                and time.perf_counter() - start >= cfg.max_train_seconds)
        )

    # ------------------------------------------------------------------ evaluation
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
        x, y = self.model.inputs_targets(obs, act, next_obs, reward)
        if x.shape[0] == 0:
            raise ValueError("evaluate needs at least one transition")
        mse, nll = self.member_errors(x, y)
        e = self.model.elite_idx
        return {
            "mse": mse.cpu(),
            "nll": nll.cpu(),
            "elite_mse": mse[e].mean().cpu(),
            "elite_nll": nll[e].mean().cpu(),
        }

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state (the model's weights are checkpointed with the model)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class _EarlyStopping:
    """Per-member early stopping on the holdout MSE with snapshots of each member's best weights.

    A member improves when its MSE falls below ``best * (1 - improvement_threshold)``; ``best``
    starts at ``initial`` (``E``) or +inf. The fit stops after ``patience`` epochs in a row in
    which no member improved.
    """

    def __init__(
        self, model: ProbabilisticEnsemble, config: ProbabilisticEnsembleConfig,
        initial: torch.Tensor | None,
    ) -> None:
        self.config = config
        self.params = [p for layer in model.linear_layers() for p in (layer.weight, layer.bias)]
        self.snapshots = [p.detach().clone() for p in self.params]
        self.best = (initial if initial is not None
                     else torch.full((model.ensemble_size,), float("inf"), device=model.device))
        self.epochs_since_improvement = 0

    @torch.no_grad()
    def update(self, mse: torch.Tensor) -> None:
        """Record one epoch's holdout MSE ``E``, snapshotting the members that improved."""
        improved = mse < self.best * (1.0 - self.config.improvement_threshold)
        if bool(improved.any()):
            for snap, p in zip(self.snapshots, self.params, strict=True):
                snap.copy_(torch.where(improved.view(-1, 1, 1), p, snap))
            self.best = torch.where(improved, mse, self.best)
            self.epochs_since_improvement = 0
        else:
            self.epochs_since_improvement += 1

    def patience_over(self) -> bool:
        return self.epochs_since_improvement >= self.config.patience

    @torch.no_grad()
    def restore_best(self) -> None:
        """Copy each member's best weights back into the model."""
        for snap, p in zip(self.snapshots, self.params, strict=True):
            p.copy_(snap)


def legacy_trainer_state(state: dict[str, Any]) -> dict[str, Any]:
    """The trainer's state in a checkpoint: ``state["model_trainer"]``, or, in checkpoints
    written before the trainer was separate from the model, the model's optimiser state
    ``state["model_opt"]`` (so older runs still resume)."""
    if "model_trainer" in state:
        return state["model_trainer"]  # type: ignore[no-any-return]
    return {"optimizer": state["model_opt"]}
