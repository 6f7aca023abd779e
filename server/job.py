"""One daemon job: its record (`Job`), how it is written to the daemon's jobs.json and
read back, and the retry policy of a job whose model calls fail."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpo_engine.errors import ModelCallError
from gpo_engine.task import Task
from gpo_engine.usage import Usage
from gpo_server.job_states import ACTIVE, TERMINAL, is_retrying

log = logging.getLogger("gpo.daemon")


@dataclass(frozen=True)
class RetryPolicy:
    """Job-level backoff after a model outage outlasted the llm layer's own retries."""

    base: float = 2.0  # seconds before the first retry; doubled each time
    cap: float = 300.0
    attempts: int = 20  # consecutive failed attempts (no step finished between) before giving up

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, failures - 1)))


@dataclass(frozen=True)
class RunnerConfig:
    cache_dir: Path | None = None  # None: the engine's default ($GPO_CACHE_DIR, ~/.cache/gpo)
    api_base: str | None = None  # every model call goes to this endpoint when set
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_running: int = 4  # jobs optimizing at once; the rest wait in `queued`
    state_file: Path | None = None  # where active jobs are kept for a restart


class UnknownJob(KeyError):
    """No job with that id."""


def resumed_seq() -> int:
    """Where a resumed job's event numbers start: the time in milliseconds.

    Above every number its earlier daemon lives sent (a job never averages an
    event per millisecond, and a SIGKILLed daemon saved no count), so a client
    that reconnects with the Last-Event-ID it saw gets every new event."""
    return int(time.time() * 1000)


@dataclass
class Job:
    id: str
    path: str  # resolved absolute path of the .prompt file
    overrides: dict[str, Any]
    restart: bool
    task: Task | None  # None: a finished job read back after a daemon restart
    created: float = field(default_factory=time.time)
    state: str = "queued"
    started: float | None = None
    ended: float | None = None
    step: int = 0  # steps finished
    total_steps: int = 0
    budget: int | None = None
    initial_dev: float | None = None
    best_dev: float | None = None
    resumed_at: int | None = None
    error: str = ""  # the last failure's message (kept after a recovery, for the record)
    error_kind: str = ""
    retry_at: float | None = None
    attempts: int = 0
    failures: int = 0  # consecutive failed attempts
    prior_cost: float = 0.0  # spend of earlier daemon lives (a resumed job)
    prior_calls: int = 0
    result: dict[str, Any] | None = None
    usage: Usage | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    subscribers: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    runner: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def cost(self) -> float:
        return self.prior_cost + (self.usage.cost if self.usage else 0.0)

    @property
    def calls(self) -> int:
        return self.prior_calls + (self.usage.calls if self.usage else 0)

    def to_entry(self) -> dict[str, Any]:
        """Its jobs.json entry: an active job's (what a restarted daemon resumes), or a
        finished one's with its final state (listed for a while after a restart)."""
        entry = {"id": self.id, "path": self.path, "overrides": self.overrides,
                 "created": self.created, "cost": self.cost, "calls": self.calls}
        if self.active:
            return entry
        return {**entry, "state": self.state, "started": self.started, "ended": self.ended,
                "step": self.step, "total_steps": self.total_steps,
                "initial_dev": self.initial_dev, "best_dev": self.best_dev,
                "error": self.error, "error_kind": self.error_kind, "result": self.result}

    @classmethod
    def finished_from_entry(cls, entry: dict[str, Any]) -> Job:
        """A finished job read back from a checked jobs.json entry (entry_problem)."""
        return cls(
            entry["id"], entry["path"], dict(entry.get("overrides") or {}), False, None,
            created=entry["created"], state=entry["state"], started=entry.get("started"),
            ended=entry.get("ended"), step=entry.get("step") or 0,
            total_steps=entry.get("total_steps") or 0,
            initial_dev=entry.get("initial_dev"), best_dev=entry.get("best_dev"),
            error=entry.get("error") or "", error_kind=entry.get("error_kind") or "",
            prior_cost=entry.get("cost") or 0.0, prior_calls=entry.get("calls") or 0,
            result=entry.get("result"), seq=resumed_seq())

    def to_dict(self) -> dict[str, Any]:
        now = time.time()
        return {
            "id": self.id,
            "path": self.path,
            "state": self.state,
            "overrides": self.overrides,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "step": self.step,
            "total_steps": self.total_steps,
            "budget": self.budget,
            "initial_dev": self.initial_dev,
            "best_dev": self.best_dev,
            "resumed_at": self.resumed_at,
            "error": self.error,
            "error_kind": self.error_kind,
            "retry_in": (round(max(0.0, self.retry_at - now), 3)
                         if self.retry_at is not None and is_retrying(self.state)
                         else None),
            "attempts": self.attempts,
            "spend": {"cost": self.cost, "calls": self.calls,
                      "cache_hits": self.usage.cache_hits if self.usage else 0,
                      "prompt_tokens": self.usage.prompt_tokens if self.usage else 0,
                      "completion_tokens": self.usage.completion_tokens if self.usage else 0},
            "result": self.result,
        }


