from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpo_engine.errors import ConfigError
from gpo_engine.schedule import budget_at, budget_curve
from gpo_engine.settings import BudgetSettings


def test_paper_default_cosine_curve_over_twelve_steps() -> None:
    # 10 + 40 * 0.5 * (1 + cos(pi * t / 12)), rounded half up.
    assert budget_curve(12, BudgetSettings()) == [50, 49, 47, 44, 40, 35, 30, 25, 20, 16, 13, 11]


def test_cosine_starts_at_initial_and_ends_near_final() -> None:
    curve = budget_curve(50, BudgetSettings())
    assert curve[0] == 50
    assert 10 <= curve[-1] <= 11
    assert all(a >= b for a, b in itertools.pairwise(curve))


def test_cosine_matches_formula_at_every_step() -> None:
    settings = BudgetSettings(initial=80, final=5)
    for t in range(20):
        exact = 5 + 75 * 0.5 * (1 + math.cos(math.pi * t / 20))
        assert abs(budget_at(t, 20, settings) - exact) <= 0.5


def test_linear_decay() -> None:
    assert budget_curve(10, BudgetSettings(decay="linear")) == [
        50,
        46,
        42,
        38,
        34,
        30,
        26,
        22,
        18,
        14,
    ]


def test_rounding_is_half_up_not_bankers() -> None:
    # 3 -> 0 linear over 4 steps: 3, 2.25, 1.5, 0.75; round() would give 2 for 1.5 too,
    # but for 10.5 below it would give 10.
    assert budget_curve(4, BudgetSettings(initial=3, final=0, decay="linear")) == [3, 2, 2, 1]
    assert budget_at(1, 2, BudgetSettings(initial=11, final=10, decay="linear")) == 11


def test_fixed_holds_initial() -> None:
    assert budget_curve(5, BudgetSettings(initial=20, final=3, decay="fixed")) == [20] * 5


def test_warmup_holds_initial_then_decays_over_the_rest() -> None:
    curve = budget_curve(6, BudgetSettings(warmup=2))
    # Decay over the 4 remaining steps: t = 0, 1, 2, 3 of 4.
    assert curve == [50, 50, 50, 44, 30, 16]


def test_warmup_longer_than_the_run_keeps_initial() -> None:
    assert budget_curve(3, BudgetSettings(warmup=5)) == [50, 50, 50]


def test_equal_initial_and_final() -> None:
    assert budget_curve(4, BudgetSettings(initial=7, final=7)) == [7, 7, 7, 7]


def test_single_step_run() -> None:
    assert budget_curve(1, BudgetSettings()) == [50]


def test_step_past_the_end_gets_final() -> None:
    settings = BudgetSettings()
    assert budget_at(12, 12, settings) == 10
    assert budget_at(40, 12, settings) == 10


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        budget_at(0, 0, BudgetSettings())
    with pytest.raises(ValueError, match="step must be"):
        budget_at(-1, 5, BudgetSettings())
    with pytest.raises(ConfigError, match="unknown budget decay 'exp'"):
        budget_at(0, 5, BudgetSettings(decay="exp"))


@given(
    initial=st.integers(0, 500),
    drop=st.integers(0, 500),
    steps=st.integers(1, 60),
    warmup=st.integers(0, 10),
    decay=st.sampled_from(["cosine", "linear", "fixed"]),
)
def test_curve_is_monotone_and_bounded(
    initial: int, drop: int, steps: int, warmup: int, decay: str
) -> None:
    final = max(0, initial - drop)
    curve = budget_curve(steps, BudgetSettings(initial, final, decay, warmup))
    assert len(curve) == steps
    assert curve[0] == initial
    assert all(final <= b <= initial for b in curve)
    assert all(a >= b for a, b in itertools.pairwise(curve))
