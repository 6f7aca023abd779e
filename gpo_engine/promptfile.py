"""Read and write Dotprompt `.prompt` files: settings, template, variables.

A `.prompt` file is YAML frontmatter between `---` lines followed by a
Handlebars template. Optimizer settings are flat dotted extension keys
(`gpo.metric: exact`), which Dotprompt's own tools leave alone. Every problem
in a file is reported with its line and column, all of them at once, so an
editor can show them as diagnostics.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dotpromptz import picoschema_to_json_schema
from dotpromptz.errors import FrontmatterError
from dotpromptz.parse import identify_frontmatter, parse_document

from gpo_engine.callspec import config_problem, model_problem
from gpo_engine.errors import ConfigError, Problem, SourceError
from gpo_engine.rendering import PromptRenderer, RowData, run_blocking
from gpo_engine.settings import Settings, key_locations, node_key_locations, settings_from
from gpo_engine.template import (
    line_column,
    locate_template_error,
    template_problems,
    template_variables,
)


@dataclass(frozen=True)
class PromptFile:
    path: Path
    source: str  # the whole file as read
    frontmatter: str  # first byte through the closing '---' line incl. its newline; '' if none
    body: str  # the template (source[len(frontmatter):])
    body_line: int  # 1-based line number in `source` where the body starts
    settings: Settings
    variables: tuple[str, ...]  # template input variables, in order of first use
    # Dotprompt's reading of the frontmatter (config, input, output, ext), with
    # Picoschema already turned into JSON Schema; None when there is none.
    meta: Any = None
    explicit: frozenset[str] = frozenset()  # gpo.* settings the frontmatter writes

    @property
    def config(self) -> Mapping[str, Any]:
        return dict(self.meta.config or {}) if self.meta is not None else {}

    @property
    def input_schema(self) -> Mapping[str, Any] | None:
        spec = self.meta.input if self.meta is not None else None
        schema = getattr(spec, "schema", None) if spec is not None else None
        return schema if isinstance(schema, dict) else None

    @property
    def input_defaults(self) -> Mapping[str, Any]:
        spec = self.meta.input if self.meta is not None else None
        return dict(spec.default or {}) if spec is not None else {}

    @property
    def output(self) -> Mapping[str, Any]:
        spec = self.meta.output if self.meta is not None else None
        if spec is None:
            return {}
        return {"format": spec.format, "schema": getattr(spec, "schema", None)}

    def renderer(self) -> PromptRenderer:
        """Dotprompt for this file: its frontmatter, its partials (beside it, then gpo.partials)."""
        return PromptRenderer(self.meta, partial_folders(self.path, self.settings.partials))


def partial_folders(path: Path, configured: str | None) -> tuple[Path, ...]:
    """Where `{{> name}}` is looked up: the prompt's folder, then gpo.partials (relative to it)."""
    folder = Path(path).parent
    return (folder, folder / configured) if configured else (folder,)


# ---------------------------------------------------------------------------
# Files

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FINAL_BREAK = re.compile(r"(\r\n|\r|\n)\Z")
_BOM = "\ufeff"


def _yaml_reason(text: str, line: int, column: int) -> tuple[int, int, str]:
    """PyYAML's own reason and place for frontmatter Dotprompt calls just "invalid YAML".

    Dotprompt keeps parser messages out of its errors because they can quote
    the source; the person reading this one wrote that source, and "mapping
    values are not allowed here" says what to fix. Lines count in the whole file.
    """
    identified = identify_frontmatter(text)
    try:
        yaml.safe_load(identified.frontmatter)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        if error.problem and mark is not None:
            return (identified.content_line + mark.line, mark.column + 1,
                    f"invalid YAML: {error.problem}")
    except yaml.YAMLError:
        pass
    return line, column, "invalid YAML"


def parse_prompt(source: str, path: Path) -> PromptFile:
    """Parse a `.prompt` file's text; SourceError lists every problem found."""
    path = Path(path)
    # A UTF-8 byte order mark would hide the opening '---' from Dotprompt; it
    # is kept as part of the frontmatter so writing the file back keeps it.
    bom = _BOM if source.startswith(_BOM) else ""
    text = source[len(bom) :]
    try:
        parsed: Any = parse_document(text, source_name=str(path))
    except FrontmatterError as error:
        line, column, reason = error.line, error.column, error.reason
        if reason == "invalid YAML":  # Dotprompt withholds PyYAML's words; the editor wants them
            line, column, reason = _yaml_reason(text, line, column)
        raise SourceError([Problem(path, line, column, f"frontmatter: {reason}")]) from None
    identified = identify_frontmatter(text)
    body = identified.body if identified.declared else text
    frontmatter = source[: len(source) - len(body)]
    body_line = len(_LINE_BREAK.findall(frontmatter)) + 1

    problems: list[Problem] = []
    if identified.declared:
        settings, problems = settings_from(
            parsed.raw or {}, parsed.model, identified.frontmatter, identified.content_line, path
        )
        problems += _call_problems(parsed, identified.frontmatter, identified.content_line, path)
        meta, schema_problems = dotprompt_meta(parsed)
        where = key_locations(identified.frontmatter, identified.content_line)
        problems += [Problem(path, *where.get(key, (1, 1, None))[:2], message)
                     for key, message in schema_problems]
    else:
        settings, meta = Settings(), None
    variables = template_variables(body)
    explicit = frozenset(k[4:].split(".")[0] for k in (parsed.raw or {}) if k.startswith("gpo."))
    prompt = PromptFile(path=path, source=source, frontmatter=frontmatter, body=body,
                        body_line=body_line, settings=settings, variables=variables,
                        meta=meta, explicit=explicit)
    if not body.strip():
        problems.append(Problem(path, body_line, 1, "the prompt body is empty"))
    else:
        problems.extend(template_problems(body, body_line, path))
        if not problems:  # partials and roles, with the file's real folders
            problems.extend(_render_problems(prompt))
    if problems:
        raise SourceError(sorted(problems, key=lambda p: (p.line, p.column)))
    return prompt


