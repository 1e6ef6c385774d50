"""Ablation recipes: each differs from its base in exactly its documented keys; the parts they
switch on (value expansion, a fixed k, model-free MBPO, PETS propagation) do what they say."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mbrl_bench.buffer import Batch
from mbrl_bench.config import to_dict
from mbrl_bench.errors import ConfigError
from mbrl_bench.optimizers.sac import SAC, SACConfig
from mbrl_bench.spec import Recipe, load_recipe

# ablation -> (base, the keys in which they differ; a bare kind = a part only the base has)
ABLATIONS: dict[str, tuple[str, set[str]]] = {
    "mbpo-no-model": ("mbpo", {"model", "rollout"}),
    "mbpo-k1": ("mbpo", {"rollout.k"}),
    "mbpo-mve": ("mbpo", {"optimizer.value_expansion", "rollout.model_data"}),
    "pets-ts1": ("pets", {"loop.propagation"}),
    "pets-mean": ("pets", {"loop.propagation"}),
}


def flat(recipe: Recipe) -> dict[str, Any]:
    """``{"kind.key": value}`` of every setting, ``{"kind": name}`` for part names."""
    out: dict[str, Any] = {}
    for p in recipe.parts:
        out[p.kind] = p.name
        out.update({f"{p.kind}.{k}": v for k, v in to_dict(p.config).items()})
    return out


def differing(a: Recipe, b: Recipe) -> set[str]:
    fa, fb = flat(a), flat(b)
    keys = {k for k in fa.keys() | fb.keys() if fa.get(k, None) != fb.get(k, None)}
    gone = {p.kind for p in b.parts if a.part(p.kind) is None}
    return {k for k in keys if k.split(".")[0] not in gone} | gone


def overridden_tasks(recipe: str) -> list[str]:
    """The tasks a shipped recipe file has per-task overrides for."""
    import tomllib

    from mbrl_bench.spec import find_file

    with find_file(recipe, "algorithms").open("rb") as f:
        return sorted(tomllib.load(f).get("overrides", {}))


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_differs_from_its_base_in_exactly_its_keys(ablation: str) -> None:
    base, keys = ABLATIONS[ablation]
    tasks = overridden_tasks(base)
    assert tasks
    for env_id in [None, *tasks]:
        assert differing(load_recipe(ablation, env_id), load_recipe(base, env_id)) == keys, env_id


def test_value_expansion_without_a_model_is_a_one_line_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('base = "sac"\n[optimizer]\nvalue_expansion = 2\n')
    with pytest.raises(ConfigError, match=r"optimizer\.value_expansion: needs a model"):
        load_recipe(str(p))
    p.write_text('base = "mbpo"\n[optimizer]\nvalue_expansion = -1\n')
    with pytest.raises(ConfigError, match=r"optimizer\.value_expansion: a horizon H >= 0"):
        load_recipe(str(p))


# ----------------------------------------------------------------------------- value expansion
OBS, ACT = 2, 1
A = torch.tensor([[0.9, 0.1], [0.0, 0.8]])
B = torch.tensor([[0.5], [-0.3]])
C = torch.tensor([1.0, -2.0])


class LinearModel:
    """Known linear dynamics ``s' = s A^T + a B^T``, reward ``r = s . C + a_0``; terminates
    when ``s'_0 > limit``."""

    def __init__(self, limit: float = math.inf) -> None:
        self.limit, self.obs = limit, torch.zeros(0, OBS)

    def reset(self, obs: torch.Tensor) -> None:
        self.obs = obs

    def step(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.obs
        nxt = s @ A.T + act @ B.T
        self.obs = nxt
        return nxt, s @ C + act[:, 0], nxt[:, 0] > self.limit


def make_sac(h: int, limit: float = math.inf) -> SAC:
    torch.manual_seed(0)
    return SAC(OBS, ACT, np.array([-1.0]), np.array([1.0]),
               SACConfig(hidden_sizes=(8, 8), value_expansion=h, gamma=0.9),
               torch.Generator().manual_seed(1), model_env=LinearModel(limit))


def batch() -> Batch:
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(6, OBS, generator=g)
    act = torch.rand(6, ACT, generator=g) * 2 - 1
    return Batch(obs, act, torch.randn(6, generator=g), obs @ A.T + act @ B.T,
                 torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]))


def test_expansion_at_h0_is_the_ordinary_td_target() -> None:
    sac, b = make_sac(0), batch()
    a1, logp1 = sac.actor.sample(b.next_obs, torch.Generator().manual_seed(5))
    alpha = torch.tensor(0.3)
    ordinary = sac.td_target(b, a1, logp1, alpha)
    expanded = sac._expanded_target(b, a1, logp1, alpha)  # the H-step code path at H = 0
    torch.testing.assert_close(expanded, ordinary, rtol=0, atol=1e-6)


