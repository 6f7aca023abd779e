"""Error types shared by the engine.

Failures on one example are data (a score of 0 with a reason), never an
exception; the classes here are for problems the user must fix (bad files,
bad settings) and for systemic failures that stop a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One located problem in a user's file; line and column are 1-based."""

    path: Path
    line: int
    column: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class GpoError(Exception):
    """Base class of every error the engine raises on purpose."""


class SourceError(GpoError):
    """A user file (prompt or example set) has one or more problems.

    Carries every problem found, not only the first, so an editor can show
    them all as diagnostics and a CLI can print them all at once.
    """

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("SourceError needs at least one problem")
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @property
    def path(self) -> Path:
        return self.problems[0].path

    @property
    def line(self) -> int:
        return self.problems[0].line


class ConfigError(GpoError):
    """A setting is missing or invalid and no file location applies."""


class ModelCallError(GpoError):
    """A model call failed after every retry (timeout, 429, 5xx, bad answer)."""

    def __init__(self, model: str, kind: str, message: str) -> None:
        self.model = model
        # "timeout" | "rate_limit" | "budget" | "server" | "bad_response" | "auth" | "other"
        self.kind = kind
        super().__init__(f"{model}: {kind}: {message}")


class SpendLimitReached(GpoError):
    """The job's dollar cap was reached; the run stops at a step boundary."""

    def __init__(self, spent: float, limit: float) -> None:
        self.spent = spent
        self.limit = limit
        super().__init__(f"spend limit reached: ${spent:.4f} of ${limit:.4f}")
