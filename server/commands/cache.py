"""`gpo cache info | clear`: where the response cache lives, how big it is, emptying it.

The cache directory ($GPO_CACHE_DIR, else $XDG_CACHE_HOME/gpo, else
~/.cache/gpo) holds the response cache (`responses/`), the saved
trajectories that let a run resume (`trajectories/`) and the embedded model's
weights (`models/`). `clear` empties the response cache, and the trajectories
only when asked (`--trajectories`); it never deletes model weights. Entries
are removed through diskcache, so a daemon using the cache at the same time
keeps working.

A damaged store never stops either command: `info` reads each database
read-only (never creating or repairing anything) and reports one SQLite calls
corrupt, with the damaged copies a run set aside (`<name>.corrupt-<time>`,
gpo_engine.diskstore); `clear` removes a store it cannot clear through
diskcache, and those copies too.

With a shared cache (`--cache-url`, $GPO_CACHE_URL), `info` also reports Redis:
its URL (password hidden), whether it answers, the entries and bytes of each
namespace (SCAN, bounded), and the outbox entries this machine still has to
push; `clear --shared` also deletes this namespace's keys there (`gpo:v1:
responses:*`, and trajectories with `--trajectories`; never other keys, never
run locks). Without a shared cache redis is never imported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from gpo_server.commands.common import EXIT_FAIL, EXIT_OK, add_cache_url

TRAJECTORIES_DIR = "trajectories"  # as gpo_engine.task.open_store names it


@dataclass(frozen=True)
class Part:
    name: str
    path: str
    exists: bool
    entries: int
    bytes: int
    problem: str | None = None  # why its database cannot be read ("corrupt: ..."); None if fine
    set_aside: tuple[str, ...] = ()  # damaged copies moved aside (`<name>.corrupt-<time>`)
    set_aside_bytes: int = 0


def register(sub: Any) -> None:
    cache = sub.add_parser("cache", help="show or clear the response cache")
    verbs = cache.add_subparsers(required=True, metavar="ACTION")
    info = verbs.add_parser("info", help="location, entries and size of the cache")
    info.add_argument("--cache-dir", type=Path, help="default: $GPO_CACHE_DIR or ~/.cache/gpo")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    add_cache_url(info)
    info.set_defaults(run=run_info)
    clear = verbs.add_parser("clear", help="delete the cached model answers")
    clear.add_argument("--cache-dir", type=Path, help="default: $GPO_CACHE_DIR or ~/.cache/gpo")
    clear.add_argument("--trajectories", action="store_true",
                       help="also delete saved trajectories (runs then start over)")
    clear.add_argument("--shared", action="store_true",
                       help="also delete them from the shared cache on Redis (--cache-url)")
    clear.add_argument("--yes", "-y", action="store_true", help="do not ask")
    add_cache_url(clear)
    clear.set_defaults(run=run_clear)


def cache_root(cache_dir: Path | None) -> Path:
    from gpo_engine.models import default_cache_dir  # no litellm import: models loads it lazily

    return cache_dir if cache_dir is not None else default_cache_dir()


def _part_dirs(root: Path) -> dict[str, Path]:
    from gpo_engine.response_cache import RESPONSES_DIR

    return {"responses": root / RESPONSES_DIR, "trajectories": root / TRAJECTORIES_DIR}


def inspect(name: str, folder: Path) -> Part:
    """Entries and bytes on disk of one diskcache folder, and whether its database can be
    read; never creates, changes or repairs anything (gpo_engine.diskstore does that on use)."""
    from gpo_engine.diskstore import set_aside

    aside = set_aside(folder)
    kept = tuple(str(p) for p in aside)
    aside_bytes = sum(_bytes(p) for p in aside)
    if not folder.is_dir():
        return Part(name, str(folder), False, 0, 0, None, kept, aside_bytes)
    entries, problem = _count(folder)
    return Part(name, str(folder), True, entries, _bytes(folder), problem, kept, aside_bytes)


def _count(folder: Path) -> tuple[int, str | None]:
    """(entries, None), or (0, what is wrong) for a database SQLite cannot read."""
    import urllib.parse

    from gpo_engine.diskstore import DB_NAME, is_corruption

    db = folder / DB_NAME
    if not db.is_file() or db.stat().st_size == 0:
        return 0, None
    try:
        con = sqlite3.connect(f"file:{urllib.parse.quote(str(db))}?mode=ro", uri=True)
        try:
            # quick_check reads every page once (a 70 KB cache: ~1 ms): a damaged
            # page shows here, not at the next run's first unlucky key.
            verdict = con.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                return 0, f"corrupt: {verdict}"
            tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                 "AND name = 'Cache'").fetchone()[0]
            return (con.execute("SELECT count(*) FROM Cache").fetchone()[0] if tables else 0,
                    None)
        finally:
            con.close()
    except sqlite3.DatabaseError as error:
        return 0, f"{'corrupt' if is_corruption(error) else 'unreadable'}: {error}"


def _bytes(path: Path) -> int:
    """Bytes of the files under `path` (files vanishing meanwhile are skipped)."""
    total = 0
    for f in [path, *path.rglob("*")] if path.is_dir() else [path]:
        try:
            if f.is_file():
                total += f.stat().st_size
        except OSError:
            continue
    return total


@dataclass(frozen=True)
class Shared:
    url: str  # password hidden
    reachable: bool
    problem: str | None  # why Redis did not answer
    namespaces: dict[str, dict[str, Any]]  # name -> entries, bytes, complete
    outbox: dict[str, int]  # name -> entries waiting on this machine to be pushed


def _shared_url() -> str | None:
    """The shared cache's URL (cli.py checked it and set --cache-url as $GPO_CACHE_URL)."""
    if not os.environ.get("GPO_CACHE_URL", "").strip():
        return None  # redis is not imported
    from gpo_engine.shared_store import configured_url

    return configured_url()


