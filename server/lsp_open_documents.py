"""The open `.prompt` documents: their analysis and the diagnostics published for them.

Each buffer is analysed as typed (lsp_documents, run by lsp_analysis in a
worker process within a time limit), one analysis per document at a time: a
newer text stops the older one's, and a hover waiting for the text it shows
shares the check's. Diagnostics are the document's own problems, its example
file's (published under that file's URI while a prompt using it is open),
the suggestion ready for the buffer's text and a failed job's warning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.uris import from_fs_path, to_fs_path

from gpo_server.lsp_actions import offered_suggestion
from gpo_server.lsp_daemon import key
from gpo_server.lsp_diagnostics import (
    diagnostics_by_file,
    failure_diagnostic,
    suggestion_diagnostic,
)
from gpo_server.lsp_documents import Analysis, read_lossy

if TYPE_CHECKING:
    from gpo_engine.promptfile import PromptFile
    from gpo_server.lsp import GpoServer
    from gpo_server.lsp_analysis import Analyzer

CHANGE_DELAY = 0.15  # seconds of typing quiet before a changed buffer is checked again


@dataclass
class OpenDocument:
    uri: str
    path: Path | None  # None for documents that are not files (untitled:)
    analysis: Analysis | None = None
    analyzed: str | None = None  # the text `analysis` is of
    examples_published: frozenset[str] = frozenset()  # example-file URIs we sent diagnostics to
    running: tuple[str, asyncio.Task[Analysis]] | None = None  # the analysis under way, of text

    @property
    def where(self) -> Path:
        """The path problems are reported at (an untitled document gets a made-up one)."""
        return self.path or Path(to_fs_path(self.uri) or "untitled.prompt")


class OpenDocuments:
    """Documents by URI, their pending checks, and what was published for them."""

    def __init__(self, server: GpoServer, analyzer: Analyzer) -> None:
        self.server = server
        self.analyzer = analyzer
        self.documents: dict[str, OpenDocument] = {}
        self.pending: dict[str, asyncio.Task[None]] = {}  # uri -> delayed check of a change

    def get(self, uri: str) -> OpenDocument | None:
        return self.documents.get(uri)

    def open(self, uri: str) -> OpenDocument:
        fs_path = to_fs_path(uri) if uri.startswith("file:") else None
        doc = OpenDocument(uri, Path(fs_path) if fs_path else None)
        self.documents[uri] = doc
        return doc

    def close(self, uri: str) -> None:
        """Forget the document, stop its analysis, and clear what was published for it."""
        doc = self.documents.pop(uri, None)
        pending = self.pending.pop(uri, None)
        if pending is not None:
            pending.cancel()
        if doc is None:
            return
        if doc.running is not None:
            doc.running[1].cancel()
        self._publish(doc.uri, [])
        for example in doc.examples_published:
            if not self._example_in_use(example, doc):
                self._publish(example, [])

    def documents_of(self, name: str) -> list[OpenDocument]:
        """The open documents of the file whose resolved path is `name`."""
        return [d for d in self.documents.values() if d.path is not None and key(d.path) == name]

    def body_of(self, name: str) -> str | None:
        """The template body of an open buffer of the file `name`, as last analysed."""
        for doc in self.documents_of(name):
            if doc.analysis is not None and doc.analysis.prompt is not None:
                return doc.analysis.prompt.body
        return None

    def open_files(self) -> list[Path]:
        return [d.path for d in self.documents.values() if d.path is not None]

    # -- analysis ----------------------------------------------------------------

    async def analysis_of(self, doc: OpenDocument, *, fresh: bool = False
                          ) -> tuple[str, Analysis]:
        """(text, its analysis) for the document's text now: the one held, or the one under
        way for that text, else a new one. `fresh`: a new one even so (its example file
        may have changed on disk)."""
        while True:
            if self.documents.get(doc.uri) is not doc:
                return "", Analysis(None, (), None)  # closed: nothing to show
            text = self.server.text_of(doc.uri)
            if not fresh and doc.analysis is not None and doc.analyzed == text:
                return text, doc.analysis
            task = self._analysis_task(doc, text, fresh)
            try:
                return text, await asyncio.shield(task)
            except asyncio.CancelledError:
                this = asyncio.current_task()
                if not task.cancelled() or (this is not None and this.cancelling()):
                    raise
                fresh = False  # stopped for a newer text, or a fresh one: wait for that

    def _analysis_task(self, doc: OpenDocument, text: str, fresh: bool
                       ) -> asyncio.Task[Analysis]:
        running = doc.running
        if running is not None and not running[1].done():
            if running[0] == text and not fresh:
                return running[1]
            running[1].cancel()  # a newer text: the older one's analysis is of no use
        task = asyncio.ensure_future(self.analyzer.analyze(
            text, doc.where, with_examples=doc.path is not None))
        doc.running = (text, task)

        def finished(done: asyncio.Task[Analysis]) -> None:
            if doc.running is not None and doc.running[1] is done:
                doc.running = None
            if done.cancelled() or done.exception() is not None:
                return  # whoever awaits it gets the exception
            if self.documents.get(doc.uri) is doc and self.server.text_of(doc.uri) == text:
                doc.analysis, doc.analyzed = done.result(), text

        task.add_done_callback(finished)
        return task

    async def prompt_of(self, doc: OpenDocument) -> PromptFile | None:
        """The parsed prompt of the buffer as it is now, or None when it has problems."""
        return (await self.analysis_of(doc))[1].prompt

    async def check(self, uri: str, delay: float = 0.0, *, fresh: bool = True) -> None:
        """Analyse the buffer and its example set (off the loop), then publish diagnostics."""
        if delay:
            await asyncio.sleep(delay)
        doc = self.documents.get(uri)
        if doc is None:
            return
        text, analysis = await self.analysis_of(doc, fresh=fresh)
        if self.documents.get(uri) is not doc or self.server.text_of(uri) != text:
            return  # closed or changed meanwhile: a newer check is on its way
        doc.analysis, doc.analyzed = analysis, text
        self.publish(doc)
        if doc.path is not None and analysis.prompt is not None:
            self.server.daemon.buffer_checked(doc.path, analysis.prompt.body)

    def schedule_check(self, uri: str) -> None:
        previous = self.pending.pop(uri, None)
        if previous is not None:
            previous.cancel()
        self.pending[uri] = self.server.spawn(self.check(uri, CHANGE_DELAY, fresh=False))

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
                self.server.jobs.start_rescore(doc, analysis.prompt.body)
            else:
                self.server.spawn(self.server.daemon.refresh(doc.path))

    # -- diagnostics ---------------------------------------------------------------

    def publish(self, doc: OpenDocument) -> None:
        analysis = doc.analysis
        if analysis is None:
            return
        text = doc.analyzed or ""
        path = doc.where
        expected = [path] + ([analysis.examples_path] if analysis.examples_path else [])

        def read_text(p: Path) -> str | None:
            return text if p == path else read_lossy(p)

        grouped = diagnostics_by_file(analysis.problems, read_text, expected)
        own = grouped.pop(path, [])
        prompt = analysis.prompt
        if prompt is not None:
            state = self.server.daemon.state_for(doc.path)
            suggestion = offered_suggestion(state, prompt.body)
            if suggestion is not None:
                own.append(suggestion_diagnostic(text, len(prompt.frontmatter), suggestion))
            if state is not None and state.job is not None and state.job.status == "failed":
                own.append(failure_diagnostic(text, len(prompt.frontmatter), state.job))
        self._publish(doc.uri, own)
        published = set()
        for other, diagnostics in grouped.items():
            uri = from_fs_path(str(other)) or other.as_uri()
            published.add(uri)
            self._publish(uri, diagnostics)
        for stale in doc.examples_published - published:
            if not self._example_in_use(stale, doc):
                self._publish(stale, [])
        doc.examples_published = frozenset(published)

    def publish_all(self) -> None:
        for doc in list(self.documents.values()):
            self.publish(doc)

    def _publish(self, uri: str, diagnostics: list[types.Diagnostic]) -> None:
        self.server.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics))

    def _example_in_use(self, uri: str, besides: OpenDocument) -> bool:
        return any(uri in d.examples_published for d in self.documents.values() if d is not besides)
