"""SLBO, ME-TRPO and TRPO: the multi-step model loss, full-horizon rollouts, the stage loop
(learning, exact resume after a kill) and the recipes' settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import kill_then_rerun, tiny_suite

from mbrl_bench.buffer import ReplayBuffer
from mbrl_bench.errors import ConfigError
from mbrl_bench.models.ensemble import ProbabilisticEnsemble, ProbabilisticEnsembleConfig
from mbrl_bench.models.trainer import ModelTrainer
from mbrl_bench.rollouts.full_horizon import FullHorizonConfig, FullHorizonRollouts
from mbrl_bench.spec import load_recipe

TINY_SLBO = """
description = "SLBO at a tiny scale, for tests"
base = "slbo"
[loop]
steps_per_stage = 200
iterations_per_stage = 5
policy_iterations = 8
log_every = 100
[optimizer]
policy_hidden_sizes = [32, 32]
value_hidden_sizes = [32, 32]
[model]
hidden_size = 64
max_steps = 100
[rollout]
rollout_steps = 1000
"""

FAST_SLBO = """
description = "SLBO at a tinier scale, for the resume test"
base = "tiny-slbo"
[loop]
steps_per_stage = 100
iterations_per_stage = 2
policy_iterations = 3
log_every = 50
[rollout]
rollout_steps = 200
"""


FAST_TRPO = """
description = "model-free TRPO at a tiny scale, for the resume test"
base = "trpo"
[loop]
steps_per_stage = 100
log_every = 50
[optimizer]
policy_hidden_sizes = [16]
value_hidden_sizes = [16]
"""

FAST_SLBO_SAC = """
description = "slbo-sac at a tiny scale, for the resume test"
base = "fast-slbo"
[loop]
offpolicy_updates = 5
[optimizer]
name = "sac"
hidden_sizes = [32, 32]
batch_size = 64
"""


def _model(deterministic: bool = True, **kw: Any) -> ProbabilisticEnsemble:
    kw = {"holdout_ratio": 0.0, "max_epochs": 1, **kw}
    cfg = ProbabilisticEnsembleConfig(ensemble_size=2, num_elites=2, hidden_size=8,
                                      num_layers=2, weight_decays=(0.0, 0.0, 0.0),
                                      deterministic=deterministic, **kw)
    return ProbabilisticEnsemble(3, 1, cfg, generator=torch.Generator().manual_seed(0))


def _data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(n + 1, 3, generator=g)
    act = torch.randn(n, 1, generator=g)
    model = _model()
    x, y = model.inputs_targets(obs[:-1], act, obs[1:], torch.randn(n, generator=g))
    return x, y


@pytest.mark.parametrize("loss", ["auto", "l2"])
def test_multi_step_loss_is_the_one_step_loss_at_h1_and_feeds_predictions_at_h2(loss: str
                                                                                ) -> None:
    x, y = _data()
    idx = torch.tensor([[0, 2], [1, 3]])  # E x b unit starts
    cont = torch.ones(x.shape[0])
    one = ModelTrainer(_model(loss=loss))
    one.target_std = y.std(0)
    assert torch.equal(one.multi_step_loss(x, y, cont, idx), one.loss(x[idx], y[idx]))

    two = ModelTrainer(_model(loss=loss, multi_step=2))
    two.target_std = one.target_std
    model = two.model
    # by hand: step 2 starts from the model's own prediction of step 1
    mean1, lv1 = model(x[idx])
    s2 = x[idx][..., :3] + mean1[..., :3]
    mean2, lv2 = model(torch.cat([s2, x[idx + 1][..., 3:]], -1))
    by_hand = ((two.member_loss(mean1, lv1, y[idx]) + two.member_loss(mean2, lv2, y[idx + 1]))
               / 2).sum()
    got = two.multi_step_loss(x, y, cont, idx)
    assert torch.allclose(got, by_hand)
    # ... which differs from the mean of the two rows' one-step losses (a wrong model's
    # predicted state is not the real one) ...
    one_step_mean = (one.loss(x[idx], y[idx]) + one.loss(x[idx + 1], y[idx + 1])) / 2
    assert not torch.allclose(got, one_step_mean)
    # ... except where the data's episode ends after step 1: step 2 starts from the real state
    assert torch.allclose(two.multi_step_loss(x, y, torch.zeros(x.shape[0]), idx),
                          one_step_mean)


def test_multi_step_fit_needs_episode_ends_and_trains_on_runs_of_rows() -> None:
    x, y = _data(20)
    obs, act = x[:, :3], x[:, 3:]
    trainer = ModelTrainer(_model(multi_step=2, max_epochs=1, batch_size=4))
    with pytest.raises(ValueError, match="ended"):
        trainer.fit(obs, act, obs + y[:, :3], y[:, 3], torch.Generator().manual_seed(0))
    seen: list[torch.Tensor] = []
    real_loss = trainer.multi_step_loss

    def spy(x: torch.Tensor, y: torch.Tensor, cont: torch.Tensor, idx: torch.Tensor
            ) -> torch.Tensor:
        seen.append(idx.clone())
        assert torch.equal(cont, 1.0 - ended)  # the episode ends reach the loss
        return real_loss(x, y, cont, idx)

    trainer.multi_step_loss = spy  # type: ignore[method-assign]
    ended = torch.zeros(20)
    ended[9] = 1.0
    out = trainer.fit(obs, act, obs + y[:, :3], y[:, 3], torch.Generator().manual_seed(0),
                      ended=ended)
    # one epoch: every member sees each of the 19 runs of 2 rows once, in its own order
    starts = torch.cat(seen, dim=1)
    for member in starts:
        assert sorted(member.tolist()) == list(range(19))
    assert out["steps"] == 5 and out["holdout_mse"] != out["holdout_mse"]  # no holdout: NaN


def test_multi_step_with_a_holdout_split_is_refused() -> None:
    with pytest.raises(ValueError, match="holdout_ratio"):
        ProbabilisticEnsembleConfig(multi_step=2, holdout_ratio=0.2)


def test_l2_loss_needs_a_deterministic_model() -> None:
    with pytest.raises(ValueError, match="deterministic"):
        ModelTrainer(_model(deterministic=False, loss="l2"))


def _drift_rollouts(horizon: int, rollout_steps: int) -> FullHorizonRollouts:
    """A model whose every prediction is Δ = (+1, 0, 0) and a termination at x >= 5."""
    model = _model()
    with torch.no_grad():
        for layer in model.linear_layers():
            layer.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[:, :, 0] = 1.0
    cfg = FullHorizonConfig(horizon=horizon, rollout_steps=rollout_steps, known_reward=True,
                            clip_std=None)
    starts = torch.tensor([[0.0, 0, 0], [-100.0, 0, 0], [3.5, 0, 0]])

    def initial_states(n: int, g: torch.Generator) -> torch.Tensor:
        return starts[:n]

    return FullHorizonRollouts(model, lambda o, a, n: n[:, 0] >= 5, lambda o, a, n: n[:, 0],
                               cfg, horizon, initial_states, torch.Generator().manual_seed(0))


class _ZeroPolicy:
    def sample_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return torch.zeros(obs.shape[0], 1)

    def clip(self, act: torch.Tensor) -> torch.Tensor:
        return act

    def act_batch(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.sample_batch(obs)


def test_full_horizon_rollouts_stop_at_termination_and_else_run_the_horizon() -> None:
    rollouts = _drift_rollouts(horizon=8, rollout_steps=24)
    assert rollouts.n_trajectories == 3
    traj, stats = rollouts.rollout(_ZeroPolicy(), ReplayBuffer(3, 1, 10))
    # from x=0: terminates at its 5th step; from -100: runs all 8; from 3.5: 2nd step
    assert traj.obs.shape[0] == 5 + 8 + 2
    assert traj.obs[:, 0].tolist() == [0, 1, 2, 3, 4, -100, -99, -98, -97, -96, -95, -94, -93,
                                       3.5, 4.5]
    assert traj.terminated.tolist() == [0, 0, 0, 0, 1] + [0] * 8 + [0, 1]
    assert traj.ended.tolist() == [0, 0, 0, 0, 1] + [0] * 7 + [1] + [0, 1]
    assert torch.equal(traj.next_obs[:, 0], traj.obs[:, 0] + 1)
    assert stats["rollout_len_mean"] == 5.0


def test_recipes_differ_from_slbo_in_a_few_keys() -> None:
    slbo, metrpo = load_recipe("slbo", "Pendulum-v1"), load_recipe("metrpo", "Pendulum-v1")
    assert slbo.config("model").multi_step == 2 and slbo.config("model").loss == "l2"
    assert slbo.config("rollout").known_reward  # SLBO uses the task's reward where we have it
    assert metrpo.config("model").ensemble_size == 5 and metrpo.config("model").multi_step == 1
    assert metrpo.config("optimizer") == slbo.config("optimizer").__class__(
        **{**slbo.config("optimizer").__dict__, "ent_coef": 0.0})
    trpo = load_recipe("trpo", "Pendulum-v1")
    assert trpo.part("model") is None and trpo.part("rollout") is None
    assert load_recipe("slbo-sac").part("optimizer").name == "sac"


def test_sac_in_the_stage_loop_needs_a_model(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('description = "x"\nbase = "slbo-sac"\n'
                                       'drop = ["model", "rollout"]\n')
    with pytest.raises(ConfigError, match="model-free SAC"):
        load_recipe(str(tmp_path / "bad.toml"))


@pytest.fixture
def slbo_files(tmp_path: Path) -> Path:
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "suites").mkdir()
    (tmp_path / "algorithms" / "tiny-slbo.toml").write_text(TINY_SLBO)
    (tmp_path / "algorithms" / "fast-slbo.toml").write_text(FAST_SLBO)
    (tmp_path / "algorithms" / "fast-trpo.toml").write_text(FAST_TRPO)
    (tmp_path / "algorithms" / "fast-slbo-sac.toml").write_text(FAST_SLBO_SAC)
    return tmp_path


def _run(files: Path, text: str, out: str, algo: str) -> Path:
    from mbrl_bench.runner.execute import expand, run_all
    from mbrl_bench.spec import load_suite

    (files / "suites" / "s.toml").write_text(text)
    specs = expand(load_suite(str(files / "suites" / "s.toml")), [algo], [0],
                   extra_dirs=(files / "algorithms",))
    [outcome] = run_all(specs, files / out, threads=1, progress=lambda s: None)
    assert outcome.status == "complete", outcome.error
    return specs[0].run_dir(files / out)


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    volatile = {"wall_clock_s", "steps_per_s", "env_s", "model_s", "policy_s"}
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in volatile} for r in csv.DictReader(f)]


def test_slbo_beats_random_actions_on_the_point_mass(slbo_files: Path) -> None:
    """On the point mass random actions score about -50 and the initial policy (mean actions
    near 0) about -38; tiny SLBO reaches better than -20 after two stages of 200 real steps
    (about -14 on this machine), which a loop that does not learn cannot."""
    d = _run(slbo_files, tiny_suite(400, 400, algorithm="tiny-slbo"), "out", "tiny-slbo")
    evals = _rows(d / "evals.csv")
    assert [int(r["env_step"]) for r in evals] == [400]
    assert float(evals[-1]["return_mean"]) > -20.0, evals
    metrics = _rows(d / "metrics.csv")
    last = metrics[-1]
    assert int(last["stage"]) == 2 and float(last["updates"]) == 5 * 8
    assert float(last["model_fit_steps"]) == 100
    for key in ("eps_m", "eps_pi", "compounding_mse_h1", "rollout_len_mean", "kl"):
        assert float(last[key]) == float(last[key]), key  # measured, not NaN
    assert float(evals[-1]["model_return_mean"]) == float(evals[-1]["model_return_mean"])


def test_killed_slbo_run_resumes_to_the_same_rows(slbo_files: Path) -> None:
    """Kill -9 an SLBO run mid-stage (a checkpoint at every evaluation), run the same command
    again: the rows equal an uninterrupted run's."""
    text = tiny_suite(500, 50, algorithm="fast-slbo", episodes=2)
    run, done = kill_then_rerun(slbo_files, text, "fast-slbo", "killed", kill_at_rows=3)
    assert done.returncode == 0, done.stderr
    assert "resumed at step" in done.stdout
    straight = _run(slbo_files, text, "straight", "fast-slbo")
    assert _rows(run / "evals.csv") == _rows(straight / "evals.csv")
    assert _rows(run / "metrics.csv") == _rows(straight / "metrics.csv")
    assert len(_rows(run / "evals.csv")) == 10
    assert json.loads((run / "run.json").read_text())["attempts"] == 2


