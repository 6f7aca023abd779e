"""GPO's generation-based update: ask the optimizer model for new prompts.

generate() sends the meta-prompt (gpo_engine.meta_prompts) n times, reads
each answer (gpo_engine.candidates) and screens it: junk, duplicates, lost or
invented template variables, copied training text (gpo_engine.leak_guard)
and edits over the budget become `Rejected` records (data for reports), never
exceptions. An edit over the budget gets one request to shorten it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from gpo_engine.candidates import check_variables, invented_names, parse_answer, without_score_notes
from gpo_engine.candidates import parse_candidate as parse_candidate
from gpo_engine.direction import ScoredPrompt
from gpo_engine.errors import ModelCallError
from gpo_engine.evaluate import gather_all
from gpo_engine.instruction import with_instruction
from gpo_engine.leak_guard import find_leak, leak_pieces
from gpo_engine.meta_prompts import Exemplar, Messages, score_text
from gpo_engine.meta_style import MetaStyle
from gpo_engine.template import template_error, template_tags

REVISION_SAMPLE_OFFSET = 1000  # sample index of the revision of sample i: 1000 + i
_REJECTED_TEXT_CHARS = 2000

Complete = Callable[[Messages, int], Awaitable[str]]


@dataclass(frozen=True)
class Candidate:
    text: str
    distance: int  # word-level Levenshtein distance to the current prompt
    revised: bool  # True if it came back from the one shortening request


@dataclass(frozen=True)
class Rejected:
    text: str
    # "unparseable" | "empty" | "over_budget" | "lost_variable" | "duplicate" | "model_error"
    # | "broken_template" | "leak"; the optimizer adds "lost_structure" (optimizer._in_place)
    reason: str
    detail: str


@dataclass(frozen=True)
class Generation:
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejected, ...]


def word_distance(a: str, b: str) -> int:
    """Words inserted, deleted or substituted to turn `a` into `b`."""
    return int(Levenshtein.distance(a.split(), b.split()))


async def _ask(complete: Complete, messages: Messages, index: int) -> str | ModelCallError:
    try:
        return await complete(messages, index)
    except ModelCallError as error:
        return error


async def _ask_all(
    complete: Complete, requests: Sequence[tuple[Messages, int]]
) -> list[str | ModelCallError]:
    # A systemic failure (spend limit, cancellation) stops the step; gather_all
    # does not leave the sibling requests running behind it.
    return await gather_all(_ask(complete, m, i) for m, i in requests)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _short(text: str) -> str:
    return text if len(text) <= _REJECTED_TEXT_CHARS else text[:_REJECTED_TEXT_CHARS] + "..."


def _screen(
    answer: str | ModelCallError,
    prefilled: bool,
    current: str,
    variables: Sequence[str],
    seen: dict[str, str],
    leaks: Sequence[str] = (),
) -> tuple[str | None, Rejected | None]:
    """The usable prompt in one answer, or why there is none."""
    if isinstance(answer, ModelCallError):
        return None, Rejected("", "model_error", str(answer))
    parsed = parse_answer(answer, prefilled, current)
    if parsed.text is None:
        return None, Rejected(_short(answer), parsed.reason, parsed.detail)
    text = without_score_notes(parsed.text) if prefilled else parsed.text
    if not text:
        return None, Rejected(_short(answer), "empty", "only a score note")
    if template_tags(current) and not template_tags(text):
        # An answer without any template tag is an instruction, as in the paper,
        # where prompts are instructions placed before the question. Small
        # models answer this way almost always, so it replaces the current
        # prompt's instruction and the lines that carry the inputs (or a
        # partial, in a system message) are kept.
        text = with_instruction(text, current)
    broken = template_error(text)
    if broken is not None:
        return None, Rejected(text, "broken_template", broken)
    if _norm(text) in seen:
        return None, Rejected(text, "duplicate", seen[_norm(text)])
    missing = check_variables(text, variables)
    invented = invented_names(text, current)
    if missing or invented:
        problems = [f"drops {{{{{name}}}}}" for name in missing]
        problems += [f"uses unknown {{{{{name}}}}}" for name in invented]
        return None, Rejected(text, "lost_variable", "; ".join(problems))
    leak = find_leak(text, leaks)
    if leak is not None:
        return None, Rejected(text, "leak", f"copies training text {leak[0]!r} "
                                            f"({leak[1]:.0f}% match)")
    return text, None


async def generate(
    complete: Complete,
    *,
    current: str,
    direction: Sequence[ScoredPrompt],
    exemplars: Sequence[Exemplar],
    budget: int,
    n: int,
    variables: Sequence[str],
    style: MetaStyle,
    train_texts: Sequence[str] = (),
) -> Generation:
    """Ask for n candidates concurrently and keep the usable ones.

    `train_texts` (the training rows' inputs and expected outputs) arm the
    leak guard: a candidate that copies one of them is rejected as "leak".

    `complete(messages, sample_index)` returns the optimizer's text; samples
    use indexes 0..n-1 and the revision of sample i uses 1000 + i, so each has
    its own response-cache entry. Candidates come back in sample order.
    """
    if n <= 0:
        return Generation((), ())
    messages = style.meta_prompt(current, direction, exemplars, budget)
    answers = await _ask_all(complete, [(messages, i) for i in range(n)])

    # Texts already known: proposing one again would only re-measure it.
    seen: dict[str, str] = {_norm(current): "same as the current prompt"}
    for prompt in direction:
        seen.setdefault(
            _norm(prompt.text), f"same as an earlier prompt (score {score_text(prompt.score)})"
        )

    accepted: dict[int, Candidate] = {}
    rejected: dict[int, Rejected] = {}
    over_budget: dict[int, tuple[str, int]] = {}
    leaks = leak_pieces(train_texts, current)

    for index, answer in enumerate(answers):
        text, problem = _screen(answer, style.prefilled, current, variables, seen, leaks)
        if problem is not None:
            rejected[index] = problem
            continue
        assert text is not None
        seen[_norm(text)] = f"same as sample {index}"
        distance = word_distance(current, text)
        if distance <= budget:
            accepted[index] = Candidate(text, distance, False)
        else:
            over_budget[index] = (text, distance)

    if over_budget:
        pending = list(over_budget.items())
        requests = [
            (
                style.revision_request(text, current, budget, distance),
                REVISION_SAMPLE_OFFSET + index,
            )
            for index, (text, distance) in pending
        ]
        revisions = await _ask_all(complete, requests)
        for (index, (text, distance)), answer in zip(pending, revisions, strict=True):
            note = f"{distance} words changed, budget {budget}"
            revised, problem = _screen(answer, style.prefilled, current, variables, seen,
                                       leaks)
            if problem is not None:
                if problem.reason in ("model_error", "leak"):
                    rejected[index] = Rejected(problem.text or text, problem.reason,
                                               f"{note}; {problem.detail}")
                else:
                    rejected[index] = Rejected(
                        text, "over_budget", f"{note}; revision unusable: {problem.detail}"
                    )
                continue
            assert revised is not None
            new_distance = word_distance(current, revised)
            if new_distance > budget:
                rejected[index] = Rejected(
                    text, "over_budget", f"{note}; the revision still changed {new_distance}"
                )
                continue
            seen[_norm(revised)] = f"same as sample {index}"
            accepted[index] = Candidate(revised, new_distance, True)

    return Generation(
        candidates=tuple(accepted[i] for i in sorted(accepted)),
        rejected=tuple(rejected[i] for i in sorted(rejected)),
    )
