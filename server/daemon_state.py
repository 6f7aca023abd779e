"""The daemon's configuration and its state while it serves.

`DaemonConfig` is what `gpo daemon run` is given (flags over environment);
`DaemonState` is what the handlers share: the job registry, the registered
workspace roots (kept in the runtime directory, so a restarted daemon still
serves the editors already open), the scores measured on request and what
measuring them spent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gpo_engine.errors import ConfigError
from gpo_engine.offer import Score
from gpo_engine.usage import Usage
from gpo_server import runtime
from gpo_server.elsewhere import LockReader
from gpo_server.jobs import JobRegistry, LLMOpener, RetryPolicy

log = logging.getLogger("gpo.daemon")

API = "/v1"
DEFAULT_IDLE_TIMEOUT = 1800.0  # seconds without requests or jobs before it exits
DEFAULT_MAX_BODY = 1 << 20  # bytes; a prompt text is small, an example set is read from disk
# Per-job settings a client may override; everything else comes from the file.
OVERRIDABLE = frozenset({
    "model", "optimizer", "metric", "steps", "candidates", "k", "retrieval", "embedding",
    "budget", "temperature", "max_tokens", "batch_size", "racing", "race_size", "max_cost",
    "concurrency", "timeout", "seed",
})



@dataclass(frozen=True)
class DaemonConfig:
    runtime_dir: Path
    api_base: str | None = None
    cache_dir: Path | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # 0 or less: never
    tcp: bool = False
    max_body: int = DEFAULT_MAX_BODY
    max_running: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_env(cls, runtime_dir: Path, **given: Any) -> DaemonConfig:
        """Flags win over GPO_API_BASE / GPO_CACHE_DIR / GPO_DAEMON_IDLE_TIMEOUT."""
        env = os.environ
        values = {k: v for k, v in given.items() if v is not None}
        values.setdefault("api_base", env.get("GPO_API_BASE") or None)
        if env.get("GPO_CACHE_DIR"):
            values.setdefault("cache_dir", Path(env["GPO_CACHE_DIR"]).expanduser())
        if env.get("GPO_DAEMON_IDLE_TIMEOUT"):
            try:
                values.setdefault("idle_timeout", float(env["GPO_DAEMON_IDLE_TIMEOUT"]))
            except ValueError:
                raise ConfigError("GPO_DAEMON_IDLE_TIMEOUT must be a number of seconds, got "
                                  f"{env['GPO_DAEMON_IDLE_TIMEOUT']!r}") from None
        return cls(runtime_dir=runtime_dir, **values)


@dataclass
class DaemonState:
    config: DaemonConfig
    registry: JobRegistry
    open_llm: LLMOpener  # the model layer for a task: the jobs' and the scoring routes'
    token: str | None = None
    address: str = ""
    started: float = field(default_factory=time.time)
    roots: set[Path] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    last_activity: float = field(default_factory=time.monotonic)
    busy: int = 0  # requests and event streams being served
    preload: Any = None  # the background import of the model layer
    # Scores measured by /evaluate and POST /v1/prompts (measure), by (scoring_scope, text,
    # split): shown in the prompt state, and never measured twice by a `measure`.
    evaluations: dict[tuple[str, str, str], Score] = field(default_factory=dict)
    # What measuring spent per prompt file (resolved path): part of the file's usage.
    scoring_usage: dict[str, Usage] = field(default_factory=dict)
    locks: LockReader | None = None  # who holds the shared run locks; opened on first use

    def lock_reader(self) -> LockReader:
        if self.locks is None:
            self.locks = LockReader.from_env()
        return self.locks

    def count_scoring(self, path: str, usage: Usage) -> None:
        self.scoring_usage[path] = self.scoring_usage.get(path, Usage()).plus(usage)

    def idle_for(self) -> float:
        if self.busy or self.registry.running_count():
            return 0.0
        return time.monotonic() - self.last_activity


STATE: web.AppKey[DaemonState] = web.AppKey("gpo_state", DaemonState)


def save_roots(state: DaemonState) -> None:
    """Kept next to the jobs, so a restarted daemon still serves the editors already open."""
    data = json.dumps({"roots": sorted(str(r) for r in state.roots)})
    try:
        runtime.write_private(state.config.runtime_dir / runtime.ROOTS_NAME, data)
    except OSError as exc:
        log.warning("could not save the workspace roots: %s", exc)


def load_roots(state: DaemonState) -> None:
    file = state.config.runtime_dir / runtime.ROOTS_NAME
    try:
        data = json.loads(file.read_text("utf-8"))
        listed = data["roots"]
        if not isinstance(listed, list):
            raise TypeError("'roots' should be a list")
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        log.warning("ignoring unreadable %s: %s", file, exc)
        return
    for root in listed:
        # Each one checked: a bad entry is skipped with a warning, the others kept.
        try:
            if not isinstance(root, str) or not Path(root).is_absolute():
                raise ValueError("not an absolute path")
            folder = Path(root).resolve()
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("skipping workspace root %r of %s: %s", root, file, exc)
            continue
        if folder.is_dir():
            state.roots.add(folder)
