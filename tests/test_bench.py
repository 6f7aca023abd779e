"""Smoke tests of the benchmark scripts in bench/: each runs with --quick and must print
its tables and a parseable headline as the last line. No timing is asserted (shared,
noisy machines); the numbers belong in bench/RESULTS.md."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
from common import parse_headline, parse_tables  # noqa: E402
from redis_server import require_redis  # noqa: E402


def run_quick(script: str, *extra: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick", *extra],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def headers(output: str) -> list[list[str]]:
    return [table[0] for table in parse_tables(output)]


def column(output: str, table_index: int, name: str) -> list[str]:
    table = parse_tables(output)[table_index]
    at = table[0].index(name)
    return [row[at] for row in table[1:]]


def check_headline(output: str) -> float:
    what, value, note = parse_headline(output)
    assert what and note
    assert math.isfinite(value) and value >= 0
    return value


def test_headline_parser_reads_the_last_line_only() -> None:
    text = "| a | b |\n| --- | --- |\n| 1 | 2 |\n\nheadline: x / y = 1.25x (target <= 2x)\n"
    assert parse_headline(text) == ("x / y", 1.25, "target <= 2x")
    assert parse_tables(text) == [[["a", "b"], ["1", "2"]]]
    with pytest.raises(ValueError, match="not a headline"):
        parse_headline(text + "trailing line\n")


def test_throughput_quick() -> None:
    out = run_quick("throughput.py")
    assert headers(out)[0][:5] == ["C", "calls", "wall s", "ideal s", "wall / ideal"]
    assert column(out, 0, "C") == ["1", "16"]
    calls = {int(c) for c in column(out, 0, "calls")}
    assert len(calls) == 1 and calls.pop() > 0  # the same step at every concurrency
    assert column(out, 0, "429s") == ["0", "0"]  # the llm layer never exceeds the cap
    # Two runs per C: the row is the median run, inside the range of both.
    for ratio, spread in zip(column(out, 0, "wall / ideal"), column(out, 0, "range of runs"),
                             strict=True):
        low, high = (float(x) for x in spread.split("-"))
        assert low <= float(ratio) <= high
    check_headline(out)


def test_overhead_quick() -> None:
    out = run_quick("overhead.py")
    clients = column(out, 0, "client")
    assert clients == ["bare aiohttp", "LLM.complete, cache off", "LLM.complete, cache on, miss",
                       "LLM.complete, cache on, hit"]
    assert all(float(v) > 0 for v in column(out, 0, "median ms / call"))
    processes = column(out, 1, "process")
    assert any(p.startswith("gpo lsp") for p in processes)
    assert any(p.startswith("gpo daemon") for p in processes)
    check_headline(out)


def test_cost_quick() -> None:
    out = run_quick("cost.py")
    runs = dict(zip(column(out, 0, "run"), column(out, 0, "model calls (server)"), strict=True))
    assert int(runs["full run"]) > 0
    assert runs["second identical run"] == "0"  # every answer comes from the cache
    assert int(runs["resumed"]) > 0
    assert "asked again 0 finished evaluations" in out
    assert headers(out)[1][:2] == ["latent accuracy range", "steps"]
    check_headline(out)


def test_editor_quick() -> None:
    out = run_quick("editor.py")
    kinds = column(out, 0, "request")
    assert kinds == ["hover", "codeAction"]
    assert column(out, 0, "n") == ["30", "30"]
    assert "job running throughout: True" in out
    check_headline(out)


@pytest.mark.local_model
def test_quality_quick(tmp_path: Path) -> None:
    # A tiny task in BBH's format, so the test does not depend on ../shared/bbh.
    rows = [("True and False is", "False"), ("not False is", "True"),
            ("True or False is", "True"), ("not True is", "False")]
    task = tmp_path / "bool"
    task.mkdir()
    for name in ("train", "eval", "test"):
        (task / f"{name}.jsonl").write_text(
            "".join(json.dumps({"input": i, "target": t}) + "\n" for i, t in rows))
    out = run_quick("quality.py", "--data", str(tmp_path), "--json", str(tmp_path / "q.json"))
    methods = ["initial", "opro", "gpo-recency", "gpo-importance", "gpo-relevance",
               "gpo-no-decay"]
    assert headers(out)[0] == ["task", *methods]
    assert column(out, 0, "task") == ["bool", "**average**"]
    for method in methods:
        assert 0 <= float(column(out, 0, method)[0]) <= 100
    saved = json.loads((tmp_path / "q.json").read_text())
    assert set(saved["results"]["bool"]) == set(methods)
    check_headline(out)


def test_peers_quick() -> None:
    # The peers (DSPy, GEPA) run only where `bench/peers.py --setup` made their venv;
    # without it the script measures gpo alone and says so.
    peers = (BENCH / ".peers-venv" / "bin" / "python").exists()
    tools = ["gpo", "dspy", "gepa"] if peers else ["gpo"]
    out = run_quick("peers.py", timeout=600)
    assert headers(out)[0][:6] == ["C", "tool", "requests", "eval s", "ideal s", "eval / ideal"]
    assert column(out, 0, "tool") == tools
    assert column(out, 0, "requests") == ["32"] * len(tools)  # one call a row, every tool
    assert column(out, 0, "score") == ["100%"] * len(tools)  # the same work, done right
    assert column(out, 0, "429s") == ["0"] * len(tools)  # none goes past C
    assert all(float(v) > 0 for v in column(out, 0, "peak RSS MB"))
    assert column(out, 1, "tool") == ["bare aiohttp (floor)", *tools]
    assert all(math.isfinite(float(v)) for v in column(out, 1, "gap ms / call"))
    facts = dict(zip(column(out, 2, "tool"), column(out, 2, "model path (gpo eval --json)"),
                     strict=True))
    assert facts["gpo"] == "direct"  # openai/bench behind --api-base: gpo's own client
    assert set(column(out, 2, "litellm imported")) <= {"True", "False"}
    assert ("peers skipped" in out) is not peers
    check_headline(out)


def test_team_quick() -> None:
    require_redis()
    out = run_quick("team.py")
    runs = column(out, 0, "run")
    assert [r[:3] for r in runs] == ["(a)", "(b)", "mac", "(c)", "(c)", "(c)"]
    assert column(out, 0, "processes") == ["1", "1", "1", "1", "2", "4"]
    calls = column(out, 0, "model calls (server)")
    assert calls[1] == calls[2] == "0"  # machine B: every answer from machine A's Redis
    assert int(calls[0]) > 0 and set(calls[3:]) == {calls[0]}  # every cold check, all of it
    assert column(out, 0, "cache hits")[1:3] == [calls[0]] * 2
    assert column(out, 0, "verdicts = (a)") == ["yes"] * 6  # shards and --merge agree
    assert "N=1 True, N=2 True, N=4 True" in out
    check_headline(out)
