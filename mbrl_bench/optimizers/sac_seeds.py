"""S seeds of SAC trained side by side: one critic update for all of them, each seed's numbers
exactly those of its run alone (on CPU).

:class:`SeedsSAC` takes S solo :class:`~mbrl_bench.optimizers.sac.SAC` agents (one per seed,
each built by the composition root with its own generator) and trains them as one:

- the S twin critics (and their targets) become one ``2S``-member :class:`TwinCritic`, so each
  critic layer of all seeds is one ``baddbmm`` (seed ``s`` owns members ``2s, 2s + 1``);
- each seed keeps its own actor, temperature and generator: the actor's small products run per
  seed with the same operations as alone (a batched actor head is not bitwise equal to
  ``nn.Linear`` on every CPU), and every random number comes from the seed's own generator;
- the losses are computed per seed by the solo agent's :func:`sac_loss` and summed, so each
  seed's gradients are its own; one fused Adam steps every parameter.

On CPU each seed's slice of the batched products equals its own product bitwise
(``benchmarks/seed_batching_exactness.py``), so a seed trained side by side writes the rows it
writes alone; ``tests/test_side_by_side.py`` checks that. :meth:`write_back` copies the
batched state into the solo agents, whose ``state_dict`` is then each run's usual checkpoint:
a run started side by side can resume alone and the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mbrl_bench.buffer import Batch
from mbrl_bench.optimizers.sac import SAC, TwinCritic, sac_loss, soft_td_target


class SeedsSAC:
    """S solo SAC agents (same config, device and sizes) updated as one; see the module doc."""

    def __init__(self, agents: Sequence[SAC]) -> None:
        first = agents[0]
        if any(a.config != first.config or a.device != first.device for a in agents):
            raise ValueError("seeds side by side need one SAC configuration and one device")
        if first.config.value_expansion > 0:
            raise ValueError("optimizer.value_expansion: seeds side by side train model-free "
                             "SAC only")
        self.agents = list(agents)
        self.config = first.config
        s = len(agents)
        obs_dim, act_dim = first.critic.obs_dim, first.critic.act_dim
        self.critic = TwinCritic(obs_dim, act_dim, first.config.hidden_sizes, members=2 * s)
        self.target_critic = TwinCritic(obs_dim, act_dim, first.config.hidden_sizes,
                                        members=2 * s).requires_grad_(False)
        for net in (self.critic, self.target_critic):
            net.to(first.device)
        self._solo_critics = [list(a.critic.parameters()) for a in agents]
        self._solo_targets = [list(a.target_critic.parameters()) for a in agents]
        with torch.no_grad():
            for j, (p, t) in enumerate(zip(self.critic.parameters(),
                                           self.target_critic.parameters(), strict=True)):
                p.copy_(torch.cat([c[j] for c in self._solo_critics]))
                t.copy_(torch.cat([c[j] for c in self._solo_targets]))
        self._critic_params: list[torch.Tensor] = list(self.critic.parameters())
        self._target_params: list[torch.Tensor] = list(self.target_critic.parameters())
        groups: list[dict[str, Any]] = [
            {"params": [p for a in agents for p in a.actor.parameters()],
             "lr": self.config.actor_lr},
            {"params": self._critic_params, "lr": self.config.critic_lr},
        ]
        if self.config.learn_alpha:
            groups.append({"params": [a.log_alpha for a in agents], "lr": self.config.alpha_lr})
        self.optimizer = torch.optim.Adam(groups, fused=True)
        self._gather_optimizer_state()
        self.updates = first.updates

    @property
    def seeds(self) -> int:
        return len(self.agents)

    # ------------------------------------------------------------------ update
    def update(self, batches: Sequence[Batch]) -> torch.Tensor:
        """One SAC step of every seed, seed ``s`` on ``batches[s]``; returns the diagnostics
        ``S x len(SAC.update_keys)`` (detached)."""
        agents, s, cfg = self.agents, self.seeds, self.config
        alphas = [a.log_alpha.detach().exp() for a in agents]
        with torch.no_grad():
            nexts = [a.actor.sample(b.next_obs, a.generator) for a, b in zip(agents, batches,
                                                                            strict=True)]
            q_next = self._members(self.target_critic, [
                (b.next_obs, act) for b, (act, _) in zip(batches, nexts, strict=True)])
            q_next = q_next.view(s, 2, -1).min(1).values
            targets = [soft_td_target(b, q_next[i], nexts[i][1], alphas[i], cfg.gamma)
                       for i, b in enumerate(batches)]
        pis = [a.actor.sample(b.obs, a.generator) for a, b in zip(agents, batches, strict=True)]
        q = self._members(self.critic, [(b.obs, b.act) for b in batches]).view(s, 2, -1)
        q_pi = self._members(self.critic, [(b.obs, pi) for b, (pi, _) in zip(
            batches, pis, strict=True)], detach_weights=True).view(s, 2, -1).min(1).values
        loss = torch.zeros((), device=q.device)
        rows = []
        for i, a in enumerate(agents):
            seed_loss, out = sac_loss(q[i], targets[i], q_pi[i], pis[i][1], alphas[i],
                                      a.log_alpha if cfg.learn_alpha else None, a.target_entropy)
            loss = loss + seed_loss
            rows.append(torch.stack([out[k] for k in SAC.update_keys]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
        self.updates += 1
        return torch.stack(rows)

    def _members(self, critic: TwinCritic, inputs: list[tuple[torch.Tensor, torch.Tensor]],
                 detach_weights: bool = False) -> torch.Tensor:
        """Q values ``2S x B``: seed ``s``'s (obs, act) through members ``2s, 2s + 1``."""
        x = torch.stack([torch.cat([o, a], dim=-1) for o, a in inputs])
        x = x.unsqueeze(1).expand(-1, 2, -1, -1).reshape(2 * self.seeds, *x.shape[1:])
        return critic.forward_members(x, detach_weights)

    # ------------------------------------------------------------------ state
    def write_back(self) -> None:
        """Copy the batched critics, targets, optimizer state and update count into the solo
        agents (whose ``state_dict`` is then each run's checkpoint)."""
        with torch.no_grad():
            for i, a in enumerate(self.agents):
                rows = slice(2 * i, 2 * i + 2)
                for p, solo in zip(self._critic_params, self._solo_critics[i], strict=True):
                    solo.copy_(p[rows])
                for p, solo in zip(self._target_params, self._solo_targets[i], strict=True):
                    solo.copy_(p[rows])
                for shared, same in self._shared_params(i):
                    a.optimizer.state[same] = _cloned(self.optimizer.state.get(shared, {}))
                for p, solo in zip(self._critic_params, self._solo_critics[i], strict=True):
                    a.optimizer.state[solo] = {
                        k: v if k == "step" else v[rows] for k, v in
                        _cloned(self.optimizer.state.get(p, {})).items()}
                a.updates = self.updates

    def _gather_optimizer_state(self) -> None:
        """Start from the solo optimizers' state (a resumed run's): each shared parameter's as
        it is, each critic parameter's concatenated over seeds."""
        solo_states = [a.optimizer.state for a in self.agents]
        if not any(solo_states):
            return
        for i in range(self.seeds):
            for p, solo in self._shared_params(i):
                self.optimizer.state[p] = _cloned(solo_states[i][solo])
        for j, p in enumerate(self._critic_params):
            per_seed = [st[c[j]] for st, c in zip(solo_states, self._solo_critics, strict=True)]
            steps = {float(st["step"]) for st in per_seed}
            if len(steps) != 1:
                raise ValueError(f"seeds side by side need runs at one update count, got {steps}")
            self.optimizer.state[p] = {
                "step": per_seed[0]["step"].clone(),
                **{k: torch.cat([st[k] for st in per_seed]) for k in ("exp_avg", "exp_avg_sq")}}

    def _shared_params(self, i: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter in this optimizer, the solo agent's) pairs that are the same tensor."""
        a = self.agents[i]
        own = list(a.actor.parameters()) + ([a.log_alpha] if self.config.learn_alpha else [])
        return [(p, p) for p in own]


def _cloned(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
