"""One analysis per open document (lsp_open_documents): shared by the check and the hover
of the same text, stopped by a newer text or by closing the document."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gpo_engine.errors import Problem
from gpo_server.lsp_documents import Analysis
from gpo_server.lsp_open_documents import OpenDocument, OpenDocuments

URI = "file:///w/a.prompt"


class Analyzer:
    """Answers each text once it is released; records what was asked and what stopped."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.stopped: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def analyze(self, text: str, path: Path, *, with_examples: bool) -> Analysis:
        self.asked.append(text)
        gate = self.release.setdefault(text, asyncio.Event())
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.stopped.append(text)
            raise
        return Analysis(None, (Problem(path, 1, 1, f"about {text}"),), None)


class Daemon:
    def state_for(self, path: Path | None, body: str) -> None:
        return None


class Server:
    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.published: list[tuple[str, list[str]]] = []
        self.daemon = Daemon()

    def text_of(self, uri: str) -> str:
        return self.texts[uri]

    def spawn(self, work: Any) -> asyncio.Task[Any]:
        return asyncio.ensure_future(work)

    def text_document_publish_diagnostics(self, params: Any) -> None:
        self.published.append((params.uri, [d.message for d in params.diagnostics]))


def opened(text: str) -> tuple[OpenDocuments, Server, Analyzer, OpenDocument]:
    """Documents with one open, whose text is `text`."""
    server, analyzer = Server(), Analyzer()
    docs = OpenDocuments(server, analyzer)  # type: ignore[arg-type]
    server.texts[URI] = text
    return docs, server, analyzer, docs.open(URI)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_check_and_a_hover_of_the_same_text_share_one_analysis() -> None:
    docs, server, analyzer, doc = opened("one")
    check = asyncio.ensure_future(docs.check(URI))
    hover = asyncio.ensure_future(docs.analysis_of(doc))
    await settle()
    analyzer.release["one"].set()
    await check
    text, analysis = await hover
    assert analyzer.asked == ["one"] and text == "one"
    assert analysis.problems[0].message == "about one"
    assert server.published == [(URI, ["about one"])]
    # Held now: asking again analyses nothing; a fresh check analyses again.
    assert (await docs.analysis_of(doc))[1] is analysis and analyzer.asked == ["one"]
    analyzer.release["one"] = asyncio.Event()
    fresh = asyncio.ensure_future(docs.check(URI))
    await settle()
    analyzer.release["one"].set()
    await fresh
    assert analyzer.asked == ["one", "one"]


async def test_a_newer_text_stops_the_older_analysis_and_its_waiters_get_the_newer() -> None:
    docs, server, analyzer, doc = opened("old")
    waiting = asyncio.ensure_future(docs.analysis_of(doc))
    await settle()
    server.texts[URI] = "new"
    newer = asyncio.ensure_future(docs.analysis_of(doc))
    await settle()
    assert analyzer.stopped == ["old"]
    analyzer.release["new"].set()
    assert (await newer)[0] == "new"
    text, analysis = await waiting  # not cancelled: it waits for the text there is now
    assert text == "new" and analysis.problems[0].message == "about new"
    assert doc.analyzed == "new" and doc.running is None


async def test_a_cancelled_check_leaves_the_analysis_to_its_other_waiters() -> None:
    docs, _, analyzer, doc = opened("one")
    check = asyncio.ensure_future(docs.check(URI, fresh=False))
    hover = asyncio.ensure_future(docs.analysis_of(doc))
    await settle()
    check.cancel()  # a newer keystroke's debounce cancels the pending check
    await settle()
    assert analyzer.stopped == []
    analyzer.release["one"].set()
    assert (await hover)[1].problems[0].message == "about one"


async def test_closing_a_document_stops_its_analysis_and_clears_it() -> None:
    docs, server, analyzer, doc = opened("one")
    hover = asyncio.ensure_future(docs.analysis_of(doc))
    await settle()
    docs.close(URI)
    await settle()
    assert analyzer.stopped == ["one"]
    assert await hover == ("", Analysis(None, (), None))
    assert server.published == [(URI, [])]