@pytest.mark.parametrize("algo", ["fast-trpo", "fast-slbo-sac"])
def test_a_run_that_died_mid_stage_resumes_to_the_same_rows(slbo_files: Path, algo: str,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Model-free TRPO (the stage's sampled actions in the checkpoint) and slbo-sac (its
    model buffer): a run that dies at step 275 (checkpoint at 250, mid-stage) and is retried
    writes the rows of an uninterrupted run."""
    from mbrl_bench.loops.scaffold import Scaffold
    from mbrl_bench.runner.execute import expand, run_all
    from mbrl_bench.spec import load_suite

    text = tiny_suite(500, 50, algorithm=algo, episodes=2)
    straight = _run(slbo_files, text, "straight", algo)
    specs = expand(load_suite(str(slbo_files / "suites" / "s.toml")), [algo], [0],
                   extra_dirs=(slbo_files / "algorithms",))
    real_step = Scaffold.env_step

    def dying_step(self: Scaffold, action: Any) -> Any:
        if self.step == 275:
            raise RuntimeError("killed")
        return real_step(self, action)

    with monkeypatch.context() as m:
        m.setattr(Scaffold, "env_step", dying_step)
        [died] = run_all(specs, slbo_files / "died", threads=1, progress=lambda s: None)
    assert died.status == "failed" and "killed" in str(died.error)
    said: list[str] = []
    [done] = run_all(specs, slbo_files / "died", threads=1, progress=said.append,
                     retry_failed=True)
    assert done.status == "complete", done.error
    assert any("resumed at step 250" in line for line in said), said
    run = specs[0].run_dir(slbo_files / "died")
    assert _rows(run / "evals.csv") == _rows(straight / "evals.csv")
    assert _rows(run / "metrics.csv") == _rows(straight / "metrics.csv")
