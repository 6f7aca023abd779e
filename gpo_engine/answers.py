"""Answer extraction: the part of a model's output that is its answer.

Follows the GPO paper's BBH evaluation (txy77/GPO, src/evaluation): a base
model given a few-shot style prompt keeps writing after its answer, so only
the start of the output counts; "the answer is" / "Answer:" markers point at
the answer; multiple choice reads the first bracketed letter; yes/no style
answers are read by polarity across the yes/no, true/false and valid/invalid
families; numbers are read as numbers.

Where the answer ends (`answer_block`): the output is stripped, a leading
answer label ("Answer:", "A:", "Output:", ...) is removed, and the text is cut
at the first later line that starts a new field ("Question: ...",
"Review: ...", "Q: ...", "Options:") or is a separator (`---`, `###`,
a code fence). What is left is the answer block; the first line of it is the
answer line.

The metrics (gpo_engine.metrics) compare what these functions find.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata

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


def comparable_pair(answer: str, expected: str) -> tuple[str, str]:
    norm_expected = normalize(expected)
    if norm_expected or not expected.strip():
        return normalize(answer), norm_expected
    return _loose(answer), _loose(expected)


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


def answer_block(output: str) -> str:
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


def text_answer(output: str, lines: int = 1) -> str:
    block = answer_block(output)
    region = _indicated(block)
    if region is None or not region.strip():
        region = block
    first = _first_lines(region, lines)
    if lines == 1:
        return _clean_line(first)
    return first.strip()


# ------------------------------------------------------------------ yes / no

BOOL_POLARITY = {
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


def extract_yesno(output: str) -> str:
    block = answer_block(output)
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


def extract_choice(output: str) -> str:
    block = answer_block(output)
    region = _indicated(block)
    letter = _letter_in(region) if region else ""
    if not letter:
        letter = _letter_in(block)
    return f"({letter})" if letter else text_answer(output)


def option_texts(text: str) -> dict[str, str]:
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
NUMBER = re.compile(
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


def format_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def numbers_in(text: str) -> list[float]:
    """Numbers in order; number words count only where no digits are written,
    since "one" is more often a pronoun ("the 3rd one") than an answer."""
    tokens = [m.group(0) for m in NUMBER.finditer(text)]
    digits = [t for t in tokens if any(ch.isdigit() for ch in t)]
    found = (_to_float(t) for t in (digits or tokens))
    return [v for v in found if v is not None]


def extract_number(output: str) -> float | None:
    block = answer_block(output)
    region = _indicated(block)
    if region:
        # "The answer is 8 because 3 + 5": the first number after the marker.
        after = numbers_in(_first_lines(region))
        if after:
            return after[0]
    # Otherwise the last number of the first paragraph that has one: "42\n\nI
    # have 3 more" is 42, "3 apples and 4 pears, so 7" is 7.
    for paragraph in _BLANK_LINE.split(block):
        values = numbers_in(paragraph.split("=")[-1] if "=" in paragraph else paragraph)
        if not values:
            values = numbers_in(paragraph)
        if values:
            return values[-1]
    return None


def expected_number(expected: str) -> float | None:
    values = numbers_in(expected)
    return values[0] if len(values) == 1 else None


def same_number(a: float, b: float) -> bool:
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
        return text_answer(output)
    if kind == "yesno":
        return extract_yesno(output)
    if kind == "choice":
        return extract_choice(output)
    if kind == "number":
        value = extract_number(output)
        return "" if value is None else format_number(value)
    raise ValueError(f"unknown answer kind {kind!r}; use choice, yesno, number or text")