def _call_problems(parsed: Any, yaml_text: str, first_line: int, path: Path) -> list[Problem]:
    """`model:` and `config:` values the task call cannot send, at their lines."""
    locations = key_locations(yaml_text, first_line)
    problems: list[Problem] = []
    if isinstance(parsed.model, str):
        message = model_problem(parsed.model)
        if message is not None:
            line, column, _ = locations.get("model", (1, 1, None))
            problems.append(Problem(path, line, column, message))
    config = (parsed.raw or {}).get("config")
    if config is not None and not isinstance(config, Mapping):
        line, column, _ = locations.get("config", (1, 1, None))
        problems.append(Problem(path, line, column, f"config must be a mapping, got {config!r}"))
    elif isinstance(config, Mapping):
        nested = node_key_locations(locations.get("config", (1, 1, None))[2], first_line)
        for key, value in config.items():
            message = config_problem(str(key), value)
            if message is not None:
                line, column = nested.get(str(key), locations.get("config", (1, 1))[:2])
                problems.append(Problem(path, line, column, message))
    return problems


def dotprompt_meta(parsed: Any) -> tuple[Any, list[tuple[str, str]]]:
    """The parsed prompt with Picoschema turned into JSON Schema, as Dotprompt renders
    it, and the (frontmatter key, message) of each schema that cannot be read."""
    problems: list[tuple[str, str]] = []
    updates: dict[str, Any] = {}
    for key in ("input", "output"):
        spec = getattr(parsed, key, None)
        schema = getattr(spec, "schema", None) if spec is not None else None
        if spec is None or schema is None:
            continue
        try:
            converted = run_blocking(functools.partial(picoschema_to_json_schema, schema))
        except (ValueError, TypeError, KeyError) as error:
            problems.append((key, f"{key}.schema: {error}"))
            continue
        updates[key] = spec.model_copy(update={"schema": converted})
    return (parsed.model_copy(update=updates) if updates else parsed), problems


def _render_problems(prompt: PromptFile) -> list[Problem]:
    """What stops Dotprompt rendering the file with its own partials: a missing or
    circular partial, an unknown role. Located at the tag it is about."""
    try:
        renderer = prompt.renderer()
        renderer.render_sync(prompt.body, RowData({v: "x" for v in prompt.variables}))
    except ConfigError as error:
        message = str(error)
        offset = locate_template_error(prompt.body, message)
        line, column = line_column(prompt.body, offset) if offset is not None else (1, 1)
        return [Problem(prompt.path, prompt.body_line + line - 1, column, message)]
    return []


def load_prompt(path: str | Path) -> PromptFile:
    """Read and parse a `.prompt` file."""
    path = Path(path)
    data = _read_bytes(path)
    return parse_prompt(_decode(data, path), path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError([Problem(path, 1, 1, "file not found")]) from None
    except IsADirectoryError:
        raise SourceError([Problem(path, 1, 1, "is a folder, not a file")]) from None
    except OSError as error:
        raise SourceError([Problem(path, 1, 1, f"cannot read file: {error.strerror}")]) from None


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        line = data.count(b"\n", 0, error.start) + 1
        column = len(data[line_start : error.start].decode("utf-8", errors="replace")) + 1
        raise SourceError([Problem(path, line, column, "not valid UTF-8")]) from None


def with_body(prompt: PromptFile, new_body: str) -> str:
    """The full file text with the template replaced; the frontmatter is kept byte for byte.

    The new body takes the file's line endings when the file uses CRLF
    throughout, and keeps the file's final line break if the old body had one.
    """
    if "\r\n" in prompt.source and not re.search(r"(?<!\r)\n", prompt.source):
        new_body = re.sub(r"(?<!\r)\n", "\r\n", new_body)
    ending = _FINAL_BREAK.search(prompt.body)
    if ending and new_body and not _FINAL_BREAK.search(new_body):
        new_body += ending.group(0)
    return prompt.frontmatter + new_body
