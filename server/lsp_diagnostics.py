"""LSP diagnostics from the engine's located problems, and the "better prompt ready" note.

A Problem carries a 1-based line and code-point column, a point. The range
sent to the editor covers what the problem is about: the `{{...}}` tag it
points at, else the word (a YAML key, a value, a JSON token) starting there,
else the rest of the line, so the squiggle sits under the thing to fix.
Problems in the example file become that file's own diagnostics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from lsprotocol.types import Diagnostic, DiagnosticSeverity, Position, Range

from gpo_engine.errors import Problem
from gpo_server.lsp_actions import format_gain
from gpo_server.prompt_state import Job, Suggestion
from gpo_server.text_positions import LineIndex

SOURCE = "gpo"
_SEVERITY = {"error": DiagnosticSeverity.Error, "warning": DiagnosticSeverity.Warning}
# A word for a squiggle: up to whitespace or YAML/JSON punctuation.
_WORD = re.compile(r"[^\s:,\[\]{}\"']+")
_TAG_LIMIT = 2_000  # characters searched for a tag's closing braces


def problem_range(index: LineIndex | None, line: int, column: int) -> Range:
    """The range a problem at 1-based (line, column) covers in the indexed text."""
    if index is None:  # text unknown: the point itself, columns taken as they are
        point = Position(line=max(line - 1, 0), character=max(column - 1, 0))
        return Range(start=point, end=point)
    text = index.text
    start_of_line, end_of_line = index.line_span(line - 1)
    start = min(start_of_line + max(column - 1, 0), end_of_line)
    end = _extent(text, start, end_of_line)
    return Range(start=index.position(start), end=index.position(end))


def _extent(text: str, start: int, end_of_line: int) -> int:
    if text.startswith("{{", start):
        triple = text.startswith("{{{", start)
        close = text.find("}}}" if triple else "}}", start + 2, start + _TAG_LIMIT)
        return close + (3 if triple else 2) if close >= 0 else end_of_line
    match = _WORD.match(text, start, end_of_line)
    if match:
        return match.end()
    if start < end_of_line and not text[start].isspace():
        return start + 1  # a lone punctuation mark
    # On whitespace or at the end: the rest of the line's content, if any.
    return start + len(text[start:end_of_line].rstrip())


def problem_diagnostic(problem: Problem, index: LineIndex | None) -> Diagnostic:
    return Diagnostic(
        range=problem_range(index, problem.line, problem.column),
        message=problem.message,
        severity=_SEVERITY.get(problem.severity, DiagnosticSeverity.Error),
        source=SOURCE,
    )


def diagnostics_by_file(
    problems: Iterable[Problem],
    read_text: Callable[[Path], str | None],
    paths: Iterable[Path] = (),
) -> dict[Path, list[Diagnostic]]:
    """Diagnostics grouped by file; every path in `paths` gets a list, empty to clear old ones.

    `read_text` gives a file's current text (the open buffer, else the file
    decoded with errors="replace", as the engine counts columns), or None
    when it cannot be read; then ranges are points at the given line/column.
    """
    grouped: dict[Path, list[Diagnostic]] = {Path(p): [] for p in paths}
    indexes: dict[Path, LineIndex | None] = {}
    for problem in problems:
        path = Path(problem.path)
        if path not in indexes:
            text = read_text(path)
            indexes[path] = None if text is None else LineIndex(text)
        grouped.setdefault(path, []).append(problem_diagnostic(problem, indexes[path]))
    return grouped


def suggestion_message(suggestion: Suggestion) -> str:
    """'GPO: +7.5 pts on dev, 12 words'."""
    words = "word" if suggestion.distance == 1 else "words"
    return f"GPO: {format_gain(suggestion.gain)} pts on dev, {suggestion.distance} {words}"


def suggestion_diagnostic(document: str, body_start: int, suggestion: Suggestion) -> Diagnostic:
    """Information diagnostic on the body's first non-blank line: a better prompt is ready."""
    return body_diagnostic(document, body_start, suggestion_message(suggestion),
                           DiagnosticSeverity.Information)


def failure_message(job: Job) -> str:
    """'GPO: optimizing failed: <why>', and for a key problem where the daemon reads keys."""
    text = f"GPO: optimizing failed: {job.message or 'no reason given'}"
    return text + (f" ({KEY_HINT})" if job.error_kind == "auth" else "")


# The daemon reads API keys from the environment it was started in, not the editor's now.
KEY_HINT = ("the daemon reads API keys from the environment it started in: set the key "
            "there, then `gpo daemon stop`; the next action starts it again")


def failure_diagnostic(document: str, body_start: int, job: Job) -> Diagnostic:
    """Warning on the body's first non-blank line: the file's last run failed, and why."""
    return body_diagnostic(document, body_start, failure_message(job),
                           DiagnosticSeverity.Warning)


def body_diagnostic(document: str, body_start: int, message: str,
                    severity: DiagnosticSeverity) -> Diagnostic:
    """A gpo diagnostic saying `message` on the body's first non-blank line."""
    return Diagnostic(range=first_body_line(document, body_start), message=message,
                      severity=severity, source=SOURCE)


def first_body_line(document: str, body_start: int) -> Range:
    """The content of the template body's first non-blank line."""
    index = LineIndex(document)
    body = document[body_start:]
    first = body_start + (len(body) - len(body.lstrip()))
    line = index.position(first).line
    _, end_of_line = index.line_span(line)
    content_end = first + len(document[first:end_of_line].rstrip())
    return Range(start=index.position(first), end=index.position(content_end))
