"""One run per prompt: a cross-process lock per trajectory key.

`gpo optimize` in two terminals, or the daemon and a terminal, would each pay
for every step of the same optimization, and the last writer would win in the
trajectory store. Every run takes this lock first: an `fcntl.flock` on
`<cache dir>/locks/<trajectory key>.lock`, so a process that dies (even
SIGKILL) frees it, with no stale lock file to clear by hand.

The lock file itself is never written (an atomic write replaces the file, and
a lock lives on the inode); who holds it is told by a sibling `.owner` file
(pid and start time) written after the lock is taken, for the busy message.

Across machines: when `GPO_CACHE_URL` names a Redis, the run also takes the
prompt's lock there (gpo_engine.redis_lock: expiry, renewal, loss), after the
local one. A second machine then gets PromptBusy naming the host and pid that
hold it, or with `wait` waits and resumes from the shared trajectory. Redis
down at start: the local lock only, with the shared cache's one warning.
`acquire` returns a RunLock whose `link(cancel)` stops the run at its next
step boundary if the shared lock is lost mid-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpo_engine.atomic import write_text
from gpo_engine.errors import GpoError

if TYPE_CHECKING:
    from gpo_engine.redis_lock import SharedLock

_HINT = "run with --wait to wait for it, or --daemon to follow the daemon's job"
# A holder on another machine: this machine's daemon has no job of it to follow.
_HINT_ELSEWHERE = "run with --wait to wait for it and resume from the steps it saves"


@dataclass(frozen=True)
class Holder:
    """Who holds a prompt's run lock, as far as it told."""

    pid: int | None = None
    started: float | None = None
    host: str | None = None  # named by the shared (Redis) lock; None for a local holder

    def __str__(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "another process"
        if self.host is not None:
            who += f" on {self.host}"
        if self.started is not None:
            who += f" (started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))})"
        return who


class PromptBusy(GpoError):
    """Another process holds the prompt's run lock."""

    def __init__(self, path: str, pid: int | None, started: float | None,
                 hint: str = _HINT, *, host: str | None = None) -> None:
        super().__init__(f"{path} is being optimized by {Holder(pid, started, host)}; {hint}")
        self.pid = pid
        self.started = started
        self.host = host


def lock_dir(cache_dir: Path) -> Path:
    return cache_dir / "locks"


def holder(cache_dir: Path, key: str) -> tuple[int | None, float | None]:
    """(pid, start time) the holder wrote; (None, None) when unknown."""
    try:
        data = json.loads((lock_dir(cache_dir) / f"{key}.owner").read_text(encoding="utf-8"))
        pid, started = data.get("pid"), data.get("started")
    except (OSError, ValueError, AttributeError):
        return None, None
    return (pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            float(started) if isinstance(started, (int, float))
            and not isinstance(started, bool) else None)


def _open(cache_dir: Path, key: str) -> int:
    folder = lock_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)


def try_lock(cache_dir: Path, key: str) -> int | None:
    """The locked descriptor, or None when another process holds the lock."""
    fd = _open(cache_dir, key)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _claim(cache_dir: Path, key: str) -> None:
    # Best effort: the owner file only words the busy message.
    with contextlib.suppress(OSError):
        write_text(lock_dir(cache_dir) / f"{key}.owner",
                   json.dumps({"pid": os.getpid(), "started": time.time()}), mode=0o600)


def release(fd: int) -> None:
    os.close(fd)  # closing the descriptor drops the flock


class RunLock:
    """A prompt's run lock held by this process: the local flock (None when the cache dir
    cannot hold one) and the shared lock on Redis (None without one)."""

    def __init__(self, fd: int | None, shared: SharedLock | None = None) -> None:
        self.fd = fd
        self.shared = shared
        self._lost = ""  # why the shared lock was lost, kept once it is released

    @property
    def lost(self) -> str:
        """"" while held; why the shared lock was lost mid-run otherwise (after the
        release too, for the run's final message)."""
        return self.shared.lost if self.shared is not None else self._lost

    def link(self, cancel: asyncio.Event) -> None:
        """Set `cancel` when the shared lock is lost (the optimizer then ends at its next
        step boundary). Call it inside the event loop that runs the optimizer."""
        if self.shared is not None:
            self.shared.link(cancel)

    def release(self) -> None:
        try:
            if self.shared is not None:
                self.shared.release()
                self._lost = self.shared.lost
        finally:
            if self.fd is not None:
                release(self.fd)
            self.fd, self.shared = None, None


def _take_local(cache_dir: Path, key: str, path: str, wait: bool, hint: str,
                on_wait: Callable[[Holder], None] | None) -> int | None:
    """The locked descriptor; None (warned) when the cache dir cannot hold a lock."""
    try:
        fd = try_lock(cache_dir, key)
    except OSError as exc:
        warnings.warn(f"run lock unavailable in {lock_dir(cache_dir)}: {exc}; another run "
                      "of this prompt is not kept out", stacklevel=4)
        return None
    if fd is None:
        if not wait:
            raise PromptBusy(path, *holder(cache_dir, key), hint)
        if on_wait is not None:
            on_wait(Holder(*holder(cache_dir, key)))
        fd = _open(cache_dir, key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
    _claim(cache_dir, key)
    return fd


def _take_shared(key: str, path: str, wait: bool, hint: str,
                 on_wait: Callable[[Holder], None] | None,
                 expiry: float | None) -> SharedLock | None:
    """The lock on the Redis of $GPO_CACHE_URL; None without one, or when it is down (the
    shared cache's one warning)."""
    from gpo_engine.shared_store import configured_url

    url = configured_url()
    if url is None:
        return None
    from gpo_engine.redis_lock import SharedLock
    from gpo_engine.redis_store import RedisUnavailable
    from gpo_engine.shared_store import warn_down

    shared = SharedLock(url, key, path, expiry=expiry)
    try:
        busy = shared.take(wait=wait, on_wait=on_wait)
    except RedisUnavailable:
        warn_down(shared.remote, starting=True, stacklevel=5)
        shared.release()
        return None
    except BaseException:
        shared.release()
        raise
    if busy is not None:
        shared.release()
        if hint == _HINT and busy.host != socket.gethostname():
            hint = _HINT_ELSEWHERE
        raise PromptBusy(path, busy.pid, busy.started, hint, host=busy.host)
    return shared


def acquire(cache_dir: Path, key: str, path: str, *, wait: bool = False, hint: str = _HINT,
            on_wait: Callable[[Holder], None] | None = None,
            expiry: float | None = None) -> RunLock:
    """Take the run lock of `key`: on this machine, then on the shared Redis when one is
    set. PromptBusy at once when another run holds either, or with `wait`, block until both
    are free (`on_wait` is told who is waited for, once per lock). `expiry` (seconds)
    overrides $GPO_LOCK_TTL for the shared lock. A cache dir that cannot hold the lock
    (read-only, a file in its place) warns and runs without the local lock, like the
    stores."""
    fd = _take_local(cache_dir, key, path, wait, hint, on_wait)
    try:
        shared = _take_shared(key, path, wait, hint, on_wait, expiry)
    except BaseException:
        if fd is not None:
            release(fd)
        raise
    return RunLock(fd, shared)


@contextlib.contextmanager
def prompt_lock(cache_dir: Path, key: str, path: str, *, wait: bool = False,
                on_wait: Callable[[Holder], None] | None = None) -> Iterator[RunLock]:
    """`acquire` for the block; the RunLock it yields links the run's cancel event."""
    held = acquire(cache_dir, key, path, wait=wait, on_wait=on_wait)
    try:
        yield held
    finally:
        held.release()
