"""`gpo lsp`: the language server for `.prompt` files (pygls, stdio).

A thin adapter. Handlers read what the server already holds and convert it
with the plain modules beside this one: the document's own problems
(lsp_documents, parsed locally, so an unsaved buffer is checked as typed),
and the prompt state the daemon last answered (prompt_state), cached per
file. Everything that takes time runs in background tasks: fetching state,
following a job's event stream into `$/progress`, scoring. No handler waits
on a model, and this process never imports litellm (the daemon does the
model calls; `gpo_server.client` is the only way to it).

Capabilities are static (no dynamic registration, no showDocument), so VS
Code and Neovim 0.7 get the same server; example files are watched by the
client (VS Code's file watcher, the Neovim plugin's save hook) and reported
with workspace/didChangeWatchedFiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import from_fs_path, to_fs_path

from gpo_engine import __version__
from gpo_server import runtime
from gpo_server.lsp_actions import (
    COMMAND_OPTIMIZE,
    COMMAND_RESCORE,
    COMMAND_STOP,
    OFFERED_KINDS,
    apply_data,
    apply_title,
    offered_actions,
    resolve_apply,
    resolves_edits,
)
from gpo_server.lsp_diagnostics import (
    diagnostics_by_file,
    failure_diagnostic,
    suggestion_diagnostic,
)
from gpo_server.lsp_documents import Analysis, analyze, read_lossy
from gpo_server.lsp_edits import suggested_document
from gpo_server.lsp_hover import hover_markdown, messages_line, scoring_now
from gpo_server.lsp_link import Link, job_token, lost_message, reconnect_delay, stale_view
from gpo_server.lsp_settings import LspSettings, client_address, parse_settings
from gpo_server.prompt_state import PromptState, ScoredPrompt, Summary, normalize, parse_state
from gpo_server.runtime import DaemonError

if TYPE_CHECKING:
    from gpo_server.client import DaemonClient

log = logging.getLogger("gpo.lsp")

SUGGESTION_REQUEST = "gpo/suggestion"  # editors/vscode src/preview.ts
CHANGE_DELAY = 0.15  # seconds of typing quiet before a changed buffer is checked again
CONFIG_TIMEOUT = 5.0  # seconds to wait for workspace/configuration
T = TypeVar("T")


@dataclass
class OpenDocument:
    uri: str
    path: Path | None  # None for documents that are not files (untitled:)
    analysis: Analysis | None = None
    analyzed: str | None = None  # the text `analysis` is of
    examples_published: frozenset[str] = frozenset()  # example-file URIs we sent diagnostics to


class Utf16Protocol(LanguageServerProtocol):
    """pygls with UTF-16 positions whatever the client prefers.

    Every position gpo sends is counted in UTF-16 code units (text_positions),
    which LSP requires every client to speak. pygls would otherwise take the
    client's first choice (Emacs 29+ eglot offers utf-32 first) and the columns
    of a line with an emoji would be off."""

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, Any]:
        general = params.capabilities.general
        if general is not None and general.position_encodings:
            params.capabilities.general = attrs.evolve(
                general, position_encodings=[types.PositionEncodingKind.Utf16])
        return (yield from super().lsp_initialize(params))

    def structure_message(self, data: dict[str, Any]) -> Any:
        """pygls drops a request whose params it cannot type (a position with line -1 or
        beyond 2^31 - 1, out of LSP's uinteger): the client would wait forever. Such a
        request gets an answer: null (nothing there), or InvalidParams for gpo's own
        request, whose params are gpo's to define."""
        try:
            return super().structure_message(data)
        except (JsonRpcInvalidParams, JsonRpcInternalError):
            if not (isinstance(data, dict) and "id" in data and "method" in data
                    and isinstance(data["id"], (int, str)) and data.get("jsonrpc") == "2.0"):
                raise
            if data["method"] == SUGGESTION_REQUEST:
                self._send_response(data["id"], error=types.ResponseError(
                    code=JsonRpcInvalidParams.CODE, message="invalid gpo/suggestion params"))
            else:
                self._send_response(data["id"], result=None)
            # Handled: what pygls goes on with is a notification nobody listens to.
            return JsonRPCNotification(method="$/gpo/unreadableRequest", jsonrpc="2.0",
                                       params=None)


class GpoServer(LanguageServer):
    """The server's state: settings, open documents, cached prompt states, jobs followed."""

    def __init__(self, runtime_dir: Path | None = None, daemon_args: Iterable[str] = ()) -> None:
        super().__init__("gpo", __version__, protocol_cls=Utf16Protocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.runtime_dir = runtime_dir
        self.daemon_args = tuple(daemon_args)
        self.settings = LspSettings()
        self.roots: set[Path] = set()
        self.documents: dict[str, OpenDocument] = {}
        self.states: dict[str, PromptState] = {}  # resolved path -> last state from the daemon
        self.current: dict[str, tuple[str, Summary, Summary | None]] = {}  # path -> daemon's
        self.measured: dict[tuple[str, str], tuple[Summary, Summary | None]] = {}  # re-scores
        self.followers: dict[str, asyncio.Task[None]] = {}  # job id -> event-stream follower
        self.progress_jobs: dict[str, str] = {}  # progress token -> job id
        self.progress_tasks: dict[str, asyncio.Task[Any]] = {}  # progress token -> scoring task
        self.pending: dict[str, asyncio.Task[None]] = {}  # uri -> delayed check of a change
        self.tasks: set[asyncio.Task[Any]] = set()
        self._client: DaemonClient | None = None
        self._client_lock: asyncio.Lock | None = None
        self._registered: set[Path] = set()
        self._tokens = itertools.count(1)
        self._warned_unreachable = False
        self.link: Link = "unknown"  # see lsp_link
        self._reconnector: asyncio.Task[None] | None = None
        self._follows: dict[str, int] = {}  # job id -> times followed (for fresh tokens)
        self.file_texts: dict[str, str] = {}  # resolved path -> the file's body, per daemon
        self.scoring: dict[tuple[str, str], int] = {}  # (path, body) -> re-scores under way

    # -- small helpers ---------------------------------------------------------

    def spawn(self, work: Awaitable[T]) -> asyncio.Task[T]:
        """Run `work` in the background; errors are logged, never lost or fatal."""
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("background task failed: %r", exc, exc_info=exc)
            self.log(types.MessageType.Error, f"internal error: {exc!r}")

    def log(self, kind: types.MessageType, message: str) -> None:
        self.window_log_message(types.LogMessageParams(type=kind, message=f"gpo: {message}"))

    def tell(self, kind: types.MessageType, message: str) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"GPO: {message}"))

    def text_of(self, uri: str) -> str:
        return self.workspace.get_text_document(uri).source

    def apply_settings(self, value: Any, origin: str) -> None:
        settings, warnings = parse_settings(plain(value))
        for warning in warnings:
            self.log(types.MessageType.Warning, f"{origin}: {warning}")
        if settings.daemon_address != self.settings.daemon_address and self._client is not None:
            self.spawn(self._drop_client())
        self.settings = settings

    # -- the daemon --------------------------------------------------------------

    async def daemon(self) -> DaemonClient:
        """The daemon client, connecting (and starting the daemon) on first use."""
        if self._client_lock is None:
            self._client_lock = asyncio.Lock()
        async with self._client_lock:
            if self._client is None:
                self._client = await self._connect()
                self._registered = set()
                self._warned_unreachable = False
            client = self._client
            missing = {r for r in self.roots if r not in self._registered and r.is_dir()}
            if missing:
                try:
                    await client.register_roots(sorted(missing))
                except DaemonError as exc:
                    if exc.status == 0:  # gone: the next call connects (and starts) again
                        self._client = None
                        await client.close()
                    raise
                self._registered |= missing
            return client

    async def _connect(self) -> DaemonClient:
        # aiohttp (~0.1 s) is imported here, after `initialize` has been answered.
        from gpo_server.client import DaemonClient, connect

        address = self.settings.daemon_address
        if address:
            full = client_address(address)
            token = runtime.read_token(runtime.ensure_runtime_dir(self.runtime_dir)) \
                if full.startswith("http://") else None
            return DaemonClient(full, token)
        try:
            return await connect(self.runtime_dir, daemon_args=self.daemon_args)
        except (runtime.RuntimeDirError, OSError) as exc:
            raise DaemonError(0, "unreachable", f"cannot start the gpo daemon: {exc}") from exc

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _forget(self, client: DaemonClient | None) -> None:
        """Drop `client` if it is still the one in use: the next request connects again,
        starting the daemon when none serves."""
        if client is not None and client is self._client:
            await self._drop_client()

    async def call(self, request: Callable[[DaemonClient], Awaitable[T]]) -> T:
        """One daemon request. When a link that was up breaks, the user is told (once) and
        the request is sent once more, to a daemon started again on demand: an action
        after `gpo daemon stop` works instead of failing."""
        for attempt in range(2):
            was = self.link
            client: DaemonClient | None = None
            try:
                client = await self.daemon()
                result = await request(client)
            except DaemonError as exc:
                if exc.status != 0:
                    raise
                await self._forget(client)
                self.link_broken(exc)
                if was != "up" or attempt:
                    raise
                continue
            self.link_restored()
            return result
        raise AssertionError("the loop above returns or raises")

    def link_broken(self, exc: DaemonError) -> None:
        """The daemon stopped answering: tell the user once, show the state as stale, and
        reconnect in the background."""
        if self.link != "up":
            self.report_unreachable(exc)
            return
        self.link = "down"
        self.tell(types.MessageType.Warning, lost_message(exc.message))
        for doc in list(self.documents.values()):
            self.publish(doc)  # the failed job's warning, if any, is from before
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = self.spawn(self._reconnect())

    def link_restored(self) -> None:
        """A request was answered; after an outage, fetch every open file's state again
        (which follows a resumed job under a fresh progress token)."""
        previous, self.link = self.link, "up"
        if previous != "down":
            return
        self._warned_unreachable = False
        self.log(types.MessageType.Info, "reconnected to the gpo daemon")
        for doc in list(self.documents.values()):
            if doc.path is not None:
                self.spawn(self.refresh(doc.path))

    async def _reconnect(self) -> None:
        attempt = 0
        while self.link == "down":
            await asyncio.sleep(reconnect_delay(attempt))
            attempt += 1
            with contextlib.suppress(DaemonError):
                await self.call(lambda c: c.health())

    def report_unreachable(self, exc: DaemonError) -> None:
        if not self._warned_unreachable:
            self._warned_unreachable = True
            self.log(types.MessageType.Warning, f"{exc.message}; scores and suggestions are "
                     "unavailable until it answers")

    def add_root_for(self, path: Path) -> None:
        """A file opened outside every workspace folder gets its folder registered."""
        if not any(path.is_relative_to(root) for root in self.roots):
            self.roots.add(path.parent)

    # -- documents and diagnostics ---------------------------------------------

    def key(self, path: Path) -> str:
        return str(path.resolve())

    async def check(self, uri: str, delay: float = 0.0) -> None:
        """Parse the buffer and its example set (off the loop), then publish diagnostics."""
        if delay:
            await asyncio.sleep(delay)
        doc = self.documents.get(uri)
        if doc is None:
            return
        text = self.text_of(uri)
        path = doc.path or Path(to_fs_path(uri) or "untitled.prompt")
        analysis = await asyncio.to_thread(analyze, text, path, with_examples=doc.path is not None)
        if self.documents.get(uri) is not doc or self.text_of(uri) != text:
            return  # closed or changed meanwhile: a newer check is on its way
        doc.analysis, doc.analyzed = analysis, text
        self.publish(doc)

    def schedule_check(self, uri: str) -> None:
        previous = self.pending.pop(uri, None)
        if previous is not None:
            previous.cancel()
        self.pending[uri] = self.spawn(self.check(uri, CHANGE_DELAY))

    def prompt_of(self, doc: OpenDocument) -> Any:
        """The parsed prompt of the buffer as it is now, or None when it has problems."""
        text = self.text_of(doc.uri)
        if doc.analysis is not None and doc.analyzed == text:
            return doc.analysis.prompt
        path = doc.path or Path(to_fs_path(doc.uri) or "untitled.prompt")
        return analyze(text, path, with_examples=False).prompt

    def state_for(self, doc: OpenDocument, body: str) -> PromptState | None:
        """The cached state of the document's file, with scores measured for `body` added."""
        if doc.path is None:
            return None
        key = self.key(doc.path)
        state = self.states.get(key)
        if state is None:
            return None
        current = self.current.get(key)
        if current is not None and normalize(current[0]) == normalize(body):
            state = with_scores(state, body, current[1], current[2])
        measured = self.measured.get((key, normalize(body)))
        if measured is not None:
            state = with_scores(state, body, *measured)
        return stale_view(state, self.link)

    def publish(self, doc: OpenDocument) -> None:
        analysis = doc.analysis
        if analysis is None:
            return
        text = doc.analyzed or ""
        path = doc.path or Path(to_fs_path(doc.uri) or "untitled.prompt")
        expected = [path] + ([analysis.examples_path] if analysis.examples_path else [])

        def read_text(p: Path) -> str | None:
            return text if p == path else read_lossy(p)

        grouped = diagnostics_by_file(analysis.problems, read_text, expected)
        own = grouped.pop(path, [])
        prompt = analysis.prompt
        if prompt is not None:
            state = self.state_for(doc, prompt.body)
            suggestion = state.suggestion_for(prompt.body) if state is not None else None
            if state is not None and suggestion is not None and suggestion.distance <= state.budget:
                own.append(suggestion_diagnostic(text, len(prompt.frontmatter), suggestion))
            if state is not None and state.job is not None and state.job.status == "failed":
                own.append(failure_diagnostic(text, len(prompt.frontmatter), state.job))
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=doc.uri, diagnostics=own))
        published = set()
        for other, diagnostics in grouped.items():
            uri = from_fs_path(str(other)) or other.as_uri()
            published.add(uri)
            self.text_document_publish_diagnostics(
                types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics))
        for stale in doc.examples_published - published:
            if not self._example_in_use(stale, doc):
                self.text_document_publish_diagnostics(
                    types.PublishDiagnosticsParams(uri=stale, diagnostics=[]))
        doc.examples_published = frozenset(published)

    def _example_in_use(self, uri: str, besides: OpenDocument) -> bool:
        return any(uri in d.examples_published for d in self.documents.values() if d is not besides)

    def documents_of(self, key: str) -> list[OpenDocument]:
        return [d for d in self.documents.values()
                if d.path is not None and self.key(d.path) == key]

    # -- prompt state ------------------------------------------------------------

    async def refresh(self, path: Path) -> None:
        """Ask the daemon for the file's state, re-publish, and follow an active job."""
        key = self.key(path)
        try:
            raw = await self.call(lambda c: c.prompt_state(key))
            state = parse_state(raw)
        except DaemonError as exc:
            if exc.status == 0:
                self.report_unreachable(exc)
            elif exc.code != "invalid_source":  # the file's own diagnostics say why
                self.log(types.MessageType.Warning, f"no state for {path.name}: {exc.message}")
            return
        except ValueError as exc:
            self.log(types.MessageType.Error, f"the daemon's answer for {path.name}: {exc}")
            return
        self.states[key] = state
        if isinstance(raw.get("text"), str):
            self.file_texts[key] = raw["text"]
        current = current_scores(raw)
        if current is not None:
            self.current[key] = current
        for doc in self.documents_of(key):
            self.publish(doc)
        if state.job is not None and state.job.active:
            self.follow(state.job.id, key)

    # -- jobs and progress -------------------------------------------------------

    def follow(self, job_id: str, key: str) -> None:
        if job_id not in self.followers and self.documents_of(key):
            self.followers[job_id] = self.spawn(self._follow(job_id, key))

    async def begin_progress(self, token: str, title: str) -> bool:
        """Create a work-done progress when the client supports it (both editors do)."""
        window = self.client_capabilities.window
        if window is None or not window.work_done_progress:
            return False
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), CONFIG_TIMEOUT)
        except Exception as exc:  # refused or unanswered: carry on without a progress bar
            self.log(types.MessageType.Log, f"no progress bar: {exc}")
            return False
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=title, cancellable=True, message="starting", percentage=0))
        return True

    async def _follow(self, job_id: str, key: str) -> None:
        self._follows[job_id] = self._follows.get(job_id, 0) + 1
        token = job_token(job_id, self._follows[job_id])
        name = Path(key).name
        shown = await self.begin_progress(token, f"GPO: optimizing {name}")
        self.progress_jobs[token] = job_id
        last: dict[str, Any] | None = None
        client: DaemonClient | None = None
        state = self.states.get(key)
        total = state.total_steps if state is not None else 0
        try:
            client = await self.daemon()
            async for event in client.events(job_id):
                last = event
                total = int(event.get("total_steps") or 0) or total
                report = progress_report(event, total)
                if shown and report is not None:
                    message, percentage = report
                    self.work_done_progress.report(token, types.WorkDoneProgressReport(
                        message=message, percentage=percentage, cancellable=True))
                if event.get("kind") in ("job_started", "step_finished"):
                    await self.refresh(Path(key))  # the file's text scored; a step's result
        except DaemonError as exc:
            if exc.status == 0:
                await self._forget(client)
                self.link_broken(exc)
            else:
                self.log(types.MessageType.Warning, f"lost the progress of {name}: "
                         f"{exc.message}")
        finally:
            self.progress_jobs.pop(token, None)
            self.followers.pop(job_id, None)
            if shown:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(
                    message=end_message(last, self.link == "down")))
        if last is not None and last.get("kind") == "end" and last.get("state") == "failed":
            self.tell(types.MessageType.Warning,
                      f"optimizing {name} failed: {last.get('error') or 'no reason given'}")
        if self.link != "down":  # else the reconnection fetches it, and follows the job again
            await self.refresh(Path(key))

    async def optimize(self, doc: OpenDocument) -> dict[str, Any]:
        path = self.require_file(doc)
        if path.exists() and read_lossy(path) != self.text_of(doc.uri):
            self.tell(types.MessageType.Info, f"optimizing the saved {path.name}; save to "
                      "include your latest edits")
        self.add_root_for(path)
        job, _ = await self.call(lambda c: c.create_job(path, self.settings.overrides()))
        self.follow(str(job["id"]), self.key(path))
        self.spawn(self.refresh(path))  # code actions offer "Stop optimizing" from now on
        return job

    async def stop(self, doc: OpenDocument) -> dict[str, Any] | None:
        key = self.key(self.require_file(doc))
        jobs = await self.call(lambda c: c.jobs())
        active = [j for j in jobs if j.get("path") == key
                  and j.get("state") in ("queued", "running", "waiting", "failing")]
        if not active:
            return None
        job = await self.call(lambda c: c.cancel(str(active[-1]["id"])))
        self.spawn(self.refresh(Path(key)))
        return job

    def start_rescore(self, doc: OpenDocument, body: str) -> None:
        """Mark `body` as being scored (the hover says so from this moment) and score it
        in the background: scoring takes model calls."""
        mark = (self.key(self.require_file(doc)), normalize(body))
        self.scoring[mark] = self.scoring.get(mark, 0) + 1
        self.spawn(self._rescore_marked(doc, body, mark))

    async def _rescore_marked(self, doc: OpenDocument, body: str, mark: tuple[str, str]
                              ) -> None:
        try:
            await self.rescore(doc, body)
        finally:
            left = self.scoring.pop(mark, 1) - 1
            if left:
                self.scoring[mark] = left

    def is_scoring(self, doc: OpenDocument, body: str, state: PromptState | None) -> bool:
        if doc.path is None:
            return False
        key = self.key(doc.path)
        return scoring_now(state, body, self.file_texts.get(key),
                           (key, normalize(body)) in self.scoring)

    async def rescore(self, doc: OpenDocument, body: str) -> None:
        """Score the buffer's body on dev and test in the daemon, under a progress bar."""
        path = self.require_file(doc)
        key = self.key(path)
        token = f"gpo-score-{next(self._tokens)}"
        this = asyncio.current_task()
        if this is not None:
            self.progress_tasks[token] = this
        shown = await self.begin_progress(token, f"GPO: scoring {path.name}")
        outcome = "cancelled"
        try:
            self.add_root_for(path)
            out = await self.call(lambda c: c.evaluate(path, text=body,
                                                       overrides=self.settings.overrides()))
            dev = summary_of(out.get("dev"))
            if dev is not None:
                self.measured[(key, normalize(body))] = (dev, summary_of(out.get("test")))
                outcome = f"dev {dev.score:.1f}"
        except DaemonError as exc:
            outcome = "failed"
            self.tell(types.MessageType.Warning, f"scoring {path.name} failed: {exc.message}")
        finally:
            self.progress_tasks.pop(token, None)
            if shown:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=outcome))
        await self.refresh(path)

    def require_file(self, doc: OpenDocument) -> Path:
        if doc.path is None:
            raise ValueError("save the prompt as a file first")
        return doc.path

    async def examples_changed(self, paths: Iterable[Path]) -> None:
        """An example file changed on disk: check and re-score every open prompt using it."""
        changed = {p.resolve() for p in paths}

        def uses(analysis: Analysis | None) -> bool | None:
            """True: uses a changed file; None: uses none yet (one may have appeared)."""
            if analysis is None or analysis.examples_path is None:
                return None
            return analysis.examples_path.resolve() in changed

        for doc in list(self.documents.values()):
            if uses(doc.analysis) is False:
                continue  # another prompt's example file
            await self.check(doc.uri)
            analysis = doc.analysis
            if analysis is None or not uses(analysis) or doc.path is None:
                continue
            if analysis.prompt is not None and not analysis.errors:
                self.start_rescore(doc, analysis.prompt.body)
            else:
                self.spawn(self.refresh(doc.path))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self._drop_client()


