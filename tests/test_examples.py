"""Tests for gpo_engine.examples: formats, located errors, and the stable split."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpo_engine.errors import ConfigError, SourceError
from gpo_engine.example_rows import input_json_schema
from gpo_engine.examples import (
    Example,
    ExampleSet,
    assign_split,
    example_uid,
    find_examples_path,
    load_examples,
)

THIRDS = (1 / 3, 1 / 3, 1 / 3)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def problems_of(path: Path, variables: tuple[str, ...] = ("review",)) -> list[tuple[int, int, str]]:
    with pytest.raises(SourceError) as caught:
        load_examples(path, variables)
    assert all(problem.path == path for problem in caught.value.problems)
    return [(p.line, p.column, p.message) for p in caught.value.problems]


def jsonl(*rows: object) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# --- JSONL ---------------------------------------------------------------------------------


def test_jsonl_rows(tmp_path: Path) -> None:
    content = (
        '{"review": "great", "expected": "positive"}\n'
        "\n"
        '{"review": "awful", "target": "negative", "split": "test"}\n'
        '{"review": "meh", "expected": "negative", "split": "eval", "extra": 3}\n'
    )
    path = write(tmp_path, "s.examples.jsonl", content)
    result = load_examples(path, ["review"])
    assert isinstance(result, ExampleSet)
    assert result.path == path
    assert result.content_hash == hashlib.sha256(content.encode()).hexdigest()
    first, second, third = result.examples
    assert (first.inputs, first.expected, first.line) == ({"review": "great"}, "positive", 1)
    assert (second.expected, second.split, second.line) == ("negative", "test", 3)
    assert (third.split, third.line) == ("dev", 4)  # 'eval' is an alias of dev
    assert third.inputs == {"review": "meh", "extra": "3"}
    assert first.uid == example_uid({"review": "great"}, "positive")
    assert len(first.uid) == 16 and int(first.uid, 16) >= 0
    assert first.split == assign_split(first.uid, THIRDS)


def test_values_are_converted_to_text(tmp_path: Path) -> None:
    row = {"a": 1, "b": 2.5, "c": True, "d": None, "e": [1, "x"], "f": {"k": "é"}, "expected": 42}
    path = write(tmp_path, "v.jsonl", jsonl(row))
    [example] = load_examples(path, ["a"]).examples
    assert example.inputs == {
        "a": "1",
        "b": "2.5",
        "c": "True",
        "d": "",
        "e": '[1, "x"]',
        "f": '{"k": "é"}',
    }
    assert example.expected == "42"


def test_jsonl_every_bad_line_is_reported(tmp_path: Path) -> None:
    content = (
        '{"review": "ok", "expected": "positive"}\n'  # 1 fine
        "# a comment\n"  # 2
        '{"review": "x", "expected": 1\n'  # 3 broken JSON
        "[1, 2]\n"  # 4 not an object
        '{"review": "x"}\n'  # 5 no expected
        '{"expected": "x"}\n'  # 6 lacks variable
        '{"review": "x", "expected": "y", "split": "validation"}\n'  # 7 bad split
        '{"review": "x", "expected": "  "}\n'  # 8 empty expected
        '{"review": "x", "expected": "a", "target": "b"}\n'  # 9 both
    )
    path = write(tmp_path, "bad.jsonl", content)
    assert problems_of(path) == [
        (2, 1, "invalid JSON: comments are not allowed"),
        (3, 30, "invalid JSON: Expecting ',' delimiter"),  # just past the 1
        (4, 1, "row is not a JSON object"),
        (5, 1, "row has no 'expected' field"),
        (6, 1, "row lacks template variable 'review'"),
        (7, 1, "bad split 'validation'; use train, dev or test (or eval)"),
        (8, 1, "row has an empty 'expected' value"),
        (9, 1, "row has both 'expected' and 'target'; keep one"),
    ]


def test_jsonl_null_expected_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "n.jsonl", jsonl({"review": "x", "expected": None}))
    assert problems_of(path) == [(1, 1, "row has an empty 'expected' value")]


def test_jsonl_several_missing_variables(tmp_path: Path) -> None:
    path = write(tmp_path, "m.jsonl", jsonl({"expected": "x"}))
    assert problems_of(path, ("a", "b")) == [
        (1, 1, "row lacks template variable 'a'"),
        (1, 1, "row lacks template variable 'b'"),
    ]


def test_jsonl_crlf_and_unicode_line_separator(tmp_path: Path) -> None:
    content = '{"review": "a\u2028b", "expected": "x"}\r\n{"review": "c", "expected": "y"}\r\n'
    path = write(tmp_path, "u.jsonl", content)
    examples = load_examples(path, ["review"]).examples
    assert [e.line for e in examples] == [1, 2]
    assert examples[0].inputs["review"] == "a\u2028b"


def test_duplicate_rows_are_kept(tmp_path: Path) -> None:
    row = {"review": "same", "expected": "x"}
    examples = load_examples(write(tmp_path, "d.jsonl", jsonl(row, row)), ["review"]).examples
    assert len(examples) == 2
    assert examples[0].uid == examples[1].uid
    assert [e.line for e in examples] == [1, 2]


def test_split_values_are_case_insensitive(tmp_path: Path) -> None:
    rows = [
        {"review": str(i), "expected": "x", "split": s}
        for i, s in enumerate(["TRAIN", " Dev ", "Eval", "test"])
    ]
    examples = load_examples(write(tmp_path, "c.jsonl", jsonl(*rows)), ["review"]).examples
    assert [e.split for e in examples] == ["train", "dev", "dev", "test"]


def test_empty_split_value_means_unpinned(tmp_path: Path) -> None:
    path = write(tmp_path, "e.jsonl", jsonl({"review": "r", "expected": "x", "split": ""}))
    [example] = load_examples(path, ["review"]).examples
    assert example.split == assign_split(example.uid, THIRDS)
    assert "split" not in example.inputs


# --- empty sets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("e.jsonl", ""),
        ("e.jsonl", "\n\n  \n"),
        ("e.csv", ""),
        ("e.csv", "review,expected\n"),
        ("e.yaml", ""),
        ("e.yaml", "[]\n"),
        ("e.yml", "# only a comment\n"),
    ],
)
def test_empty_set(tmp_path: Path, name: str, content: str) -> None:
    assert problems_of(write(tmp_path, name, content)) == [(1, 1, "example set is empty")]


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_rows_and_line_numbers(tmp_path: Path) -> None:
    content = (
        "review,expected,split\n"  # 1
        '"multi\nline review",positive,train\n'  # 2-3
        "\n"  # 4
        "short,negative,\n"  # 5
        '"quoted, comma",positive,eval\n'  # 6
    )
    result = load_examples(write(tmp_path, "s.csv", content), ["review"])
    lines = [(e.line, e.inputs["review"], e.expected) for e in result.examples]
    assert lines == [
        (2, "multi\nline review", "positive"),
        (5, "short", "negative"),
        (6, "quoted, comma", "positive"),
    ]
    assert [e.split for e in result.examples][::2] == ["train", "dev"]


def test_csv_target_column_and_crlf(tmp_path: Path) -> None:
    content = "input,target\r\nfoo,bar\r\nbaz,qux\r\n"
    result = load_examples(write(tmp_path, "b.csv", content), ["input"])
    assert [(e.line, e.inputs, e.expected) for e in result.examples] == [
        (2, {"input": "foo"}, "bar"),
        (3, {"input": "baz"}, "qux"),
    ]


def test_csv_bad_rows(tmp_path: Path) -> None:
    content = (
        "review,expected,split\n"
        "a,pos,train\n"
        "b,neg\n"  # 3: too few cells
        "c,neg,x,extra\n"  # 4: too many
        'd,"",dev\n'  # 5: empty expected
        "e,pos,holdout\n"  # 6: bad split
    )
    assert problems_of(write(tmp_path, "bad.csv", content)) == [
        (3, 1, "row has 2 cells but the header has 3"),
        (4, 1, "row has 4 cells but the header has 3"),
        (5, 1, "row has an empty 'expected' value"),
        (6, 1, "bad split 'holdout'; use train, dev or test (or eval)"),
    ]


def test_csv_header_problems_are_reported_once(tmp_path: Path) -> None:
    content = "text,answer,text,\nx,y,z,w\nx2,y2,z2,w2\n"
    assert problems_of(write(tmp_path, "h.csv", content)) == [
        (1, 1, "the header repeats the column 'text'"),
        (1, 1, "the header has an empty column name"),
        (1, 1, "the header has no 'expected' column"),
        (1, 1, "the header lacks template variable 'review'"),
    ]


def test_csv_header_after_blank_lines(tmp_path: Path) -> None:
    content = "\n\nreview,expected\nok,yes\n"
    [example] = load_examples(write(tmp_path, "b.csv", content), ["review"]).examples
    assert example.line == 4


def test_csv_unclosed_quote(tmp_path: Path) -> None:
    content = 'review,expected\nfine,yes\n"open quote,yes\nnext,no\n'
    assert problems_of(write(tmp_path, "q.csv", content)) == [
        (3, 1, "invalid CSV: a quoted field is never closed")
    ]


def test_csv_stray_quote(tmp_path: Path) -> None:
    content = 'review,expected\n"x"y,z\n'
    assert problems_of(write(tmp_path, "q.csv", content)) == [
        (2, 1, "invalid CSV: ',' expected after '\"'")
    ]


# --- YAML ----------------------------------------------------------------------------------------


def test_yaml_rows_and_lines(tmp_path: Path) -> None:
    content = (
        "# examples\n"  # 1
        "- review: good\n"  # 2
        "  expected: positive\n"  # 3
        "- review: |\n"  # 4
        "    two\n"  # 5
        "    lines\n"  # 6
        "  expected: negative\n"  # 7
        "  split: test\n"  # 8
        "- {review: [1, 2], target: 3, split: eval}\n"  # 9
    )
    result = load_examples(write(tmp_path, "s.yaml", content), ["review"])
    assert [(e.line, e.inputs["review"], e.expected) for e in result.examples] == [
        (2, "good", "positive"),
        (4, "two\nlines\n", "negative"),
        (9, "[1, 2]", "3"),
    ]
    assert [e.split for e in result.examples][1:] == ["test", "dev"]


def test_yaml_bad_rows_point_at_fields(tmp_path: Path) -> None:
    content = (
        "- review: ok\n"  # 1
        "  expected: yes\n"  # 2
        "- just text\n"  # 3
        "- review: x\n"  # 4  no expected
        "- review: y\n"  # 5
        "  expected: z\n"  # 6
        "  split: nope\n"  # 7  bad split -> at the key's line
        "- expected: w\n"  # 8  lacks variable
    )
    assert problems_of(write(tmp_path, "b.yml", content)) == [
        (3, 3, "row is not a mapping"),
        (4, 3, "row has no 'expected' field"),
        (7, 3, "bad split 'nope'; use train, dev or test (or eval)"),
        (8, 3, "row lacks template variable 'review'"),
    ]


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    content = "- review: ok\n  expected: yes\n- review: [unclosed\n  expected: no\n"
    [(line, column, message)] = problems_of(write(tmp_path, "b.yaml", content))
    assert line in (3, 4, 5)
    assert column >= 1
    assert message.startswith("invalid YAML: ")


def test_yaml_not_a_list(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, "m.yaml", "review: x\nexpected: y\n")) == [
        (1, 1, "expected a list of examples (YAML items starting with '- ')")
    ]


def test_yaml_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.yaml", "\ufeff- review: a\n  expected: b\n")
    [example] = load_examples(path, ["review"]).examples
    assert example.line == 1 and example.inputs == {"review": "a"}


# --- file-level errors ---------------------------------------------------------------------------


def test_missing_example_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    assert problems_of(path) == [(1, 1, "file not found")]


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", "x")
    assert problems_of(path) == [
        (1, 1, "unsupported example file type '.txt'; use .jsonl, .csv, .yaml or .yml")
    ]


def test_invalid_utf8_reports_each_bad_line(tmp_path: Path) -> None:
    content = (
        b'{"review": "ok", "expected": "y"}\n{"review": "b\xffd", "expected": "y"}\nfine\n\xfe\n'
    )
    path = write(tmp_path, "u.jsonl", content)
    assert problems_of(path) == [(2, 14, "not valid UTF-8"), (4, 1, "not valid UTF-8")]


def test_invalid_utf8_in_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", b"review,expected\nok,y\nnot \xc3( ok,n\n")
    assert problems_of(path) == [(3, 5, "not valid UTF-8")]


# --- find_examples_path -------------------------------------------------------------------------


def test_find_sibling_in_suffix_order(tmp_path: Path) -> None:
    prompt = tmp_path / "sentiment.prompt"
    write(tmp_path, "sentiment.examples.yaml", "")
    assert find_examples_path(prompt, None) == tmp_path / "sentiment.examples.yaml"
    write(tmp_path, "sentiment.examples.csv", "")
    assert find_examples_path(prompt, None) == tmp_path / "sentiment.examples.csv"
    write(tmp_path, "sentiment.examples.jsonl", "")
    assert find_examples_path(prompt, None) == tmp_path / "sentiment.examples.jsonl"


def test_find_yml_sibling(tmp_path: Path) -> None:
    write(tmp_path, "a.examples.yml", "")
    assert find_examples_path(tmp_path / "a.prompt", None) == tmp_path / "a.examples.yml"


def test_find_configured_relative_to_prompt(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path / "data", "rows.csv", "")
    found = find_examples_path(tmp_path / "p.prompt", "data/rows.csv")
    assert found == tmp_path / "data" / "rows.csv"


def test_find_nothing_lists_tried_paths(tmp_path: Path) -> None:
    prompt = tmp_path / "s.prompt"
    with pytest.raises(SourceError) as caught:
        find_examples_path(prompt, None)
    [problem] = caught.value.problems
    assert (problem.path, problem.line, problem.column) == (prompt, 1, 1)
    tried = ", ".join(
        str(tmp_path / f"s.examples.{ext}") for ext in ("jsonl", "csv", "yaml", "yml")
    )
    assert problem.message == f"example set not found: tried {tried}"


def test_find_configured_missing(tmp_path: Path) -> None:
    prompt = tmp_path / "s.prompt"
    write(tmp_path, "s.examples.jsonl", "")  # a sibling does not rescue a wrong setting
    with pytest.raises(SourceError) as caught:
        find_examples_path(prompt, "other.jsonl")
    assert (
        str(caught.value)
        == f"{prompt}:1:1: example set not found: tried {tmp_path / 'other.jsonl'}"
    )


# --- splitting ---------------------------------------------------------------------------------


def test_assign_split_is_deterministic_and_balanced() -> None:
    uids = [f"{i:016x}" for i in range(3000)]
    parts = [assign_split(uid, THIRDS) for uid in uids]
    assert parts == [assign_split(uid, THIRDS) for uid in uids]
    counts = Counter(parts)
    for name in ("train", "dev", "test"):
        assert 850 < counts[name] < 1150, counts


def test_assign_split_follows_fractions() -> None:
    uids = [f"row-{i}" for i in range(4000)]
    counts = Counter(assign_split(uid, (0.8, 0.1, 0.1)) for uid in uids)
    assert 3050 < counts["train"] < 3350
    assert 300 < counts["dev"] < 500
    assert all(assign_split(uid, (1.0, 0.0, 0.0)) == "train" for uid in uids[:200])


def test_parts_partition_the_set(tmp_path: Path) -> None:
    rows = [{"review": f"r{i}", "expected": "x"} for i in range(60)]
    result = load_examples(write(tmp_path, "p.jsonl", jsonl(*rows)), ["review"])
    assert result.train == result.part("train")
    assert result.dev == result.part("dev")
    assert result.test == result.part("test")
    assert len(result.train) + len(result.dev) + len(result.test) == 60
    assert all(part for part in (result.train, result.dev, result.test))
    lines = [{e.line for e in part} for part in (result.train, result.dev, result.test)]
    assert lines[0].isdisjoint(lines[1]) and lines[1].isdisjoint(lines[2])


def test_pinned_rows_keep_their_split(tmp_path: Path) -> None:
    rows = [{"review": f"r{i}", "expected": "x", "split": "test"} for i in range(30)]
    result = load_examples(write(tmp_path, "pin.jsonl", jsonl(*rows)), ["review"])
    assert len(result.test) == 30 and not result.train and not result.dev


def test_split_fractions_are_used(tmp_path: Path) -> None:
    rows = [{"review": f"r{i}", "expected": "x"} for i in range(300)]
    result = load_examples(write(tmp_path, "f.jsonl", jsonl(*rows)), ["review"], (0.9, 0.05, 0.05))
    assert len(result.train) > 240


rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "review": st.text(max_size=20),
            "expected": st.text(min_size=1, max_size=8).filter(lambda s: s.strip() != ""),
        },
        optional={"split": st.sampled_from(["train", "dev", "test", "eval"])},
    ),
    max_size=15,
)


@settings(max_examples=60, deadline=None)
@given(before=rows_strategy, added=rows_strategy, position=st.integers(min_value=0, max_value=15))
def test_adding_rows_never_moves_other_rows(
    tmp_path_factory: pytest.TempPathFactory,
    before: list[dict[str, str]],
    added: list[dict[str, str]],
    position: int,
) -> None:
    folder = tmp_path_factory.mktemp("prop")
    if not before:
        return
    original = load_examples(write(folder, "a.jsonl", jsonl(*before)), ["review"])
    cut = min(position, len(before))
    grown_rows = before[:cut] + added + before[cut:]
    grown = load_examples(write(folder, "b.jsonl", jsonl(*grown_rows)), ["review"])
    kept = grown.examples[:cut] + grown.examples[cut + len(added) :]
    assert [(e.uid, e.split) for e in kept] == [(e.uid, e.split) for e in original.examples]
    for row, example in zip(before, original.examples, strict=True):
        if "split" in row:
            assert example.split == {"eval": "dev"}.get(row["split"], row["split"])


def test_example_is_frozen() -> None:
    example = Example({"a": "b"}, "c", "train", 1, "0" * 16)
    with pytest.raises(AttributeError):
        example.expected = "d"  # type: ignore[misc]


# --- Dotprompt rows: typed values, messages, input.default, input.schema --------------------


def test_values_keep_json_types_and_the_uid_stays_the_text_one(tmp_path: Path) -> None:
    row = {"items": ["a", "b"], "n": 3, "x": 2.5, "ok": True, "meta": {"k": [1]}, "none": None,
           "expected": "y", "split": "dev"}
    [example] = load_examples(write(tmp_path, "t.jsonl", jsonl(row)), ["items"]).examples
    assert example.values == {"items": ["a", "b"], "n": 3, "x": 2.5, "ok": True,
                              "meta": {"k": [1]}, "none": None}
    assert example.render_values is example.values
    assert example.inputs["items"] == '["a", "b"]'
    # The uid is still computed from the texts alone: caches and splits survive.
    canonical = json.dumps({"inputs": dict(example.inputs), "expected": "y"}, sort_keys=True,
                           ensure_ascii=False, separators=(",", ":"))
    assert example.uid == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_yaml_values_are_json_values_and_csv_values_are_text(tmp_path: Path) -> None:
    yaml_path = write(tmp_path, "t.yaml", "- {items: [1, 2], day: 2024-01-02, expected: x}\n")
    [from_yaml] = load_examples(yaml_path, ["items"]).examples
    assert from_yaml.values == {"items": [1, 2], "day": "2024-01-02"}
    csv_path = write(tmp_path, "t.csv", "items,n,expected\n\"[1, 2]\",3,x\n")
    [from_csv] = load_examples(csv_path, ["items"]).examples
    assert from_csv.values == {"items": "[1, 2]", "n": "3"}


def test_hand_built_example_renders_its_texts() -> None:
    example = Example({"a": "b"}, "c", "train", 1, "0" * 16)
    assert example.values == {} and example.messages == ()
    assert example.render_values == {"a": "b"}


def test_messages_are_parsed_normalized_and_kept_out_of_the_inputs(tmp_path: Path) -> None:
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"text": "What is this?"},
                                     {"media": {"url": "https://x/cat.png",
                                                "contentType": "image/png"}}]},
        {"role": "model", "content": [{"text": "A cat."}]},
    ]
    rows = [{"q": "And now?", "messages": history, "expected": "a dog"},
            {"q": "plain", "expected": "z"}]
    with_history, plain = load_examples(write(tmp_path, "m.jsonl", jsonl(*rows)), ["q"]).examples
    assert with_history.messages == (
        {"role": "system", "content": [{"text": "Be brief."}]},
        {"role": "user", "content": [{"text": "What is this?"},
                                     {"media": {"url": "https://x/cat.png",
                                                "contentType": "image/png"}}]},
        {"role": "model", "content": [{"text": "A cat."}]},
    )
    assert with_history.inputs == {"q": "And now?"} and with_history.values == {"q": "And now?"}
    # The history is part of the row's identity, but only for rows that have one.
    assert with_history.uid == example_uid({"q": "And now?"}, "a dog", with_history.messages)
    assert with_history.uid != example_uid({"q": "And now?"}, "a dog")
    assert plain.messages == () and plain.uid == example_uid({"q": "plain"}, "z")


def test_messages_in_a_csv_cell_are_json(tmp_path: Path) -> None:
    cell = json.dumps([{"role": "user", "content": "hi"}]).replace('"', '""')
    content = f'q,messages,expected\nx,"{cell}",y\nz,,w\n'
    first, second = load_examples(write(tmp_path, "m.csv", content), ["q"]).examples
    assert first.messages == ({"role": "user", "content": [{"text": "hi"}]},)
    assert second.messages == ()
    assert "messages" not in first.inputs


def test_malformed_messages_are_located_in_jsonl(tmp_path: Path) -> None:
    rows = [
        {"q": "a", "expected": "x", "messages": [{"role": "user", "content": "ok"}]},  # 1 fine
        {"q": "b", "expected": "x", "messages": "not json"},  # 2
        {"q": "c", "expected": "x", "messages": {"role": "user"}},  # 3
        {"q": "d", "expected": "x", "messages": [{"role": "assistant", "content": "hi"}]},  # 4
        {"q": "e", "expected": "x", "messages": [{"role": "user"}]},  # 5
        {"q": "f", "expected": "x", "messages": [{"role": "user", "content": [{"txt": "a"}]}]},
        {"q": "g", "expected": "x", "messages": [{"role": "user", "content": [{"media": {}}]}]},
        {"q": "h", "expected": "x", "messages": [{"role": "user", "content": 3}]},  # 8
        {"q": "i", "expected": "x", "messages": [{"role": "user", "content": "a", "x": 1}]},
    ]
    assert problems_of(write(tmp_path, "m.jsonl", jsonl(*rows)), ("q",)) == [
        (2, 1, "bad 'messages': not valid JSON (Expecting value, column 1)"),
        (3, 1, "bad 'messages': must be a list of messages with role and content, "
               "got a mapping"),
        (4, 1, "bad 'messages': message 1 has role 'assistant'; use system, user, model or "
               "tool ('model' is the assistant)"),
        (5, 1, "bad 'messages': message 1 has no content"),
        (6, 1, "bad 'messages': message 1, part 1 needs exactly one of text or media, got txt"),
        (7, 1, "bad 'messages': message 1, part 1: media needs a url text"),
        (8, 1, "bad 'messages': message 1: content must be a text or a list of parts, "
               "got a number"),
        (9, 1, "bad 'messages': message 1 has unknown key 'x'; use role and content"),
    ]


def test_malformed_messages_are_located_at_the_yaml_field(tmp_path: Path) -> None:
    content = (
        "- q: a\n"  # 1
        "  expected: x\n"  # 2
        "  messages:\n"  # 3
        "    - role: user\n"  # 4
        "      content: hi\n"  # 5
        "- q: b\n"  # 6
        "  expected: x\n"  # 7
        "  messages:\n"  # 8
        "    - role: human\n"  # 9
        "      content: hi\n"  # 10
    )
    assert problems_of(write(tmp_path, "m.yaml", content), ("q",)) == [
        (8, 3, "bad 'messages': message 1 has role 'human'; use system, user, model or tool "
               "('model' is the assistant)"),
    ]


def test_defaults_fill_variables_a_row_leaves_out(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl({"q": "a", "expected": "x"}))
    [example] = load_examples(path, ["q", "tone"], defaults={"tone": "formal"}).examples
    assert example.inputs == {"q": "a"}  # the renderer merges the default, as Dotprompt does
    assert problems_of(path, ("q", "tone")) == [(1, 1, "row lacks template variable 'tone'")]
    csv_path = write(tmp_path, "d.csv", "q,expected\na,x\n")
    assert len(load_examples(csv_path, ["q", "tone"], defaults={"tone": "f"}).examples) == 1


PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "nick": {"type": "string"},
    },
    "required": ["name", "age"],
}


def schema_problems(path: Path, **options: object) -> list[tuple[int, int, str]]:
    with pytest.raises(SourceError) as caught:
        load_examples(path, ["name", "nick"], input_schema=PERSON_SCHEMA, **options)  # type: ignore[arg-type]
    return [(p.line, p.column, p.message) for p in caught.value.problems]


def test_schema_violations_are_located_in_jsonl(tmp_path: Path) -> None:
    rows = [
        {"name": "Ada", "age": 36, "tags": ["math"], "expected": "x"},  # 1 fine
        {"name": "Bob", "age": "old", "expected": "x"},  # 2
        {"age": 3, "expected": "x"},  # 3
        {"name": "Cy", "age": 5, "tags": ["a", 7], "expected": "x"},  # 4
    ]
    assert schema_problems(write(tmp_path, "s.jsonl", jsonl(*rows))) == [
        (2, 1, "row does not match input.schema: age: 'old' is not of type 'integer'"),
        (3, 1, "row does not match input.schema: 'name' is a required property"),
        (4, 1, "row does not match input.schema: tags[1]: 7 is not of type 'string'"),
    ]


def test_schema_decides_which_fields_a_row_needs(tmp_path: Path) -> None:
    # 'nick' is a template variable the schema does not require: no error.
    path = write(tmp_path, "s.jsonl", jsonl({"name": "Ada", "age": 36, "expected": "x"}))
    [example] = load_examples(path, ["name", "nick"], input_schema=PERSON_SCHEMA).examples
    assert example.values == {"name": "Ada", "age": 36}
    # A default satisfies the schema: rows are checked merged over the defaults.
    path = write(tmp_path, "d.jsonl", jsonl({"name": "Ada", "expected": "x"}))
    assert len(load_examples(path, ["name"], input_schema=PERSON_SCHEMA,
                             defaults={"age": 1}).examples) == 1
    assert schema_problems(path, defaults={"age": "one"}) == [
        (1, 1, "row does not match input.schema: age: 'one' is not of type 'integer'"),
    ]


def test_schema_violations_are_located_in_csv_and_cells_get_the_schema_type(
    tmp_path: Path,
) -> None:
    content = (
        "name,age,tags,expected\n"  # 1
        'Ada,36,"[""math""]",x\n'  # 2 fine: typed by the schema
        "Bob,old,[],x\n"  # 3
    )
    with pytest.raises(SourceError) as caught:
        load_examples(write(tmp_path, "s.csv", content), ["name"], input_schema=PERSON_SCHEMA)
    assert [(p.line, p.column, p.message) for p in caught.value.problems] == [
        (3, 1, "row does not match input.schema: age: 'old' is not of type 'integer'"),
    ]
    fine = write(tmp_path, "f.csv", "name,age,tags,expected\n" 'Ada,36,"[""math""]",x\n')
    [example] = load_examples(fine, ["name"], input_schema=PERSON_SCHEMA).examples
    assert example.values == {"name": "Ada", "age": 36, "tags": ["math"]}
    assert example.inputs == {"name": "Ada", "age": "36", "tags": '["math"]'}


def test_csv_header_must_have_the_fields_the_schema_requires(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "name,expected\nAda,x\nBob,y\n")
    with pytest.raises(SourceError) as caught:
        load_examples(path, ["name"], input_schema=PERSON_SCHEMA)
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (1, "the header lacks input.schema's field 'age'"),
    ]
    assert len(load_examples(path, ["name"], input_schema=PERSON_SCHEMA,
                             defaults={"age": 30}).examples) == 2


def test_schema_violations_are_located_at_the_yaml_field(tmp_path: Path) -> None:
    content = (
        "- name: Ada\n"  # 1
        "  age: 36\n"  # 2
        "  expected: x\n"  # 3
        "- name: Bob\n"  # 4
        "  expected: x\n"  # 5
        "  age: [3]\n"  # 6
        "- age: 4\n"  # 7
        "  expected: x\n"  # 8
    )
    assert schema_problems(write(tmp_path, "s.yaml", content)) == [
        (6, 3, "row does not match input.schema: age: [3] is not of type 'integer'"),
        (7, 3, "row does not match input.schema: 'name' is a required property"),
    ]


def test_input_json_schema_converts_picoschema_and_passes_json_schema() -> None:
    converted = input_json_schema({"name": "string", "age?": "integer, in years",
                                   "tags(array)": "string"})
    assert converted == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": ["integer", "null"], "description": "in years"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "tags"],
        "additionalProperties": False,
    }
    assert input_json_schema(PERSON_SCHEMA) == PERSON_SCHEMA
    assert input_json_schema(None) is None


def test_input_json_schema_errors() -> None:
    with pytest.raises(ConfigError, match=r"input\.schema: Picoschema: unsupported scalar type"):
        input_json_schema({"who": "Person"})  # a named schema needs a resolver
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        input_json_schema({"type": "object", "properties": {"a": {"type": "integr"}}})


def test_picoschema_rows_are_checked(tmp_path: Path) -> None:
    schema = input_json_schema({"name": "string", "n?": "integer"})
    rows = [{"name": "a", "expected": "x"}, {"name": "b", "n": "2", "extra": 1, "expected": "x"}]
    with pytest.raises(SourceError) as caught:
        load_examples(write(tmp_path, "p.jsonl", jsonl(*rows)), ["name"], input_schema=schema)
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (2, "row does not match input.schema: Additional properties are not allowed "
            "('extra' was unexpected)"),
        (2, "row does not match input.schema: n: '2' is not of type 'integer', 'null'"),
    ]


def test_invalid_schema_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", jsonl({"a": 1, "expected": "x"}))
    with pytest.raises(ConfigError, match=r"input\.schema is not a valid JSON Schema"):
        load_examples(path, ["a"], input_schema={"type": 5})
