"""Tests of gpo_engine.json_metric: metric "json" reads the first JSON object
of the answer and scores the share of the expected fields it gets right."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpo_engine.json_metric import json_fields, parse_json_object
from gpo_engine.scoring import Score, reason_group

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