# ---------------------------------------------------------------------------
# Pure conversions (tested directly)


def plain(value: Any) -> Any:
    """pygls hands unknown JSON objects over as namedtuples; turn them back into dicts."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def summary_of(value: Any) -> Summary | None:
    """A Summary from the daemon's score object ({score, n, low, high}), None if absent."""
    if not isinstance(value, Mapping) or not isinstance(value.get("score"), int | float):
        return None
    low, high = value.get("low"), value.get("high")
    return Summary(score=float(value["score"]), n=int(value.get("n") or 0),
                   low=float(low) if isinstance(low, int | float) else None,
                   high=float(high) if isinstance(high, int | float) else None)


def current_scores(raw: Mapping[str, Any]) -> tuple[str, Summary, Summary | None] | None:
    """The daemon's measured scores of the file's text (`text` and `current`), if any."""
    current = raw.get("current")
    text = raw.get("text")
    if not isinstance(current, Mapping) or not isinstance(text, str):
        return None
    dev = summary_of(current.get("dev"))
    return None if dev is None else (text, dev, summary_of(current.get("test")))


def with_scores(state: PromptState, text: str, dev: Summary, test: Summary | None
                ) -> PromptState:
    """The state with `text` scored as measured: a re-score of a text outside the trajectory
    (a fresh file, a hand edit) shows in the hover like the evaluated ones, and a re-score
    after the example set changed replaces the trajectory's older numbers."""
    known = state.lookup(text)
    if known is not None:
        fresh = replace(known, dev=dev, test=test if test is not None else known.test)
        return replace(state, scored=tuple(fresh if item is known else item
                                           for item in state.scored))
    return replace(state, scored=(*state.scored, ScoredPrompt(text, state.steps_done, dev, test)))


