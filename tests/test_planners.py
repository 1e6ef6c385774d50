"""Planners: each optimises a function over action sequences B x H x A (no model involved)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbrl_bench.config import build
from mbrl_bench.errors import ConfigError, NonFiniteError
from mbrl_bench.parts import PLANNERS
from mbrl_bench.planners.sampling import (
    CEM,
    MPPI,
    CEMConfig,
    MPPIConfig,
    RandomShooting,
    RandomShootingConfig,
    rank_values,
)

H, A = 6, 2
LOW, HIGH = np.array([-2.0, 0.0]), np.array([2.0, 1.0])
TARGET = torch.stack([torch.linspace(-1.5, 1.5, H), torch.linspace(0.3, 0.7, H)], dim=1)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    """``B x H x A -> B``: -1 - |x - TARGET|^2, negative everywhere, maximal at TARGET."""
    return -1.0 - ((x - TARGET) ** 2).sum(dim=(1, 2))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def planners() -> list:  # type: ignore[type-arg]
    return [
        RandomShooting(LOW, HIGH, H, RandomShootingConfig(population_size=500)),
        CEM(LOW, HIGH, H, CEMConfig(population_size=200, iterations=8)),
        MPPI(LOW, HIGH, H, MPPIConfig(population_size=200, iterations=8, reward_scale=5.0)),
    ]


def test_cem_finds_the_minimum_of_a_quadratic_over_sequences() -> None:
    cem = CEM(LOW, HIGH, H, CEMConfig(population_size=300, iterations=12))
    plan = cem.optimize(quadratic, None, gen())
    assert plan.shape == (H, A)
    assert torch.allclose(plan, TARGET, atol=0.02), (plan - TARGET).abs().max()


def test_cem_warm_start_at_the_optimum_stays_there() -> None:
    cem = CEM(LOW, HIGH, H, CEMConfig(population_size=100, iterations=2))
    cold = cem.optimize(quadratic, None, gen())
    warm = cem.optimize(quadratic, TARGET, gen())
    assert quadratic(warm[None]) > quadratic(cold[None])
    assert torch.allclose(warm, TARGET, atol=0.1)


@pytest.mark.parametrize("which", [0, 2], ids=["random_shooting", "mppi"])
def test_random_shooting_and_mppi_improve_on_the_mean(which: int) -> None:
    """The plan beats the average uniformly random sequence and the start (middle of bounds)."""
    planner = planners()[which]
    plan = planner.optimize(quadratic, None, gen())
    u = torch.rand(2000, H, A, generator=gen(9))
    random_mean = quadratic(torch.as_tensor(LOW) + u * torch.as_tensor(HIGH - LOW)).mean()
    middle = quadratic(((torch.as_tensor(LOW) + torch.as_tensor(HIGH)) / 2).expand(1, H, A))
    value = float(quadratic(plan[None].float()))
    assert value > float(random_mean) + 1.0 and value > float(middle) + 1.0, (
        value, float(random_mean), float(middle))


def test_planners_sample_within_bounds_with_the_right_shapes() -> None:
    for planner in planners():
        seen: list[torch.Tensor] = []

        def objective(x: torch.Tensor, seen: list[torch.Tensor] = seen) -> torch.Tensor:
            seen.append(x)
            return quadratic(x)

        plan = planner.optimize(objective, None, gen())
        assert plan.shape == (H, A) and plan.dtype == torch.float32
        assert all(x.dim() == 3 and x.shape[1:] == (H, A) for x in seen)
        xs = torch.cat(seen)
        low, high = torch.as_tensor(LOW, dtype=torch.float32), torch.as_tensor(HIGH,
                                                                               dtype=torch.float32)
        assert bool((xs >= low).all() and (xs <= high).all()), type(planner).__name__
        assert bool((plan >= low).all() and (plan <= high).all())


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    for planner in planners():
        a = planner.optimize(quadratic, None, gen(3))
        b = planner.optimize(quadratic, None, gen(3))
        c = planner.optimize(quadratic, None, gen(4))
        assert torch.equal(a, b) and not torch.equal(a, c), type(planner).__name__


def test_nan_and_inf_rank_last() -> None:
    v = torch.tensor([-5.0, math.nan, math.inf, -math.inf, -1e-10], dtype=torch.float64)
    assert rank_values(v).tolist() == [-5.0, -math.inf, -math.inf, -math.inf, -1e-10]
    assert int(torch.argmax(rank_values(v))) == 4


def test_planners_never_pick_sequences_whose_return_is_nan() -> None:
    """Every return is negative; sequences whose first action is above -0.5 return NaN (or
    +inf), though the finite optimum lies there. Reading NaN as -1e-10 (mbrl-lib) would make
    them elites and move the plan there; ranked last, the plan stays among finite ones."""

    def objective(x: torch.Tensor) -> torch.Tensor:
        bad = x[:, 0, 0] > -0.5
        values = quadratic(x)
        values = torch.where(bad & (x[:, 0, 1] > 0.5), torch.full_like(values, math.inf), values)
        return torch.where(bad & (x[:, 0, 1] <= 0.5), torch.full_like(values, math.nan), values)

    for planner in planners():
        plan = planner.optimize(objective, None, gen())
        assert float(plan[0, 0]) <= -0.5 + 0.05, (type(planner).__name__, plan[0])
        assert math.isfinite(float(objective(plan[None])))


def test_all_returns_nonfinite_fails_loudly() -> None:
    for planner in planners():
        with pytest.raises(NonFiniteError, match="every one"):
            planner.optimize(lambda x: torch.full((x.shape[0],), math.nan), None, gen())


def test_objective_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="expected"):
        planners()[1].optimize(lambda x: torch.zeros(x.shape[0], 1), None, gen())


def test_cem_elite_count_rounds_up_and_configs_are_validated() -> None:
    assert CEMConfig(population_size=480, elite_ratio=0.078).num_elites == 38
    assert CEMConfig(population_size=500, elite_ratio=0.1).num_elites == 50
    with pytest.raises(ConfigError, match="elite_ratio"):
        build(CEMConfig, {"elite_ratio": 1.5}, "pets.toml", prefix="planner.")
    with pytest.raises(ConfigError, match="smoothing"):
        build(MPPIConfig, {"smoothing": 0.0}, "pets-mppi.toml", prefix="planner.")
    with pytest.raises(ValueError, match="bounds"):
        CEM(np.array([1.0]), np.array([1.0]), 3, CEMConfig())


def test_planners_are_registered() -> None:
    assert {"cem", "random_shooting", "mppi"} <= set(PLANNERS.names())
    entry = PLANNERS.get("cem")
    planner = entry.factory(LOW, HIGH, H, entry.config_cls())
    assert planner.optimize(quadratic, None, gen()).shape == (H, A)
