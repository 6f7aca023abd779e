"""What every benchmark script shares: paths, the machine line, tables, the headline.

Every script prints one or more markdown tables and ends with exactly one
line of the form

    headline: <what> = <number>x (<target>; target met|target missed)

so the smoke tests in tests/test_bench.py (and a person pasting into
bench/RESULTS.md) can find and parse it.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
# Nothing may fetch litellm's price map from the internet.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HEADLINE = re.compile(
    r"^headline: (?P<what>.+?) = (?P<value>-?[0-9]+(?:\.[0-9]+)?)x \((?P<note>.*)\)$")


def use_test_helpers() -> None:
    """Make tests/model_server.py and tests/scripted_models.py importable (and the `tests`
    package the helpers import each other by, e.g. `tests.prompt_files`)."""
    for folder in (ROOT, TESTS):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def machine() -> str:
    """Cores, RAM and Python: the line RESULTS.md records with every run."""
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load {os.getloadavg()[0]:.2f}"
    return (f"{os.cpu_count()} cores, {ram} RAM, {platform.machine()}, "
            f"Python {platform.python_version()}{load}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats get two decimals."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join("---" for _ in headers) + " |"]
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(lines)


def headline(what: str, value: float, target: str, met: bool | None) -> str:
    verdict = "" if met is None else ("; target met" if met else "; target missed")
    return f"headline: {what} = {value:.2f}x ({target}{verdict})"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def parse_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in `text` as rows of cells (header first, rule dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} and c for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def parse_headline(text: str) -> tuple[str, float, str]:
    """(what, value, note) of the output's last line; ValueError when it is not a headline."""
    lines = text.rstrip("\n").splitlines()
    last = lines[-1] if lines else ""
    match = HEADLINE.match(last)
    if match is None:
        raise ValueError(f"last line is not a headline: {last!r}")
    return match["what"], float(match["value"]), match["note"]
