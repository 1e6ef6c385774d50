"""S seeds of SAC trained side by side: one critic product per layer for all of them, each
seed's numbers exactly those of its run alone (on CPU).

:class:`SeedsSAC` drives S solo :class:`~mbrl_bench.optimizers.sac.SAC` agents (one per seed,
each built by the composition root with its own generator) and owns no state of its own:

- the S twin critics (and their targets) run as one ``2S``-member critic: each update
  concatenates the seeds' critic weights along the member dimension (seed ``s`` owns members
  ``2s, 2s + 1``), so each critic layer of all seeds is one ``baddbmm``, and the gradients flow
  back into each seed's own parameters;
- each seed keeps its own actor, temperature and generator: the actor's small products run per
  seed with the same operations as alone (a batched actor head is not bitwise ``nn.Linear`` on
  every CPU), and every random number comes from the seed's own generator;
- the losses are computed per seed by :func:`sac_loss` and summed, so each seed's gradients are
  its own; then each seed's own optimizer steps (fused Adam treats each tensor by vector
  chunks and a scalar tail: stepping a 2S-member tensor at once would round some elements of
  some seeds differently than their own run does).

On CPU each seed's slice of the batched products equals its own product bitwise
(``benchmarks/seed_batching_exactness.py``), so a seed trained side by side writes the rows it
writes alone (``tests/test_side_by_side.py``). Every parameter, optimizer state and generator
stays in the solo agents, so each run's checkpoint is its usual one: a run started side by side
resumes alone and the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mbrl_bench.buffer import Batch
from mbrl_bench.optimizers.sac import SAC, critic_q, sac_loss, soft_td_target


class SeedsSAC:
    """S solo SAC agents (one config, one device, one size) updated as one; see the module."""

    def __init__(self, agents: Sequence[SAC]) -> None:
        first = agents[0]
        if any(a.config != first.config or a.device != first.device for a in agents):
            raise ValueError("seeds side by side need one SAC configuration and one device")
        if first.config.value_expansion > 0:
            raise ValueError("optimizer.value_expansion: seeds side by side train model-free "
                             "SAC only")
        self.agents = list(agents)
        self.config = first.config
        self._critics = [a.critic.weights() for a in agents]
        self._targets = [a.target_critic.weights() for a in agents]
        self._critic_params = [p for ws in self._critics for p in ws]
        self._target_params = [p for ws in self._targets for p in ws]

    @property
    def seeds(self) -> int:
        return len(self.agents)

    def update(self, batches: Sequence[Batch]) -> torch.Tensor:
        """One SAC step of every seed, seed ``s`` on ``batches[s]``; returns the diagnostics
        ``S x len(SAC.update_keys)`` (detached)."""
        agents, cfg = self.agents, self.config
        with agents[0].products():
            loss, rows = self._loss(batches)
        for a in agents:
            a.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for a in agents:
            a.optimizer.step()
            a.updates += 1
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
        return torch.stack(rows)

    def _loss(self, batches: Sequence[Batch]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The seeds' summed loss and each seed's diagnostics (one forward of every seed)."""
        agents, s, cfg = self.agents, self.seeds, self.config
        alphas = [a.log_alpha.detach().exp() for a in agents]
        with torch.no_grad():
            nexts = [a.actor.sample(b.next_obs, a.generator) for a, b in zip(agents, batches,
                                                                            strict=True)]
            q_next = critic_q(self._inputs([(b.next_obs, act) for b, (act, _) in zip(
                batches, nexts, strict=True)]), _joined(self._targets))
            q_next = q_next.view(s, 2, -1).min(1).values
            targets = [soft_td_target(b, q_next[i], nexts[i][1], alphas[i], cfg.gamma)
                       for i, b in enumerate(batches)]
        pis = [a.actor.sample(b.obs, a.generator) for a, b in zip(agents, batches, strict=True)]
        weights = _joined(self._critics)
        q = critic_q(self._inputs([(b.obs, b.act) for b in batches]), weights).view(s, 2, -1)
        q_pi = critic_q(self._inputs([(b.obs, pi) for b, (pi, _) in zip(batches, pis,
                                                                         strict=True)]),
                        [w.detach() for w in weights]).view(s, 2, -1).min(1).values
        loss = torch.zeros((), device=q.device)
        rows = []
        for i, a in enumerate(agents):
            seed_loss, out = sac_loss(q[i], targets[i], q_pi[i], pis[i][1], alphas[i],
                                      a.log_alpha if cfg.learn_alpha else None, a.target_entropy)
            loss = loss + seed_loss
            rows.append(torch.stack([out[k] for k in SAC.update_keys]))
        return loss, rows

    def _inputs(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The critic's input ``2S x B x (O + A)``: seed ``s``'s (obs, act) for its 2 members."""
        x = torch.stack([torch.cat([o, a], dim=-1) for o, a in pairs])
        return x.unsqueeze(1).expand(-1, 2, -1, -1).reshape(2 * self.seeds, *x.shape[1:])


def _joined(per_seed: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Each critic parameter of all seeds concatenated along the member dimension."""
    return [torch.cat(ws) for ws in zip(*per_seed, strict=True)]
