"""Tests of gpo_engine.meta_style: the optimizer's prompt style, chosen once per model."""

from __future__ import annotations

from gpo_engine import update
from gpo_engine.direction import ScoredPrompt
from gpo_engine.meta_prompts import Exemplar
from gpo_engine.meta_style import BASE, CHAT, MAX_EXEMPLARS, MetaStyle

CURRENT = "Be brief.\nReview: {{review}}\nSentiment:"
DIRECTION = [ScoredPrompt("Say it.\nReview: {{review}}\nSentiment:", 20.0, 0),
             ScoredPrompt(CURRENT, 40.0, 1)]
EXEMPLARS = [Exemplar(f"input {i}", f"label{i}", "other", False) for i in range(5)]


def test_the_style_follows_the_optimizer_model() -> None:
    assert MetaStyle.for_model("local/gemma-3-270m") is BASE
    assert MetaStyle.for_model("openai/gpt-4o-mini") is CHAT
    assert MetaStyle.for_model("ollama/llama3") is CHAT


def test_what_differs_between_the_styles() -> None:
    assert (CHAT.exemplars, CHAT.prefilled, CHAT.stop) == (MAX_EXEMPLARS, False, ("<END>",))
    # A base model writes one instruction per line and goes on past <END>.
    assert (BASE.exemplars, BASE.prefilled, BASE.stop) == (2, True, ("<END>", "\n"))


def test_each_style_shows_its_number_of_exemplars() -> None:
    chat = CHAT.meta_prompt(CURRENT, DIRECTION, EXEMPLARS, 10)[0]["content"]
    assert [f"input {i}" in chat for i in range(5)] == [True, True, True, False, False]
    base = BASE.meta_prompt(CURRENT, DIRECTION, EXEMPLARS, 10)[0]["content"]
    assert "Inputs look like: input 0 | input 1\n" in base


def test_each_style_builds_its_own_requests() -> None:
    chat = CHAT.meta_prompt(CURRENT, DIRECTION, EXEMPLARS, 10)
    base = BASE.meta_prompt(CURRENT, DIRECTION, EXEMPLARS, 10)
    assert chat[0]["content"].startswith("You are improving the prompt")
    assert base[0]["content"].endswith("<START>")  # the answer starts inside the prompt
    chat_revision = CHAT.revision_request("a long candidate", CURRENT, 3, 9)
    base_revision = BASE.revision_request("a long candidate", CURRENT, 3, 9)
    assert [m["role"] for m in chat_revision] == ["user"]
    assert base_revision[-1] == {"role": "assistant", "content": "<START>"}


async def test_generate_asks_in_the_style_given() -> None:
    asked: list[list[dict[str, str]]] = []

    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        asked.append(messages)
        return "Answer with one word. (score 40)<END>"

    for style in (CHAT, BASE):
        asked.clear()
        gen = await update.generate(complete, current=CURRENT, direction=DIRECTION,
                                    exemplars=EXEMPLARS, budget=10, n=1, variables=["review"],
                                    style=style)
        assert asked == [style.meta_prompt(CURRENT, DIRECTION, EXEMPLARS, 10)]
        # Screening differs too: only the base style drops copied score notes.
        note = "" if style is BASE else " (score 40)"
        assert [c.text for c in gen.candidates] == [
            f"Answer with one word.{note}\nReview: {{{{review}}}}\nSentiment:"]
