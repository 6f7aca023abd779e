"""Offsets <-> LSP positions: UTF-16 columns and LSP's three line breaks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from lsprotocol.types import Position

from gpo_server.text_positions import LineIndex, utf16_length


def test_utf16_length_counts_astral_characters_twice() -> None:
    assert utf16_length("abc") == 3
    assert utf16_length("é") == 1
    assert utf16_length("😀") == 2
    assert utf16_length("a😀b") == 4


def test_position_after_an_emoji_is_in_utf16_units() -> None:
    text = "---\nx: 1\n---\n😀 Say {{name}}\n"
    index = LineIndex(text)
    offset = text.index("Say")
    assert index.position(offset) == Position(line=3, character=3)
    assert index.offset(Position(line=3, character=3)) == offset


def test_crlf_and_lone_cr_break_lines_but_form_feed_does_not() -> None:
    text = "a\r\nb\rc\x0cd\ne"
    index = LineIndex(text)
    assert index.line_count == 4
    assert index.position(text.index("b")) == Position(line=1, character=0)
    assert index.position(text.index("d")) == Position(line=2, character=2)
    assert index.position(text.index("e")) == Position(line=3, character=0)
    # An offset between \r and \n is the end of the first line.
    assert index.position(2) == Position(line=0, character=1)


def test_positions_past_the_end_clamp() -> None:
    index = LineIndex("ab\ncd")
    assert index.offset(Position(line=0, character=99)) == 2
    assert index.offset(Position(line=9, character=0)) == 5
    assert index.position(99) == Position(line=1, character=2)
    assert index.line_span(-3) == (0, 2)
    assert index.line_span(7) == (3, 5)


@given(st.text(alphabet="aé😀\n\r ", max_size=40))
def test_offset_and_position_round_trip(text: str) -> None:
    index = LineIndex(text)
    for offset in range(len(text) + 1):
        # Offsets inside a CRLF pair have no position of their own.
        if 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n":
            continue
        assert index.offset(index.position(offset)) == offset
