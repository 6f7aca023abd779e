"""Writing a file a user owns or reads back: all of it, or none of it.

`write_text` / `write_bytes` write a temporary file in the target's folder,
fsync it, and rename it over the target. A full disk, a quota, a read-only
folder or a kill at any moment leaves the target byte-identical (the rename is
the only step that touches it, and it is atomic on POSIX). Writing in place
is what this replaces: on a full tmpfs, `Path.write_text` truncated a 4102-byte
prompt to 4096 bytes before it raised.

The new file keeps the old one's permission bits (and owner, when we may set
it), so a `chmod 600` prompt stays private; `mode` forces the bits instead
(the daemon's 0600 status and token files). A symlink is followed: its target
is replaced and the link stays a link.

Every failure is a `WriteError`: a `GpoError`, so the CLI prints one clean
line and exits 1, and an `OSError` with the original errno, so callers that
already handle OSError (the daemon's state files) keep doing so.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import stat
import time
from pathlib import Path

from gpo_engine.errors import GpoError

TMP_SUFFIX = ".gpo-tmp"  # temporary files end so (hidden, and never a *.prompt)
# A temporary file this old is a leftover of a write that was killed (a write
# takes milliseconds), not one under way in another process: it is removed.
STALE_TMP_SECONDS = 3600.0


class WriteError(GpoError, OSError):
    """A file could not be written; the original (if any) is unchanged."""

    def __init__(self, path: Path, error: OSError, *, existed: bool) -> None:
        self.path = path
        self.existed = existed
        self.reason = os_error_reason(error)
        outcome = "the file is unchanged" if existed else "it was not created"
        self.message = f"{self.reason} writing {path}; {outcome}"
        OSError.__init__(self, error.errno, self.message)

    def __str__(self) -> str:
        return self.message


def os_error_reason(error: OSError) -> str:
    """'no space left on device': the errno's text, without the '[Errno 28]' noise."""
    if error.errno and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error) or type(error).__name__


def write_text(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace `path` with `text` as UTF-8, byte for byte (no newline translation)."""
    write_bytes(path, text.encode("utf-8"), mode=mode)


def write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically; WriteError (target untouched) on failure."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        before: os.stat_result | None = target.stat()
    except FileNotFoundError:
        before = None
    except OSError as error:
        raise WriteError(path, error, existed=True) from error
    if before is not None and not os.access(target, os.W_OK):
        # A rename would replace a file we may not write (chmod 444, another user's):
        # refuse, as writing it in place would have.
        denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        raise WriteError(path, denied, existed=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        # A new file without a given mode gets 0666 minus the umask, as open() would give.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o666 if before is None and mode is None else 0o600)
        try:
            _take_over(fd, before, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise WriteError(path, error, existed=before is not None) from error
        raise
    _sync_folder(target.parent)
    _remove_leftovers(target)


def _remove_leftovers(target: Path) -> None:
    """Remove the temporary files that killed writes of `target` left behind."""
    cutoff = time.time() - STALE_TMP_SECONDS
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            if leftover.lstat().st_mtime < cutoff:
                leftover.unlink()


def _take_over(fd: int, before: os.stat_result | None, mode: int | None) -> None:
    """Give the temporary file the mode (and owner) the target should end with."""
    if mode is not None:
        os.fchmod(fd, mode)
        return
    if before is None:
        return
    os.fchmod(fd, stat.S_IMODE(before.st_mode))
    if (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
        # Root editing a user's prompt must not leave a root-owned file behind;
        # an ordinary user cannot give a file away, and then keeps it.
        with contextlib.suppress(PermissionError):
            os.fchown(fd, before.st_uid, before.st_gid)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; some filesystems refuse a folder fsync (harmless)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
