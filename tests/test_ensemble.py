"""Tests of the vectorised probabilistic ensemble (mbrl_bench.models.ensemble) and its trainer
(mbrl_bench.models.trainer)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from mbrl_bench.config import build
from mbrl_bench.errors import ConfigError, NonFiniteError
from mbrl_bench.models.ensemble import (
    EnsembleLinear,
    Normalizer,
    ProbabilisticEnsemble,
    ProbabilisticEnsembleConfig,
)
from mbrl_bench.models.trainer import ModelTrainer

torch.set_num_threads(1)

# Small network so the file runs in seconds on one thread; algorithmic settings are the defaults.
SMALL = ProbabilisticEnsembleConfig(
    ensemble_size=5,
    num_elites=3,
    hidden_size=64,
    num_layers=3,
    weight_decays=(2.5e-5, 5e-5, 7.5e-5, 1e-4),
    batch_size=64,
    max_epochs=1000,
)
FIT_SEED = 2


def noise_std(x: torch.Tensor) -> torch.Tensor:
    """True heteroscedastic noise std of the sine task: 0.05 at x=-3 up to 0.35 at x=3."""
    return 0.05 + 0.05 * (x + 3.0)


def sine_data(
    n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """obs = x, act = 0, next_obs = x + sin(x) + noise_std(x) * eps, reward = 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 6.0 - 3.0
    nxt = x + torch.sin(x) + noise_std(x) * torch.randn(n, 1, generator=g)
    return x, torch.zeros(n, 1), nxt, torch.zeros(n)


@pytest.fixture(scope="module")
def fitted() -> tuple[ProbabilisticEnsemble, dict[str, float]]:
    model = ProbabilisticEnsemble(1, 1, SMALL, generator=torch.Generator().manual_seed(1))
    metrics = ModelTrainer(model).fit(*sine_data(2000),
                                      generator=torch.Generator().manual_seed(FIT_SEED))
    return model, metrics


def test_fit_recovers_mean_and_heteroscedastic_std(fitted):
    model, metrics = fitted
    xt = torch.linspace(-2.7, 2.7, 55)[:, None]
    mean, var = model.predict(xt, torch.zeros(55, 1))
    assert mean.shape == var.shape == (5, 55, 2)
    e = model.elite_idx
    err = (mean[e, :, 0] - torch.sin(xt)[:, 0]).abs()
    assert err.mean() < 0.04 and err.max() < 0.12
    pred_std = var[e, :, 0].sqrt().mean(dim=0)
    rel = (pred_std - noise_std(xt)[:, 0]).abs() / noise_std(xt)[:, 0]
    assert rel.mean() < 0.1 and rel.max() < 0.25, (pred_std, noise_std(xt)[:, 0])
    # the std grows with x by a factor ~3.5 over this range; a constant std would fail the above
    assert pred_std[-1] > 2.5 * pred_std[0]
    # reward is exactly 0: predicted near 0 with a small std
    assert mean[e, :, 1].abs().max() < 0.02 and var[e, :, 1].sqrt().max() < 0.02
    assert set(metrics) == {"epochs", "steps", "train_loss", "holdout_mse", "holdout_nll",
                            "seconds"}
    # holdout MSE averages Δobs (noise variance ~0.04 on average) and reward (0) columns
    assert 0.01 < metrics["holdout_mse"] < 0.03


def test_early_stopping_stops_before_cap(fitted):
    _, metrics = fitted
    assert SMALL.patience < metrics["epochs"] < (SMALL.max_epochs or 0)


def test_members_differ(fitted):
    model, _ = fitted
    xt = torch.linspace(-3.0, 3.0, 50)[:, None]
    mean, _ = model.predict(xt, torch.zeros(50, 1))
    spread = mean[:, :, 0].std(dim=0)
    assert spread.mean() > 1e-3  # independent inits and shuffles give different functions
    assert not torch.equal(model.linear_layers()[0].weight[0], model.linear_layers()[0].weight[1])


