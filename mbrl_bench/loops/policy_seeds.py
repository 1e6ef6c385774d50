"""The policy loop for S seeds of model-free SAC side by side, in lock step.

Each seed is a whole run (its own env, generators, buffer, run folder and checkpoints, built by
the composition root as alone); only the policy updates are shared: every update step samples
each seed's batch from its own buffer with its own generator and applies one
:class:`~mbrl_bench.optimizers.sac_seeds.SeedsSAC` update to all of them. Phases per env step,
as in :mod:`~mbrl_bench.loops.policy`:

1. **collect**: one real step of every seed (random actions, then its own policy);
2. **update**: ``updates_per_step`` batched updates;
3. **log** each seed's metrics row, **evaluate** each seed, then write each seed's checkpoint
   (the one its run writes alone: every parameter and optimizer state is its solo agent's).

On CPU each seed writes the rows it writes alone (``tests/test_side_by_side.py``). Timing
columns are the group's: ``update_s`` is the batched updates' time divided by S, and
``steps_per_s`` each seed's env steps per second of the group's wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from mbrl_bench.loops.policy import Own, collect, evaluate_policy, lap, log_row
from mbrl_bench.loops.scaffold import Components, RunRecord, Scaffold
from mbrl_bench.optimizers.sac_seeds import SeedsSAC


class SeedFailure(Exception):
    """Seed ``index``'s run failed (e.g. a non-finite loss) while the others can go on."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.index, self.error = index, error


class UnevenSeeds(Exception):
    """The seeds' checkpoints are at different steps: they cannot run in lock step."""


def run_policy_loop_seeds(
    cs: Sequence[Components], stores: Sequence[RunRecord],
    progress: Callable[[str], None] = print,
) -> None:
    """Train the seeds ``cs`` (one recipe, one task) side by side to the suite's budget."""
    cfg = cs[0].loop_config
    scs = [Scaffold(c, store, progress, parts={"optimizer": c.optimizer, "buffer": c.buffer,
                                               "model_phase": None})
           for c, store in zip(cs, stores, strict=True)]
    owns = [_per_seed(i, partial(_start, c, sc)) for i, (c, sc) in enumerate(zip(
        cs, scs, strict=True))]
    if len({sc.step for sc in scs}) != 1:
        raise UnevenSeeds(", ".join(f"{c.run_id} at step {sc.step}"
                                    for c, sc in zip(cs, scs, strict=True)))
    seeds = SeedsSAC([c.optimizer for c in cs])
    sc0 = scs[0]
    while sc0.step < sc0.budget:
        # --- collect: one step of every seed
        for i, (c, sc, own) in enumerate(zip(cs, scs, owns, strict=True)):
            t_phase = time.perf_counter()
            _per_seed(i, partial(collect, c, sc, own, cfg.initial_random_steps))
            lap(own, 0, t_phase)
        # --- update: every seed's batch, one batched step (same schedule for every seed)
        if (sc0.step >= cfg.initial_random_steps
                and len(cs[0].buffer) >= seeds.config.batch_size):
            _update(cs, owns, seeds)
        # --- log, evaluate, checkpoint: each seed's own rows and checkpoint
        lines = [_per_seed(i, partial(log_row, cs[i], sc, owns[i], stores[i]))
                 if sc.log_due(cfg.log_every) else None for i, sc in enumerate(scs)]
        if sc0.eval_due():
            for sc in scs:  # every seed's evaluation, then every checkpoint: a seed that fails
                sc.begin_eval()  # leaves the others' checkpoints at one step
            for i, sc in enumerate(scs):
                _per_seed(i, partial(evaluate_policy, cs[i], sc, stores[i]))
            for i, sc in enumerate(scs):
                _per_seed(i, partial(sc.checkpoint, owns[i].state()))
            for sc in scs:
                sc.end_eval()
        for line in lines:
            if line is not None:
                progress(line())


def _start(c: Components, sc: Scaffold) -> Own:
    """Start (or resume) one seed's run: its loop state."""
    return Own.restored(c, sc.start())


def _update(cs: Sequence[Components], owns: Sequence[Own], seeds: SeedsSAC) -> None:
    """``updates_per_step`` batched updates, each on every seed's own batch (drawn from its
    buffer with its generator); each seed is charged 1/S of their time."""
    t_phase = time.perf_counter()
    for _ in range(seeds.config.updates_per_step):
        out = seeds.update([c.buffer.sample(seeds.config.batch_size, c.torch_gen) for c in cs])
        for i, own in enumerate(owns):
            own.sums += out[i]
            own.n_updates += 1
    share = (time.perf_counter() - t_phase) / len(cs)
    for own in owns:
        own.phase_s[2] += share


def _per_seed(index: int, work: Callable[[], Any]) -> Any:
    """``work()`` for seed ``index``; its failure becomes a :class:`SeedFailure`."""
    try:
        return work()
    except (KeyboardInterrupt, SeedFailure):
        raise
    except Exception as e:
        raise SeedFailure(index, e) from e
