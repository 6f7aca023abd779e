"""`gpo lsp`: the language server for `.prompt` files (pygls, stdio).

A thin adapter. Handlers read what the server already holds and convert it
with the plain modules beside this one. The server's state has three parts,
each in its own module: the open documents, their analysis and diagnostics
(lsp_open_documents; parsed in worker processes within a time limit, so an
unsaved buffer is checked as typed and a pathological one delays no other);
the link to the daemon and the prompt states it answered (lsp_daemon); and
the jobs and re-scores followed as `$/progress` (lsp_progress). Everything
that takes time runs in background tasks. No handler waits on a model, and
this process never imports litellm (the daemon does the model calls;
`gpo_server.client` is the only way to it).

Capabilities are static (no dynamic registration, no showDocument), so VS
Code and Neovim 0.7 get the same server; example files are watched by the
client (VS Code's file watcher, the Neovim plugin's save hook) and reported
with workspace/didChangeWatchedFiles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from gpo_engine import __version__
from gpo_server.lsp_actions import (
    COMMAND_OPTIMIZE,
    COMMAND_RESCORE,
    COMMAND_STOP,
    OFFERED_KINDS,
    apply_data,
    apply_title,
    offered_actions,
    offered_suggestion,
    resolve_apply,
    resolves_edits,
)
from gpo_server.lsp_analysis import Analyzer, limit_from_environment
from gpo_server.lsp_daemon import DaemonLink
from gpo_server.lsp_edits import suggested_document
from gpo_server.lsp_hover import hover_markdown, messages_line
from gpo_server.lsp_open_documents import OpenDocument, OpenDocuments
from gpo_server.lsp_progress import Jobs
from gpo_server.lsp_protocol import SUGGESTION_REQUEST, Utf16Protocol
from gpo_server.lsp_settings import LspSettings, parse_settings
from gpo_server.prompt_state import PromptState
from gpo_server.runtime import DaemonError

log = logging.getLogger("gpo.lsp")

CONFIG_TIMEOUT = 5.0  # seconds to wait for workspace/configuration
T = TypeVar("T")


class GpoServer(LanguageServer):
    """The server: settings, and its three parts (documents, daemon link, jobs)."""

    def __init__(self, runtime_dir: Path | None = None, daemon_args: Iterable[str] = ()) -> None:
        super().__init__("gpo", __version__, protocol_cls=Utf16Protocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.runtime_dir = runtime_dir
        self.daemon_args = tuple(daemon_args)
        self.settings = LspSettings()
        limit, self.limit_warning = limit_from_environment()
        self.analyzer = Analyzer(limit)
        self.docs = OpenDocuments(self, self.analyzer)
        self.daemon = DaemonLink(self)
        self.jobs = Jobs(self)
        self.tasks: set[asyncio.Task[Any]] = set()

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
        if settings.daemon_address != self.settings.daemon_address:
            self.daemon.address_changed()
        self.settings = settings

    def state_for(self, doc: OpenDocument) -> PromptState | None:
        return self.daemon.state_for(doc.path)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.daemon.drop_client()
        await self.analyzer.close()


def plain(value: Any) -> Any:
    """pygls hands unknown JSON objects over as namedtuples; turn them back into dicts."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _uri_argument(args: tuple[Any, ...]) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ValueError("expected one argument: the document's URI")
    return args[0]


