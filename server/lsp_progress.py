"""Jobs and re-scores started from the editor, shown as `$/progress`.

`Jobs` starts and stops the daemon's optimization jobs for a document, follows
a job's event stream into a cancellable work-done progress (cancelling it
cancels the job), and re-scores a buffer's text under its own progress bar.
The messages are pure functions of the daemon's events (`progress_report`,
`end_message`), tested directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from gpo_server.job_states import ACTIVE, is_retrying
from gpo_server.lsp_daemon import daemon_text, key
from gpo_server.lsp_documents import read_lossy
from gpo_server.lsp_hover import scoring_now
from gpo_server.lsp_link import job_token
from gpo_server.prompt_state import PromptState, normalize
from gpo_server.runtime import DaemonError

if TYPE_CHECKING:
    from gpo_server.client import DaemonClient
    from gpo_server.lsp import GpoServer
    from gpo_server.lsp_open_documents import OpenDocument

CONFIG_TIMEOUT = 5.0  # seconds to wait for the client to create a progress token


class Jobs:
    """Jobs followed, progress tokens handed out, and texts being re-scored."""

    def __init__(self, server: GpoServer) -> None:
        self.server = server
        self.followers: dict[str, asyncio.Task[None]] = {}  # job id -> event-stream follower
        self.progress_jobs: dict[str, str] = {}  # progress token -> job id
        self.progress_tasks: dict[str, asyncio.Task[Any]] = {}  # progress token -> scoring task
        self.scoring: dict[tuple[str, str], int] = {}  # (path, body) -> re-scores under way
        self._follows: dict[str, int] = {}  # job id -> times followed (for fresh tokens)
        self._tokens = itertools.count(1)

    def follow(self, job_id: str, name: str) -> None:
        if job_id not in self.followers and self.server.docs.documents_of(name):
            self.followers[job_id] = self.server.spawn(self._follow(job_id, name))

    async def begin_progress(self, token: str, title: str) -> bool:
        """Create a work-done progress when the client supports it (both editors do)."""
        server = self.server
        window = server.client_capabilities.window
        if window is None or not window.work_done_progress:
            return False
        try:
            await asyncio.wait_for(server.work_done_progress.create_async(token), CONFIG_TIMEOUT)
        except Exception as exc:  # refused or unanswered: carry on without a progress bar
            server.log(types.MessageType.Log, f"no progress bar: {exc}")
            return False
        server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=title, cancellable=True, message="starting", percentage=0))
        return True

    async def _follow(self, job_id: str, name: str) -> None:
        server, link = self.server, self.server.daemon
        self._follows[job_id] = self._follows.get(job_id, 0) + 1
        token = job_token(job_id, self._follows[job_id])
        file_name = Path(name).name
        shown = await self.begin_progress(token, f"GPO: optimizing {file_name}")
        self.progress_jobs[token] = job_id
        last: dict[str, Any] | None = None
        client: DaemonClient | None = None
        state = link.states.get(name)
        total = state.total_steps if state is not None else 0
        try:
            client = await link.connected()
            async for event in client.events(job_id):
                last = event
                total = int(event.get("total_steps") or 0) or total
                report = progress_report(event, total)
                if shown and report is not None:
                    message, percentage = report
                    server.work_done_progress.report(token, types.WorkDoneProgressReport(
                        message=message, percentage=percentage, cancellable=True))
                if event.get("kind") in ("job_started", "step_finished"):
                    await link.refresh(Path(name))  # the file's text scored; a step's result
        except DaemonError as exc:
            if exc.status == 0:
                await link.forget(client)
                link.link_broken(exc)
            else:
                server.log(types.MessageType.Warning, f"lost the progress of {file_name}: "
                           f"{exc.message}")
        finally:
            self.progress_jobs.pop(token, None)
            self.followers.pop(job_id, None)
            if shown:
                server.work_done_progress.end(token, types.WorkDoneProgressEnd(
                    message=end_message(last, link.link == "down")))
        if last is not None and last.get("kind") == "end" and last.get("state") == "failed":
            server.tell(types.MessageType.Warning,
                        f"optimizing {file_name} failed: {last.get('error') or 'no reason given'}")
        if link.link != "down":  # else the reconnection fetches it, and follows the job again
            await link.refresh(Path(name))

    async def optimize(self, doc: OpenDocument) -> dict[str, Any]:
        server, link = self.server, self.server.daemon
        path = require_file(doc)
        if path.exists() and read_lossy(path) != server.text_of(doc.uri):
            server.tell(types.MessageType.Info, f"optimizing the saved {path.name}; save to "
                        "include your latest edits")
        link.add_root_for(path)
        job, _ = await link.call(lambda c: c.create_job(path, server.settings.overrides()))
        self.follow(str(job["id"]), key(path))
        server.spawn(link.refresh(path))  # code actions offer "Stop optimizing" from now on
        return job

    async def stop(self, doc: OpenDocument) -> dict[str, Any] | None:
        link = self.server.daemon
        name = key(require_file(doc))
        jobs = await link.call(lambda c: c.jobs())
        active = [j for j in jobs if j.get("path") == name and j.get("state") in ACTIVE]
        if not active:
            return None
        job = await link.call(lambda c: c.cancel(str(active[-1]["id"])))
        self.server.spawn(link.refresh(Path(name)))
        return job

    async def cancel(self, token: str) -> None:
        """The user cancelled the progress `token`: stop its scoring or its job."""
        task = self.progress_tasks.get(token)
        if task is not None:
            task.cancel()
        job_id = self.progress_jobs.get(token)
        if job_id is not None:
            with contextlib.suppress(DaemonError):
                await self.server.daemon.call(lambda c: c.cancel(job_id))

    def start_rescore(self, doc: OpenDocument, body: str) -> None:
        """Mark `body` as being scored (the hover says so from this moment) and score it
        in the background: scoring takes model calls."""
        mark = (key(require_file(doc)), normalize(body))
        self.scoring[mark] = self.scoring.get(mark, 0) + 1
        self.server.spawn(self._rescore_marked(doc, body, mark))

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
        name = key(doc.path)
        return scoring_now(state, body, state.text or None if state is not None else None,
                           (name, normalize(body)) in self.scoring)

    async def rescore(self, doc: OpenDocument, body: str) -> None:
        """Score the buffer's body on dev and test in the daemon, under a progress bar."""
        server, link = self.server, self.server.daemon
        path = require_file(doc)
        token = f"gpo-score-{next(self._tokens)}"
        this = asyncio.current_task()
        if this is not None:
            self.progress_tasks[token] = this
        shown = await self.begin_progress(token, f"GPO: scoring {path.name}")
        outcome = "cancelled"
        refreshed = False
        try:
            link.add_root_for(path)
            out = await link.call(lambda c: c.evaluate(path, text=daemon_text(body),
                                                       overrides=server.settings.overrides()))
            dev = score_of(out.get("dev"))
            if dev is not None:
                outcome = f"dev {dev:.1f}"
            # The daemon keeps the scores: the state holds them before the progress ends.
            await link.refresh(path)
            refreshed = True
        except DaemonError as exc:
            outcome = "failed"
            server.tell(types.MessageType.Warning, f"scoring {path.name} failed: {exc.message}")
        finally:
            self.progress_tasks.pop(token, None)
            if shown:
                server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=outcome))
        if not refreshed:
            await link.refresh(path)


def require_file(doc: OpenDocument) -> Path:
    if doc.path is None:
        raise ValueError("save the prompt as a file first")
    return doc.path


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
        if is_retrying(state):
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
        best = score_of(result.get("best_dev"))
        return f"finished, best dev {best:.1f}" if best is not None else "finished"
    if state == "failed":
        return f"failed: {event.get('error') or 'no reason given'}"
    return state


def score_of(value: Any) -> float | None:
    """The score of one of the daemon's score objects ({score, n, low, high}), if any."""
    score = value.get("score") if isinstance(value, Mapping) else None
    return float(score) if isinstance(score, int | float) and not isinstance(score, bool) \
        else None
