"""Tests of gpo_engine.update (generate and its records) and of the meta-prompts
of gpo_engine.meta_prompts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpo_engine.direction import ScoredPrompt
from gpo_engine.errors import ModelCallError, SpendLimitReached
from gpo_engine.meta_prompts import Exemplar
from gpo_engine.meta_style import BASE, CHAT, MetaStyle
from gpo_engine.template import template_tags
from gpo_engine.update import Candidate, Generation, Rejected, generate, word_distance

CURRENT = "Classify the sentiment of {{review}}. Answer positive or negative."
DIRECTION = [
    ScoredPrompt("What is the sentiment of {{review}}?", 40.0, 0),
    ScoredPrompt("Is {{review}} positive?", 52.25, 1),
    ScoredPrompt(CURRENT, 65.5, 2),
]
EXEMPLARS = [
    Exemplar("A delight.", "positive", "positive", True),
    Exemplar("Dull plot, bored actors.", "negative", "The review is about a movie", False),
    Exemplar("Not bad at all.", "positive", "negative", False),
    Exemplar("Loved it.", "positive", "positive", True),
    Exemplar("Terrible.", "negative", "positive", False),
]


# ---------------------------------------------------------------- word_distance


def test_word_distance() -> None:
    assert word_distance("a b c", "a b c") == 0
    assert word_distance("a b c", "a x c") == 1
    assert word_distance("a b c", "a b c d e") == 2
    assert word_distance("a  b\n c", "a b c") == 0  # whitespace is not a word
    assert word_distance("", "one two three") == 3
    # Words, not characters: a long word changed counts once.
    assert word_distance("classify sentiment", "classify sentimentality") == 1


@given(st.lists(st.sampled_from("abcd"), max_size=8), st.lists(st.sampled_from("abcd"), max_size=8))
def test_word_distance_is_symmetric_and_bounded(a: list[str], b: list[str]) -> None:
    x, y = " ".join(a), " ".join(b)
    assert word_distance(x, y) == word_distance(y, x)
    assert abs(len(a) - len(b)) <= word_distance(x, y) <= max(len(a), len(b))


# ---------------------------------------------------------------- meta-prompts


def test_chat_meta_prompt_structure() -> None:
    messages = CHAT.meta_prompt(CURRENT, DIRECTION, EXEMPLARS, 20)
    assert len(messages) == 1
    assert messages[0]["role"] == "user"
    text = messages[0]["content"]
    assert "Change at most 20 words of the current prompt." in text
    assert "Score: 40\n" in text and "Score: 52.2" in text and "Score: 65.5" in text
    assert f"The current prompt is:\n{CURRENT}" in text
    assert "Keep these template tags exactly as written: {{review}}." in text
    assert "between <START> and <END>" in text
    # Retrieved prompts in the given order (ascending, current last).
    positions = [text.index(f"Prompt: {p.text}") for p in DIRECTION]
    assert positions == sorted(positions)
    # At most three exemplars, wrong ones first.
    assert "Dull plot" in text and "Not bad at all." in text and "Terrible." in text
    assert "A delight." not in text and "Loved it." not in text
    assert "Verdict: wrong" in text and "Verdict: correct" not in text


def test_chat_meta_prompt_fills_with_correct_exemplars_and_clips_long_inputs() -> None:
    long_input = "word " * 1000
    exemplars = [Exemplar(long_input, "x", "x", True)]
    text = CHAT.meta_prompt(CURRENT, [], exemplars, 5)[0]["content"]
    assert "Verdict: correct" in text
    assert "..." in text
    assert len(text) < 3000
    assert "earlier versions" not in text  # no direction given


def test_base_meta_prompt_is_a_few_shot_rewrite_document() -> None:
    current = "Be brief.\nReview: {{review}}\nSentiment:"
    direction = [ScoredPrompt("Say it.\nReview: {{review}}\nSentiment:", 20.0, 0),
                 ScoredPrompt(current, 40.0, 1)]
    messages = BASE.meta_prompt(current, direction, EXEMPLARS, 12)
    assert [m["role"] for m in messages] == ["user"]
    doc = messages[0]["content"]
    # The open entry: the current instruction (not the input lines) and the budget.
    assert doc.endswith("Instruction: Be brief.\n"
                        "Better instruction (at most 12 words changed): <START>")
    assert "Earlier instructions: Say it. (score 20)" in doc
    # The answers the task wants are shown, so the rewrite can name them.
    assert "Answers look like: negative, positive\n" in doc
    assert "Inputs look like: Dull plot, bored actors. | Not bad at all.\n" in doc
    # Demonstrations close with <END>, so the model learns where to stop.
    assert doc.count("<END>") == 4
    assert "{{review}}" not in doc  # the template's input lines are kept out of it


def test_base_meta_prompt_without_an_instruction_says_none() -> None:
    doc = BASE.meta_prompt("Review: {{review}}\nSentiment:", [], [], 5)[0]["content"]
    assert doc.endswith("Instruction: (none)\nBetter instruction (at most 5 words changed): "
                        "<START>")
    assert "Inputs look like" not in doc


def test_revision_requests() -> None:
    chat = CHAT.revision_request("new long text {{review}}", CURRENT, 8, 23)
    assert len(chat) == 1
    text = chat[0]["content"]
    assert "changes 23 words" in text and "at most 8 may change" in text
    assert CURRENT in text and "new long text {{review}}" in text
    assert "Change at most 8 words of the current prompt." in text
    assert "{{review}}" in text and "<START>" in text
    base = BASE.revision_request("new long text {{review}}", CURRENT, 8, 23)
    assert base[-1] == {"role": "assistant", "content": "<START>"}
    assert "(23 words changed, too many)" in base[0]["content"]
    assert "8 words or fewer" in base[0]["content"]


def test_template_tags() -> None:
    body = "{{#if a}}x {{a}}{{/if}} {{{b}}} {{ c }} {{a}}"
    assert template_tags(body) == ["{{#if a}}", "{{a}}", "{{/if}}", "{{{b}}}", "{{ c }}"]



# ---------------------------------------------------------------- generate

WITHIN = "Classify the sentiment of {{review}}. Answer only positive or negative."
FAR = "Read {{review}} carefully and decide whether the writer liked the thing they describe."
FAR2 = "Decide if {{review}} praises or criticises its subject, then reply with a single label."
REVISED = "Classify the sentiment of {{review}} carefully. Answer positive or negative."


def fake(answers: dict[int, object], calls: list[int]) -> Callable[..., object]:
    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        calls.append(sample)
        await asyncio.sleep(0)
        answer = answers[sample]
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, str)
        return answer

    return complete


def wrap(text: str) -> str:
    return f"<START>{text}<END>"


async def run(
    answers: dict[int, object],
    n: int,
    budget: int = 3,
    style: MetaStyle = CHAT,
    calls: list[int] | None = None,
) -> Generation:
    return await generate(
        fake(answers, calls if calls is not None else []),  # type: ignore[arg-type]
        current=CURRENT,
        direction=DIRECTION,
        exemplars=EXEMPLARS,
        budget=budget,
        n=n,
        variables=["review"],
        style=style,
    )


async def test_generate_covers_every_outcome() -> None:
    answers: dict[int, object] = {
        0: wrap(WITHIN),
        1: wrap(FAR),
        1001: wrap(REVISED),
        2: wrap(FAR2),
        1002: wrap(FAR2 + " Be brief."),
        3: wrap("Be brief."),
        4: wrap(WITHIN),
        5: ModelCallError("openai/x", "timeout", "no answer in 60 s"),
        6: wrap(CURRENT),
        7: "",
        8: "Sure, here is a better prompt for you.",
        9: wrap("Classify the sentiment of {{review}}. Answer {{labels}}."),
        10: wrap("What is the sentiment of {{review}}?"),
    }
    calls: list[int] = []
    gen = await run(answers, 11, calls=calls)
    assert sorted(calls) == [*range(11), 1001, 1002]
    assert gen.candidates == (
        Candidate(WITHIN, 1, False),
        Candidate(REVISED, 2, True),
        # A tagless answer is an instruction: it goes before the lines with the inputs.
        Candidate("Be brief.\n" + CURRENT, 2, False),
    )
    reasons = [(r.reason, r.detail) for r in gen.rejected]
    far2, revised2 = word_distance(CURRENT, FAR2), word_distance(CURRENT, FAR2 + " Be brief.")
    assert reasons == [
        ("over_budget", f"{far2} words changed, budget 3; the revision still changed {revised2}"),
        ("duplicate", "same as sample 0"),
        ("model_error", "openai/x: timeout: no answer in 60 s"),
        ("duplicate", "same as the current prompt"),
        ("empty", "the model returned no text"),
        ("unparseable", "no <START>/<END> markers in the answer"),
        ("lost_variable", "uses unknown {{labels}}"),
        ("duplicate", "same as an earlier prompt (score 40)"),
    ]
    assert gen.rejected[0].text == FAR2
    assert gen.rejected[1].text == WITHIN
    assert gen.rejected[4] == Rejected("", "empty", "the model returned no text")


async def test_unusable_revision_is_over_budget_and_revision_errors_are_model_errors() -> None:
    answers: dict[int, object] = {
        0: wrap(FAR),
        1000: "nothing useful",
        1: wrap(FAR2),
        1001: ModelCallError("m", "server", "500"),
        2: wrap(FAR + " Now."),
        1002: wrap("Classify {{text}}."),
    }
    gen = await run(answers, 3)
    assert gen.candidates == ()
    assert [r.reason for r in gen.rejected] == ["over_budget", "model_error", "over_budget"]
    assert "revision unusable: no <START>/<END> markers" in gen.rejected[0].detail
    assert gen.rejected[1].detail.endswith("budget 3; m: server: 500")
    assert "revision unusable: drops {{review}}" in gen.rejected[2].detail
    assert [r.text for r in gen.rejected] == [FAR, FAR2, FAR + " Now."]


async def test_revision_equal_to_current_is_rejected() -> None:
    gen = await run({0: wrap(FAR), 1000: wrap(CURRENT)}, 1)
    assert gen.candidates == ()
    assert gen.rejected[0].reason == "over_budget"
    assert "same as the current prompt" in gen.rejected[0].detail


async def test_base_model_generation_uses_prefill_and_parses_run_on() -> None:
    seen: list[list[dict[str, str]]] = []

    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        seen.append(messages)
        return f"{WITHIN}\n\nVersion 5 (score 90):\n<START>Something else"

    gen = await generate(
        complete,
        current=CURRENT,
        direction=DIRECTION,
        exemplars=[],
        budget=3,
        n=2,
        variables=["review"],
        style=BASE,
    )
    assert all(m[-1]["content"].endswith("<START>") for m in seen)
    assert gen.candidates == (Candidate(WITHIN, 1, False),)
    assert gen.rejected == (Rejected(WITHIN, "duplicate", "same as sample 0"),)


async def test_samples_run_concurrently() -> None:
    in_flight = 0
    peak = 0

    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return wrap(f"Classify the sentiment of {{{{review}}}} now {sample}.")

    gen = await generate(
        complete,
        current=CURRENT,
        direction=[],
        exemplars=[],
        budget=50,
        n=5,
        variables=["review"],
        style=CHAT,
    )
    assert peak == 5
    assert [c.text for c in gen.candidates] == [
        f"Classify the sentiment of {{{{review}}}} now {i}." for i in range(5)
    ]


async def test_spend_limit_propagates_and_cancels_siblings() -> None:
    finished: list[int] = []

    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        if sample == 0:
            raise SpendLimitReached(1.0, 1.0)
        await asyncio.sleep(0.05)
        finished.append(sample)
        return wrap(WITHIN)

    with pytest.raises(SpendLimitReached):
        await generate(
            complete,
            current=CURRENT,
            direction=[],
            exemplars=[],
            budget=5,
            n=4,
            variables=["review"],
            style=CHAT,
        )
    await asyncio.sleep(0.1)
    assert finished == []


async def test_zero_samples() -> None:
    calls: list[int] = []
    assert await run({}, 0, calls=calls) == Generation((), ())
    assert calls == []


async def test_zero_budget_rejects_every_change() -> None:
    gen = await run({0: wrap(WITHIN), 1000: wrap(WITHIN)}, 1, budget=0)
    assert gen.candidates == ()
    assert gen.rejected[0].reason == "over_budget"



async def test_tagless_answer_becomes_the_instruction_and_keeps_the_inputs() -> None:
    current = "Review: {{review}}\nSentiment:"

    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        return "Answer positive or negative.<END>"

    gen = await generate(complete, current=current, direction=[], exemplars=[], budget=10, n=1,
                         variables=["review"], style=BASE)
    assert [c.text for c in gen.candidates] == [
        "Answer positive or negative.\nReview: {{review}}\nSentiment:"]
    assert gen.candidates[0].distance == 4


async def test_broken_handlebars_candidate_is_rejected() -> None:
    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        return "<START>Classify {{#if review}}{{review}}.<END>"

    gen = await generate(complete, current="Classify {{review}}.", direction=[], exemplars=[],
                         budget=10, n=1, variables=["review"], style=CHAT)
    assert gen.candidates == ()
    assert gen.rejected[0].reason == "broken_template"


async def test_base_model_score_notes_are_stripped() -> None:
    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        return ["Write a story. (score 42.4)", " (score 3)"][sample]

    gen = await generate(complete, current="Be brief.\nQ: {{q}}", direction=[], exemplars=[],
                         budget=10, n=2, variables=["q"], style=BASE)
    assert [c.text for c in gen.candidates] == ["Write a story.\nQ: {{q}}"]
    assert [r.reason for r in gen.rejected] == ["empty"]


async def test_invented_names_are_rejected_and_comments_and_helpers_are_not() -> None:
    current = "List {{#each items}}{{name}}, {{/each}} for {{user}}."
    answers = [
        "Name {{#each items}}{{title}}, {{/each}} for {{user}}.",  # a field renamed
        "List {{#each items}}{{name}}, {{/each}} for {{user}}. {{! keep it short }}",
        'List {{#each items}}{{name}}, {{/each}} for {{#ifEquals user "a"}}A{{/ifEquals}}.',
    ]

    async def complete(messages: list[dict[str, str]], sample: int) -> str:
        return wrap(answers[sample])

    gen = await generate(complete, current=current, direction=[], exemplars=[], budget=10,
                         n=3, variables=["items", "user"], style=CHAT)
    assert [(r.reason, r.detail) for r in gen.rejected] == [
        ("lost_variable", "uses unknown {{title}}")]
    assert [c.text for c in gen.candidates] == answers[1:]
