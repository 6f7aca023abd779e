"""Which part of a multi-message template the optimizer rewrites.

A Dotprompt body can hold several messages (`{{role "system"}}...{{role
"user"}}...`), a `{{history}}` slot, partials and block helpers. GPO rewrites
instruction text, never the structure around it: `structure` lists the tags a
candidate must keep, in order, and `target_of` finds the message whose text is
the instruction (`gpo.target`), so the optimizer model only ever sees that
text and has no role marker to mangle. Pure text logic, no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

TARGETS = ("system", "user", "all")

# One mustache: a long comment (it may hold "}}"), a triple-stash, or any other tag.
_MUSTACHE = re.compile(
    r"\{\{~?!--.*?--~?\}\}"
    r"|\{\{~?\{.*?\}~?\}\}"
    r"|\{\{.*?\}\}",
    re.DOTALL,
)
# Helpers whose tags are structure rather than text: Dotprompt's message parts
# (role, history, section, media) and `json`, which shapes how a value is shown.
_STRUCTURAL_HELPERS = frozenset({"role", "history", "section", "media", "json"})
# Tag arguments: runs of non-space characters in which quoted strings may hold spaces.
_ARGUMENT = re.compile(r"""(?:"[^"]*"|'[^']*'|[^\s"'])+""")
_SINGLE_QUOTED = re.compile(r"'([^']*)'")
_BLOCK_SIGILS = ("#>", "#*", "#", "^", "/", ">")


@dataclass(frozen=True)
class _Tag:
    start: int
    end: int
    key: str  # the normalised tag, e.g. {{role "system"}}
    kind: str  # "open" | "close" | "else" | "role" | "history" | "other"
    name: str  # the block's helper name for open/close, the role for "role", else ""


def _escaped(body: str, start: int) -> bool:
    # Handlebars prints `\{{x}}` as the literal text `{{x}}`; `\\{{x}}` is a
    # backslash followed by a real tag.
    return body[start - 1 : start] == "\\" and body[start - 2 : start - 1] != "\\"


def _arguments(text: str) -> list[str]:
    # 'system' and "system" are the same literal; spacing between arguments is not meaning.
    return [_SINGLE_QUOTED.sub(r'"\1"', arg) for arg in _ARGUMENT.findall(text)]


def _unquote(arg: str) -> str:
    return arg[1:-1] if len(arg) >= 2 and arg[0] == arg[-1] == '"' else arg


def _classify(raw: str, start: int, end: int) -> _Tag | None:
    """The structural tag `raw` is, or None for text-like tags (variables, comments)."""
    inner = raw[2:-2].strip().removeprefix("~").removesuffix("~").strip()
    if not inner or inner[0] in "!{&":
        return None
    sigil = next((s for s in _BLOCK_SIGILS if inner.startswith(s)), "")
    args = _arguments(inner[len(sigil) :])
    if sigil == "^" and not args:  # {{^}} is another spelling of {{else}}
        return _Tag(start, end, "{{else}}", "else", "")
    if sigil:
        spacer = " " if sigil.endswith(">") else ""
        key = "{{" + sigil + spacer + " ".join(args) + "}}"
        kind = "close" if sigil == "/" else "other" if sigil == ">" else "open"
        return _Tag(start, end, key, kind, args[0] if args else "")
    if not args:
        return None
    key = "{{" + " ".join(args) + "}}"
    if args[0] == "else":
        return _Tag(start, end, key, "else", "")
    if args[0] not in _STRUCTURAL_HELPERS:
        return None  # a variable or an inline helper call: the variable checks cover it
    if args[0] == "role":
        return _Tag(start, end, key, "role", _unquote(args[1]) if len(args) > 1 else "")
    return _Tag(start, end, key, "history" if args[0] == "history" else "other", "")


def _tags(body: str) -> Iterator[_Tag]:
    for match in _MUSTACHE.finditer(body):
        if _escaped(body, match.start()):
            continue
        tag = _classify(match.group(0), match.start(), match.end())
        if tag is not None:
            yield tag


def structure(body: str) -> tuple[str, ...]:
    """The structural tags of a template, normalised, in order.

    Role markers, `{{history}}`, `{{section}}`, `{{media}}`, `{{json}}`,
    partial references and block helpers' open, `{{else}}` and close tags.
    Plain variables and inline helper calls are left out: the variable checks
    already guard them, and a candidate may move a variable within its text.
    """
    return tuple(tag.key for tag in _tags(body))


