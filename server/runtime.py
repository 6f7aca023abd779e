"""Where the daemon lives on disk, and how a client finds or starts it.

One daemon per user: a runtime directory of mode 0700 holds its Unix socket
(0600), a status file (pid, address, version, start time), a lock file the
running daemon holds for its whole life (the kernel drops the lock when the
process dies, even on SIGKILL), the token of the optional TCP mode, the list
of jobs to resume, and the daemon's log. Nothing here imports the model layer:
the language server uses this module through `gpo_server.client`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpo_engine.errors import GpoError

SOCKET_NAME = "daemon.sock"
STATUS_NAME = "daemon.json"
LOCK_NAME = "daemon.lock"
START_LOCK_NAME = "start.lock"
TOKEN_NAME = "token"
JOBS_NAME = "jobs.json"
ROOTS_NAME = "roots.json"
LOG_NAME = "daemon.log"
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), terminator included.
_MAX_SOCKET_PATH = 103


class RuntimeDirError(GpoError):
    """The runtime directory is unsafe or unusable (wrong owner, path too long...).

    A GpoError, so every command reports it in one line, never as a traceback."""


@dataclass(frozen=True)
class Status:
    """What the status file says about the running daemon."""

    pid: int
    address: str  # "unix:/path/to/daemon.sock" or "http://127.0.0.1:PORT"
    version: str
    started: float  # time.time() when it began serving

    @property
    def is_tcp(self) -> bool:
        return self.address.startswith("http://")


def default_runtime_dir() -> Path:
    """$GPO_RUNTIME_DIR, else $XDG_RUNTIME_DIR/gpo, else <tmp>/gpo-<uid>."""
    configured = os.environ.get("GPO_RUNTIME_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "gpo"
    return Path(tempfile.gettempdir()) / f"gpo-{os.getuid()}"


def ensure_runtime_dir(path: Path | None = None) -> Path:
    """Create the directory with mode 0700, or check an existing one is ours and private.

    A directory owned by another user is refused (someone could be waiting
    for our socket there); one of ours with looser permissions is tightened.
    """
    directory = (path or default_runtime_dir()).expanduser().absolute()
    try:
        directory.mkdir(mode=0o700, parents=True)
        created = True
    except FileExistsError:
        created = False
    info = directory.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"{directory} is not a directory")
    own = _own_folder_hint(directory)
    if info.st_uid != os.getuid():
        raise RuntimeDirError(f"{directory} belongs to another user (uid {info.st_uid}); "
                              f"{own}")
    mode = stat.S_IMODE(info.st_mode)
    shared = stat.S_IWGRP | stat.S_IWOTH | stat.S_ISVTX
    if not created and mode & shared:
        # A folder others may write in (/tmp, a shared drop box) is not one gpo made:
        # tightening it would break everyone else's use of it. Never chmod it.
        raise RuntimeDirError(f"{directory} is writable by other users (mode {mode:04o}), so "
                              f"gpo did not create it and will not change its permissions; "
                              f"{own}")
    if mode != 0o700:
        os.chmod(directory, 0o700)
    if len(str(directory / SOCKET_NAME)) > _MAX_SOCKET_PATH:
        raise RuntimeDirError(
            f"{directory} is too long a path for a Unix socket; set GPO_RUNTIME_DIR to a "
            "shorter one"
        )
    return directory


def _own_folder_hint(directory: Path) -> str:
    return (f"set GPO_RUNTIME_DIR to a folder of gpo's own (e.g. "
            f"{directory / f'gpo-{os.getuid()}'}, which gpo creates with mode 0700)")


def socket_path(directory: Path) -> Path:
    return directory / SOCKET_NAME


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically: a reader never sees half of it, and a full disk
    leaves the previous file byte-identical. Raises gpo_engine.atomic.WriteError,
    an OSError with the errno and a message naming the file."""
    # Imported here: runtime.py is on the language server's startup path.
    from gpo_engine.atomic import write_text

    write_text(path, text, mode=0o600)


def write_status(directory: Path, status: Status) -> None:
    write_private(directory / STATUS_NAME, json.dumps(asdict(status)))


