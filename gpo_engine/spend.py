"""A job's spend on disk as each call goes out and comes back: the spend journal.

A trajectory is saved at step boundaries; a job killed mid-step used to lose
the usage of the step it was in (the calls are answered and cached, so the
resumed run gets them free and they were never counted). A reliability run
killed one job 16 times: the provider answered 118 requests, the trajectory
said 66, and `gpo.max_cost` starts from the trajectory's figure.

So every job keeps a journal, `<trajectory store>/spend/<key>.jsonl`, of small
JSON lines, each one model's change since the line before:

    {"model": "openai/gpt-4o-mini", "calls": 1, "held": 1.3e-05}
    {"model": "openai/gpt-4o-mini", "prompt_tokens": 21, "completion_tokens": 6,
     "cost": 6.75e-06, "held": -1.3e-05}

A request is written as it goes out, with `held`: what it may cost at most
(its prompt at about four characters a token, its whole `max_tokens` answer).
Its answer, or its failure, releases the hold and adds what it really cost.
A hold never released is a request whose process died waiting for it: the
provider probably billed it, so reading the journal back counts the hold as
spent. The in-flight calls of a kill are therefore counted at their most, and
no kill lets a capped job past its cap.

One unbuffered append per line (no fsync: the kernel keeps what a killed
process wrote; a power cut may lose the last lines): about 90 bytes a line,
two lines a call, 20-50 us a call in all on this shared 2-core machine (20,000
calls; the write itself is ~4 us a line, the rest is finding what changed),
against milliseconds for the HTTP call it records. Reading it back sums the
lines (40,000 lines: 0.4-0.7 s); the journal is then rewritten (atomically)
as one line per model, so it grows by one run's calls at most.

In a kill storm (tests/test_spend.py: 11 SIGKILLs of a capped `gpo optimize`)
the journal recorded all 219 requests the provider received, where the
trajectory used to hold 148 of 303, and the job stopped at its cap with the
provider's bill under it (it went 15% past it before).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpo_engine import prices
from gpo_engine.atomic import write_text
from gpo_engine.usage import ADDITIVE, ModelUsage, Usage, apply_delta, delta

JOURNAL_DIR = "spend"  # the journals' folder inside the trajectory store's
CHARS_PER_TOKEN = 4  # as gpo_engine.cost estimates prompts
MESSAGE_OVERHEAD = 4  # tokens a chat message costs beyond its text
# A media part's tokens: above OpenAI's 1,105 for a high-detail 2048 px image.
MEDIA_TOKENS = 1_500


def journal_path(store_dir: Path, key: str) -> Path:
    """Where the journal of the trajectory `key` lives: inside the store's folder, so
    clearing or setting aside the store takes its journals along."""
    return store_dir / JOURNAL_DIR / f"{key}.jsonl"


def hold(model: str, messages: Sequence[Mapping[str, Any]], max_tokens: int) -> float:
    """The most a chat request may cost: its prompt (about four characters a
    token, a media part at MEDIA_TOKENS) and a whole `max_tokens` answer; 0.0
    when the model has no price."""
    prompt_tokens = sum(_content_tokens(m.get("content")) + MESSAGE_OVERHEAD for m in messages)
    return prices.price(model, prompt_tokens, max_tokens) or 0.0


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return math.ceil(len(content) / CHARS_PER_TOKEN)
    if not isinstance(content, list):
        return 0
    # OpenAI content parts: text by its length; an image, audio or file part by
    # a flat figure (its data: URI's length says nothing about its tokens).
    return sum(_content_tokens(part.get("text", "")) if part.get("type") == "text"
               else MEDIA_TOKENS for part in content if isinstance(part, Mapping))


def embedding_hold(model: str, texts: Sequence[str]) -> float:
    """The most an embedding request for `texts` may cost."""
    chars = sum(len(t) for t in texts)
    return prices.price(model, math.ceil(chars / CHARS_PER_TOKEN) + len(texts), 0) or 0.0


def read(path: Path) -> Usage | None:
    """The usage a journal adds up to (holds never released count as spent); None
    when there is no journal. A line that cannot be read is skipped with a warning
    naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        warnings.warn(f"{path}: unreadable spend journal ({exc}); the trajectory's saved "
                      "usage is used instead", RuntimeWarning, stacklevel=2)
        return None
    usage = Usage()
    held: dict[str, float] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record, problem = _parse(line)
        if record is None:
            warnings.warn(f"{path}:{number}: {problem}; skipped (its spend is not counted)",
                          RuntimeWarning, stacklevel=2)
            continue
        apply_delta(usage.model(record["model"]), record)
        held[record["model"]] = held.get(record["model"], 0.0) + record.get("held", 0.0)
    for model, amount in held.items():
        if amount > 0:  # requests out when their process died: counted at their most
            usage.model(model).cost += amount
    return usage


