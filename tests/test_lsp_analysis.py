"""Documents analysed in worker processes within a time limit (lsp_analysis, lsp_worker).

The server end to end, a pathological document beside a normal one, is in
test_lsp_server.py; here the analyzer and its worker are driven directly.
"""

from __future__ import annotations

import asyncio
import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from gpo_server import lsp_worker
from gpo_server.lsp_analysis import (
    DEFAULT_TIME_LIMIT,
    Analyzer,
    time_limit,
)
from gpo_server.lsp_documents import Analysis, analyze
from gpo_server.lsp_worker import frame, read_frame
from tests.lsp_samples import many_variables
from tests.scripted_models import write_capitals

SLOW = many_variables(50_000)  # 10 s or more to parse on the 2-core test machine


def same(a: Analysis, b: Analysis) -> bool:
    return (a.prompt is None) == (b.prompt is None) and a.problems == b.problems \
        and a.examples_path == b.examples_path and a.sample == b.sample \
        and (a.prompt is None or b.prompt is None or a.prompt.body == b.prompt.body)


async def test_a_worker_answers_what_the_server_would_find(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path)
    broken = prompt.read_text().replace("Answer:", "{{/if}}")
    analyzer = Analyzer()
    try:
        for text in (prompt.read_text(), broken):
            found = await analyzer.analyze(text, prompt, with_examples=True)
            assert same(found, analyze(text, prompt))
        assert found.problems and "template error" in found.problems[0].message
        assert len(analyzer.idle) == 1  # one worker did both, and waits for the next
    finally:
        await analyzer.close()


async def test_past_the_limit_the_worker_is_killed_and_the_document_says_why(
        tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path)
    analyzer = Analyzer(limit=0.5)
    try:
        await analyzer.warm()
        (worker,) = analyzer.idle
        found = await analyzer.analyze(SLOW, tmp_path / "slow.prompt", with_examples=True)
        assert found.prompt is None and len(found.problems) == 1
        (problem,) = found.problems
        assert (problem.path.name, problem.line, problem.column) == ("slow.prompt", 1, 1)
        assert problem.message.startswith("gpo could not analyse this document in 0.5 s: "
                                          "it is too large or too complex")
        assert await asyncio.wait_for(worker.process.wait(), 10) != 0  # killed, not left on
        # The next document gets a new worker.
        good = await analyzer.analyze(prompt.read_text(), prompt, with_examples=True)
        assert good.prompt is not None and good.problems == ()
    finally:
        await analyzer.close()


async def test_cancelling_an_analysis_kills_its_worker(tmp_path: Path) -> None:
    analyzer = Analyzer()
    try:
        await analyzer.warm()
        (worker,) = analyzer.idle
        task = asyncio.ensure_future(
            analyzer.analyze(SLOW, tmp_path / "slow.prompt", with_examples=False))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(worker.process.wait(), 10) != 0
        assert analyzer.idle == []
    finally:
        await analyzer.close()


async def test_without_workers_documents_are_analysed_in_the_server(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path)
    analyzer = Analyzer(command=[str(tmp_path / "no-such-python")])
    found = await analyzer.analyze(prompt.read_text(), prompt, with_examples=True)
    assert same(found, analyze(prompt.read_text(), prompt))
    assert analyzer.no_workers is not None and "no-such-python" in analyzer.no_workers
    await analyzer.close()


async def test_a_worker_that_dies_gives_a_diagnostic_not_a_hang(tmp_path: Path) -> None:
    # Says ready, then exits without answering.
    ready_then_exit = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(bytes(8))"]
    analyzer = Analyzer(command=ready_then_exit)
    found = await analyzer.analyze("Hi", tmp_path / "a.prompt", with_examples=False)
    assert found.prompt is None
    assert found.problems[0].message.startswith(
        "gpo could not analyse this document: its analysis process ended")
    assert analyzer.idle == []
    await analyzer.close()


def test_the_time_limit_comes_from_the_environment() -> None:
    assert time_limit(None) == (DEFAULT_TIME_LIMIT, None)
    assert time_limit(" ") == (DEFAULT_TIME_LIMIT, None)
    assert time_limit("2.5") == (2.5, None)
    for bad in ("soon", "0", "-3", "inf", "nan"):
        limit, warning = time_limit(bad)
        assert limit == DEFAULT_TIME_LIMIT and warning is not None
        assert warning.startswith(f"GPO_LSP_TIME_LIMIT={bad!r} is not a number of seconds")


def test_the_worker_protocol_round_trips_and_stops_at_the_end(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path)
    request = pickle.dumps((prompt.read_text(), str(prompt), True))
    out = io.BytesIO()
    lsp_worker.serve(io.BytesIO(frame(request) + frame(request)[:5]), out)
    replies = io.BytesIO(out.getvalue())
    assert read_frame(replies) == b""  # ready
    answer = pickle.loads(read_frame(replies) or b"")
    assert same(answer, analyze(prompt.read_text(), prompt))
    assert read_frame(replies) is None  # the cut-off request was the end


def test_an_analysis_that_cannot_be_sent_back_is_a_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsendable(text: str, path: Path, *, with_examples: bool) -> Analysis:
        def local() -> None: ...
        return Analysis(None, (), None, sample=local)  # type: ignore[arg-type]

    monkeypatch.setattr(lsp_worker, "analyze", unsendable)
    answer = pickle.loads(lsp_worker.answer(pickle.dumps(("x", str(tmp_path / "a.prompt"),
                                                          False))))
    assert answer.prompt is None
    assert answer.problems[0].message.startswith("gpo could not analyse this file: ")


def test_the_worker_never_imports_the_model_layer(tmp_path: Path) -> None:
    """The worker is the language server's child: it loads the parsers, never litellm."""
    prompt = write_capitals(tmp_path)
    code = ("import sys, pickle, io\nfrom gpo_server import lsp_worker\n"
            "sys.stdin = io.TextIOWrapper(io.BytesIO(lsp_worker.frame(pickle.dumps("
            f"(open({str(prompt)!r}).read(), {str(prompt)!r}, True)))))\n"
            "sys.stdout = io.TextIOWrapper(io.BytesIO())\nlsp_worker.main()\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('litellm', 'llama_cpp', 'openai', 'aiohttp') or m in ('gpo_engine.llm', "
            "'gpo_engine.task', 'gpo_engine.optimizer'))\n"
            "print('parsed' if 'dotpromptz' in sys.modules else 'not parsed', ','.join(bad), "
            "file=sys.__stdout__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "parsed"
