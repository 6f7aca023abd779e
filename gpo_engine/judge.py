"""Metric "judge": a judge model grades the answer against the reference 0-10."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gpo_engine.answers import answer_block
from gpo_engine.scoring import Score, mismatch, quoted

if TYPE_CHECKING:
    from gpo_engine.examples import Example

Judge = Callable[[str], Awaitable[str]]

_JUDGE_TEMPLATE = """You are grading the answer a model gave to a task.

Task input:
{inputs}

Reference answer:
{expected}

Model answer:
{output}

How well does the model answer agree with the reference answer in meaning and \
correctness? Ignore differences of wording and formatting. Rate it from 0 \
(wrong or missing) to 10 (fully correct).
Reply with only the score, in the form "Score: N"."""

_JUDGE_SCORE = re.compile(
    r"\bscore\b\s*(?:is|of)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)"
    r"(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_JUDGE_FRACTION = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?![\w.]*\d)")


def judge_prompt(output: str, example: Example) -> str:
    """The grading prompt sent to the judge model."""
    inputs = "\n".join(f"{name}: {value}" for name, value in example.inputs.items())
    return _JUDGE_TEMPLATE.format(
        inputs=inputs or "(none)", expected=example.expected.strip(), output=output.strip()
    )


def parse_judge_score(reply: str) -> float | None:
    """0..1 from a judge reply such as "Score: 8", "8/10", "7 out of 10", "9";
    None when no single clear score in range is found."""
    found = _JUDGE_SCORE.search(reply) or _JUDGE_FRACTION.search(reply)
    if found:
        value = float(found.group(1))
        scale = float(found.group(2)) if found.group(2) else 10.0
    else:
        numbers = _PLAIN_NUMBER.findall(reply)
        if len(numbers) != 1:
            return None
        value, scale = float(numbers[0]), 10.0
    if scale <= 0 or not 0 <= value <= scale:
        return None
    return value / scale


class JudgeMetric:
    """Asks a judge model to grade the answer 0-10. The judge sees the answer
    block (the output cut where a base model starts a new field). An empty
    output scores 0 without a call. Errors from the judge call (ModelCallError,
    SpendLimitReached) propagate: a failing judge is systemic, and silently
    scoring every example 0 would mislead the optimizer."""

    def __init__(self, judge: Judge) -> None:
        self.name = "judge"
        self._judge = judge

    async def __call__(self, output: str, example: Example) -> Score:
        answer = answer_block(output)
        if not answer:
            return Score(0.0, "empty output")
        reply = await self._judge(judge_prompt(answer, example))
        value = parse_judge_score(reply)
        if value is None:
            return Score(0.0, f"judge answer unparseable: {quoted(reply)}")
        if value >= 1.0:
            return Score(1.0)
        return Score(value, f"judge gave {value * 10:g}/10: {mismatch(example.expected, answer)}")
