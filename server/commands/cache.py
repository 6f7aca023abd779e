"""`gpo cache info | clear`: where the response cache lives, how big it is, emptying it.

The cache directory ($GPO_CACHE_DIR, else $XDG_CACHE_HOME/gpo, else
~/.cache/gpo) holds the response cache (`responses/`), the saved
trajectories that let a run resume (`trajectories/`) and the embedded model's
weights (`models/`). `clear` empties the response cache, and the trajectories
only when asked (`--trajectories`); it never deletes model weights. Entries
are removed through diskcache, so a daemon using the cache at the same time
keeps working.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from gpo_server.commands.common import EXIT_FAIL, EXIT_OK

TRAJECTORIES_DIR = "trajectories"  # as gpo_engine.task.open_store names it


@dataclass(frozen=True)
class Part:
    name: str
    path: str
    exists: bool
    entries: int
    bytes: int


def register(sub: Any) -> None:
    cache = sub.add_parser("cache", help="show or clear the response cache")
    verbs = cache.add_subparsers(required=True, metavar="ACTION")
    info = verbs.add_parser("info", help="location, entries and size of the cache")
    info.add_argument("--cache-dir", type=Path, help="default: $GPO_CACHE_DIR or ~/.cache/gpo")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=run_info)
    clear = verbs.add_parser("clear", help="delete the cached model answers")
    clear.add_argument("--cache-dir", type=Path, help="default: $GPO_CACHE_DIR or ~/.cache/gpo")
    clear.add_argument("--trajectories", action="store_true",
                       help="also delete saved trajectories (runs then start over)")
    clear.add_argument("--yes", "-y", action="store_true", help="do not ask")
    clear.set_defaults(run=run_clear)


def cache_root(cache_dir: Path | None) -> Path:
    from gpo_engine.llm import default_cache_dir  # no litellm import: llm.py loads it lazily

    return cache_dir if cache_dir is not None else default_cache_dir()


def _part_dirs(root: Path) -> dict[str, Path]:
    from gpo_engine.llm import RESPONSES_DIR

    return {"responses": root / RESPONSES_DIR, "trajectories": root / TRAJECTORIES_DIR}


def inspect(name: str, folder: Path) -> Part:
    """Entries and bytes on disk of one diskcache folder; never creates it."""
    if not folder.is_dir():
        return Part(name, str(folder), False, 0, 0)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    import diskcache

    with diskcache.Cache(str(folder)) as cache:
        entries = len(cache)
    return Part(name, str(folder), True, entries, size)


def run_info(args: argparse.Namespace, err: Console) -> int:
    root = cache_root(args.cache_dir)
    parts = [inspect(name, folder) for name, folder in _part_dirs(root).items()]
    if args.json:
        print(json.dumps({"location": str(root), "parts": [asdict(p) for p in parts]}, indent=2))
        return EXIT_OK
    out = Console()
    out.print(f"cache: {root}", markup=False, highlight=False)
    for p in parts:
        state = f"{p.entries} entries, {_size(p.bytes)}" if p.exists else "empty (not created)"
        out.print(f"  {p.name:<12} {state}   {p.path}", markup=False, highlight=False)
    return EXIT_OK


def run_clear(args: argparse.Namespace, err: Console) -> int:
    root = cache_root(args.cache_dir)
    names = ["responses", "trajectories"] if args.trajectories else ["responses"]
    parts = [inspect(name, _part_dirs(root)[name]) for name in names]
    entries = sum(p.entries for p in parts)
    if entries == 0:
        err.print(f"nothing to clear in {root}", markup=False, highlight=False)
        return EXIT_OK
    what = " and ".join(f"{p.entries} {p.name}" for p in parts)
    if not args.yes:
        if not sys.stdin.isatty():
            err.print(f"refusing to delete {what} from {root} without a terminal to confirm "
                      "on; pass --yes", style="red", markup=False, highlight=False)
            return EXIT_FAIL
        err.print(f"delete {what} ({_size(sum(p.bytes for p in parts))}) from {root}? [y/N] ",
                  end="", markup=False, highlight=False)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            err.print("nothing deleted", markup=False)
            return EXIT_FAIL
    import diskcache

    for p in parts:
        if p.exists:
            with diskcache.Cache(p.path) as cache:
                cache.clear()
    err.print(f"deleted {what} from {root}", markup=False, highlight=False)
    return EXIT_OK


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
