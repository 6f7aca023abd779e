"""Diagnostics at exact ranges for prompt and example files, and the suggestion note."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol.types import DiagnosticSeverity, Position, Range

from gpo_engine.errors import Problem, SourceError
from gpo_engine.examples import load_examples
from gpo_engine.promptfile import parse_prompt
from gpo_server.lsp_diagnostics import (
    diagnostics_by_file,
    failure_diagnostic,
    problem_range,
    suggestion_diagnostic,
    suggestion_message,
)
from gpo_server.prompt_state import parse_state
from gpo_server.text_positions import LineIndex
from tests.lsp_samples import INITIAL, state_dict


def problems_of(source: str, path: Path = Path("/w/a.prompt")) -> list[Problem]:
    with pytest.raises(SourceError) as info:
        parse_prompt(source, path)
    return info.value.problems


def span(r: Range) -> tuple[int, int, int, int]:
    return (r.start.line, r.start.character, r.end.line, r.end.character)


def one_file(source: str, path: Path = Path("/w/a.prompt")) -> list:
    grouped = diagnostics_by_file(problems_of(source, path), lambda p: source)
    return grouped[path]


def test_unknown_setting_underlines_the_key() -> None:
    (diag,) = one_file("---\nmodel: x\ngpo.stepz: 3\n---\nHi {{name}}\n")
    assert span(diag.range) == (2, 0, 2, 9)
    assert diag.severity == DiagnosticSeverity.Error
    assert diag.source == "gpo"
    assert "did you mean gpo.steps" in diag.message


def test_template_error_underlines_the_tag_in_utf16_after_an_emoji() -> None:
    (diag,) = one_file("---\nmodel: x\n---\n😀 Hi {{#if name}}x\n")
    # "😀 Hi " is 6 UTF-16 units; the tag {{#if name}} is 12 characters.
    assert span(diag.range) == (3, 6, 3, 18)
    assert diag.message == "template error: unclosed block"


def test_broken_yaml_points_at_the_end_of_its_line() -> None:
    (diag,) = one_file("---\nmodel: [x\n---\nHi\n")
    assert span(diag.range) == (1, 9, 1, 9)
    assert diag.message.startswith("frontmatter:")


def test_empty_body_is_a_point_on_the_empty_line() -> None:
    (diag,) = one_file("---\nmodel: x\n---\n\n")
    assert span(diag.range) == (3, 0, 3, 0)


def test_example_file_gets_its_own_diagnostics(tmp_path: Path) -> None:
    examples = tmp_path / "a.examples.jsonl"
    examples.write_bytes(
        b'{"name": "a", "expected": "b"}\n{"name": 1\n{"nam": "a", "expected": "b"}\n'
    )
    prompt_path = tmp_path / "a.prompt"
    with pytest.raises(SourceError) as info:
        load_examples(examples, ["name"])
    grouped = diagnostics_by_file(
        info.value.problems,
        lambda p: p.read_bytes().decode("utf-8", errors="replace"),
        paths=[prompt_path, examples],
    )
    assert grouped[prompt_path] == []  # listed, so old diagnostics get cleared
    first, second = grouped[examples]
    assert span(first.range) == (1, 10, 1, 10)  # end of '{"name": 1'
    assert first.message.startswith("invalid JSON")
    assert span(second.range) == (2, 0, 2, 1)  # the row's opening brace
    assert "lacks template variable 'name'" in second.message


def test_invalid_utf8_example_line_is_located(tmp_path: Path) -> None:
    examples = tmp_path / "a.examples.jsonl"
    examples.write_bytes(b'{"name": "a", "expected": "b"}\n{"name": "\xff\xfe", "expected": "b"}\n')
    with pytest.raises(SourceError) as info:
        load_examples(examples, ["name"])
    grouped = diagnostics_by_file(
        info.value.problems, lambda p: p.read_bytes().decode("utf-8", errors="replace")
    )
    (diag,) = grouped[examples]
    assert diag.message == "not valid UTF-8"
    assert (diag.range.start.line, diag.range.start.character) == (1, 10)


def test_unreadable_file_gives_a_point_range() -> None:
    problem = Problem(Path("/w/gone.jsonl"), 3, 5, "file not found")
    grouped = diagnostics_by_file([problem], lambda p: None)
    (diag,) = grouped[Path("/w/gone.jsonl")]
    assert span(diag.range) == (2, 4, 2, 4)


def test_warning_severity_and_file_read_once() -> None:
    reads: list[Path] = []
    problems = [
        Problem(Path("/w/a.csv"), 1, 1, "w", severity="warning"),
        Problem(Path("/w/a.csv"), 2, 1, "e"),
    ]

    def read(path: Path) -> str:
        reads.append(path)
        return "name,expected\nx,y\n"

    diags = diagnostics_by_file(problems, read)[Path("/w/a.csv")]
    assert [d.severity for d in diags] == [DiagnosticSeverity.Warning, DiagnosticSeverity.Error]
    assert span(diags[0].range) == (0, 0, 0, 4)  # "name" stops at the comma
    assert reads == [Path("/w/a.csv")]


@pytest.mark.parametrize(
    ("text", "line", "column", "expected"),
    [
        ("Say {{{raw}}} now", 1, 5, (0, 4, 0, 13)),  # triple-stash tag
        ("  indented words  ", 1, 1, (0, 0, 0, 16)),  # on whitespace: rest of the content
        ("a: [1, 2]", 1, 4, (0, 3, 0, 4)),  # lone punctuation
        ("short", 9, 1, (0, 0, 0, 5)),  # line past the end clamps to the last line
        ("{{#if x}\nmore", 1, 1, (0, 0, 0, 8)),  # tag never closed on its line: rest of line
    ],
)
def test_range_rules(text: str, line: int, column: int, expected: tuple) -> None:
    assert span(problem_range(LineIndex(text), line, column)) == expected


def test_suggestion_diagnostic_sits_on_the_first_body_line() -> None:
    front = "---\nmodel: x\n---\n"
    document = front + "\n  " + INITIAL + "Second line.\n"
    suggestion = parse_state(state_dict()).suggestion
    assert suggestion is not None
    diag = suggestion_diagnostic(document, len(front), suggestion)
    assert diag.severity == DiagnosticSeverity.Information
    assert diag.message == "GPO: +7.5 pts on dev, 12 words"
    assert diag.range.start == Position(line=4, character=2)
    assert diag.range.end == Position(line=4, character=2 + len(INITIAL.rstrip()))


def test_suggestion_message_singular_word() -> None:
    data = state_dict()
    data["suggestion"].update(gain=10.0, distance=1)
    suggestion = parse_state(data).suggestion
    assert suggestion is not None
    assert suggestion_message(suggestion) == "GPO: +10 pts on dev, 1 word"


def test_a_failed_run_is_a_warning_on_the_first_body_line_saying_why() -> None:
    front = "---\nmodel: openai/gpt-4o-mini\n---\n"
    document = front + "\n  Classify {{review}}.  \nAnswer:\n"
    job = parse_state(state_dict(job={
        "id": "j", "status": "failed", "step": 0, "total_steps": 12, "error_kind": "auth",
        "message": "openai/gpt-4o-mini: auth: Missing credentials; set OPENAI_API_KEY"})).job
    assert job is not None
    diag = failure_diagnostic(document, len(front), job)
    assert span(diag.range) == (4, 2, 4, 22) and diag.severity == DiagnosticSeverity.Warning
    assert diag.message.startswith("GPO: optimizing failed: openai/gpt-4o-mini: auth: Missing "
                                   "credentials; set OPENAI_API_KEY (the daemon reads API keys")
    other = parse_state(state_dict(job={"id": "j", "status": "failed", "step": 0,
                                        "total_steps": 12, "message": "openai/x: other: 400"}))
    assert other.job is not None
    assert failure_diagnostic(document, len(front), other.job).message == \
        "GPO: optimizing failed: openai/x: other: 400"
