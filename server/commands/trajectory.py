"""`gpo trajectory`: export the latest run as JSON lines, or import one back.

    gpo trajectory PATH.prompt --jsonl [-o FILE]    # stdout without -o
    gpo trajectory PATH.prompt --import FILE

An export carries the run's fingerprint (settings, models, example-set hash;
not the absolute path), so an import on another machine or checkout files
the trajectory under the key `gpo optimize` computes there: the run resumes
from it and `gpo report` and the editor show it. An export whose settings no
longer match the file is imported as it was keyed, for viewing only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from gpo_server.commands.common import EXIT_OK, CommandError, add_cache_url, overrides
from gpo_server.commands.report import latest_trajectory, run_arguments, run_fingerprint


def register(sub: Any) -> None:
    tr = sub.add_parser("trajectory", help="export the latest run as JSON lines, or import one")
    tr.add_argument("path", type=Path, help="the .prompt file")
    mode = tr.add_mutually_exclusive_group(required=True)
    mode.add_argument("--jsonl", action="store_true", help="write the latest run as JSON lines")
    mode.add_argument("--import", dest="import_file", type=Path, metavar="FILE",
                      help="read a JSON-lines export and store it as this file's latest run")
    tr.add_argument("-o", "--output", type=Path,
                    help="with --jsonl: file to write (default stdout)")
    tr.add_argument("--model", help="task model, as given to `gpo optimize`")
    tr.add_argument("--cache-dir", type=Path, help="default: $GPO_CACHE_DIR or ~/.cache/gpo")
    add_cache_url(tr)
    run_arguments(tr)
    tr.set_defaults(run=run)


def run(args: argparse.Namespace, err: Console) -> int:
    from gpo_engine.task import load_task

    task = load_task(args.path, **overrides(args))
    if args.import_file is not None:
        return _import(task, args, err)
    if args.output is not None and args.output.suffix == ".prompt":
        raise CommandError("refusing to write JSON lines over a .prompt file")
    trajectory = latest_trajectory(task, args.cache_dir)
    if trajectory is None:
        raise CommandError(f"no optimization run recorded for {args.path}: "
                           f"run `gpo optimize {args.path}` first")
    from gpo_engine import trajectory_io

    fingerprint = run_fingerprint(task, trajectory)
    if fingerprint is None:
        err.print("[yellow]warning[/yellow] the file's settings, models or examples changed "
                  "since this run: the export carries no fingerprint and imports for viewing "
                  "only", highlight=False)
    if args.output is None:
        sys.stdout.write(trajectory_io.dumps(trajectory, fingerprint))
    else:
        trajectory_io.write(trajectory, args.output, fingerprint)
        err.print(f"{trajectory.steps_done} steps written to {args.output}", highlight=False)
    return EXIT_OK


def _import(task: Any, args: argparse.Namespace, err: Console) -> int:
    from gpo_engine import trajectory_io
    from gpo_engine.errors import Problem, SourceError
    from gpo_engine.task import open_store
    from gpo_engine.trajectory import trajectory_key

    source: Path = args.import_file
    if not source.is_file():
        raise CommandError(f"{source}: no such file")
    imported = trajectory_io.load(source)
    trajectory = imported.trajectory
    local = {**task.fingerprint(), "initial": trajectory.initial}
    if imported.fingerprint is not None:
        mine = {k: v for k, v in local.items() if k not in ("path", "initial")}
        differ = sorted(_differences(imported.fingerprint, mine))
        if differ:
            raise SourceError([Problem(source, 1, 1, "this run was made with other "
                                       f"{', '.join(differ)} than {args.path} has now; "
                                       "pass the same --model/--steps/... as the run, or "
                                       "re-export from a matching file")])
        trajectory.key = trajectory_key(local)
    else:
        err.print("[yellow]warning[/yellow] the export has no fingerprint: stored for viewing "
                  "(report, editor); `gpo optimize` will not resume from it", highlight=False)
    trajectory.path = str(task.path.resolve())
    store = open_store(args.cache_dir)
    try:
        store.save(trajectory, replace=True)  # asked for: replaces a stored run
    finally:
        store.close()
    err.print(f"imported {trajectory.steps_done} steps from {source} for {args.path}",
              highlight=False)
    return EXIT_OK


def _differences(theirs: dict[str, Any], mine: dict[str, Any]) -> set[str]:
    """Top-level fingerprint keys that differ; settings are named one by one."""
    out = set()
    for key in set(theirs) | set(mine):
        a, b = theirs.get(key), mine.get(key)
        if a == b:
            continue
        if key == "settings" and isinstance(a, dict) and isinstance(b, dict):
            out |= {f"gpo.{k}" for k in set(a) | set(b) if a.get(k) != b.get(k)}
        else:
            out.add(key.replace("_", " "))
    return out
