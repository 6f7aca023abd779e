"""Scoring a model's output against an example's expected answer.

Every metric returns a Score in 0..1 with a short reason when it is not a
full match; a bad output is data, never an exception.

Answer extraction follows the GPO paper's BBH evaluation (txy77/GPO,
src/evaluation): a base model given a few-shot style prompt keeps writing
after its answer, so only the start of the output counts; "the answer is" /
"Answer:" markers point at the answer; multiple choice reads the first
bracketed letter; yes/no style targets compare by polarity across the
yes/no, true/false and valid/invalid families; numbers compare numerically.

Where the answer ends (`_answer_block`): the output is stripped, a leading
answer label ("Answer:", "A:", "Output:", ...) is removed, and the text is cut
at the first later line that starts a new field ("Question: ...",
"Review: ...", "Q: ...", "Options:") or is a separator (`---`, `###`,
a code fence). What is left is the answer block; the first line of it is the
answer line.

Metric "json" is for prompts with `output: {format: json}`: it reads the first
JSON object of the answer and scores the share of the expected object's
fields it gets right (json_fields). Reasons read "kind: detail", and
reason_group() / count_reasons() count failing rows by kind.
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gpo_engine.errors import ConfigError

if TYPE_CHECKING:
    from gpo_engine.examples import Example

# The names gpo.metric takes (gpo_engine.settings checks them against this).
METRICS = ("exact", "contains", "choice", "number", "regex", "f1", "judge", "json")

Judge = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class Score:
    value: float  # 0.0..1.0
    reason: str = ""  # why, when it is not a full match (shown in reports)

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:  # also rejects NaN
            raise ValueError(f"score must be within 0..1, got {self.value!r}")


class Metric(Protocol):
    name: str

    async def __call__(self, output: str, example: Example) -> Score: ...


# ---------------------------------------------------------------- text helpers

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD-style: lowercase, delete punctuation (ASCII and Unicode; "don't" ->
    "dont"), drop the articles a/an/the, collapse whitespace."""
    lowered = text.lower()
    kept = "".join(
        ch for ch in lowered if not (ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P"))
    )
    return " ".join(_ARTICLES.sub(" ", kept).split())


def _loose(text: str) -> str:
    # For answers that are all punctuation (BBH dyck_languages: "] ] >"), where
    # normalize() would leave nothing and make every answer match.
    return " ".join(text.lower().split()).rstrip(".").strip()


def _comparable_pair(answer: str, expected: str) -> tuple[str, str]:
    norm_expected = normalize(expected)
    if norm_expected or not expected.strip():
        return normalize(answer), norm_expected
    return _loose(answer), _loose(expected)


def _show(text: str, limit: int = 60) -> str:
    text = text.strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def _mismatch(expected: str, got: str) -> str:
    return f"expected {_show(expected)}, got {_show(got)}"


# ------------------------------------------------------------ answer location

# A label that introduces the answer itself; removed from the front.
_LEAD_LABEL = re.compile(
    r"^(?:A|Ans|Answer|Final answer|Output|Result|Response|Label|Prediction)\s*[:：]\s*",
    re.IGNORECASE,
)
# Lines that may carry the answer even though they look like a field.
_ANSWERISH = r"(?:a|ans|answer|final answer|correct answer|so|therefore|thus|total|result)"
# A later line that starts a new field or example: "Question:", "Review:",
# "Q:", "Options:", or a separator. The base model's continuation starts here.
_CONTINUATION = re.compile(
    rf"^\s*(?:(?!{_ANSWERISH}\s*:)[A-Za-z][\w '()/-]{{0,30}}:(?:\s|$)|[-=*#_~]{{3,}}|```)",
    re.IGNORECASE,
)
# Same, inside the answer line: " Question: ..." after the answer.
_INLINE_CONTINUATION = re.compile(r"\s+(?:Q|[A-Z][a-z]{1,20}(?: [A-Za-z]{1,20})?):(?:\s|$)")
# "the answer is X", "answer: X", "Final answer is: X" (the paper's primary patterns).
_INDICATOR = re.compile(r"\banswer\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
# "X is the correct answer" (the paper's answer-ahead patterns).
_AHEAD = re.compile(r"\s+is\s+(?:the\s+)?(?:correct\s+|right\s+|final\s+)?answer\b", re.IGNORECASE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_QUOTES = "*\"'`“”‘’ \t"


def _answer_block(output: str) -> str:
    text = output.strip().lstrip(":").strip()
    text = _LEAD_LABEL.sub("", text, count=1).strip()
    lines = text.split("\n")
    kept: list[str] = []
    for line in lines:
        if kept and any(k.strip() for k in kept) and _CONTINUATION.match(line):
            break
        kept.append(line)
    return "\n".join(kept).strip()


def _indicated(block: str) -> str | None:
    """Text after the last answer indicator, or before an answer-ahead phrase.

    Only markers in the first paragraph count: after a blank line a base model
    is usually writing the next made-up example ("Yes.\n\nIs the sky green?
    Answer: No"), whose answer is not this one.
    """
    blank = _BLANK_LINE.search(block)
    first_paragraph_end = blank.start() if blank else len(block)
    found = [m for m in _INDICATOR.finditer(block) if m.start() < first_paragraph_end]
    if found:
        return block[found[-1].end() :].strip()
    ahead = _AHEAD.search(block, 0, first_paragraph_end)
    if ahead:
        line_start = block.rfind("\n", 0, ahead.start()) + 1
        return block[line_start : ahead.start()].strip()
    return None


def _clean_line(line: str) -> str:
    cut = _INLINE_CONTINUATION.search(line)
    if cut:
        line = line[: cut.start()]
    return line.strip().strip(_QUOTES).strip()


def _first_lines(text: str, count: int = 1) -> str:
    lines = [line for line in text.split("\n") if line.strip()]
    return "\n".join(lines[:count])


def _text_answer(output: str, lines: int = 1) -> str:
    block = _answer_block(output)
    region = _indicated(block)
    if region is None or not region.strip():
        region = block
    first = _first_lines(region, lines)
    if lines == 1:
        return _clean_line(first)
    return first.strip()


# ------------------------------------------------------------------ yes / no

_BOOL_POLARITY = {
    "yes": True,
    "true": True,
    "valid": True,
    "no": False,
    "false": False,
    "invalid": False,
}
_BOOL_WORD = re.compile(r"\b(yes|no|true|false|valid|invalid)\b", re.IGNORECASE)
_ENDS_WITH_IS_BOOL = re.compile(r"\bis\s+(yes|no|true|false|valid|invalid)\W*$", re.IGNORECASE)


def _yesno_in_line(line: str) -> str:
    line = _clean_line(line)
    if line in {"0", "1"}:  # as the paper: a 0/1 answer to a Boolean question
        return "true" if line == "1" else "false"
    # "True and False is False", "The statement is false.": the conclusion counts.
    ending = _ENDS_WITH_IS_BOOL.search(line)
    if ending:
        return ending.group(1).lower()
    words = list(_BOOL_WORD.finditer(line))
    if not words:
        return ""
    # "Yes, because ..." answers first; "I think it's plausible, so no" last.
    if words[0].start() == len(line) - len(line.lstrip(_QUOTES + "(")):
        return words[0].group(1).lower()
    return words[-1].group(1).lower()


def _extract_yesno(output: str) -> str:
    block = _answer_block(output)
    region = _indicated(block)
    if region:
        found = _yesno_in_line(_first_lines(region))
        if found:
            return found
    for line in block.split("\n"):
        if line.strip():
            found = _yesno_in_line(line)
            if found:
                return found
    return ""


# -------------------------------------------------------------------- choice

_BRACKETED = re.compile(r"\(([A-Za-z])\)")
# "B", "B)", "B.", "B: east", "Option B", "B because": a letter at the start.
_BARE_LETTER = re.compile(
    r"^(option\s+|choice\s+)?\(?([A-Za-z])(\)|[.:,](?=\s|$)|(?=\s|$))", re.IGNORECASE
)
_EXPECTED_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:]?$")
_OPTION = re.compile(r"\(([A-Z])\)\s*([^\n]*?)(?=\s*\([A-Z]\)|\n|$)")


def _letter_in(region: str) -> str:
    bracketed = _BRACKETED.search(region)
    if bracketed:
        return bracketed.group(1).upper()
    start = _clean_line(_first_lines(region))
    bare = _BARE_LETTER.match(start)
    if not bare:
        return ""
    prefixed, letter, ending = bare.group(1), bare.group(2), bare.group(3)
    rest = start[bare.end() :].strip()
    if not prefixed:
        # "a" is an article and "A dog", "I think" are English: a lowercase
        # letter counts only alone, "A" and "I" only with ")", "." or ":".
        if letter.islower() and rest:
            return ""
        if letter in "AI" and not ending and rest:
            return ""
    return letter.upper()


def _extract_choice(output: str) -> str:
    block = _answer_block(output)
    region = _indicated(block)
    letter = _letter_in(region) if region else ""
    if not letter:
        letter = _letter_in(block)
    return f"({letter})" if letter else _text_answer(output)


def _options(text: str) -> dict[str, str]:
    """'(A) east (B) west' or one option per line -> {'A': 'east', 'B': 'west'}."""
    return {m.group(1): m.group(2).strip() for m in _OPTION.finditer(text) if m.group(2).strip()}


# ------------------------------------------------------------------- numbers

_WORD_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # fmt: skip
# A sign only where it cannot be a binary minus ("5-3" is 5 and 3), thousands
# separators only in groups of three ("3, 4" is two numbers).
_NUMBER = re.compile(
    r"(?<![\w.])[-−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!,\d{3})"
    r"|\b(?:" + "|".join(_WORD_NUMBERS) + r")\b",
    re.IGNORECASE,
)


def _to_float(token: str) -> float | None:
    word = _WORD_NUMBERS.get(token.lower())
    if word is not None:
        return float(word)
    cleaned = token.replace("−", "-").replace("$", "").replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _format_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _numbers(text: str) -> list[float]:
    """Numbers in order; number words count only where no digits are written,
    since "one" is more often a pronoun ("the 3rd one") than an answer."""
    tokens = [m.group(0) for m in _NUMBER.finditer(text)]
    digits = [t for t in tokens if any(ch.isdigit() for ch in t)]
    found = (_to_float(t) for t in (digits or tokens))
    return [v for v in found if v is not None]


def _extract_number(output: str) -> float | None:
    block = _answer_block(output)
    region = _indicated(block)
    if region:
        # "The answer is 8 because 3 + 5": the first number after the marker.
        after = _numbers(_first_lines(region))
        if after:
            return after[0]
    # Otherwise the last number of the first paragraph that has one: "42\n\nI
    # have 3 more" is 42, "3 apples and 4 pears, so 7" is 7.
    for paragraph in _BLANK_LINE.split(block):
        values = _numbers(paragraph.split("=")[-1] if "=" in paragraph else paragraph)
        if not values:
            values = _numbers(paragraph)
        if values:
            return values[-1]
    return None


def _expected_number(expected: str) -> float | None:
    values = _numbers(expected)
    return values[0] if len(values) == 1 else None


def _same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# ---------------------------------------------------------------- extraction


def extract_answer(output: str, kind: str) -> str:
    """The answer part of a model output.

    kind "text": the answer line (after an answer label or "the answer is",
    cut where a new field starts), stripped of quotes and markdown emphasis.
    "yesno": one lowercase word of yes/no/true/false/valid/invalid, or "".
    "choice": "(B)" when a letter choice is given, else the text answer.
    "number": the number as a canonical string ("1234", "-2.5"), or "".
    """
    if kind == "text":
        return _text_answer(output)
    if kind == "yesno":
        return _extract_yesno(output)
    if kind == "choice":
        return _extract_choice(output)
    if kind == "number":
        value = _extract_number(output)
        return "" if value is None else _format_number(value)
    raise ValueError(f"unknown answer kind {kind!r}; use choice, yesno, number or text")


# ------------------------------------------------------------------- metrics

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
    match = _NUMBER.fullmatch(stripped.rstrip("%"))
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
    if norm_expected in _BOOL_POLARITY:
        got = _extract_yesno(output)
        if not got:
            return Score(
                0.0, f"expected {_show(expected)}, got no yes/no answer in {_show(output)}"
            )
        if _BOOL_POLARITY[got] == _BOOL_POLARITY[norm_expected]:
            return Score(1.0)
        return Score(0.0, _mismatch(expected, got))
    if _is_choice_target(expected):
        return choice(output, expected)
    if _is_number_target(expected):
        return number(output, expected)

    line_count = max(1, len([x for x in expected.strip().split("\n") if x.strip()]))
    answer = _text_answer(output, line_count)
    for candidate in _text_candidates(answer) if line_count == 1 else [answer]:
        got, want = _comparable_pair(candidate, expected)
        if got == want:
            return Score(1.0)
    return Score(0.0, _mismatch(expected, answer))


def contains(output: str, expected: str) -> Score:
    """The expected text appears, as whole words after normalize(), in the
    answer block (the output up to where a new field starts)."""
    block = _answer_block(output)
    got, want = _comparable_pair(block, expected)
    # An empty expected matches only an empty answer, as in exact(): no free points.
    if (f" {want} " in f" {got} ") if want else not got:
        return Score(1.0)
    return Score(0.0, f"{_show(expected)} not found in {_show(block)}")


def choice(output: str, expected: str, options: str = "") -> Score:
    """Multiple choice. expected: "(A)", "A" or the option's text. The output
    may give a bracketed letter anywhere in the answer, a bare letter at its
    start ("B", "B.", "Option B"), or the option text. `options` is text that
    lists the options ("(A) east (B) west", usually the task input), used to
    translate between letters and option texts."""
    table = _options(options) if options else {}
    got = _extract_choice(output)
    got_letter = got[1] if re.fullmatch(r"\([A-Z]\)", got) else ""
    expected_match = _EXPECTED_LETTER.match(expected.strip())

    if expected_match:
        want = expected_match.group(1).upper()
        if not got_letter and table:
            # The model wrote the option's text instead of its letter.
            text_norm = normalize(_text_answer(output))
            got_letter = next((k for k, v in table.items() if normalize(v) == text_norm), "")
        if got_letter == want:
            return Score(1.0)
        return Score(0.0, _mismatch(f"({want})", f"({got_letter})" if got_letter else got))

    # Expected is the option's text.
    if got_letter and got_letter in table:
        if normalize(table[got_letter]) == normalize(expected):
            return Score(1.0)
        return Score(0.0, _mismatch(expected, f"({got_letter}) {table[got_letter]}"))
    text = re.sub(r"^\(?[A-Za-z]\)\s*", "", _text_answer(output))
    for candidate in _text_candidates(text):
        left, right = _comparable_pair(candidate, expected)
        if left == right:
            return Score(1.0)
    return Score(0.0, _mismatch(expected, got if got_letter else text))


def number(output: str, expected: str) -> Score:
    """The answer's number (first after "the answer is", else the last one in
    the first paragraph of the answer block that has a number) equals the
    expected number. Tolerates "$", thousands commas, "%", a trailing ".0",
    and number words up to twenty ("eight")."""
    want = _expected_number(expected)
    if want is None:
        return Score(0.0, f"expected value {_show(expected)} is not a number")
    got = _extract_number(output)
    if got is None:
        return Score(0.0, f"expected {_show(expected)}, got no number in {_show(output)}")
    if _same_number(got, want):
        return Score(1.0)
    return Score(0.0, _mismatch(expected, _format_number(got)))


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
        return Score(0.0, f"pattern {pattern!r} not found in {_show(output)}")
    got = match.group(1) if match.re.groups and match.group(1) is not None else match.group(0)
    left, right = _comparable_pair(got, expected)
    if left == right:
        return Score(1.0)
    want_number = _expected_number(expected) if _is_number_target(expected) else None
    got_numbers = _numbers(got)
    if (
        want_number is not None
        and len(got_numbers) == 1
        and _same_number(got_numbers[0], want_number)
    ):
        return Score(1.0)
    return Score(0.0, _mismatch(expected, got))


def f1(output: str, expected: str) -> Score:
    """Token F1 (SQuAD) between the normalized answer block and expected."""
    block = _answer_block(output)
    got_tokens, want_tokens = (t.split() for t in _comparable_pair(block, expected))
    if not got_tokens and not want_tokens:
        return Score(1.0)
    common = sum((Counter(got_tokens) & Counter(want_tokens)).values())
    if common == 0:
        return Score(0.0, _mismatch(expected, block))
    precision = common / len(got_tokens)
    recall = common / len(want_tokens)
    value = 2 * precision * recall / (precision + recall)
    if value >= 1.0:
        return Score(1.0)
    return Score(value, f"token F1 {value:.2f}: {_mismatch(expected, block)}")


# ---------------------------------------------------------------------- json

UNPARSEABLE_JSON = "unparseable JSON"  # reason prefix of outputs with no JSON object
# A ```json (or bare ```) fence; an unclosed one (a cut-off answer) runs to the end.
_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\r?\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_DECODER = json.JSONDecoder()
_NUMERIC_TEXT = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*")
_MISSING = object()  # a field the answer lacks (distinct from a JSON null)
_SHOWN_MISMATCHES = 3  # field mismatches spelled out in a reason


def _first_object_in(text: str) -> dict[str, Any] | None:
    """The first '{' that starts a complete JSON object, decoded."""
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as error:
            # Every '{' before the failure point is nested inside the broken
            # candidate; decoding one would score a fragment of a cut-off answer.
            start = text.find("{", max(error.pos, start + 1))
            continue
        except RecursionError:
            return None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def parse_json_object(output: str) -> dict[str, Any] | None:
    """The first complete JSON object in a model's answer, or None.

    A ```json fenced block is looked at first; otherwise prose before and
    after the object is skipped, as chat models like to wrap their JSON.
    """
    for fenced in _FENCE.finditer(output):
        found = _first_object_in(fenced.group(1))
        if found is not None:
            return found
    return _first_object_in(output)


def _expected_object(expected: str) -> dict[str, Any] | None:
    """The example's expected object: its JSON text, or a JSON string holding that text."""
    try:
        value = json.loads(expected)
        if isinstance(value, str):
            value = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


_Leaf = tuple[tuple[str, ...], Any]  # (path of keys, expected value)


def _leaves(value: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[_Leaf]:
    """(path, value) for every field that is not a non-empty object: the fields scored."""
    found: list[_Leaf] = []
    for key, item in value.items():
        path = (*prefix, str(key))
        if isinstance(item, dict) and item:
            found.extend(_leaves(item, path))
        else:
            found.append((path, item))
    return found


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _selected(leaves: list[_Leaf], fields: Sequence[str] | None) -> list[_Leaf]:
    """The leaves that gpo.fields names, directly or through a parent object."""
    if not fields:
        return leaves
    return [
        (path, value)
        for path, value in leaves
        if any(_dotted(path) == name or _dotted(path).startswith(name + ".") for name in fields)
    ]


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _json_number(value: Any) -> float | int | None:
    """A JSON number, or the value of a numeric string ("3", "-2.5e3"); None otherwise."""
    if isinstance(value, bool):  # bool is an int subclass, but true is not 1 here
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value):
        number_value = float(value)
        return number_value if math.isfinite(number_value) else None
    return None


def _json_equal(want: Any, got: Any) -> bool:
    """One expected value against the answer's, by the rules of json_fields()."""
    if want is None or isinstance(want, bool):
        return got is want  # true, false and null match only themselves
    if isinstance(want, dict):
        return isinstance(got, dict) and all(
            key in got and _json_equal(item, got[key]) for key, item in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(_json_equal(a, b) for a, b in zip(want, got, strict=True))
        )
    if isinstance(got, bool) or got is None or isinstance(got, (dict, list)):
        return False
    if isinstance(want, (int, float)) or isinstance(got, (int, float)):
        want_number, got_number = _json_number(want), _json_number(got)
        if want_number is None or got_number is None:
            return False
        if isinstance(want_number, int) and isinstance(got_number, int):
            return want_number == got_number  # exact: big ids must not match by tolerance
        return _same_number(float(want_number), float(got_number))
    if not isinstance(want, str) or not isinstance(got, str):
        return False
    if _NUMERIC_TEXT.fullmatch(want) and _NUMERIC_TEXT.fullmatch(got):
        # normalize() deletes the '.', which would make "3.5" equal "35"; and
        # strings that hold digits ("02139") are often codes, not quantities.
        return want.strip() == got.strip()
    left, right = _comparable_pair(got, want)
    return left == right


def _json_show(value: Any, limit: int = 40) -> str:
    if value is _MISSING:
        return "nothing"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_fields(output: str, expected: str, fields: Sequence[str] | None = None) -> Score:
    """Structured output: the share of the expected object's fields the answer gets right.

    `expected` is a JSON object (or a JSON string holding one); otherwise the
    score is 0 with the reason "expected is not a JSON object". The answer is
    the first complete JSON object in the output (parse_json_object); when
    there is none the score is 0 and the reason starts with "unparseable JSON".

    Fields are the leaves of the expected object: a nested object is
    flattened to dotted paths ("address.city"), so each of its fields counts
    on its own; an empty object counts as one field that any object matches.
    `fields` (gpo.fields) keeps only the leaves it names, by dotted path or by
    a parent object's path; a row with none of them scores 0. Fields the
    answer adds are ignored. A leaf matches when:

    - string: equal after normalize() (numeric strings on both sides: equal
      text, since "3.5" must not equal "35" and "02139" is a code);
    - number: equal by value (1 == 1.0); a number and a numeric string also
      compare by value ("3" matches 3 either way);
    - true, false, null: only the same value ("true" and 1 do not match true);
    - list: same length and every element matches in order (objects inside a
      list match when all their fields do); one field, all or nothing.
    """
    want = _expected_object(expected)
    if want is None:
        return Score(0.0, f"expected is not a JSON object: {_show(expected)}")
    got = parse_json_object(output)
    if got is None:
        detail = "empty output" if not output.strip() else f"no JSON object in {_show(output)}"
        return Score(0.0, f"{UNPARSEABLE_JSON}: {detail}")
    leaves = _leaves(want)
    if not leaves:
        return Score(1.0)  # expected {}: any object is right
    scored = _selected(leaves, fields)
    if not scored:
        return Score(0.0, f"expected has none of gpo.fields: {', '.join(fields or ())}")
    wrong = [
        (path, value, _lookup(got, path))
        for path, value in scored
        if not _json_equal(value, _lookup(got, path))
    ]
    if not wrong:
        return Score(1.0)
    shown = "; ".join(
        f"{_dotted(path)} expected {_json_show(value)}, got {_json_show(answer)}"
        for path, value, answer in wrong[:_SHOWN_MISMATCHES]
    )
    if len(wrong) > _SHOWN_MISMATCHES:
        shown += f"; and {len(wrong) - _SHOWN_MISMATCHES} more"
    right = len(scored) - len(wrong)
    return Score(right / len(scored), f"fields differ: {right} of {len(scored)} right; {shown}")


# ------------------------------------------------------------ failure reasons


def reason_group(reason: str) -> str:
    """The kind of failure a reason names, for counting rows by reason.

    Reasons are written "kind: detail" ("unparseable JSON: ...", "fields
    differ: ...", "token F1 0.50: ..."), so the text before the first colon
    is the kind. A colon inside a quoted value ("expected 'a: b', got ...")
    is not a kind separator: such a reason is its own group.
    """
    head, colon, _ = reason.partition(":")
    if not colon or "'" in head or '"' in head:
        return reason.strip()
    return head.strip()


def count_reasons(reasons: Iterable[str]) -> list[tuple[str, int]]:
    """(reason kind, rows) for the non-empty reasons, most frequent first."""
    counts = Counter(reason_group(reason) for reason in reasons if reason)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


# --------------------------------------------------------------------- judge

_JUDGE_TEMPLATE = """You are grading the answer a model gave to a task.

Task input:
{inputs}

Reference answer:
{expected}

Model answer:
{output}

How well does the model answer agree with the reference answer in meaning and \
correctness? Ignore differences of wording and formatting. Rate it from 0 \
(wrong or missing) to 10 (fully correct).
Reply with only the score, in the form "Score: N"."""

_JUDGE_SCORE = re.compile(
    r"\bscore\b\s*(?:is|of)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)"
    r"(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_JUDGE_FRACTION = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?![\w.]*\d)")


def judge_prompt(output: str, example: Example) -> str:
    """The grading prompt sent to the judge model."""
    inputs = "\n".join(f"{name}: {value}" for name, value in example.inputs.items())
    return _JUDGE_TEMPLATE.format(
        inputs=inputs or "(none)", expected=example.expected.strip(), output=output.strip()
    )


def parse_judge_score(reply: str) -> float | None:
    """0..1 from a judge reply such as "Score: 8", "8/10", "7 out of 10", "9";
    None when no single clear score in range is found."""
    found = _JUDGE_SCORE.search(reply) or _JUDGE_FRACTION.search(reply)
    if found:
        value = float(found.group(1))
        scale = float(found.group(2)) if found.group(2) else 10.0
    else:
        numbers = _PLAIN_NUMBER.findall(reply)
        if len(numbers) != 1:
            return None
        value, scale = float(numbers[0]), 10.0
    if scale <= 0 or not 0 <= value <= scale:
        return None
    return value / scale


class _FunctionMetric:
    def __init__(self, name: str, score: Callable[[str, Example], Score]) -> None:
        self.name = name
        self._score = score

    async def __call__(self, output: str, example: Example) -> Score:
        return self._score(output, example)


class JudgeMetric:
    """Asks a judge model to grade the answer 0-10. The judge sees the answer
    block (the output cut where a base model starts a new field). An empty
    output scores 0 without a call. Errors from the judge call (ModelCallError,
    SpendLimitReached) propagate: a failing judge is systemic, and silently
    scoring every example 0 would mislead the optimizer."""

    def __init__(self, judge: Judge) -> None:
        self.name = "judge"
        self._judge = judge

    async def __call__(self, output: str, example: Example) -> Score:
        answer = _answer_block(output)
        if not answer:
            return Score(0.0, "empty output")
        reply = await self._judge(judge_prompt(answer, example))
        value = parse_judge_score(reply)
        if value is None:
            return Score(0.0, f"judge answer unparseable: {_show(reply)}")
        if value >= 1.0:
            return Score(1.0)
        return Score(value, f"judge gave {value * 10:g}/10: {_mismatch(example.expected, answer)}")


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
