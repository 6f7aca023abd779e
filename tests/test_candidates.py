"""Tests of gpo_engine.candidates: reading the new prompt out of an optimizer
answer, and the template variables it reads."""

from __future__ import annotations

import pytest

from gpo_engine.candidates import check_variables, invented_names, parse_candidate

CURRENT = "Classify the sentiment of {{review}}. Answer positive or negative."


# ---------------------------------------------------------------- parse_candidate

GOOD = "Classify the sentiment of {{review}} carefully."


@pytest.mark.parametrize(
    ("raw", "prefilled", "expected"),
    [
        (f"<START>{GOOD}<END>", False, GOOD),
        (f"Here is the new prompt:\n<START>\n{GOOD}\n<END>\nHope it helps!", False, GOOD),
        (f"I will write it between <START> and <END>.\n<START>{GOOD}<END>", False, GOOD),
        (f"<start> {GOOD} </end>", False, GOOD),
        (f"{GOOD}<END>", False, GOOD),  # opening marker forgotten
        (f"```\n{GOOD}\n```", False, GOOD),  # fenced, no markers
        (f"{GOOD}<END>\n\nVersion 4 (score 80):\n<START>Other text here<END>", True, GOOD),
        (f"{GOOD}\n\nVersion 4 (score 80):\n<START>Other", True, GOOD),  # no <END>: cut
        (f"{GOOD}<START>\nExpected answer: positive", True, GOOD),  # <START> for <END>
        (f"{GOOD}\nExpected answer: positive\nScore: 9", True, GOOD),
        (f"<START>{GOOD}<END>", True, GOOD),  # echoed the prefilled marker
        (f"<START>```text\n{GOOD}\n```<END>", False, GOOD),
        (f'<START>"{GOOD}"<END>', False, GOOD),
        (f"<START>\u201c{GOOD}\u201d<END>", False, GOOD),
        (f"<START>`{GOOD}`<END>", False, GOOD),
        (f"Prompt: {GOOD}<END>", True, GOOD),
        (f"New prompt:\n{GOOD}<END>", True, GOOD),
        ('<START>"Yes" or "No"?<END>', False, '"Yes" or "No"?'),  # not a wrapping pair
        ("Line one {{review}}\nLine two.<END>", True, "Line one {{review}}\nLine two."),
    ],
)
def test_parse_candidate_accepts(raw: str, prefilled: bool, expected: str) -> None:
    assert parse_candidate(raw, prefilled, current=CURRENT) == expected


@pytest.mark.parametrize(
    ("raw", "prefilled"),
    [
        ("", True),
        ("", False),
        ("\n\n", True),
        ("   ", False),
        ("<START>", True),
        ("<START>", False),
        ("<END>", True),
        ("<START><END>", False),
        ("Prompt:", True),
        ("Prompt:<END>", True),
        ("...!!!<END>", True),
        ("{{review}}<END>", True),  # only the variable
        ("<START>#### ---- ==== 1234 5678 ab<END>", False),
        ("Change at most 20 words of the current prompt.<END>", True),
        # Seen from the embedded model: the budget note of the meta-prompt copied.
        ("Write only one word: (at most 25 words changed). (25% of the class vote)", True),
        ("Write the new prompt between <START> and <END>.", False),
        ("Version 4 (score 80):\nsomething", True),
        ("\nInput: The movie was bad\nExpected answer: negative", True),
        ("Put it between <START> and <END> please.", False),  # only quotes the markers
        ("Classify the review without any markers.", False),
        ("the " * 40 + "<END>", True),
        ("word " * 400 + "<END>", True),  # far longer than 4x the current prompt
        ("```\n```", False),
        ('<START>""<END>', False),
    ],
)
def test_parse_candidate_rejects_junk(raw: str, prefilled: bool) -> None:
    assert parse_candidate(raw, prefilled, current=CURRENT) is None


