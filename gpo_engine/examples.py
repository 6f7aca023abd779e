"""Example sets: the rows a prompt is scored on, split into train / dev / test.

A set is a sibling file of the prompt in JSONL, CSV or YAML. Each row holds
the template's input variables and an `expected` answer (`target` is
accepted too, as in BBH files), and may pin its part with `split`. Rows
without a pinned part are placed by a hash of their own content, so adding
rows never moves another row. Every bad row is reported with its line; none
is silently dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from gpo_engine.errors import Problem, SourceError

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
SUFFIXES = (".jsonl", ".csv", ".yaml", ".yml")
_SPLIT_NAMES: dict[str, Split] = {"train": "train", "dev": "dev", "test": "test", "eval": "dev"}
_EXPECTED_FIELDS = ("expected", "target")


@dataclass(frozen=True)
class Example:
    inputs: Mapping[str, str]  # template variables -> text
    expected: str
    split: Split
    line: int  # 1-based line in the source file (CSV: the row's first line; YAML: the item's)
    uid: str  # sha256 of the canonical JSON of inputs+expected, first 16 hex chars


@dataclass(frozen=True)
class ExampleSet:
    path: Path
    examples: tuple[Example, ...]
    content_hash: str  # sha256 of the file bytes

    def part(self, split: Split) -> tuple[Example, ...]:
        return tuple(example for example in self.examples if example.split == split)

    @property
    def train(self) -> tuple[Example, ...]:
        return self.part("train")

    @property
    def dev(self) -> tuple[Example, ...]:
        return self.part("dev")

    @property
    def test(self) -> tuple[Example, ...]:
        return self.part("test")


def find_examples_path(prompt_path: Path, configured: str | None) -> Path:
    """The example file for a prompt: `configured` (relative to the prompt's folder)
    or the first existing sibling `<stem>.examples.{jsonl,csv,yaml,yml}`."""
    prompt_path = Path(prompt_path)
    folder = prompt_path.parent
    if configured is not None:
        tried = [folder / configured]
    else:
        tried = [folder / f"{prompt_path.stem}.examples{suffix}" for suffix in SUFFIXES]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    names = ", ".join(str(candidate) for candidate in tried)
    raise SourceError([Problem(prompt_path, 1, 1, f"example set not found: tried {names}")])


def assign_split(uid: str, fractions: Sequence[float]) -> Split:
    """The part a row goes to, from a hash of its uid alone (so it never moves)."""
    digest = hashlib.sha256(f"gpo-split:{uid}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    total = sum(fractions)
    bound = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=False):
        bound += fraction / total
        if point < bound:
            return name
    return "test"  # float rounding can leave the last bound a hair below 1


def example_uid(inputs: Mapping[str, str], expected: str) -> str:
    canonical = json.dumps(
        {"inputs": dict(inputs), "expected": expected},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def load_examples(
    path: Path,
    variables: Sequence[str],
    split: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
) -> ExampleSet:
    """Read an example set; SourceError lists every bad row."""
    path = Path(path)
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
    rows, problems = reader(text, path, variables)
    examples: list[Example] = []
    for row in rows:
        example = _to_example(row, variables, split, path, problems)
        if example is not None:
            examples.append(example)
    if not rows and not problems:
        problems.append(Problem(path, 1, 1, "example set is empty"))
    if problems:
        raise SourceError(sorted(problems, key=lambda p: (p.line, p.column)))
    return ExampleSet(path, tuple(examples), hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class _Row:
    fields: Mapping[str, Any]
    line: int
    column: int
    field_lines: Mapping[str, tuple[int, int]]  # where each field sits, when the format knows


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


def _read_jsonl(
    text: str, path: Path, variables: Sequence[str]
) -> tuple[list[_Row], list[Problem]]:
    rows: list[_Row] = []
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
        rows.append(_Row(value, number, 1, {}))
    return rows, problems


def _read_csv(text: str, path: Path, variables: Sequence[str]) -> tuple[list[_Row], list[Problem]]:
    rows: list[_Row] = []
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
                header_problems = _header_problems(header, variables, first_line, path)
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
            rows.append(_Row(dict(zip(header, cells, strict=True)), first_line, 1, {}))
    except csv.Error as error:
        reason = "a quoted field is never closed" if "end of data" in str(error) else str(error)
        problems.append(Problem(path, previous_end + 1, 1, f"invalid CSV: {reason}"))
    return rows, problems


def _header_problems(
    header: list[str], variables: Sequence[str], line: int, path: Path
) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for name in header:
        if not name:
            problems.append(Problem(path, line, 1, "the header has an empty column name"))
        elif name in seen:
            problems.append(Problem(path, line, 1, f"the header repeats the column '{name}'"))
        seen.add(name)
    if not any(name in header for name in _EXPECTED_FIELDS):
        problems.append(Problem(path, line, 1, "the header has no 'expected' column"))
    for name in variables:
        if name not in header:
            problems.append(Problem(path, line, 1, f"the header lacks template variable '{name}'"))
    return problems


class _LineLoader(yaml.SafeLoader):
    """SafeLoader; the caller walks the node tree to keep each item's line."""


def _read_yaml(text: str, path: Path, variables: Sequence[str]) -> tuple[list[_Row], list[Problem]]:
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
        rows: list[_Row] = []
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
            rows.append(_Row(value, mark.line + 1, mark.column + 1, field_lines))
        return rows, problems
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = getattr(error, "problem", None) or str(error)
        return [], [Problem(path, line, column, f"invalid YAML: {problem}")]
    finally:
        loader.dispose()


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _to_example(
    row: _Row,
    variables: Sequence[str],
    fractions: tuple[float, float, float],
    path: Path,
    problems: list[Problem],
) -> Example | None:
    fields = {str(key): value for key, value in row.fields.items()}
    before = len(problems)

    def add(message: str, field: str | None = None) -> None:
        line, column = row.field_lines.get(field or "", (row.line, row.column))
        problems.append(Problem(path, line, column, message))

    present = [name for name in _EXPECTED_FIELDS if name in fields]
    expected = ""
    if not present:
        add("row has no 'expected' field")
    elif len(present) == 2:
        add("row has both 'expected' and 'target'; keep one", "target")
    elif fields[present[0]] is None or not _text(fields[present[0]]).strip():
        add(f"row has an empty '{present[0]}' value", present[0])
    else:
        expected = _text(fields[present[0]])

    pinned: Split | None = None
    raw_split = fields.get("split")
    if raw_split is not None and _text(raw_split).strip():
        pinned = _SPLIT_NAMES.get(_text(raw_split).strip().lower())
        if pinned is None:
            add(f"bad split '{_text(raw_split)}'; use train, dev or test (or eval)", "split")

    inputs = {
        key: "" if value is None else _text(value)
        for key, value in fields.items()
        if key not in _EXPECTED_FIELDS and key != "split"
    }
    for name in variables:
        if name not in inputs:
            add(f"row lacks template variable '{name}'")
    if len(problems) != before:
        return None
    uid = example_uid(inputs, expected)
    split = pinned if pinned is not None else assign_split(uid, fractions)
    return Example(cast(Mapping[str, str], inputs), expected, split, row.line, uid)
