"""Template analysis: the input variables a template reads, and why it cannot render.

Dotprompt renders (gpo_engine.rendering); this module reads the Handlebars
parse tree to find variables, screens candidate templates, and points at the
tag a Handlebars error is about, which Handlebars itself does not say.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotpromptz.helpers import BUILTIN_HELPERS
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

from gpo_engine.errors import ConfigError, Problem
from gpo_engine.rendering import PromptRenderer, RowData

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


# One tag as the optimizer's meta-prompts list it: {{x}}, {{{x}}}, {{#if x}} ...
_TAG = re.compile(r"\{\{\{?.*?\}?\}\}", re.DOTALL)


def template_tags(text: str) -> list[str]:
    """Distinct Handlebars tags ({{x}}, {{{x}}}, {{#if x}} ...) in order of appearance."""
    return list(dict.fromkeys(_TAG.findall(text)))


def without_tags(text: str) -> str:
    """`text` with each Handlebars tag replaced by a space: the words around them."""
    return _TAG.sub(" ", text)


@dataclass
class _Names:
    """Names found so far, in order of first use."""

    nested: bool  # also names read inside #each / #with: the fields of their items
    found: dict[str, None] = field(default_factory=dict)


def template_variables(template: str) -> tuple[str, ...]:
    """Input variables the template reads, in order of first use."""
    return _names(template, nested=False)


def template_names(template: str) -> tuple[str, ...]:
    """Every name the template's tags read, in order of first use: its input
    variables and the fields it reads of the items `#each` / `#with` step
    into. Helpers, literals, `@` data and block parameters are not names.

    The optimizer rejects a candidate that reads a name the current prompt
    never read: it would render as an empty string (update.generate).
    """
    return _names(template, nested=True)


def _names(template: str, nested: bool) -> tuple[str, ...]:
    names = _Names(nested)
    try:
        program = compile_template(template)
    except (ValueError, RecursionError):
        # A broken template still gets a best-effort answer from its simple tags.
        for _, body in _scan_tags(template):
            if body and re.fullmatch(r"[&{]?\s*[\w.\[\]/-]+\s*}?", body):
                _add_path(body.strip("&{} "), 0, frozenset(), names)
        return tuple(names.found)
    _walk(program, 0, frozenset(), names)
    return tuple(names.found)


def _walk(nodes: list[Node], depth: int, params: frozenset[str], names: _Names) -> None:
    for node in nodes:
        if isinstance(node, Mustache):
            _add_call(node.call, depth, params, names)
        elif isinstance(node, Block):
            call = node.call
            inner_depth = depth
            if call["name"] in _HELPERS or call["args"] or call["hash"]:
                _add_call(call, depth, params, names)
                if call["name"] in _CONTEXT_BLOCKS:
                    inner_depth = depth + 1
            elif not call["literal"]:
                # `{{#items}}...{{/items}}`: a Mustache section over a value.
                _add_path(call["name"], depth, params, names)
                inner_depth = depth + 1
            _walk(node.body, inner_depth, params | set(call["params"]), names)
            _walk(node.inverse, depth, params, names)
        elif isinstance(node, (Partial, PartialBlock)):
            if node.context_path:
                _add_expression(node.context_path, depth, params, names)
            for value in node.hash.values():
                _add_expression(str(value), depth, params, names)
            if isinstance(node, PartialBlock):
                _walk(node.body, depth, params, names)
        elif isinstance(node, InlinePartial):
            _walk(node.body, depth, params, names)


def _add_call(
    call: Mapping[str, Any], depth: int, params: frozenset[str], names: _Names
) -> None:
    if call["literal"]:
        return
    if call["args"] or call["hash"] or call["name"] in _HELPERS:
        for arg in call["args"]:
            _add_expression(arg, depth, params, names)
        for value in call["hash"].values():
            _add_expression(str(value), depth, params, names)
    else:
        _add_path(call["name"], depth, params, names)


def _add_expression(text: str, depth: int, params: frozenset[str], names: _Names) -> None:
    text = text.strip()
    if not text or text[0] in "\"'" or _LITERAL.fullmatch(text):
        return
    if text.startswith("(") and text.endswith(")"):
        bits = _split_args(text[1:-1])
        for bit in bits[1:]:  # bits[0] is the helper's name
            if "=" in bit and bit[0] not in "\"'(":
                bit = bit.split("=", 1)[1]
            _add_expression(bit, depth, params, names)
        return
    _add_path(text, depth, params, names)


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


def _add_path(path: str, depth: int, params: frozenset[str], names: _Names) -> None:
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
    if depth - ups > 0 and not names.nested:
        return  # inside #each/#with: the name belongs to the item, not the inputs
    for prefix in ("this.", "this/", "./"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    match = re.match(r"\[([^\]]*)\]|[^./\[]+", path)
    if not match:
        return
    first = match.group(1) if match.group(1) is not None else match.group(0)
    if not first or first in ("this", "..", ".") or first in params:
        return
    names.found.setdefault(first, None)


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


def locate_template_error(body: str, message: str) -> int | None:
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


def line_column(text: str, offset: int) -> tuple[int, int]:
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


def template_problems(body: str, body_line: int, path: Path) -> list[Problem]:
    message = template_error(body)
    if message is None:
        return []
    offset = locate_template_error(body, message)
    line, column = line_column(body, offset) if offset is not None else (1, 1)
    return [Problem(path, body_line + line - 1, column, f"template error: {message}")]
