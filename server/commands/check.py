"""`gpo check`: fail when a prompt scores worse than its recorded baseline.

Meant for pre-commit and CI: given changed files (prompts, their example sets
or lock files), it checks each prompt they concern against `<name>.prompt.lock`
and exits 1 on a regression, a stale baseline, an unreadable file, or (unless
--allow-missing) a missing baseline. `--update` records new baselines.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpo_engine.check import CheckResult
from gpo_engine.check_report import Report
from gpo_engine.check_targets import find_targets
from gpo_engine.lockfile import lock_path
from gpo_engine.shard import Shard, parse_shard, select
from gpo_server.commands.common import (
    API_BASE_ENV,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_cache_url,
)

_STYLE = {"pass": "green", "updated": "green", "regression": "red", "stale": "yellow",
          "missing": "yellow", "error": "red"}


def register(sub: Any) -> None:
    check = sub.add_parser(
        "check", help="compare prompts with their baselines (<name>.prompt.lock)",
        description="Score each prompt (or the prompt owning each example set or lock file) "
                    "and compare it with its recorded baseline; exit 1 on a regression, a "
                    "stale or a missing baseline.")
    check.add_argument("paths", nargs="*", type=Path,
                       help=".prompt, example set or .prompt.lock files "
                            "(default: every .prompt under the current folder)")
    check.add_argument("--update", action="store_true",
                       help="write or refresh the lock files with the current scores")
    check.add_argument("--allow-missing", action="store_true",
                       help="a prompt without a lock file passes")
    check.add_argument("--offline", action="store_true",
                       help="make no model call: use cached answers only, fail if one is missing")
    check.add_argument("--shard", metavar="I/N",
                       help="check only part I of N: a stable split of the prompts by a hash "
                            "of their path, for a CI matrix of N jobs")
    check.add_argument("--merge", nargs="+", type=Path, metavar="REPORT",
                       help="check nothing: merge the --json reports of the shards into one "
                            "report (and one --junit-xml file)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--junit-xml", type=Path, metavar="FILE",
                       help="also write a JUnit XML report to FILE")
    check.add_argument("--api-base",
                       help=f"OpenAI-compatible endpoint for the models (default: ${API_BASE_ENV})")
    check.add_argument("--cache-dir", type=Path, help="default: $GPO_CACHE_DIR or ~/.cache/gpo")
    add_cache_url(check)
    check.set_defaults(run=run)


def run(args: argparse.Namespace, err: Console) -> int:
    if args.merge:
        return finish(merged_report(args), args, err)
    from gpo_engine.check_run import check_prompts

    shard = _shard(args.shard)
    targets = find_targets(args.paths, Path("."))
    for note in targets.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    results = [CheckResult(p, lock_path(p), "error", (f"{p}:1:1: file not found",))
               for p in select(targets.missing, shard, Path("."))]
    api_base = args.api_base or os.environ.get(API_BASE_ENV) or None
    results += check_prompts(select(targets.prompts, shard, Path(".")), update=args.update,
                             cache_dir=args.cache_dir, api_base=api_base, offline=args.offline)
    report = Report(tuple(r.to_dict() for r in results), args.allow_missing, shard)
    return finish(report, args, err)


def _shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from None


def merged_report(args: argparse.Namespace) -> Report:
    """--merge: the shards' reports as one (CommandError for options that check)."""
    from gpo_engine.check_report import merge, read_report

    checking = [name for name, given in (("PATHS", args.paths), ("--update", args.update),
                                         ("--offline", args.offline), ("--shard", args.shard))
                if given]
    if checking:
        raise CommandError(f"--merge checks nothing, so it takes no {', '.join(checking)}",
                           EXIT_USAGE)
    merged = merge([(path, read_report(path)) for path in args.merge])
    return replace(merged, allow_missing=True) if args.allow_missing else merged


def finish(report: Report, args: argparse.Namespace, err: Console) -> int:
    """Write --junit-xml, print the report (tables, or --json), and the exit status."""
    junit_error = _write_junit_report(args, report)
    if args.json:
        print(json.dumps(report.to_dict(junit_error), indent=2))
    else:
        print_results(report)
    if junit_error is not None:
        err.print(Text.assemble(("error", "red"), " ", junit_error), highlight=False,
                  soft_wrap=True)
    return EXIT_FAIL if report.failed() or junit_error is not None else EXIT_OK


def _write_junit_report(args: argparse.Namespace, report: Report) -> str | None:
    """Write --junit-xml; the error message when it cannot be written (the results are
    still printed: they were paid for)."""
    from gpo_engine.atomic import WriteError
    from gpo_engine.check_report import write_junit

    if not args.junit_xml:
        return None
    try:
        write_junit(args.junit_xml, report)
    except WriteError as error:
        return str(error)
    return None


def print_results(report: Report) -> None:
    out = Console()
    for result in report.results:
        style = _STYLE.get(result["verdict"], "")
        label = f"[{style}]{result['verdict'].upper()}[/{style}]"
        rows = result["rows"]
        if all(row["baseline"] is None and row["now"] is None for row in rows):
            out.print(f"{result['prompt']}: {label}", highlight=False, soft_wrap=True)
        else:
            table = Table(title=f"{result['prompt']}  ({result['model']})",
                          title_justify="left")
            for column in ("split", "n", "baseline", "now", "delta", "95% interval", "verdict"):
                table.add_column(column)
            for row in rows:
                last = row["split"] == "dev+test"
                interval = ("" if row["low"] is None else f"{row['low']:.1f} - {row['high']:.1f}")
                table.add_row(row["split"], str(row["n"]), _pct(row["baseline"]),
                              _pct(row["now"]), _delta(row["delta"]), interval,
                              label if last else "")
            out.print(table)
        for reason in result["reasons"]:
            # soft_wrap: a reason stays on one line, so logs can be searched for it.
            out.print(f"  {reason}", highlight=False, markup=False, soft_wrap=True)
    counts: dict[str, int] = {}
    for result in report.results:
        counts[result["verdict"]] = counts.get(result["verdict"], 0) + 1
    summary = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    failed = len(report.failed())
    shard = f" (shard {report.shard})" if report.shard is not None else ""
    out.print(f"{len(report.results)} prompt(s) checked{shard}: "
              f"{summary or 'nothing to check'}" + (f"; {failed} failing" if failed else ""),
              highlight=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"
