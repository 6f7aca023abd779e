"""`gpo check`: fail when a prompt scores worse than its recorded baseline.

Meant for pre-commit and CI: given changed files (prompts, their example sets
or lock files), it checks each prompt they concern against `<name>.prompt.lock`
and exits 1 on a regression, a stale baseline, an unreadable file, or (unless
--allow-missing) a missing baseline. `--update` records new baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpo_engine.check import CheckResult
from gpo_engine.check_targets import find_targets
from gpo_engine.lockfile import lock_path
from gpo_server.commands.common import API_BASE_ENV, EXIT_FAIL, EXIT_OK

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
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--junit-xml", type=Path, metavar="FILE",
                       help="also write a JUnit XML report to FILE")
    check.add_argument("--api-base",
                       help=f"OpenAI-compatible endpoint for the models (default: ${API_BASE_ENV})")
    check.add_argument("--cache-dir", type=Path, help="default: $GPO_CACHE_DIR or ~/.cache/gpo")
    check.set_defaults(run=run)


def run(args: argparse.Namespace, err: Console) -> int:
    targets = find_targets(args.paths, Path("."))
    for note in targets.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    results = [CheckResult(p, lock_path(p), "error", (f"{p}:1:1: file not found",))
               for p in targets.missing]
    api_base = args.api_base or os.environ.get(API_BASE_ENV) or None
    for prompt in targets.prompts:
        results.append(check_one(prompt, args, api_base))
    junit_error = _write_junit_report(args, results)
    failed = [r for r in results if r.failed(args.allow_missing)]
    if args.json:
        out: dict[str, Any] = {"ok": not failed and junit_error is None,
                               "results": [r.to_dict() for r in results]}
        if junit_error is not None:
            out["error"] = junit_error
        print(json.dumps(out, indent=2))
    else:
        print_results(results, args.allow_missing)
    if junit_error is not None:
        err.print(Text.assemble(("error", "red"), " ", junit_error), highlight=False,
                  soft_wrap=True)
    return EXIT_FAIL if failed or junit_error is not None else EXIT_OK


def _write_junit_report(args: argparse.Namespace, results: Sequence[CheckResult]) -> str | None:
    """Write --junit-xml; the error message when it cannot be written (the results are
    still printed: they were paid for)."""
    from gpo_engine.atomic import WriteError

    if not args.junit_xml:
        return None
    try:
        write_junit(args.junit_xml, results, args.allow_missing)
    except WriteError as error:
        return str(error)
    return None


def check_one(prompt: Path, args: argparse.Namespace, api_base: str | None) -> CheckResult:
    """One prompt's check; every failure becomes an "error" result, never an exception."""
    from gpo_engine.atomic import WriteError
    from gpo_engine.check import check_task
    from gpo_engine.errors import ConfigError, ModelCallError, SourceError, SpendLimitReached
    from gpo_engine.llm import NotCached
    from gpo_engine.task import load_task, open_llm

    where = lock_path(prompt)
    try:
        task = load_task(prompt)
    except SourceError as error:
        return CheckResult(prompt, where, "error", tuple(str(p) for p in error.problems))
    except ConfigError as error:
        return CheckResult(prompt, where, "error", (f"{prompt}: {error}",))
    llm = open_llm(task, cache_dir=args.cache_dir, api_base=api_base, offline=args.offline)
    try:
        return asyncio.run(check_task(task, llm, update=args.update))
    except NotCached as error:
        return CheckResult(prompt, where, "error", (
            f"--offline: the current prompt is not scored in the cache ({error})",
            f"run `gpo check {prompt}` with model access once to fill the cache"))
    except (ModelCallError, SpendLimitReached, ConfigError) as error:
        return CheckResult(prompt, where, "error", (f"{prompt}: {error}",))
    except WriteError as error:
        # --update scored the prompt (its answers are cached: a rerun is free) but
        # could not write the lock; the old lock, if any, is byte-identical.
        return CheckResult(prompt, where, "error", (str(error),))
    finally:
        llm.close()


def print_results(results: Sequence[CheckResult], allow_missing: bool) -> None:
    out = Console()
    for result in results:
        style = _STYLE.get(result.verdict, "")
        label = f"[{style}]{result.verdict.upper()}[/{style}]"
        if result.baseline is None and result.current is None:
            out.print(f"{result.prompt}: {label}", highlight=False, soft_wrap=True)
        else:
            model = (result.current or result.baseline).model  # type: ignore[union-attr]
            table = Table(title=f"{result.prompt}  ({model})", title_justify="left")
            for column in ("split", "n", "baseline", "now", "delta", "95% interval", "verdict"):
                table.add_column(column)
            for row in result.rows():
                last = row["split"] == "dev+test"
                interval = ("" if row["low"] is None else f"{row['low']:.1f} - {row['high']:.1f}")
                table.add_row(row["split"], str(row["n"]), _pct(row["baseline"]),
                              _pct(row["now"]), _delta(row["delta"]), interval,
                              label if last else "")
            out.print(table)
        for reason in result.reasons:
            # soft_wrap: a reason stays on one line, so logs can be searched for it.
            out.print(f"  {reason}", highlight=False, markup=False, soft_wrap=True)
    counts: dict[str, int] = {}
    for result in results:
        counts[result.verdict] = counts.get(result.verdict, 0) + 1
    summary = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    failed = sum(1 for r in results if r.failed(allow_missing))
    out.print(f"{len(results)} prompt(s) checked: {summary or 'nothing to check'}"
              + (f"; {failed} failing" if failed else ""), highlight=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def write_junit(path: Path, results: Sequence[CheckResult], allow_missing: bool) -> None:
    """One testcase per prompt: regression and stale are failures, error is an error,
    and a missing baseline is a failure or (with --allow-missing) skipped."""
    suite = ET.Element("testsuite", name="gpo check", tests=str(len(results)))
    failures = errors = skipped = 0
    for result in results:
        case = ET.SubElement(suite, "testcase", classname="gpo.check", name=str(result.prompt))
        text = "\n".join(result.reasons)
        if result.verdict == "error":
            errors += 1
            ET.SubElement(case, "error", message=result.reasons[0] if result.reasons else "",
                          type="error").text = text
        elif result.verdict == "missing" and allow_missing:
            skipped += 1
            ET.SubElement(case, "skipped", message=text)
        elif result.failed(allow_missing):
            failures += 1
            ET.SubElement(case, "failure", message=f"{result.verdict}: {text.splitlines()[0]}",
                          type=result.verdict).text = text
        else:
            ET.SubElement(case, "system-out").text = f"{result.verdict}: {text}"
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    from gpo_engine import atomic

    atomic.write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))
