"""The local daemon: GPO jobs in the background behind a small JSON API.

One per user, on a Unix socket in a 0700 runtime directory (or, when asked,
127.0.0.1 with a random port and a bearer token from a 0600 file). It owns
the model calls, the response cache and the trajectories; editors and the
CLI reach it only through `gpo_server.client`. `make_app()` builds the
aiohttp application (handlers are a few lines each; the work is in
`gpo_server.jobs` and the engine); `serve()` runs it until a shutdown
request, a signal or the idle timeout.

Every error is `{"error": {"code": str, "message": str}}` with a 4xx status
for bad input and 5xx only for model or daemon trouble.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gpo_engine import __version__
from gpo_engine.errors import ConfigError, GpoError, ModelCallError, SourceError
from gpo_engine.evaluate import EvalResult
from gpo_engine.examples import find_examples_path
from gpo_engine.llm import Usage
from gpo_engine.offer import NOT_COMPARED, Score, Verdict, offer_for
from gpo_engine.optimizer import current_budget
from gpo_engine.promptfile import load_prompt
from gpo_engine.task import Task, open_llm, score
from gpo_engine.template import template_error
from gpo_engine.trajectory import Trajectory, same_prompt, trajectory_key
from gpo_server import runtime
from gpo_server.job_states import is_retrying, status_of
from gpo_server.jobs import Job, JobRegistry, RetryPolicy, RunnerConfig, UnknownJob
from gpo_server.prompt_state import STATE_VERSION

log = logging.getLogger("gpo.daemon")

API = "/v1"
DEFAULT_IDLE_TIMEOUT = 1800.0  # seconds without requests or jobs before it exits
DEFAULT_MAX_BODY = 1 << 20  # bytes; a prompt text is small, an example set is read from disk
_SSE_PING = 15.0  # seconds between keep-alive comments on an idle event stream
_SPLITS = ("dev", "test", "train")
# Per-job settings a client may override; everything else comes from the file.
OVERRIDABLE = frozenset({
    "model", "optimizer", "metric", "steps", "candidates", "k", "retrieval", "embedding",
    "budget", "temperature", "max_tokens", "batch_size", "racing", "race_size", "max_cost",
    "concurrency", "timeout", "seed",
})


@dataclass(frozen=True)
class DaemonConfig:
    runtime_dir: Path
    api_base: str | None = None
    cache_dir: Path | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # 0 or less: never
    tcp: bool = False
    max_body: int = DEFAULT_MAX_BODY
    max_running: int = 4
    call_retries: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_env(cls, runtime_dir: Path, **given: Any) -> DaemonConfig:
        """Flags win over GPO_API_BASE / GPO_CACHE_DIR / GPO_DAEMON_IDLE_TIMEOUT."""
        env = os.environ
        values = {k: v for k, v in given.items() if v is not None}
        values.setdefault("api_base", env.get("GPO_API_BASE") or None)
        if env.get("GPO_CACHE_DIR"):
            values.setdefault("cache_dir", Path(env["GPO_CACHE_DIR"]).expanduser())
        if env.get("GPO_DAEMON_IDLE_TIMEOUT"):
            try:
                values.setdefault("idle_timeout", float(env["GPO_DAEMON_IDLE_TIMEOUT"]))
            except ValueError:
                raise ConfigError("GPO_DAEMON_IDLE_TIMEOUT must be a number of seconds, got "
                                  f"{env['GPO_DAEMON_IDLE_TIMEOUT']!r}") from None
        return cls(runtime_dir=runtime_dir, **values)


class ApiError(Exception):
    """A request the daemon refuses; becomes a JSON error body with `status`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


@dataclass
class DaemonState:
    config: DaemonConfig
    registry: JobRegistry
    token: str | None = None
    address: str = ""
    started: float = field(default_factory=time.time)
    roots: set[Path] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    last_activity: float = field(default_factory=time.monotonic)
    busy: int = 0  # requests and event streams being served
    preload: Any = None  # the background import of the model layer
    # Scores measured by /evaluate, by (scoring_scope, text, split): shown in the prompt state.
    evaluations: dict[tuple[str, str, str], Score] = field(default_factory=dict)
    # What /evaluate spent per prompt file (resolved path): part of the file's usage.
    scoring_usage: dict[str, Usage] = field(default_factory=dict)

    def count_scoring(self, path: str, usage: Usage) -> None:
        self.scoring_usage[path] = self.scoring_usage.get(path, Usage()).plus(usage)

    def idle_for(self) -> float:
        if self.busy or self.registry.running_count():
            return 0.0
        return time.monotonic() - self.last_activity


