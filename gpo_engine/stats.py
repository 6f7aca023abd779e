"""Paired significance tests on per-example outcomes.

Two scorings of the same examples (a baseline and a new prompt) are compared
example by example, which is far more sensitive than comparing two means:
most examples get the same score either way, and only the ones that changed
carry information.

- Every score 0 or 1 (accuracy-like metrics): the exact McNemar test, i.e. a
  two-sided binomial sign test on the discordant pairs (right before and
  wrong after, or the reverse).
- Graded scores (f1, judge): a two-sided paired sign-flip permutation test on
  the differences; exact up to EXACT_LIMIT non-zero differences, else a
  seeded Monte Carlo estimate (so the same inputs always give the same p).

    result = paired_test({"a": 1, "b": 1, "c": 0}, {"a": 0, "b": 1, "c": 0})
    result.delta        # -33.33 points
    result.significant  # False at alpha 0.05

Only examples present in both mappings are compared; `n` says how many.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EXACT_LIMIT = 12  # non-zero differences enumerated exactly (2**12 sign patterns)
RESAMPLES = 10_000  # Monte Carlo sign flips above EXACT_LIMIT
_SEED = 0
_EPS = 1e-9  # float slack when comparing a resampled statistic with the observed one


@dataclass(frozen=True)
class PairedResult:
    """The comparison of `after` with `before` on their shared examples."""

    delta: float  # mean(after) - mean(before), in points (percent of the 0-1 scale)
    p_value: float  # two-sided; 1.0 when nothing changed
    n: int  # examples scored both times
    significant: bool  # p_value < alpha
    alpha: float
    method: str  # "mcnemar" | "permutation" | "none" (no shared example)
    wins: int  # examples that scored higher after
    losses: int  # examples that scored lower after

    @property
    def regression(self) -> bool:
        """A drop the test says is not chance."""
        return self.significant and self.delta < 0


def comparison_words(delta: float | None, p_value: float | None, alpha: float = 0.05) -> str:
    """A paired comparison in words: "significantly better", "not significantly different"
    or "significantly worse" (the two-sided p against `alpha`, the sign of `delta`).

    The one wording of the held-out check, shared by the CLI, the report and the
    editor: "not significantly worse" read as faint praise for a clear gain."""
    if delta is None or p_value is None or p_value >= alpha or delta == 0:
        return "not significantly different"
    return "significantly better" if delta > 0 else "significantly worse"


def held_out_words(verdict: str, delta: float | None, p_value: float | None) -> str:
    """The overfitting guard's verdict ("ok" | "worse") in comparison_words. "worse" is
    significantly worse whatever the rounded p says (the guard judged the exact one)."""
    return "significantly worse" if verdict == "worse" else comparison_words(delta, p_value)


def paired_test(
    before: Mapping[str, float], after: Mapping[str, float], alpha: float = 0.05
) -> PairedResult:
    """Compare two scorings (example id -> score in 0..1) of the same examples."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    shared = [uid for uid in before if uid in after]
    n = len(shared)
    if n == 0:
        return PairedResult(0.0, 1.0, 0, False, alpha, "none", 0, 0)
    diffs = [float(after[uid]) - float(before[uid]) for uid in shared]
    delta = 100.0 * sum(diffs) / n
    wins = sum(1 for d in diffs if d > 0)
    losses = sum(1 for d in diffs if d < 0)
    binary = all(float(v) in (0.0, 1.0) for uid in shared for v in (before[uid], after[uid]))
    if binary:
        p, method = mcnemar_exact(wins, losses), "mcnemar"
    else:
        p, method = sign_flip_p([d for d in diffs if d != 0]), "permutation"
    return PairedResult(delta, p, n, p < alpha, alpha, method, wins, losses)


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    Under the null each discordant pair is a fair coin, so the smaller count
    is Binomial(wins + losses, 1/2); the p-value doubles its lower tail.
    """
    total = wins + losses
    if total == 0:
        return 1.0
    low = min(wins, losses)
    tail = sum(math.comb(total, k) for k in range(low + 1)) / 2**total
    return min(1.0, 2.0 * tail)


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Two-sided p-value of |sum(diffs)| under random sign flips of each difference.

    Zero differences carry no sign and are left out by the caller (they add
    nothing to any flipped sum). Exact enumeration for small samples; above
    EXACT_LIMIT a seeded Monte Carlo estimate with the (k + 1) / (R + 1)
    correction, which never reports an impossible p of 0.
    """
    if not diffs:
        return 1.0
    observed = abs(sum(diffs)) - _EPS
    if len(diffs) <= EXACT_LIMIT:
        extreme = sum(
            1
            for signs in itertools.product((1.0, -1.0), repeat=len(diffs))
            if abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed
        )
        return extreme / 2 ** len(diffs)
    rng = random.Random(_SEED)
    extreme = 0
    for _ in range(RESAMPLES):
        total = sum(d if rng.random() < 0.5 else -d for d in diffs)
        if abs(total) >= observed:
            extreme += 1
    return (extreme + 1) / (RESAMPLES + 1)
