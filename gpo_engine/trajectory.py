"""The optimization trajectory, stored step by step on disk.

One record per optimization: the initial prompt's scores and, for every
finished step, every candidate with its scores and the step's chosen prompt.
Records live in a diskcache (SQLite underneath), so each `save` is one
transaction: a process killed mid-write leaves the previous step intact, and
the next run resumes after the last finished step.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import diskcache

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CandidateRecord:
    text: str
    distance: int  # words changed against the step's current prompt
    status: str  # "scored" | "raced_out" | a rejection reason from update.Rejected
    dev: float | None = None  # 0-100 on the rows it was scored on
    dev_n: int = 0
    detail: str = ""


@dataclass(frozen=True)
class StepRecord:
    step: int
    budget: int
    current: str  # the prompt the step started from
    train_score: float  # the current prompt on the step's train minibatch, 0-100
    candidates: tuple[CandidateRecord, ...]
    chosen: str  # the prompt the next step starts from
    chosen_dev: float  # 0-100 on full dev
    message: str = ""


@dataclass
class Trajectory:
    key: str
    path: str
    total_steps: int
    initial: str
    initial_dev: float
    dev_n: int
    steps: list[StepRecord] = field(default_factory=list)
    # Per-prompt dev outcomes (uid -> 0..1) for the paired tests done on results.
    dev_outcomes: dict[str, dict[str, float]] = field(default_factory=dict)
    # What the optimization has spent so far over all its runs (llm.Usage.to_dict form).
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_done(self) -> int:
        return len(self.steps)

    def scored(self) -> list[tuple[str, float, int]]:
        """Every prompt with a full dev score: (text, dev 0-100, step it entered; 0 = initial)."""
        out = [(self.initial, self.initial_dev, 0)]
        for s in self.steps:
            for c in s.candidates:
                if c.status == "scored" and c.dev is not None:
                    out.append((c.text, c.dev, s.step + 1))
        return out

    def history(self) -> list[tuple[str, float, int]]:
        """The trajectory proper: the initial prompt, then each step's chosen prompt."""
        out = [(self.initial, self.initial_dev, 0)]
        out.extend((s.chosen, s.chosen_dev, s.step + 1) for s in self.steps)
        return out

    def best(self) -> tuple[str, float]:
        """Highest dev score; on a tie the earliest, so noise never replaces the user's text."""
        text, dev, _ = max(self.scored(), key=lambda item: (item[1], -item[2]))
        return text, dev

    def rejected(self) -> dict[str, int]:
        """Candidates dropped before scoring, counted by reason ("leak", "duplicate", ...)."""
        counts: dict[str, int] = {}
        for step in self.steps:
            for c in step.candidates:
                if c.status not in ("scored", "raced_out"):
                    counts[c.status] = counts.get(c.status, 0) + 1
        return counts

    def dev_score_of(self, text: str) -> float | None:
        """The full-dev score of `text` if it was ever scored, else None."""
        for candidate, dev, _ in self.scored():
            if same_prompt(candidate, text):
                return dev
        return None

    def current(self) -> tuple[str, float]:
        if not self.steps:
            return self.initial, self.initial_dev
        return self.steps[-1].chosen, self.steps[-1].chosen_dev

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Trajectory:
        data: dict[str, Any] = json.loads(text)
        if data.pop("format", None) != FORMAT_VERSION:
            raise ValueError("unknown trajectory format")
        steps = [
            StepRecord(**{**s, "candidates": tuple(CandidateRecord(**c) for c in s["candidates"])})
            for s in data.pop("steps")
        ]
        return cls(steps=steps, **data)


def same_prompt(a: str, b: str) -> bool:
    """Equal as prompts: the file's final newline and outer whitespace do not count.

    An applied suggestion gets the file's final newline back (with_body), and
    the task model never sees outer whitespace (task.task_fn strips it).
    """
    return a.strip() == b.strip()


def trajectory_key(fingerprint: dict[str, Any]) -> str:
    """Stable key of everything that decides a run's results.

    The caller passes the prompt path, its settings, both models, the example
    set's content hash and the initial text: change any and it is a new run.
    """
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class TrajectoryStore:
    """diskcache-backed trajectories, plus an index from prompt path to its latest run."""

    def __init__(self, directory: Path) -> None:
        self._cache: diskcache.Cache | None
        try:
            self._cache = diskcache.Cache(str(directory))
        except (OSError, sqlite3.Error) as exc:  # read-only or full disk: run without resume
            warnings.warn(f"trajectory store unavailable at {directory}: {exc}", stacklevel=2)
            self._cache = None

    def load(self, key: str) -> Trajectory | None:
        if self._cache is None:
            return None
        raw = self._cache.get(f"run:{key}")
        if raw is None:
            return None
        try:
            return Trajectory.from_json(str(raw))
        except (ValueError, TypeError, KeyError) as exc:
            # A record we cannot read is reported and ignored, never half-used.
            warnings.warn(f"ignoring unreadable trajectory {key}: {exc}", stacklevel=2)
            return None

    def save(self, trajectory: Trajectory) -> None:
        if self._cache is None:
            return
        try:
            with self._cache.transact():
                self._cache.set(f"run:{trajectory.key}", trajectory.to_json())
                self._cache.set(f"path:{trajectory.path}", trajectory.key)
        except (OSError, sqlite3.Error) as exc:
            warnings.warn(f"could not save trajectory: {exc}", stacklevel=2)

    def latest_for(self, path: str) -> Trajectory | None:
        if self._cache is None:
            return None
        key = self._cache.get(f"path:{path}")
        return self.load(str(key)) if key is not None else None

    def delete(self, key: str) -> None:
        if self._cache is not None:
            self._cache.delete(f"run:{key}")

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
