"""Metric "json", for prompts with `output: {format: json}`.

It reads the first JSON object of the answer (parse_json_object) and scores
the share of the expected object's fields the answer gets right
(json_fields).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from gpo_engine.answers import comparable_pair, same_number
from gpo_engine.scoring import Score, quoted

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
        return same_number(float(want_number), float(got_number))
    if not isinstance(want, str) or not isinstance(got, str):
        return False
    if _NUMERIC_TEXT.fullmatch(want) and _NUMERIC_TEXT.fullmatch(got):
        # normalize() deletes the '.', which would make "3.5" equal "35"; and
        # strings that hold digits ("02139") are often codes, not quantities.
        return want.strip() == got.strip()
    left, right = comparable_pair(got, want)
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
        return Score(0.0, f"expected is not a JSON object: {quoted(expected)}")
    got = parse_json_object(output)
    if got is None:
        detail = "empty output" if not output.strip() else f"no JSON object in {quoted(output)}"
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
