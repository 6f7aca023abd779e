"""The private, self-healing diskcache under the response cache and the trajectory store:
each way a read, a write or a rebuild can fail, and what the store does then."""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import diskcache
import pytest

from gpo_engine import diskstore
from gpo_engine.diskstore import DiskStore

MALFORMED = "database disk image is malformed"


def _store(folder: Path, **items: Any) -> DiskStore:
    store = DiskStore(folder, label="test store", lost="nothing else")
    for key, value in items.items():
        assert store.set(key, value)
    return store


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database is locked"),
                                   diskcache.Timeout(), sqlite3.InterfaceError("closed")])
def test_a_read_the_database_refuses_is_a_miss_that_keeps_the_entry(
        tmp_path: Path, error: Exception) -> None:
    store = _store(tmp_path / "s", k="v")
    real = store.cache.get  # type: ignore[union-attr]

    def refuse(*args: object, **kwargs: object) -> None:
        raise error

    store.cache.get = refuse  # type: ignore[union-attr,method-assign]
    with pytest.warns(RuntimeWarning, match="could not read an entry"):
        assert store.get("k") is None
    store.cache.get = real  # type: ignore[union-attr,method-assign]
    assert store.get("k") == "v"  # not dropped
    assert list(tmp_path.glob("s.corrupt-*")) == []
    store.close()


def test_a_store_still_corrupt_after_its_rebuild_is_a_miss_not_a_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path / "s", k="v")

    def malformed(*args: object, **kwargs: object) -> None:
        raise sqlite3.DatabaseError(MALFORMED)

    monkeypatch.setattr(diskcache.Cache, "get", malformed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.get("k") is None
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "is corrupt" in messages[0]
    assert "could not read an entry" in messages[1]
    assert len(list(tmp_path.glob("s.corrupt-*"))) == 1  # one rebuild, not one per try
    monkeypatch.undo()
    assert store.get("k") == "v"  # the rebuild kept it
    store.close()


def test_a_write_into_a_damaged_database_rebuilds_it_and_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path / "s", old="kept")
    real = diskcache.Cache.set
    failures = [sqlite3.DatabaseError(MALFORMED)]

    def once_malformed(self: diskcache.Cache, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(diskcache.Cache, "set", once_malformed)
    with pytest.warns(RuntimeWarning, match="with the 1 entries that could still be read"):
        assert store.set("new", "written")
    assert store.get("old") == "kept" and store.get("new") == "written"
    assert len(list(tmp_path.glob("s.corrupt-*"))) == 1
    store.close()


def test_a_write_still_failing_after_the_rebuild_stops_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path / "s")

    def malformed(*args: object, **kwargs: object) -> None:
        raise sqlite3.DatabaseError(MALFORMED)

    monkeypatch.setattr(diskcache.Cache, "set", malformed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.set("k", "v") is False
        assert store.set("k2", "v") is False  # no second rebuild, no second warning
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "is corrupt" in messages[0]
    assert "cannot be written" in messages[1]
    store.close()


def test_a_database_locked_for_good_stops_writing_but_is_still_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path / "s", k="v")

    def locked(*args: object, **kwargs: object) -> None:
        raise diskcache.Timeout()

    monkeypatch.setattr(diskcache.Cache, "set", locked)
    with pytest.warns(RuntimeWarning, match="cannot be written .*Timeout"):
        assert store.set("k2", "v2") is False
    assert store.get("k") == "v"
    store.close()


def test_a_fresh_store_another_process_made_meanwhile_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "s"
    _store(folder, k="mine").close()
    with open(folder / diskstore.DB_NAME, "r+b") as f:
        f.write(b"garbage" * 10)
    real_rename = os.rename

    def racing(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(".s.healing-"):
            # Between our two renames, another process opened the store and got a fresh one.
            _store(folder, k="theirs").close()
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", racing)
    with pytest.warns(RuntimeWarning, match="is corrupt"):
        store = DiskStore(folder, label="test store", lost="")
    assert store.get("k") == "theirs"
    assert not list(tmp_path.glob(".s.healing-*"))
    store.close()


def test_rows_are_found_through_the_largest_rowid_when_a_scan_fails() -> None:
    class Scan:
        def __init__(self, fail_scan: bool, top: int | None) -> None:
            self.fail_scan, self.top = fail_scan, top

        def execute(self, sql: str) -> Any:
            if sql.startswith("SELECT rowid"):
                if self.fail_scan:
                    raise sqlite3.DatabaseError(MALFORMED)
                return iter([(1,), (5,)])
            if self.top is None:
                raise sqlite3.DatabaseError(MALFORMED)
            return type("Row", (), {"fetchone": lambda _: (self.top,)})()

    assert list(diskstore._rowids(Scan(False, None))) == [1, 5]  # type: ignore[arg-type]
    assert list(diskstore._rowids(Scan(True, 3))) == [1, 2, 3]  # type: ignore[arg-type]
    assert list(diskstore._rowids(Scan(True, None))) == []  # type: ignore[arg-type]


def test_nothing_is_read_from_a_database_sqlite_cannot_open(tmp_path: Path) -> None:
    (tmp_path / diskstore.DB_NAME).mkdir()  # a folder where the file should be
    assert list(diskstore._readable_rows(tmp_path)) == []
    assert list(diskstore._readable_rows(tmp_path / "absent")) == []


def test_corruption_is_told_from_other_database_errors() -> None:
    assert diskstore.is_corruption(sqlite3.DatabaseError(MALFORMED))
    assert diskstore.is_corruption(sqlite3.DatabaseError("file is not a database"))
    assert not diskstore.is_corruption(sqlite3.OperationalError("database is locked"))
    assert not diskstore.is_corruption(OSError(28, "No space left on device"))


def test_keys_lists_every_entry_and_nothing_when_the_database_cannot_be_read(
        tmp_path: Path) -> None:
    store = _store(tmp_path / "s", a=1, b={"x": 2})
    assert sorted(store.keys()) == ["a", "b"]
    store.delete("a")
    assert store.keys() == ["b"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    store.cache.iterkeys = refuse  # type: ignore[union-attr,method-assign]
    with pytest.warns(RuntimeWarning, match="could not read an entry"):
        assert store.keys() == []
    store.close()
    assert store.keys() == []
