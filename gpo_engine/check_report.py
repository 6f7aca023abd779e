"""`gpo check`'s reports: the JSON object (`--json`), JUnit XML, and merging shards.

A CI matrix runs `gpo check --shard I/N --json > check-I.json` in N jobs; one
last job runs `gpo check --merge check-*.json --junit-xml gpo-check.xml` and
gets one report, one JUnit file and one exit status for the whole set, as if
one job had checked everything. The merge refuses what would hide a prompt
from the verdict: a shard missing or given twice, shards of different splits,
a prompt in two reports, reports taken with and without --allow-missing, or a
file that is not a check report (e.g. the error object of a run that failed).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from gpo_engine import atomic
from gpo_engine.check import VERDICTS, fails
from gpo_engine.errors import Problem, SourceError
from gpo_engine.shard import Shard, parse_shard

Result = Mapping[str, Any]  # CheckResult.to_dict()
_ROW_KEYS = frozenset({"split", "n", "baseline", "now", "delta", "low", "high"})


@dataclass(frozen=True)
class Report:
    results: tuple[Result, ...]
    allow_missing: bool = False
    shard: Shard | None = None

    def failed(self) -> list[Result]:
        return [r for r in self.results if fails(r["verdict"], self.allow_missing)]

    def to_dict(self, error: str | None = None) -> dict[str, Any]:
        """The --json object; `error`: a failure after checking (the JUnit file could
        not be written), which fails the report too."""
        out: dict[str, Any] = {"ok": not self.failed() and error is None,
                               "shard": None if self.shard is None else str(self.shard),
                               "allow_missing": self.allow_missing,
                               "results": [dict(r) for r in self.results]}
        if error is not None:
            out["error"] = error
        return out


def read_report(path: Path) -> Report:
    """A report written by `gpo check --json`; SourceError naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError([Problem(path, 1, 1, f"cannot read report: {error}")]) from None
    return parse_report(text, path)


def parse_report(text: str, path: Path) -> Report:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError([Problem(path, error.lineno, error.colno,
                                   f"report is not valid JSON: {error.msg}")]) from None

    def bad(message: str) -> SourceError:
        return SourceError([Problem(path, 1, 1, message)])

    if not isinstance(data, dict):
        raise bad("not a `gpo check --json` report: it must be a JSON object")
    if "error" in data and "results" not in data:
        raise bad(f"the run that wrote this report failed ({data['error']}); "
                  "nothing was checked, so there is nothing to merge")
    results = data.get("results")
    if not isinstance(results, list):
        raise bad("not a `gpo check --json` report: it has no \"results\" list")
    for number, result in enumerate(results):
        problem = _result_problem(result)
        if problem:
            raise bad(f"results[{number}]: {problem}")
    allow_missing = data.get("allow_missing", False)
    if not isinstance(allow_missing, bool):
        raise bad("\"allow_missing\" must be true or false")
    shard = data.get("shard")
    if shard is not None and not isinstance(shard, str):
        raise bad("\"shard\" must be null or a text such as \"1/4\"")
    try:
        parsed = None if shard is None else parse_shard(shard)
    except ValueError as error:
        raise bad(f"\"shard\": {error}") from None
    return Report(tuple(results), allow_missing, parsed)


def _result_problem(result: Any) -> str | None:
    if not isinstance(result, dict):
        return "a result must be a JSON object"
    if not isinstance(result.get("prompt"), str):
        return "no \"prompt\" path"
    if result.get("verdict") not in VERDICTS:
        return f"verdict {result.get('verdict')!r} is not one of {', '.join(VERDICTS)}"
    reasons, rows = result.get("reasons"), result.get("rows")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        return "\"reasons\" must be a list of texts"
    if not isinstance(rows, list) or not all(isinstance(r, dict) and r.keys() >= _ROW_KEYS
                                             for r in rows):
        return f"\"rows\" must be a list of objects with {', '.join(sorted(_ROW_KEYS))}"
    return None


def merge(reports: Sequence[tuple[Path, Report]]) -> Report:
    """One report of every prompt the given ones checked, sorted by path; SourceError
    when they are not the parts of one whole (see the module's docstring)."""
    problems = _shard_problems(reports) + _overlap_problems(reports)
    modes = {report.allow_missing for _, report in reports}
    if len(modes) > 1:
        with_it = [str(p) for p, r in reports if r.allow_missing]
        problems.append(Problem(reports[0][0], 1, 1, (
            f"{', '.join(with_it)} checked with --allow-missing and the others without; "
            "run every shard with the same options")))
    if problems:
        raise SourceError(problems)
    results = sorted((r for _, report in reports for r in report.results),
                     key=lambda r: PurePath(r["prompt"]))
    return Report(tuple(results), modes.pop() if modes else False, None)


def _shard_problems(reports: Sequence[tuple[Path, Report]]) -> list[Problem]:
    sharded = [(path, report.shard) for path, report in reports if report.shard is not None]
    if not sharded:
        return []  # whole reports (of different folders, say): merged as they are
    problems = [Problem(path, 1, 1, f"not a shard report (run without --shard), while "
                        f"{sharded[0][0]} is shard {sharded[0][1]}")
                for path, report in reports if report.shard is None]
    counts = sorted({shard.count for _, shard in sharded})
    if len(counts) > 1:
        listed = ", ".join(f"{path} is {shard}" for path, shard in sharded)
        return [*problems, Problem(sharded[0][0], 1, 1,
                                   f"the shards split the prompts differently: {listed}")]
    seen: dict[int, Path] = {}
    for path, shard in sharded:
        if shard.index in seen:
            problems.append(Problem(path, 1, 1, f"shard {shard} is also {seen[shard.index]}"))
        seen.setdefault(shard.index, path)
    absent = [f"{i}/{counts[0]}" for i in range(1, counts[0] + 1) if i not in seen]
    if absent:
        problems.append(Problem(sharded[0][0], 1, 1, (
            f"shard {', '.join(absent)} missing: without it some prompts were never "
            "checked; merge the reports of every shard")))
    return problems


def _overlap_problems(reports: Sequence[tuple[Path, Report]]) -> list[Problem]:
    owner: dict[str, Path] = {}
    problems = []
    for path, report in reports:
        for result in report.results:
            prompt = result["prompt"]
            if prompt in owner:
                problems.append(Problem(path, 1, 1,
                                        f"{prompt} is checked in {owner[prompt]} too"))
            owner.setdefault(prompt, path)
    return problems


def write_junit(path: Path, report: Report) -> None:
    """One testcase per prompt: regression and stale are failures, error is an error,
    and a missing baseline is a failure or (with --allow-missing) skipped."""
    suite = ET.Element("testsuite", name="gpo check", tests=str(len(report.results)))
    failures = errors = skipped = 0
    for result in report.results:
        verdict, reasons = result["verdict"], result["reasons"]
        case = ET.SubElement(suite, "testcase", classname="gpo.check", name=result["prompt"])
        text = "\n".join(reasons)
        if verdict == "error":
            errors += 1
            ET.SubElement(case, "error", message=reasons[0] if reasons else "",
                          type="error").text = text
        elif verdict == "missing" and report.allow_missing:
            skipped += 1
            ET.SubElement(case, "skipped", message=text)
        elif fails(verdict, report.allow_missing):
            failures += 1
            first = text.splitlines()[0] if text else ""
            ET.SubElement(case, "failure", message=f"{verdict}: {first}",
                          type=verdict).text = text
        else:
            ET.SubElement(case, "system-out").text = f"{verdict}: {text}"
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    atomic.write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))
