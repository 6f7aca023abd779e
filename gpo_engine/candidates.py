"""Reading the new prompt out of an optimizer answer, and checking its variables.

Everything the model returns is untrusted text: markers left out or
misspelled, fences, quotes, labels, a base model running on into the
meta-prompt's structure. parse_answer finds the prompt or says why there is
none; check_variables and invented_names compare the template variables a
candidate reads with the ones it must keep.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gpo_engine.meta_prompts import END, START
from gpo_engine.template import template_names, template_variables, without_tags

_START_MARK = re.compile(r"<\s*/?\s*start\s*>", re.IGNORECASE)
_END_MARK = re.compile(r"<\s*/?\s*end\s*>", re.IGNORECASE)
_FENCE = re.compile(r"^```[\w+-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)
_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"))
_LABEL = re.compile(
    r"^(?:new |improved |revised |updated |final )?(?:prompt|instruction)s?\s*"
    r"(?:\(.*?\))?\s*:\s*",
    re.IGNORECASE,
)
# Lines that belong to the meta-prompt's own structure: a base model that
# forgot <END> often goes on with the next log entry or an example.
_STRUCTURE_LINE = re.compile(
    r"^\s*(?:version \d+\b|score\s*:|input\s*:|expected answer\s*:|answer with the current"
    r"|model answer\s*:|verdict\s*:|task examples\s*:|prompt revision log|current prompt\s*:"
    r"|rejected edit|accepted edit)",
    re.IGNORECASE | re.MULTILINE,
)
# Phrases of the meta-prompts; a candidate that contains one (and the current
# prompt does not) is echoing the instructions instead of being a prompt.
_META_PHRASES = (
    "change at most",
    "words of the current prompt",
    "between <start> and <end>",
    "higher is better",
    "the current prompt is",
    "earlier versions of the prompt",
    "prompt revision log",
    "template tags exactly as written",
    "write the new prompt",
    "improved version of the current prompt",
    "words changed)",  # the budget note of the base-model meta-prompt's last line
)


_SCORE_NOTE = re.compile(r"\s*\(score [^)]*\)", re.IGNORECASE)


def without_score_notes(text: str) -> str:
    """`text` without "(score 40)" notes: base models copy them from the listed
    instructions into their own."""
    return _SCORE_NOTE.sub("", text).strip()


@dataclass(frozen=True)
class Parsed:
    text: str | None
    reason: str  # "" when text is set, else "empty" | "unparseable"
    detail: str


def parse_candidate(text: str, prefilled: bool, current: str | None = None) -> str | None:
    """The new prompt in an optimizer answer, or None when there is no usable one.

    `prefilled`: the request ended with "<START>", so the answer starts inside
    the prompt. `current` (optional) enables the checks relative to the
    current prompt: length at most 4x, no meta-prompt phrases it lacks.
    """
    return parse_answer(text, prefilled, current).text


def parse_answer(raw: str, prefilled: bool, current: str | None) -> Parsed:
    """The new prompt in an optimizer answer, or why there is none (see parse_candidate)."""
    text = _END_MARK.sub(END, _START_MARK.sub(START, raw))
    if prefilled:
        text = START + text
    if START in text:
        # Every <START> opens a possible prompt; the first usable one wins, so
        # an answer that quotes the markers before using them still parses.
        pieces = [
            segment.split(END, 1)[0] if END in segment else _cut_run_on(segment, current)
            for segment in text.split(START)[1:]
        ]
    elif END in text:
        # The opening marker was left out: the prompt runs from the start.
        pieces = [text.split(END, 1)[0]]
    else:
        fenced = _FENCE.match(text.strip())
        if fenced is None:
            if not text.strip():
                return Parsed(None, "empty", "the model returned no text")
            return Parsed(None, "unparseable", f"no {START}/{END} markers in the answer")
        pieces = [fenced.group(1)]
    first: Parsed | None = None
    for piece in pieces:
        parsed = _clean(piece, current)
        if parsed.text is not None:
            return parsed
        first = first or parsed
    assert first is not None
    return first


def _cut_run_on(text: str, current: str | None) -> str:
    """An unterminated prompt (no <END>: a stop sequence, max_tokens, or a
    base model running on) ends where the meta-prompt's structure resumes."""
    own = _own_labels(current)
    for match in _STRUCTURE_LINE.finditer(text):
        if match.group(0).strip().lower() not in own:
            text = text[: match.start()]
            break
    if current is not None and "\n\n" not in current.strip():
        # A one-paragraph prompt's rewrite ends at the first blank line.
        text = text.strip().split("\n\n", 1)[0]
    return text


