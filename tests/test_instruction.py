"""Tests of gpo_engine.instruction: a prompt's instruction and its scaffold."""

from __future__ import annotations

from gpo_engine.instruction import split_instruction, with_instruction


def test_split_instruction_and_with_instruction() -> None:
    prompt = "Be careful.\nThink.\nReview: {{review}}\nSentiment:"
    assert split_instruction(prompt) == ("Be careful.\nThink.\n", "Review: {{review}}\nSentiment:")
    assert with_instruction("  Answer positive or negative. ", prompt) == (
        "Answer positive or negative.\nReview: {{review}}\nSentiment:")
    # No instruction lines yet: the instruction is put first.
    assert with_instruction("Label it.", "Review: {{review}}") == "Label it.\nReview: {{review}}"
    # No tags at all: the instruction is the whole prompt.
    assert split_instruction("Just text.") == ("Just text.", "")
    assert with_instruction("New text.", "Just text.") == "New text."


def test_worked_examples_above_the_first_tag_are_kept_not_replaced() -> None:
    few_shot = ("Review: I loved the view.\nSentiment: positive\n"
                "Review: {{review}}\nSentiment:\n")
    assert split_instruction(few_shot) == ("", few_shot)
    assert with_instruction("Say positive or negative.", few_shot) == (
        "Say positive or negative.\n" + few_shot)
    # An instruction over worked examples: only the instruction is replaced.
    qa = "Answer with a number.\nQ: 2+2?\nA: 4\n\nQ: {{question}}\nA:"
    assert split_instruction(qa) == ("Answer with a number.\n",
                                     "Q: 2+2?\nA: 4\n\nQ: {{question}}\nA:")
    assert with_instruction("Reply with digits only.", qa).startswith(
        "Reply with digits only.\nQ: 2+2?\nA: 4\n")
    # A colon in the instruction is not a label the template uses.
    capitals = "Write only one word:\nWhat is the capital of {{country}}?\nAnswer:"
    assert split_instruction(capitals) == ("Write only one word:\n",
                                           "What is the capital of {{country}}?\nAnswer:")