def test_elites_are_best_members_on_holdout(fitted):
    model, _ = fitted
    obs, act, nxt, rew = sine_data(2000)
    # the holdout split is the first draw of the fit generator: randperm(N)[:n_holdout]
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(FIT_SEED))
    hold = perm[: int(2000 * SMALL.holdout_ratio)]
    mean, _ = model.predict(obs[hold], act[hold])
    target = torch.cat([nxt[hold] - obs[hold], rew[hold, None]], dim=-1)
    mse = (mean - target).square().mean(dim=(1, 2))
    torch.testing.assert_close(mse, model.member_holdout_mse, rtol=1e-4, atol=1e-7)
    assert set(model.elite_idx.tolist()) == set(torch.argsort(mse)[:3].tolist())
    assert model.elite_idx.shape == (3,)
    ev = ModelTrainer(model).evaluate(obs[hold], act[hold], nxt[hold], rew[hold])
    torch.testing.assert_close(ev["mse"], mse, rtol=1e-4, atol=1e-7)
    assert ev["nll"].shape == (5,) and ev["elite_mse"].shape == ()


def test_logvar_is_bounded_and_forward_shapes(fitted):
    model, _ = fitted
    x = torch.randn(5, 7, 2) * 100.0  # far outside the data
    mean, logvar = model(x)
    assert mean.shape == logvar.shape == (5, 7, 2)
    assert (logvar <= model.max_logvar + 1e-5).all() and (logvar >= model.min_logvar - 1e-5).all()
    sub_mean, _ = model(x[[4, 2]], members=torch.tensor([4, 2]))
    torch.testing.assert_close(sub_mean, mean[[4, 2]])


def test_predict_per_member_batches_and_chunking(fitted):
    model, _ = fitted
    obs = torch.linspace(-3, 3, 30).reshape(30, 1)
    act = torch.zeros(30, 1)
    mean, var = model.predict(obs, act)
    per_member = model.predict(obs.expand(5, 30, 1), act.expand(5, 30, 1))
    old = model.predict_chunk_rows
    try:
        model.predict_chunk_rows = 7  # several chunks, last one partial
        chunked = model.predict(obs, act)
        sub = model.predict(
            obs.expand(2, 30, 1), act.expand(2, 30, 1), members=torch.tensor([3, 0])
        )
    finally:
        model.predict_chunk_rows = old
    torch.testing.assert_close(per_member[0], mean)
    torch.testing.assert_close(chunked[0], mean)
    torch.testing.assert_close(chunked[1], var)
    torch.testing.assert_close(sub[0], mean[[3, 0]])
    with pytest.raises(ValueError, match="predict"):
        model.predict(obs.expand(3, 30, 1), act.expand(3, 30, 1))


def test_state_dict_round_trip(fitted):
    model, _ = fitted
    sd = model.state_dict()
    assert {"normalizer.mean", "normalizer.std", "elite_idx", "member_holdout_mse"} <= set(sd)
    clone = ProbabilisticEnsemble(1, 1, SMALL, generator=torch.Generator().manual_seed(9))
    clone.load_state_dict(sd)
    assert torch.equal(clone.elite_idx, model.elite_idx)
    obs = torch.randn(4, 1)
    torch.testing.assert_close(
        clone.predict(obs, torch.zeros(4, 1)), model.predict(obs, torch.zeros(4, 1))
    )


def _tiny(**overrides: object) -> ProbabilisticEnsembleConfig:
    base = dataclasses.replace(SMALL, hidden_size=16, num_layers=2, weight_decays=(1e-5,) * 3)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_deterministic_mode():
    cfg = _tiny(deterministic=True, hidden_size=64, max_epochs=100)
    model = ProbabilisticEnsemble(1, 1, cfg, generator=torch.Generator().manual_seed(1))
    obs, act, nxt, rew = sine_data(800)
    nxt = obs + torch.sin(obs)  # noise-free
    trainer = ModelTrainer(model)
    metrics = trainer.fit(obs, act, nxt, rew, generator=torch.Generator().manual_seed(3))
    xt = torch.linspace(-2.7, 2.7, 40)[:, None]
    mean, var = model.predict(xt, torch.zeros(40, 1))
    assert torch.equal(var, torch.zeros_like(var))
    assert (mean[model.elite_idx, :, 0] - torch.sin(xt)[:, 0]).abs().mean() < 0.04
    assert metrics["holdout_mse"] < 1e-3  # the MLP fits the noise-free data closely
    _, logvar = model(xt.expand(5, 40, 1).repeat(1, 1, 2))
    assert torch.equal(logvar, torch.zeros_like(logvar))
    ev = trainer.evaluate(obs, act, nxt, rew)
    torch.testing.assert_close(ev["nll"], ev["mse"])


