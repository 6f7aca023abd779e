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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import jsonschema
import yaml
from dotpromptz import picoschema_to_json_schema

from gpo_engine.errors import ConfigError, Problem, SourceError

T = TypeVar("T")

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
SUFFIXES = (".jsonl", ".csv", ".yaml", ".yml")
_SPLIT_NAMES: dict[str, Split] = {"train": "train", "dev": "dev", "test": "test", "eval": "dev"}
_EXPECTED_FIELDS = ("expected", "target")
# Row fields that are not input variables.
_RESERVED_FIELDS = (*_EXPECTED_FIELDS, "split", "messages")
MESSAGE_ROLES = ("system", "user", "model", "tool")  # Dotprompt's roles; "model" is the assistant


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


def input_json_schema(schema: object) -> dict[str, Any] | None:
    """JSON Schema for a frontmatter `input.schema`, or None when there is none.

    Picoschema is converted the way Dotprompt converts it; a JSON Schema
    passes through. Raises ConfigError for a schema that needs a named-schema
    resolver (a `.prompt` file alone has none), a bad Picoschema type, or a
    result that is not a valid JSON Schema.
    """
    if schema is None:
        return None
    try:
        converted = _run_unsuspended(picoschema_to_json_schema(schema))
    except ValueError as error:
        raise ConfigError(f"input.schema: {error}") from None
    if converted is None:
        return None
    _schema_validator(converted)
    return dict(converted)


