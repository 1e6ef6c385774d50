"""Seeds side by side: S seeds of SAC in one process write exactly the rows each writes alone.

On CPU every seed's slice of the batched critic products is bitwise its own product, so the
checks here are equalities, not tolerances: the batched update against solo updates, a suite
run side by side against the same suite run one seed at a time, and the checkpoints of the
two ways read by each other.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_suite
from test_runner import rows, run_dir, specs_for

import mbrl_bench.loops.policy_seeds as policy_seeds
from mbrl_bench.buffer import Batch
from mbrl_bench.errors import ConfigError, NonFiniteError
from mbrl_bench.optimizers.sac import SAC, SACConfig
from mbrl_bench.optimizers.sac_seeds import SeedsSAC
from mbrl_bench.runner.execute import run_all, side_by_side_groups

OBS, ACT = 5, 2
SUITE = tiny_suite(600, 300, episodes=2)  # 300 random steps, then 300 of updates


def _agent(seed: int, hidden: tuple[int, ...] = (32, 32), **settings: object) -> SAC:
    torch.manual_seed(seed)  # as the composition root: initialisation from the run's seed
    return SAC(OBS, ACT, -torch.ones(ACT), torch.ones(ACT),
               SACConfig(hidden_sizes=hidden, batch_size=64, **settings),  # type: ignore[arg-type]
               torch.Generator().manual_seed(seed))


def _batches(seed: int, n: int) -> list[Batch]:
    g = torch.Generator().manual_seed(1000 + seed)
    out = []
    for _ in range(n):
        r = torch.randn(64, 2 * OBS + ACT + 2, generator=g)
        out.append(Batch(r[:, :OBS], r[:, OBS:OBS + ACT].tanh(), r[:, OBS + ACT],
                         r[:, OBS + ACT + 1:2 * OBS + ACT + 1], (r[:, -1] > 1.0).float()))
    return out


def _assert_same_agent(a: SAC, b: SAC) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for part in ("actor", "critic", "target_critic"):
        for name, value in sa[part].items():
            assert torch.equal(value, sb[part][name]), f"{part}.{name}"
    assert torch.equal(sa["log_alpha"], sb["log_alpha"])
    assert sa["updates"] == sb["updates"]
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i, state in oa["state"].items():
        for key, value in state.items():
            assert torch.equal(value, ob["state"][i][key]), f"optimizer state {i}.{key}"


@pytest.mark.parametrize(("n_seeds", "hidden", "learn_alpha", "precision"), [
    (3, (32, 32), True, "fp32"), (3, (32, 32), False, "fp32"), (8, (32, 32), True, "fp32"),
    (4, (20, 13), True, "fp32"), (3, (32, 32), True, "bf16"), (2, (256, 256), True, "bf16")])
def test_batched_updates_equal_each_seed_alone_bitwise(
        n_seeds: int, hidden: tuple[int, ...], learn_alpha: bool, precision: str) -> None:
    """Up to 8 seeds (16 critic members: more than a vector of floats, where an optimizer
    stepping all seeds' tensors at once rounds differently), widths that are no multiple
    of a vector's, and bf16 products (also at the paper's width, 256)."""
    seeds, n = tuple(range(n_seeds)), 4
    data = {s: _batches(s, 2 * n) for s in seeds}
    alone = [_agent(s, hidden, learn_alpha=learn_alpha, precision=precision) for s in seeds]
    alone_out = [[a.update(b) for b in data[s]] for s, a in zip(seeds, alone, strict=True)]
    # the side-by-side agents first train alone (a run resumed from a solo checkpoint), then
    # together from that state
    together = [_agent(s, hidden, learn_alpha=learn_alpha, precision=precision)
                for s in seeds]
    for s, a in zip(seeds, together, strict=True):
        for b in data[s][:n]:
            a.update(b)
    batched = SeedsSAC(together)
    outs = [batched.update([data[s][k] for s in seeds]) for k in range(n, 2 * n)]
    for i, s in enumerate(seeds):
        for k in range(n, 2 * n):
            want = torch.stack([alone_out[i][k][key] for key in SAC.update_keys])
            assert torch.equal(outs[k - n][i], want), f"seed {s} update {k} diagnostics"
        _assert_same_agent(alone[i], together[i])


def test_seeds_of_different_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="one SAC configuration"):
        SeedsSAC([_agent(0), _agent(1, tau=0.01)])


def test_a_suite_side_by_side_writes_the_rows_of_each_seed_alone(files: Path) -> None:
    specs = specs_for(files, SUITE, seeds=(0, 1, 2))
    lines: list[str] = []
    side = run_all(specs, files / "side", threads=1, progress=lines.append, side_by_side=True)
    alone = run_all(specs, files / "alone", threads=1, progress=lambda s: None)
    assert [o.status for o in side] == [o.status for o in alone] == ["complete"] * 3
    assert any(line.startswith("side by side: ") for line in lines)
    ids = [s.run_id for s in specs]
    for seed in (0, 1, 2):
        for name in ("evals.csv", "metrics.csv"):
            got = rows(run_dir(files / "side", seed) / name)
            assert got and got == rows(run_dir(files / "alone", seed) / name), (seed, name)
        meta = json.loads((run_dir(files / "side", seed) / "run.json").read_text())
        assert meta["side_by_side"] == ids and meta["status"] == "complete"


def test_checkpoints_move_between_side_by_side_and_alone(files: Path) -> None:
    """Started side by side and finished alone, started alone (one seed further than the
    other) and finished side by side, or stopped side by side before the first update and
    continued side by side: the rows of runs made alone from start to end."""
    suite = {budget: specs_for(files, tiny_suite(budget, 200, episodes=2), seeds=(0, 1))
             for budget in (200, 400, 800)}  # 300 random steps: no update by 200
    quiet = {"threads": 1, "progress": lambda s: None}
    run_all(suite[800], files / "alone", **quiet)  # type: ignore[arg-type]
    run_all(suite[400], files / "a", side_by_side=True, **quiet)  # type: ignore[arg-type]
    run_all(suite[800], files / "a", **quiet)  # type: ignore[arg-type]
    run_all(suite[400][:1], files / "b", **quiet)  # type: ignore[arg-type]
    lines: list[str] = []
    outcomes = run_all(suite[800], files / "b", threads=1, progress=lines.append,
                       side_by_side=True)
    assert [o.status for o in outcomes] == ["complete", "complete"]
    assert any("different steps" in line for line in lines)
    run_all(suite[200], files / "c", side_by_side=True, **quiet)  # type: ignore[arg-type]
    run_all(suite[800], files / "c", side_by_side=True, **quiet)  # type: ignore[arg-type]
    for seed in (0, 1):
        for out in ("a", "b", "c"):
            for name in ("evals.csv", "metrics.csv"):
                assert (rows(run_dir(files / out, seed) / name)
                        == rows(run_dir(files / "alone", seed) / name)), (out, seed, name)


def test_an_interrupt_leaves_no_seed_running_and_the_same_command_resumes(
        files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C or SIGTERM side by side, or while seeds run one at a time after their
    checkpoints turned out uneven: every seed is recorded interrupted, none left running."""
    import mbrl_bench.runner.compose as compose_mod

    full = specs_for(files, tiny_suite(400, 200, episodes=1), seeds=(0, 1, 2))
    half = specs_for(files, tiny_suite(200, 200, episodes=1), seeds=(0, 1, 2))
    quiet = {"threads": 1, "progress": lambda s: None}

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    def statuses(out: Path) -> list[str]:
        return [json.loads((run_dir(out, s) / "run.json").read_text())["status"]
                for s in (0, 1, 2)]

    with monkeypatch.context() as m:
        m.setattr(policy_seeds, "run_policy_loop_seeds", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_all(full, files / "a", side_by_side=True, **quiet)  # type: ignore[arg-type]
    assert statuses(files / "a") == ["interrupted"] * 3
    run_all(half[:1], files / "b", **quiet)  # type: ignore[arg-type]
    with monkeypatch.context() as m:  # uneven: one at a time, the first one interrupted
        m.setitem(compose_mod.LOOP_RUNNERS, "policy", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_all(full, files / "b", side_by_side=True, **quiet)  # type: ignore[arg-type]
    assert statuses(files / "b") == ["interrupted"] * 3
    for out in ("a", "b"):
        again = run_all(full, files / out, side_by_side=True, **quiet)  # type: ignore[arg-type]
        assert [o.status for o in again] == ["complete"] * 3


def test_a_failing_seed_is_recorded_failed_and_the_others_finish(
        files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = specs_for(files, SUITE, seeds=(0, 1, 2))
    run_all(specs, files / "alone", threads=1, progress=lambda s: None)
    real = policy_seeds.evaluate_policy

    def failing(c, sc, store):  # type: ignore[no-untyped-def]
        if c.seed == 1 and sc.step == 600:
            raise NonFiniteError("non-finite evaluation return at env step 600")
        return real(c, sc, store)

    monkeypatch.setattr(policy_seeds, "evaluate_policy", failing)
    outcomes = run_all(specs, files / "side", threads=1, progress=lambda s: None,
                       side_by_side=True)
    assert [o.status for o in outcomes] == ["complete", "failed", "complete"]
    assert "NonFiniteError" in (outcomes[1].error or "")
    for seed in (0, 2):
        assert (rows(run_dir(files / "side", seed) / "evals.csv")
                == rows(run_dir(files / "alone", seed) / "evals.csv")), seed


def test_a_seed_whose_env_fails_is_recorded_failed_and_the_others_finish(
        files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = specs_for(files, SUITE, seeds=(0, 1, 2))
    run_all(specs, files / "alone", threads=1, progress=lambda s: None)
    real = policy_seeds.collect

    def failing(c, sc, own, random_steps):  # type: ignore[no-untyped-def]
        if c.seed == 2 and sc.step == 450:
            raise RuntimeError("the simulator crashed")
        return real(c, sc, own, random_steps)

    monkeypatch.setattr(policy_seeds, "collect", failing)
    outcomes = run_all(specs, files / "side", threads=1, progress=lambda s: None,
                       side_by_side=True)
    assert [o.status for o in outcomes] == ["complete", "complete", "failed"]
    assert "the simulator crashed" in (outcomes[2].error or "")
    for seed in (0, 1):
        assert (rows(run_dir(files / "side", seed) / "metrics.csv")
                == rows(run_dir(files / "alone", seed) / "metrics.csv")), seed


def test_only_model_free_sac_groups_and_ray_is_refused(files: Path) -> None:
    sac = specs_for(files, SUITE, seeds=(0, 1))
    mbpo = specs_for(files, SUITE, seeds=(0, 1), algo="tiny-mbpo")
    lines: list[str] = []
    groups = side_by_side_groups([*sac, *mbpo], lines.append)
    assert [[s.run_id for s in g] for g in groups] == [
        [s.run_id for s in sac], [mbpo[0].run_id], [mbpo[1].run_id]]
    assert lines == ["tiny-mbpo: side by side trains model-free SAC only (this recipe has a "
                     "model); its runs go one at a time"]
    with pytest.raises(ConfigError, match="--side-by-side"):
        run_all(sac, files / "o", executor="ray", side_by_side=True)


def test_a_local_pool_runs_a_group_in_one_worker(files: Path) -> None:
    specs = specs_for(files, tiny_suite(400, 400, episodes=1), seeds=(0, 1))
    side = run_all(specs, files / "side", workers=2, threads=1, progress=lambda s: None,
                   side_by_side=True)
    run_all(specs, files / "alone", threads=1, progress=lambda s: None)
    assert [o.status for o in side] == ["complete", "complete"]
    metas = [json.loads((run_dir(files / "side", s) / "run.json").read_text()) for s in (0, 1)]
    assert len({m["pid"] for m in metas}) == 1
    assert all(m["side_by_side"] == [s.run_id for s in specs] for m in metas)
    for seed in (0, 1):
        assert (rows(run_dir(files / "side", seed) / "evals.csv")
                == rows(run_dir(files / "alone", seed) / "evals.csv"))
