"""Checking the daemon's requests, and the one place errors become JSON.

`guard` (the middleware) refuses browsers and strangers, counts activity for
the idle timeout, and turns every error into `{"error": {"code", "message"}}`:
an `ApiError` a handler raised with its status, or aiohttp's own 4xx. The
checkers raise ApiError naming the field, path or rule a request broke.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gpo_engine.errors import ConfigError, SourceError
from gpo_engine.examples import find_examples_path
from gpo_engine.promptfile import load_prompt
from gpo_engine.task import Task
from gpo_server.daemon_state import OVERRIDABLE, STATE, DaemonState


class ApiError(Exception):
    """A request the daemon refuses; becomes a JSON error body with `status`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_body(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}},
                             status=status)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse browsers and strangers, count activity, and turn every error into JSON."""
    state = request.app[STATE]
    state.last_activity = time.monotonic()
    if "Origin" in request.headers:
        # Only a browser sends Origin; no web page may drive the daemon (DNS rebinding, CSRF).
        return error_body(403, "origin_refused", "requests with an Origin header are refused")
    if state.token is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {state.token}".encode()):
            return error_body(401, "unauthorized",
                              "missing or wrong bearer token (see the daemon's token file)")
    state.busy += 1
    try:
        return await handler(request)
    except ApiError as exc:
        return error_body(exc.status, exc.code, exc.message, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.text if exc.text and exc.status != 413 else exc.reason
        if exc.status == 413:
            message = f"request body too large (limit {state.config.max_body} bytes)"
        return error_body(exc.status, code, message or exc.reason)
    finally:
        state.busy -= 1
        state.last_activity = time.monotonic()


# ---------------------------------------------------------------- input checks


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; 400 for anything else, 413 when over the size limit."""
    raw = await request.read()  # raises 413 past client_max_size
    try:
        data = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # thousands of nested arrays: no request of ours nests so deep
        raise ApiError(400, "bad_json", "the request body nests too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the request body must be a JSON object")
    return data


def field_of(data: dict[str, Any], name: str, kind: type | tuple[type, ...],
             required: bool = True, default: Any = None) -> Any:
    """A typed field of a request body; 400 naming the field when missing or mistyped."""
    if name not in data or data[name] is None:
        if required:
            raise ApiError(400, "missing_field", f"`{name}` is required")
        return default
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        value = object()  # a bool is an int to Python, never to us
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ApiError(400, "wrong_type", f"`{name}` must be of type {names}")
    return value


def checked_path(state: DaemonState, raw: str) -> Path:
    """An absolute path inside a registered workspace root (symlinks resolved), else 4xx."""
    if not raw or "\x00" in raw:
        raise ApiError(400, "bad_path", "`path` must be a non-empty path")
    path = Path(raw)
    if not path.is_absolute():
        raise ApiError(400, "bad_path", f"`path` must be absolute, got {raw!r}")
    resolved = path.resolve()
    inside(state, resolved, raw)
    return resolved


def inside(state: DaemonState, resolved: Path, shown: str, rule: str = "") -> None:
    if not any(resolved.is_relative_to(root) for root in state.roots):
        hint = ("no workspace root is registered" if not state.roots
                else "it is outside every registered workspace root")
        raise ApiError(403, "outside_roots",
                       f"refusing {shown}: {hint}" + (f" ({rule})" if rule else ""))


def checked_overrides(data: dict[str, Any]) -> dict[str, Any]:
    overrides = field_of(data, "overrides", dict, required=False, default={})
    unknown = sorted(set(overrides) - OVERRIDABLE)
    if unknown:
        raise ApiError(400, "bad_settings", f"unknown override(s): {', '.join(unknown)}; "
                       f"allowed: {', '.join(sorted(OVERRIDABLE))}")
    return dict(overrides)


async def load_checked(state: DaemonState, path: Path, overrides: dict[str, Any]) -> Task:
    """Parse the prompt and its examples: 404, 422 or 400 for a missing, broken or
    misconfigured file."""
    if not path.is_file():
        raise ApiError(404, "file_not_found", f"{path} is not a file")

    def load() -> Task:
        # The example set may be named in the frontmatter (`gpo.examples: /etc/passwd`)
        # or be a symlink out of the workspace: confined before a byte of it is read.
        examples = examples_location(path, overrides)
        inside(state, examples.resolve(), str(examples),
               rule="the example set must be inside a registered workspace root "
               "(symlinks resolved)")
        return state.registry.load_task(str(path), overrides)

    try:
        task = await asyncio.to_thread(load)
    except SourceError as exc:
        problems = [{"path": str(p.path), "line": p.line, "column": p.column,
                     "message": p.message, "severity": p.severity} for p in exc.problems]
        raise ApiError(422, "invalid_source", str(exc), problems=problems) from None
    except ConfigError as exc:
        raise ApiError(400, "bad_settings", str(exc)) from None
    return task


def examples_location(path: Path, overrides: dict[str, Any]) -> Path:
    """Where load_task will read the prompt's example set, found as it finds it."""
    prompt = load_prompt(path)
    changes = {k: v for k, v in overrides.items() if v is not None}
    settings = prompt.settings.replace(**changes) if changes else prompt.settings
    return find_examples_path(prompt.path, settings.examples)
