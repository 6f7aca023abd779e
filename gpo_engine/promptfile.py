"""Read and write Dotprompt `.prompt` files: settings, template, variables.

A `.prompt` file is YAML frontmatter between `---` lines followed by a
Handlebars template. Optimizer settings are flat dotted extension keys
(`gpo.metric: exact`), which Dotprompt's own tools leave alone. Every problem
in a file is reported with its line and column, all of them at once, so an
editor can show them as diagnostics.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotpromptz import picoschema_to_json_schema
from dotpromptz.errors import FrontmatterError
from dotpromptz.helpers import BUILTIN_HELPERS
from dotpromptz.parse import identify_frontmatter, parse_document
from dotpromptz_handlebars import (
    Block,
    InlinePartial,
    Mustache,
    Node,
    Partial,
    PartialBlock,
)

# The public Handlebars API compiles straight to a closure; the parse tree is
# only reachable through this module, and we need it to find input variables.
from dotpromptz_handlebars._render import compile_template

from gpo_engine.callspec import config_problem, model_problem
from gpo_engine.errors import ConfigError, Problem, SourceError
from gpo_engine.rendering import PromptRenderer, RowData, run_blocking
from gpo_engine.target import TARGETS

DEFAULT_LOCAL_MODEL = "local/gemma-3-270m"
METRICS = ("exact", "contains", "choice", "number", "regex", "f1", "judge", "json")
RETRIEVALS = ("relevance", "recency", "importance")
DECAYS = ("cosine", "linear", "fixed")


@dataclass(frozen=True)
class BudgetSettings:
    initial: int = 50  # words allowed to change at step 0 (paper default)
    final: int = 10  # words at the last step
    decay: str = "cosine"  # "cosine" | "linear" | "fixed"
    warmup: int = 0  # steps held at `initial` before the decay starts


@dataclass(frozen=True)
class Settings:
    model: str | None = None  # frontmatter `model`: the task model
    optimizer: str | None = None  # gpo.optimizer; None means the task model
    metric: str = "exact"  # one of METRICS
    pattern: str | None = None  # gpo.pattern: regex for metric "regex" (required then)
    judge: str | None = None  # gpo.judge: model for metric "judge"; None -> optimizer model
    # gpo.fields: the expected fields metric "json" scores, dotted paths for
    # nested ones ("address.city"); None scores every field.
    fields: tuple[str, ...] | None = None
    examples: str | None = None  # gpo.examples: path relative to the prompt file
    partials: str | None = None  # gpo.partials: a folder of `_name.prompt` partials
    steps: int = 12  # gpo.steps
    candidates: int = 8  # gpo.candidates
    k: int = 3  # gpo.k: prompts retrieved per step (paper: 3)
    retrieval: str = "relevance"  # gpo.retrieval: relevance | recency | importance
    embedding: str | None = None  # gpo.embedding: litellm embedding model; None -> rapidfuzz
    target: str = "system"  # gpo.target: the message the optimizer rewrites (one of TARGETS)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    temperature: float = 1.0  # gpo.temperature: optimizer sampling temperature (paper code: 1.0)
    max_tokens: int = 48  # gpo.max_tokens: task model answer length
    batch_size: int = 8  # gpo.batch_size: train minibatch evaluated per step
    racing: bool = True  # gpo.racing
    race_size: int = 8  # gpo.race_size: dev rows in the racing slice
    max_cost: float | None = None  # gpo.max_cost, dollars for the whole job
    concurrency: int = 4  # gpo.concurrency: in-flight calls per model
    timeout: float = 60.0  # gpo.timeout: seconds per model call
    seed: int = 0  # gpo.seed
    split: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # gpo.split: train/dev/test
    # `gpo check`: a drop fails when a paired test says it is significant at
    # gpo.check_alpha, or when it is larger than gpo.check_tolerance points.
    check_alpha: float = 0.05
    check_tolerance: float = 5.0

    def replace(self, **changes: object) -> Settings:
        """A copy with `changes` applied and checked like frontmatter values.

        `budget` may be a BudgetSettings or a mapping of some of its fields
        (merged onto the current budget). Raises ConfigError listing every
        bad value.
        """
        errors: list[str] = []
        values: dict[str, object] = {}
        for name, value in changes.items():
            if name == "model":
                if value is not None and not isinstance(value, str):
                    errors.append(f"model must be a model name, got {value!r}")
                else:
                    values[name] = value
                continue
            if name not in _FIELDS:
                errors.append(_unknown_message(name, [*_FIELDS, "model"], prefix=""))
                continue
            if name == "budget":
                raw: object = (
                    dataclasses.asdict(value) if isinstance(value, BudgetSettings) else value
                )
                if not isinstance(raw, Mapping):
                    errors.append(f"gpo.budget must be a mapping, got {_show(value)}")
                    continue
                budget, budget_errors = _check_budget(
                    {str(k): v for k, v in raw.items()}, self.budget
                )
                errors.extend(message for _, message in budget_errors)
                if budget is not None:
                    values[name] = budget
                continue
            checked, message = _check_field(name, value)
            if message is not None:
                errors.append(message)
            else:
                values[name] = checked
        if errors:
            raise ConfigError("; ".join(errors))
        result = dataclasses.replace(self, **values)  # type: ignore[arg-type]
        cross = [message for _, message in _cross_check(result)]
        if cross:
            raise ConfigError("; ".join(cross))
        return result

    def fingerprint(self) -> dict[str, object]:
        """Every setting that can change a run's results, as plain JSON values.

        Left out: where the examples live (their content hash is keyed
        separately), and concurrency, timeout and max_cost, which change how
        fast or how far a run goes but not what a step computes, and the
        check_* settings, which only judge a score after the fact.
        """
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "metric": self.metric,
            "pattern": self.pattern,
            "judge": self.judge,
            "steps": self.steps,
            "candidates": self.candidates,
            "k": self.k,
            "retrieval": self.retrieval,
            "embedding": self.embedding,
            "budget": dataclasses.asdict(self.budget),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "batch_size": self.batch_size,
            "racing": self.racing,
            "race_size": self.race_size,
            "seed": self.seed,
            "split": list(self.split),
            # Only when set: a new key would change every trajectory key and
            # orphan the runs saved before gpo.fields existed.
            **({"fields": list(self.fields)} if self.fields is not None else {}),
            # Only when not the default, for the same reason: the runs saved so far
            # hold whole bodies with real scores, valid to resume under the default.
            **({"target": self.target} if self.target != "system" else {}),
        }


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
# Settings checks. Each returns (normalized value, None) or (None, message);
# the same code checks frontmatter values and Settings.replace() arguments.

_INT_MINIMUM = {
    "steps": 1,
    "candidates": 1,
    "k": 1,
    "max_tokens": 1,
    "batch_size": 1,
    "race_size": 1,
    "concurrency": 1,
    "seed": 0,
}
_OPTIONAL_TEXT = ("optimizer", "pattern", "judge", "examples", "embedding", "partials")
_CHOICES = {"metric": METRICS, "retrieval": RETRIEVALS, "target": TARGETS}
_FIELDS = tuple(f.name for f in dataclasses.fields(Settings) if f.name != "model")
_BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(BudgetSettings))


def _show(value: object) -> str:
    return "null" if value is None else repr(value)


def _is_number(value: object) -> bool:
    # bool is an int subclass; `gpo.steps: yes` must not pass as 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(key: str, value: object, minimum: int) -> tuple[Any, str | None]:
    if not isinstance(value, int) or isinstance(value, bool):
        return None, f"{key} must be a whole number >= {minimum}, got {_show(value)}"
    if value < minimum:
        return None, f"{key} must be >= {minimum}, got {value}"
    return value, None


def _check_field(name: str, value: object) -> tuple[Any, str | None]:
    key = f"gpo.{name}"
    if name in _INT_MINIMUM:
        return _check_int(key, value, _INT_MINIMUM[name])
    if name in _CHOICES:
        choices = _CHOICES[name]
        if value not in choices:
            label = "metric" if name == "metric" else name
            shown = value if isinstance(value, str) else _show(value)
            return None, f"unknown {label} '{shown}'; choose one of {', '.join(choices)}"
        return value, None
    if name in _OPTIONAL_TEXT:
        if value is None:
            return None, None
        if not isinstance(value, str) or not value.strip():
            return None, f"{key} must be a non-empty text, got {_show(value)}"
        if name == "pattern":
            try:
                re.compile(value)
            except re.error as error:
                return None, f"gpo.pattern is not a valid regular expression: {error}"
        return value, None
    if name == "racing":
        if not isinstance(value, bool):
            return None, f"gpo.racing must be true or false, got {_show(value)}"
        return value, None
    if name == "temperature":
        if not _is_number(value) or not math.isfinite(float(value)) or float(value) < 0:  # type: ignore[arg-type]
            return None, f"gpo.temperature must be a number >= 0, got {_show(value)}"
        return float(value), None  # type: ignore[arg-type]
    if name in ("timeout", "max_cost"):
        if value is None and name == "max_cost":
            return None, None
        if not _is_number(value) or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
            return None, f"{key} must be a number > 0, got {_show(value)}"
        return float(value), None  # type: ignore[arg-type]
    if name == "split":
        return _check_split(value)
    if name == "fields":
        return _check_fields(value)
    if name == "check_alpha":
        if not _is_number(value) or not 0 < float(value) < 1:  # type: ignore[arg-type]
            return None, f"gpo.check_alpha must be a number between 0 and 1, got {_show(value)}"
        return float(value), None  # type: ignore[arg-type]
    if name == "check_tolerance":
        if not _is_number(value) or not 0 <= float(value) <= 100:  # type: ignore[arg-type]
            return None, (
                f"gpo.check_tolerance must be a number of points from 0 to 100, got {_show(value)}"
            )
        return float(value), None  # type: ignore[arg-type]
    raise AssertionError(f"no check for setting {name}")  # budget is checked by _check_budget


def _check_split(value: object) -> tuple[Any, str | None]:
    message = (
        "gpo.split must be three positive numbers (train, dev, test) summing to 1, "
        f"got {_show(value)}"
    )
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None, message
    if not all(_is_number(v) and math.isfinite(float(v)) and v > 0 for v in value):
        return None, message
    numbers = tuple(float(v) for v in value)
    if abs(sum(numbers) - 1.0) > 1e-6:
        return None, f"gpo.split must sum to 1, got {sum(numbers):g}"
    return numbers, None


def _check_fields(value: object) -> tuple[Any, str | None]:
    """gpo.fields: null (every field) or a non-empty list of dotted field paths."""
    if value is None:
        return None, None
    message = (
        "gpo.fields must be a non-empty list of field names (dotted paths such as "
        f"address.city for nested fields), got {_show(value)}"
    )
    if not isinstance(value, (list, tuple)) or not value:
        return None, message
    names = [name.strip() if isinstance(name, str) else "" for name in value]
    # "a..b" or ".a" would name no field at all and silently score nothing.
    if not all(name and all(name.split(".")) for name in names):
        return None, message
    return tuple(names), None


def _check_budget(
    raw: Mapping[str, object], base: BudgetSettings
) -> tuple[BudgetSettings | None, list[tuple[str | None, str]]]:
    """Check budget fields; errors carry the sub-key they belong to (None: the whole budget)."""
    errors: list[tuple[str | None, str]] = []
    values: dict[str, object] = {}
    for sub, value in raw.items():
        if sub not in _BUDGET_FIELDS:
            unknown = _unknown_message(f"gpo.budget.{sub}", _BUDGET_FIELDS, "gpo.budget.")
            errors.append((sub, unknown))
        elif sub == "decay":
            if value not in DECAYS:
                shown = value if isinstance(value, str) else _show(value)
                errors.append((sub, f"unknown decay '{shown}'; choose one of {', '.join(DECAYS)}"))
            else:
                values[sub] = value
        else:
            checked, message = _check_int(f"gpo.budget.{sub}", value, 0)
            if message is not None:
                errors.append((sub, message))
            else:
                values[sub] = checked
    if errors:
        return None, errors
    budget = dataclasses.replace(base, **values)  # type: ignore[arg-type]
    if budget.initial < budget.final:
        return None, [
            (
                None,
                f"gpo.budget: initial ({budget.initial}) must be >= final ({budget.final})",
            )
        ]
    return budget, []


def _cross_check(settings: Settings) -> list[tuple[str, str]]:
    """Checks that involve more than one setting, as (setting name, message)."""
    if settings.metric == "regex" and settings.pattern is None:
        return [("metric", "metric 'regex' needs gpo.pattern: a regular expression")]
    return []


def _unknown_message(key: str, known: tuple[str, ...] | list[str], prefix: str) -> str:
    candidates = [prefix + name for name in known]
    close = difflib.get_close_matches(key, candidates, n=1)
    if close:
        return f"unknown setting {key}; did you mean {close[0]}?"
    return f"unknown setting {key}; known settings: {', '.join(candidates)}"


# ---------------------------------------------------------------------------
# Frontmatter


def _key_locations(yaml_text: str, first_line: int) -> dict[str, tuple[int, int, Any]]:
    """Top-level key -> (line, column, value node), lines counted in the whole file."""
    try:
        root = yaml.compose(yaml_text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # parse_document accepted it, so this should not happen
        return {}
    found: dict[str, tuple[int, int, Any]] = {}
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            if isinstance(key_node, yaml.ScalarNode):
                mark = key_node.start_mark
                found[str(key_node.value)] = (first_line + mark.line, mark.column + 1, value_node)
    return found


def _node_key_locations(node: Any, line_offset: int) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                mark = key_node.start_mark
                found[str(key_node.value)] = (line_offset + mark.line, mark.column + 1)
    return found


def _settings_from(
    raw: Mapping[str, object], model: str | None, yaml_text: str, first_line: int, path: Path
) -> tuple[Settings, list[Problem]]:
    locations = _key_locations(yaml_text, first_line)
    problems: list[Problem] = []

    def where(key: str) -> tuple[int, int]:
        line, column, _ = locations.get(key, (1, 1, None))
        return line, column

    def add(key: str, message: str) -> None:
        line, column = where(key)
        problems.append(Problem(path, line, column, message))

    values: dict[str, object] = {}
    budget_raw: dict[str, object] = {}
    budget_where: dict[str, tuple[int, int]] = {}  # budget field -> its location
    budget_key: str | None = None  # the key the whole-budget errors point at
    for key, value in raw.items():
        if key == "gpo":
            add(
                key,
                "a nested 'gpo:' block is ignored by Dotprompt; "
                "write flat dotted keys such as 'gpo.metric: exact'",
            )
            continue
        if not key.startswith("gpo."):
            continue
        name = key[len("gpo.") :]
        if name == "budget":
            budget_key = budget_key or key
            if not isinstance(value, Mapping):
                add(
                    key,
                    "gpo.budget must be a mapping such as "
                    f"{{initial: 50, final: 10, decay: cosine}}, got {_show(value)}",
                )
                continue
            node = locations.get(key, (1, 1, None))[2]
            nested = _node_key_locations(node, first_line)
            for sub, sub_value in value.items():
                budget_raw[str(sub)] = sub_value
                budget_where[str(sub)] = nested.get(str(sub), where(key))
        elif name.startswith("budget."):
            # Flat form `gpo.budget.initial: 40`, in the spirit of dotted keys.
            sub = name[len("budget.") :]
            budget_key = budget_key or key
            budget_raw[sub] = value
            budget_where[sub] = where(key)
        elif name in _FIELDS:
            checked, message = _check_field(name, value)
            if message is not None:
                add(key, message)
            else:
                values[name] = checked
        else:
            add(key, _unknown_message(key, _FIELDS, "gpo."))

    if budget_raw or budget_key is not None:
        budget, errors = _check_budget(budget_raw, BudgetSettings())
        for sub, message in errors:
            line, column = (
                budget_where.get(sub, (1, 1)) if sub is not None else where(budget_key or "")
            )
            problems.append(Problem(path, line, column, message))
        if budget is not None:
            values["budget"] = budget

    settings = Settings(model=model, **values)  # type: ignore[arg-type]
    if not problems:
        for name, message in _cross_check(settings):
            add(f"gpo.{name}", message)
    return settings, problems


# ---------------------------------------------------------------------------
# Templates


# Dotprompt's own helpers and the Handlebars built-ins: names a tag may call
# without reading an input variable.
_HELPERS = frozenset(BUILTIN_HELPERS) | {"lookup", "log", "if", "unless", "each", "with"}
_CONTEXT_BLOCKS = frozenset({"each", "with"})
_LITERAL = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null|undefined")

# Screens templates (generated candidates included) without the file's
# folder: a partial reference renders empty here, since whether the partial
# exists is the file's concern (parse_prompt checks it with the real folders).
_SCREEN = PromptRenderer(None, (), lenient_partials=True)


def template_variables(template: str) -> tuple[str, ...]:
    """Input variables the template reads, in order of first use."""
    found: dict[str, None] = {}
    try:
        program = compile_template(template)
    except (ValueError, RecursionError):
        # A broken template still gets a best-effort answer from its simple tags.
        for _, body in _scan_tags(template):
            if body and re.fullmatch(r"[&{]?\s*[\w.\[\]/-]+\s*}?", body):
                _add_path(body.strip("&{} "), 0, frozenset(), found)
        return tuple(found)
    _walk(program, 0, frozenset(), found)
    return tuple(found)


def _walk(nodes: list[Node], depth: int, params: frozenset[str], found: dict[str, None]) -> None:
    for node in nodes:
        if isinstance(node, Mustache):
            _add_call(node.call, depth, params, found)
        elif isinstance(node, Block):
            call = node.call
            inner_depth = depth
            if call["name"] in _HELPERS or call["args"] or call["hash"]:
                _add_call(call, depth, params, found)
                if call["name"] in _CONTEXT_BLOCKS:
                    inner_depth = depth + 1
            elif not call["literal"]:
                # `{{#items}}...{{/items}}`: a Mustache section over a value.
                _add_path(call["name"], depth, params, found)
                inner_depth = depth + 1
            _walk(node.body, inner_depth, params | set(call["params"]), found)
            _walk(node.inverse, depth, params, found)
        elif isinstance(node, (Partial, PartialBlock)):
            if node.context_path:
                _add_expression(node.context_path, depth, params, found)
            for value in node.hash.values():
                _add_expression(str(value), depth, params, found)
            if isinstance(node, PartialBlock):
                _walk(node.body, depth, params, found)
        elif isinstance(node, InlinePartial):
            _walk(node.body, depth, params, found)


def _add_call(
    call: Mapping[str, Any], depth: int, params: frozenset[str], found: dict[str, None]
) -> None:
    if call["literal"]:
        return
    if call["args"] or call["hash"] or call["name"] in _HELPERS:
        for arg in call["args"]:
            _add_expression(arg, depth, params, found)
        for value in call["hash"].values():
            _add_expression(str(value), depth, params, found)
    else:
        _add_path(call["name"], depth, params, found)


def _add_expression(text: str, depth: int, params: frozenset[str], found: dict[str, None]) -> None:
    text = text.strip()
    if not text or text[0] in "\"'" or _LITERAL.fullmatch(text):
        return
    if text.startswith("(") and text.endswith(")"):
        bits = _split_args(text[1:-1])
        for bit in bits[1:]:  # bits[0] is the helper's name
            if "=" in bit and bit[0] not in "\"'(":
                bit = bit.split("=", 1)[1]
            _add_expression(bit, depth, params, found)
        return
    _add_path(text, depth, params, found)


def _split_args(text: str) -> list[str]:
    bits: list[str] = []
    buf: list[str] = []
    nesting = 0
    quote = ""
    for char in text:
        if quote:
            buf.append(char)
            quote = "" if char == quote else quote
            continue
        if char in "\"'":
            quote = char
        elif char in "([":
            nesting += 1
        elif char in ")]":
            nesting -= 1
        elif char.isspace() and nesting == 0:
            if buf:
                bits.append("".join(buf))
                buf = []
            continue
        buf.append(char)
    if buf:
        bits.append("".join(buf))
    return bits


def _add_path(path: str, depth: int, params: frozenset[str], found: dict[str, None]) -> None:
    if _LITERAL.fullmatch(path):  # {{123}}, {{true}} print literals
        return
    if path.startswith("@"):
        # @index, @key, @first... are loop data; only @root.x reads an input.
        match = re.match(r"@root[./](.+)", path)
        if not match:
            return
        path, depth = match.group(1), 0
    ups = 0
    while path.startswith("../"):
        path = path[3:]
        ups += 1
    if depth - ups > 0:  # inside #each/#with: the name belongs to the item, not the inputs
        return
    for prefix in ("this.", "this/", "./"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    match = re.match(r"\[([^\]]*)\]|[^./\[]+", path)
    if not match:
        return
    first = match.group(1) if match.group(1) is not None else match.group(0)
    if not first or first in ("this", "..", ".") or first in params:
        return
    found.setdefault(first, None)


_COMMENT = re.compile(r"\{\{~?!--.*?--~?\}\}", re.DOTALL)


def _scan_tags(text: str) -> list[tuple[int, str | None]]:
    """(offset, tag body) for each `{{...}}`; body None for a tag never closed.

    Only used to point at the tag a Handlebars error is about: Handlebars
    reports what went wrong but not where.
    """
    tags: list[tuple[int, str | None]] = []
    index = 0
    while True:
        start = text.find("{{", index)
        if start < 0:
            return tags
        if text[start - 1 : start] == "\\" and text[start - 2 : start - 1] != "\\":
            index = start + 2  # \{{ is literal text
            continue
        comment = _COMMENT.match(text, start)
        if comment:
            tags.append((start, "!"))
            index = comment.end()
            continue
        triple = text.startswith("{{{", start) or text.startswith("{{~{", start)
        end = text.find("}}}" if triple else "}}", start + 2)
        if end < 0:
            tags.append((start, None))
            return tags
        body = text[start + 2 : end].strip().strip("~{").strip()
        tags.append((start, body))
        index = end + (3 if triple else 2)


def _tag_name(body: str) -> str:
    body = body.lstrip("#^/>&* ").strip()
    return body.split()[0] if body.split() else ""


def _locate_template_error(body: str, message: str) -> int | None:
    """Offset in `body` of the tag a Handlebars error is about, None if unknown."""
    tags = _scan_tags(body)
    if message.startswith("unclosed tag") or message.startswith("unclosed raw"):
        for offset, tag in tags:
            if tag is None:
                return offset
    if message == "empty tag":
        for offset, tag in tags:
            if tag is not None and not _tag_name(tag) and not tag.startswith("!"):
                return offset
    helper = (re.match(r'Missing helper: "(.*)"', message)
              or re.match(r"The partial (\S+) could not be found", message)
              or re.match(r"partial '([^']+)' not found", message)
              or re.match(r"circular partials: (\S+)", message))
    role = re.search(r"unknown role '([^']*)'", message)
    if role:
        for offset, tag in tags:
            if tag is not None and _tag_name(tag) == "role" and role.group(1) in tag:
                return offset
    if helper:
        for offset, tag in tags:
            if tag is not None and not tag.startswith("!") and _tag_name(tag) == helper.group(1):
                return offset
    stack: list[tuple[str, int]] = []
    for offset, tag in tags:
        if tag is None or tag.startswith("!"):
            continue
        if tag.startswith(("#", "^")):
            stack.append((_tag_name(tag), offset))
        elif tag.startswith("/"):
            if stack and stack[-1][0] == _tag_name(tag):
                stack.pop()
            else:
                return offset
        elif (tag == "else" or tag.startswith("else ")) and not stack:
            return offset
    if stack:
        return stack[-1][1]
    quoted = re.match(r"(\S+) is not (valid|a valid number|defined)", message)
    if quoted:
        for offset, tag in tags:
            if tag is not None and quoted.group(1) in tag:
                return offset
    return None


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def template_error(template: str) -> str | None:
    """Why Dotprompt cannot compile or render `template`, or None when it can.

    Use it to screen generated candidates before they are scored.
    """
    try:
        # Rendering finds unknown helpers and roles; with every variable set
        # and with none, both branches of simple conditionals get visited.
        _SCREEN.render_sync(template, RowData({name: "x" for name in template_variables(template)}))
        _SCREEN.render_sync(template, RowData())
    except ConfigError as error:
        return str(error).removeprefix("template error: ")
    return None


def _template_problems(body: str, body_line: int, path: Path) -> list[Problem]:
    message = template_error(body)
    if message is None:
        return []
    offset = _locate_template_error(body, message)
    line, column = _line_column(body, offset) if offset is not None else (1, 1)
    return [Problem(path, body_line + line - 1, column, f"template error: {message}")]


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
        settings, problems = _settings_from(
            parsed.raw or {}, parsed.model, identified.frontmatter, identified.content_line, path
        )
        problems += _call_problems(parsed, identified.frontmatter, identified.content_line, path)
        meta, schema_problems = dotprompt_meta(parsed)
        where = _key_locations(identified.frontmatter, identified.content_line)
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
        problems.extend(_template_problems(body, body_line, path))
        if not problems:  # partials and roles, with the file's real folders
            problems.extend(_render_problems(prompt))
    if problems:
        raise SourceError(sorted(problems, key=lambda p: (p.line, p.column)))
    return prompt


def _call_problems(parsed: Any, yaml_text: str, first_line: int, path: Path) -> list[Problem]:
    """`model:` and `config:` values the task call cannot send, at their lines."""
    locations = _key_locations(yaml_text, first_line)
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
        nested = _node_key_locations(locations.get("config", (1, 1, None))[2], first_line)
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
        offset = _locate_template_error(prompt.body, message)
        line, column = _line_column(prompt.body, offset) if offset is not None else (1, 1)
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
