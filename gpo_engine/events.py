"""Typed progress events emitted by the optimizer.

The CLI turns them into a progress bar, the daemon into a server-sent event
stream. Every event is a small frozen dataclass with a JSON form, so a
consumer never needs to know the optimizer's internals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str = field(init=False, default="event")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Event | None:
        """The typed event of a JSON one (a daemon stream's), None for a kind the engine
        does not emit (the daemon's `state` and `end`); keys the event does not declare
        (`seq`, `job`, `time`... on every stream event) are skipped."""
        cls = KINDS.get(str(data.get("kind")))
        if cls is None:
            return None
        names = {f.name for f in dataclasses.fields(cls) if f.name != "kind"}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class JobStarted(Event):
    kind: str = field(init=False, default="job_started")
    path: str
    total_steps: int
    resumed_at: int  # first step this run will execute (0 for a fresh run)
    initial_dev: float  # 0-100
    dev_n: int


@dataclass(frozen=True)
class StepStarted(Event):
    kind: str = field(init=False, default="step_started")
    step: int
    total_steps: int
    budget: int


@dataclass(frozen=True)
class CandidateScored(Event):
    kind: str = field(init=False, default="candidate_scored")
    step: int
    index: int
    score: float  # 0-100 on the rows it was scored on
    n: int
    distance: int
    raced_out: bool


@dataclass(frozen=True)
class StepFinished(Event):
    kind: str = field(init=False, default="step_finished")
    step: int
    total_steps: int
    budget: int
    best_dev: float  # best dev score in the trajectory so far, 0-100
    step_dev: float | None  # dev score of the step's chosen candidate; None if none parsed
    candidates: int  # candidates that were scored
    rejected: int  # candidates dropped before scoring (junk, over budget, lost variable, ...)
    cost: float
    calls: int
    message: str = ""  # e.g. "no candidate parsed; keeping the current prompt"


@dataclass(frozen=True)
class JobFinished(Event):
    kind: str = field(init=False, default="job_finished")
    initial_dev: float
    best_dev: float
    steps_done: int
    stopped: str = ""  # why it ended early ("spend limit reached", "cancelled"), "" when complete


@dataclass(frozen=True)
class JobFailed(Event):
    kind: str = field(init=False, default="job_failed")
    error: str
    step: int


# Every event type by its `kind` (the class attribute is the field's default).
KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in (
    JobStarted, StepStarted, CandidateScored, StepFinished, JobFinished, JobFailed)}

EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default sink: a library caller that wants no progress."""
