"""Minimal body edits: frontmatter untouched, UTF-16 ranges, applying them gives the suggestion."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from lsprotocol.types import TextEdit

from gpo_engine.promptfile import parse_prompt
from gpo_server import lsp_edits
from gpo_server.lsp_edits import (
    body_edits,
    suggestion_edits,
    suggestion_workspace_edit,
    text_changes,
)
from gpo_server.text_positions import LineIndex

FRONT = "---\nmodel: openai/x  # the task model\ngpo.steps: 3\n---\n"


def apply(text: str, edits: list[TextEdit]) -> str:
    """Apply LSP edits the way an editor does: all ranges refer to the original text."""
    index = LineIndex(text)
    spans = sorted(
        ((index.offset(e.range.start), index.offset(e.range.end), e.new_text) for e in edits),
        reverse=True,
    )
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


def apply_changes(text: str, changes: list[tuple[int, int, str]]) -> str:
    for start, end, new in reversed(changes):
        text = text[:start] + new + text[end:]
    return text


def test_one_changed_word_is_one_small_edit() -> None:
    old = "Classify the sentiment of {{review}}. Answer positive or negative.\n"
    new = "Classify the mood of {{review}}. Answer positive or negative.\n"
    assert text_changes(old, new) == [(13, 22, "mood")]


def test_word_edits_never_split_a_word() -> None:
    changes = text_changes("Answer positively.", "Answer positive.")
    assert changes == [(7, 17, "positive")]


def test_identical_text_needs_no_edit() -> None:
    assert text_changes("same", "same") == []


def test_separate_changes_stay_separate() -> None:
    old = "one two three four five six seven"
    new = "uno two three four five six siete"
    changes = text_changes(old, new)
    assert changes == [(0, 3, "uno"), (28, 33, "siete")]


def test_a_huge_middle_falls_back_to_one_replacement(monkeypatch) -> None:
    monkeypatch.setattr(lsp_edits, "MAX_DIFF_TOKENS", 4)
    changes = text_changes("keep a b c d keep", "keep w x y z keep")
    assert changes == [(5, 12, "w x y z")]


@given(st.text(alphabet="ab .\n😀é", max_size=30), st.text(alphabet="ab .\n😀é", max_size=30))
def test_changes_always_rebuild_the_new_text(old: str, new: str) -> None:
    assert apply_changes(old, text_changes(old, new)) == new


def test_suggestion_edits_leave_frontmatter_byte_identical() -> None:
    source = FRONT + "Classify the sentiment of {{review}}.\nAnswer positive or negative.\n"
    prompt = parse_prompt(source, Path("s.prompt"))
    suggestion = "Decide whether {{review}} is positive or negative.\nAnswer with one word."
    edits = suggestion_edits(prompt, suggestion)
    result = apply(source, edits)
    assert result.startswith(FRONT)
    # with_body keeps the file's final line break.
    assert result[len(FRONT) :] == suggestion + "\n"
    body_line = FRONT.count("\n")
    assert all(e.range.start.line >= body_line for e in edits)


def test_suggestion_edits_keep_crlf_line_endings() -> None:
    front = FRONT.replace("\n", "\r\n")
    source = front + "Say hi to {{name}}.\r\nBe brief.\r\n"
    prompt = parse_prompt(source, Path("s.prompt"))
    result = apply(source, suggestion_edits(prompt, "Greet {{name}}.\nBe brief and kind."))
    assert result == front + "Greet {{name}}.\r\nBe brief and kind.\r\n"


def test_edit_ranges_count_utf16_units_after_an_emoji() -> None:
    source = FRONT + "😀 Greet {{name}} warmly.\n"
    prompt = parse_prompt(source, Path("s.prompt"))
    edits = suggestion_edits(prompt, "😀 Greet {{name}} kindly.")
    assert len(edits) == 1
    (edit,) = edits
    line = FRONT.count("\n")
    # "😀 Greet {{name}} " is 2 + 16 UTF-16 units.
    assert (edit.range.start.line, edit.range.start.character) == (line, 18)
    assert (edit.range.end.line, edit.range.end.character) == (line, 24)
    assert edit.new_text == "kindly"
    assert apply(source, edits) == FRONT + "😀 Greet {{name}} kindly.\n"


def test_body_edits_do_not_touch_text_before_the_body_even_if_it_repeats() -> None:
    document = "same words\nsame words\n"
    edits = body_edits(document, 11, "same text\n")
    assert apply(document, edits) == "same words\nsame text\n"
    assert all(e.range.start.line == 1 for e in edits)


def test_workspace_edit_uses_changes_for_the_uri() -> None:
    source = FRONT + "Say {{x}}.\n"
    prompt = parse_prompt(source, Path("s.prompt"))
    edit = suggestion_workspace_edit("file:///w/s.prompt", prompt, "Repeat {{x}}.")
    assert edit.changes is not None
    assert list(edit.changes) == ["file:///w/s.prompt"]
    assert apply(source, edit.changes["file:///w/s.prompt"]) == FRONT + "Repeat {{x}}.\n"
