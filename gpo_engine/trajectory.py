"""The optimization trajectory, stored step by step on disk.

One record per optimization: the initial prompt's scores and, for every
finished step, every candidate with its scores and the step's chosen prompt.
Records live in a diskcache (SQLite underneath, private and self-healing:
gpo_engine.diskstore), so each `save` is one transaction: a process killed
mid-write leaves the previous step intact, and the next run resumes after the
last finished step.

A record read back (from the store, or imported by trajectory_io) is checked
field by field before it is used: types, scores within 0..100, outcomes within
0..1, a well-formed usage record, steps in order. One that fails is ignored
with a warning, like a damaged entry, and never half-used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import sqlite3
import types
import typing
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpo_engine.diskstore import DiskStore
from gpo_engine.errors import GpoError
from gpo_engine.offer import Score, same_prompt
from gpo_engine.shared_store import TieredStore, open_store

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
    # What the optimization has spent so far over all its runs (usage.Usage.to_dict form).
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

    def dev_score(self, text: str) -> Score | None:
        """The full-dev Score of `text` if it was ever scored (see dev_scores)."""
        for candidate, _, score in self.dev_scores():
            if same_prompt(candidate, text):
                return score
        return None

    def dev_scores(self) -> list[tuple[str, int, Score]]:
        """Every prompt of scored() as (text, step it entered, its full-dev Score): the
        interval from the recorded per-row outcomes, or None bounds when none are kept."""
        sizes = {self.initial: self.dev_n}
        for s in self.steps:
            sizes.update({c.text: c.dev_n for c in s.candidates if c.status == "scored"})
        out = []
        for text, dev, step in self.scored():
            outcomes = self.dev_outcomes.get(text)
            score = (dataclasses.replace(Score.of_outcomes(list(outcomes.values())), value=dev)
                     if outcomes else Score(dev, sizes.get(text, 0)))
            out.append((text, step, score))
        return out

    def current(self) -> tuple[str, float]:
        if not self.steps:
            return self.initial, self.initial_dev
        return self.steps[-1].chosen, self.steps[-1].chosen_dev

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Trajectory:
        """The record `to_json` wrote; ValueError naming the first problems of any other."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if data.pop("format", None) != FORMAT_VERSION:
            raise ValueError("unknown trajectory format")
        problems = trajectory_problems(data)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ValueError("; ".join(problems[:3]) + more)
        steps = [
            StepRecord(**{**s, "candidates": tuple(CandidateRecord(**c) for c in s["candidates"])})
            for s in data.pop("steps")
        ]
        return cls(steps=steps, **data)


def trajectory_key(fingerprint: dict[str, Any]) -> str:
    """Stable key of everything that decides a run's results.

    The caller passes the prompt path, its settings, both models, the example
    set's content hash and the initial text: change any and it is a new run.
    """
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------
# Checking a record read back

# Fields holding a 0-100 score, and fields counting something (at least 0; a
# candidate dropped before it was measured has distance -1).
_PERCENT = frozenset({"initial_dev", "chosen_dev", "train_score", "dev"})
_COUNT = frozenset({"dev_n", "total_steps", "budget", "step"})