STATE: web.AppKey[DaemonState] = web.AppKey("gpo_state", DaemonState)


def error_body(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}},
                             status=status)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse browsers and strangers, count activity, and turn every error into JSON."""
    state = request.app[STATE]
    state.last_activity = time.monotonic()
    if "Origin" in request.headers:
        # Only a browser sends Origin; no web page may drive the daemon (DNS rebinding, CSRF).
        return error_body(403, "origin_refused", "requests with an Origin header are refused")
    if state.token is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {state.token}".encode()):
            return error_body(401, "unauthorized",
                              "missing or wrong bearer token (see the daemon's token file)")
    state.busy += 1
    try:
        return await handler(request)
    except ApiError as exc:
        return error_body(exc.status, exc.code, exc.message, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.text if exc.text and exc.status != 413 else exc.reason
        if exc.status == 413:
            message = f"request body too large (limit {state.config.max_body} bytes)"
        return error_body(exc.status, code, message or exc.reason)
    finally:
        state.busy -= 1
        state.last_activity = time.monotonic()


# ---------------------------------------------------------------- input checks


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; 400 for anything else, 413 when over the size limit."""
    raw = await request.read()  # raises 413 past client_max_size
    try:
        data = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # thousands of nested arrays: no request of ours nests so deep
        raise ApiError(400, "bad_json", "the request body nests too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the request body must be a JSON object")
    return data


def field_of(data: dict[str, Any], name: str, kind: type | tuple[type, ...],
             required: bool = True, default: Any = None) -> Any:
    """A typed field of a request body; 400 naming the field when missing or mistyped."""
    if name not in data or data[name] is None:
        if required:
            raise ApiError(400, "missing_field", f"`{name}` is required")
        return default
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        value = object()  # a bool is an int to Python, never to us
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ApiError(400, "wrong_type", f"`{name}` must be of type {names}")
    return value


def checked_path(state: DaemonState, raw: str) -> Path:
    """An absolute path inside a registered workspace root (symlinks resolved), else 4xx."""
    if not raw or "\x00" in raw:
        raise ApiError(400, "bad_path", "`path` must be a non-empty path")
    path = Path(raw)
    if not path.is_absolute():
        raise ApiError(400, "bad_path", f"`path` must be absolute, got {raw!r}")
    resolved = path.resolve()
    inside(state, resolved, raw)
    return resolved


def inside(state: DaemonState, resolved: Path, shown: str, rule: str = "") -> None:
    if not any(resolved.is_relative_to(root) for root in state.roots):
        hint = ("no workspace root is registered" if not state.roots
                else "it is outside every registered workspace root")
        raise ApiError(403, "outside_roots",
                       f"refusing {shown}: {hint}" + (f" ({rule})" if rule else ""))


def checked_overrides(data: dict[str, Any]) -> dict[str, Any]:
    overrides = field_of(data, "overrides", dict, required=False, default={})
    unknown = sorted(set(overrides) - OVERRIDABLE)
    if unknown:
        raise ApiError(400, "bad_settings", f"unknown override(s): {', '.join(unknown)}; "
                       f"allowed: {', '.join(sorted(OVERRIDABLE))}")
    return dict(overrides)


async def load_checked(state: DaemonState, path: Path, overrides: dict[str, Any]) -> Task:
    """Parse the prompt and its examples: 404, 422 or 400 for a missing, broken or
    misconfigured file."""
    if not path.is_file():
        raise ApiError(404, "file_not_found", f"{path} is not a file")

    def load() -> Task:
        # The example set may be named in the frontmatter (`gpo.examples: /etc/passwd`)
        # or be a symlink out of the workspace: confined before a byte of it is read.
        examples = examples_location(path, overrides)
        inside(state, examples.resolve(), str(examples),
               rule="the example set must be inside a registered workspace root "
               "(symlinks resolved)")
        return state.registry.load_task(str(path), overrides)

    try:
        task = await asyncio.to_thread(load)
    except SourceError as exc:
        problems = [{"path": str(p.path), "line": p.line, "column": p.column,
                     "message": p.message, "severity": p.severity} for p in exc.problems]
        raise ApiError(422, "invalid_source", str(exc), problems=problems) from None
    except ConfigError as exc:
        raise ApiError(400, "bad_settings", str(exc)) from None
    return task


def examples_location(path: Path, overrides: dict[str, Any]) -> Path:
    """Where load_task will read the prompt's example set, found as it finds it."""
    prompt = load_prompt(path)
    changes = {k: v for k, v in overrides.items() if v is not None}
    settings = prompt.settings.replace(**changes) if changes else prompt.settings
    return find_examples_path(prompt.path, settings.examples)


