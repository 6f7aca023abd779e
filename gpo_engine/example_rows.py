"""Example rows' values: their JSON types, and the frontmatter's input.schema.

A row value keeps the type its file gives it (JSON and YAML) or that
input.schema gives its CSV cell; `Rules` says what a row's input fields must
satisfy: the template's variables, input.default, and input.schema checked
with jsonschema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
from dotpromptz import picoschema_to_json_schema

from gpo_engine.errors import ConfigError
from gpo_engine.rendering import Suspended, drive


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
        # Without a resolver the conversion never waits, so it runs to the end
        # in one step; asyncio.run would refuse inside the daemon's and the
        # language server's running event loops.
        converted = drive(picoschema_to_json_schema(schema))
    except ValueError as error:
        raise ConfigError(f"input.schema: {error}") from None
    except Suspended:
        raise ConfigError("input.schema: converting it would need a schema resolver") from None
    if converted is None:
        return None
    schema_validator(converted)
    return dict(converted)


def schema_validator(schema: Mapping[str, Any]) -> Any:
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
class Rules:
    """What a row's input fields must satisfy."""

    variables: tuple[str, ...]  # the template's input variables
    defaults: Mapping[str, Any]  # input.default
    validator: Any  # a jsonschema validator of input.schema, or None
    # Fields every row must carry itself; with a schema only the CSV header
    # check uses them (the schema reports a row's missing fields).
    required: tuple[str, ...]
    types: Mapping[str, tuple[str, ...]]  # input.schema's type of each top-level field


def row_rules(
    variables: Sequence[str],
    input_schema: Mapping[str, Any] | None,
    defaults: Mapping[str, Any] | None,
) -> Rules:
    filled = dict(defaults or {})
    if input_schema is None:
        required = tuple(name for name in variables if name not in filled)
        return Rules(tuple(variables), filled, None, required, {})
    validator = schema_validator(input_schema)
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
    return Rules(tuple(variables), filled, validator, required, types)


def value_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def json_value(value: object) -> Any:
    """A row value as JSON holds it: YAML's dates and other scalars become text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    return value_text(value)


def typed_cell(text: str, kinds: Sequence[str]) -> Any:
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


def _json_path(parts: Sequence[object]) -> str:
    """'items[0].name' for the path of a value inside a row."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def schema_problems(rules: Rules, values: Mapping[str, Any]) -> list[tuple[str, str | None]]:
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