def test_same_seed_gives_identical_weights_and_other_seed_differs():
    data = sine_data(300)
    cfg = _tiny(max_epochs=3)

    def run(fit_seed: int) -> dict[str, torch.Tensor]:
        model = ProbabilisticEnsemble(1, 1, cfg, generator=torch.Generator().manual_seed(4))
        ModelTrainer(model).fit(*data, generator=torch.Generator().manual_seed(fit_seed))
        return model.state_dict()

    a, b, c = run(5), run(5), run(6)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_max_epochs_and_patience():
    data = sine_data(300)
    def fit_epochs(cfg: ProbabilisticEnsembleConfig) -> float:
        trainer = ModelTrainer(ProbabilisticEnsemble(1, 1, cfg))
        return trainer.fit(*data, generator=torch.Generator().manual_seed(0))["epochs"]

    assert fit_epochs(_tiny(max_epochs=2)) == 2
    # an impossible improvement threshold: only epoch 1 improves, then `patience` epochs do not
    assert fit_epochs(_tiny(patience=2, improvement_threshold=0.999999)) == 3
    assert fit_epochs(_tiny(max_train_seconds=1e-9)) == 1


def test_nan_data_and_nan_loss_fail_loudly():
    obs, act, nxt, rew = sine_data(100)
    model = ProbabilisticEnsemble(1, 1, _tiny(max_epochs=2))
    trainer = ModelTrainer(model)
    bad = nxt.clone()
    bad[17, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="next_obs"):
        trainer.fit(obs, act, bad, rew, generator=torch.Generator().manual_seed(0))
    bad_rew = rew.clone()
    bad_rew[3] = float("inf")
    with pytest.raises(NonFiniteError, match="reward"):
        trainer.fit(obs, act, nxt, bad_rew, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.linear_layers()[0].weight[2, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        trainer.fit(obs, act, nxt, rew, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteError):
        model.predict(obs, act)


def test_shape_errors():
    trainer = ModelTrainer(ProbabilisticEnsemble(1, 1, _tiny()))
    obs, act, nxt, rew = sine_data(10)
    with pytest.raises(ValueError, match="expected obs N x 1"):
        trainer.fit(obs, act, nxt[:5], rew, generator=torch.Generator())
    with pytest.raises(ValueError, match="at least 2"):
        trainer.fit(obs[:1], act[:1], nxt[:1], rew[:1], generator=torch.Generator())


def test_ensemble_linear_and_normalizer():
    g = torch.Generator().manual_seed(0)
    layer = EnsembleLinear(3, 400, 5, generator=g)
    assert layer.weight.shape == (3, 400, 5) and layer.bias.shape == (3, 1, 5)
    std = 1.0 / (2.0 * 400**0.5)
    assert layer.weight.abs().max() <= 2 * std + 1e-7
    assert abs(layer.weight.std().item() - 0.88 * std) < 0.1 * std  # truncated at 2 std
    x = torch.randn(3, 4, 400)
    expected = torch.stack([x[e] @ layer.weight[e] + layer.bias[e] for e in range(3)])
    torch.testing.assert_close(layer(x), expected)

    norm = Normalizer(3)
    data = torch.stack([torch.randn(50) * 5 + 2, torch.randn(50), torch.full((50,), 7.0)], 1)
    norm.fit(data)
    out = norm(data)
    torch.testing.assert_close(out[:, :2].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, :2].std(0, unbiased=False), torch.ones(2))
    assert torch.equal(out[:, 2], torch.zeros(50))  # constant column: centred, std replaced by 1
    assert set(norm.state_dict()) == {"mean", "std"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_elites": 8}, "num_elites"),
        ({"ensemble_size": 0}, "ensemble_size"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_layers": 3}, "weight_decays"),
        ({"weight_decays": (1.0, 1.0, 1.0, 1.0, -1.0)}, "weight_decays"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"holdout_ratio": 1.0}, "holdout_ratio"),
        ({"holdout_ratio": 0.0}, "holdout_ratio"),
        ({"max_holdout": 0}, "max_holdout"),
        ({"patience": 0}, "patience"),
        ({"improvement_threshold": -0.1}, "improvement_threshold"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_train_seconds": 0.0}, "max_train_seconds"),
        ({"logvar_bound_weight": -1.0}, "logvar_bound_weight"),
    ],
)
def test_config_validation(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        ProbabilisticEnsembleConfig(**overrides)
    with pytest.raises(ConfigError) as info:
        build(ProbabilisticEnsembleConfig, overrides, "recipe.toml", prefix="model.")
    assert info.value.key == f"model.{field}"


def test_config_defaults_are_official_mbpo_and_buildable():
    cfg = build(ProbabilisticEnsembleConfig, {"max_epochs": 10}, "recipe.toml")
    assert (cfg.ensemble_size, cfg.num_elites, cfg.hidden_size, cfg.num_layers) == (7, 5, 200, 4)
    assert (cfg.lr, cfg.batch_size, cfg.holdout_ratio, cfg.max_holdout) == (1e-3, 256, 0.2, 5000)
    assert (cfg.patience, cfg.improvement_threshold, cfg.max_epochs) == (5, 0.01, 10)
    model = ProbabilisticEnsemble(3, 2, cfg)
    assert [layer.weight.shape for layer in model.linear_layers()] == [
        (7, 5, 200),
        (7, 200, 200),
        (7, 200, 200),
        (7, 200, 200),
        (7, 200, 8),
    ]


def test_max_steps_caps_gradient_steps_whatever_the_data_size() -> None:
    from mbrl_bench.models.ensemble import ProbabilisticEnsemble, ProbabilisticEnsembleConfig

    cfg = ProbabilisticEnsembleConfig(ensemble_size=2, num_elites=1, hidden_size=8, num_layers=1,
                                      weight_decays=(0.0, 0.0), batch_size=16, max_steps=7,
                                      patience=1000)
    g = torch.Generator().manual_seed(0)
    for n in (100, 1000):
        model = ProbabilisticEnsemble(2, 1, cfg, generator=g)
        x = torch.randn(n, 2, generator=g)
        out = ModelTrainer(model).fit(x, torch.randn(n, 1, generator=g), x + 0.1,
                                      torch.zeros(n), g)
        assert out["steps"] == 7


def test_improvement_from_the_initial_model_stops_a_refit_that_cannot_improve():
    data = sine_data(300)
    model = ProbabilisticEnsemble(1, 1, _tiny(max_epochs=5))
    trainer = ModelTrainer(model)
    trainer.fit(*data, generator=torch.Generator().manual_seed(0))
    weights = [layer.weight.detach().clone() for layer in model.linear_layers()]
    # nothing can improve by 99.9999%: the warm-started weights stay, after `patience` epochs
    trainer.config = dataclasses.replace(trainer.config, max_epochs=None, patience=2,
                                         improvement_threshold=0.999999,
                                         improve_from_initial=True)
    assert trainer.fit(*data, generator=torch.Generator().manual_seed(1))["epochs"] == 2
    assert all(torch.equal(w, layer.weight)
               for w, layer in zip(weights, model.linear_layers(), strict=True))


def test_trainer_state_dict_resumes_a_fit_exactly():
    data = sine_data(300)
    cfg = _tiny(max_epochs=2)
    model = ProbabilisticEnsemble(1, 1, cfg, generator=torch.Generator().manual_seed(4))
    trainer = ModelTrainer(model)
    trainer.fit(*data, generator=torch.Generator().manual_seed(0))
    assert set(trainer.state_dict()) == {"optimizer"}
    clone = ProbabilisticEnsemble(1, 1, cfg, generator=torch.Generator().manual_seed(9))
    clone.load_state_dict(model.state_dict())
    clone_trainer = ModelTrainer(clone)
    # a copy, as a checkpoint file gives (Adam's load_state_dict keeps the tensors it is given)
    clone_trainer.load_state_dict(copy.deepcopy(trainer.state_dict()))
    fresh = ProbabilisticEnsemble(1, 1, cfg)
    fresh.load_state_dict(model.state_dict())
    for t in (trainer, clone_trainer, ModelTrainer(fresh)):  # the last one restarts Adam
        t.fit(*data, generator=torch.Generator().manual_seed(1))
    a, b, c = model.state_dict(), clone.state_dict(), fresh.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_trainer_rejects_weight_decays_of_another_depth():
    model = ProbabilisticEnsemble(1, 1, _tiny())
    with pytest.raises(ValueError, match="weight_decays"):
        ModelTrainer(model, dataclasses.replace(SMALL))


def test_bf16_precision_runs_products_in_bf16_and_stays_close_to_fp32() -> None:
    """``precision = "bf16"``: the same weights give fp32 outputs within 2% of the fp32
    network's (not equal: the products really are bf16), and a short fit on the sine task
    reaches a holdout MSE close to the fp32 fit's."""
    cfg = dataclasses.replace(SMALL, max_epochs=5)
    bf16 = dataclasses.replace(cfg, precision="bf16")
    nets = [ProbabilisticEnsemble(1, 1, c, generator=torch.Generator().manual_seed(1))
            for c in (cfg, bf16)]
    x = torch.randn(5, 300, 2, generator=torch.Generator().manual_seed(3))
    (m32, _), (m16, lv16) = (net(x) for net in nets)
    assert m16.dtype == lv16.dtype == torch.float32
    scale = m32.abs().max()
    assert 0 < float((m16 - m32).abs().max().detach()) < 0.02 * float(scale.detach())
    fits = [ModelTrainer(net).fit(*sine_data(500), generator=torch.Generator().manual_seed(4))
            for net in nets]
    mse32, mse16 = fits[0]["holdout_mse"], fits[1]["holdout_mse"]
    assert math.isfinite(mse16) and abs(mse16 - mse32) < 0.25 * mse32, (mse32, mse16)
    with pytest.raises(ConfigError, match="precision"):
        build(ProbabilisticEnsembleConfig, {"precision": "fp16"}, "t.toml")


def test_bf16_predictions_cast_the_weights_once_per_call_and_equal_casting_at_every_layer() -> None:
    """A bf16 ``predict`` casts each layer's weights once for all its chunks and gives exactly
    what forwards that autocast at every layer give, before and after an optimiser step and a
    ``load_state_dict`` (nothing cast is kept past the call); the chunk size does not change
    any row's prediction."""
    net = ProbabilisticEnsemble(1, 1, _tiny(precision="bf16"),
                                generator=torch.Generator().manual_seed(1))
    obs, act = torch.randn(700, 1), torch.randn(700, 1)

    def cast_at_every_layer() -> torch.Tensor:
        with torch.no_grad():
            return net(torch.cat([obs, act], -1).expand(5, -1, -1))[0]

    def predicted(chunk: int = 64) -> torch.Tensor:
        net.predict_chunk_rows = chunk
        return net.predict(obs, act)[0]

    held_at_forward: list[bool] = []
    hooks = [layer.register_forward_pre_hook(
        lambda m, args: held_at_forward.append(m.held is not None))
        for layer in net.linear_layers()]
    first = predicted()
    for h in hooks:
        h.remove()
    assert held_at_forward and all(held_at_forward)  # every chunk's every layer: held casts
    assert torch.equal(first, cast_at_every_layer())
    assert all(layer.held is None for layer in net.linear_layers())
    first_layer = net.linear_layers()[0]
    with (first_layer.hold_cast(torch.bfloat16), torch.autocast("cpu", torch.bfloat16),
          pytest.raises(RuntimeError, match="hold_cast")):
        net(torch.randn(5, 3, 2))  # a forward that takes gradients: refused
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    net(torch.randn(5, 30, 2))[0].pow(2).mean().backward()
    opt.step()  # fused Adam moves no version counter: a cache keyed on them would be stale
    moved = predicted()
    assert not torch.equal(moved, first) and torch.equal(moved, cast_at_every_layer())
    other = ProbabilisticEnsemble(1, 1, _tiny(precision="bf16"),
                                  generator=torch.Generator().manual_seed(2))
    net.load_state_dict(other.state_dict())
    assert torch.equal(predicted(), cast_at_every_layer())
    assert torch.equal(predicted(1024), predicted(64))
