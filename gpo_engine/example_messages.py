"""A row's `messages`: the conversation history Dotprompt's `{{history}}` shows,
checked and brought to Dotprompt's shape (content always a list of parts)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from gpo_engine.example_rows import json_value

MESSAGE_ROLES = ("system", "user", "model", "tool")  # Dotprompt's roles; "model" is the assistant


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
    return cast(dict[str, Any], json_value(raw))


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