# ---------------------------------------------------------------- handlers


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


def save_roots(state: DaemonState) -> None:
    """Kept next to the jobs, so a restarted daemon still serves the editors already open."""
    data = json.dumps({"roots": sorted(str(r) for r in state.roots)})
    try:
        runtime.write_private(state.config.runtime_dir / runtime.ROOTS_NAME, data)
    except OSError as exc:
        log.warning("could not save the workspace roots: %s", exc)


def load_roots(state: DaemonState) -> None:
    file = state.config.runtime_dir / runtime.ROOTS_NAME
    try:
        data = json.loads(file.read_text("utf-8"))
        listed = data["roots"]
        if not isinstance(listed, list):
            raise TypeError("'roots' should be a list")
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        log.warning("ignoring unreadable %s: %s", file, exc)
        return
    for root in listed:
        # Each one checked: a bad entry is skipped with a warning, the others kept.
        try:
            if not isinstance(root, str) or not Path(root).is_absolute():
                raise ValueError("not an absolute path")
            folder = Path(root).resolve()
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("skipping workspace root %r of %s: %s", root, file, exc)
            continue
        if folder.is_dir():
            state.roots.add(folder)


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
    jobs = request.app[STATE].registry.jobs()
    return web.json_response({"jobs": [j.to_dict() for j in jobs]})


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
    return web.json_response(state_of(state, task, job))


async def prompt_text_route(request: web.Request) -> web.Response:
    """POST {path, text?, measure?, overrides?}: the file's state for `text` (an editor's
    buffer); with `measure`, its dev and test scores are measured first unless the daemon
    holds them already (model calls: they are cached in `evaluations`)."""
    state = request.app[STATE]
    data = await json_body(request)
    raw_path = field_of(data, "path", str)
    overrides = checked_overrides(data)
    measure = field_of(data, "measure", bool, required=False, default=False)
    given = field_of(data, "text", str, required=False)
    path = checked_path(state, raw_path)
    job = state.registry.latest_for(str(path))
    # A job's own settings decide the file's scores; without one, the client's.
    task = await load_checked(state, path, job.overrides if job else overrides)
    # The daemon reads files with universal newlines; a CRLF buffer is the same prompt.
    text = given.replace("\r\n", "\n").replace("\r", "\n") if given is not None else None
    if measure:
        base = task.prompt.body if text is None else text
        scope = scoring_scope(task)
        missing = [split for split in ("dev", "test")
                   if (scope, base, split) not in state.evaluations]
        if missing:
            await measure_text(state, path, task, base, missing)
    return web.json_response(state_of(state, task, job, text))


def state_of(state: DaemonState, task: Task, job: Job | None,
             text: str | None = None) -> dict[str, Any]:
    path = str(task.path.resolve())
    store = state.registry.store()
    trajectory = store.load(trajectory_key(task.fingerprint())) or store.latest_for(path)
    return prompt_state(task, trajectory, job, state.evaluations,
                        state.scoring_usage.get(path), text)


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
    llm = open_llm(task, cache_dir=state.config.cache_dir, api_base=state.config.api_base)
    if state.config.call_retries is not None:
        llm.max_retries = state.config.call_retries
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


# ---------------------------------------------------------------- prompt state


def scoring_scope(task: Task) -> str:
    """The file and what decides its scores (models, metric, answer length, examples):
    a score measured with other overrides (another model) is not this file's score."""
    s = task.settings
    return json.dumps([str(task.path.resolve()), task.task_model, task.judge_model, s.metric,
                       s.pattern, s.max_tokens, task.examples.content_hash])


Evaluations = dict[tuple[str, str, str], Score]


def _test_score(scope: str, text: str, job: Job | None,
                evaluations: Evaluations) -> Score | None:
    measured = evaluations.get((scope, text, "test"))
    if measured is not None:
        return measured
    result = job.result if job is not None else None
    if result:
        for which in ("best", "initial"):
            if result.get(which) == text and result.get(f"{which}_test"):
                with contextlib.suppress(ValueError):  # a hand-edited jobs.json
                    return Score.from_json(result[f"{which}_test"])
    return None


def _json(score: Score | None) -> dict[str, Any] | None:
    return score.to_json() if score is not None else None