def trajectory_problems(data: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a stored trajectory's fields (the `format` key removed)."""
    problems = record_problems(Trajectory, _without(data, "steps"), skip=frozenset({"steps"}))
    steps = data.get("steps")
    if not isinstance(steps, list):
        return [*problems, "field 'steps' should be a list of steps"]
    for number, step in enumerate(steps):
        if not isinstance(step, dict):
            problems.append(f"step {number} should be an object")
            continue
        problems += [f"step {number}: {p}" for p in record_problems(
            StepRecord, _without(step, "candidates"), skip=frozenset({"candidates"}))]
        if step.get("step") != number:
            problems.append(f"step {number} is numbered {step.get('step')!r}")
        candidates = step.get("candidates")
        if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
            problems.append(f"step {number}: 'candidates' should be a list of objects")
            continue
        for index, candidate in enumerate(candidates):
            problems += [f"step {number} candidate {index}: {p}"
                         for p in record_problems(CandidateRecord, candidate)]
    total = data.get("total_steps")
    if isinstance(total, int) and len(steps) > total:
        problems.append(f"{len(steps)} steps recorded but total_steps is {total}")
    return problems


def _without(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != name}


def record_problems(cls: type, body: Mapping[str, Any],
                    skip: frozenset[str] = frozenset()) -> list[str]:
    """Every declared field present with its declared type and in range; no unknown fields."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    problems = []
    unknown = sorted(set(body) - set(fields))
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)} in a {cls.__name__} line")
    for name, f in fields.items():
        if name not in body:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"missing field '{name}'")
            continue
        value = body[name]
        if not conforms(value, hints[name]):
            problems.append(f"field '{name}' should be {type_name(hints[name])}, "
                            f"got {_shown(value)}")
        elif name == "dev_outcomes":
            problems += outcome_problems(value)
        elif name == "usage":
            problems += usage_problems(value)
        else:
            wrong = _out_of_range(name, value)
            if wrong:
                problems.append(f"field '{name}' should be {wrong}, got {_shown(value)}")
    return problems


def _out_of_range(name: str, value: Any) -> str | None:
    """What a well-typed field's value should be, when it is out of its range."""
    if name in _PERCENT and value is not None and not 0.0 <= value <= 100.0:
        return "a score from 0 to 100"
    if name in _COUNT and value < 0:
        return "0 or more"
    if name == "distance" and value < -1:
        return "0 or more (or -1: not measured)"
    return None


def outcome_problems(outcomes: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Per-row outcomes must be scores from 0 to 1."""
    for scores in outcomes.values():
        if not all(0.0 <= v <= 1.0 for v in scores.values()):
            return ["'dev_outcomes' must map row ids to numbers from 0 to 1"]
    return []


def usage_problems(usage: Mapping[str, Any]) -> list[str]:
    """A usage record (usage.Usage.to_dict) that Usage.from_dict can read back: per model,
    every known field of the declared type, counts and dollars 0 or more."""
    from gpo_engine.usage import ModelUsage

    per_model = usage.get("per_model", {})
    if not isinstance(per_model, dict):
        return ["field 'usage': 'per_model' should be an object"]
    hints = typing.get_type_hints(ModelUsage)
    problems = []
    for model, record in per_model.items():
        if not isinstance(record, dict):
            problems.append(f"field 'usage': the record of {model} should be an object")
            continue
        for name, value in record.items():
            hint = hints.get(name)
            if hint is None:
                continue  # written by a newer gpo; Usage.from_dict skips it too
            if not conforms(value, hint) or (_is_number(value) and value < 0):
                problems.append(f"field 'usage': {model} {name} should be "
                                f"{type_name(hint)} (0 or more), got {_shown(value)}")
    totals = {k: v for k, v in usage.items() if k != "per_model"}
    for name, value in totals.items():
        if not isinstance(value, bool) and not (_is_number(value) and value >= 0):
            problems.append(f"field 'usage': {name} should be a number (0 or more), "
                            f"got {_shown(value)}")
    return problems


def _is_number(value: Any) -> bool:
    """A finite JSON number (json.loads reads NaN and Infinity too)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a (simple) type annotation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, list):
            return False
        inner = args[0] if args else Any
        return all(conforms(v, inner) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            return False
        inner = args[1] if len(args) == 2 else Any
        return all(conforms(v, inner) for v in value.values())
    return False  # a field type this reader does not know cannot be checked: refuse it


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {str: "a string", int: "an integer", float: "a number",
            bool: "true or false"}.get(hint, str(hint))


def _shown(value: Any) -> str:
    return json.dumps(value)[:60]


# ---------------------------------------------------------------------------
# The store

# What rebuilding a corrupt store loses, for its warning.
_LOST = ("saved runs that could not be read start again from step 1; the answers of their "
         "finished steps are still in the response cache, so replaying them costs no model "
         "call (an export made with `gpo trajectory --jsonl` can also be imported back)")


class StaleTrajectory(GpoError):
    """A save that would overwrite steps another run stored."""


def _extends(new: Trajectory, old: Trajectory) -> bool:
    return (new.initial == old.initial and len(new.steps) >= len(old.steps)
            and all(asdict(a) == asdict(b) for a, b in zip(new.steps, old.steps, strict=False)))


def _supersedes(key: str, local: Any, shared: Any) -> bool:
    """Whether a record this machine kept while Redis was away may replace the shared one:
    a run only when it extends it (else another machine's steps would be lost)."""
    if not key.startswith("run:"):
        return True  # the path index: the latest run wins
    try:
        return _extends(Trajectory.from_json(str(local)), Trajectory.from_json(str(shared)))
    except ValueError:  # the shared record is unreadable: replace it
        return True


class TrajectoryStore:
    """diskcache-backed trajectories, plus an index from prompt path to its latest run."""

    def __init__(self, directory: Path) -> None:
        self._store: DiskStore | TieredStore | None
        try:
            # The disk, with Redis behind it when $GPO_CACHE_URL is set (shared_store).
            self._store = open_store(directory, kind="trajectories", label="trajectory store",
                                     lost=_LOST, supersedes=_supersedes)
        except (OSError, sqlite3.Error) as exc:  # read-only or full disk: run without resume
            warnings.warn(f"trajectory store unavailable at {directory}: {exc}", stacklevel=2)
            self._store = None
        # Its folder (the spend journal lives beside it); None when it could not be opened.
        self.directory: Path | None = directory if self._store is not None else None

    def load(self, key: str) -> Trajectory | None:
        if self._store is None:
            return None
        raw = self._store.get(f"run:{key}")
        if raw is None:
            return None
        try:
            return Trajectory.from_json(str(raw))
        except ValueError as exc:
            # A record we cannot trust is reported and ignored, never half-used; the
            # run starts over and its next save replaces it.
            warnings.warn(f"ignoring unreadable trajectory {key}: {exc}; the run starts "
                          "over (its answers are in the response cache)", stacklevel=2)
            return None

    def save(self, trajectory: Trajectory, *, replace: bool = False) -> None:
        """Store `trajectory`, which must extend the stored record of its key (the same
        initial prompt, the stored steps unchanged at its start): StaleTrajectory for a
        writer whose record is behind or diverged, and nothing is overwritten. `replace`
        (an explicit import) overwrites whatever is stored."""
        if self._store is None:
            return
        stored = None
        if not replace:
            raw = self._store.get(f"run:{trajectory.key}")
            with contextlib.suppress(ValueError):  # unreadable: load warned, replace it
                stored = Trajectory.from_json(str(raw)) if raw is not None else None
        if stored is not None and not _extends(trajectory, stored):
            raise StaleTrajectory(
                f"not saving the trajectory of {trajectory.path}: the store holds "
                f"{stored.steps_done} step(s) that this run's {trajectory.steps_done} do not "
                "extend (another run wrote them); run again to resume from them")
        # One transaction: a killed process leaves the previous step, never half of this one.
        # A store that cannot be written warns once (diskstore) and the run goes on.
        self._store.set_many({f"run:{trajectory.key}": trajectory.to_json(),
                              f"path:{trajectory.path}": trajectory.key})

    def latest_for(self, path: str) -> Trajectory | None:
        if self._store is None:
            return None
        key = self._store.get(f"path:{path}")
        return self.load(str(key)) if key is not None else None

    def delete(self, key: str) -> None:
        if self._store is not None:
            self._store.delete(f"run:{key}")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
