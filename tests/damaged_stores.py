"""Damaging a diskcache store's SQLite file (4 KB pages) the way a crash or a bad disk does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

PAGE = 4096


def key_index_page(db: Path) -> int:
    """The number, from 0, of the page holding the root of diskcache's key index."""
    con = sqlite3.connect(db)
    try:
        root: int = con.execute("SELECT rootpage FROM sqlite_master "
                                "WHERE name = 'Cache_key_raw'").fetchone()[0]
    finally:
        con.close()
    return root - 1  # rootpage counts from 1


def ruin_key_index(db: Path) -> None:
    """Overwrite the page of diskcache's key index with garbage: every lookup fails,
    every row is intact."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA page_size").fetchone()[0] == PAGE
    finally:
        con.close()
    with open(db, "r+b") as f:
        f.seek(key_index_page(db) * PAGE)
        f.write(b"\xff" * PAGE)