def progress_report(event: Mapping[str, Any], known_total: int = 0
                    ) -> tuple[str, int | None] | None:
    """(message, percentage) for a job event of the daemon's stream; None: nothing to say.

    `known_total`: T from the job's earlier events or state, for an event without it (an
    older daemon's candidate events), so no message says "step 1/0"."""
    kind = event.get("kind")
    total = int(event.get("total_steps") or 0) or known_total

    def pct(done: int) -> int | None:
        return min(100, round(100 * done / total)) if total else None

    if kind == "state":
        state = str(event.get("state"))
        if state in ("waiting", "failing"):
            return f"{state}: {event.get('error') or 'model calls fail'}; retrying", None
        return (state, None) if state in ("queued", "running") else None
    if kind == "job_started":
        done = int(event.get("resumed_at") or 0)
        return f"step {done}/{total}, dev {float(event.get('initial_dev') or 0):.1f}", pct(done)
    step = int(event.get("step") or 0)
    if kind == "step_started":
        return (f"step {step + 1}/{total}: writing candidates (budget {event.get('budget')} "
                "words)", pct(step))
    if kind == "candidate_scored":
        return (f"step {step + 1}/{total}: candidate {int(event.get('index') or 0) + 1} "
                f"scored {float(event.get('score') or 0):.1f}"), None
    if kind == "step_finished":
        return f"step {step + 1}/{total} done, best dev {float(event.get('best_dev') or 0):.1f}", \
            pct(step + 1)
    return None


