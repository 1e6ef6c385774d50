"""TRPO: conjugate gradient, GAE, the KL limit, and learning a tiny linear-Gaussian task."""

from __future__ import annotations

import copy

import pytest
import torch

from mbrl_bench.buffer import Trajectories
from mbrl_bench.optimizers.trpo import (
    TRPO,
    TRPOConfig,
    conjugate_gradient,
    gae,
    kl_divergence,
)


def test_conjugate_gradient_solves_a_positive_definite_system() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = m @ m.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=20)
    assert torch.allclose(a @ x, b, atol=1e-8)


def test_gae_by_hand() -> None:
    # two trajectories: [r=1, r=2 (terminal)] and [r=3 (cut, bootstraps from V(s')=10)]
    rew = torch.tensor([1.0, 2.0, 3.0])
    v = torch.tensor([0.5, 0.25, 1.0])
    v_next = torch.tensor([0.25, 7.0, 10.0])
    term = torch.tensor([0.0, 1.0, 0.0])
    ended = torch.tensor([0.0, 1.0, 1.0])
    adv = gae(rew, v, v_next, term, ended, gamma=0.5, lam=0.5)
    d1 = 2.0 - 0.25
    d0 = 1.0 + 0.5 * 0.25 - 0.5
    assert torch.allclose(adv, torch.tensor([d0 + 0.25 * d1, d1, 3.0 + 5.0 - 1.0]))


def _rollouts(agent: TRPO, n: int, horizon: int, g: torch.Generator) -> tuple[Trajectories,
                                                                               float]:
    """A linear-Gaussian system ``s' = s + 0.5 a + 0.05 noise``, reward ``-s² - 0.01 a²``,
    ``n`` trajectories of ``horizon`` steps from ``s ~ N(0, 1)``, trajectory-major."""
    s = torch.randn(n, 1, generator=g)
    steps = []
    for _ in range(horizon):
        a = agent.sample_batch(s)
        a_env = agent.clip(a)
        nxt = s + 0.5 * a_env + 0.05 * torch.randn(n, 1, generator=g)
        r = -(s.square().sum(-1) + 0.01 * a_env.square().sum(-1))
        steps.append((s, a, r, nxt))
        s = nxt
    obs, act, rew, next_obs = (torch.stack(x, 1).reshape(n * horizon, -1)
                               for x in zip(*steps, strict=True))
    ended = torch.zeros(n, horizon)
    ended[:, -1] = 1.0
    traj = Trajectories(obs, act, rew.reshape(-1), next_obs, torch.zeros(n * horizon),
                        ended.reshape(-1))
    return traj, float(rew.sum() / n)


def test_trpo_improves_a_linear_gaussian_task_within_the_kl_limit() -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = TRPOConfig(max_kl=0.02, policy_hidden_sizes=(16,), value_hidden_sizes=(32,))
    agent = TRPO(1, 1, [-2.0], [2.0], cfg, torch.Generator().manual_seed(1))
    first = None
    accepted = 0
    for _ in range(40):
        traj, ret = _rollouts(agent, 32, 20, g)
        first = ret if first is None else first
        before = agent.policy_state()
        out = agent.update(traj)
        agent.observe(traj.obs)  # as the stage loop does after a model-free update
        # measured here against the policy that sampled the data, its normaliser included
        after = agent.policy_state()
        kl = kl_divergence(*agent.dist_params(traj.obs, before),
                           *agent.dist_params(traj.obs, {**after, "obs_norm": before[
                               "obs_norm"]}))
        assert float(kl.mean()) <= cfg.accept_kl_ratio * cfg.max_kl + 1e-6
        # every accepted step respects the trust region
        assert out["kl"] <= cfg.accept_kl_ratio * cfg.max_kl
        accepted += out["step_fraction"] > 0
    _, last = _rollouts(agent, 256, 20, g)
    # the initial policy (mean ~0, std 1) loses about -26 per trajectory; a policy that drives
    # s to 0 loses about -3
    assert first is not None and first < -15
    assert last > -8, (first, last)
    assert accepted >= 30


def test_rejected_step_leaves_the_policy_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KL that no step can satisfy (the true KL plus 1: same gradients and Fisher products,
    every line-search point over the limit) leaves the policy exactly as it was."""
    import mbrl_bench.optimizers.trpo as trpo

    real_kl = trpo.kl_divergence
    monkeypatch.setattr(trpo, "kl_divergence", lambda *a: real_kl(*a) + 1.0)
    g = torch.Generator().manual_seed(0)
    cfg = TRPOConfig(policy_hidden_sizes=(8,), value_hidden_sizes=(8,))
    agent = TRPO(1, 1, [-2.0], [2.0], cfg, torch.Generator().manual_seed(1))
    before = agent.policy_state()
    traj, _ = _rollouts(agent, 8, 5, g)
    out = agent.update(traj)
    assert out["step_fraction"] == 0.0 and out["kl"] == 0.0
    after = agent.policy_state()
    assert all(torch.equal(before["policy"][k], after["policy"][k]) for k in before["policy"])


def test_state_dict_round_trip_gives_the_same_update() -> None:
    cfg = TRPOConfig(policy_hidden_sizes=(8,), value_hidden_sizes=(8,))
    a = TRPO(1, 1, [-2.0], [2.0], cfg, torch.Generator().manual_seed(1))
    traj, _ = _rollouts(a, 8, 5, torch.Generator().manual_seed(0))
    a.update(traj)
    b = TRPO(1, 1, [-2.0], [2.0], cfg, torch.Generator().manual_seed(1))
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as a checkpoint on disk would be
    b.generator.set_state(a.generator.get_state())
    oa, ob = a.update(traj), b.update(traj)
    assert oa == ob
    sa, sb = a.policy_state()["policy"], b.policy_state()["policy"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
