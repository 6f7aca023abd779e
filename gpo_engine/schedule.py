"""The edit budget B_t: how many words a step may change (GPO's "learning rate").

GPO decays the number of words the optimizer may change from `initial` to
`final` over the run, by default with a cosine curve:
B_t = final + (initial - final) * 0.5 * (1 + cos(pi * t / T)).
Like the paper's code, T is the number of decaying steps and t runs 0..T-1, so
the last step lands just above `final`; any step past the end gets `final`.
"""

from __future__ import annotations

import math

from gpo_engine.errors import ConfigError
from gpo_engine.settings import DECAYS, BudgetSettings


def budget_at(step: int, total_steps: int, budget: BudgetSettings) -> int:
    """Words the optimizer may change at 0-based `step` of a `total_steps` run."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be 0 or more, got {step}")
    if budget.decay not in DECAYS:
        raise ConfigError(
            f"unknown budget decay {budget.decay!r}; choose one of {', '.join(DECAYS)}"
        )
    if budget.decay == "fixed" or step < budget.warmup:
        return budget.initial
    span = total_steps - budget.warmup
    if span <= 0:
        # The whole run is warm-up; a step past it has nothing to decay over.
        return budget.initial
    # Clamped so that asking after the run (the suggestion shown once it is
    # finished) yields the final budget instead of an extrapolation.
    fraction = min(step - budget.warmup, span) / span
    if budget.decay == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * fraction))
    else:
        factor = 1.0 - fraction
    value = budget.final + (budget.initial - budget.final) * factor
    # Round half up (Python's round() is banker's rounding); the epsilon keeps
    # an exact .5 that floating point computed as .4999999 from rounding down.
    return max(budget.final, math.floor(value + 0.5 + 1e-9))


def budget_curve(total_steps: int, budget: BudgetSettings) -> list[int]:
    """B_t for every step of the run, for reports and the editor's hover."""
    return [budget_at(step, total_steps, budget) for step in range(total_steps)]