def _own_labels(current: str | None) -> set[str]:
    """Structure labels the current prompt itself uses (a prompt may well say "Input:")."""
    if not current:
        return set()
    return {m.group(0).strip().lower() for m in _STRUCTURE_LINE.finditer(current)}


def _unwrap(text: str) -> str:
    for _ in range(3):
        before = text
        text = text.strip()
        fenced = _FENCE.match(text)
        if fenced is not None:
            text = fenced.group(1).strip()
        for left, right in _QUOTES:
            if len(text) >= 2 and text.startswith(left) and text.endswith(right):
                inner = text[len(left) : len(text) - len(right)]
                # Only a wrapping pair: '"a" or "b"' is quoted text, not wrapped.
                if left not in inner and right not in inner:
                    text = inner.strip()
        if text == before:
            break
    return text


def _clean(piece: str, current: str | None) -> Parsed:
    text = _unwrap(piece)
    label = _LABEL.match(text)
    if label is not None and not (current and _LABEL.match(current.strip())):
        text = _unwrap(text[label.end() :])
    if not text:
        return Parsed(None, "empty", "nothing between the markers")
    problem = _junk(text, current)
    if problem:
        return Parsed(None, "unparseable", problem)
    return Parsed(text, "", "")


def _junk(text: str, current: str | None) -> str:
    """Why `text` is not a plausible prompt, or '' when it is."""
    if START in text or END in text:
        return "contains another <START>/<END> marker"
    if len(without_tags(text).split()) < 2:
        return "too short to be a prompt"
    bare = without_tags(text)
    visible = [c for c in bare if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if letters < 2:
        return "no words besides template tags"
    if letters < 0.5 * len(visible):
        return "mostly non-letters"
    lowered = text.lower()
    current_lowered = (current or "").lower()
    for phrase in _META_PHRASES:
        if phrase in lowered and phrase not in current_lowered:
            return f"repeats the meta-prompt ({phrase!r})"
    opening = _STRUCTURE_LINE.match(text)
    if opening is not None and opening.group(0).strip().lower() not in _own_labels(current):
        return "continues the meta-prompt's structure instead of writing a prompt"
    words = text.split()
    if len(words) >= 20 and len(set(words)) < 0.25 * len(words):
        return "repeats itself"
    if current is not None and len(text) > 4 * max(len(current.strip()), 50):
        return f"{len(text)} characters, over 4x the current prompt"
    return ""


# ---------------------------------------------------------------- variables

# Both checks read the Handlebars parse tree (gpo_engine.template), so
# comments, helpers, block parameters and @root mean what Handlebars makes of
# them. Parsing costs about 0.7 ms a template against 0.06 ms for a regex scan
# (a 3-line template with an #each block), beside 2.5 ms for the
# template_error screen every candidate gets anyway and seconds for the call.

def check_variables(candidate: str, variables: Sequence[str]) -> list[str]:
    """Template variables (in the given order) that the candidate no longer uses."""
    used = template_variables(candidate)
    return [name for name in variables if name not in used]


def invented_names(candidate: str, current: str) -> list[str]:
    """Names the candidate's tags read that the current prompt's never do, sorted."""
    # A tag name the current prompt never used would render as an empty
    # string: usually a variable the optimizer renamed or made up.
    return sorted(set(template_names(candidate)) - set(template_names(current)))