def read_entries(state_file: Path | None) -> list[dict[str, Any]]:
    """The usable entries of the daemon's jobs.json: an unreadable file is ignored and a
    bad entry (a hand edit, another version) skipped, each with a warning, never fatal."""
    if state_file is None or not state_file.exists():
        return []
    try:
        saved = json.loads(state_file.read_text(encoding="utf-8"))
        entries = saved["jobs"]
        if not isinstance(entries, list):
            raise TypeError("'jobs' should be a list")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        log.warning("ignoring unreadable %s: %s", state_file, exc)
        return []
    usable = []
    for number, entry in enumerate(entries):
        problem = entry_problem(entry)
        if problem is None:
            usable.append(entry)
        else:
            log.warning("skipping job entry %d of %s: %s", number + 1, state_file, problem)
    return usable


# Fields of a jobs.json entry: (type(s), required). Numbers are finite, counts whole.
_ENTRY_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str,), False), "path": ((str,), True), "overrides": ((dict, type(None)), False),
    "created": ((int, float), False), "cost": ((int, float, type(None)), False),
    "calls": ((int, type(None)), False), "state": ((str,), False),
    "started": ((int, float, type(None)), False), "ended": ((int, float, type(None)), False),
    "step": ((int,), False), "total_steps": ((int,), False),
    "initial_dev": ((int, float, type(None)), False),
    "best_dev": ((int, float, type(None)), False), "error": ((str,), False),
    "error_kind": ((str,), False), "result": ((dict, type(None)), False),
}


def entry_problem(entry: Any) -> str | None:
    """What is wrong with one jobs.json entry, or None when it can be used as it is."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    for name, (types_, required) in _ENTRY_FIELDS.items():
        if name not in entry:
            if required:
                return f"missing field {name!r}"
            continue
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, types_):
            return f"field {name!r} has the wrong type: {json.dumps(value)[:40]}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"field {name!r} is not a finite number"
        if isinstance(value, (int, float)) and value < 0:
            return f"field {name!r} is negative"
    if not entry["path"] or not Path(entry["path"]).is_absolute():
        return "field 'path' should be an absolute path"
    if "id" in entry and not entry["id"]:
        return "field 'id' is empty"
    state = entry.get("state")
    if state is not None and state not in TERMINAL:
        return f"field 'state' should be one of {', '.join(TERMINAL)}, got {state!r}"
    if state is not None and ("id" not in entry or "created" not in entry):
        return "a finished job needs its 'id' and 'created'"
    return None


def failure_kind(exc: ModelCallError) -> str:
    """How a failed run is handled: a "systemic" failure (every optimizer call of a step,
    most rows of an evaluation) whose first error is a refused or missing key is "auth",
    so the job fails at once instead of retrying what no wait can fix; a spent budget or
    quota likewise is "budget"."""
    if exc.kind == "systemic":
        for kind in ("auth", "budget"):
            if f": {kind}: " in str(exc):
                return kind
    return exc.kind