def inspect_shared(url: str, root: Path, names: list[str]) -> Shared:
    """What Redis holds of `names` and what this machine's outboxes keep for it."""
    from gpo_engine.redis_admin import namespace_usage
    from gpo_engine.redis_settings import redact
    from gpo_engine.redis_store import RedisStore, RedisUnavailable
    from gpo_engine.shared_store import OUTBOX_SUFFIX

    outbox = {name: inspect(name, folder.with_name(folder.name + OUTBOX_SUFFIX)).entries
              for name, folder in _part_dirs(root).items() if name in names}
    namespaces: dict[str, dict[str, Any]] = {}
    for name in names:
        store = RedisStore(url, namespace=name)
        try:
            entries, size, complete = namespace_usage(store)
        except RedisUnavailable:
            return Shared(redact(url), False, store.last_error, {}, outbox)
        finally:
            store.close()
        namespaces[name] = {"entries": entries, "bytes": size, "complete": complete}
    return Shared(redact(url), True, None, namespaces, outbox)


def run_info(args: argparse.Namespace, err: Console) -> int:
    root = cache_root(args.cache_dir)
    parts = [inspect(name, folder) for name, folder in _part_dirs(root).items()]
    url = _shared_url()
    shared = inspect_shared(url, root, list(_part_dirs(root))) if url else None
    if args.json:
        print(json.dumps({"location": str(root), "parts": [asdict(p) for p in parts],
                          "shared": asdict(shared) if shared else None}, indent=2))
        return EXIT_OK
    out = Console()
    out.print(f"cache: {root}", markup=False, highlight=False)
    for p in parts:
        if p.problem:
            state = f"{p.problem}, {_size(p.bytes)}; the next run sets it aside and starts afresh"
        elif p.exists:
            state = f"{p.entries} entries, {_size(p.bytes)}"
        else:
            state = "empty (not created)"
        out.print(f"  {p.name:<12} {state}   {p.path}", markup=False, highlight=False,
                  soft_wrap=True)
        if p.set_aside:
            out.print(f"  {'':<12} {len(p.set_aside)} damaged copies set aside, "
                      f"{_size(p.set_aside_bytes)} (`gpo cache clear` deletes them)",
                      markup=False, highlight=False)
    if shared:
        _print_shared(out, shared)
    return EXIT_OK


def _print_shared(out: Console, shared: Shared) -> None:
    if not shared.reachable:
        out.print(f"shared: {shared.url} unreachable ({shared.problem})", markup=False,
                  highlight=False, soft_wrap=True)
    else:
        out.print(f"shared: {shared.url}", markup=False, highlight=False)
        for name, n in shared.namespaces.items():
            more = "" if n["complete"] else "+ (counting stopped there)"
            out.print(f"  {name:<12} {n['entries']}{more} entries, {_size(n['bytes'])}",
                      markup=False, highlight=False)
    waiting = ", ".join(f"{count} {name}" for name, count in shared.outbox.items())
    out.print(f"  {'outbox':<12} {waiting} waiting on this machine to be pushed",
              markup=False, highlight=False)