def test_parse_candidate_without_current() -> None:
    assert parse_candidate("<START>Answer in one word.<END>", False) == "Answer in one word."
    long = " ".join("word" + chr(97 + i % 26) + chr(97 + i // 26 % 26) for i in range(300))
    assert parse_candidate(f"<START>{long}<END>", False) == long.strip()


def test_parse_keeps_a_label_the_current_prompt_uses() -> None:
    current = "Instruction: classify {{review}}."
    raw = "Instruction: classify {{review}} as positive or negative.<END>"
    expected = "Instruction: classify {{review}} as positive or negative."
    assert parse_candidate(raw, True, current) == expected


def test_parse_allows_meta_words_the_current_prompt_has() -> None:
    current = "Rate {{review}} out of 100; higher is better."
    raw = "<START>Rate {{review}} from 0 to 100, where higher is better.<END>"
    expected = "Rate {{review}} from 0 to 100, where higher is better."
    assert parse_candidate(raw, False, current) == expected


def test_parse_multi_paragraph_run_on_keeps_paragraphs_when_current_has_them() -> None:
    current = "Read this.\n\n{{review}}\n\nAnswer:"
    raw = "Read this review.\n\n{{review}}\n\nAnswer:\n\nVersion 3 (score 5):"
    assert parse_candidate(raw, True, current) == "Read this review.\n\n{{review}}\n\nAnswer:"


def test_parse_keeps_structure_labels_the_current_prompt_uses() -> None:
    current = "Answer the question.\nInput: {{question}}\nScore:"
    raw = "Answer the question briefly.\nInput: {{question}}\nScore:\n\nVersion 3 (score 1):"
    expected = "Answer the question briefly.\nInput: {{question}}\nScore:"
    assert parse_candidate(raw, True, current) == expected
    assert parse_candidate("Input: {{question}}\nScore:<END>", True, current) == (
        "Input: {{question}}\nScore:"
    )


# ---------------------------------------------------------------- check_variables


def test_check_variables() -> None:
    assert check_variables("Classify {{review}} in {{lang}}.", ["review", "lang"]) == []
    assert check_variables("Classify the text.", ["review", "lang"]) == ["review", "lang"]
    assert check_variables("{{{review}}} {{ lang }}", ["review", "lang"]) == []
    assert check_variables("{{#if review}}yes{{/if}}", ["review"]) == []
    assert check_variables("{{#each items}}{{this}}{{/each}}", ["items"]) == []
    assert check_variables("Hi {{user.name}}", ["user"]) == []
    assert check_variables("{review} and review", ["review"]) == ["review"]
    assert check_variables('{{role "review"}} text', ["review"]) == ["review"]
    assert check_variables("no variables", []) == []


def test_check_variables_reads_the_parse_tree() -> None:
    # Inside #each a name is the item's field, not the input of that name.
    assert check_variables("{{#each items}}{{review}}{{/each}}", ["items", "review"]) == [
        "review"]
    # @root reaches the inputs from inside a block.
    assert check_variables("{{#each items}}{{@root.review}}{{/each}}", ["items", "review"]) == []
    # A comment that names a variable does not use it.
    assert check_variables("{{! review }} Classify.", ["review"]) == ["review"]


def test_invented_names() -> None:
    current = "{{#each items}}{{name}}: {{price}}{{/each}} Pick one for {{user}}."
    assert invented_names(current, current) == []
    # Renaming an item's field inside #each renders empty, as a new input would.
    assert invented_names(current.replace("{{price}}", "{{cost}}"), current) == ["cost"]
    assert invented_names(current + " {{budget}} {{@root.mood}}", current) == ["budget", "mood"]
    # Helpers, comments, block parameters and @data are not names.
    assert invented_names('{{#ifEquals user "x"}}Hi.{{/ifEquals}} {{! note to self }}'
                          " {{#each items as |it|}}{{it.name}} {{@index}}{{/each}}",
                          current) == []
