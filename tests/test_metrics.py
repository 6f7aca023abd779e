"""Tests of gpo_engine.metrics: answer extraction and every metric, with the
rambling a base model (Gemma 3 270M) writes after its answer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpo_engine.errors import ConfigError, ModelCallError
from gpo_engine.examples import Example
from gpo_engine.metrics import (
    METRICS,
    Score,
    choice,
    contains,
    count_reasons,
    exact,
    extract_answer,
    f1,
    get_metric,
    json_fields,
    judge_prompt,
    normalize,
    number,
    parse_json_object,
    parse_judge_score,
    reason_group,
    regex,
)


def make_example(expected: str, **inputs: str) -> Example:
    return Example(inputs=inputs, expected=expected, split="dev", line=1, uid="0123456789abcdef")


# ---------------------------------------------------------------- Score


def test_score_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        Score(1.5)
    with pytest.raises(ValueError):
        Score(-0.1)
    with pytest.raises(ValueError):
        Score(float("nan"))
    assert Score(0.5, "half").reason == "half"


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


# ------------------------------------------------------------------- exact

EXACT_CASES = [
    # base model continues after the answer
    (" positive\n\nReview: The food was cold.", "positive", 1.0),
    ("positive\nReview: awful", "positive", 1.0),
    ("positive Review: awful", "positive", 1.0),
    ("positive. The reviewer liked it.", "positive", 1.0),
    ("Positive!", "positive", 1.0),
    ("Sentiment: positive", "positive", 1.0),
    ("negative\n\nReview: great!\nSentiment: positive", "positive", 0.0),
    ("The sentiment is positive.", "positive", 0.0),
    ("positive sentiment", "positive", 0.0),
    ("", "positive", 0.0),
    # yes / no, true / false, valid / invalid
    ("Yes.", "Yes", 1.0),
    ("yes, because he scored", "Yes", 1.0),
    ("Yes.\n\nQuestion: Is the sky green?\nAnswer: No", "Yes", 1.0),
    ("No.\n\nQuestion: Is fire hot?\nAnswer: Yes", "Yes", 0.0),
    ("no", "yes", 0.0),
    ("True and False is False", "False", 1.0),
    ("True", "True", 1.0),
    ("False.\n\nnot True or False is", "False", 1.0),
    ("True", "yes", 1.0),  # polarity across families, as the paper's Boolean match
    ("valid", "invalid", 0.0),
    ("No, the argument is invalid", "invalid", 1.0),
    ("Plausible.", "yes", 0.0),
    # multiple choice targets
    ("The answer is (B).", "(B)", 1.0),
    ("(B) east\n\nQ: next", "(B)", 1.0),
    ("(A) west", "(B)", 0.0),
    ("B", "B", 1.0),
    # number targets
    ("I think 42 apples", "42", 1.0),
    ("8\n\nQ: I have 3 apples", "8", 1.0),
    ("$1,200.00 total", "1200", 1.0),
    ("eight", "8", 1.0),
    ("7", "8", 0.0),
    ("-22", "-22", 1.0),
    # text targets
    ("Paris.\nThe capital of France.", "Paris", 1.0),
    ("Paris, France", "Paris", 1.0),
    ("Paris (France)", "Paris", 1.0),
    ("Paris - of course", "Paris", 1.0),
    ("The Eiffel Tower", "eiffel tower", 1.0),
    ("New York City", "New York", 0.0),
    ("The capital of France is Paris.", "Paris", 0.0),
    # punctuation-only targets (BBH dyck_languages)
    ("] ] >", "] ] >", 1.0),
    ("] ] >.\n\nInput: [ [", "] ] >", 1.0),
    ("] ]", "] ] >", 0.0),
    ("hello", "] ] >", 0.0),
    # multi-line targets compare as many lines
    ("line one\nline two\n\nQuestion: x", "line one\nline two", 1.0),
    ("line one\nline three", "line one\nline two", 0.0),
]


@pytest.mark.parametrize(("output", "expected", "value"), EXACT_CASES)
def test_exact(output: str, expected: str, value: float) -> None:
    assert exact(output, expected).value == value


def test_exact_reasons() -> None:
    assert exact("negative", "positive").reason == "expected 'positive', got 'negative'"
    assert exact("No.", "Yes").reason == "expected 'Yes', got 'no'"
    assert exact("Plausible.", "yes").reason == (
        "expected 'yes', got no yes/no answer in 'Plausible.'"
    )
    assert exact("positive", "positive").reason == ""
    long = exact("x" * 200, "positive").reason
    assert long.endswith("...'") and len(long) < 100


_WORDS = st.from_regex(r"[a-z]{2,12}( [a-z]{2,12}){0,3}", fullmatch=True).filter(
    lambda w: w.split()[0] not in {"yes", "no", "true", "false", "valid", "invalid"}
)


@given(_WORDS, st.sampled_from(["\n\nQuestion: ", "\nReview: ", "\n\nQ: ", ".\n", ", "]), st.text())
def test_exact_ignores_any_continuation(answer: str, sep: str, junk: str) -> None:
    assert exact(answer + sep + junk, answer).value == 1.0


@given(st.text(), st.text())
def test_every_metric_returns_a_valid_score(output: str, expected: str) -> None:
    for fn in (exact, contains, choice, number, f1):
        score = fn(output, expected)
        assert 0.0 <= score.value <= 1.0
        assert score.value == 1.0 or score.reason


# ---------------------------------------------------------------- contains


@pytest.mark.parametrize(
    ("output", "expected", "value"),
    [
        ("I'd say the review is positive overall.", "positive", 1.0),
        ("The Capital is PARIS!", "paris", 1.0),
        ("I know it", "no", 0.0),  # whole words only
        ("not sure", "no", 0.0),
        ("Maybe.\n\nReview: positive vibes", "positive", 0.0),  # after the answer block
        ("close it with ] ] > now", "] ] >", 1.0),
        ("anything", "", 0.0),
        ("  ", "", 1.0),
    ],
)
def test_contains(output: str, expected: str, value: float) -> None:
    assert contains(output, expected).value == value


def test_contains_reason() -> None:
    assert contains("negative", "positive").reason == "'positive' not found in 'negative'"


# ------------------------------------------------------------------ choice

OPTIONS = "Where does the sun rise?\nOptions:\n(A) west\n(B) east\n(C) north"


@pytest.mark.parametrize(
    ("output", "expected", "value"),
    [
        ("(B)", "(B)", 1.0),
        ("(B) east", "B", 1.0),
        ("B.", "(B)", 1.0),
        ("the answer is b", "(B)", 1.0),
        ("Option B\n\nQ: next\n(A) x", "(B)", 1.0),
        ("(A)", "(B)", 0.0),
        ("A dog", "(A)", 0.0),
        ("(B) east", "east", 1.0),
        ("east", "east", 1.0),
        ("East.\n\nQuestion: where does it set?", "east", 1.0),
        ("west", "east", 0.0),
    ],
)
def test_choice_without_options(output: str, expected: str, value: float) -> None:
    assert choice(output, expected).value == value


@pytest.mark.parametrize(
    ("output", "expected", "value"),
    [
        ("east", "(B)", 1.0),  # option text -> its letter
        ("East.", "(B)", 1.0),
        ("west", "(B)", 0.0),
        ("(B)", "east", 1.0),  # letter -> its option text
        ("B", "east", 1.0),
        ("(A)", "east", 0.0),
    ],
)
def test_choice_with_options(output: str, expected: str, value: float) -> None:
    assert choice(output, expected, OPTIONS).value == value


def test_choice_reasons() -> None:
    assert choice("(A)", "(B)").reason == "expected '(B)', got '(A)'"
    assert choice("(A)", "east", OPTIONS).reason == "expected 'east', got '(A) west'"
    assert choice("maybe", "(B)").reason == "expected '(B)', got 'maybe'"


# ------------------------------------------------------------------ number


@pytest.mark.parametrize(
    ("output", "expected", "value"),
    [
        ("I think 42 apples", "42", 1.0),
        ("42.0", "42", 1.0),
        ("42", "42.0", 1.0),
        ("$1,200", "1200", 1.0),
        ("1200", "$1,200", 1.0),
        ("The answer is 15.\n\nQuestion: I have 3 cats", "15", 1.0),
        ("There are 2 cats and 3 dogs, so 5 animals.", "5", 1.0),
        ("3 + 4 = 7", "7", 1.0),
        ("-22", "-22", 1.0),
        ("22", "-22", 0.0),
        ("8.4", "8", 0.0),
        ("0.1", "0.10", 1.0),
        ("seven", "7", 1.0),
        ("none", "7", 0.0),
    ],
)
def test_number(output: str, expected: str, value: float) -> None:
    assert number(output, expected).value == value


def test_number_reasons() -> None:
    assert number("7 apples", "8").reason == "expected '8', got '7'"
    assert number("none", "8").reason == "expected '8', got no number in 'none'"
    assert number("8", "eight or nine").reason == ("expected value 'eight or nine' is not a number")
    assert number("8", "abc").reason == "expected value 'abc' is not a number"


# ------------------------------------------------------------------- regex


@pytest.mark.parametrize(
    ("output", "expected", "pattern", "value"),
    [
        ("Reasoning...\nFinal: Positive.", "positive", r"Final:\s*(\w+)", 1.0),
        ("Reasoning...\nFinal: negative", "positive", r"Final:\s*(\w+)", 0.0),
        ("total=1,200", "1200", r"total=([\d,]+)", 1.0),
        ("total=1200.0", "1200", r"total=(\S+)", 1.0),
        ("label: spam", "label: spam", r"label: \w+", 1.0),  # no group: whole match
        ("x", "a", r"(a)|(x)", 0.0),  # group 1 did not take part: whole match
        ("nothing here", "spam", r"label: (\w+)", 0.0),
    ],
)
def test_regex(output: str, expected: str, pattern: str, value: float) -> None:
    assert regex(output, expected, pattern).value == value


def test_regex_reasons_and_bad_pattern() -> None:
    assert regex("nothing", "spam", r"label: (\w+)").reason == (
        "pattern 'label: (\\\\w+)' not found in 'nothing'"
    )
    with pytest.raises(ConfigError, match="invalid regex pattern"):
        regex("x", "y", "(unclosed")


# ---------------------------------------------------------------------- f1


def test_f1_values() -> None:
    assert f1("The cat sat on the mat", "cat sat on mat").value == 1.0
    half = f1("cat dog", "cat bird")
    assert half.value == pytest.approx(0.5)
    assert half.reason.startswith("token F1 0.50: expected 'cat bird'")
    assert f1("cat sat\n\nQuestion: the dog", "cat sat").value == 1.0  # continuation ignored
    assert f1("", "cat").value == 0.0
    assert f1("", "").value == 1.0
    assert f1("fish", "cat").reason == "expected 'cat', got 'fish'"
    # precision 1/3, recall 1 -> F1 0.5
    assert f1("cat dog bird", "cat").value == pytest.approx(0.5)


# ------------------------------------------------------------------- judge


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("Score: 8", 0.8),
        ("score: 10", 1.0),
        ("Score: 0", 0.0),
        ("8/10", 0.8),
        ("7 out of 10", 0.7),
        ("9", 0.9),
        ("9.", 0.9),
        ("Score: 7.5", 0.75),
        ("**Score:** 6", 0.6),
        ("The score is 4/5.", 0.8),
        ("I would give it an 8.", 0.8),
        ("Score: 11", None),
        ("12/10", None),
        ("85", None),
        ("-3", None),
        ("I think it's pretty good", None),
        ("3 or 4", None),
        ("", None),
    ],
)
def test_parse_judge_score(reply: str, value: float | None) -> None:
    got = parse_judge_score(reply)
    if value is None:
        assert got is None
    else:
        assert got == pytest.approx(value)


class FakeJudge:
    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    async def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.reply


async def test_judge_metric_good_number() -> None:
    judge = FakeJudge("Score: 10")
    metric = get_metric("judge", judge=judge)
    assert metric.name == "judge"
    example = make_example("Paris", question="Capital of France?")
    assert await metric("Paris, of course.\n\nQuestion: Capital of Spain?", example) == Score(1.0)
    (prompt,) = judge.prompts
    assert "question: Capital of France?" in prompt
    assert "Reference answer:\nParis" in prompt
    # the judge sees the answer block, not the base model's next question
    assert "Model answer:\nParis, of course.\n" in prompt
    assert "Capital of Spain" not in prompt
    assert "0" in prompt and "10" in prompt and "Score: N" in prompt


async def test_judge_metric_fraction() -> None:
    metric = get_metric("judge", judge=FakeJudge("8/10"))
    score = await metric("Lyon", make_example("Paris", question="Capital?"))
    assert score.value == pytest.approx(0.8)
    assert score.reason == "judge gave 8/10: expected 'Paris', got 'Lyon'"


async def test_judge_metric_garbage() -> None:
    metric = get_metric("judge", judge=FakeJudge("As an AI, I cannot grade this."))
    score = await metric("Paris", make_example("Paris"))
    assert score == Score(0.0, "judge answer unparseable: 'As an AI, I cannot grade this.'")


async def test_judge_metric_empty_output_skips_the_call() -> None:
    judge = FakeJudge("Score: 10")
    score = await get_metric("judge", judge=judge)("  \n", make_example("Paris"))
    assert score == Score(0.0, "empty output")
    assert judge.prompts == []


async def test_judge_errors_propagate() -> None:
    async def broken(prompt: str) -> str:
        raise ModelCallError("judge-model", "timeout", "no answer")

    with pytest.raises(ModelCallError, match="judge-model: timeout"):
        await get_metric("judge", judge=broken)("Paris", make_example("Paris"))


def test_judge_prompt_without_inputs() -> None:
    prompt = judge_prompt("Paris", make_example(" Paris \n"))
    assert "Task input:\n(none)" in prompt
    assert "Reference answer:\nParis\n" in prompt


# -------------------------------------------------------------- get_metric


async def test_get_metric_each_name_scores_examples() -> None:
    example = make_example("positive", review="Loved it")
    rambling = " positive\n\nReview: Hated it.\nSentiment: negative"
    for name in ("exact", "contains", "f1"):
        metric = get_metric(name)
        assert metric.name == name
        assert (await metric(rambling, example)).value == 1.0
    assert (await get_metric("number")("I count 8 birds", make_example("8"))).value == 1.0
    regex_metric = get_metric("regex", pattern=r"Sentiment: (\w+)")
    assert (await regex_metric(rambling, make_example("negative"))).value == 1.0


async def test_get_metric_choice_reads_options_from_inputs() -> None:
    metric = get_metric("choice")
    example = make_example("(B)", question=OPTIONS)
    assert (await metric("east\n\nQ: next", example)).value == 1.0
    assert (await metric("west", example)).value == 0.0


def test_get_metric_errors() -> None:
    with pytest.raises(ConfigError) as unknown:
        get_metric("bleu")
    assert str(unknown.value) == (
        "unknown metric 'bleu'; choose one of exact, contains, choice, number, regex, f1, judge, "
        "json"
    )
    with pytest.raises(ConfigError, match="metric 'regex' needs a pattern"):
        get_metric("regex")
    with pytest.raises(ConfigError, match="invalid regex pattern '\\(oops'"):
        get_metric("regex", pattern="(oops")
    with pytest.raises(ConfigError, match="metric 'judge' needs a judge model"):
        get_metric("judge")


def test_the_settings_offer_every_metric() -> None:
    from gpo_engine import settings

    assert settings.METRICS is METRICS


# -------------------------------------------------------------------- json


PERSON = '{"name": "Ada Lovelace", "age": 36, "tags": ["math", "poetry"], "alive": false}'


def test_json_all_fields_match() -> None:
    output = '{"name": "ada lovelace", "age": 36.0, "tags": ["Math", "poetry"], "alive": false}'
    assert json_fields(output, PERSON) == Score(1.0)
    # Fields the answer adds do not count against it.
    assert json_fields(output[:-1] + ', "extra": 1}', PERSON).value == 1.0


def test_json_partial_fraction_names_the_wrong_fields() -> None:
    output = '{"name": "Ada Lovelace", "age": 37, "tags": ["math"]}'
    score = json_fields(output, PERSON)
    assert score.value == 0.25
    assert score.reason == (
        "fields differ: 1 of 4 right; age expected 36, got 37; "
        'tags expected ["math", "poetry"], got ["math"]; alive expected false, got nothing'
    )


@pytest.mark.parametrize(
    ("want", "got", "value"),
    [
        ("1", "1.0", 1.0),  # numbers by value
        ("1", '"1"', 1.0),  # a numeric string and a number compare by value
        ('"3"', "3", 1.0),
        ('"3.50"', "3.5", 1.0),
        ("2", "3", 0.0),
        ("12345678901234567", "12345678901234568", 0.0),  # whole numbers exactly
        ("0.1", "0.10000000000001", 1.0),
        ('"3.5"', '"35"', 0.0),  # two strings: numeric text compares as text
        ('"02139"', '"2139"', 0.0),
        ("1", "true", 0.0),  # booleans and null only match themselves
        ("true", "1", 0.0),
        ("true", '"true"', 0.0),
        ("false", "false", 1.0),
        ("null", "null", 1.0),
        ("null", '""', 0.0),
        ('"x"', "null", 0.0),
        ('"The Answer!"', '"answer"', 1.0),  # strings after normalize()
        ('"?!"', '"?!"', 1.0),  # all punctuation still compares
        ('"?!"', '"."', 0.0),
        ("[1, 2]", "[2, 1]", 0.0),  # lists in order
        ("[1, 2]", "[1, 2, 3]", 0.0),
        ('[{"a": 1}, "b"]', '[{"a": 1.0, "z": 0}, "B"]', 1.0),  # objects in lists: all fields
        ("[]", "[]", 1.0),
        ("{}", '{"any": 1}', 1.0),  # an empty object: any object matches
        ("{}", "[]", 0.0),
    ],
)
def test_json_field_values(want: str, got: str, value: float) -> None:
    assert json_fields(f'{{"f": {got}}}', f'{{"f": {want}}}').value == value


def test_json_nested_objects_count_field_by_field() -> None:
    expected = '{"name": "Ada", "address": {"city": "London", "zip": {"code": "W1"}}}'
    assert json_fields('{"name": "Ada", "address": {"city": "London", "zip": {"code": "W1"}}}',
                       expected).value == 1.0
    score = json_fields('{"name": "Ada", "address": {"city": "Paris"}}', expected)
    assert score.value == pytest.approx(1 / 3)
    assert "address.city expected \"London\", got \"Paris\"" in score.reason
    assert 'address.zip.code expected "W1", got nothing' in score.reason
    assert json_fields('{"name": "Ada", "address": "London"}', expected).value == pytest.approx(
        1 / 3
    )


def test_json_fields_setting_picks_the_scored_fields() -> None:
    expected = '{"name": "Ada", "age": 36, "address": {"city": "London", "zip": "W1"}}'
    output = '{"name": "Ada", "age": 99, "address": {"city": "London", "zip": "E2"}}'
    assert json_fields(output, expected).value == 0.5
    assert json_fields(output, expected, ["name"]).value == 1.0
    assert json_fields(output, expected, ["name", "address.city"]).value == 1.0
    assert json_fields(output, expected, ["address"]).value == 0.5  # a parent names its fields
    assert json_fields(output, expected, ["age", "missing"]).value == 0.0
    nothing = json_fields(output, expected, ["missing", "addr"])
    assert nothing == Score(0.0, "expected has none of gpo.fields: missing, addr")


@pytest.mark.parametrize(
    "output",
    [
        '```json\n{"a": 1, "b": "x"}\n```',
        'Here is the JSON:\n```JSON\n{"a": 1, "b": "x"}\n```\nHope this helps!',
        'Sure! {"a": 1, "b": "x"} is the answer.',
        'Answer {with braces} first: {"a": 1, "b": "x"}',
        '```\n{"a": 1, "b": "x"}\n```',
        '```json\n{"a": 1, "b": "x"}',  # the closing fence cut off
        '[1, 2]\n{"a": 1, "b": "x"}',
        '```json\nnot json\n```\n{"a": 1, "b": "x"}',
    ],
)
def test_json_tolerates_fences_and_prose(output: str) -> None:
    assert parse_json_object(output) == {"a": 1, "b": "x"}
    assert json_fields(output, '{"a": 1, "b": "x"}').value == 1.0


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("", "unparseable JSON: empty output"),
        ("The answer is Ada.", "unparseable JSON: no JSON object in 'The answer is Ada.'"),
        ("[1, 2]", "unparseable JSON: no JSON object in '[1, 2]'"),
        # A cut-off answer: its nested object is not taken for the answer.
        ('{"a": {"b": 1}, "c": ', "unparseable JSON: no JSON object in "
                                  "'{\"a\": {\"b\": 1}, \"c\":'"),
        ("{'a': 1}", "unparseable JSON: no JSON object in \"{'a': 1}\""),
    ],
)
def test_json_unparseable_output_scores_zero(output: str, reason: str) -> None:
    assert json_fields(output, '{"a": {"b": 1}}') == Score(0.0, reason)
    assert reason_group(reason) == "unparseable JSON"


def test_json_expected_forms() -> None:
    # The loader keeps a JSON object as its JSON text; a JSON string holding
    # the object's text (double-encoded) is read too.
    assert json_fields('{"a": 1}', '{"a": 1}').value == 1.0
    assert json_fields('{"a": 1}', '"{\\"a\\": 1}"').value == 1.0
    for bad in ("Paris", "[1]", '"text"', "3"):
        score = json_fields('{"a": 1}', bad)
        assert score.value == 0.0
        assert reason_group(score.reason) == "expected is not a JSON object"
    assert json_fields("{}", "{}").value == 1.0


@given(st.text(), st.text())
def test_json_fields_never_raises(output: str, expected: str) -> None:
    score = json_fields(output, expected)
    assert score.value == 1.0 or score.reason


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8))
def test_json_an_object_matches_itself(value: object) -> None:
    text = json.dumps({"v": value})
    assert json_fields(f"Result:\n```json\n{text}\n```", text).value == 1.0


async def test_get_metric_json_with_fields() -> None:
    expected = '{"name": "Ada", "age": 36}'
    answer = '{"name": "Ada", "age": 3}'
    assert (await get_metric("json")(answer, make_example(expected))).value == 0.5
    metric = get_metric("json", fields=["name"])
    assert metric.name == "json"
    assert (await metric(answer, make_example(expected))).value == 1.0
    assert (await get_metric("json", fields=())(answer, make_example(expected))).value == 0.5


def test_reason_groups_and_counts() -> None:
    assert reason_group("unparseable JSON: no JSON object in 'x'") == "unparseable JSON"
    assert reason_group("fields differ: 1 of 2 right; a expected 1, got 2") == "fields differ"
    assert reason_group("token F1 0.50: expected 'a', got 'b'") == "token F1 0.50"
    # A colon inside a quoted value is not a kind separator.
    assert reason_group("expected 'a: b', got 'c'") == "expected 'a: b', got 'c'"
    assert reason_group("model call failed") == "model call failed"
    assert count_reasons([
        "unparseable JSON: no JSON object in 'x'",
        "fields differ: 0 of 1 right; a expected 1, got 2",
        "unparseable JSON: empty output",
        "",
    ]) == [("unparseable JSON", 2), ("fields differ", 1)]
