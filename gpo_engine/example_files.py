"""Reading an example file: JSONL, CSV or YAML rows, each with the line it
sits on, and every unreadable line as a Problem. What the rows hold is
checked afterwards (gpo_engine.examples)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpo_engine.errors import Problem, SourceError
from gpo_engine.example_rows import Rules

SUFFIXES = (".jsonl", ".csv", ".yaml", ".yml")
EXPECTED_FIELDS = ("expected", "target")


@dataclass(frozen=True)
class Row:
    fields: Mapping[str, Any]
    line: int
    column: int
    field_lines: Mapping[str, tuple[int, int]]  # where each field sits, when the format knows
    text_cells: bool = False  # CSV: every value is text, whatever type it stands for


def read_rows(path: Path, rules: Rules) -> tuple[bytes, list[Row], list[Problem]]:
    """The file's bytes, its rows, and the problems of the lines that are not rows.

    SourceError when the file cannot be read at all: an unsupported suffix,
    a missing or unreadable file, text that is not UTF-8.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SourceError(
            [
                Problem(
                    path,
                    1,
                    1,
                    f"unsupported example file type '{path.suffix}'; "
                    "use .jsonl, .csv, .yaml or .yml",
                )
            ]
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError([Problem(path, 1, 1, "file not found")]) from None
    except OSError as error:
        raise SourceError([Problem(path, 1, 1, f"cannot read file: {error.strerror}")]) from None
    text = _decode(data, path)
    reader = _read_jsonl if suffix == ".jsonl" else _read_csv if suffix == ".csv" else _read_yaml
    rows, problems = reader(text, path, rules)
    return data, rows, problems


def _decode(data: bytes, path: Path) -> str:
    """UTF-8 text (a leading BOM dropped); every line with undecodable bytes is a Problem."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    problems = []
    for number, raw_line in enumerate(data.split(b"\n"), start=1):
        try:
            raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            column = len(raw_line[: error.start].decode("utf-8", errors="replace")) + 1
            problems.append(Problem(path, number, column, "not valid UTF-8"))
    if not problems:  # a multi-byte character cut by a line break
        problems.append(Problem(path, 1, 1, "not valid UTF-8"))
    raise SourceError(problems)


def _read_jsonl(text: str, path: Path, rules: Rules) -> tuple[list[Row], list[Problem]]:
    rows: list[Row] = []
    problems: list[Problem] = []
    # Split on '\n' only: str.splitlines would also break at U+2028 and
    # friends, which JSON allows unescaped inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            problems.append(Problem(path, number, 1, "invalid JSON: comments are not allowed"))
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(path, number, error.colno, f"invalid JSON: {error.msg}"))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(path, number, 1, "row is not a JSON object"))
            continue
        rows.append(Row(value, number, 1, {}))
    return rows, problems


def _read_csv(text: str, path: Path, rules: Rules) -> tuple[list[Row], list[Problem]]:
    rows: list[Row] = []
    problems: list[Problem] = []
    # strict: a stray quote is an error instead of silently eating later rows.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    previous_end = 0
    try:
        for cells in reader:
            first_line = previous_end + 1
            previous_end = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            if header is None:
                header = [cell.strip() for cell in cells]
                header_problems = _header_problems(header, rules, first_line, path)
                if header_problems:
                    # A column missing from the header would otherwise be
                    # reported once per row; say it once, at the header.
                    return [], header_problems
                continue
            if len(cells) != len(header):
                problems.append(
                    Problem(
                        path,
                        first_line,
                        1,
                        f"row has {len(cells)} cells but the header has {len(header)}",
                    )
                )
                continue
            fields = dict(zip(header, cells, strict=True))
            rows.append(Row(fields, first_line, 1, {}, text_cells=True))
    except csv.Error as error:
        reason = "a quoted field is never closed" if "end of data" in str(error) else str(error)
        problems.append(Problem(path, previous_end + 1, 1, f"invalid CSV: {reason}"))
    return rows, problems


def _header_problems(header: list[str], rules: Rules, line: int, path: Path) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for name in header:
        if not name:
            problems.append(Problem(path, line, 1, "the header has an empty column name"))
        elif name in seen:
            problems.append(Problem(path, line, 1, f"the header repeats the column '{name}'"))
        seen.add(name)
    if not any(name in header for name in EXPECTED_FIELDS):
        problems.append(Problem(path, line, 1, "the header has no 'expected' column"))
    for name in rules.required:
        if name not in header:
            what = "template variable" if rules.validator is None else "input.schema's field"
            problems.append(Problem(path, line, 1, f"the header lacks {what} '{name}'"))
    return problems


class _LineLoader(yaml.SafeLoader):
    """SafeLoader; the caller walks the node tree to keep each item's line."""


def _read_yaml(text: str, path: Path, rules: Rules) -> tuple[list[Row], list[Problem]]:
    loader = _LineLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return [], []
        if not isinstance(root, yaml.SequenceNode):
            mark = root.start_mark
            return [], [
                Problem(
                    path,
                    mark.line + 1,
                    mark.column + 1,
                    "expected a list of examples (YAML items starting with '- ')",
                )
            ]
        rows: list[Row] = []
        problems: list[Problem] = []
        for item in root.value:
            mark = item.start_mark
            if not isinstance(item, yaml.MappingNode):
                problems.append(
                    Problem(path, mark.line + 1, mark.column + 1, "row is not a mapping")
                )
                continue
            value = loader.construct_document(item)
            field_lines = {
                str(loader.construct_object(key)): (
                    key.start_mark.line + 1,
                    key.start_mark.column + 1,
                )
                for key, _ in item.value
                if isinstance(key, yaml.ScalarNode)
            }
            rows.append(Row(value, mark.line + 1, mark.column + 1, field_lines))
        return rows, problems
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = getattr(error, "problem", None) or str(error)
        return [], [Problem(path, line, column, f"invalid YAML: {problem}")]
    finally:
        loader.dispose()
