"""The lock file: a prompt's baseline as `<name>.prompt.lock`, JSON next to the prompt.

It records what the prompt scored when the baseline was taken: hashes of the
prompt file and of the example set, the task model, the metric, and for dev
and test the score, its interval and every example's outcome. Reading one
that is not a usable lock is a SourceError with a line and the command that
recreates it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gpo_engine import __version__, atomic
from gpo_engine.errors import Problem, SourceError
from gpo_engine.evaluate import EvalResult
from gpo_engine.offer import Score

LOCK_VERSION = 1
LOCK_SUFFIX = ".lock"
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class SplitRecord:
    """One split's result as the lock stores it: the score with its 95% interval
    (always known here: the lock holds every row's outcome) and those outcomes."""

    score: Score
    outcomes: Mapping[str, float] = field(default_factory=dict)  # example uid -> 0..1

    def __post_init__(self) -> None:
        if self.score.low is None or self.score.high is None:
            raise ValueError("a lock's score needs its interval (low and high)")

    @classmethod
    def of(cls, result: EvalResult) -> SplitRecord:
        return cls(Score.of(result),
                   {o.uid: o.score for o in sorted(result.outcomes, key=lambda o: o.uid)})

    def to_dict(self) -> dict[str, Any]:
        score = self.score  # low and high are never None (__post_init__)
        return {"n": score.n, "score": round(score.value, 4), "low": round(score.low or 0.0, 4),
                "high": round(score.high or 0.0, 4),
                "outcomes": {uid: self.outcomes[uid] for uid in sorted(self.outcomes)}}


@dataclass(frozen=True)
class Lock:
    """A recorded baseline (or a fresh measurement in the same shape)."""

    prompt_hash: str
    examples: str  # the example file, relative to the prompt's folder
    examples_hash: str
    model: str
    metric: Mapping[str, str | None]  # name, pattern, judge: what makes scores comparable
    dev: SplitRecord
    test: SplitRecord
    tool_version: str = __version__

    def outcomes(self) -> dict[str, float]:
        """Dev and test outcomes together: the rows a regression is judged on."""
        return {**self.dev.outcomes, **self.test.outcomes}

    def combined(self) -> Score:
        """Score and 95% interval over dev and test together, in percent, over the
        rows of both splits."""
        return replace(Score.of_outcomes(list(self.outcomes().values())),
                       n=self.dev.score.n + self.test.score.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lock_version": LOCK_VERSION,
            "tool": f"gpo {self.tool_version}",
            "prompt_hash": self.prompt_hash,
            "examples": self.examples,
            "examples_hash": self.examples_hash,
            "model": self.model,
            "metric": dict(self.metric),
            "dev": self.dev.to_dict(),
            "test": self.test.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def lock_path(prompt_path: Path) -> Path:
    """`x.prompt` -> `x.prompt.lock`, beside it."""
    return prompt_path.with_name(prompt_path.name + LOCK_SUFFIX)


def prompt_hash(source: str) -> str:
    """sha256 of the whole file (frontmatter too: max_tokens or the metric change scores).

    Line endings are normalized so a checkout with CRLF conversion keeps its baseline.
    """
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_lock(text: str, path: Path) -> Lock:
    """Read a lock file's text; SourceError (with a line) when it is not a usable lock."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError([Problem(path, error.lineno, error.colno,
                                   f"lock file is not valid JSON: {error.msg}")]) from None

    def bad(message: str) -> SourceError:
        return SourceError([Problem(path, 1, 1, f"{message}; recreate it with "
                                    f"`gpo check --update {prompt_of_lock(path)}`")])

    if not isinstance(data, dict):
        raise bad("lock file must hold a JSON object")
    version = data.get("lock_version")
    if version != LOCK_VERSION:
        raise bad(f"lock format version {version!r} is not supported (this gpo reads "
                  f"{LOCK_VERSION})")
    try:
        splits = {name: _split_from(data[name]) for name in SPLITS}
        metric = data["metric"]
        if not isinstance(metric, dict):
            raise TypeError("metric")
        texts = {key: data[key] for key in ("prompt_hash", "examples", "examples_hash", "model")}
        if not all(isinstance(v, str) for v in texts.values()):
            raise TypeError("text field")
        tool = str(data.get("tool", "gpo ?")).removeprefix("gpo ")
        return Lock(metric={str(k): (None if v is None else str(v)) for k, v in metric.items()},
                    dev=splits["dev"], test=splits["test"], tool_version=tool, **texts)
    except KeyError as missing:
        raise bad(f"lock file has no {missing.args[0]!r} field") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise bad(f"lock file has a malformed field ({error})") from None


def _split_from(raw: Any) -> SplitRecord:
    outcomes = {str(uid): float(v) for uid, v in raw["outcomes"].items()}
    return SplitRecord(Score(float(raw["score"]), int(raw["n"]), float(raw["low"]),
                             float(raw["high"])), outcomes)


def prompt_of_lock(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(LOCK_SUFFIX))


def read_lock(path: Path) -> Lock | None:
    """The lock at `path`, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError([Problem(path, 1, 1, f"cannot read lock file: {error}")]) from None
    return parse_lock(text, path)


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically: a killed process or a full disk leaves the old lock or the new
    one, never half (atomic.WriteError says which file could not be written)."""
    atomic.write_text(path, lock.to_json())
