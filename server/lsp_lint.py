"""A `.prompt` file checked against its example set, as Dotprompt's linter (`promptly`) does.

Two checks the parser alone cannot make, because they need the rows:

- a template variable no row has, that neither `input.schema` declares nor
  `input.default` fills: one error at the first tag that reads it, instead of
  one "row lacks template variable" per row of the example file;
- an example column the template (with its partials) never reads: a warning
  in the example file, at the column's first occurrence.

Pure functions over parsed prompts and loaded example sets; the language
server imports this module on first use (it pulls in dotpromptz).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpo_engine.errors import ConfigError, Problem, SourceError
from gpo_engine.examples import Example, ExampleSet, load_examples
from gpo_engine.promptfile import PromptFile
from gpo_engine.rendering import RowData
from gpo_engine.template import template_variables

# Metrics that read the row's input columns themselves (the judge sees every
# input, `choice` takes its options from them): no column is unused there.
METRICS_READING_COLUMNS = frozenset({"judge", "choice"})
_BOM = "\ufeff"
# Comments are blanked out (offsets kept) before tags are searched: `{{!-- {{x}} --}}`
# reads nothing.
_COMMENT = re.compile(r"\{\{~?!--.*?--~?\}\}|\{\{~?![^}]*\}\}", re.DOTALL)
_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_WORD_RUN = re.compile(r"[\w-]+")
_PATH_JOINERS = (".", "@", "/", "[", "]")  # a run after one of these is not a path head
_HASH_KEY = re.compile(r"\s*=")


@dataclass(frozen=True)
class ExampleCheck:
    examples: ExampleSet | None  # None when the set has problems that drop rows
    problems: tuple[Problem, ...]  # in the example file, and absent variables in the prompt


def check_examples(prompt: PromptFile, path: Path) -> ExampleCheck:
    """Load `path` for `prompt`; a variable missing from every row is reported once, at its tag.

    SourceError is caught; other load failures (a bad input.schema, an
    unreadable file) propagate, as from load_examples.
    """
    try:
        examples = _load(prompt, path, prompt.variables)
    except SourceError as error:
        return _absent_instead_of_rows(prompt, path, list(error.problems))
    absent = absent_variables(prompt, examples.examples)
    return ExampleCheck(examples, tuple(absent_variable_problems(prompt, absent, path.name)))


def _load(prompt: PromptFile, path: Path, variables: Sequence[str]) -> ExampleSet:
    return load_examples(path, variables, prompt.settings.split,
                         input_schema=prompt.input_schema, defaults=prompt.input_defaults)


def _absent_instead_of_rows(prompt: PromptFile, path: Path,
                            problems: list[Problem]) -> ExampleCheck:
    """Problems of a set that failed to load, with a variable every row lacks said once.

    The rows' columns come from a load that requires nothing; when even that
    fails (bad JSON, a row without `expected`), the problems stay as they are.
    """
    try:
        columns_only = load_examples(path, (), prompt.settings.split)
    except SourceError:
        return ExampleCheck(None, tuple(problems))
    absent = absent_variables(prompt, columns_only.examples)
    if not absent:
        return ExampleCheck(None, tuple(problems))
    found = absent_variable_problems(prompt, absent, path.name)
    try:
        lacking = set(absent)  # a set: 20,000 absent variables took 2.7 s as a tuple
        examples = _load(prompt, path, [v for v in prompt.variables if v not in lacking])
    except SourceError as error:
        return ExampleCheck(None, (*found, *error.problems))
    return ExampleCheck(examples, tuple(found))


def absent_variables(prompt: PromptFile, rows: Iterable[Example]) -> tuple[str, ...]:
    """Template variables no row has, not declared in input.schema nor given by input.default."""
    columns: set[str] = set()
    for row in rows:
        columns.update(row.inputs)
    declared = _schema_properties(prompt.input_schema)
    defaults = prompt.input_defaults
    return tuple(name for name in prompt.variables
                 if name not in columns and name not in declared and name not in defaults)


def _schema_properties(schema: Mapping[str, Any] | None) -> frozenset[str]:
    properties = schema.get("properties") if schema is not None else None
    return frozenset(str(k) for k in properties) if isinstance(properties, Mapping) else frozenset()


def absent_variable_problems(prompt: PromptFile, absent: Sequence[str],
                             examples_name: str) -> list[Problem]:
    """One error per absent variable, at the first tag in the body that reads it."""
    where = " (nor in input.schema)" if prompt.input_schema is not None else ""
    problems = []
    offsets = tag_offsets(prompt.body, absent)
    for name in absent:
        offset = offsets.get(name)
        line, column = _body_position(prompt, offset) if offset is not None else (
            prompt.body_line, 1)
        problems.append(Problem(prompt.path, line, column,
                                f"variable '{name}' is not in the example set "
                                f"{examples_name}{where}"))
    return problems


def tag_offset(body: str, name: str) -> int | None:
    """Offset of the first `{{...}}` tag in `body` that mentions the variable `name`.

    A mention is the name as a whole path head: not `a.name`, `@name`, a
    quoted string, nor a hash key (`name=...`).
    """
    return tag_offsets(body, [name]).get(name)


def tag_offsets(body: str, names: Iterable[str]) -> dict[str, int]:
    """`tag_offset` of each of `names` that a tag mentions, in one pass over the tags.

    A mention of a name made of word characters and dashes is a whole run of
    them, so each run read in a tag is recorded once: 5,000 absent variables
    took 23 s with one scan of the body each, 0.05 s this way.
    """
    blank = _COMMENT.sub(lambda m: " " * len(m.group(0)), body)
    tags = [(tag.start(), _QUOTED.sub(lambda m: " " * len(m.group(0)), tag.group(1)))
            for tag in _TAG.finditer(blank)]
    first_read: dict[str, int] = {}  # word run -> offset of the first tag reading it
    for start, inner in tags:
        for run in _WORD_RUN.finditer(inner):
            if inner[run.start() - 1:run.start()] not in _PATH_JOINERS \
                    and not _HASH_KEY.match(inner, run.end()):
                first_read.setdefault(run.group(0), start)
    found: dict[str, int] = {}
    for name in names:
        if _WORD_RUN.fullmatch(name):
            if name in first_read:
                found[name] = first_read[name]
            continue
        reads = re.compile(rf"(?<![\w.@/\[\]-]){re.escape(name)}(?![\w-])(?!\s*=)")
        first = next((start for start, inner in tags if reads.search(inner)), None)
        if first is not None:
            found[name] = first
    return found


def _body_position(prompt: PromptFile, offset: int) -> tuple[int, int]:
    """1-based (line, code-point column) in the whole file of an offset in the body."""
    body = prompt.body
    line = prompt.body_line + body.count("\n", 0, offset)
    return line, offset - (body.rfind("\n", 0, offset) + 1) + 1


def variables_read(prompt: PromptFile) -> frozenset[str]:
    """Input variables the body reads, with those its partials read (they see the same input)."""
    found = set(prompt.variables)
    renderer = prompt.renderer()
    try:  # partials are resolved (and recorded) when the body is compiled
        renderer.render_sync(prompt.body, RowData({v: "x" for v in prompt.variables}))
    except ConfigError:
        return frozenset(found)  # parse_prompt rendered it already; keep what the body says
    for partial in renderer.partials_read.values():
        try:
            found.update(template_variables(partial.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return frozenset(found)


def unread_columns(rows: Iterable[Example], read: Collection[str]) -> list[tuple[str, Example]]:
    """(column, first row that has it) for each input column the template never reads."""
    first: dict[str, Example] = {}
    for row in rows:
        for column in row.inputs:
            if column not in read and column not in first:
                first[column] = row
    return list(first.items())


def unread_column_problems(prompt: PromptFile, examples: ExampleSet, text: str) -> list[Problem]:
    """A warning in the example file (its text `text`) per column the template never reads."""
    if prompt.settings.metric in METRICS_READING_COLUMNS:
        return []
    text = text.removeprefix(_BOM)  # columns are counted as the example loader counts them
    suffix = examples.path.suffix.lower()
    problems = []
    for column, row in unread_columns(examples.examples, variables_read(prompt)):
        line, position = column_location(text, suffix, column, row.line)
        problems.append(Problem(examples.path, line, position,
                                f"example column '{column}' is never read by the template",
                                severity="warning"))
    return problems


def column_location(text: str, suffix: str, column: str, row_line: int) -> tuple[int, int]:
    """1-based (line, column) of `column`'s name: in a CSV header, else its key in the row
    starting at `row_line`; the row's start when it cannot be found."""
    lines = text.split("\n")
    if suffix == ".csv":
        return _csv_header_cell(lines, column) or (row_line, 1)
    if suffix == ".jsonl":
        row = lines[row_line - 1] if 0 < row_line <= len(lines) else ""
        return row_line, _jsonl_key_column(row, column) or 1
    return _yaml_key(lines, column, row_line) or (row_line, 1)


