"""The daemon's jobs: one GPO run per prompt file, in the background.

A registry keeps at most one active job per prompt file (a second request for
the same file gets the running job), runs jobs as asyncio tasks with a cap on
how many run at once, fans every event out to the subscribers of the job's
event stream, keeps each job's spend, and rides out model outages: a job
whose model calls keep failing is marked `waiting` (rate limited) or
`failing` (timeouts, server errors) with the reason, and retried with
exponential backoff; the trajectory saved at every finished step and the
response cache make a retry resume where it stopped, paying nothing twice.
Active jobs are written to a small JSON file so a restarted daemon (even one
killed with SIGKILL) picks them up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpo_engine.errors import ConfigError, GpoError, ModelCallError, SourceError
from gpo_engine.events import Event
from gpo_engine.llm import LLM
from gpo_engine.models import default_cache_dir
from gpo_engine.optimizer import optimize_task
from gpo_engine.runlock import PromptBusy, acquire
from gpo_engine.task import Task, load_task, open_llm, open_store
from gpo_engine.trajectory import TrajectoryStore, trajectory_key
from gpo_server.job import (
    Job,
    RetryPolicy,
    RunnerConfig,
    UnknownJob,
    failure_kind,
    read_entries,
    resumed_seq,
)
from gpo_server.job_states import TERMINAL, is_retrying
from gpo_server.runtime import write_private

log = logging.getLogger("gpo.daemon")

# Outages worth waiting out ("systemic": most rows of an evaluation failed, each for one
# of these); "auth" and "other" (a 400, a bad model name) need a person.
RETRYABLE_KINDS = ("timeout", "rate_limit", "server", "bad_response", "systemic")
_MAX_EVENTS = 2000  # per job; a stream that reconnects later gets the most recent ones
_MAX_FINISHED = 200  # terminal jobs kept for `jobs list`
KEEP_FINISHED = 24 * 3600.0  # seconds a finished job is still listed after a daemon restart


TaskLoader = Callable[[str, dict[str, Any]], Task]
LLMOpener = Callable[[Task], LLM]  # the model layer for a task's settings


def default_loader(path: str, overrides: dict[str, Any]) -> Task:
    return load_task(path, **overrides)


def llm_opener(cache_dir: Path | None, api_base: str | None) -> LLMOpener:
    """Opens a task's model layer with the daemon's cache and endpoint."""
    return functools.partial(open_llm, cache_dir=cache_dir, api_base=api_base)


class JobRegistry:
    """Every job of this daemon, by id, with at most one active job per file."""

    def __init__(self, config: RunnerConfig, loader: TaskLoader = default_loader,
                 open_llm: LLMOpener | None = None) -> None:
        self.config = config
        self._loader = loader
        self.open_llm = open_llm or llm_opener(config.cache_dir, config.api_base)
        self._jobs: dict[str, Job] = {}
        self._active_by_path: dict[str, str] = {}
        self._slots = asyncio.Semaphore(max(1, config.max_running))
        self._closing = False
        self._store: TrajectoryStore | None = None

    # -- queries -------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJob(job_id) from None

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created)

    def active_for(self, path: str) -> Job | None:
        job_id = self._active_by_path.get(path)
        return self._jobs[job_id] if job_id else None

    def latest_for(self, path: str) -> Job | None:
        """The active job of a file, else its most recent one."""
        active = self.active_for(path)
        if active is not None:
            return active
        mine = [j for j in self._jobs.values() if j.path == path]
        return max(mine, key=lambda j: j.created) if mine else None

    def running_count(self) -> int:
        return sum(1 for j in self._jobs.values() if j.active)

    def total_cost(self) -> float:
        return sum(j.cost for j in self._jobs.values())

    def store(self) -> TrajectoryStore:
        """One trajectory store for the daemon's readers (prompt state)."""
        if self._store is None:
            self._store = open_store(self.config.cache_dir)
        return self._store

    # -- commands ------------------------------------------------------------

    def create(self, path: str, overrides: dict[str, Any], restart: bool,
               task: Task) -> tuple[Job, bool]:
        """Start a job for `path`, or return the one already active (created=False)."""
        existing = self.active_for(path)
        if existing is not None:
            return existing, False
        job = Job(uuid.uuid4().hex[:12], path, dict(overrides), restart, task,
                  total_steps=task.settings.steps)
        self._add(job)
        return job, True

    def load_task(self, path: str, overrides: dict[str, Any]) -> Task:
        return self._loader(path, overrides)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.active:
            job.cancel_requested = True
            job.cancel_event.set()
            if job.runner is not None:
                # Immediately, not at the next step boundary: finished steps are saved
                # and answered calls cached, so only the step under way is dropped.
                job.runner.cancel()
        return job

    async def resume_saved(self) -> list[Job]:
        """Pick up the jobs that were active when the previous daemon stopped or died."""
        resumed: list[Job] = []
        for entry in read_entries(self.config.state_file):
            if entry.get("state") in TERMINAL:
                self._restore_finished(entry)
                continue
            path, overrides = entry["path"], dict(entry.get("overrides") or {})
            try:
                task = await asyncio.to_thread(self._loader, path, overrides)
            except (GpoError, KeyError, TypeError, ValueError) as exc:
                log.warning("not resuming a job for %s: %s", path, exc)
                continue
            if self.active_for(path) is not None:
                continue
            job = Job(entry.get("id") or uuid.uuid4().hex[:12], path, overrides, False,
                      task, created=entry.get("created") or time.time(),
                      total_steps=task.settings.steps,
                      prior_cost=entry.get("cost") or 0.0,
                      prior_calls=entry.get("calls") or 0,
                      seq=resumed_seq())
            self._add(job)
            resumed.append(job)
        return resumed

    def _restore_finished(self, entry: dict[str, Any]) -> None:
        """A job that ended before the restart: listed with its final state for a while."""
        ended = entry.get("ended")
        if ended is None or time.time() - ended > KEEP_FINISHED or entry["id"] in self._jobs:
            return
        job = self._jobs[entry["id"]] = Job.finished_from_entry(entry)
        # A client following it reads its end, as it would have before the restart.
        self._emit(job, {"kind": "end", "state": job.state, "error": job.error,
                         "error_kind": job.error_kind, "result": job.result})

    async def close(self) -> None:
        """Stop every job between two awaits (a trajectory save is never cut in half),
        keep the active ones in the state file for the next daemon, close the stores."""
        self._closing = True
        self._save()
        runners = [j.runner for j in self._jobs.values() if j.runner is not None]
        for runner in runners:
            runner.cancel()
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)
        for job in self._jobs.values():
            self._end_streams(job)
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- events --------------------------------------------------------------

    def subscribe(self, job: Job, since: int = 0
                  ) -> tuple[list[dict[str, Any]], asyncio.Queue[dict[str, Any] | None] | None]:
        """Events after seq `since`, and a queue of the ones to come (None when it ended)."""
        backlog = [e for e in job.events if e["seq"] > since]
        if not job.active or self._closing:
            return backlog, None
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        job.subscribers.add(queue)
        return backlog, queue

    def unsubscribe(self, job: Job, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        job.subscribers.discard(queue)

    def _emit(self, job: Job, payload: dict[str, Any]) -> None:
        job.seq += 1
        # Every event says T (the engine's candidate events do not), so a watcher that
        # joins mid-step shows "step t/T" right from its first event.
        event = {"seq": job.seq, "job": job.id, "time": time.time(),
                 "total_steps": job.total_steps, **payload}
        job.events.append(event)
        if len(job.events) > _MAX_EVENTS:
            del job.events[: len(job.events) - _MAX_EVENTS]
        for queue in job.subscribers:
            queue.put_nowait(event)

    def _end_streams(self, job: Job) -> None:
        for queue in job.subscribers:
            queue.put_nowait(None)
        job.subscribers.clear()

    def _on_engine_event(self, job: Job, event: Event) -> None:
        data = event.to_dict()
        kind = data.get("kind")
        if kind == "job_started":
            job.resumed_at = data["resumed_at"]
            job.step = data["resumed_at"]
            job.initial_dev = data["initial_dev"]
            if job.best_dev is None:
                job.best_dev = data["initial_dev"]
        elif kind == "step_started":
            job.budget = data["budget"]
        elif kind == "step_finished":
            job.step = data["step"] + 1
            job.best_dev = data["best_dev"]
            job.failures = 0  # progress: the outage (if any) is over
            self._save()
        self._emit(job, data)
        if is_retrying(job.state) and kind in ("candidate_scored", "step_finished"):
            # Calls are answered again: only now is the outage over for the people watching.
            job.retry_at = None
            self._set_state(job, "running")

    def _set_state(self, job: Job, state: str, **extra: Any) -> None:
        job.state = state
        self._emit(job, {"kind": "state", "state": state, "error": job.error,
                         "error_kind": job.error_kind, **extra})

    # -- running -------------------------------------------------------------

    def _add(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._active_by_path[job.path] = job.id
        self._forget_old()
        self._save()
        self._emit(job, {"kind": "state", "state": "queued", "error": "", "error_kind": ""})
        job.runner = asyncio.get_running_loop().create_task(self._run(job),
                                                            name=f"gpo-job-{job.id}")

    async def _run(self, job: Job) -> None:
        try:
            async with self._slots:
                job.started = time.time()
                await self._attempts(job)
        except asyncio.CancelledError:
            if not job.cancel_requested:
                raise  # the daemon is closing: the job stays in the state file
            job.state = "cancelled"
        except Exception as exc:  # a bug must not take the daemon down with it
            log.exception("job %s crashed", job.id)
            job.error, job.error_kind = f"internal error: {exc!r}", "internal"
            job.state = "failed"
        finally:
            if job.state in TERMINAL:
                self._finish(job)

    def _finish(self, job: Job) -> None:
        job.ended = time.time()
        job.retry_at = None
        if self._active_by_path.get(job.path) == job.id:
            del self._active_by_path[job.path]
        self._save()
        self._emit(job, {"kind": "end", "state": job.state, "error": job.error,
                         "error_kind": job.error_kind, "result": job.result})
        self._end_streams(job)

    async def _attempts(self, job: Job) -> None:
        config = self.config
        assert job.task is not None  # only a job read back finished has none, never run
        llm = self.open_llm(job.task)
        job.usage = llm.usage
        # One run per prompt, across processes: a `gpo optimize` in a terminal holds the
        # same lock, and the job refuses to pay for its steps a second time.
        # With a shared cache, other machines too (a Redis lock, renewed while the job runs).
        cache = config.cache_dir or default_cache_dir()
        key = trajectory_key(job.task.fingerprint())
        try:
            # A thread: taking the shared lock is a Redis round trip (up to 1 s when it hangs).
            lock = await asyncio.to_thread(acquire, cache, key, job.path,
                                           hint="start the job again once it has ended")
        except PromptBusy as busy:
            job.error, job.error_kind = str(busy), "busy"
            job.state = "failed"
            _close_llm(llm)
            return
        lock.link(job.cancel_event)  # lost mid-run: the job ends at its next step boundary
        store = open_store(config.cache_dir)
        restart = job.restart
        try:
            while True:
                job.attempts += 1
                if job.failures == 0:
                    self._set_state(job, "running")
                # else: it stays waiting/failing until a call succeeds (see _on_engine_event)
                try:
                    result = await optimize_task(
                        job.task, llm, store, restart=restart, cancel=job.cancel_event,
                        on_event=lambda event: self._on_engine_event(job, event))
                except ModelCallError as exc:
                    restart = False  # what finished is saved: never start over on a retry
                    job.failures += 1
                    job.error, job.error_kind = str(exc), failure_kind(exc)
                    if (job.error_kind not in RETRYABLE_KINDS
                            or job.failures >= config.retry.attempts):
                        job.state = "failed"
                        return
                    await self._back_off(job, exc)
                    continue
                except (SourceError, ConfigError, GpoError, OSError) as exc:
                    job.error, job.error_kind = str(exc), type(exc).__name__
                    job.state = "failed"
                    return
                job.result = result.to_dict()
                job.step = result.steps_done
                if lock.lost and not job.cancel_requested:
                    job.error = f"lost the run lock: {lock.lost}; start the job again to resume"
                    job.error_kind, job.state = "busy", "failed"
                    return
                job.state = "cancelled" if result.stopped == "cancelled" else "finished"
                return
        finally:
            store.close()
            _close_llm(llm)
            lock.release()

    async def _back_off(self, job: Job, exc: ModelCallError) -> None:
        delay = self.config.retry.delay(job.failures)
        job.retry_at = time.time() + delay
        # A provider that says "slow down" is waited for; one that errors or hangs is failing.
        # An evaluation's systemic failure carries the first row's error in its message.
        limited = exc.kind == "rate_limit" or (exc.kind == "systemic" and "rate_limit" in str(exc))
        state = "waiting" if limited else "failing"
        log.warning("job %s %s: %s; retrying in %.1f s", job.id, state, exc, delay)
        self._set_state(job, state, retry_in=delay)
        await asyncio.sleep(delay)

    # -- persistence -----------------------------------------------------------

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if not j.active]
        for job in sorted(done, key=lambda j: j.created)[: max(0, len(done) - _MAX_FINISHED)]:
            del self._jobs[job.id]

    def _save(self) -> None:
        """Write the active jobs (what a restarted daemon must resume)."""
        state_file = self.config.state_file
        if state_file is None:
            return
        now = time.time()
        # Finished ones too, with their final state, so a restart still lists them.
        entries = [j.to_entry() for j in self.jobs() if j.active]
        entries += [j.to_entry() for j in self.jobs()
                    if j.state in TERMINAL and j.ended is not None
                    and now - j.ended <= KEEP_FINISHED]
        try:
            write_private(state_file, json.dumps({"jobs": entries}, indent=1))
        except OSError as exc:
            log.warning("could not save %s: %s", state_file, exc)


def _close_llm(llm: LLM) -> None:
    with contextlib.suppress(Exception):
        llm.close()


__all__ = ["Job", "JobRegistry", "RetryPolicy", "RunnerConfig", "UnknownJob"]
