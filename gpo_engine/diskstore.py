"""A diskcache folder that is private and heals itself.

The response cache (response_cache.ResponseCache) and the trajectory store
(trajectory.TrajectoryStore) keep their entries in diskcache (SQLite
underneath). With a Redis URL set, gpo_engine.shared_store puts Redis behind
them and keeps what Redis missed in an outbox that is a DiskStore too. Two
things are done here once for all of them:

Private. diskcache unpickles what it reads, so whoever can write the folder
can run code in gpo. The folder is made 0700 (tightened if looser) and its
database 0600 (created so before SQLite opens it; SQLite gives its -wal and
-shm files the database's mode). A folder owned by another user is refused.

Healing. Disks and editors corrupt files. Measured on a 74-entry cache
(17 pages): overwriting 600 bytes of one page broke 1 to 21 keys (their reads
raise `database disk image is malformed` or UnicodeDecodeError) while a scan
by rowid still read 72 to 74 rows; a truncated file or a damaged header cannot
be opened at all. So:
- a bad entry (garbage pickle, wrong shape, a damaged value) is a miss: it is
  dropped and the caller fetches it again; the store stays on;
- a database SQLite calls corrupt (at open, or under any key) is rebuilt: every
  row that can still be read is copied into a fresh database, the damaged
  folder is moved aside as `<name>.corrupt-<time>` (`gpo cache clear` deletes
  it) and the fresh one takes its place, with one warning saying what was kept;
- a store that cannot be written (full or read-only disk) keeps answering
  reads and stops saving, with one warning.
Only errors that say nothing about the data (a folder we may not open, a file
where the folder should be) make the store unusable; the caller then runs
without it, as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import stat
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import diskcache

DB_NAME = "cache.db"  # diskcache's database file in its folder
CORRUPT_MARK = ".corrupt-"  # a damaged store moved aside: `<name>.corrupt-<time>`
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_COPY_BATCH = 500  # rows per transaction when rebuilding (one transaction per row is ~50x slower)

Validator = Callable[[str, Any], bool]


def is_corruption(error: BaseException) -> bool:
    """Whether SQLite says the database file itself is damaged (not locked, full or missing)."""
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(error)
    return "malformed" in text or "not a database" in text


def make_private_dir(directory: Path) -> None:
    """Create `directory` 0700, or check an existing one is ours and make it 0700."""
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise PermissionError(errno.EPERM, f"owned by another user (uid {info.st_uid}), and "
                              "diskcache unpickles what it reads", str(directory))
    if stat.S_IMODE(info.st_mode) != 0o700:
        with contextlib.suppress(OSError):  # a file system without modes (vfat): as it is
            os.chmod(directory, 0o700)


def _make_private_db(directory: Path) -> None:
    """The database file 0600 before SQLite opens it (an empty file is a valid new database)."""
    db = directory / DB_NAME
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        with contextlib.suppress(OSError):  # absent, or a file system without modes
            path = directory / name
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                os.chmod(path, 0o600)


def _identity(directory: Path) -> tuple[int, int] | None:
    try:
        info = (directory / DB_NAME).stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def set_aside(directory: Path) -> list[Path]:
    """Damaged stores moved aside from `directory`, oldest first."""
    if not directory.parent.is_dir():
        return []
    return sorted(directory.parent.glob(directory.name + CORRUPT_MARK + "*"))


class DiskStore:
    """One private, self-healing diskcache folder.

    `label` names it in warnings ("response cache"); `valid(key, value)` says
    whether an entry is usable (bad ones are dropped); `lost` says what a
    rebuild cannot keep, for its warning. Raises OSError or sqlite3.Error when
    the folder cannot be used at all (the caller then runs without a store).
    """

    def __init__(self, directory: Path, *, label: str, lost: str,
                 valid: Validator | None = None) -> None:
        self.directory = directory
        self.label = label
        self.lost = lost
        self.valid = valid
        self.writable = True
        self._dropped = False  # whether the one "dropped an entry" warning was given
        self._identity: tuple[int, int] | None = None
        self.cache: diskcache.Cache | None = None
        try:
            self.cache = self._open(directory)
        except sqlite3.DatabaseError as error:
            if not is_corruption(error):
                raise
            self._heal(error)

    # -- entries ---------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The entry, or None: absent, unreadable (dropped), or failing `valid` (dropped)."""
        try:
            return self._get(key)
        except (sqlite3.Error, diskcache.Timeout) as error:
            if not is_corruption(error):  # locked too long, an I/O error: a miss, kept
                self._warn_once(key, error, drop=False)
                return None
            self._try_heal(error)
        # Once more in the rebuilt store (the entry may have been copied); a second
        # failure is a miss, never a second rebuild.
        try:
            return self._get(key)
        except (sqlite3.Error, diskcache.Timeout) as error:
            self._warn_once(key, error, drop=False)
            return None

    def _get(self, key: str) -> Any:
        if self.cache is None:
            return None
        try:
            value = self.cache.get(key)
        except (sqlite3.Error, diskcache.Timeout):
            raise  # the database's trouble, not this entry's: get() decides
        except Exception as error:  # an entry that does not unpickle or decode
            self._warn_once(key, error, drop=True)
            return None
        if value is not None and self.valid is not None and not self.valid(key, value):
            shape = ValueError(f"an entry of the wrong shape ({type(value).__name__})")
            self._warn_once(key, shape, drop=True)
            return None
        return value

    def set_many(self, items: Mapping[str, Any]) -> bool:
        """Store every item in one transaction; False when nothing could be stored."""
        def write(cache: diskcache.Cache) -> None:
            with cache.transact():
                for key, value in items.items():
                    cache.set(key, value)

        return self._write(write)

    def set(self, key: str, value: Any) -> bool:
        """Store one item. Not through set_many: diskcache's set is atomic by itself, and
        an explicit transaction around it costs 750 instead of 490 us per answer (measured,
        2000 answers), spent on the event loop."""
        return self._write(lambda cache: cache.set(key, value))

    def _write(self, write: Callable[[diskcache.Cache], object]) -> bool:
        """Run `write`; rebuild a corrupt store and try once more; stop writing on a full disk."""
        if self.cache is None or not self.writable:
            return False
        for attempt in (1, 2):
            try:
                write(self.cache)
                return True
            except sqlite3.DatabaseError as error:
                if attempt == 1 and is_corruption(error):
                    self._try_heal(error)
                    if self.cache is None:
                        return False
                    continue
                self._stop_writing(error)
            except (OSError, diskcache.Timeout) as error:
                # A value file on a full disk; a database locked for diskcache's 60 s:
                # stop writing rather than stall every later answer as long.
                self._stop_writing(error)
            return False
        return False

    def keys(self) -> list[str]:
        """Every key, by a scan of the whole store: for small stores (an outbox of
        entries waiting for the shared cache). [] when the database cannot be read."""
        if self.cache is None:
            return []
        try:
            return [key for key in self.cache.iterkeys() if isinstance(key, str)]
        except (sqlite3.Error, diskcache.Timeout) as error:
            self._warn_once("", error, drop=False)
            return []

    def delete(self, key: str) -> None:
        if self.cache is not None:
            with contextlib.suppress(Exception):  # already failing; the entry is skipped anyway
                self.cache.delete(key)

    def close(self) -> None:
        if self.cache is not None:
            try:
                self.cache.close()
            finally:
                self.cache = None

    # -- internals -------------------------------------------------------------

    def _open(self, directory: Path) -> diskcache.Cache:
        make_private_dir(directory)
        _make_private_db(directory)
        cache = diskcache.Cache(str(directory))
        if directory == self.directory:
            self._identity = _identity(directory)
        return cache

    def _warn_once(self, key: str, error: BaseException, *, drop: bool) -> None:
        """A bad entry is a miss (dropped when `drop`), with one warning per store."""
        if drop:
            self.delete(key)
        if not self._dropped:
            self._dropped = True
            what = "dropped an unreadable entry" if drop else "could not read an entry"
            _warn(f"{self.label}: {what} ({type(error).__name__}: {_short(error)}); it counts "
                  "as missing (later ones are handled the same way, quietly)")

    def _stop_writing(self, error: BaseException) -> None:
        if self.writable:
            self.writable = False
            _warn(f"{self.label} at {self.directory} cannot be written "
                  f"({type(error).__name__}: {_short(error)}); it is still read, "
                  "but nothing new is saved in this run")

    def _try_heal(self, error: BaseException) -> None:
        """_heal, or (when even that fails: a read-only folder) run without the store."""
        try:
            self._heal(error)
        except (OSError, sqlite3.Error) as failure:
            self.close()
            _warn(f"{self.label} at {self.directory} is corrupt ({_short(error)}) and could "
                  f"not be replaced ({_short(failure)}); running without it")

    def _heal(self, error: BaseException) -> None:
        """Rebuild a corrupt store from its readable rows; the damaged folder is moved aside."""
        seen = self._identity
        if self.cache is not None:
            with contextlib.suppress(Exception):
                self.cache.close()
            self.cache = None
        if seen is not None and _identity(self.directory) != seen:
            # Another process rebuilt it since we opened it: use theirs.
            self.cache = self._open(self.directory)
            return
        fresh = self.directory.with_name(f".{self.directory.name}.healing-{os.getpid()}")
        shutil.rmtree(fresh, ignore_errors=True)
        try:
            kept = self._rebuild_into(fresh)
            aside = _aside_name(self.directory)
            os.rename(self.directory, aside)
        except (OSError, sqlite3.Error):
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        try:
            os.rename(fresh, self.directory)
        except OSError:  # another process started a fresh store in the meantime: use it
            shutil.rmtree(fresh, ignore_errors=True)
        self.cache = self._open(self.directory)
        _warn(f"{self.label} at {self.directory} is corrupt ({_short(error)}): moved it to "
              f"{aside.name} and started a fresh one with the {kept} entries that could "
              f"still be read; {self.lost}")

    def _rebuild_into(self, fresh: Path) -> int:
        """Copy every readable, valid row of the damaged store into a new one at `fresh`."""
        target = self._open(fresh)
        kept = 0
        try:
            batch: list[tuple[str, Any]] = []
            for item in _readable_rows(self.directory):
                if self.valid is None or self.valid(*item):
                    batch.append(item)
                if len(batch) >= _COPY_BATCH:
                    kept += _copy(target, batch)
                    batch = []
            kept += _copy(target, batch)
        finally:
            target.close()
        return kept


