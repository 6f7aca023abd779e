"""Documents analysed off the event loop, in worker processes, within a time limit.

`Analyzer.analyze` hands the document to a `python -m gpo_server.lsp_worker`
child and waits for its `Analysis` without blocking the event loop. Past the
time limit the worker is killed and the document gets one diagnostic saying
so; the other documents are never delayed by it.

Processes, not threads: a parse in a thread shares the GIL with the event
loop and cannot be stopped. Measured on the 2-core machine the tests run on,
a 9 ms parse of a normal document took 27 ms on average (94 ms at worst)
beside a 5,000-variable template parsed in a thread; a 40,000-variable
template takes 17 s, which a thread would spend to the end after the limit,
once per edit. A worker starts in 0.4-1.2 s (Python and dotpromptz) and holds
46 MB, so idle ones are kept for the next document; through a warm one, the
capitals example takes 6-10 ms (4-5 ms in the server's own process). When no
worker can be started at all, the analysis runs in a thread as before,
without a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from gpo_engine.errors import Problem
from gpo_server.lsp_documents import Analysis, analyze
from gpo_server.lsp_worker import HEADER, frame

log = logging.getLogger("gpo.lsp")

TIME_LIMIT_VARIABLE = "GPO_LSP_TIME_LIMIT"
# Seconds one document may take. The largest document gpo parses (512 KiB of
# template) took 4-6 s on the loaded 2-core test machine; a normal one, 10 ms.
DEFAULT_TIME_LIMIT = 10.0
KEPT_WORKERS = 2  # idle workers kept warm: one per core of a small machine
START_TIMEOUT = 60.0  # seconds for a worker to import its parsers; 1.2 s at most measured
WORKER_COMMAND = (sys.executable, "-m", "gpo_server.lsp_worker")


def time_limit(value: str | None) -> tuple[float, str | None]:
    """The limit from the environment variable's `value`, and a warning when it is bad."""
    if value is None or not value.strip():
        return DEFAULT_TIME_LIMIT, None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        return DEFAULT_TIME_LIMIT, (f"{TIME_LIMIT_VARIABLE}={value!r} is not a number of "
                                    f"seconds above 0; using {DEFAULT_TIME_LIMIT:g}")
    return seconds, None


def over_limit(path: Path, limit: float) -> Analysis:
    """The analysis of a document that took longer than `limit` seconds."""
    return Analysis(None, (Problem(path, 1, 1, (
        f"gpo could not analyse this document in {limit:g} s: it is too large or too "
        "complex (nesting, variables); simplify it to get diagnostics, scores and "
        "suggestions")),), None)


class WorkerGone(Exception):
    """The worker exited or broke its pipe before answering."""


class Worker:
    """One `gpo_server.lsp_worker` child: one request at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, command: Sequence[str]) -> Worker:
        """A worker that has imported its parsers (it answers an empty frame when ready)."""
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        worker = cls(process)
        try:
            await asyncio.wait_for(worker._read(), START_TIMEOUT)
        except BaseException:
            worker.kill()
            raise
        return worker

    async def analyze(self, text: str, path: Path, with_examples: bool) -> Analysis:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(frame(pickle.dumps((text, str(path), with_examples))))
            await self.process.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerGone(str(exc)) from exc
        analysis = pickle.loads(await self._read())
        if not isinstance(analysis, Analysis):
            raise WorkerGone(f"the worker answered a {type(analysis).__name__}")
        return analysis

    async def _read(self) -> bytes:
        assert self.process.stdout is not None
        try:
            header = await self.process.stdout.readexactly(HEADER.size)
            return await self.process.stdout.readexactly(HEADER.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerGone(f"exit status {self.process.returncode}") from exc

    def kill(self) -> None:
        # asyncio's child watcher reaps it; closing stdin lets its transport finish.
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()

    async def finished(self) -> None:
        """Once killed: wait for its exit and the end of its output (closing its pipes)."""
        if self.process.stdout is not None:
            with contextlib.suppress(OSError):
                await self.process.stdout.read()
        await self.process.wait()


class Analyzer:
    """Runs `lsp_documents.analyze` in workers, `limit` seconds at most per document."""

    def __init__(self, limit: float = DEFAULT_TIME_LIMIT,
                 command: Sequence[str] = WORKER_COMMAND) -> None:
        self.limit = limit
        self.command = tuple(command)
        self.idle: list[Worker] = []
        self.no_workers: str | None = None  # why workers cannot start, once they could not
        self.ending: set[asyncio.Task[None]] = set()  # workers killed, not yet gone

    async def analyze(self, text: str, path: Path, *, with_examples: bool) -> Analysis:
        """The document's analysis; past the limit, one problem saying it took too long.

        Cancelling the caller kills the worker (the only way to stop a parse)."""
        worker = await self._worker()
        if worker is None:
            return await asyncio.to_thread(analyze, text, path, with_examples=with_examples)
        try:
            analysis = await asyncio.wait_for(worker.analyze(text, path, with_examples),
                                              self.limit)
        except TimeoutError:
            self._discard(worker)
            return over_limit(path, self.limit)
        except WorkerGone as exc:
            self._discard(worker)
            return Analysis(None, (Problem(path, 1, 1, "gpo could not analyse this "
                                           f"document: its analysis process ended ({exc})"),),
                            None)
        except BaseException:
            self._discard(worker)
            raise
        self._release(worker)
        return analysis

    async def warm(self) -> None:
        """Start a worker ahead of the first document."""
        worker = await self._worker()
        if worker is not None:
            self._release(worker)

    async def _worker(self) -> Worker | None:
        while self.idle:
            worker = self.idle.pop()
            if worker.process.returncode is None:
                return worker
        if self.no_workers is not None:
            return None
        try:
            return await Worker.start(self.command)
        except (OSError, WorkerGone, TimeoutError) as exc:
            self.no_workers = str(exc) or type(exc).__name__
            log.warning("no analysis worker (%s): documents are analysed in the server, "
                        "without a time limit", self.no_workers)
            return None

    def _release(self, worker: Worker) -> None:
        if len(self.idle) < KEPT_WORKERS and worker.process.returncode is None:
            self.idle.append(worker)
        else:
            self._discard(worker)  # idle: nothing is lost

    def _discard(self, worker: Worker) -> None:
        worker.kill()
        ending = asyncio.ensure_future(worker.finished())
        self.ending.add(ending)
        ending.add_done_callback(self.ending.discard)

    async def close(self) -> None:
        """Stop every worker and wait until they are gone."""
        for worker in self.idle:
            self._discard(worker)
        self.idle.clear()
        await asyncio.gather(*self.ending, return_exceptions=True)


def limit_from_environment() -> tuple[float, str | None]:
    return time_limit(os.environ.get(TIME_LIMIT_VARIABLE))