@pytest.mark.parametrize("limit", [math.inf, 0.0])
def test_expansion_at_h2_matches_a_hand_computation(limit: float) -> None:
    sac, b = make_sac(2, limit), batch()
    a1, logp1 = sac.actor.sample(b.next_obs, torch.Generator().manual_seed(5))
    alpha, gamma = torch.tensor(0.3), 0.9
    state = sac.generator.get_state()
    got = sac.td_target(b, a1, logp1, alpha)
    # by hand, drawing the policy's actions from the same generator state
    g = torch.Generator()
    g.set_state(state)
    with torch.no_grad():
        s1 = b.next_obs
        r1, s2 = s1 @ C + a1[:, 0], s1 @ A.T + a1 @ B.T
        a2, logp2 = sac.actor.sample(s2, g)
        r2, s3 = s2 @ C + a2[:, 0], s2 @ A.T + a2 @ B.T
        a3, logp3 = sac.actor.sample(s3, g)
        q3 = sac.target_critic(s3, a3).min(0).values
        m1 = 1 - b.terminated
        m2 = m1 * (s2[:, 0] <= limit).float()
        m3 = m2 * (s3[:, 0] <= limit).float()
        want = (b.rew + gamma * m1 * (r1 - alpha * logp1) + gamma**2 * m2 * (r2 - alpha * logp2)
                + gamma**3 * m3 * (q3 - alpha * logp3))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    if limit == 0.0:  # some rows terminated inside the model: their tail is cut
        assert bool((m3 == 0).any()) and bool((m2 == 1).any())


def test_mve_update_learns_on_real_batches_only() -> None:
    sac, b = make_sac(2), batch()
    before = [p.clone() for p in sac.critic.parameters()]
    out = sac.update(b)
    assert all(math.isfinite(float(v)) for v in out.values())
    assert any(not torch.equal(x, y) for x, y in zip(before, sac.critic.parameters(),
                                                      strict=True))


# ----------------------------------------------------------------------------- model phase
def test_fixed_k_replaces_the_schedule_and_no_model_data_adds_none() -> None:
    from test_mbpo import fill_real, make_phase

    phase, agent = make_phase(k_schedule=(0, 1, 1, 1))
    assert phase.k == 1
    fixed, _ = make_phase()
    fixed.config = type(fixed.config)(**{**to_dict(fixed.config), "k_schedule": (0, 1, 1, 1),
                                         "k": 3})
    assert fixed._schedule == (0, 0, 3, 3)
    real = fill_real(100)
    fixed.after_step(100, real, agent)
    assert fixed.k == 3 and fixed.last["k"] == 3.0

    fit_only, agent = make_phase(real_ratio=0.25)
    fit_only.config = type(fit_only.config)(**{**to_dict(fit_only.config),
                                               "k_schedule": (0, 1, 1, 1), "model_data": False})
    fit_only.model_buffer = type(fit_only.model_buffer)(4, 2, 1)
    fit_only.after_step(100, real, agent)
    assert fit_only.fitted_step == 100 and len(fit_only.model_buffer) == 0
    batch_ = fit_only.sample(32, real, torch.Generator().manual_seed(0))
    assert batch_.obs.shape == (32, 4)  # all real


# ----------------------------------------------------------------------------- PETS propagation
@pytest.mark.parametrize("propagation", ["fixed_member", "random_member", "mean", "elites"])
def test_trajectory_returns_under_every_propagation(propagation: str) -> None:
    from conftest import member_indexed_model

    from mbrl_bench.models.model_env import ModelEnv
    from mbrl_bench.planners.trajectory import trajectory_returns

    model = member_indexed_model(4, 2, 1, elites=[1, 3], deterministic=True)
    env = ModelEnv(model, lambda o, a, n: torch.zeros(o.shape[0], dtype=torch.bool),  # type: ignore[arg-type]
                   propagation=propagation, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    ret = trajectory_returns(env, torch.zeros(2), torch.zeros(3, 5, 1), particles=8)
    assert ret.shape == (3,)
    # member m's reward is 10 m per step: each propagation averages different members
    expected = {"fixed_member": 15.0 * 5, "mean": 15.0 * 5}
    if propagation in expected:
        torch.testing.assert_close(ret, torch.full((3,), expected[propagation]))
    elif propagation == "elites":
        assert bool(((ret >= 10 * 5) & (ret <= 30 * 5)).all())
    else:
        assert bool(((ret >= 0) & (ret <= 30 * 5)).all()) and ret.unique().numel() > 1


def test_a_set_that_breaks_the_loop_contract_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.value_expansion: needs a model"):
        load_recipe("sac", settings=(("optimizer.value_expansion", 1),))


def test_targets_stay_one_step_until_the_model_is_fitted() -> None:
    sac, b = make_sac(2), batch()
    ready = [False]
    sac.model_ready = lambda: ready[0]
    a1, logp1 = sac.actor.sample(b.next_obs, torch.Generator().manual_seed(5))
    alpha = torch.tensor(0.3)
    plain = make_sac(0).td_target(b, a1, logp1, alpha)
    torch.testing.assert_close(sac.td_target(b, a1, logp1, alpha), plain, rtol=0, atol=0)
    ready[0] = True
    assert not torch.allclose(sac.td_target(b, a1, logp1, alpha), plain)


def test_the_bounds_discount_is_the_optimizers_unless_set() -> None:
    from mbrl_bench.runner.compose import compose
    from mbrl_bench.runner.spec import RunSpec
    from mbrl_bench.spec import EnvEntry

    entry = EnvEntry(id="mbrl_bench/PointMass-v0", budget=10, eval_every=10)
    for settings, want in (((("optimizer.gamma", 0.9),), 0.9),
                           ((("optimizer.gamma", 0.9), ("rollout.gamma", 0.95)), 0.95)):
        recipe = load_recipe("mbpo", settings=settings)
        c = compose(RunSpec("t", entry, "mbpo", 0, recipe))
        assert c.model_phase.gamma == want