def _copy(target: diskcache.Cache, rows: list[tuple[str, Any]]) -> int:
    with target.transact():
        for key, value in rows:
            target.set(key, value)
    return len(rows)


def _readable_rows(directory: Path) -> Iterable[tuple[str, Any]]:
    """(key, value) of every row of a damaged diskcache that SQLite and pickle can still read."""
    uri = f"file:{urllib.parse.quote(str(directory / DB_NAME))}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error:
        return
    disk = diskcache.Disk(str(directory))
    try:
        for rowid in _rowids(con):
            try:
                row = con.execute("SELECT key, raw, mode, filename, value FROM Cache "
                                  "WHERE rowid = ?", (rowid,)).fetchone()
                if row is None:
                    continue
                key = disk.get(row[0], bool(row[1]))
                value = disk.fetch(row[2], row[3], row[4], False)
            except Exception:  # a damaged row: the reason it is not kept
                continue
            if isinstance(key, str):
                yield key, value
    finally:
        con.close()


def _rowids(con: sqlite3.Connection) -> Iterable[int]:
    """Every rowid of the Cache table; through the table's largest rowid when a scan fails."""
    found: list[int] = []
    try:
        for (rowid,) in con.execute("SELECT rowid FROM Cache"):
            found.append(rowid)
        return found
    except sqlite3.DatabaseError:
        pass
    try:
        top = con.execute("SELECT max(rowid) FROM Cache").fetchone()[0]
    except sqlite3.DatabaseError:
        return found
    return range(1, int(top) + 1) if top else found


def _aside_name(directory: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = directory.with_name(f"{directory.name}{CORRUPT_MARK}{stamp}")
    number = 1
    while candidate.exists():
        number += 1
        candidate = directory.with_name(f"{directory.name}{CORRUPT_MARK}{stamp}-{number}")
    return candidate


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)
