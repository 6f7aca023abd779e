"""Paired significance tests, against p-values worked out by hand."""

from __future__ import annotations

import math

import pytest

from gpo_engine.stats import (
    EXACT_LIMIT,
    RESAMPLES,
    PairedResult,
    mcnemar_exact,
    paired_test,
    sign_flip_p,
)


def pairs(before: list[float], after: list[float]) -> tuple[dict[str, float], dict[str, float]]:
    return ({f"e{i}": v for i, v in enumerate(before)},
            {f"e{i}": v for i, v in enumerate(after)})


# -- exact McNemar (two-sided sign test on discordant pairs) -------------------


@pytest.mark.parametrize(
    ("wins", "losses", "expected"),
    [
        (0, 0, 1.0),  # nothing changed
        (0, 1, 1.0),  # 2 * 1/2, capped at 1
        (0, 5, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2) = 0.0625
        (0, 6, 2 / 64),  # 0.03125: the fewest all-one-way flips significant at 5%
        (1, 9, 2 * (1 + 10) / 1024),  # 2 * (C(10,0) + C(10,1)) / 2^10 = 0.021484375
        (9, 1, 2 * (1 + 10) / 1024),  # symmetric
        (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375
        (5, 5, 1.0),  # 2 * 638/1024 > 1, capped
    ],
)
def test_mcnemar_exact_hand_computed(wins: int, losses: int, expected: float) -> None:
    assert mcnemar_exact(wins, losses) == pytest.approx(expected)


def test_binary_drop_of_six_is_significant_and_a_regression() -> None:
    before, after = pairs([1] * 10, [0] * 6 + [1] * 4)
    result = paired_test(before, after)
    assert result == PairedResult(delta=-60.0, p_value=pytest.approx(0.03125), n=10,
                                  significant=True, alpha=0.05, method="mcnemar",
                                  wins=0, losses=6)
    assert result.regression


def test_binary_drop_of_five_is_not_significant() -> None:
    before, after = pairs([1] * 10, [0] * 5 + [1] * 5)
    result = paired_test(before, after)
    assert result.p_value == pytest.approx(0.0625)
    assert not result.significant and not result.regression
    assert result.delta == pytest.approx(-50.0)


def test_concordant_pairs_do_not_count() -> None:
    # 1 win, 9 losses among 10 discordant pairs; 30 rows unchanged (both right or both wrong).
    before, after = pairs([0] + [1] * 9 + [1] * 20 + [0] * 10,
                          [1] + [0] * 9 + [1] * 20 + [0] * 10)
    result = paired_test(before, after)
    assert (result.wins, result.losses, result.n) == (1, 9, 40)
    assert result.p_value == pytest.approx(22 / 1024)
    assert result.delta == pytest.approx(100 * (-8) / 40)


def test_improvement_is_significant_but_not_a_regression() -> None:
    before, after = pairs([0] * 8, [1] * 8)
    result = paired_test(before, after)
    assert result.significant and result.p_value == pytest.approx(2 / 256)
    assert result.delta == 100.0 and not result.regression


def test_alpha_decides_significance() -> None:
    before, after = pairs([1] * 10, [0] * 5 + [1] * 5)  # p = 0.0625
    assert paired_test(before, after, alpha=0.1).significant
    assert not paired_test(before, after, alpha=0.05).significant
    with pytest.raises(ValueError, match="alpha"):
        paired_test(before, after, alpha=0)
    with pytest.raises(ValueError, match="alpha"):
        paired_test(before, after, alpha=1.5)


def test_only_shared_examples_are_paired() -> None:
    result = paired_test({"a": 1, "b": 1, "gone": 1}, {"a": 0, "b": 1, "new": 0})
    assert result.n == 2 and result.losses == 1 and result.delta == pytest.approx(-50.0)


def test_no_shared_example() -> None:
    result = paired_test({"a": 1.0}, {"b": 0.0})
    assert result == PairedResult(0.0, 1.0, 0, False, 0.05, "none", 0, 0)
    assert paired_test({}, {}).method == "none"


def test_identical_scores_give_p_one() -> None:
    before, after = pairs([1, 0, 1], [1, 0, 1])
    result = paired_test(before, after)
    assert result.p_value == 1.0 and result.delta == 0.0 and not result.significant


# -- sign-flip permutation test (graded scores) --------------------------------


def test_sign_flip_hand_computed_equal_diffs() -> None:
    # Of the 8 sign patterns of (0.5, 0.5, 0.5), only +++ and --- reach |1.5|.
    assert sign_flip_p([0.5, 0.5, 0.5]) == pytest.approx(2 / 8)


def test_sign_flip_hand_computed_mixed_diffs() -> None:
    # d = (0.2, 0.4, -0.1), observed |0.5|. Flipped sums: +++ 0.5, ++- 0.7, +-+ -0.3,
    # +-- -0.1, -++ 0.1, -+- 0.3, --+ -0.7, --- -0.5 -> 4 of 8 reach 0.5.
    assert sign_flip_p([0.2, 0.4, -0.1]) == pytest.approx(4 / 8)


def test_graded_scores_use_the_permutation_test() -> None:
    # Differences: -0.5, -0.5, -0.5, -0.5, -0.5, 0 (left out): 2 of 32 patterns as extreme.
    before, after = pairs([1.0, 0.5, 1.0, 0.5, 0.75, 0.3], [0.5, 0.0, 0.5, 0.0, 0.25, 0.3])
    result = paired_test(before, after)
    assert result.method == "permutation"
    assert result.p_value == pytest.approx(2 / 32)
    assert (result.wins, result.losses, result.n) == (0, 5, 6)
    assert result.delta == pytest.approx(100 * -2.5 / 6)
    assert not result.significant


def test_binary_data_through_the_permutation_test_matches_mcnemar() -> None:
    # On +-1 differences the two tests are the same test.
    diffs = [1.0] * 2 + [-1.0] * 8
    assert sign_flip_p(diffs) == pytest.approx(mcnemar_exact(2, 8))


def test_sign_flip_monte_carlo_is_seeded_and_sensible() -> None:
    n = EXACT_LIMIT + 8
    all_down = [-0.5] * n
    p = sign_flip_p(all_down)
    # True p is 2 / 2^20; the estimate cannot go below 1 / (R + 1).
    assert p == pytest.approx(1 / (RESAMPLES + 1))
    balanced = [0.5, -0.5] * (n // 2)
    p_balanced = sign_flip_p(balanced)
    assert p_balanced == sign_flip_p(balanced)  # deterministic
    assert p_balanced > 0.9  # observed sum is 0: every resample is at least as extreme
    assert sign_flip_p([]) == 1.0


def test_graded_large_sample_drop_is_significant() -> None:
    before, after = pairs([0.9] * 30, [0.6] * 25 + [0.9] * 5)
    result = paired_test(before, after)
    assert result.method == "permutation" and result.regression
    assert math.isclose(result.delta, 100 * (-0.3 * 25) / 30)