def _csv_header_cell(lines: Sequence[str], column: str) -> tuple[int, int] | None:
    # The header is the first line with a cell in it, as the CSV reader takes it.
    header = next((i for i, line in enumerate(lines) if line.strip(" \t\r,")), None)
    if header is None:
        return None
    name = re.escape(column)
    cell = re.search(rf'(?:^|,)[ \t]*"?({name})"?[ \t]*(?=,|\r?$)', lines[header])
    return header + 1, (cell.start(1) + 1) if cell else 1


def _jsonl_key_column(row: str, column: str) -> int | None:
    # The key as JSON writes it; a backslash before the quote means inside a string.
    key = re.escape(json.dumps(column, ensure_ascii=False))
    found = re.search(rf"(?<!\\){key}\s*:", row)
    return found.start() + 1 if found else None


def _yaml_key(lines: Sequence[str], column: str, row_line: int) -> tuple[int, int] | None:
    name = re.escape(column)
    pattern = re.compile(rf"^([ \t]*(?:-[ \t]+)?)([\"']?){name}\2[ \t]*:", re.MULTILINE)
    rest = "\n".join(lines[row_line - 1:])
    found = pattern.search(rest)
    if found is None:
        return None
    start = found.end(1)
    return row_line + rest.count("\n", 0, start), start - (rest.rfind("\n", 0, start) + 1) + 1