def _run_unsuspended(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits on anything.

    picoschema_to_json_schema is async only so a schema resolver may fetch
    named schemas; without one it never suspends, so one step runs it to the
    end. asyncio.run would refuse inside the daemon's and the language
    server's running event loops.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise ConfigError("input.schema: converting it would need a schema resolver")


def _schema_validator(schema: Mapping[str, Any]) -> Any:
    """A jsonschema validator for `schema` (Draft 2020-12 unless it names its
    own $schema, as dotpromptz validates); ConfigError when it is not valid."""
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise ConfigError(f"input.schema is not a valid JSON Schema: {error.message}") from None
    return validator_class(schema)


@dataclass(frozen=True)
class _Rules:
    """What a row's input fields must satisfy."""

    variables: tuple[str, ...]  # the template's input variables
    defaults: Mapping[str, Any]  # input.default
    validator: Any  # a jsonschema validator of input.schema, or None
    # Fields every row must carry itself; with a schema only the CSV header
    # check uses them (the schema reports a row's missing fields).
    required: tuple[str, ...]
    types: Mapping[str, tuple[str, ...]]  # input.schema's type of each top-level field


def _rules(
    variables: Sequence[str],
    input_schema: Mapping[str, Any] | None,
    defaults: Mapping[str, Any] | None,
) -> _Rules:
    filled = dict(defaults or {})
    if input_schema is None:
        required = tuple(name for name in variables if name not in filled)
        return _Rules(tuple(variables), filled, None, required, {})
    validator = _schema_validator(input_schema)
    listed = input_schema.get("required")
    names = [str(name) for name in listed] if isinstance(listed, list) else []
    types: dict[str, tuple[str, ...]] = {}
    properties = input_schema.get("properties")
    if isinstance(properties, Mapping):
        for name, spec in properties.items():
            kind = spec.get("type") if isinstance(spec, Mapping) else None
            kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
            types[str(name)] = tuple(k for k in kinds if isinstance(k, str))
    required = tuple(name for name in names if name not in filled)
    return _Rules(tuple(variables), filled, validator, required, types)


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
    rules = _rules(variables, input_schema, defaults)
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


@dataclass(frozen=True)
class _Row:
    fields: Mapping[str, Any]
    line: int
    column: int
    field_lines: Mapping[str, tuple[int, int]]  # where each field sits, when the format knows
    text_cells: bool = False  # CSV: every value is text, whatever type it stands for


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


def _read_jsonl(text: str, path: Path, rules: _Rules) -> tuple[list[_Row], list[Problem]]:
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


def _read_csv(text: str, path: Path, rules: _Rules) -> tuple[list[_Row], list[Problem]]:
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
            rows.append(_Row(fields, first_line, 1, {}, text_cells=True))
    except csv.Error as error:
        reason = "a quoted field is never closed" if "end of data" in str(error) else str(error)
        problems.append(Problem(path, previous_end + 1, 1, f"invalid CSV: {reason}"))
    return rows, problems


def _header_problems(header: list[str], rules: _Rules, line: int, path: Path) -> list[Problem]:
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
    for name in rules.required:
        if name not in header:
            what = "template variable" if rules.validator is None else "input.schema's field"
            problems.append(Problem(path, line, 1, f"the header lacks {what} '{name}'"))
    return problems


class _LineLoader(yaml.SafeLoader):
    """SafeLoader; the caller walks the node tree to keep each item's line."""


def _read_yaml(text: str, path: Path, rules: _Rules) -> tuple[list[_Row], list[Problem]]:
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


def _json_value(value: object) -> Any:
    """A row value as JSON holds it: YAML's dates and other scalars become text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    return _text(value)


def _typed_cell(text: str, kinds: Sequence[str]) -> Any:
    """A CSV cell as the type input.schema gives its field, when it reads as
    one; else the text, which the schema check then reports."""
    if not kinds or "string" in kinds:
        return text
    stripped = text.strip()
    for kind in kinds:
        if kind == "null" and not stripped:
            return None
        if kind == "boolean" and stripped.lower() in ("true", "false"):
            return stripped.lower() == "true"
        if kind in ("integer", "number", "array", "object"):
            try:
                value = json.loads(stripped)
            except ValueError:
                continue
            wanted: type | tuple[type, ...] = (
                list if kind == "array" else dict if kind == "object" else (int, float)
            )
            if isinstance(value, wanted) and not isinstance(value, bool):
                return value
    return text


class _BadMessages(ValueError):
    """A row's `messages` is not a Dotprompt conversation; the text says why."""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    return "a list" if isinstance(value, (list, tuple)) else type(value).__name__


def _part(raw: object, where: str) -> dict[str, Any]:
    """One content part, as {"text": ...} or {"media": {"url": ..., "contentType"?: ...}}."""
    if not isinstance(raw, Mapping):
        raise _BadMessages(f"{where} must be a mapping with text or media, got {_kind(raw)}")
    keys = sorted(str(key) for key in raw if key != "metadata")
    part: dict[str, Any]
    if keys == ["text"]:
        if not isinstance(raw["text"], str):
            raise _BadMessages(f"{where}: text must be a text, got {_kind(raw['text'])}")
        part = {"text": raw["text"]}
    elif keys == ["media"]:
        media = raw["media"]
        if not isinstance(media, Mapping):
            raise _BadMessages(f"{where}: media must be a mapping with a url, got {_kind(media)}")
        unknown = sorted(str(key) for key in media if key not in ("url", "contentType"))
        if unknown:
            raise _BadMessages(f"{where}: media has unknown key '{unknown[0]}'; "
                               "use url and contentType")
        url, content_type = media.get("url"), media.get("contentType")
        if not isinstance(url, str) or not url.strip():
            raise _BadMessages(f"{where}: media needs a url text")
        if content_type is not None and not isinstance(content_type, str):
            raise _BadMessages(f"{where}: media contentType must be a text")
        part = {"media": {"url": url, **({"contentType": content_type} if content_type else {})}}
    else:
        got = ", ".join(keys) if keys else "neither"
        raise _BadMessages(f"{where} needs exactly one of text or media, got {got}")
    if "metadata" in raw:
        part["metadata"] = _metadata(raw["metadata"], where)
    return part


def _metadata(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _BadMessages(f"{where}: metadata must be a mapping, got {_kind(raw)}")
    return cast(dict[str, Any], _json_value(raw))


def _message(raw: object, number: int) -> dict[str, Any]:
    """One message, with its content always a list of parts."""
    where = f"message {number}"
    if not isinstance(raw, Mapping):
        raise _BadMessages(f"{where} must be a mapping with role and content, got {_kind(raw)}")
    unknown = sorted(str(key) for key in raw if key not in ("role", "content", "metadata"))
    if unknown:
        raise _BadMessages(f"{where} has unknown key '{unknown[0]}'; use role and content")
    role = raw.get("role")
    if role not in MESSAGE_ROLES:
        shown = repr(role) if isinstance(role, str) else _kind(role)
        raise _BadMessages(f"{where} has role {shown}; use system, user, model or tool "
                           "('model' is the assistant)")
    if "content" not in raw:
        raise _BadMessages(f"{where} has no content")
    content = raw["content"]
    if isinstance(content, str):
        parts = [{"text": content}]  # Dotprompt's shorthand for one text part
    elif isinstance(content, list) and content:
        parts = [_part(item, f"{where}, part {index}") for index, item in enumerate(content, 1)]
    else:
        got = "an empty list" if isinstance(content, list) else _kind(content)
        raise _BadMessages(f"{where}: content must be a text or a list of parts, got {got}")
    message: dict[str, Any] = {"role": role, "content": parts}
    if "metadata" in raw:
        message["metadata"] = _metadata(raw["metadata"], where)
    return message


def parse_messages(raw: object) -> tuple[dict[str, Any], ...]:
    """A row's `messages` in Dotprompt's shape; ValueError says what is wrong.

    null or an empty list is no history. A text is read as JSON, which is how
    a CSV cell carries it.
    """
    if raw is None:
        return ()
    if isinstance(raw, str):
        if not raw.strip():
            return ()
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise _BadMessages(f"not valid JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(raw, list):
        raise _BadMessages(f"must be a list of messages with role and content, got {_kind(raw)}")
    return tuple(_message(item, number) for number, item in enumerate(raw, 1))


def _json_path(parts: Sequence[object]) -> str:
    """'items[0].name' for the path of a value inside a row."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _schema_problems(rules: _Rules, values: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(message, top-level field or None) for each way the row breaks input.schema."""
    instance = {**rules.defaults, **values}
    errors = sorted(
        rules.validator.iter_errors(instance),
        key=lambda error: [str(part) for part in error.absolute_path],
    )
    found: list[tuple[str, str | None]] = []
    for error in errors:
        where = _json_path(list(error.absolute_path))
        detail = f"{where}: {error.message}" if where else error.message
        top = str(error.absolute_path[0]) if error.absolute_path else None
        found.append((f"row does not match input.schema: {detail}", top))
    return found


def _to_example(
    row: _Row,
    rules: _Rules,
    fractions: tuple[float, float, float],
    path: Path,
    problems: list[Problem],
) -> Example | None:
    fields = {str(key): value for key, value in row.fields.items()}
    before = len(problems)

    def add(message: str, key: str | None = None) -> None:
        line, column = row.field_lines.get(key or "", (row.line, row.column))
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

    messages: tuple[dict[str, Any], ...] = ()
    try:
        messages = parse_messages(fields.get("messages"))
    except ValueError as error:
        add(f"bad 'messages': {error}", "messages")

    raw_inputs = {key: value for key, value in fields.items() if key not in _RESERVED_FIELDS}
    inputs = {key: "" if value is None else _text(value) for key, value in raw_inputs.items()}
    values = {
        key: _typed_cell(value, rules.types.get(key, ())) if row.text_cells else _json_value(value)
        for key, value in raw_inputs.items()
    }
    if rules.validator is None:
        for name in rules.required:
            if name not in inputs:
                add(f"row lacks template variable '{name}'")
    else:
        for message, key in _schema_problems(rules, values):
            add(message, key)
    if len(problems) != before:
        return None
    uid = example_uid(inputs, expected, messages)
    split = pinned if pinned is not None else assign_split(uid, fractions)
    return Example(
        cast(Mapping[str, str], inputs), expected, split, row.line, uid, values, messages
    )
