"""The prompt state the language server gets from the daemon, read into typed values.

The daemon's `/v1` prompt-state route answers with one JSON object per
`.prompt` file. The language server keeps the last one per file and answers
hover, diagnostics and code actions from it without another round trip, so
the object carries every evaluated text (the editor buffer may differ from
the file on disk, and only the server knows the buffer).

Shape (version 1). `Summary` is `{"score": float 0-100, "n": int, "low":
float | null, "high": float | null}`: a score on one split with its 95%
interval (null bounds when the per-row outcomes are not kept); the daemon
writes it with gpo_engine.offer.Score.to_json. Keys marked (api) are for API
users and scripts: this module does not read them::

    {
      "version": 1,              # STATE_VERSION
      "path": str,               # absolute path of the .prompt file
      "text": str,               # the file's template body on disk
      "base": str,               # the text this state answers for: the `text` a client
                                 # sent to POST /v1/prompts (an editor's buffer), else
                                 # the file's body; absent from older daemons
      "current": {               # the scores of `base`: measured on request, else as
        "dev": Summary | null,   #   the trajectory recorded them
        "test": Summary | null
      },
      "task_model": str,         # (api) the task model the scores are for
      "optimizer_model": str,    # (api)
      "steps_done": int,         # t: finished optimization steps (0 before any run)
      "total_steps": int,        # T: gpo.steps of the file's settings
      "budget": int,             # B_t: words a suggestion may change now
      "scored": [                # every prompt with a full-dev score, Trajectory.scored() order,
        {"text": str,            #   then `base` when it was measured and is not among them
         "step": int,            #   step it entered the trajectory; 0 = the initial text
         "dev": Summary,         #   `base`'s measured scores replace the recorded ones
         "test": Summary | null} #   held-out score when it was measured
      ],
      "history": [float],        # dev score of the initial text, then of each step's chosen
                                 # prompt (Trajectory.history()), oldest first
      "suggestion": null | {     # gpo_engine.offer.Offer.to_json, picked against `base`
        "text": str,             #   the suggested template body
        "base": str,             #   the body it was picked against (== `base` above)
        "dev": Summary,
        "test": Summary | null,
        "gain": float,           #   dev points over `base` (its dev score when `base`
                                 #   was never scored)
        "distance": int,         #   word distance from `base`; never above `budget`
        "guard": Guard,          #   the held-out check of it against `base`
        "budget": int,           #   (api) the budget it was picked under
        "diff": str              #   (api) unified diff from `base` to `text`
      },
      "withheld": null | <as suggestion>,  # a suggestion the held-out check found
                                           # significantly worse (guard.verdict "worse")
      "rejected": {str: int},    # candidates dropped before scoring, by reason ("leak", ...)
      "usage": {"prompt_tokens": int, "completion_tokens": int, "cost": float,
                "unknown_price": bool,    # Usage.to_dict() of the job plus re-scores;
                "calls": int, ...},       # (api) calls, cache_hits, per_model...
      "job": null | {
        "id": str,
        "status": "queued" | "running" | "finished" | "failed" | "cancelled",
        "step": int,             #   steps finished in this job's run
        "total_steps": int,
        "message": str,          #   why it failed, is retrying, or stopped; "" otherwise
        "state": str,            #   optional: the exact state ("waiting" and "failing" are
                                 #   "running" in `status`: they retry; job_states)
        "error_kind": str,       #   optional: the failure's kind ("auth", "rate_limit"...)
        "retry_in": float | null,  # (api) seconds to the next attempt of a retrying job
        "spend": {...}           #   (api) the job's cost, calls, cache hits and tokens
      },
      "elsewhere": null | {      # another process holds the prompt's shared run lock
        "host": str | null,      #   (GPO_CACHE_URL: another machine, or a `gpo optimize`
        "pid": int | null,       #   in a terminal); who, as its Redis lock names it
        "started": float | null, #   (null: unknown), read by the daemon for each state
        "steps_done": int,       #   t of that run's shared trajectory (its steps are in
        "total_steps": int       #   `scored` and `history`; 0 before its first step is
      }                          #   saved), and T. Absent from older daemons
    }

`Guard` is gpo_engine.offer.Verdict.to_json: `{"verdict": "ok" | "worse" |
"untested", "delta": float (test points), "p_value": float, "n": int,
"method": str, "wins": int, "losses": int}` for a paired test, `{"verdict":
"untested", "reason": str}` without one.

Unknown keys are ignored so the daemon can add fields without breaking an
older language server; a missing or mistyped known key raises ValueError
naming it, so a bad answer is reported instead of half-shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

# With the engine's types, their JSON readers (each error names the key path): the
# state's own keys are read by the same ones.
from gpo_engine.offer import (
    Offer,
    Score,
    Verdict,
    json_key,
    json_number,
    json_text,
    normalize,
    same_prompt,
)
from gpo_engine.offer import json_count as _int
from gpo_engine.offer import json_object as _mapping
from gpo_server.job_states import STATUSES, is_active, is_retrying

STATE_VERSION = 1
T = TypeVar("T")
JOB_STATUSES = STATUSES


# A score with its interval, the held-out verdict and the suggestion: the engine's types,
# read with their own from_json (gpo_engine.offer).
Summary = Score
Guard = Verdict
Suggestion = Offer


@dataclass(frozen=True)
class ScoredPrompt:
    text: str
    step: int
    dev: Summary
    test: Summary | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    unknown_price: bool = False


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    step: int
    total_steps: int
    message: str = ""
    state: str = ""  # the daemon's exact state; "" from a daemon that does not send it
    error_kind: str = ""

    @property
    def active(self) -> bool:
        return is_active(self.status)

    @property
    def retrying(self) -> bool:
        """Running, but its model calls fail and it waits to try again."""
        return self.active and is_retrying(self.state)


@dataclass(frozen=True)
class Elsewhere:
    """A run of the prompt in another process (another machine with the shared cache)."""

    host: str | None
    pid: int | None
    started: float | None
    steps_done: int
    total_steps: int


@dataclass(frozen=True)
class Current:
    """The scores of the text a state answers for (its `base`)."""

    dev: Summary | None = None
    test: Summary | None = None


@dataclass(frozen=True)
class PromptState:
    path: str
    steps_done: int
    total_steps: int
    budget: int
    scored: tuple[ScoredPrompt, ...]
    history: tuple[float, ...]
    suggestion: Suggestion | None
    usage: Usage
    job: Job | None
    withheld: Suggestion | None = None
    rejected: tuple[tuple[str, int], ...] = ()  # (reason, count), most first
    text: str = ""  # the file's body on disk ("" from a daemon that does not send it)
    base: str = ""  # the text the state answers for (the file's body when not sent)
    current: Current = Current()
    elsewhere: Elsewhere | None = None

    def lookup(self, body: str) -> ScoredPrompt | None:
        """The evaluated prompt that `body` is, if any (see same_prompt)."""
        wanted = normalize(body)
        for item in self.scored:
            if normalize(item.text) == wanted:
                return item
        return None

    def best(self) -> ScoredPrompt | None:
        """Highest dev score; on a tie the earliest, as Trajectory.best() decides."""
        if not self.scored:
            return None
        return max(self.scored, key=lambda item: (item.dev.value, -item.step))

    def suggestion_for(self, body: str) -> Suggestion | None:
        """The suggestion if it was picked against `body` and still changes it.

        A suggestion picked against other text (the buffer was edited since)
        could exceed the budget against the buffer, so it is withheld until
        the daemon picks again for the new text.
        """
        s = self.suggestion
        if s is None or not same_prompt(s.base, body) or same_prompt(s.text, body):
            return None
        return s


# ---------------------------------------------------------------------------
# Reading the JSON object. Each reader names the key path it failed on; parse_state says
# it is the prompt state's.


def _get(data: Mapping[str, Any], key: str) -> Any:
    """A top-level key (nested ones: _key, which names the path to them)."""
    if key not in data:
        raise ValueError(f"missing {key}")
    return data[key]


def _optional(read: Callable[[Any, str], T], value: Any, name: str) -> T | None:
    return None if value is None else read(value, name)


def _scored(value: Any, index: int) -> ScoredPrompt:
    name = f"scored[{index}]"
    data = _mapping(value, name)
    return ScoredPrompt(
        text=json_text(json_key(data, "text", name), f"{name}.text"),
        step=_int(json_key(data, "step", name), f"{name}.step"),
        dev=Score.from_json(json_key(data, "dev", name), f"{name}.dev"),
        test=_optional(Score.from_json, data.get("test"), f"{name}.test"),
    )


def _suggestion(value: Any, name: str = "suggestion") -> Suggestion | None:
    return None if value is None else Offer.from_json(value, name)


def _rejected(value: Any) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    data = _mapping(value, "rejected")
    counts = [(json_text(k, "rejected key"), _int(v, f"rejected.{k}")) for k, v in data.items()]
    return tuple(sorted(counts, key=lambda kv: (-kv[1], kv[0])))


def _usage(value: Any) -> Usage:
    if value is None:
        return Usage()
    data = _mapping(value, "usage")
    return Usage(
        prompt_tokens=_int(data.get("prompt_tokens", 0), "usage.prompt_tokens"),
        completion_tokens=_int(data.get("completion_tokens", 0), "usage.completion_tokens"),
        cost=json_number(data.get("cost", 0.0), "usage.cost"),
        unknown_price=bool(data.get("unknown_price", False)),
    )


def _job(value: Any) -> Job | None:
    if value is None:
        return None
    data = _mapping(value, "job")
    status = json_text(json_key(data, "status", "job"), "job.status")
    if status not in JOB_STATUSES:
        raise ValueError(
            f"job.status must be one of {', '.join(JOB_STATUSES)}, got {status!r}"
        )
    return Job(
        id=json_text(json_key(data, "id", "job"), "job.id"),
        status=status,
        step=_int(json_key(data, "step", "job"), "job.step"),
        total_steps=_int(json_key(data, "total_steps", "job"), "job.total_steps"),
        message=json_text(data.get("message", ""), "job.message"),
        state=json_text(data.get("state", ""), "job.state"),
        error_kind=json_text(data.get("error_kind", ""), "job.error_kind"),
    )


def _elsewhere(value: Any) -> Elsewhere | None:
    if value is None:
        return None
    data = _mapping(value, "elsewhere")
    return Elsewhere(
        host=_optional(json_text, data.get("host"), "elsewhere.host"),
        pid=_optional(_int, data.get("pid"), "elsewhere.pid"),
        started=_optional(json_number, data.get("started"), "elsewhere.started"),
        steps_done=_int(json_key(data, "steps_done", "elsewhere"), "elsewhere.steps_done"),
        total_steps=_int(json_key(data, "total_steps", "elsewhere"), "elsewhere.total_steps"),
    )


def _current(value: Any) -> Current:
    if value is None:
        return Current()
    data = _mapping(value, "current")
    return Current(_optional(Score.from_json, data.get("dev"), "current.dev"),
                   _optional(Score.from_json, data.get("test"), "current.test"))


def parse_state(value: Any) -> PromptState:
    """Read a prompt-state object (shape in the module docstring); ValueError names the bad key."""
    try:
        return _state(value)
    except ValueError as exc:
        raise ValueError(f"prompt state: {exc}") from None


def _state(value: Any) -> PromptState:
    data = _mapping(value, "the answer")
    version = data.get("version")
    if version != STATE_VERSION:
        raise ValueError(f"unsupported version {version!r} (want {STATE_VERSION})")
    scored = _get(data, "scored")
    if not isinstance(scored, list):
        raise ValueError("scored must be a list")
    history = _get(data, "history")
    if not isinstance(history, list):
        raise ValueError("history must be a list")
    return PromptState(
        path=json_text(_get(data, "path"), "path"),
        steps_done=_int(_get(data, "steps_done"), "steps_done"),
        total_steps=_int(_get(data, "total_steps"), "total_steps"),
        budget=_int(_get(data, "budget"), "budget"),
        scored=tuple(_scored(item, i) for i, item in enumerate(scored)),
        history=tuple(json_number(v, f"history[{i}]") for i, v in enumerate(history)),
        suggestion=_suggestion(data.get("suggestion")),
        usage=_usage(data.get("usage")),
        job=_job(data.get("job")),
        withheld=_suggestion(data.get("withheld"), "withheld"),
        rejected=_rejected(data.get("rejected")),
        text=json_text(data.get("text", ""), "text"),
        base=json_text(data.get("base", data.get("text", "")), "base"),
        current=_current(data.get("current")),
        elsewhere=_elsewhere(data.get("elsewhere")),
    )
