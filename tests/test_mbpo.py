"""MBPO parts: k schedule, branched rollouts, the model phase, diagnostics, recipes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributions as D

from mbrl_bench.buffer import Batch, ReplayBuffer
from mbrl_bench.diagnostics import (
    branched_bound,
    gaussian_kl,
    mbpo_bound,
    pinsker_tv,
    rollout_length,
)
from mbrl_bench.envs.point_mass import point_mass_termination
from mbrl_bench.errors import ConfigError
from mbrl_bench.models.ensemble import ProbabilisticEnsemble, ProbabilisticEnsembleConfig
from mbrl_bench.models.model_env import ModelEnv
from mbrl_bench.optimizers.sac import SAC, SACConfig
from mbrl_bench.rollouts.branched import (
    BranchedModelData,
    BranchedRolloutConfig,
    branched_rollout,
    compounding_error,
    model_return,
)
from mbrl_bench.spec import load_recipe

SMALL_MODEL = ProbabilisticEnsembleConfig(ensemble_size=3, num_elites=2, hidden_size=32,
                                          num_layers=2, weight_decays=(0.0, 0.0, 0.0),
                                          max_epochs=5)


def test_rollout_length_schedule_matches_the_official_code() -> None:
    sched = (20, 150, 1, 15)
    assert [rollout_length(e, sched) for e in (0, 20, 85, 150, 400)] == [1, 1, 8, 15, 15]
    assert rollout_length(7, (1, 15, 1, 1)) == 1


def test_gaussian_kl_matches_torch_and_pinsker_caps() -> None:
    g = torch.Generator().manual_seed(0)
    mp, mq = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    lp, lq = torch.randn(5, 3, generator=g) * 0.3, torch.randn(5, 3, generator=g) * 0.3
    ref = D.kl_divergence(D.Independent(D.Normal(mp, lp.exp()), 1),
                          D.Independent(D.Normal(mq, lq.exp()), 1))
    assert torch.allclose(gaussian_kl(mp, lp, mq, lq), ref, atol=1e-5)
    assert torch.equal(pinsker_tv(torch.tensor([0.0, 0.5, 50.0])), torch.tensor([0.0, 0.5, 1.0]))


def test_bounds_hand_computed() -> None:
    # C = 2*0.9*2*(0.1+0.4)/0.01 + 4*2*0.2/0.1 = 180 + 16
    assert mbpo_bound(0.1, 0.2, 0.9, 2.0) == pytest.approx(196.0)
    # 2*2*[0.81*0.2/0.01 + (0.9+2)*0.2/0.1 + 1*(0.1+0.4)/0.1] = 4*(16.2+5.8+5) = 108
    assert branched_bound(0.1, 0.2, 0.9, 2.0, k=1) == pytest.approx(108.0)
    # no model error, no policy shift: no penalty
    assert mbpo_bound(0, 0, 0.99, 1.0) == 0 and branched_bound(0, 0, 0.99, 1.0, 5) == 0


class _ConstModel:
    """A stand-in model: Δobs = +1 in x, reward 1, for every member (deterministic)."""

    obs_dim, act_dim, ensemble_size, deterministic = 4, 2, 3, True
    device = torch.device("cpu")
    elite_idx = torch.tensor([0, 1])

    def predict(self, obs, act, members=None, check_finite=True):  # type: ignore[no-untyped-def]
        k = 3 if members is None else len(members)
        n = obs.shape[-2]
        mean = torch.zeros(k, n, 5)
        mean[..., 0] = 1.0
        mean[..., 4] = 1.0
        return mean, torch.zeros_like(mean)


class _ZeroPolicy:
    def act_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return torch.zeros(obs.shape[0], 2)


def test_branched_rollouts_stop_where_they_terminate() -> None:
    env = ModelEnv(_ConstModel(), point_mass_termination(None), propagation="elites",  # type: ignore[arg-type]
                   generator=torch.Generator().manual_seed(0))
    # x starts at 0.5 / -1.5 / 1.75: the box is |x| <= 2, each step adds 1 to x
    start = torch.tensor([[0.5, 0, 0, 0], [-1.5, 0, 0, 0], [1.75, 0, 0, 0]])
    batch, stats = branched_rollout(env, _ZeroPolicy(), start, k=5)
    xs, term = batch.obs[:, 0].tolist(), batch.terminated.tolist()
    # row 0: 0.5 -> 1.5 -> 2.5 (terminal); row 1: -1.5 .. 2.5 over 4 steps; row 2: terminal at once
    assert sorted(zip(xs, term, strict=True)) == sorted([
        (0.5, 0.0), (1.5, 1.0), (-1.5, 0.0), (-0.5, 0.0), (0.5, 0.0), (1.5, 1.0), (1.75, 1.0)])
    assert stats["rollout_len_mean"] == pytest.approx(7 / 3)
    assert batch.rew.eq(1.0).all()


def test_model_return_sums_rewards_until_termination_or_horizon() -> None:
    env = ModelEnv(_ConstModel(), point_mass_termination(None), propagation="elites",  # type: ignore[arg-type]
                   generator=torch.Generator().manual_seed(0))
    start = torch.tensor([[0.5, 0, 0, 0], [-1.5, 0, 0, 0], [1.75, 0, 0, 0]])
    # reward 1 per step up to and including the terminating one (see the test above)
    assert model_return(env, _ZeroPolicy(), start, horizon=10).tolist() == [2.0, 4.0, 1.0]
    assert model_return(env, _ZeroPolicy(), start, horizon=3).tolist() == [2.0, 3.0, 1.0]


def make_phase(real_ratio: float = 0.25, k_schedule=(0, 1, 1, 1)) -> tuple[BranchedModelData, SAC]:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    agent = SAC(4, 2, -np.ones(2), np.ones(2), SACConfig(hidden_sizes=(16, 16)), g)
    model = ProbabilisticEnsemble(4, 2, SMALL_MODEL, generator=g)
    cfg = BranchedRolloutConfig(model_train_freq=50, rollout_batch_size=64, epoch_length=100,
                                k_schedule=k_schedule, real_ratio=real_ratio)
    phase = BranchedModelData(model, point_mass_termination(None), cfg, 4, 2, start_step=100,  # type: ignore[arg-type]
                              generator=g)
    return phase, agent


def fill_real(n: int) -> ReplayBuffer:
    g = torch.Generator().manual_seed(1)
    real = ReplayBuffer(4, 2, 1000)
    obs = torch.rand(n, 4, generator=g) - 0.5
    act = torch.rand(n, 2, generator=g) * 2 - 1
    nxt = obs + 0.1 * torch.cat([act, act], dim=1)
    real.add(obs, act, -nxt[:, :2].norm(dim=1), nxt, torch.zeros(n))
    return real


def test_model_phase_fits_rolls_out_mixes_and_diagnoses() -> None:
    phase, agent = make_phase()
    real = fill_real(100)
    phase.after_step(99, real, agent)  # before the start step: nothing
    assert len(phase.model_buffer) == 0
    phase.after_step(100, real, agent)  # first fit + rollouts
    assert len(phase.model_buffer) == 64 and phase.last["k"] == 1
    assert phase.model_buffer.capacity == 1 * 64 * 2  # k * batch * fits per epoch * epochs
    b = phase.sample(16, real, torch.Generator().manual_seed(2))
    assert isinstance(b, Batch) and b.obs.shape == (16, 4)
    real2 = fill_real(150)
    phase.after_step(150, real2, agent)  # second fit: diagnostics on the 50 new rows
    d = phase.diagnostics(150, agent)
    for key in ("eps_m", "eps_pi", "eps_pi_kl", "bound_full", "bound_branched", "r_max",
                "model_fit_epochs", "compounding_mse_h1"):
        assert math.isfinite(d[key]), key
    assert d["eps_pi"] == 0.0  # the policy has not been updated since the snapshot
    assert set(d) <= set(phase.metric_keys)
    assert len(phase.model_buffer) == 128  # capacity reached, newest kept
    # model exploitation: measured with the caller's generator, the training's is untouched
    before = phase.generator.get_state()
    pred = phase.predicted_return(agent, real2.all().obs[:5], 50, torch.Generator().manual_seed(3))
    assert math.isfinite(pred) and torch.equal(phase.generator.get_state(), before)


def test_predicted_return_is_nan_before_the_first_fit() -> None:
    phase, agent = make_phase()
    assert math.isnan(phase.predicted_return(agent, torch.zeros(2, 4), 10,
                                             torch.Generator().manual_seed(0)))


def test_model_phase_state_round_trips() -> None:
    phase, agent = make_phase()
    real = fill_real(100)
    phase.after_step(100, real, agent)
    other, _ = make_phase()
    other.load_state_dict(phase.state_dict())
    assert torch.equal(other.model_buffer.all().obs, phase.model_buffer.all().obs)
    x = torch.rand(3, 4), torch.rand(3, 2)
    assert torch.equal(other.model.predict(*x)[0], phase.model.predict(*x)[0])


def test_compounding_error_grows_with_horizon_for_a_biased_model() -> None:
    model = ProbabilisticEnsemble(4, 2, SMALL_MODEL, generator=torch.Generator().manual_seed(0))
    real = fill_real(200)
    data = real.all()
    errs = compounding_error(model, data, torch.zeros(200), horizon=5)
    assert len(errs) == 5 and errs[-1] > errs[0]  # an unfitted model drifts
    ends = torch.zeros(200)
    ends[torch.arange(2, 200, 4)] = 1  # every segment of 5 crosses an episode end
    assert compounding_error(model, data, ends, horizon=5) == []


def test_mbpo_recipe_has_the_papers_per_task_settings() -> None:
    hopper = load_recipe("mbpo", "Hopper-v5")
    assert hopper.config("optimizer").updates_per_step == 20
    assert hopper.config("rollout").k_schedule == (20, 150, 1, 15)
    assert hopper.config("model").ensemble_size == 7 and hopper.config("model").num_elites == 5
    cheetah = load_recipe("mbpo", "HalfCheetah-v5")
    assert cheetah.config("optimizer").updates_per_step == 40
    humanoid = load_recipe("mbpo", "Humanoid-v5")
    assert humanoid.config("model").hidden_size == 400
    assert humanoid.config("rollout").retain_epochs == 5
    assert humanoid.config("rollout").model_train_freq == 1000  # official: every 1,000 steps
    pend = load_recipe("mbpo", "InvertedPendulum-v5")
    assert pend.config("rollout").epoch_length == 250
    assert pend.config("loop").initial_random_steps == 500


def test_dyna_recipes_are_mbpo_with_one_step_rollouts() -> None:
    for task, utd in (("Hopper-v5", 20), ("HalfCheetah-v5", 40), ("InvertedPendulum-v5", 10)):
        for name, model in (("dyna", "pe"), ("dyna-det", "deterministic")):
            r = load_recipe(name, task)
            assert r.config("rollout").k_schedule == (0, 1, 1, 1), (name, task)
            assert rollout_length(500, r.config("rollout").k_schedule) == 1
            assert r.config("optimizer").updates_per_step == utd  # mbpo's per-task values
            assert r.part("model").name == model  # type: ignore[union-attr]
            assert r.config("model").patience == 6  # mbpo's model settings are kept
            assert r.config("model").max_steps is None  # early stopping alone, as mbpo


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('[rollout]\nk_schedule = [20, 150, 15, 1]', "rollout.k_schedule", "k_min <= k_max"),
        ('[rollout]\nk_schedule = [20, 150, 1]', "rollout.k_schedule", "four integers"),
        ('[rollout]\nreal_ratio = 1.5', "rollout.real_ratio", "[0, 1]"),
        ('[model]\nnum_elites = 9', "model.num_elites", ""),
        ('[model]\nname = "tabular"', "model.name", "the 'policy' loop takes 'pe' or"),
    ],
)
def test_bad_mbpo_settings(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(f'base = "mbpo"\n{text}\n')
    with pytest.raises(ConfigError) as e:
        load_recipe(str(p))
    assert e.value.key == key and fragment in str(e.value)


def test_a_model_without_a_rollout_scheme_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "half.toml"
    p.write_text('base = "sac"\n[model]\nname = "pe"\n')
    with pytest.raises(ConfigError, match="a model needs a rollout"):
        load_recipe(str(p))


def test_a_diverging_imagined_episode_gives_nan_not_a_failed_run() -> None:
    phase, agent = make_phase()
    phase.after_step(100, fill_real(100), agent)
    with torch.no_grad():  # a model whose predictions are not finite
        phase.model.linear_layers()[-1].bias.fill_(float("inf"))
    start = fill_real(4).all().obs
    assert math.isnan(phase.predicted_return(agent, start, 50, torch.Generator().manual_seed(0)))