def prompt_state(task: Task, trajectory: Trajectory | None, job: Job | None,
                 evaluations: Evaluations, scoring: Usage | None = None,
                 text: str | None = None) -> dict[str, Any]:
    """Everything an editor shows about one prompt file (gpo_server.prompt_state's shape)
    for `text` (the editor's buffer; default the file's body): its scores in `current`
    and merged into `scored`, and the suggestion picked against it. `scoring`: what
    re-scores of the file spent, counted in its usage."""
    path, body = str(task.path.resolve()), task.prompt.body
    base = body if text is None else text
    scope = scoring_scope(task)
    steps_done = trajectory.steps_done if trajectory else 0
    budget = current_budget(task, steps_done)
    scored: list[dict[str, Any]] = []
    history: list[float] = []
    suggestion: dict[str, Any] | None = None
    withheld: dict[str, Any] | None = None

    def test(candidate: str) -> Score | None:
        return _test_score(scope, candidate, job, evaluations)

    if trajectory is not None:
        scored = [{"text": t, "step": step, "dev": dev.to_json(), "test": _json(test(t))}
                  for t, step, dev in trajectory.dev_scores()]
        history = [dev for _, dev, _ in trajectory.history()]
        offer = offer_for(trajectory, base, budget, verdict=job_verdict(job, base), test=test)
        if offer is not None:
            diff = "".join(difflib.unified_diff(
                base.splitlines(keepends=True), offer.text.splitlines(keepends=True),
                fromfile=f"{path} (current)", tofile=f"{path} (suggested)"))
            shown = {**offer.to_json(), "baseline_dev": trajectory.dev_score_of(base),
                     "budget": budget, "diff": diff}
            # The overfitting guard of `gpo optimize`: never offer a prompt that is
            # significantly worse on the held-out rows; say why instead.
            if offer.withheld:
                withheld = shown
            else:
                suggestion = shown
    measured = evaluations.get((scope, base, "dev"))
    if measured is not None:
        scored = with_measured(scored, base, measured, test(base), steps_done)
    current_dev = measured
    if current_dev is None and trajectory is not None:
        current_dev = trajectory.dev_score(base)
    return {
        "version": STATE_VERSION, "path": path, "text": body, "base": base,
        "task_model": task.task_model, "optimizer_model": task.optimizer_model,
        "steps_done": steps_done, "total_steps": task.settings.steps, "budget": budget,
        "current": {"dev": _json(current_dev), "test": _json(test(base))},
        "best": ({"text": trajectory.best()[0], "dev": round(trajectory.best()[1], 2)}
                 if trajectory is not None else None),
        "scored": scored, "history": history, "suggestion": suggestion,
        "withheld": withheld, "rejected": trajectory.rejected() if trajectory else {},
        "usage": _usage(job, scoring), "job": _job_summary(job),
    }


def with_measured(scored: list[dict[str, Any]], text: str, dev: Score, test: Score | None,
                  steps_done: int) -> list[dict[str, Any]]:
    """`scored` with `text` as the daemon measured it: a re-score of a text outside the
    trajectory (a fresh file, a hand edit) is listed like the evaluated ones, and one made
    after the example set changed replaces the trajectory's older numbers."""
    for index, item in enumerate(scored):
        if same_prompt(item["text"], text):
            fresh = {**item, "dev": dev.to_json(),
                     "test": test.to_json() if test is not None else item["test"]}
            return [*scored[:index], fresh, *scored[index + 1:]]
    return [*scored, {"text": text, "step": steps_done, "dev": dev.to_json(),
                      "test": _json(test)}]


def job_verdict(job: Job | None, body: str) -> Callable[[str], Verdict]:
    """The held-out verdicts the file's job measured, against the file's `body`.

    The job's result carries the paired test of its suggestion against the text
    it started from; a verdict about other texts is not known without model calls,
    which a request never makes, so it is "untested" then.
    """
    result = (job.result if job is not None else None) or {}
    measured = (result.get("guard") or {}).get("suggestion")

    def verdict(text: str) -> Verdict:
        if (measured and same_prompt(measured.get("text", ""), text)
                and same_prompt(result.get("initial", ""), body)):
            with contextlib.suppress(ValueError):  # a hand-edited jobs.json: not known
                return Verdict.from_json(measured)
        return Verdict("untested", reason=NOT_COMPARED)

    return verdict


def _usage(job: Job | None, scoring: Usage | None = None) -> dict[str, Any]:
    """The job's tokens and spend (its earlier daemon lives' spend included), plus what
    re-scoring the file spent."""
    run = job.usage if job is not None and job.usage is not None else Usage()
    extra = scoring or Usage()
    return {**run.plus(extra).to_dict(),
            "cost": (job.cost if job is not None else 0.0) + extra.cost,
            "calls": (job.calls if job is not None else 0) + extra.calls}