def read_status(directory: Path) -> Status | None:
    """The status file's content, or None when absent or unreadable."""
    try:
        data: Any = json.loads((directory / STATUS_NAME).read_text(encoding="utf-8"))
        pid, address, version, started = (data["pid"], data["address"], data["version"],
                                          data["started"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    # Checked field by field: a hand-edited or foreign file is no status (a pid beyond
    # what the kernel hands out would make os.kill raise OverflowError).
    if (not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31
            or not isinstance(address, str) or not isinstance(version, str)
            or not isinstance(started, (int, float)) or isinstance(started, bool)
            or not math.isfinite(started)):
        return None
    return Status(pid, address, version, float(started))


def remove_status(directory: Path, pid: int | None = None) -> None:
    """Remove the status file (only if it still names `pid`, when given) and the socket."""
    status = read_status(directory)
    if pid is not None and status is not None and status.pid != pid:
        return  # another daemon has taken over since
    for name in (STATUS_NAME, SOCKET_NAME):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def pid_alive(pid: int) -> bool:
    """True if a process with this pid runs (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        # Field 3 of /proc/<pid>/stat is the state; "Z" is a zombie nobody reaped yet.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def live_status(directory: Path) -> Status | None:
    """The status of a daemon whose process is alive; a stale file (dead pid) is removed."""
    status = read_status(directory)
    if status is None:
        return None
    if pid_alive(status.pid):
        return status
    remove_status(directory, status.pid)
    return None


class AlreadyRunning(Exception):
    """Another daemon holds the lock of this runtime directory."""


@contextlib.contextmanager
def daemon_lock(directory: Path) -> Iterator[None]:
    """Held by the serving daemon for its whole life; a second daemon fails to take it."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(f"a gpo daemon already runs in {directory}") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def start_lock(directory: Path) -> Iterator[None]:
    """Serializes start-on-demand, so two clients starting at once spawn one daemon."""
    fd = os.open(directory / START_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def new_token(directory: Path) -> str:
    """A fresh secret for TCP mode, written to a 0600 file only this user can read."""
    token = secrets.token_urlsafe(32)
    write_private(directory / TOKEN_NAME, token + "\n")
    return token


def read_token(directory: Path) -> str | None:
    try:
        return (directory / TOKEN_NAME).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def can_connect(status: Status) -> bool:
    """Whether the daemon's address accepts a connection right now."""
    try:
        if status.is_tcp:
            host, _, port = status.address[len("http://"):].rpartition(":")
            with socket.create_connection((host, int(port)), timeout=1.0):
                return True
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(status.address[len("unix:"):])
            return True
    except (OSError, ValueError):
        return False


def daemon_command(directory: Path, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "gpo_server.cli", "daemon", "run",
            "--runtime-dir", str(directory), *extra]


def spawn_daemon(
    directory: Path, extra: Sequence[str] = (), env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `gpo daemon run` detached from this process's session, logging to daemon.log.

    A thread reaps it when it exits, so a long-lived parent (the language
    server) never keeps a zombie whose pid would look alive.
    """
    fd = os.open(directory / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.fdopen(fd, "ab")
    try:
        proc = subprocess.Popen(daemon_command(directory, extra), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True,
                                env=env, close_fds=True)
    finally:
        log.close()
    threading.Thread(target=proc.wait, name="gpo-daemon-reaper", daemon=True).start()
    return proc


def wait_until_serving(directory: Path, proc: subprocess.Popen[bytes] | None,
                       timeout: float = 30.0) -> Status:
    """Poll until a live daemon answers on the address in the status file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(directory)
        if status is not None and pid_alive(status.pid) and can_connect(status):
            return status
        if proc is not None and proc.poll() is not None and status is None:
            raise RuntimeDirError(
                f"the daemon exited with code {proc.returncode}; see {directory / LOG_NAME}")
        time.sleep(0.05)
    raise RuntimeDirError(f"the daemon did not start within {timeout:.0f} s; "
                          f"see {directory / LOG_NAME}")


def ensure_daemon(directory: Path | None = None, extra: Sequence[str] = (),
                  timeout: float = 30.0) -> Status:
    """The running daemon's status, starting one first when none is serving."""
    root = ensure_runtime_dir(directory)
    status = live_status(root)
    if status is not None and can_connect(status):
        return status
    with start_lock(root):
        status = live_status(root)  # someone else may have started it while we waited
        if status is not None and can_connect(status):
            return status
        proc = spawn_daemon(root, extra)
        return wait_until_serving(root, proc, timeout)


class DaemonError(Exception):
    """The daemon refused a request (or could not be reached: status 0).

    Defined here, not in gpo_server.client, so the language server can catch it
    without importing aiohttp before it has answered `initialize`.
    """

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status else message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}


def start_args(args: Any) -> list[str]:
    """The flags a spawned `gpo daemon run` gets from a command's options (argparse args).

    Here, not in the daemon command, so `gpo lsp` can use it without importing
    the CLI's daemon command (aiohttp, rich) before it answers `initialize`.
    """
    out: list[str] = []
    if getattr(args, "api_base", None):
        out += ["--api-base", str(args.api_base)]
    if getattr(args, "cache_dir", None):
        out += ["--cache-dir", str(Path(args.cache_dir).absolute())]
    if getattr(args, "idle_timeout", None) is not None:
        out += ["--idle-timeout", str(args.idle_timeout)]
    if getattr(args, "tcp", False):
        out.append("--tcp")
    return out
