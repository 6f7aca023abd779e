"""Tests of gpo_engine.metrics and gpo_engine.judge: every metric, with the
rambling a base model (Gemma 3 270M) writes after its answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpo_engine.errors import ConfigError, ModelCallError
from gpo_engine.examples import Example
from gpo_engine.judge import judge_prompt, parse_judge_score
from gpo_engine.metrics import METRICS, choice, contains, exact, f1, get_metric, number, regex
from gpo_engine.scoring import Score


def make_example(expected: str, **inputs: str) -> Example:
    return Example(inputs=inputs, expected=expected, split="dev", line=1, uid="0123456789abcdef")


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


async def test_get_metric_json_with_fields() -> None:
    expected = '{"name": "Ada", "age": 36}'
    answer = '{"name": "Ada", "age": 3}'
    assert (await get_metric("json")(answer, make_example(expected))).value == 0.5
    metric = get_metric("json", fields=["name"])
    assert metric.name == "json"
    assert (await metric(answer, make_example(expected))).value == 1.0
    assert (await get_metric("json", fields=())(answer, make_example(expected))).value == 0.5
