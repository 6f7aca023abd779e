"""The daemon's routes: one short handler each (checks in daemon_requests, the work in
gpo_server.jobs, prompt_state_builder and the engine), and the table that mounts them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gpo_engine import __version__
from gpo_engine.errors import GpoError, ModelCallError
from gpo_engine.evaluate import EvalResult
from gpo_engine.offer import Score
from gpo_engine.task import Task, score
from gpo_engine.template import template_error
from gpo_engine.trajectory import trajectory_key
from gpo_engine.usage import Usage
from gpo_server.daemon_requests import (
    ApiError,
    checked_overrides,
    checked_path,
    field_of,
    json_body,
    load_checked,
)
from gpo_server.daemon_state import API, STATE, DaemonState, save_roots
from gpo_server.elsewhere import elsewhere_rows, holder_json
from gpo_server.jobs import Job, UnknownJob
from gpo_server.prompt_state_builder import prompt_state, scoring_scope

_SSE_PING = 15.0  # seconds between keep-alive comments on an idle event stream
_SPLITS = ("dev", "test", "train")


def add_routes(app: web.Application) -> None:
    """Every route of the API (README's route table lists them)."""
    add = {"GET": app.router.add_get, "POST": app.router.add_post}  # add_get answers HEAD too
    for method, path, handler in (
        ("GET", "/health", health), ("GET", "/roots", list_roots), ("POST", "/roots", add_roots),
        ("GET", "/jobs", list_jobs), ("POST", "/jobs", create_job),
        ("GET", "/jobs/{job_id}", get_job), ("POST", "/jobs/{job_id}/cancel", cancel_job),
        ("GET", "/jobs/{job_id}/events", job_events),
        ("GET", "/prompts", prompt_state_route), ("POST", "/prompts", prompt_text_route),
        ("POST", "/evaluate", evaluate_route), ("POST", "/shutdown", shutdown),
    ):
        add[method](API + path, handler)


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    jobs = state.registry.jobs()
    return web.json_response({
        "ok": True, "version": __version__, "api": API, "pid": os.getpid(),
        "address": state.address, "started": state.started,
        "uptime": round(time.time() - state.started, 3),
        "api_base": state.config.api_base,
        "cache_dir": str(state.config.cache_dir) if state.config.cache_dir else None,
        "idle_timeout": state.config.idle_timeout,
        "roots": sorted(str(r) for r in state.roots),
        "jobs": {"active": sum(1 for j in jobs if j.active), "total": len(jobs)},
        "spend": {"cost": state.registry.total_cost(), "calls": sum(j.calls for j in jobs)},
    })


async def add_roots(request: web.Request) -> web.Response:
    state = request.app[STATE]
    roots = field_of(await json_body(request), "roots", list)
    added: list[Path] = []
    for raw in roots:
        if not isinstance(raw, str) or not raw:
            raise ApiError(400, "wrong_type", "`roots` must be a list of paths")
        path = Path(raw)
        if not path.is_absolute():
            raise ApiError(400, "bad_path", f"a root must be absolute, got {raw!r}")
        if not path.is_dir():
            raise ApiError(400, "bad_path", f"a root must be an existing folder: {raw}")
        added.append(path.resolve())
    state.roots.update(added)
    save_roots(state)
    return web.json_response({"roots": sorted(str(r) for r in state.roots)})


async def list_roots(request: web.Request) -> web.Response:
    return web.json_response({"roots": sorted(str(r) for r in request.app[STATE].roots)})


async def create_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = await json_body(request)
    raw_path = field_of(data, "path", str)
    overrides = checked_overrides(data)
    restart = field_of(data, "restart", bool, required=False, default=False)
    path = checked_path(state, raw_path)
    existing = state.registry.active_for(str(path))
    if existing is not None:
        return web.json_response({"job": existing.to_dict(), "created": False})
    task = await load_checked(state, path, overrides)
    job, created = state.registry.create(str(path), overrides, restart, task)
    return web.json_response({"job": job.to_dict(), "created": created},
                             status=201 if created else 200)


def job_of(request: web.Request) -> Job:
    try:
        return request.app[STATE].registry.get(request.match_info["job_id"])
    except UnknownJob:
        raise ApiError(404, "unknown_job",
                       f"no job {request.match_info['job_id']!r}") from None


async def list_jobs(request: web.Request) -> web.Response:
    """This daemon's jobs, and the runs other processes hold (gpo_server.elsewhere)."""
    state = request.app[STATE]
    elsewhere = await elsewhere_rows(state.lock_reader(), state.registry.store())
    return web.json_response({"jobs": [j.to_dict() for j in state.registry.jobs()],
                              "elsewhere": elsewhere})


async def get_job(request: web.Request) -> web.Response:
    return web.json_response({"job": job_of(request).to_dict()})


async def cancel_job(request: web.Request) -> web.Response:
    job = job_of(request)
    registry = request.app[STATE].registry
    registry.cancel(job.id)
    if job.runner is not None and not job.runner.done():
        # Answer with the final state: the cancellation lands at the job's next await.
        await asyncio.wait({job.runner}, timeout=10)
    return web.json_response({"job": job.to_dict()})


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the job's events after Last-Event-ID (or ?since=), then live ones.

    Ends after the job's `end` event, or when the daemon shuts down."""
    state = request.app[STATE]
    job = job_of(request)
    since_text = request.headers.get("Last-Event-ID") or request.query.get("since") or "0"
    try:
        since = int(since_text)
    except ValueError:
        raise ApiError(400, "wrong_type", "`since` / Last-Event-ID must be a number") from None
    backlog, queue = state.registry.subscribe(job, since)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        for event in backlog:
            await response.write(sse_frame(event))
        while queue is not None:
            try:
                event = await asyncio.wait_for(queue.get(), _SSE_PING)
            except asyncio.TimeoutError:
                await response.write(b": ping\n\n")  # finds a client that went away
                continue
            if event is None:
                break
            await response.write(sse_frame(event))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if queue is not None:
            state.registry.unsubscribe(job, queue)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def sse_frame(event: dict[str, Any]) -> bytes:
    return (f"id: {event['seq']}\nevent: {event['kind']}\n"
            f"data: {json.dumps(event, separators=(',', ':'))}\n\n").encode()


async def prompt_state_route(request: web.Request) -> web.Response:
    """GET ?path=: the file's state, for the file's own text."""
    state = request.app[STATE]
    raw = request.query.get("path")
    if raw is None:
        raise ApiError(400, "missing_field", "query parameter `path` is required")
    path = checked_path(state, raw)
    job = state.registry.latest_for(str(path))
    task = await load_checked(state, path, job.overrides if job else {})
    return web.json_response(await state_of(state, task, job))


async def prompt_text_route(request: web.Request) -> web.Response:
    """POST {path, text?, measure?, overrides?}: the file's state for `text` (an editor's
    buffer); with `measure`, its dev and test scores are measured first unless the daemon
    holds them already (model calls: they are cached in `evaluations`)."""
    state = request.app[STATE]
    data = await json_body(request)
    raw_path = field_of(data, "path", str)
    overrides = checked_overrides(data)
    measure = field_of(data, "measure", bool, required=False, default=False)
    text = field_of(data, "text", str, required=False)
    path = checked_path(state, raw_path)
    job = state.registry.latest_for(str(path))
    # A job's own settings decide the file's scores; without one, the client's.
    task = await load_checked(state, path, job.overrides if job else overrides)
    if measure:
        base = task.prompt.body if text is None else text
        scope = scoring_scope(task)
        missing = [split for split in ("dev", "test")
                   if (scope, base, split) not in state.evaluations]
        if missing:
            await measure_text(state, path, task, base, missing)
    return web.json_response(await state_of(state, task, job, text))


async def state_of(state: DaemonState, task: Task, job: Job | None,
                   text: str | None = None) -> dict[str, Any]:
    """The file's state as it is now: the trajectory read afresh (Redis first with a shared
    cache: another machine's steps are in it) and who else holds its run lock."""
    path = str(task.path.resolve())
    store = state.registry.store()
    key = trajectory_key(task.fingerprint())
    run = store.load(key)  # this text and these settings' run; else the file's latest
    holder = await state.lock_reader().holder(key)
    elsewhere = None if holder is None else holder_json(
        holder, run.steps_done if run else 0, task.settings.steps)
    return prompt_state(task, run or store.latest_for(path), job, state.evaluations,
                        state.scoring_usage.get(path), text, elsewhere)


async def evaluate_route(request: web.Request) -> web.Response:
    """Score a prompt text (default: the file's) against the file's example set."""
    state = request.app[STATE]
    data = await json_body(request)
    raw_path = field_of(data, "path", str)
    overrides = checked_overrides(data)
    splits = field_of(data, "splits", list, required=False, default=["dev", "test"])
    if not splits or any(s not in _SPLITS for s in splits):
        raise ApiError(400, "bad_request", f"`splits` must list some of {', '.join(_SPLITS)}")
    field_of(data, "text", str, required=False)
    path = checked_path(state, raw_path)
    task = await load_checked(state, path, overrides)
    text = field_of(data, "text", str, required=False, default=task.prompt.body)
    results, usage = await measure_text(state, path, task, text, list(dict.fromkeys(splits)))
    out: dict[str, Any] = {"path": str(path), "text": text, "model": task.task_model}
    for split, result in results.items():
        out[split] = Score.of(result).to_json() | {"failures": result.failures}
    out["usage"] = usage.to_dict()
    return web.json_response(out)


async def measure_text(state: DaemonState, path: Path, task: Task, text: str,
                       splits: list[str]) -> tuple[dict[str, EvalResult], Usage]:
    """Score `text` on `splits` of the file's examples, each kept in `evaluations`
    (shown in the prompt state); 422 for a text that is no template, 502 when the
    model calls fail. What it spends counts in the file's usage, failed calls too."""
    problem = template_error(text)
    if problem is not None:
        raise ApiError(422, "bad_template", f"the prompt text is not a valid template: {problem}")
    llm = state.open_llm(task)
    try:
        results: dict[str, EvalResult] = {}
        for split in splits:
            results[split] = await score(task, llm, text, task.examples.part(split))
            state.evaluations[(scoring_scope(task), text, split)] = Score.of(results[split])
        return results, llm.usage
    except ModelCallError as exc:
        raise ApiError(502, "model_error", str(exc), kind=exc.kind) from None
    except GpoError as exc:
        raise ApiError(502, "model_error", str(exc), kind=type(exc).__name__) from None
    finally:
        state.count_scoring(str(path), llm.usage)  # a failed scoring's calls were paid too
        llm.close()


async def shutdown(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # Let this answer go out before the server starts closing.
    asyncio.get_running_loop().call_later(0.05, state.stop.set)
    return web.json_response({"ok": True, "stopping": True})
