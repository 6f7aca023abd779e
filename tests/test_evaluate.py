"""evaluate(): per-row failures are data, systemic failures raise, intervals are sane."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gpo_engine.errors import ModelCallError, SpendLimitReached
from gpo_engine.evaluate import EvalResult, Outcome, TaskFn, confidence_interval, evaluate
from gpo_engine.examples import Example
from gpo_engine.metrics import get_metric
from gpo_engine.rendering import PromptRenderer, RowData


def rendered(ask: Callable[[str], Awaitable[str]]) -> TaskFn:
    """A task function that sees the prompt as Dotprompt renders it for the row."""
    renderer = PromptRenderer(None, ())

    async def task(template: str, example: Example) -> str:
        messages = await renderer.render(template, RowData(example.inputs))
        return await ask("".join(m.text for m in messages).rstrip())

    return task


def _rows(n: int) -> list[Example]:
    return [Example({"q": f"q{i}"}, "yes" if i % 2 else "no", "dev", i + 1, f"u{i}")
            for i in range(n)]


async def test_scores_rendered_prompts_with_the_metric() -> None:
    seen: list[str] = []

    async def task(prompt: str) -> str:
        seen.append(prompt)
        return "yes" if prompt.endswith(("1", "3")) else "no"

    res = await evaluate(rendered(task), "Answer: {{q}}", _rows(4), get_metric("exact"))
    assert sorted(seen) == ["Answer: q0", "Answer: q1", "Answer: q2", "Answer: q3"]
    assert res.n == 4 and res.score == 100.0 and res.failures == 0


async def test_one_failed_call_is_a_zero_with_its_reason() -> None:
    async def task(prompt: str) -> str:
        if prompt == "q0":
            raise ModelCallError("m", "timeout", "no answer in 5 s")
        return "yes" if prompt in ("q1", "q3") else "no"

    res = await evaluate(rendered(task), "{{q}}", _rows(4), get_metric("exact"))
    assert res.failures == 1
    assert res.score == 75.0
    failed = res.by_uid()["u0"]
    assert failed.score == 0.0 and "timeout" in failed.error


async def test_most_calls_failing_is_systemic() -> None:
    async def task(prompt: str) -> str:
        raise ModelCallError("m", "server", "500")

    with pytest.raises(ModelCallError, match="4 of 4 calls failed"):
        await evaluate(rendered(task), "{{q}}", _rows(4), get_metric("exact"))


async def test_auth_error_and_spend_limit_stop_at_once_and_cancel_siblings() -> None:
    started: list[str] = []

    async def task(prompt: str) -> str:
        started.append(prompt)
        if prompt == "q0":
            raise SpendLimitReached(1.0, 1.0)
        await asyncio.sleep(10)
        return "no"

    with pytest.raises(SpendLimitReached):
        await asyncio.wait_for(evaluate(rendered(task), "{{q}}", _rows(3), get_metric("exact")), 5)

    async def denied(prompt: str) -> str:
        raise ModelCallError("m", "auth", "bad key")

    with pytest.raises(ModelCallError, match="auth"):
        await evaluate(rendered(denied), "{{q}}", _rows(3), get_metric("exact"))

    async def spent(prompt: str) -> str:
        raise ModelCallError("m", "budget", "Budget has been exceeded!")

    with pytest.raises(ModelCallError, match="budget"):
        await evaluate(rendered(spent), "{{q}}", _rows(3), get_metric("exact"))


def test_a_systemic_failure_of_a_refused_key_or_a_spent_budget_is_not_retried() -> None:
    from gpo_server.job import failure_kind
    from gpo_server.jobs import RETRYABLE_KINDS

    def systemic(first: str) -> ModelCallError:
        return ModelCallError("m", "systemic", f"4 of 4 calls failed; first: m: {first}: no")

    assert failure_kind(systemic("auth")) == "auth"
    assert failure_kind(systemic("budget")) == "budget"
    assert failure_kind(systemic("timeout")) == "systemic" in RETRYABLE_KINDS
    assert "budget" not in RETRYABLE_KINDS and "auth" not in RETRYABLE_KINDS


def test_wilson_interval_for_accuracy() -> None:
    lo, hi = confidence_interval([1.0] * 8 + [0.0] * 2)
    # Wilson 95% for 8/10 is about 49.0 - 94.3.
    assert lo == pytest.approx(49.0, abs=0.2) and hi == pytest.approx(94.3, abs=0.2)
    lo, hi = confidence_interval([0.0] * 5)
    assert lo == 0.0 and 40 < hi < 50  # not the degenerate 0-0 of the normal approximation
    assert confidence_interval([]) == (0.0, 100.0)


def test_normal_interval_for_graded_scores() -> None:
    lo, hi = confidence_interval([0.5, 0.5, 0.5, 0.5])
    assert lo == hi == 50.0
    lo, hi = confidence_interval([0.2, 0.4, 0.6, 0.8])
    assert 20 < lo < 50 < hi < 80


def test_merged_keeps_first_outcome_per_row() -> None:
    a = EvalResult((Outcome("x", 1.0, "yes"),))
    b = EvalResult((Outcome("x", 0.0, "no"), Outcome("y", 0.0, "no")))
    merged = a.merged(b)
    assert [o.uid for o in merged.outcomes] == ["x", "y"]
    assert merged.score == 50.0
