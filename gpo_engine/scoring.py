"""What every metric returns: a Score in 0..1 with a short reason, and the
Metric protocol. A bad output is data, never an exception.

Reasons read "kind: detail" ("unparseable JSON: ...", "token F1 0.50: ...");
reason_group() / count_reasons() count failing rows by kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gpo_engine.examples import Example


@dataclass(frozen=True)
class Score:
    value: float  # 0.0..1.0
    reason: str = ""  # why, when it is not a full match (shown in reports)

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:  # also rejects NaN
            raise ValueError(f"score must be within 0..1, got {self.value!r}")


class Metric(Protocol):
    name: str

    async def __call__(self, output: str, example: Example) -> Score: ...


# -------------------------------------------------------------------- reasons


def quoted(text: str, limit: int = 60) -> str:
    """`text` stripped, cut to `limit` characters, as a Python literal for a reason."""
    text = text.strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def mismatch(expected: str, got: str) -> str:
    """The usual reason of a failed comparison: "expected 'x', got 'y'"."""
    return f"expected {quoted(expected)}, got {quoted(got)}"


def reason_group(reason: str) -> str:
    """The kind of failure a reason names, for counting rows by reason.

    Reasons are written "kind: detail" ("unparseable JSON: ...", "fields
    differ: ...", "token F1 0.50: ..."), so the text before the first colon
    is the kind. A colon inside a quoted value ("expected 'a: b', got ...")
    is not a kind separator: such a reason is its own group.
    """
    head, colon, _ = reason.partition(":")
    if not colon or "'" in head or '"' in head:
        return reason.strip()
    return head.strip()


def count_reasons(reasons: Iterable[str]) -> list[tuple[str, int]]:
    """(reason kind, rows) for the non-empty reasons, most frequent first."""
    counts = Counter(reason_group(reason) for reason in reasons if reason)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
