"""Offsets in a Python string <-> LSP positions (line, UTF-16 code units).

LSP counts characters in UTF-16 code units (the default position encoding,
the only one VS Code and Neovim 0.7 both speak) and breaks lines at `\\n`,
`\\r\\n` and `\\r` only; Python counts code points and `str.splitlines` breaks at
more characters (form feed, U+2028...). Every position the language server
sends goes through here, so an emoji or a CJK supplement character before an
edit does not shift it.
"""

from __future__ import annotations

import bisect
import re

from lsprotocol.types import Position

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def utf16_length(text: str) -> int:
    # surrogatepass: a lone surrogate (from a lossy decode) still counts as one unit.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class LineIndex:
    """Line starts of one text, for converting offsets both ways."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts = [0]
        self._ends: list[int] = []  # offset of each line's break (or of the text's end)
        for match in _LINE_BREAK.finditer(text):
            self._ends.append(match.start())
            self._starts.append(match.end())
        self._ends.append(len(text))

    @property
    def line_count(self) -> int:
        return len(self._starts)

    def line_span(self, line: int) -> tuple[int, int]:
        """(start, end) offsets of a 0-based line without its break; clamped to the text."""
        line = min(max(line, 0), self.line_count - 1)
        return self._starts[line], self._ends[line]

    def position(self, offset: int) -> Position:
        offset = min(max(offset, 0), len(self.text))
        line = bisect.bisect_right(self._starts, offset) - 1
        start, end = self._starts[line], self._ends[line]
        # An offset inside a CRLF break belongs to the line's end.
        return Position(line=line, character=utf16_length(self.text[start : min(offset, end)]))

    def offset(self, position: Position) -> int:
        """The string offset of an LSP position; past a line's end means its end."""
        if position.line >= self.line_count:
            return len(self.text)
        start, end = self.line_span(position.line)
        units = 0
        for index in range(start, end):
            if units >= position.character:
                return index
            units += 2 if ord(self.text[index]) > 0xFFFF else 1
        return end
