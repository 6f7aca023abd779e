"""What the application sends: a prompt rendered by Dotprompt itself.

Every evaluation, optimization, check, report and preview renders through
`PromptRenderer`, which drives `dotpromptz.Dotprompt` (the official Python
implementation, the one a Genkit application runs): roles, `{{history}}`,
`{{media}}`, `{{section}}`, partials, `input.default` and `@state`/context
data come out exactly as Dotprompt makes them. Nothing here re-implements
Handlebars or Dotprompt's message splitting.

Partials are resolved as Genkit's prompt folder does: `{{> name}}` reads
`_name.prompt` beside the prompt (`{{> sub/name}}` reads `sub/_name.prompt`),
then the same name in the configured partials folder (`gpo.partials`).

`to_chat` turns Dotprompt's messages into the chat messages litellm sends
(role `model` becomes `assistant`; media become content parts), reading
local media files relative to the example file as `data:` URIs.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import mimetypes
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from dotpromptz import DataArgument, Dotprompt, PartialCycleError, ResolverFailedError
from dotpromptz.typing import Message as DotMessage
from dotpromptz.typing import ParsedPrompt, PromptMetadata

from gpo_engine.errors import ConfigError

T = TypeVar("T")

ROLES = ("system", "user", "model", "tool")
# Dotprompt's `model` is the assistant in every chat API litellm speaks.
CHAT_ROLE = {"system": "system", "user": "user", "model": "assistant", "tool": "tool"}
PARTIAL_SUFFIX = ".prompt"
_PARTIAL_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)*$")


@dataclass(frozen=True)
class Part:
    """One content part: text, or media (a URL or a `data:` URI)."""

    text: str | None = None
    url: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.url is not None:
            media: dict[str, Any] = {"url": self.url}
            if self.content_type:
                media["contentType"] = self.content_type
            out["media"] = media
        elif self.text is not None:  # None: a section marker, metadata only
            out["text"] = self.text
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True)
class Message:
    """A message as Dotprompt renders it: role system | user | model | tool."""

    role: str
    parts: tuple[Part, ...]
    metadata: Mapping[str, Any] | None = None

    @property
    def text(self) -> str:
        return "".join(p.text or "" for p in self.parts if p.url is None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": [p.to_json() for p in self.parts]}
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True)
class RowData:
    """What one example row gives the renderer (Dotprompt's DataArgument)."""

    input: Mapping[str, Any] = field(default_factory=dict)
    messages: Sequence[Mapping[str, Any]] = ()  # history, Dotprompt's message shape
    context: Mapping[str, Any] | None = None  # @state / @auth ... (`data.context`)
    docs: Sequence[Mapping[str, Any]] = ()


def drive(coroutine: Awaitable[T]) -> T:
    """Run a coroutine that never really suspends, without an event loop.

    Dotprompt's API is async, but with our synchronous partial resolver its
    compile and render never wait on anything. This lets synchronous callers
    (file parsing, diagnostics in the language server) render even from
    inside a running loop, where asyncio.run is not allowed.
    """
    coro = coroutine.__await__()
    try:
        next(coro)
    except StopIteration as done:
        return done.value
    coro.close()
    raise Suspended("the coroutine waited on the event loop")


class Suspended(RuntimeError):
    """drive() met a coroutine that really waits; run it on an event loop instead."""


def run_blocking(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to the end from synchronous code, even inside a running loop."""
    try:
        return drive(make())
    except (Suspended, anyio.NoEventLoopError):  # it needs a real loop (anyio task groups)
        pass
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]


def partial_file(name: str, folder: Path) -> Path:
    """`{{> name}}` -> folder/_name.prompt; `{{> sub/name}}` -> folder/sub/_name.prompt."""
    head, _, tail = name.rpartition("/")
    return folder / head / f"_{tail}{PARTIAL_SUFFIX}" if head else folder / f"_{name}.prompt"


class PromptRenderer:
    """One prompt file's Dotprompt: its frontmatter, its partial folders.

    `render(body, row)` renders a template body (the file's own or a
    candidate) with the file's frontmatter, exactly as Dotprompt would render
    the file with that body. Compiled templates are kept per body.
    """

    def __init__(self, parsed: ParsedPrompt[Any] | None, folders: Sequence[Path], *,
                 lenient_partials: bool = False) -> None:
        self._parsed = parsed
        self._folders = tuple(folders)
        self._lenient = lenient_partials  # an unknown partial renders empty
        self.partials_read: dict[str, Path] = {}  # partial name -> the file it came from
        self._dotprompt = Dotprompt(partial_resolver=self._resolve_partial,
                                    helpers={"log": _quiet_log})
        self._compiled: dict[str, Any] = {}

    async def _resolve_partial(self, name: str) -> str | None:
        # Async on purpose: Dotprompt awaits an async resolver directly, while a
        # sync one goes to a worker thread, which needs a running event loop.
        if not _PARTIAL_NAME.match(name) or ".." in name.split("/"):
            return None  # never read outside the partial folders
        for folder in self._folders:
            path = partial_file(name, folder)
            if path.is_file():
                self.partials_read[name] = path
                return path.read_text(encoding="utf-8")
        return "" if self._lenient else None

    def _missing_partial(self, error: LookupError) -> str:
        found = re.search(r"for '([^']*)'", str(error))
        name = found.group(1) if found else "?"
        where = ", ".join(str(partial_file(name, f)) for f in self._folders)
        return f"partial '{name}' not found: looked for {where}"

    def _prompt_for(self, body: str) -> ParsedPrompt[Any]:
        if self._parsed is None:
            return ParsedPrompt[Any](template=body)
        # Schemas do not change the messages, and Dotprompt would convert them
        # again on every render (in a task group, which needs an event loop).
        updates: dict[str, Any] = {"template": body, "output": None}
        if self._parsed.input is not None:
            updates["input"] = self._parsed.input.model_copy(update={"schema": None})
        return self._parsed.model_copy(update=updates)

    async def _compile(self, body: str) -> Any:
        compiled = self._compiled.get(body)
        if compiled is None:
            try:
                compiled = await self._dotprompt.compile(self._prompt_for(body))  # type: ignore[arg-type]
            except PartialCycleError as error:
                raise ConfigError(f"circular partials: {' -> '.join(error.cycle)}") from error
            except LookupError as error:  # the resolver found no file
                raise ConfigError(self._missing_partial(error)) from error
            except ResolverFailedError as error:
                raise ConfigError(f"template error: {error}") from error
            except (ValueError, RecursionError) as error:
                raise ConfigError(f"template error: {error}") from error
            if len(self._compiled) > 256:  # candidates come and go; keep memory bounded
                self._compiled.clear()
            self._compiled[body] = compiled
        return compiled

    async def render(self, body: str, row: RowData | None = None,
                     options: Mapping[str, Any] | None = None) -> tuple[Message, ...]:
        """Dotprompt's messages for `body` and one row. ConfigError when it cannot render.

        `options` is render-time metadata as an application passes it in code
        (e.g. `{"input": {"default": {...}}}`); a `.prompt` file has none."""
        row = row or RowData()
        compiled = await self._compile(body)
        data = DataArgument[Any](
            input=dict(row.input),
            messages=[DotMessage.model_validate(m) for m in row.messages] or None,
            context=dict(row.context) if row.context is not None else None,
            docs=list(row.docs) or None,  # type: ignore[arg-type]
        )
        try:
            extra = PromptMetadata[Any].model_validate(options) if options else None
            rendered = await compiled(data, extra)
        except (ValueError, RecursionError, TypeError, KeyError) as error:
            raise ConfigError(f"template error: {_reason(error)}") from error
        return tuple(_message(m) for m in rendered.messages)

    def render_sync(self, body: str, row: RowData | None = None,
                    options: Mapping[str, Any] | None = None) -> tuple[Message, ...]:
        """render() for synchronous callers (parsing, diagnostics, previews)."""
        return run_blocking(lambda: self.render(body, row, options))

    def metadata(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The prompt's metadata as Dotprompt merges it for a render (config, input,
        output with JSON Schemas, raw, ext), as plain JSON values."""
        prompt = self._parsed if self._parsed is not None else ParsedPrompt[Any](template="")
        extra = PromptMetadata[Any].model_validate(options) if options else None
        merged = run_blocking(lambda: self._dotprompt.render_metadata(prompt, extra))
        return merged.model_dump(exclude_none=True, by_alias=True)


def _quiet_log(params: list[Any], options: Any) -> str:
    # Handlebars' own `log` prints to stdout, which would corrupt the language
    # server's stdio stream; a prompt never needs it.
    return ""


def _reason(error: BaseException) -> str:
    text = str(error)
    # Dotprompt reports an unknown role as pydantic/enum's "'x' is not a valid Role".
    found = re.search(r"'([^']*)' is not a valid Role", text)
    if found:
        return f"unknown role '{found.group(1)}'; Dotprompt knows {', '.join(ROLES)}"
    return text


def _message(message: Any) -> Message:
    role = message.role.value if hasattr(message.role, "value") else str(message.role)
    parts: list[Part] = []
    for part in message.content:
        metadata = getattr(part, "metadata", None) or None
        media = getattr(part, "media", None)
        if media is not None:
            parts.append(Part(url=media.url, content_type=media.content_type, metadata=metadata))
        elif getattr(part, "text", None) is not None:
            parts.append(Part(text=part.text, metadata=metadata))
        else:  # a pending section marker: metadata only, as Dotprompt keeps it
            parts.append(Part(text=None, metadata=metadata))
    return Message(role, tuple(parts), dict(message.metadata) if message.metadata else None)


# ---------------------------------------------------------------- to litellm


def to_chat(messages: Sequence[Message], media_folder: Path | None = None) -> list[dict[str, Any]]:
    """The chat messages litellm sends for Dotprompt's messages.

    A message of text only is sent as a string, the shape every provider
    takes; media make it a list of content parts. Trailing white space at the
    end of a message is dropped: a text file's final newline is not part of
    what the author means to send, and a base model reads "Answer:\n" as a new
    paragraph instead of an answer. Local media paths are read relative to
    `media_folder` and sent as `data:` URIs.
    """
    chat: list[dict[str, Any]] = []
    for message in messages:
        role = CHAT_ROLE.get(message.role, message.role)
        content = [p for p in message.parts if p.url is not None or p.text]
        if all(p.url is None for p in content):
            chat.append({"role": role, "content": message.text.rstrip()})
            continue
        items: list[dict[str, Any]] = []
        for index, part in enumerate(content):
            if part.url is None:
                text = part.text or ""
                items.append({"type": "text",
                              "text": text.rstrip() if index == len(content) - 1 else text})
            else:
                items.append(_media_item(part, media_folder))
        chat.append({"role": role, "content": items})
    return chat


def _media_item(part: Part, folder: Path | None) -> dict[str, Any]:
    url = part.url or ""
    content_type = part.content_type
    if not re.match(r"^(https?|data|gs):", url):
        url, content_type = _data_uri(url, content_type, folder)
    kind = (content_type or _type_of_url(url) or "").split("/")[0]
    if kind == "audio":
        data = url.split(",", 1)[1] if url.startswith("data:") else url
        fmt = (content_type or "audio/wav").split("/")[-1]
        return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
    if kind == "image" or not kind:
        image: dict[str, Any] = {"url": url}
        if content_type:
            image["format"] = content_type
        return {"type": "image_url", "image_url": image}
    # Video and documents: litellm's generic file part (Gemini, Vertex, Anthropic PDFs).
    file: dict[str, Any] = {"file_data": url} if url.startswith("data:") else {"file_id": url}
    if content_type:
        file["format"] = content_type
    return {"type": "file", "file": file}


def _type_of_url(url: str) -> str | None:
    if url.startswith("data:"):
        return url[5:].split(";", 1)[0].split(",", 1)[0] or None
    return mimetypes.guess_type(url)[0]


def _data_uri(path_text: str, content_type: str | None, folder: Path | None) -> tuple[str, str]:
    path = Path(path_text.removeprefix("file://"))
    if not path.is_absolute() and folder is not None:
        path = folder / path
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"media file {path}: {error.strerror or error}") from error
    kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}", kind

