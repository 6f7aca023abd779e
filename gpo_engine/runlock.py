"""One run per prompt: a cross-process lock per trajectory key.

`gpo optimize` in two terminals, or the daemon and a terminal, would each pay
for every step of the same optimization, and the last writer would win in the
trajectory store. Every run takes this lock first: an `fcntl.flock` on
`<cache dir>/locks/<trajectory key>.lock`, so a process that dies (even
SIGKILL) frees it, with no stale lock file to clear by hand.

The lock file itself is never written (an atomic write replaces the file, and
a lock lives on the inode); who holds it is told by a sibling `.owner` file
(pid and start time) written after the lock is taken, for the busy message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from gpo_engine.atomic import write_text
from gpo_engine.errors import GpoError


class PromptBusy(GpoError):
    """Another process holds the prompt's run lock."""

    def __init__(self, path: str, pid: int | None, started: float | None,
                 hint: str = "run with --wait to wait for it, or --daemon to follow the "
                 "daemon's job") -> None:
        who = f"pid {pid}" if pid is not None else "another process"
        when = (f" (started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))})"
                if started is not None else "")
        super().__init__(f"{path} is being optimized by {who}{when}; {hint}")
        self.pid = pid
        self.started = started


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


@contextlib.contextmanager
def prompt_lock(cache_dir: Path, key: str, path: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the run lock of `key` for the block. PromptBusy at once when another process
    holds it, or with `wait`, block until it is free. A cache dir that cannot hold the
    lock (read-only, a file in its place) warns and runs unlocked, like the stores."""
    try:
        fd = try_lock(cache_dir, key)
    except OSError as exc:
        warnings.warn(f"run lock unavailable in {lock_dir(cache_dir)}: {exc}; another run "
                      "of this prompt is not kept out", stacklevel=3)
        yield
        return
    if fd is None:
        if not wait:
            raise PromptBusy(path, *holder(cache_dir, key))
        fd = _open(cache_dir, key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
    try:
        _claim(cache_dir, key)
        yield
    finally:
        release(fd)
