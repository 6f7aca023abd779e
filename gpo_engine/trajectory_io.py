"""A trajectory as JSON lines: readable, diffable in git, and append-friendly.

The store keeps a trajectory as one JSON blob in diskcache; that is right for
atomic saves and wrong for people. This module writes the same record as one
JSON object per line:

    {"kind": "trajectory", "format": 1, "key": ..., "path": ..., ...}   header, first line
    {"kind": "outcomes", "text": <initial prompt>, "scores": {uid: 0..1}}
    {"kind": "step", "step": 0, "budget": 30, "current": ..., "chosen": ..., ...}
    {"kind": "candidate", "step": 0, "index": 0, "text": ..., "status": "scored", ...}
    {"kind": "outcomes", "text": <a candidate>, "scores": {...}}
    ... the same for every later step

A finished step only ever adds lines at the end, so the file of a longer run
is the file of a shorter run plus lines, and a git diff of two exports of one
run shows just the new steps. Keys come in a fixed order (kind first, then
the record's fields in declaration order) so the same trajectory always
serializes to the same bytes.

Reading back checks every line and reports every problem with its file and
line; nothing is silently dropped or half-read.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gpo_engine import atomic
from gpo_engine.errors import Problem, SourceError
from gpo_engine.trajectory import (
    FORMAT_VERSION,
    CandidateRecord,
    StepRecord,
    Trajectory,
    conforms,
    record_problems,
)

HEADER, STEP, CANDIDATE, OUTCOMES = "trajectory", "step", "candidate", "outcomes"
KINDS = (HEADER, STEP, CANDIDATE, OUTCOMES)

# Fields written by this module rather than copied from the dataclasses.
_STEP_SKIP = {"candidates"}
_HEADER_SKIP = {"steps", "dev_outcomes"}


@dataclasses.dataclass(frozen=True)
class Imported:
    """A trajectory read back, with the header's optional fingerprint.

    The fingerprint is the task fingerprint minus the path (settings, models,
    example-set hash) of the run; an importer compares it with the local task
    before filing the trajectory under the local task's key.
    """

    trajectory: Trajectory
    fingerprint: dict[str, Any] | None


def dump_lines(trajectory: Trajectory, fingerprint: dict[str, Any] | None = None) -> Iterator[str]:
    """The trajectory as JSON lines (no trailing newlines), header first."""
    header: dict[str, Any] = {"kind": HEADER, "format": FORMAT_VERSION}
    header.update(_fields(trajectory, _HEADER_SKIP))
    header["fingerprint"] = fingerprint
    yield _line(header)
    written: set[str] = set()
    yield from _outcome_lines(trajectory, [trajectory.initial], written)
    for record in trajectory.steps:
        yield _line({"kind": STEP, **_fields(record, _STEP_SKIP)})
        for index, candidate in enumerate(record.candidates):
            yield _line({"kind": CANDIDATE, "step": record.step, "index": index,
                         **_fields(candidate, set())})
        yield from _outcome_lines(trajectory, [c.text for c in record.candidates], written)
    # Outcomes of prompts no candidate line names (none today): kept, not dropped.
    yield from _outcome_lines(trajectory, list(trajectory.dev_outcomes), written)


def dumps(trajectory: Trajectory, fingerprint: dict[str, Any] | None = None) -> str:
    return "".join(line + "\n" for line in dump_lines(trajectory, fingerprint))


def write(trajectory: Trajectory, path: Path, fingerprint: dict[str, Any] | None = None) -> None:
    """Write the export to `path` atomically: a crash or a full disk leaves the previous
    file byte-identical (atomic.WriteError says so), never half an export."""
    atomic.write_text(path, dumps(trajectory, fingerprint))


def _outcome_lines(trajectory: Trajectory, texts: Iterable[str],
                   written: set[str]) -> Iterator[str]:
    for text in texts:
        scores = trajectory.dev_outcomes.get(text)
        if scores is None or text in written:
            continue
        written.add(text)
        yield _line({"kind": OUTCOMES, "text": text,
                     "scores": {uid: scores[uid] for uid in sorted(scores)}})


def _fields(record: Any, skip: set[str]) -> dict[str, Any]:
    """A dataclass's fields in declaration order (new fields are exported without changes here)."""
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)
            if f.name not in skip}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    return value


def _line(obj: dict[str, Any]) -> str:
    # ensure_ascii=False: prompts in any language stay readable in a diff.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


# ------------------------------------------------------------------ reading