def make_server(runtime_dir: Path | None = None, daemon_args: Iterable[str] = ()) -> GpoServer:
    server = GpoServer(runtime_dir, daemon_args)

    def document(uri: str) -> OpenDocument:
        doc = server.docs.get(uri)
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
                ls.daemon.roots.add(Path(path))

    @server.feature(types.INITIALIZED)
    async def initialized(ls: GpoServer, params: types.InitializedParams) -> None:
        if ls.limit_warning is not None:
            ls.log(types.MessageType.Warning, ls.limit_warning)
        ls.spawn(ls.analyzer.warm())  # the first document need not wait for a worker
        ls.spawn(pull_configuration(ls))
        ls.spawn(register_roots(ls))

    async def register_roots(ls: GpoServer) -> None:
        try:
            # Connects (starting the daemon), registers the roots, and marks the link up.
            await ls.daemon.call(lambda c: c.health())
        except DaemonError as exc:
            ls.daemon.report_unreachable(exc)

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
                ls.daemon.roots.add(Path(path))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    async def did_open(ls: GpoServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = ls.docs.open(params.text_document.uri)
        await ls.docs.check(doc.uri)
        if doc.path is not None:
            ls.daemon.add_root_for(doc.path)
            ls.spawn(ls.daemon.refresh(doc.path))

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: GpoServer, params: types.DidChangeTextDocumentParams) -> None:
        if ls.docs.get(params.text_document.uri) is not None:
            ls.docs.schedule_check(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
    async def did_save(ls: GpoServer, params: types.DidSaveTextDocumentParams) -> None:
        doc = ls.docs.get(params.text_document.uri)
        if doc is None:
            return
        await ls.docs.check(doc.uri)
        if doc.path is None:
            return
        analysis = doc.analysis
        if ls.settings.auto_optimize_on_save and analysis is not None and not analysis.errors:
            ls.spawn(optimize_quietly(ls, doc))
        else:
            ls.spawn(ls.daemon.refresh(doc.path))

    async def optimize_quietly(ls: GpoServer, doc: OpenDocument) -> None:
        try:
            await ls.jobs.optimize(doc)
        except DaemonError as exc:
            ls.tell(types.MessageType.Warning, f"could not start optimizing: {exc.message}")

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: GpoServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.docs.close(params.text_document.uri)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def watched(ls: GpoServer, params: types.DidChangeWatchedFilesParams) -> None:
        paths = [Path(p) for p in (to_fs_path(c.uri) for c in params.changes) if p]
        await ls.docs.examples_changed(paths)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: GpoServer, params: types.HoverParams) -> types.Hover | None:
        doc = ls.docs.get(params.text_document.uri)
        if doc is None:
            return None
        analysis = (await ls.docs.analysis_of(doc))[1]
        prompt = analysis.prompt
        if prompt is None:
            return None  # the diagnostics say what to fix first
        state = await ls.daemon.fresh_state(doc.path)
        markdown = hover_markdown(state, prompt.body,
                                  messages=messages_line(prompt, analysis.sample),
                                  daemon_down=ls.daemon.link == "down",
                                  scoring=ls.jobs.is_scoring(doc, prompt.body, state))
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                                        value=markdown))

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=list(OFFERED_KINDS), resolve_provider=True))
    async def code_action(ls: GpoServer, params: types.CodeActionParams
                          ) -> list[types.CodeAction]:
        doc = ls.docs.get(params.text_document.uri)
        prompt = await ls.docs.prompt_of(doc) if doc is not None else None
        if doc is None or prompt is None:
            return []
        return offered_actions(ls.state_for(doc), prompt, doc.uri,
                               params.context.only, resolves_edits(ls.client_capabilities))

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: GpoServer, action: types.CodeAction) -> types.CodeAction:
        found = apply_data(action)
        doc = ls.docs.get(found[0]) if found else None
        prompt = await ls.docs.prompt_of(doc) if doc is not None else None
        if doc is None or prompt is None:
            if found is None:
                return action
            return attrs.evolve(action, disabled=types.CodeActionDisabled(
                reason="the document is closed or has problems to fix first"))
        return resolve_apply(action, ls.state_for(doc), prompt)

    @server.feature(SUGGESTION_REQUEST)
    async def suggestion(ls: GpoServer, params: Any) -> dict[str, str] | None:
        given = plain(params)
        document = given.get("textDocument") if isinstance(given, Mapping) else None
        uri = document.get("uri") if isinstance(document, Mapping) else None
        if not isinstance(uri, str):
            raise JsonRpcInvalidParams(
                "gpo/suggestion takes {\"textDocument\": {\"uri\": string}}")
        doc = ls.docs.get(uri)
        prompt = await ls.docs.prompt_of(doc) if doc is not None else None
        if doc is None or prompt is None:
            return None
        state = ls.state_for(doc)
        found = offered_suggestion(state, prompt.body)
        if state is None or found is None:
            return None
        return {"text": suggested_document(prompt, found.text),
                "title": apply_title(found, state.budget)}

    @server.command(COMMAND_OPTIMIZE)
    async def optimize(ls: GpoServer, *args: Any) -> dict[str, Any]:
        job = await ls.jobs.optimize(document(_uri_argument(args)))
        return {"job": job["id"], "state": job["state"]}

    @server.command(COMMAND_STOP)
    async def stop(ls: GpoServer, *args: Any) -> dict[str, Any] | None:
        job = await ls.jobs.stop(document(_uri_argument(args)))
        return None if job is None else {"job": job["id"], "state": job["state"]}

    @server.command(COMMAND_RESCORE)
    async def rescore(ls: GpoServer, *args: Any) -> None:
        doc = document(_uri_argument(args))
        prompt = await ls.docs.prompt_of(doc)
        if prompt is None:
            raise ValueError("fix the prompt's problems before scoring it")
        ls.jobs.start_rescore(doc, prompt.body)

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    async def cancel_progress(ls: GpoServer, params: types.WorkDoneProgressCancelParams) -> None:
        await ls.jobs.cancel(str(params.token))

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: GpoServer, params: None) -> None:
        await ls.close()  # the daemon and its jobs live on for the other editors

    return server


def main(runtime_dir: Path | None = None, daemon_args: Iterable[str] = ()) -> None:
    """Serve over stdio until the client exits."""
    make_server(runtime_dir, daemon_args).start_io()
