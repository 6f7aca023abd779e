"""Overfitting guards, on by default: the held-out test check of a proposal and the
leak guard against candidates that copy training text."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gpo_engine import candidates, leak_guard, update
from gpo_engine.direction import ScoredPrompt
from gpo_engine.evaluate import EvalResult, Outcome
from gpo_engine.meta_style import CHAT
from gpo_engine.optimizer import Result, held_out_verdict
from gpo_engine.task import load_task, open_store
from gpo_server.cli import main
from tests.model_server import ModelServer
from tests.prompt_files import write_prompt
from tests.scripted_models import (
    CAPITALS,
    GOOD,
    ScriptedModels,
    is_meta_prompt,
    run_task,
    write_capitals,
)

REVIEWS = [
    ("The soup was cold and the waiter ignored us for the better part of an hour.", "negative"),
    ("Fresh bread, a warm welcome and the best risotto I have eaten this year.", "positive"),
    ("Our table wobbled, the wine was corked and nobody seemed to care at all.", "negative"),
    ("Lovely terrace, friendly staff, and the lemon tart was simply wonderful.", "positive"),
    ("The fries were soggy and the burger arrived long after everyone else's.", "negative"),
    ("A quiet little place with honest food and a kind owner who remembers you.", "positive"),
]
LEAKED = REVIEWS[0][0]  # a train row (rows cycle train, dev, test)
REVIEW_BODY = "Tell me about this review.\nReview: {{review}}\nAnswer:\n"
GOOD_REVIEW = "<START>Give the sentiment of the review: positive or negative.<END>"
LEAKY_REVIEW = (f"<START>Give the sentiment of the review: positive or negative. For example, "
                f"'{LEAKED}' is negative.<END>")


pytestmark = pytest.mark.usefixtures("api_key")


def write_reviews(folder: Path, steps: int = 1) -> Path:
    splits = ["train", "dev", "test"]
    rows = [{"review": r, "expected": label, "split": splits[i % 3]}
            for i, (r, label) in enumerate(REVIEWS * 2)]
    # Every row twice would be a duplicate; vary the second copy a little.
    for row in rows[len(REVIEWS):]:
        row["review"] = row["review"].replace(".", "!")
    return write_prompt(folder, "reviews",
                        f"---\nmodel: openai/scripted\ngpo.metric: contains\ngpo.steps: {steps}\n"
                        f"gpo.candidates: 2\ngpo.batch_size: 2\n---\n{REVIEW_BODY}", rows)


def review_answer(messages: list[dict[str, Any]]) -> str:
    """Optimizer: the leaky rewrite first, then the honest one. Task model: right
    when asked for the sentiment."""
    if is_meta_prompt(messages):
        raise AssertionError("use ScriptedModels for the optimizer")
    prompt = str(messages[-1]["content"])
    if "sentiment" not in prompt:
        return "It is a review of a restaurant."
    review = prompt.split("Review: ", 1)[1].split("\n", 1)[0]
    labels = {r: label for r, label in REVIEWS}
    labels.update({r.replace(".", "!"): label for r, label in REVIEWS})
    return labels.get(review, "unsure")


def reviews_models() -> Any:
    models = ScriptedModels([LEAKY_REVIEW, GOOD_REVIEW])

    def answer(messages: list[dict[str, Any]]) -> str:
        return models.answer(messages) if is_meta_prompt(messages) else review_answer(messages)

    return answer


async def _optimize(prompt: Path, answer: Any, cache: Path) -> Result:
    async with ModelServer(answer=answer) as server:
        result: Result = await run_task(load_task(prompt), server.api_base, cache)
        return result


# -- the leak guard ---------------------------------------------------------------------


def test_copied_training_text_is_a_leak() -> None:
    current = "Classify the review.\nReview: {{review}}"
    pieces = leak_guard.leak_pieces([LEAKED, "negative"], current)
    copied = f"Classify the review. Note: {LEAKED.upper()}\nReview: {{{{review}}}}"
    hit = leak_guard.find_leak(copied, pieces)
    assert hit is not None and hit[1] >= leak_guard.LEAK_THRESHOLD
    # A few words changed is still a copy.
    nearly = LEAKED.replace("cold", "cool").replace("hour", "our")
    assert leak_guard.find_leak(f"Careful: {nearly}", pieces) is not None
    # Honest prompts, and paraphrases of the topic, are not.
    assert leak_guard.find_leak("Classify the review as positive or negative.", pieces) is None
    assert leak_guard.find_leak("Reviews about slow service or cold food are negative.",
                            pieces) is None


def test_short_answers_and_text_already_in_the_prompt_are_not_leaks() -> None:
    # "yes" and "Paris" are answers a prompt may well name.
    assert leak_guard.leak_pieces(["yes", "Paris", "negative"], "Answer.") == []
    # The user's own few-shot example is in the current prompt: keeping it is fine.
    current = f"Example: {LEAKED} -> negative\nReview: {{{{review}}}}"
    assert leak_guard.leak_pieces([LEAKED], current) == []
    pieces = leak_guard.leak_pieces([LEAKED], current)
    assert leak_guard.find_leak(current + " Think first.", pieces) is None


def test_long_texts_are_checked_in_windows() -> None:
    long_input = " ".join(f"word{i}" for i in range(40))
    pieces = leak_guard.leak_pieces([long_input], "Answer.")
    assert len(pieces) > 5
    assert all(len(p.split()) <= leak_guard.LEAK_WINDOW_WORDS for p in pieces)
    # Ten copied words from the middle of a long input are caught.
    middle = " ".join(f"word{i}" for i in range(17, 27))
    assert leak_guard.find_leak(f"Remember: {middle}. Answer.", pieces) is not None
    assert leak_guard.find_leak("Remember: word3. Answer.", pieces) is None


async def test_generate_drops_a_leaking_candidate_and_counts_it() -> None:
    current = "Classify the sentiment of {{review}}."
    answers = {0: f"<START>Classify the sentiment of {{{{review}}}}. '{LEAKED}' is negative.<END>",
               1: "<START>Classify the sentiment of {{review}} as positive or negative.<END>"}

    async def complete(messages: list[dict[str, str]], index: int) -> str:
        return answers[index]

    common: dict[str, Any] = {"current": current, "direction": [ScoredPrompt(current, 50.0, 0)],
                              "exemplars": [], "budget": 50, "n": 2, "variables": ["review"],
                              "style": CHAT}
    guarded = await update.generate(complete, train_texts=[LEAKED, "negative"], **common)
    assert [c.text for c in guarded.candidates] == [candidates.parse_candidate(answers[1], False)]
    assert [r.reason for r in guarded.rejected] == ["leak"]
    assert "copies training text" in guarded.rejected[0].detail
    # Without the training texts the guard has nothing to compare with.
    unguarded = await update.generate(complete, **common)
    assert len(unguarded.candidates) == 2


async def test_optimizer_drops_the_leak_and_reports_it(tmp_path: Path) -> None:
    result = await _optimize(write_reviews(tmp_path / "p"), reviews_models(), tmp_path / "c")
    assert result.rejected == {"leak": 1}
    assert result.guard["leaks_dropped"] == 1
    assert LEAKED not in result.best
    assert result.best.startswith("Give the sentiment of the review")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["guard"]["leaks_dropped"] == 1 and data["rejected"]["leak"] == 1


# -- the held-out test check -----------------------------------------------------------------

DEV_COUNTRIES = set(list(CAPITALS)[1::3])  # write_capitals cycles train, dev, test
HONEST = "Name the capital city of the country.\nCountry: {{country}}\nAnswer:\n"
TRICK = "<START>Use the trick and name the capital city of the country.<END>"


def overfitting_answer(messages: list[dict[str, Any]]) -> str:
    """A task model for which the "trick" prompt is right on dev only and wrong on
    test, while the honest prompt is the reverse: the dev winner overfits."""
    if is_meta_prompt(messages):
        return TRICK
    prompt = str(messages[-1]["content"])
    country = next(c for c in CAPITALS if f"Country: {c}\n" in prompt)
    right = (country in DEV_COUNTRIES) == ("trick" in prompt)
    return CAPITALS[country] if right else "I am not sure."


async def test_a_proposal_significantly_worse_on_test_is_withheld(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p", steps=1, body=HONEST)
    result = await _optimize(prompt, overfitting_answer, tmp_path / "c")
    assert result.best_dev.value == 100.0 and result.initial_dev.value == 0.0
    assert result.best_test is not None and result.best_test.value == 0.0
    verdict = result.guard["best"]
    assert verdict["verdict"] == "worse" and verdict["losses"] == 8 and verdict["wins"] == 0
    assert verdict["p_value"] < 0.05 and verdict["method"] == "mcnemar"
    assert result.improved and not result.offered
    assert result.suggestion is None  # it was the suggestion too
    assert result.guard["suggestion"]["verdict"] == "worse"


async def test_a_proposal_that_holds_up_on_test_is_offered(tmp_path: Path) -> None:
    result = await _optimize(write_capitals(tmp_path / "p"), ScriptedModels([GOOD]).answer,
                             tmp_path / "c")
    assert result.guard["best"]["verdict"] == "ok" and result.guard["best"]["delta"] == 100.0
    assert result.offered and result.suggestion == result.best
    assert result.guard["suggestion"]["verdict"] == "ok"
    assert result.guard["leaks_dropped"] == 0


def test_verdict_without_test_outcomes_is_untested() -> None:
    assert held_out_verdict(None, None, "no test rows") == {"verdict": "untested",
                                                            "reason": "no test rows"}
    same = EvalResult((Outcome("a", 1.0, "x"), Outcome("b", 0.0, "y")))
    assert held_out_verdict(same, same, "")["verdict"] == "ok"


async def test_the_cli_neither_proposes_nor_writes_a_withheld_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_capitals(tmp_path / "p", steps=1, body=HONEST)
    original = prompt.read_bytes()
    async with ModelServer(answer=overfitting_answer) as server:
        code = await asyncio.to_thread(main, ["optimize", str(prompt), "--api-base",
                                              server.api_base, "--json", "--write"])
        assert code == 0
        out = json.loads(capsys.readouterr().out)
        assert out["written"] is False and out["guard"]["best"]["verdict"] == "worse"
        assert out["suggestion"] is None
        assert prompt.read_bytes() == original
        code = await asyncio.to_thread(main, ["optimize", str(prompt), "--api-base",
                                              server.api_base])
    assert code == 0
    text = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "not proposing the best prompt" in text and "significantly worse" in text
    assert "+++ proposed" not in text


async def _finished_job(prompt: Path, answer: Any, cache: Path) -> tuple[Any, Any, Any, Result]:
    """Optimize `prompt`, then the task, saved trajectory and a finished daemon job of it."""
    from gpo_server.jobs import Job

    result = await _optimize(prompt, answer, cache)
    task = load_task(prompt)
    store = open_store(cache)
    trajectory = store.latest_for(str(prompt.resolve()))
    store.close()
    job = Job("j1", str(prompt.resolve()), {}, False, task, state="finished",
              result=result.to_dict())
    return task, trajectory, job, result


async def test_the_editor_is_not_offered_a_withheld_suggestion(tmp_path: Path) -> None:
    """The daemon's prompt state (what hover and the code action show) follows the guard."""
    from gpo_server.daemon import prompt_state

    prompt = write_capitals(tmp_path / "p", steps=1, body=HONEST)
    task, trajectory, job, _ = await _finished_job(prompt, overfitting_answer, tmp_path / "c")
    state = prompt_state(task, trajectory, job, {})
    assert state["suggestion"] is None
    assert state["withheld"]["guard"]["verdict"] == "worse"
    assert state["withheld"]["guard"]["losses"] == 8
    # Without the job's measurement the verdict is unknown, and says so.
    unknown = prompt_state(task, trajectory, None, {})
    assert unknown["suggestion"]["guard"]["verdict"] == "untested"


async def test_the_editor_sees_the_verdict_of_an_offered_suggestion(tmp_path: Path) -> None:
    from gpo_server.daemon import prompt_state

    prompt = write_capitals(tmp_path / "p")
    task, trajectory, job, result = await _finished_job(prompt, ScriptedModels([GOOD]).answer,
                                                        tmp_path / "c")
    state = prompt_state(task, trajectory, job, {})
    assert state["withheld"] is None
    assert state["suggestion"]["guard"]["verdict"] == "ok"
    assert state["suggestion"]["guard"]["delta"] == 100.0
    assert state["rejected"] == result.rejected == trajectory.rejected()