def _job_summary(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    # `status` keeps to the five values every client knows (waiting and failing jobs are
    # still running: they retry); `state` is the exact one, `message` says why.
    message = job.error if is_retrying(job.state) or job.state == "failed" else ""
    if job.result and job.result.get("stopped") and not message:
        message = str(job.result["stopped"])
    data = job.to_dict()
    return {"id": job.id, "status": status_of(job.state), "state": job.state, "step": job.step,
            "total_steps": job.total_steps, "message": message, "error_kind": job.error_kind,
            "retry_in": data["retry_in"], "spend": data["spend"]}


# ---------------------------------------------------------------- app and serving


def make_app(config: DaemonConfig, token: str | None = None) -> web.Application:
    """The daemon's application; jobs saved by an earlier daemon resume on startup."""
    state_file = config.runtime_dir / runtime.JOBS_NAME
    registry = JobRegistry(RunnerConfig(
        cache_dir=config.cache_dir, api_base=config.api_base, call_retries=config.call_retries,
        retry=config.retry, max_running=config.max_running, state_file=state_file))
    state = DaemonState(config, registry, token=token)
    app = web.Application(middlewares=[guard], client_max_size=config.max_body)
    app[STATE] = state
    app.router.add_get(f"{API}/health", health)
    app.router.add_get(f"{API}/roots", list_roots)
    app.router.add_post(f"{API}/roots", add_roots)
    app.router.add_get(f"{API}/jobs", list_jobs)
    app.router.add_post(f"{API}/jobs", create_job)
    app.router.add_get(f"{API}/jobs/{{job_id}}", get_job)
    app.router.add_post(f"{API}/jobs/{{job_id}}/cancel", cancel_job)
    app.router.add_get(f"{API}/jobs/{{job_id}}/events", job_events)
    app.router.add_get(f"{API}/prompts", prompt_state_route)
    app.router.add_post(f"{API}/prompts", prompt_text_route)
    app.router.add_post(f"{API}/evaluate", evaluate_route)
    app.router.add_post(f"{API}/shutdown", shutdown)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_close_jobs)
    return app


async def _startup(app: web.Application) -> None:
    state = app[STATE]
    load_roots(state)
    resumed = await state.registry.resume_saved()
    if resumed:
        log.info("resumed %d job(s)", len(resumed))
    # litellm costs seconds to import; do it off the loop so the first job does not stall it.
    state.preload = asyncio.get_running_loop().run_in_executor(None, _preload_model_layer)


def _preload_model_layer() -> None:
    with contextlib.suppress(Exception):
        import litellm  # noqa: F401


async def _close_jobs(app: web.Application) -> None:
    await app[STATE].registry.close()


async def serve(config: DaemonConfig, *, handle_signals: bool = False,
                ready: Callable[[runtime.Status], None] | None = None) -> None:
    """Serve until /shutdown, SIGTERM/SIGINT (when handle_signals) or the idle timeout."""
    directory = runtime.ensure_runtime_dir(config.runtime_dir)
    config = dataclasses.replace(config, runtime_dir=directory)
    with runtime.daemon_lock(directory):
        token = runtime.new_token(directory) if config.tcp else None
        app = make_app(config, token)
        state = app[STATE]
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            if config.tcp:
                site: web.BaseSite = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                state.address = f"http://127.0.0.1:{port}"
            else:
                sock = runtime.socket_path(directory)
                with contextlib.suppress(FileNotFoundError):
                    sock.unlink()  # left by a daemon that died; we hold the lock
                old = os.umask(0o177)  # the socket is born 0600, no window of 0755
                try:
                    site = web.UnixSite(runner, str(sock))
                    await site.start()
                finally:
                    os.umask(old)
                os.chmod(sock, 0o600)
                state.address = f"unix:{sock}"
            status = runtime.Status(os.getpid(), state.address, __version__, state.started)
            runtime.write_status(directory, status)
            if ready is not None:
                ready(status)
            loop = asyncio.get_running_loop()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, state.stop.set)
            await _wait_for_stop(state)
        finally:
            runtime.remove_status(directory, os.getpid())
            await runner.cleanup()
            if config.tcp:
                with contextlib.suppress(FileNotFoundError):
                    (directory / runtime.TOKEN_NAME).unlink()


async def _wait_for_stop(state: DaemonState) -> None:
    timeout = state.config.idle_timeout
    if timeout <= 0:
        await state.stop.wait()
        return
    tick = min(1.0, timeout / 4)
    while not state.stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.stop.wait(), tick)
        if state.idle_for() >= timeout:
            log.info("idle for %.0f s; exiting", timeout)
            state.stop.set()


__all__ = ["DaemonConfig", "make_app", "serve"]