def _parse(line: str) -> tuple[dict[str, Any] | None, str]:
    """(the line's record, "") or (None, what is wrong with it)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, "not a JSON line"
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        return None, "not a usage line (no model)"
    for name, value in record.items():
        problem = _field_problem(name, value)
        if problem:
            return None, problem
    return record, ""


def _field_problem(name: str, value: Any) -> str:
    if name in _NUMBERS and not _finite_number(value):
        return f"{name} should be a number, got {value!r}"
    if name == "unknown_price" and not isinstance(value, bool):
        return f"unknown_price should be true or false, got {value!r}"
    if name == "concurrency" and not (isinstance(value, int) and value >= 0):
        return f"concurrency should be a count, got {value!r}"
    if name == "path" and not isinstance(value, str):
        return f"path should be text, got {value!r}"
    return ""


_NUMBERS = frozenset((*ADDITIVE, "held"))


def _finite_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def starting_usage(path: Path | None, saved: Usage | None) -> Usage:
    """The job's usage before this run: its journal's, unless the saved trajectory
    counts more calls (an imported trajectory, a journal lost with a rebuilt store)."""
    journaled = read(path) if path is not None else None
    if journaled is None:
        return saved.copy() if saved is not None else Usage()
    if saved is not None and saved.calls > journaled.calls:
        return saved.copy()
    return journaled


def for_job(store_dir: Path | None, key: str, saved: Usage | None, live: Usage, *,
            restart: bool = False) -> SpendJournal:
    """The journal of trajectory `key` in the store at `store_dir` (in memory only
    without one), carrying on from the job's spend so far (`saved`: the stored
    trajectory's usage), or started afresh with the trajectory (`restart`)."""
    path = journal_path(store_dir, key) if store_dir is not None else None
    if restart and path is not None:
        path.unlink(missing_ok=True)
    return SpendJournal(path, starting_usage(path, None if restart else saved), live)


class SpendJournal:
    """The spend of one job, mirrored to its journal file as calls go out and back.

    `live` is the model layer's usage (LLM.usage, which a daemon job keeps for
    several runs); what it gains after this journal opens is the run's, on top
    of `start`. With no `path` (no trajectory store) nothing is written and the
    totals are kept in memory only. A journal that cannot be written (full disk)
    warns once and goes on in memory.
    """

    def __init__(self, path: Path | None, start: Usage, live: Usage) -> None:
        self.path = path
        self.total = start.copy()  # the job's usage: start + what this run wrote since
        self._live = live
        # `live` as of the last line written, per model (as vars(ModelUsage))
        self._written = {name: vars(u).copy() for name, u in live.per_model.items()}
        self._held: dict[str, float] = {}  # holds of requests out, per model
        self._held_written: dict[str, float] = {}
        self._fd: int | None = None
        if path is not None:
            self._open(path, start)

    def _open(self, path: Path, start: Usage) -> None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Rewritten whole: the earlier runs' lines folded into one per model.
            write_text(path, "".join(_line(name, asdict(u)) for name, u
                                     in sorted(start.per_model.items())), mode=0o600)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            self._lost(exc)

    def sent(self, model: str, amount: float) -> None:
        """A request to `model` went out (already counted in `live`); it may cost `amount`."""
        self._held[model] = self._held.get(model, 0.0) + amount
        self.sync(model)

    def release(self, model: str, amount: float) -> None:
        """Requests that came back (or failed): their holds end with the next line."""
        self._held[model] = self._held.get(model, 0.0) - amount

    def sync(self, model: str) -> None:
        """Write `model`'s change since its last line, if anything changed."""
        now = vars(self._live.model(model))
        before = self._written.get(model) or _NOTHING
        change = delta(now, before)
        held = self._held.get(model, 0.0) - self._held_written.get(model, 0.0)
        if not change and not held:
            return
        apply_delta(self.total.model(model), change)
        self._written[model] = now.copy()
        self._held_written[model] = self._held.get(model, 0.0)
        if held:
            change["held"] = held
        self._append(_line(model, change))

    def flush(self) -> None:
        """Write every model's pending change (cache hits are carried, not written each)."""
        for model in list(self._live.per_model):
            self.sync(model)

    def close(self) -> None:
        self.flush()
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _append(self, line: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, line.encode("utf-8"))
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        warnings.warn(f"spend journal {self.path} cannot be written ({exc}); spend is "
                      "counted in memory and saved with each step only", RuntimeWarning,
                      stacklevel=3)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None


_NOTHING = vars(ModelUsage())
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def _line(model: str, change: Mapping[str, Any]) -> str:
    return _ENCODE({"model": model, **change}) + "\n"
