"""Tests of the batched model environment (mbrl_bench.models.model_env)."""

from __future__ import annotations

import pytest
import torch
from conftest import member_indexed_model

from mbrl_bench.errors import NonFiniteError
from mbrl_bench.models.ensemble import ProbabilisticEnsemble
from mbrl_bench.models.model_env import MemberLayout, ModelEnv

torch.set_num_threads(1)

E, OD, AD = 5, 2, 1
ELITES = [3, 1]
STD = 0.1


def member_model(deterministic: bool = False) -> ProbabilisticEnsemble:
    """Member ``m`` predicts Δobs = (m, m) and reward = 10 m; elites ``ELITES``."""
    return member_indexed_model(E, OD, AD, ELITES, deterministic, STD)


def never(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(obs.shape[0], dtype=torch.bool)


def make_env(propagation: str, seed: int = 0, **kwargs) -> ModelEnv:
    return ModelEnv(
        member_model(),
        kwargs.pop("termination_fn", never),
        propagation=propagation,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def used_members(obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    delta = next_obs - obs
    assert torch.allclose(delta[:, 0], delta[:, 1])
    return delta[:, 0].round().long()


def test_random_member_is_ts1():
    env = make_env("random_member")
    b = 300
    obs = torch.randn(b, OD)
    state = env.reset(obs)
    assert state.members is None and torch.equal(state.obs, obs)
    nxt, rew, term = env.step(torch.zeros(b, AD), sample=False)
    assert nxt.shape == (b, OD) and rew.shape == (b,) and term.shape == (b,)
    assert term.dtype == torch.bool and not term.any()
    first = used_members(obs, nxt)
    assert env.state.members is not None and torch.equal(env.state.members, first)
    torch.testing.assert_close(rew, 10 * first.float())
    assert set(first.tolist()) == set(range(E))
    nxt2, _, _ = env.step(torch.zeros(b, AD), sample=False)
    second = used_members(nxt, nxt2)
    assert (first != second).float().mean() > 0.5  # redrawn every step (expected 0.8)


def test_fixed_member_is_ts_inf_and_balanced():
    env = make_env("fixed_member")
    b = 23
    obs = torch.randn(b, OD)
    state = env.reset(obs)
    assert state.members is not None
    counts = torch.bincount(state.members, minlength=E)
    assert counts.max() - counts.min() <= 1  # balanced: floor/ceil(B/E) rows per member
    cur = obs
    for _ in range(3):
        nxt, rew, _ = env.step(torch.zeros(b, AD), sample=False)
        assert torch.equal(used_members(cur, nxt), state.members)
        torch.testing.assert_close(rew, 10 * state.members.float())
        assert env.state.members is not None and torch.equal(env.state.members, state.members)
        cur = nxt
    # a second reset draws a new random assignment
    again = env.reset(torch.randn(b, OD)).members
    assert again is not None and not torch.equal(again, state.members)


def test_fixed_member_explicit_particle_assignment():
    env = make_env("fixed_member")
    b = 20
    members = torch.arange(b) % E  # PETS particles: row i -> member i mod E
    obs = torch.randn(b, OD)
    env.reset(obs, members=members)
    nxt, _, _ = env.step(torch.zeros(b, AD), sample=False)
    assert torch.equal(used_members(obs, nxt), members)
    with pytest.raises(ValueError, match="members"):
        env.reset(obs, members=torch.full((b,), E))
    with pytest.raises(ValueError, match="members"):
        env.reset(obs, members=members[:5])
    with pytest.raises(ValueError, match="only used by fixed_member"):
        make_env("random_member").reset(obs, members=members)


def test_elites_only_uses_elites():
    env = make_env("elites")
    b = 200
    obs = torch.randn(b, OD)
    env.reset(obs)
    nxt, _, _ = env.step(torch.zeros(b, AD), sample=False)
    assert set(used_members(obs, nxt).tolist()) == set(ELITES)


def test_mean_propagation():
    env = make_env("mean")
    b = 10
    obs = torch.randn(b, OD)
    env.reset(obs)
    nxt, rew, _ = env.step(torch.zeros(b, AD), sample=False)
    mean_member = (E - 1) / 2
    torch.testing.assert_close(nxt - obs, torch.full((b, OD), mean_member))
    torch.testing.assert_close(rew, torch.full((b,), 10 * mean_member))
    assert env.state.members is None
    # sampling uses the average member variance (STD^2 here), not the member disagreement
    b = 4000
    env.reset(torch.zeros(b, OD))
    nxt, _, _ = env.step(torch.zeros(b, AD), sample=True)
    assert abs((nxt - mean_member).std().item() - STD) < 0.01


def test_sampling_noise_and_reproducibility():
    b = 4000
    outs = []
    for seed in (7, 7, 8):
        env = make_env("fixed_member", seed=seed)
        obs = torch.zeros(b, OD)
        state = env.reset(obs)
        assert state.members is not None
        nxt, rew, _ = env.step(torch.zeros(b, AD), sample=True)
        resid = nxt - state.members[:, None].float()
        assert abs(resid.std().item() - STD) < 0.01 and abs(resid.mean().item()) < 0.01
        outs.append((nxt, rew))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert not torch.equal(outs[0][0], outs[2][0])


def test_deterministic_model_ignores_sample():
    env = ModelEnv(
        member_model(deterministic=True),
        never,
        propagation="fixed_member",
        generator=torch.Generator().manual_seed(0),
    )
    obs = torch.randn(10, OD)
    state = env.reset(obs)
    assert state.members is not None
    nxt, _, _ = env.step(torch.zeros(10, AD), sample=True)
    assert torch.equal(used_members(obs, nxt), state.members)
    torch.testing.assert_close(nxt - obs, state.members[:, None].float().expand(10, OD))


def test_termination_and_reward_fns():
    def term(obs, act, next_obs):
        return next_obs[:, 0] - obs[:, 0] > 2.5  # members 3 and 4

    def reward(obs, act, next_obs):
        return act[:, 0] * 2.0

    env = make_env("fixed_member", termination_fn=term, reward_fn=reward)
    b = 15
    state = env.reset(torch.randn(b, OD))
    assert state.members is not None
    act = torch.randn(b, AD)
    _, rew, terminated = env.step(act, sample=False)
    assert torch.equal(terminated, state.members >= 3)
    torch.testing.assert_close(rew, act[:, 0] * 2.0)


def test_errors():
    with pytest.raises(ValueError, match="propagation"):
        make_env("bogus")
    env = make_env("random_member")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.zeros(3, AD))
    with pytest.raises(ValueError, match="obs"):
        env.reset(torch.zeros(3, OD + 1))
    env.reset(torch.zeros(3, OD))
    with pytest.raises(ValueError, match="act"):
        env.step(torch.zeros(4, AD))

    def bad_shape(obs, act, next_obs):
        return torch.zeros(1, dtype=torch.bool)

    env = make_env("random_member", termination_fn=bad_shape)
    env.reset(torch.zeros(3, OD))
    with pytest.raises(ValueError, match="termination_fn"):
        env.step(torch.zeros(3, AD))

    def nan_reward(obs, act, next_obs):
        return torch.full((obs.shape[0],), float("nan"))

    env = make_env("random_member", reward_fn=nan_reward)
    env.reset(torch.zeros(3, OD))
    with pytest.raises(NonFiniteError):
        env.step(torch.zeros(3, AD))


@pytest.mark.parametrize("propagation", ["random_member", "fixed_member", "elites"])
def test_each_member_computes_only_its_rows(propagation, monkeypatch):
    env = make_env(propagation)
    model = env.model
    calls: list[tuple[tuple[int, ...], torch.Tensor | None]] = []
    original = model.predict

    def spy(obs, act, members=None, **kwargs):
        calls.append((tuple(obs.shape), members))
        return original(obs, act, members, **kwargs)

    monkeypatch.setattr(model, "predict", spy)
    b = 1000
    env.reset(torch.randn(b, OD))
    env.step(torch.zeros(b, AD))
    ((shape, members),) = calls
    k = len(ELITES) if propagation == "elites" else E
    assert shape[0] == k and shape[2] == OD
    if propagation == "fixed_member":
        assert shape[1] == b // E  # balanced: no padding at all
    else:
        assert shape[1] < 1.25 * b / k  # padding only up to the largest group
    if propagation == "elites":
        assert members is not None and members.tolist() == ELITES
    else:
        assert members is None


def test_member_layout_round_trip():
    slots = torch.tensor([2, 0, 2, 2, 1, 0, 2])
    layout = MemberLayout(slots, 4)
    x = torch.arange(7.0)[:, None].repeat(1, 3)
    grouped = layout.group(x)
    assert grouped.shape == (4, 4, 3)  # 4 slots x largest group (slot 2 has 4 rows)
    assert grouped[2, :, 0].tolist() == [0.0, 2.0, 3.0, 6.0]
    assert grouped[0, :2, 0].tolist() == [1.0, 5.0]
    assert torch.equal(grouped[3], torch.zeros(4, 3))  # empty slot: padding only
    assert torch.equal(layout.ungroup(grouped), x)