def structure_change(before: Sequence[str], after: Sequence[str]) -> str:
    """What `after` did to the structural tags of `before`, in words; '' when nothing."""
    if tuple(before) == tuple(after):
        return ""
    dropped = Counter(before) - Counter(after)
    added = Counter(after) - Counter(before)
    parts = []
    if dropped:
        parts.append("drops " + ", ".join(_in_order(before, dropped)))
    if added:
        parts.append("adds " + ", ".join(_in_order(after, added)))
    if parts:
        return "; ".join(parts)
    # Same tags, other order: show the stretch between the common start and end.
    head = next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)
    tail = next(i for i, (a, b) in enumerate(zip(before[::-1], after[::-1], strict=True))
                if a != b)
    return (f"reorders {' '.join(before[head : len(before) - tail])} "
            f"into {' '.join(after[head : len(after) - tail])}")


def _in_order(tags: Sequence[str], wanted: Counter[str]) -> list[str]:
    left = Counter(wanted)
    found = []
    for tag in tags:
        if left[tag] > 0:
            left[tag] -= 1
            found.append(tag)
    return found


@dataclass(frozen=True)
class Target:
    """A template split around the text the optimizer rewrites: before + text + after."""

    before: str
    text: str
    after: str
    which: str  # what was chosen in the end: "system", "user" or "all" (the whole body)

    def whole(self, text: str) -> str:
        """The template with `text` in place of the target text."""
        return self.before + text + self.after


@dataclass(frozen=True)
class _Message:
    role: str
    start: int
    end: int


def _messages(body: str, boundaries: Sequence[_Tag]) -> list[_Message]:
    """The template's message texts (role markers and {{history}} cut them), blank ones too."""
    # Text before any role marker is a user message, as Dotprompt renders it;
    # text right after {{history}} continues as a model message.
    messages = []
    role, start = "user", 0
    for tag in boundaries:
        messages.append(_Message(role, start, tag.start))
        role, start = (tag.name if tag.kind == "role" else "model"), tag.end
    messages.append(_Message(role, start, len(body)))
    return messages


def _balanced(text: str) -> bool:
    """Whether every block in `text` opens and closes inside it (and no {{else}} is left over)."""
    open_blocks: list[str] = []
    for tag in _tags(text):
        if tag.kind == "open":
            open_blocks.append(tag.name)
        elif tag.kind == "close":
            if not open_blocks or open_blocks.pop() != tag.name:
                return False
        elif tag.kind == "else" and not open_blocks:
            return False
    return not open_blocks


def target_of(body: str, which: str = "system") -> Target:
    """The part of `body` the optimizer rewrites under `gpo.target: which`.

    "system": the first system message's text. "user": the last user message's
    text; the last, because that is the one that carries the row's input (the
    earlier ones are usually worked examples). "all": the whole body.

    Falls back to the whole body (`which` "all", before and after empty, so the
    optimizer sees exactly what it saw before targets existed) when the body
    has no role marker or {{history}} (one message), when there is no such
    message or it is blank, and when the message is not a balanced unit: a
    block opened outside it and closed inside (`{{#if x}}{{role "system"}}...
    {{/if}}`) cannot be rewritten on its own. The message's leading and
    trailing whitespace stays in before/after, so a candidate's spacing never
    moves a role boundary.
    """
    if which not in TARGETS:
        raise ValueError(f"unknown target {which!r}; choose one of {', '.join(TARGETS)}")
    whole = Target("", body, "", "all")
    boundaries = [tag for tag in _tags(body) if tag.kind in ("role", "history")]
    if which == "all" or not boundaries:
        return whole
    candidates = [m for m in _messages(body, boundaries)
                  if m.role == which and body[m.start : m.end].strip()]
    if not candidates:
        return whole
    chosen = candidates[0] if which == "system" else candidates[-1]
    segment = body[chosen.start : chosen.end]
    if not _balanced(segment):
        return whole
    lead = chosen.start + len(segment) - len(segment.lstrip())
    text = segment.strip()
    return Target(body[:lead], text, body[lead + len(text) :], which)