def end_message(event: Mapping[str, Any] | None, daemon_gone: bool = False) -> str:
    if event is None or event.get("kind") != "end":
        return ("paused: the gpo daemon stopped; it goes on when the daemon is back"
                if daemon_gone else "stopped following")
    state = str(event.get("state"))
    result = event.get("result") or {}
    if state == "finished" and isinstance(result, Mapping) and "best_dev" in result:
        best = summary_of(result.get("best_dev"))
        return f"finished, best dev {best.score:.1f}" if best else "finished"
    if state == "failed":
        return f"failed: {event.get('error') or 'no reason given'}"
    return state


def _uri_argument(args: tuple[Any, ...]) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ValueError("expected one argument: the document's URI")
    return args[0]


# ---------------------------------------------------------------------------
# Handlers: fetch what is held, convert, return.


def make_server(runtime_dir: Path | None = None, daemon_args: Iterable[str] = ()) -> GpoServer:
    server = GpoServer(runtime_dir, daemon_args)

    def document(uri: str) -> OpenDocument:
        doc = server.documents.get(uri)
        if doc is None:
            raise ValueError(f"{uri} is not an open document")
        return doc

    @server.feature(types.INITIALIZE)
    def initialize(ls: GpoServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options, "initializationOptions")
        folders = params.workspace_folders or []
        uris = [f.uri for f in folders] or ([params.root_uri] if params.root_uri else [])
        for uri in uris:
            path = to_fs_path(uri)
            if path:
                ls.roots.add(Path(path))

    @server.feature(types.INITIALIZED)
    async def initialized(ls: GpoServer, params: types.InitializedParams) -> None:
        ls.spawn(pull_configuration(ls))
        ls.spawn(register_roots(ls))

    async def register_roots(ls: GpoServer) -> None:
        try:
            # Connects (starting the daemon), registers the roots, and marks the link up.
            await ls.call(lambda c: c.health())
        except DaemonError as exc:
            ls.report_unreachable(exc)

    async def pull_configuration(ls: GpoServer) -> None:
        # Only asked of clients that say they answer (Neovim 0.7 does not say so; its
        # plugin sends the same object as initializationOptions instead).
        workspace = ls.client_capabilities.workspace
        if workspace is None or not workspace.configuration:
            return
        params = types.ConfigurationParams(items=[types.ConfigurationItem(section="gpo")])
        try:
            answer = await asyncio.wait_for(ls.workspace_configuration_async(params),
                                            CONFIG_TIMEOUT)
        except Exception as exc:
            ls.log(types.MessageType.Log, f"workspace/configuration unanswered: {exc!r}")
            return
        if answer and answer[0] is not None:
            ls.apply_settings(answer[0], "workspace/configuration")

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def changed_configuration(ls: GpoServer,
                                    params: types.DidChangeConfigurationParams) -> None:
        pushed = plain(params.settings)
        if isinstance(pushed, Mapping) and isinstance(pushed.get("gpo"), Mapping):
            ls.apply_settings(pushed["gpo"], "didChangeConfiguration")
        else:
            await pull_configuration(ls)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    async def changed_folders(ls: GpoServer,
                              params: types.DidChangeWorkspaceFoldersParams) -> None:
        for folder in params.event.added:
            path = to_fs_path(folder.uri)
            if path:
                ls.roots.add(Path(path))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    async def did_open(ls: GpoServer, params: types.DidOpenTextDocumentParams) -> None:
        uri = params.text_document.uri
        fs_path = to_fs_path(uri) if uri.startswith("file:") else None
        doc = OpenDocument(uri, Path(fs_path) if fs_path else None)
        ls.documents[uri] = doc
        await ls.check(uri)
        if doc.path is not None:
            ls.add_root_for(doc.path)
            ls.spawn(ls.refresh(doc.path))

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: GpoServer, params: types.DidChangeTextDocumentParams) -> None:
        if params.text_document.uri in ls.documents:
            ls.schedule_check(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
    async def did_save(ls: GpoServer, params: types.DidSaveTextDocumentParams) -> None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            return
        await ls.check(doc.uri)
        if doc.path is None:
            return
        analysis = doc.analysis
        if ls.settings.auto_optimize_on_save and analysis is not None and not analysis.errors:
            ls.spawn(optimize_quietly(ls, doc))
        else:
            ls.spawn(ls.refresh(doc.path))

    async def optimize_quietly(ls: GpoServer, doc: OpenDocument) -> None:
        try:
            await ls.optimize(doc)
        except DaemonError as exc:
            ls.tell(types.MessageType.Warning, f"could not start optimizing: {exc.message}")

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: GpoServer, params: types.DidCloseTextDocumentParams) -> None:
        doc = ls.documents.pop(params.text_document.uri, None)
        pending = ls.pending.pop(params.text_document.uri, None)
        if pending is not None:
            pending.cancel()
        if doc is None:
            return
        ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=doc.uri, diagnostics=[]))
        for uri in doc.examples_published:
            if not ls._example_in_use(uri, doc):
                ls.text_document_publish_diagnostics(
                    types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def watched(ls: GpoServer, params: types.DidChangeWatchedFilesParams) -> None:
        paths = [Path(p) for p in (to_fs_path(c.uri) for c in params.changes) if p]
        await ls.examples_changed(paths)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: GpoServer, params: types.HoverParams) -> types.Hover | None:
        doc = ls.documents.get(params.text_document.uri)
        prompt = ls.prompt_of(doc) if doc is not None else None
        if doc is None or prompt is None:
            return None  # the diagnostics say what to fix first
        sample = doc.analysis.sample if doc.analysis is not None else None
        state = ls.state_for(doc, prompt.body)
        markdown = hover_markdown(state, prompt.body, messages=messages_line(prompt, sample),
                                  daemon_down=ls.link == "down",
                                  scoring=ls.is_scoring(doc, prompt.body, state))
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                                        value=markdown))

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=list(OFFERED_KINDS), resolve_provider=True))
    def code_action(ls: GpoServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        doc = ls.documents.get(params.text_document.uri)
        prompt = ls.prompt_of(doc) if doc is not None else None
        if doc is None or prompt is None:
            return []
        return offered_actions(ls.state_for(doc, prompt.body), prompt, doc.uri,
                               params.context.only, resolves_edits(ls.client_capabilities))

    @server.feature(types.CODE_ACTION_RESOLVE)
    def resolve(ls: GpoServer, action: types.CodeAction) -> types.CodeAction:
        found = apply_data(action)
        doc = ls.documents.get(found[0]) if found else None
        prompt = ls.prompt_of(doc) if doc is not None else None
        if doc is None or prompt is None:
            if found is None:
                return action
            return attrs.evolve(action, disabled=types.CodeActionDisabled(
                reason="the document is closed or has problems to fix first"))
        return resolve_apply(action, ls.state_for(doc, prompt.body), prompt)

    @server.feature(SUGGESTION_REQUEST)
    def suggestion(ls: GpoServer, params: Any) -> dict[str, str] | None:
        given = plain(params)
        document = given.get("textDocument") if isinstance(given, Mapping) else None
        uri = document.get("uri") if isinstance(document, Mapping) else None
        if not isinstance(uri, str):
            raise JsonRpcInvalidParams(
                "gpo/suggestion takes {\"textDocument\": {\"uri\": string}}")
        doc = ls.documents.get(uri)
        prompt = ls.prompt_of(doc) if doc is not None else None
        if doc is None or prompt is None:
            return None
        state = ls.state_for(doc, prompt.body)
        found = state.suggestion_for(prompt.body) if state is not None else None
        if state is None or found is None or found.distance > state.budget:
            return None
        return {"text": suggested_document(prompt, found.text),
                "title": apply_title(found, state.budget)}

    @server.command(COMMAND_OPTIMIZE)
    async def optimize(ls: GpoServer, *args: Any) -> dict[str, Any]:
        job = await ls.optimize(document(_uri_argument(args)))
        return {"job": job["id"], "state": job["state"]}

    @server.command(COMMAND_STOP)
    async def stop(ls: GpoServer, *args: Any) -> dict[str, Any] | None:
        job = await ls.stop(document(_uri_argument(args)))
        return None if job is None else {"job": job["id"], "state": job["state"]}

    @server.command(COMMAND_RESCORE)
    def rescore(ls: GpoServer, *args: Any) -> None:
        doc = document(_uri_argument(args))
        prompt = ls.prompt_of(doc)
        if prompt is None:
            raise ValueError("fix the prompt's problems before scoring it")
        ls.start_rescore(doc, prompt.body)

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    async def cancel_progress(ls: GpoServer, params: types.WorkDoneProgressCancelParams) -> None:
        token = str(params.token)
        task = ls.progress_tasks.get(token)
        if task is not None:
            task.cancel()
        job_id = ls.progress_jobs.get(token)
        if job_id is not None:
            with contextlib.suppress(DaemonError):
                await ls.call(lambda c: c.cancel(job_id))

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: GpoServer, params: None) -> None:
        await ls.close()  # the daemon and its jobs live on for the other editors

    return server


def main(runtime_dir: Path | None = None, daemon_args: Iterable[str] = ()) -> None:
    """Serve over stdio until the client exits."""
    make_server(runtime_dir, daemon_args).start_io()
