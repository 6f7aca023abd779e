"""Example sets: the rows a prompt is scored on, split into train / dev / test.

A set is a sibling file of the prompt in JSONL, CSV or YAML. Each row holds
the template's input variables and an `expected` answer (`target` is
accepted too, as in BBH files), and may pin its part with `split`. Rows
without a pinned part are placed by a hash of their own content, so adding
rows never moves another row. Every bad row is reported with its line; none
is silently dropped.

Rows are Dotprompt inputs: their values keep their JSON types for rendering
(`{{#each items}}` needs a real list), a `messages` field is the conversation
history Dotprompt's `{{history}}` shows, the frontmatter's `input.default`
fills variables a row leaves out, and `input.schema` checks every row.

Reading the file is gpo_engine.example_files, the values' types and the
schema checks gpo_engine.example_rows, the `messages` field
gpo_engine.example_messages.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from gpo_engine.errors import Problem, SourceError
from gpo_engine.example_files import EXPECTED_FIELDS, SUFFIXES, Row, read_rows
from gpo_engine.example_messages import parse_messages
from gpo_engine.example_rows import (
    Rules,
    json_value,
    row_rules,
    schema_problems,
    typed_cell,
    value_text,
)

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
_SPLIT_NAMES: dict[str, Split] = {"train": "train", "dev": "dev", "test": "test", "eval": "dev"}
# Row fields that are not input variables.
_RESERVED_FIELDS = (*EXPECTED_FIELDS, "split", "messages")


@dataclass(frozen=True)
class Example:
    inputs: Mapping[str, str]  # input fields -> text (what the uid and the judge see)
    expected: str
    split: Split
    line: int  # 1-based line in the source file (CSV: the row's first line; YAML: the item's)
    # sha256 of the canonical JSON of inputs+expected (+messages when the row
    # has some), first 16 hex chars
    uid: str
    # The same fields with their JSON types kept (lists, objects, numbers), for
    # rendering; CSV cells stay text unless input.schema gives them a type.
    # input.default is not merged in: the renderer does that, as Dotprompt does.
    values: Mapping[str, Any] = field(default_factory=dict)
    # The row's conversation history, each {"role": ..., "content": [parts]}
    # with parts {"text": ...} or {"media": {"url": ..., "contentType"?: ...}}.
    messages: tuple[dict[str, Any], ...] = ()

    @property
    def render_values(self) -> Mapping[str, Any]:
        """The input values to render with: `values`, or the texts for an
        Example built by hand without them."""
        return self.values if self.values else self.inputs


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


def example_uid(
    inputs: Mapping[str, str], expected: str, messages: Sequence[Mapping[str, Any]] = ()
) -> str:
    payload: dict[str, Any] = {"inputs": dict(inputs), "expected": expected}
    if messages:  # only then: rows without messages keep the uids they always had
        payload["messages"] = [dict(message) for message in messages]
    canonical = json.dumps(
        payload,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def load_examples(
    path: Path,
    variables: Sequence[str],
    split: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
    *,
    input_schema: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> ExampleSet:
    """Read an example set; SourceError lists every bad row.

    `defaults` (the frontmatter's input.default) are values for variables a
    row may leave out. `input_schema` (JSON Schema; see input_json_schema)
    checks each row's input fields merged over the defaults, and then decides
    alone which fields a row needs: a template variable it does not require
    may be missing. Without a schema every variable without a default is
    required. ConfigError when `input_schema` is not a valid JSON Schema.
    """
    path = Path(path)
    rules = row_rules(variables, input_schema, defaults)
    data, rows, problems = read_rows(path, rules)
    examples: list[Example] = []
    for row in rows:
        example = _to_example(row, rules, split, path, problems)
        if example is not None:
            examples.append(example)
    if not rows and not problems:
        problems.append(Problem(path, 1, 1, "example set is empty"))
    if problems:
        raise SourceError(sorted(problems, key=lambda p: (p.line, p.column)))
    return ExampleSet(path, tuple(examples), hashlib.sha256(data).hexdigest())


def _to_example(
    row: Row,
    rules: Rules,
    fractions: tuple[float, float, float],
    path: Path,
    problems: list[Problem],
) -> Example | None:
    fields = {str(key): value for key, value in row.fields.items()}
    before = len(problems)

    def add(message: str, key: str | None = None) -> None:
        line, column = row.field_lines.get(key or "", (row.line, row.column))
        problems.append(Problem(path, line, column, message))

    present = [name for name in EXPECTED_FIELDS if name in fields]
    expected = ""
    if not present:
        add("row has no 'expected' field")
    elif len(present) == 2:
        add("row has both 'expected' and 'target'; keep one", "target")
    elif fields[present[0]] is None or not value_text(fields[present[0]]).strip():
        add(f"row has an empty '{present[0]}' value", present[0])
    else:
        expected = value_text(fields[present[0]])

    pinned: Split | None = None
    raw_split = fields.get("split")
    if raw_split is not None and value_text(raw_split).strip():
        pinned = _SPLIT_NAMES.get(value_text(raw_split).strip().lower())
        if pinned is None:
            add(f"bad split '{value_text(raw_split)}'; use train, dev or test (or eval)", "split")

    messages: tuple[dict[str, Any], ...] = ()
    try:
        messages = parse_messages(fields.get("messages"))
    except ValueError as error:
        add(f"bad 'messages': {error}", "messages")

    raw_inputs = {key: value for key, value in fields.items() if key not in _RESERVED_FIELDS}
    inputs = {key: "" if value is None else value_text(value) for key, value in raw_inputs.items()}
    values = {
        key: typed_cell(value, rules.types.get(key, ())) if row.text_cells else json_value(value)
        for key, value in raw_inputs.items()
    }
    if rules.validator is None:
        for name in rules.required:
            if name not in inputs:
                add(f"row lacks template variable '{name}'")
    else:
        for message, key in schema_problems(rules, values):
            add(message, key)
    if len(problems) != before:
        return None
    uid = example_uid(inputs, expected, messages)
    split = pinned if pinned is not None else assign_split(uid, fractions)
    return Example(
        cast(Mapping[str, str], inputs), expected, split, row.line, uid, values, messages
    )