def run_clear(args: argparse.Namespace, err: Console) -> int:
    root = cache_root(args.cache_dir)
    names = ["responses", "trajectories"] if args.trajectories else ["responses"]
    parts = [inspect(name, _part_dirs(root)[name]) for name in names]
    url = _shared_url()
    if args.shared and url is None:
        err.print("--shared needs a shared cache: pass --cache-url or set GPO_CACHE_URL",
                  style="red", markup=False, highlight=False)
        return EXIT_FAIL
    shared = inspect_shared(url, root, names) if args.shared and url else None
    remote = sum(n["entries"] for n in shared.namespaces.values()) if shared else 0
    local = _clear_list(parts)
    what = " and ".join(
        ([f"{local} ({_size(sum(p.bytes + p.set_aside_bytes for p in parts))}) from {root}"]
         if local else [])
        + ([f"{remote} shared {'/'.join(names)} keys from {shared.url}"] if shared and remote
           else []))
    if not what:
        err.print(f"nothing to clear in {root}", markup=False, highlight=False)
        return _shared_down(err, shared)
    if not args.yes:
        if not sys.stdin.isatty():
            err.print(f"refusing to delete {what} without a terminal to confirm on; "
                      "pass --yes", style="red", markup=False, highlight=False)
            return EXIT_FAIL
        err.print(f"delete {what}? [y/N] ", end="", markup=False, highlight=False)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            err.print("nothing deleted", markup=False)
            return EXIT_FAIL
    for p in parts:
        _clear_part(p)
    if local:
        err.print(f"deleted {local} from {root}", markup=False, highlight=False)
    if shared is None or not shared.reachable:
        return _shared_down(err, shared)
    return _clear_shared(err, url or "", shared, names)


def _clear_shared(err: Console, url: str, shared: Shared, names: list[str]) -> int:
    from gpo_engine.redis_admin import clear_namespace
    from gpo_engine.redis_store import RedisStore, RedisUnavailable

    removed = 0
    for name in names:
        store = RedisStore(url, namespace=name)
        try:
            removed += clear_namespace(store)
        except RedisUnavailable:
            err.print(f"shared cache {shared.url} failed while clearing ({store.last_error}); "
                      f"{removed} keys removed there", style="red", markup=False,
                      highlight=False, soft_wrap=True)
            return EXIT_FAIL
        finally:
            store.close()
    err.print(f"removed {removed} keys from the shared cache {shared.url}", markup=False,
              highlight=False, soft_wrap=True)
    return EXIT_OK


def _shared_down(err: Console, shared: Shared | None) -> int:
    """EXIT_FAIL, said in one line, when --shared could not reach Redis; else EXIT_OK."""
    if shared is None or shared.reachable:
        return EXIT_OK
    err.print(f"shared cache {shared.url} is unreachable ({shared.problem}); nothing deleted "
              "there", style="red", markup=False, highlight=False, soft_wrap=True)
    return EXIT_FAIL


def _clear_list(parts: list[Part]) -> str:
    """'38 responses and a corrupt trajectories store', or '' when there is nothing."""
    items = []
    for p in parts:
        if p.problem:
            items.append(f"a corrupt {p.name} store")
        elif p.entries:
            items.append(f"{p.entries} {p.name}")
        if p.set_aside:
            items.append(f"{len(p.set_aside)} set-aside {p.name} store(s)")
    return " and ".join(items)


def _clear_part(part: Part) -> None:
    """Empty one store. A healthy one through diskcache, so a daemon using it keeps
    working; one whose database cannot be read (or cleared) is removed whole."""
    import diskcache

    if part.exists and not part.problem:
        try:
            with diskcache.Cache(part.path) as cache:
                cache.clear()
        except (sqlite3.Error, OSError):
            _remove(Path(part.path))
    elif part.exists:
        _remove(Path(part.path))
    for aside in part.set_aside:
        _remove(Path(aside))


def _remove(folder: Path) -> None:
    """Delete a store folder: renamed first, so nothing opens it half-deleted."""
    doomed = folder.with_name(f".{folder.name}.deleting-{os.getpid()}")
    try:
        os.rename(folder, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
