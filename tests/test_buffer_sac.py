"""Replay buffer and SAC: shapes, bookkeeping, the maths of the update, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from mbrl_bench.buffer import Batch, ReplayBuffer
from mbrl_bench.config import build
from mbrl_bench.errors import ConfigError
from mbrl_bench.optimizers.sac import SAC, SACConfig


def filled_buffer(n: int, capacity: int, obs_dim: int = 3, act_dim: int = 2) -> ReplayBuffer:
    buf = ReplayBuffer(obs_dim, act_dim, capacity)
    for i in range(n):
        buf.add_one(np.full(obs_dim, i), np.full(act_dim, -i), float(i), np.full(obs_dim, i + 1),
                    terminated=i % 7 == 0, truncated=i % 5 == 0)
    return buf


def test_buffer_ring_keeps_newest_and_separates_flags() -> None:
    buf = filled_buffer(13, capacity=10)
    assert len(buf) == 10
    b = buf.all()
    assert b.obs[:, 0].tolist() == list(range(3, 13))  # oldest first
    assert b.rew.tolist() == list(range(3, 13))
    assert b.terminated.tolist() == [float(i % 7 == 0) for i in range(3, 13)]
    assert buf.truncated().tolist() == [float(i % 5 == 0) for i in range(3, 13)]
    assert isinstance(b, Batch) and b.act.shape == (10, 2) and b.next_obs.shape == (10, 3)


def test_buffer_batch_add_wraps_like_single_adds() -> None:
    a = filled_buffer(13, capacity=10)
    b = ReplayBuffer(3, 2, 10)
    idx = torch.arange(13, dtype=torch.float32)
    b.add(idx[:, None].expand(13, 3), -idx[:, None].expand(13, 2), idx,
          idx[:, None].expand(13, 3) + 1, (idx % 7 == 0), (idx % 5 == 0))
    assert torch.equal(a.all().obs, b.all().obs)
    assert torch.equal(a.truncated(), b.truncated())


def test_buffer_sampling_uses_the_generator_and_state_round_trips() -> None:
    buf = filled_buffer(50, capacity=64)
    s1 = buf.sample(32, torch.Generator().manual_seed(3))
    s2 = buf.sample(32, torch.Generator().manual_seed(3))
    assert torch.equal(s1.obs, s2.obs) and s1.obs.shape == (32, 3)
    copy = ReplayBuffer(3, 2, 64)
    copy.load_state_dict(buf.state_dict())
    assert torch.equal(copy.all().obs, buf.all().obs) and copy.pos == buf.pos
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, 2, 4).sample(1, torch.Generator())


def test_a_smaller_buffer_is_restored_oldest_first_into_a_larger_one() -> None:
    """A run continued at a larger budget restores its budget-sized buffer into a larger one;
    it then holds and samples as a buffer of that size filled by the same adds."""
    for n, small in ((6, 10), (10, 10), (13, 10)):  # part-filled, exactly full, wrapped
        grown = ReplayBuffer(3, 2, 16)
        grown.load_state_dict(filled_buffer(n, capacity=small).state_dict())
        kept = min(n, small)
        assert grown.all().obs[:, 0].tolist() == list(range(n - kept, n)) and grown.pos == kept
        grown.add_one(np.full(3, n), np.full(2, -n), float(n), np.full(3, n + 1), False, False)
        assert grown.all().obs[-1, 0] == n and len(grown) == kept + 1
    fresh, grown = filled_buffer(10, capacity=16), ReplayBuffer(3, 2, 16)
    grown.load_state_dict(filled_buffer(10, capacity=10).state_dict())
    assert torch.equal(fresh.sample(8, torch.Generator().manual_seed(1)).obs,
                       grown.sample(8, torch.Generator().manual_seed(1)).obs)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(3, 2, 8).load_state_dict(filled_buffer(6, capacity=10).state_dict())


def make_sac(seed: int = 0, **kw: object) -> SAC:
    torch.manual_seed(seed)
    return SAC(3, 2, np.array([-2.0, 0.0]), np.array([2.0, 1.0]), SACConfig(**kw),  # type: ignore[arg-type]
               torch.Generator().manual_seed(seed))


def test_actor_log_prob_matches_torch_distributions() -> None:
    """Log-probability of the normalised action (in [-1, 1]^A), as softlearning and SB3 use."""
    sac = make_sac()
    obs = torch.randn(64, 3)
    act, logp = sac.actor.sample(obs, torch.Generator().manual_seed(1))
    mean, log_std = sac.actor.dist_params(obs)
    dist = D.TransformedDistribution(D.Independent(D.Normal(mean, log_std.exp()), 1),
                                     [D.TanhTransform(cache_size=1)])
    normalised = ((act - sac.actor.offset) / sac.actor.scale).clamp(-1 + 1e-6, 1 - 1e-6)
    assert torch.allclose(logp, dist.log_prob(normalised), atol=5e-3)
    assert (act[:, 0].abs() <= 2).all() and (act[:, 1] >= 0).all() and (act[:, 1] <= 1).all()


def test_td_target_bootstraps_unless_terminated() -> None:
    sac = make_sac(gamma=0.9)
    b = Batch(torch.randn(4, 3), torch.zeros(4, 2), torch.tensor([1.0, 2.0, 3.0, 4.0]),
              torch.randn(4, 3), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    a2, logp2 = torch.zeros(4, 2), torch.full((4,), -1.0)
    alpha = torch.tensor(0.5)
    target = sac.td_target(b, a2, logp2, alpha)
    q = sac.target_critic(b.next_obs, a2).min(0).values
    assert torch.allclose(target[[0, 2]], b.rew[[0, 2]])  # terminal: reward only
    assert torch.allclose(target[[1, 3]], b.rew[[1, 3]] + 0.9 * (q[[1, 3]] + 0.5))


def test_update_moves_parameters_targets_slowly_and_alpha_towards_target() -> None:
    sac = make_sac(tau=0.005)
    buf = ReplayBuffer(3, 2, 300)
    g = torch.Generator().manual_seed(0)
    buf.add(torch.randn(300, 3, generator=g), torch.rand(300, 2, generator=g),
            torch.randn(300, generator=g), torch.randn(300, 3, generator=g), torch.zeros(300))
    critic0 = [p.clone() for p in sac.critic.parameters()]
    target0 = [p.clone() for p in sac.target_critic.parameters()]
    actor0 = [p.clone() for p in sac.actor.parameters()]
    for _ in range(5):
        out = sac.update(buf.sample(64, sac.generator))
    assert set(out) == {"critic_loss", "actor_loss", "alpha", "entropy", "q_mean"}
    assert all(math.isfinite(float(v)) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(critic0, sac.critic.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(actor0, sac.actor.parameters(), strict=True))
    # each target moved by at most ~tau of the distance (5 small steps)
    for t0, t, c in zip(target0, sac.target_critic.parameters(), sac.critic.parameters(),
                        strict=True):
        assert (t - t0).abs().max() <= 5 * 0.005 * ((c - t0).abs().max() + 1e-6) + 1e-6
    # entropy of the initial policy is above the target (-2), so alpha decreases
    assert sac.alpha < 1.0


def test_same_seed_same_updates_and_state_dict_round_trip() -> None:
    buf = filled_buffer(300, capacity=300)
    a, b = make_sac(7), make_sac(7)
    for _ in range(3):
        la = a.update(buf.sample(64, a.generator))
        lb = b.update(buf.sample(64, b.generator))
    assert all(torch.equal(la[k], lb[k]) for k in la)
    c = make_sac(99)
    c.load_state_dict(a.state_dict())
    c.generator.set_state(a.generator.get_state())
    ga = a.update(buf.sample(64, a.generator))
    gc = c.update(buf.sample(64, c.generator))
    assert all(torch.equal(ga[k], gc[k]) for k in ga)


def test_fixed_alpha_is_not_learned() -> None:
    sac = make_sac(learn_alpha=False, init_alpha=0.2)
    buf = filled_buffer(100, capacity=100)
    sac.update(buf.sample(32, sac.generator))
    assert sac.alpha == pytest.approx(0.2)


def test_bf16_precision_multiplies_in_bf16_and_keeps_fp32_state() -> None:
    """``precision = "bf16"``: from the same weights and batches, the updates' diagnostics are
    close to fp32's but not equal (the products really are bf16), the policy's and critics'
    outputs under its autocast are fp32, and weights, targets and Adam's state stay fp32."""
    buf = filled_buffer(300, capacity=300)
    agents = {p: make_sac(3, precision=p) for p in ("fp32", "bf16")}
    outs = {}
    for p, sac in agents.items():
        outs[p] = [sac.update(buf.sample(64, sac.generator)) for _ in range(3)]
    for k in ("critic_loss", "q_mean", "entropy"):
        a, b = float(outs["fp32"][0][k]), float(outs["bf16"][0][k])
        assert a != b and abs(a - b) <= 0.05 * abs(a) + 1e-3, (k, a, b)
    sac = agents["bf16"]
    for net in (sac.actor, sac.critic, sac.target_critic):
        assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(v.dtype == torch.float32 for s in sac.optimizer.state.values()
               for v in s.values() if v.is_floating_point())
    obs = buf.sample(8, sac.generator).obs
    with torch.no_grad(), sac.products():
        assert all(t.dtype == torch.float32 for t in sac.actor.dist_params(obs))
        assert sac.critic(obs, sac.act_batch(obs)).dtype == torch.float32
    with pytest.raises(ConfigError, match="precision"):
        build(SACConfig, {"precision": "fp16"}, "t.toml")
