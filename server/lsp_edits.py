"""The smallest text edits that turn a document's template body into a suggestion.

The frontmatter is the user's and stays byte for byte (DESIGN.md §2): the new
document text comes from `with_body`, which keeps the frontmatter and the
file's line endings, and the edits are computed on the body only, so no edit
can start inside the frontmatter. Edits are word-granular (a changed word is
replaced whole), which is what the diff a person reviews shows too.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING

from lsprotocol.types import Range, TextEdit, WorkspaceEdit

from gpo_server.text_positions import LineIndex

if TYPE_CHECKING:
    from gpo_engine.promptfile import PromptFile

# Whitespace runs, words and single punctuation marks; together they are the text.
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)
# Past this many tokens in the changed middle, one replacement of the middle is
# sent instead of a token diff (SequenceMatcher is quadratic in the worst case).
MAX_DIFF_TOKENS = 20_000


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def text_changes(old: str, new: str) -> list[tuple[int, int, str]]:
    """(start, end, replacement) spans of `old`, in order, that together make `new`."""
    if old == new:
        return []
    # Trim the common prefix and suffix back to token boundaries first: cheap,
    # and the token diff then runs on the changed middle only.
    prefix = _common_prefix(old, new)
    while prefix and (_is_word(old, prefix) or _is_word(new, prefix)):
        prefix -= 1
    suffix = _common_prefix(old[prefix:][::-1], new[prefix:][::-1])
    while suffix and (_is_word(old, len(old) - suffix) or _is_word(new, len(new) - suffix)):
        suffix -= 1
    old_mid = old[prefix : len(old) - suffix]
    new_mid = new[prefix : len(new) - suffix]
    a, b = _tokens(old_mid), _tokens(new_mid)
    if len(a) + len(b) > MAX_DIFF_TOKENS:
        return [(prefix, len(old) - suffix, new_mid)]
    a_offsets = _offsets(a, prefix)
    changes: list[tuple[int, int, str]] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            changes.append((a_offsets[i1], a_offsets[i2], "".join(b[j1:j2])))
    return changes


def _is_word(text: str, index: int) -> bool:
    """True when `index` splits a word token of `text` (a \\w char on both sides)."""
    return 0 < index < len(text) and _word_char(text[index - 1]) and _word_char(text[index])


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _offsets(tokens: list[str], start: int) -> list[int]:
    offsets = [start]
    for token in tokens:
        offsets.append(offsets[-1] + len(token))
    return offsets


def body_edits(document: str, body_start: int, new_body: str) -> list[TextEdit]:
    """Edits (LSP ranges, UTF-16) that replace document[body_start:] with `new_body`."""
    index = LineIndex(document)
    edits = []
    for start, end, replacement in text_changes(document[body_start:], new_body):
        span = Range(start=index.position(body_start + start), end=index.position(body_start + end))
        edits.append(TextEdit(range=span, new_text=replacement))
    return edits


def suggested_document(prompt: PromptFile, suggestion: str) -> str:
    """The whole document with its body replaced by `suggestion` (frontmatter kept)."""
    # Imported when first needed: dotpromptz costs ~0.15 s, and `gpo lsp` must answer
    # `initialize` before it parses any document.
    from gpo_engine.promptfile import with_body

    return with_body(prompt, suggestion)


def suggestion_edits(prompt: PromptFile, suggestion: str) -> list[TextEdit]:
    """Edits that turn `prompt.source` (the open document) into its suggested version."""
    new_document = suggested_document(prompt, suggestion)
    body_start = len(prompt.frontmatter)
    # with_body never touches the frontmatter; checked so an edit can never reach it.
    if not new_document.startswith(prompt.frontmatter):
        raise AssertionError("with_body changed the frontmatter")
    return body_edits(prompt.source, body_start, new_document[body_start:])


def suggestion_workspace_edit(uri: str, prompt: PromptFile, suggestion: str) -> WorkspaceEdit:
    """A WorkspaceEdit of the suggestion's edits, in `changes` form (VS Code and Neovim 0.7)."""
    return WorkspaceEdit(changes={uri: suggestion_edits(prompt, suggestion)})
