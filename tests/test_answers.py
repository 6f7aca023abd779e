"""Tests of gpo_engine.answers: finding the answer in a model's output, with
the rambling a base model (Gemma 3 270M) writes after its answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpo_engine.answers import extract_answer, normalize

# ---------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Yes.", "yes"),
        ("  The  Answer! ", "answer"),
        ("an apple, a pear", "apple pear"),
        ("«Bonjour» — dit-il…", "bonjour ditil"),
        ("don't", "dont"),
        ("Rock'n'Roll", "rocknroll"),
        ("line\nbreak\ttab", "line break tab"),
        ("", ""),
        ("] ] >", ""),
    ],
)
def test_normalize(text: str, normalized: str) -> None:
    assert normalize(text) == normalized


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    assert normalize(normalize(text)) == normalize(text)


# ---------------------------------------------------------- extract_answer


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        (" positive\n\nReview: The soup was cold.", "positive"),
        ("Answer: negative", "negative"),
        ("Answer:\nnegative\nReview: fine", "negative"),
        ("A: Paris\n\nQ: What is the capital of Spain?\nA: Madrid", "Paris"),
        ("The answer is Paris.\nQuestion: next", "Paris."),
        ("**Paris**", "Paris"),
        ('"Paris"', "Paris"),
        ("Paris Question: and Rome?", "Paris"),
        (": Paris", "Paris"),
        ("The answer is:\n\nParis", "Paris"),
        ("Paris.\n\nWhat is the capital of Spain?\nThe answer is Madrid.", "Paris."),
        ("\n\n  Paris  \n", "Paris"),
        ("", ""),
        ("   \n ", ""),
    ],
)
def test_extract_text(output: str, answer: str) -> None:
    assert extract_answer(output, "text") == answer


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("Yes.\n\nQuestion: Is the sky green?\nAnswer: No", "yes"),
        ("yes, because the player is a hockey player", "yes"),
        ("No\nYes", "no"),
        ("True and False is False", "false"),
        ("not ( True ) and ( True ) is False", "false"),
        ("The statement is true.", "true"),
        ("I think it's plausible, so yes", "yes"),
        ("Sure!\nNo, he lies.", "no"),
        ("Let me think.\nSo the answer is No.", "no"),
        ("Yes.\n\nIs the sky green?\nAnswer: No", "yes"),
        ("The answer is:\n\nNo", "no"),
        ("invalid\n\nArgument: ...", "invalid"),
        ("1", "true"),
        ("0", "false"),
        ("**Yes**", "yes"),
        ("Plausible.", ""),
        ("I don't know.", ""),
        ("", ""),
    ],
)
def test_extract_yesno(output: str, answer: str) -> None:
    assert extract_answer(output, "yesno") == answer


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("(B)", "(B)"),
        ("(b) east", "(B)"),
        ("The answer is (C).", "(C)"),
        ("The answer is D", "(D)"),
        ("(C) is the correct answer", "(C)"),
        ("I think (B) because the sun rises in the east", "(B)"),
        ("B", "(B)"),
        ("B.", "(B)"),
        ("B) east", "(B)"),
        ("C: foo", "(C)"),
        ("B because it rises there", "(B)"),
        ("Option A", "(A)"),
        ("A.", "(A)"),
        ("b", "(B)"),
        ("(A)\n\nQ: Which is bigger?\nOptions:\n(A) mouse\n(B) whale", "(A)"),
        ("A dog", "A dog"),
        ("a cat", "a cat"),
        ("I think B", "I think B"),
        ("east", "east"),
    ],
)
def test_extract_choice(output: str, answer: str) -> None:
    assert extract_answer(output, "choice") == answer


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("42", "42"),
        ("I think 42 apples", "42"),
        ("42\n\nQuestion: I have 3 apples and 2 pears.", "42"),
        ("42\n\nI also have 3 more.", "42"),
        ("There are 3 apples and 4 pears, so 7 fruits.", "7"),
        ("The answer is 8 because 3 + 5 = 8", "8"),
        ("The answer is 8, not 9.", "8"),
        ("5 - 3 = 2", "2"),
        ("-22", "-22"),
        ("\u221222", "-22"),
        ("It costs $1,234.50.", "1234.5"),
        ("1,234,567", "1234567"),
        ("3, 4, 5", "5"),
        ("8.0", "8"),
        ("8.", "8"),
        ("You have eight.", "8"),
        ("Twelve", "12"),
        ("I have 3 apples and one pear", "3"),
        ("The 3rd one", "3"),
        ("50%", "50"),
        ("Sure!\n\n15", "15"),
        ("8\n\nHow many legs has a spider? The answer is 6... I have 3", "8"),
        ("no numbers here", ""),
        ("", ""),
    ],
)
def test_extract_number(output: str, answer: str) -> None:
    assert extract_answer(output, "number") == answer


def test_extract_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown answer kind 'date'"):
        extract_answer("x", "date")


@given(st.text(), st.sampled_from(["text", "yesno", "choice", "number"]))
def test_extract_never_raises(output: str, kind: str) -> None:
    assert isinstance(extract_answer(output, kind), str)