def load(path: Path) -> Imported:
    """Read an export back; raises SourceError listing every bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError([Problem(path, 1, 1, f"not UTF-8 text: {exc}")]) from exc
    return loads(text, path)


def loads(text: str, path: Path) -> Imported:
    """Parse JSON lines from `text` (`path` is used in messages only)."""
    reader = _Reader(path)
    for number, raw in enumerate(text.splitlines(), start=1):
        reader.feed(number, raw)
    return reader.finish()


class _Reader:
    """Checks lines one at a time and assembles the trajectory; collects every problem."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.header: dict[str, Any] | None = None
        self.header_line = 1
        self.fingerprint: dict[str, Any] | None = None
        self.steps: list[dict[str, Any]] = []
        self.candidates: list[list[CandidateRecord]] = []
        self.outcomes: dict[str, dict[str, float]] = {}
        self.first_line = True

    def fail(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, 1, message))

    def feed(self, line: int, raw: str) -> None:
        if not raw.strip():
            return  # blank lines carry nothing (a hand edit may leave one)
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            self.problems.append(Problem(self.path, line, exc.colno, f"not JSON: {exc.msg}"))
            self.first_line = False
            return
        first, self.first_line = self.first_line, False
        if not isinstance(obj, dict):
            self.fail(line, f"expected a JSON object, got {type(obj).__name__}")
            return
        kind = obj.get("kind")
        if kind not in KINDS:
            self.fail(line, f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
            return
        if first != (kind == HEADER):
            self.fail(line, "the first line must be the trajectory header" if first
                      else "a second trajectory header")
            return
        handler = {HEADER: self._header, STEP: self._step, CANDIDATE: self._candidate,
                   OUTCOMES: self._outcomes}[kind]
        handler(line, obj)

    def _header(self, line: int, obj: dict[str, Any]) -> None:
        if obj.get("format") != FORMAT_VERSION:
            self.fail(line, f"unsupported format {obj.get('format')!r}; "
                      f"this gpo reads format {FORMAT_VERSION}")
            return
        fingerprint = obj.get("fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, dict):
            self.fail(line, "fingerprint must be an object or null")
            return
        body = {k: v for k, v in obj.items() if k not in ("kind", "format", "fingerprint")}
        if self._check(line, Trajectory, body, _HEADER_SKIP):
            self.header = body
            self.header_line = line
            self.fingerprint = fingerprint

    def _step(self, line: int, obj: dict[str, Any]) -> None:
        body = {k: v for k, v in obj.items() if k != "kind"}
        if not self._check(line, StepRecord, body, _STEP_SKIP):
            return
        if body["step"] != len(self.steps):
            self.fail(line, f"step {body['step']} out of order; expected step {len(self.steps)}")
            return
        self.steps.append(body)
        self.candidates.append([])

    def _candidate(self, line: int, obj: dict[str, Any]) -> None:
        step, index = obj.get("step"), obj.get("index")
        body = {k: v for k, v in obj.items() if k not in ("kind", "step", "index")}
        if not isinstance(step, int) or isinstance(step, bool) or not isinstance(index, int) \
                or isinstance(index, bool):
            self.fail(line, "a candidate needs integer 'step' and 'index'")
            return
        if not self._check(line, CandidateRecord, body, set()):
            return
        if not self.steps or step != len(self.steps) - 1:
            self.fail(line, f"candidate of step {step} does not follow its step line")
            return
        if index != len(self.candidates[-1]):
            self.fail(line, f"candidate index {index} out of order; "
                      f"expected {len(self.candidates[-1])}")
            return
        self.candidates[-1].append(CandidateRecord(**_tuples(CandidateRecord, body)))

    def _outcomes(self, line: int, obj: dict[str, Any]) -> None:
        text, scores = obj.get("text"), obj.get("scores")
        extra = set(obj) - {"kind", "text", "scores"}
        if extra:
            self.fail(line, f"unknown field(s) {', '.join(sorted(extra))}")
        elif not isinstance(text, str):
            self.fail(line, "outcomes need a string 'text'")
        elif not isinstance(scores, dict) or not all(
                _is_score(v) for v in scores.values()):
            self.fail(line, "'scores' must map row ids to numbers from 0 to 1")
        elif text in self.outcomes:
            self.fail(line, "outcomes of this prompt were already given")
        else:
            self.outcomes[text] = {str(k): float(v) for k, v in scores.items()}

    def _check(self, line: int, cls: type, body: dict[str, Any], skip: set[str]) -> bool:
        """Every declared field present with the declared type and in range (scores 0-100,
        a well-formed usage); no unknown fields (trajectory.record_problems)."""
        problems = record_problems(cls, body, frozenset(skip))
        for message in problems:
            self.fail(line, message)
        return not problems

    def finish(self) -> Imported:
        if self.header is None and not self.problems:
            self.fail(1, "empty file: no trajectory header")
        if self.header is not None and len(self.steps) > self.header["total_steps"]:
            self.fail(self.header_line, f"{len(self.steps)} steps follow, but total_steps is "
                      f"{self.header['total_steps']}")
        if self.problems:
            raise SourceError(self.problems)
        assert self.header is not None
        steps = [StepRecord(**_tuples(StepRecord, {**s, "candidates": tuple(c)}))
                 for s, c in zip(self.steps, self.candidates, strict=True)]
        trajectory = Trajectory(**_tuples(Trajectory, self.header), steps=steps,
                                dev_outcomes=self.outcomes)
        return Imported(trajectory, self.fingerprint)


def _tuples(cls: type, body: dict[str, Any]) -> dict[str, Any]:
    """JSON arrays back into tuples where the dataclass declares a tuple."""
    hints = typing.get_type_hints(cls)
    return {k: tuple(v) if isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple
            else v for k, v in body.items()}


def _is_score(value: Any) -> bool:
    """A per-row outcome: a finite number from 0 to 1."""
    return conforms(value, float) and 0.0 <= value <= 1.0
