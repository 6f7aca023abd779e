"""Score one prompt template on a list of examples.

A model failure on one example is data: that example scores 0 and keeps the
error as its reason. Only a systemic failure raises: most of the rows failing
(the model is down or the key is wrong) or the spend limit.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gpo_engine.errors import ConfigError, ModelCallError
from gpo_engine.examples import Example
from gpo_engine.scoring import Metric, Score

T = TypeVar("T")

# (template, example row) -> the task model's answer text. The function renders
# the template for the row (Dotprompt's messages) and makes the task call.
TaskFn = Callable[[str, Example], Awaitable[str]]

# Failures no other row can escape: a refused or missing key, a spent budget or quota.
STOP_AT_ONCE = ("auth", "budget")

# Above this share of failed calls the evaluation is meaningless: raise.
SYSTEMIC_FAILURE_SHARE = 0.5


@dataclass(frozen=True)
class Outcome:
    uid: str
    score: float  # 0.0-1.0
    output: str
    reason: str = ""
    error: str = ""  # the model error when the call failed


@dataclass(frozen=True)
class EvalResult:
    outcomes: tuple[Outcome, ...]

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def score(self) -> float:
        """Mean score as a percentage (0-100); 0 for an empty evaluation."""
        if not self.outcomes:
            return 0.0
        return 100.0 * sum(o.score for o in self.outcomes) / len(self.outcomes)

    @property
    def failures(self) -> int:
        return sum(1 for o in self.outcomes if o.error)

    def interval(self) -> tuple[float, float]:
        return confidence_interval([o.score for o in self.outcomes])

    def by_uid(self) -> dict[str, Outcome]:
        return {o.uid: o for o in self.outcomes}

    def merged(self, other: EvalResult) -> EvalResult:
        """This result plus `other`'s outcomes for rows this one lacks."""
        seen = {o.uid for o in self.outcomes}
        return EvalResult(self.outcomes + tuple(o for o in other.outcomes if o.uid not in seen))


def confidence_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """95% interval of the mean, in percent.

    Wilson's interval when every value is 0 or 1 (accuracy): it stays inside
    [0, 100] and behaves at 0/n and n/n, where the normal approximation
    collapses to a zero-width interval. Otherwise the normal approximation.
    """
    n = len(values)
    if n == 0:
        return (0.0, 100.0)
    mean = sum(values) / n
    if all(v in (0.0, 1.0) for v in values):
        denom = 1 + z * z / n
        centre = (mean + z * z / (2 * n)) / denom
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
        lo, hi = centre - half, centre + half
    else:
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        half = z * math.sqrt(var / n)
        lo, hi = mean - half, mean + half
    return (100.0 * max(0.0, lo), 100.0 * min(1.0, hi))


async def evaluate(
    task: TaskFn, template: str, examples: Sequence[Example], metric: Metric
) -> EvalResult:
    """Ask the task model with `template` rendered for each example; score the answers."""

    async def one(example: Example) -> Outcome:
        try:
            output = await task(template, example)
        except ModelCallError as exc:
            if exc.kind in STOP_AT_ONCE:
                raise  # no point asking again for every row
            return Outcome(example.uid, 0.0, "", reason="model call failed", error=str(exc))
        except ConfigError as exc:  # this row cannot be rendered (a media file is missing...)
            return Outcome(example.uid, 0.0, "", reason="render failed",
                           error=f"example line {example.line}: {exc}")
        score: Score = await metric(output, example)
        return Outcome(example.uid, score.value, output, reason=score.reason)

    outcomes = await gather_all(one(e) for e in examples)
    result = EvalResult(tuple(outcomes))
    if result.n and result.failures / result.n > SYSTEMIC_FAILURE_SHARE:
        first = next(o.error for o in result.outcomes if o.error)
        raise ModelCallError("task model", "systemic",
                             f"{result.failures} of {result.n} calls failed; first: {first}")
    return result


async def gather_all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """gather() that cancels the siblings when one raises (spend limit, auth, an
    outage, a cancelled job), so no model call goes on behind a failure."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
