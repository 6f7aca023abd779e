"""Scoring a model's output against an example's expected answer.

Every metric returns a Score in 0..1 with a short reason when it is not a
full match (gpo_engine.scoring); a bad output is data, never an exception.
The answer each metric compares is found by gpo_engine.answers; metric
"json" lives in gpo_engine.json_metric and metric "judge" in
gpo_engine.judge. get_metric() builds any of them by name.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gpo_engine.answers import (
    BOOL_POLARITY,
    NUMBER,
    answer_block,
    comparable_pair,
    expected_number,
    extract_choice,
    extract_number,
    extract_yesno,
    format_number,
    normalize,
    numbers_in,
    option_texts,
    same_number,
    text_answer,
)
from gpo_engine.errors import ConfigError
from gpo_engine.json_metric import json_fields
from gpo_engine.judge import Judge, JudgeMetric
from gpo_engine.scoring import Metric, Score, mismatch, quoted

if TYPE_CHECKING:
    from gpo_engine.examples import Example

# The names gpo.metric takes (gpo_engine.settings checks them against this).
METRICS = ("exact", "contains", "choice", "number", "regex", "f1", "judge", "json")

_EXPECTED_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:]?$")

# Places where a first "sentence-ish" segment of the answer line may end:
# "Yes, because", "positive. The review", "Paris (France)", "red - it is".
_SEGMENT_END = re.compile(r"[.,;:!?](?=\s|$)|\s[-–—]\s|\s\(")
_SHORT_LABEL = re.compile(r"^[A-Za-z][\w ]{0,30}:\s+")


def _text_candidates(line: str) -> list[str]:
    """The answer line, its first segments, and the same without a leading
    'Sentiment:'-style label."""
    bases = [line]
    label = _SHORT_LABEL.match(line)
    if label:
        bases.append(line[label.end() :])
    candidates: list[str] = []
    for base in bases:
        candidates.append(base)
        candidates.extend(base[: m.start()] for m in _SEGMENT_END.finditer(base))
    return candidates


def _is_choice_target(expected: str) -> bool:
    stripped = expected.strip()
    return bool(re.fullmatch(r"\([A-Za-z]\)|[A-Z]", stripped))


def _is_number_target(expected: str) -> bool:
    stripped = expected.strip()
    match = NUMBER.fullmatch(stripped.rstrip("%"))
    return match is not None and not stripped.isalpha()


def exact(output: str, expected: str) -> Score:
    """Exact match of the answer, typed by the expected value as in the paper.

    - expected yes/no/true/false/valid/invalid: polarity of the first
      yes/no-style word of the answer ("Yes." and "yes, because" match "Yes";
      "True" matches "yes", as the paper's Boolean matching does).
    - expected "(B)" or a single capital letter: the choice() metric.
    - expected a number: the number() metric.
    - anything else: normalize() of the answer line, or of one of its first
      sentence-ish segments (up to . , ; : ! ? " - " or " ("), equals
      normalize() of expected. Only the answer line counts (more lines when
      expected itself has several), so what a base model writes after the
      answer never matters, and text before the answer on the same line fails.
    """
    norm_expected = normalize(expected)
    if norm_expected in BOOL_POLARITY:
        got = extract_yesno(output)
        if not got:
            return Score(
                0.0, f"expected {quoted(expected)}, got no yes/no answer in {quoted(output)}"
            )
        if BOOL_POLARITY[got] == BOOL_POLARITY[norm_expected]:
            return Score(1.0)
        return Score(0.0, mismatch(expected, got))
    if _is_choice_target(expected):
        return choice(output, expected)
    if _is_number_target(expected):
        return number(output, expected)

    line_count = max(1, len([x for x in expected.strip().split("\n") if x.strip()]))
    answer = text_answer(output, line_count)
    for candidate in _text_candidates(answer) if line_count == 1 else [answer]:
        got, want = comparable_pair(candidate, expected)
        if got == want:
            return Score(1.0)
    return Score(0.0, mismatch(expected, answer))


def contains(output: str, expected: str) -> Score:
    """The expected text appears, as whole words after normalize(), in the
    answer block (the output up to where a new field starts)."""
    block = answer_block(output)
    got, want = comparable_pair(block, expected)
    # An empty expected matches only an empty answer, as in exact(): no free points.
    if (f" {want} " in f" {got} ") if want else not got:
        return Score(1.0)
    return Score(0.0, f"{quoted(expected)} not found in {quoted(block)}")


def choice(output: str, expected: str, options: str = "") -> Score:
    """Multiple choice. expected: "(A)", "A" or the option's text. The output
    may give a bracketed letter anywhere in the answer, a bare letter at its
    start ("B", "B.", "Option B"), or the option text. `options` is text that
    lists the options ("(A) east (B) west", usually the task input), used to
    translate between letters and option texts."""
    table = option_texts(options) if options else {}
    got = extract_choice(output)
    got_letter = got[1] if re.fullmatch(r"\([A-Z]\)", got) else ""
    expected_match = _EXPECTED_LETTER.match(expected.strip())

    if expected_match:
        want = expected_match.group(1).upper()
        if not got_letter and table:
            # The model wrote the option's text instead of its letter.
            text_norm = normalize(text_answer(output))
            got_letter = next((k for k, v in table.items() if normalize(v) == text_norm), "")
        if got_letter == want:
            return Score(1.0)
        return Score(0.0, mismatch(f"({want})", f"({got_letter})" if got_letter else got))

    # Expected is the option's text.
    if got_letter and got_letter in table:
        if normalize(table[got_letter]) == normalize(expected):
            return Score(1.0)
        return Score(0.0, mismatch(expected, f"({got_letter}) {table[got_letter]}"))
    text = re.sub(r"^\(?[A-Za-z]\)\s*", "", text_answer(output))
    for candidate in _text_candidates(text):
        left, right = comparable_pair(candidate, expected)
        if left == right:
            return Score(1.0)
    return Score(0.0, mismatch(expected, got if got_letter else text))


def number(output: str, expected: str) -> Score:
    """The answer's number (first after "the answer is", else the last one in
    the first paragraph of the answer block that has a number) equals the
    expected number. Tolerates "$", thousands commas, "%", a trailing ".0",
    and number words up to twenty ("eight")."""
    want = expected_number(expected)
    if want is None:
        return Score(0.0, f"expected value {quoted(expected)} is not a number")
    got = extract_number(output)
    if got is None:
        return Score(0.0, f"expected {quoted(expected)}, got no number in {quoted(output)}")
    if same_number(got, want):
        return Score(1.0)
    return Score(0.0, mismatch(expected, format_number(got)))


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"invalid regex pattern {pattern!r}: {error}") from error


def regex(output: str, expected: str, pattern: str) -> Score:
    """The first match of `pattern` in the output (its first group when it has
    groups, else the whole match) equals expected after normalize(); numbers
    compare numerically. The whole output is searched: the pattern says where
    the answer is."""
    match = _compile(pattern).search(output)
    if match is None:
        return Score(0.0, f"pattern {pattern!r} not found in {quoted(output)}")
    got = match.group(1) if match.re.groups and match.group(1) is not None else match.group(0)
    left, right = comparable_pair(got, expected)
    if left == right:
        return Score(1.0)
    want_number = expected_number(expected) if _is_number_target(expected) else None
    got_numbers = numbers_in(got)
    if (
        want_number is not None
        and len(got_numbers) == 1
        and same_number(got_numbers[0], want_number)
    ):
        return Score(1.0)
    return Score(0.0, mismatch(expected, got))


def f1(output: str, expected: str) -> Score:
    """Token F1 (SQuAD) between the normalized answer block and expected."""
    block = answer_block(output)
    got_tokens, want_tokens = (t.split() for t in comparable_pair(block, expected))
    if not got_tokens and not want_tokens:
        return Score(1.0)
    common = sum((Counter(got_tokens) & Counter(want_tokens)).values())
    if common == 0:
        return Score(0.0, mismatch(expected, block))
    precision = common / len(got_tokens)
    recall = common / len(want_tokens)
    value = 2 * precision * recall / (precision + recall)
    if value >= 1.0:
        return Score(1.0)
    return Score(value, f"token F1 {value:.2f}: {mismatch(expected, block)}")


class _FunctionMetric:
    def __init__(self, name: str, score: Callable[[str, Example], Score]) -> None:
        self.name = name
        self._score = score

    async def __call__(self, output: str, example: Example) -> Score:
        return self._score(output, example)


def get_metric(
    name: str,
    *,
    pattern: str | None = None,
    judge: Judge | None = None,
    fields: Sequence[str] | None = None,
) -> Metric:
    """The metric called `name` (one of METRICS), ready to score outputs.

    `fields` (gpo.fields) picks the expected fields metric "json" scores;
    None or empty scores them all. Other metrics have no fields and ignore it.
    """
    if name == "exact":
        return _FunctionMetric(name, lambda out, ex: exact(out, ex.expected))
    if name == "contains":
        return _FunctionMetric(name, lambda out, ex: contains(out, ex.expected))
    if name == "choice":
        return _FunctionMetric(
            name, lambda out, ex: choice(out, ex.expected, "\n".join(ex.inputs.values()))
        )
    if name == "number":
        return _FunctionMetric(name, lambda out, ex: number(out, ex.expected))
    if name == "f1":
        return _FunctionMetric(name, lambda out, ex: f1(out, ex.expected))
    if name == "regex":
        if not pattern:
            raise ConfigError("metric 'regex' needs a pattern: set gpo.pattern")
        compiled = _compile(pattern).pattern
        return _FunctionMetric(name, lambda out, ex: regex(out, ex.expected, compiled))
    if name == "judge":
        if judge is None:
            raise ConfigError("metric 'judge' needs a judge model: set gpo.judge or gpo.optimizer")
        return JudgeMetric(judge)
    if name == "json":
        chosen = tuple(fields) if fields else None
        return _FunctionMetric(name, lambda out, ex: json_fields(out, ex.expected, chosen))
    raise ConfigError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
