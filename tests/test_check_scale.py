"""`gpo check` over many prompts: concurrent scoring, `--shard I/N`, and `--merge`.

The model is test_check's test model server (run in a thread, since the
command runs its own event loop), here with a fixed latency so calls last
long enough to overlap.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_server import ModelServer
from test_check import (
    BAD,
    GOOD,
    SLIGHTLY_WORSE,
    fake_model,
    gpo,
    gpo_json,
    server_thread,
    write_task,
)

from gpo_engine.check_report import Report, merge, parse_report
from gpo_engine.errors import SourceError
from gpo_engine.shard import Shard, parse_shard, select, shard_of
from gpo_server.cli import main

LATENCY = 0.05  # seconds per model call: long enough for calls to overlap


def tagged(body: str, tag: int) -> str:
    """The body with a tag the server can tell the prompts apart by (and no two prompts
    send the same request, which the shared response cache would answer once)."""
    return body.replace("Answer", f"(set {tag}) Answer", 1)


def tag_of(messages: list[dict[str, Any]]) -> str:
    found = re.search(r"\(set (\d+)\)", str(messages[-1]["content"]))
    return found.group(1) if found else "?"


class Overlap:
    """How many different prompts had calls at the model server at once: a call is
    open from its arrival (the server's fault hook) until it is answered."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()
        self.most = 0

    def arrive(self, index: int, body: dict[str, Any]) -> None:
        self.open[tag_of(body["messages"])] += 1
        self.most = max(self.most, sum(1 for n in self.open.values() if n))

    def answer(self, messages: list[dict[str, Any]]) -> str:
        self.open[tag_of(messages)] -= 1
        return fake_model(messages)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("COLUMNS", "200")  # tables compared whole
    return tmp_path


@pytest.fixture
def model(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelServer]:
    with server_thread(latency=LATENCY) as server:
        monkeypatch.setenv("GPO_API_BASE", server.api_base)
        yield server


def prompts(count: int, *extra: str) -> list[Path]:
    return [write_task(Path(f"p{i}"), tagged(GOOD, i), *extra) for i in range(count)]


def rewrite(prompt: Path, body: str, tag: int) -> None:
    """A new body for the prompt, keeping its front matter."""
    text = prompt.read_text()
    prompt.write_text(text[: text.index("---\n", 4) + 4] + tagged(body, tag))


def without_usage(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "usage"} for r in data["results"]]


# -- concurrency ----------------------------------------------------------------


def test_prompts_are_scored_together_within_the_models_concurrency(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    overlap = Overlap()
    with server_thread(overlap.answer, faults=overlap.arrive, latency=LATENCY) as server:
        monkeypatch.setenv("GPO_API_BASE", server.api_base)
        prompts(4, "gpo.concurrency: 3")
        code, data = gpo_json(capsys, "--update")
    assert code == 0 and [r["verdict"] for r in data["results"]] == ["updated"] * 4
    assert overlap.most >= 2  # calls of different prompts were at the model together
    # ...yet one limit per model for the whole check: never more than gpo.concurrency.
    assert 2 <= server.max_in_flight <= 3
    # Each prompt's usage is its own calls, not the check's.
    calls = [r["usage"]["calls"] for r in data["results"]]
    assert calls == [r["rows"][2]["n"] for r in data["results"]]
    assert sum(calls) == server.requests
    assert all(r["usage"]["per_model"]["openai/x"]["path"] == "direct" for r in data["results"])


def test_together_gives_the_results_of_one_prompt_at_a_time(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    files = prompts(3, "gpo.check_tolerance: 20")
    assert gpo(capsys, "--update", "--cache-dir", "together")[0] == 0
    locks = [Path(f"{p}.lock").read_text() for p in files]
    for prompt in files:
        Path(f"{prompt}.lock").unlink()
        assert gpo(capsys, "--update", "--cache-dir", "alone", str(prompt))[0] == 0
    assert [Path(f"{p}.lock").read_text() for p in files] == locks

    rewrite(files[0], BAD, 0)
    rewrite(files[1], SLIGHTLY_WORSE, 1)
    code, together = gpo_json(capsys, "--cache-dir", "together-2")
    assert code == 1
    assert [r["verdict"] for r in together["results"]] == ["regression", "pass", "pass"]
    alone = [gpo_json(capsys, "--cache-dir", "alone-2", str(p))[1]["results"][0] for p in files]
    assert together["results"] == alone  # usage too: each prompt's calls are its own


@pytest.mark.parametrize(("timeouts", "most"), [((60, 60), 1), ((60, 30), 2)])
def test_prompts_share_a_limit_when_their_call_settings_agree(
    timeouts: tuple[int, int], most: int, workdir: Path, capsys: pytest.CaptureFixture[str],
    model: ModelServer,
) -> None:
    for i, timeout in enumerate(timeouts):
        write_task(Path(f"p{i}"), tagged(GOOD, i), "gpo.concurrency: 1", f"gpo.timeout: {timeout}")
    assert gpo(capsys, "--update")[0] == 0
    assert model.max_in_flight == most


def test_one_prompts_failure_does_not_stop_the_others(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    files = prompts(3)
    files[1].write_text(files[1].read_text().replace("model: openai/x", "model: nope/x"))
    code, data = gpo_json(capsys, "--update")
    assert code == 1
    assert [r["verdict"] for r in data["results"]] == ["updated", "error", "updated"]
    assert "nope" in data["results"][1]["reasons"][0]


# -- shards -----------------------------------------------------------------------

names = st.lists(st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6}){0,2}\.prompt", fullmatch=True),
                 unique=True, max_size=40)


@given(names, st.integers(min_value=1, max_value=9))
def test_shards_partition_the_prompts_exactly(paths: list[str], count: int) -> None:
    files = [Path(p) for p in paths]
    parts = [select(files, Shard(i, count), Path(".")) for i in range(1, count + 1)]
    assert sorted(p for part in parts for p in part) == sorted(files)  # each exactly once
    assert all(list(part) == [p for p in files if p in part] for part in parts)  # order kept


@given(names, st.from_regex(r"[a-z]{1,6}\.prompt", fullmatch=True),
       st.integers(min_value=2, max_value=9))
def test_adding_a_prompt_moves_no_other(paths: list[str], new: str, count: int) -> None:
    files = [Path(p) for p in paths if p != new]
    for i in range(1, count + 1):
        grown = select([*files, Path(new)], Shard(i, count), Path("."))
        assert [p for p in grown if p != Path(new)] == list(select(files, Shard(i, count),
                                                                   Path(".")))


def test_a_prompts_shard_is_its_path_from_the_root(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spellings = [Path("a/x.prompt"), Path("./a/x.prompt"), tmp_path / "a" / "x.prompt"]
    assert len({shard_of(p, root, 97) for p in spellings for root in (Path("."), tmp_path)}) == 1
    assert shard_of(Path("a/x.prompt"), Path("a"), 97) == shard_of(Path("x.prompt"), Path("."), 97)
    # Not the listing order: the same file is in the same shard wherever it is listed.
    many = [Path(f"d{i}/p.prompt") for i in range(50)]
    assert {p: shard_of(p, Path("."), 4) for p in many} == {
        p: shard_of(p, Path("."), 4) for p in reversed(many)}
    assert len({shard_of(p, Path("."), 4) for p in many}) == 4  # all parts get prompts


@pytest.mark.parametrize(("text", "message"), [
    ("0/2", "--shard 0/2: I must be between 1 and 2"),
    ("3/2", "--shard 3/2: I must be between 1 and 2"),
    ("1/0", "--shard 1/0: N, the number of parts, must be at least 1"),
    ("a/b", "--shard 'a/b': expected I/N"),
    ("2", "--shard '2': expected I/N"),
])
def test_bad_shard_values_are_refused(text: str, message: str, workdir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_shard(text)
    assert main(["check", "--shard", text]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert main(["check", "--json", "--shard", text]) == 2
    assert message in json.loads(capsys.readouterr().out)["error"]


def test_shards_then_merge_equal_one_whole_check(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    files = prompts(6)
    write_task(Path("new"), tagged(GOOD, 9))  # no baseline: missing
    assert gpo(capsys, "--update", *map(str, files))[0] == 0
    rewrite(files[2], BAD, 2)
    reports = []
    for i in (1, 2, 3):
        code, out, _ = gpo(capsys, "--json", "--shard", f"{i}/3", "--junit-xml", f"s{i}.xml")
        Path(f"s{i}.json").write_text(out)
        reports.append(json.loads(out))
        assert reports[-1]["shard"] == f"{i}/3"
        assert code == int(not reports[-1]["ok"])
    checked = [r["prompt"] for report in reports for r in report["results"]]
    assert sorted(checked) == sorted([*map(str, files), "new/senti.prompt"])

    code, whole = gpo_json(capsys, "--junit-xml", "whole.xml")
    assert code == 1
    code, merged = gpo_json(capsys, "--merge", "s1.json", "s2.json", "s3.json",
                            "--junit-xml", "merged.xml")
    assert code == 1 and merged["ok"] is False and merged["shard"] is None
    assert without_usage(merged) == without_usage(whole)
    assert ET.tostring(ET.parse("merged.xml").getroot()) == ET.tostring(
        ET.parse("whole.xml").getroot())

    # The merged tables are the whole check's, line for line.
    assert gpo(capsys, "--merge", "s3.json", "s1.json", "s2.json")[1] == gpo(capsys)[1]
    # --allow-missing on the merge lets the missing baseline pass, as on a check.
    rewrite(files[2], GOOD, 2)
    for i in (1, 2, 3):
        Path(f"s{i}.json").write_text(gpo(capsys, "--json", "--shard", f"{i}/3")[1])
    assert gpo(capsys, "--merge", "s1.json", "s2.json", "s3.json")[0] == 1
    code, out, _ = gpo(capsys, "--merge", "s1.json", "s2.json", "s3.json", "--allow-missing")
    assert code == 0 and "7 prompt(s) checked: 1 missing, 6 pass" in out


def test_a_shard_says_so_in_its_summary(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    prompts(2)
    code, out, _ = gpo(capsys, "--shard", "1/1", "--allow-missing")
    assert code == 0 and "2 prompt(s) checked (shard 1/1): 2 missing" in out
    # The report records --allow-missing, and the merge judges by it.
    code, out, _ = gpo(capsys, "--json", "--shard", "1/1", "--allow-missing")
    assert code == 0 and json.loads(out)["allow_missing"] is True
    Path("s1.json").write_text(out)
    code, merged = gpo_json(capsys, "--merge", "s1.json")
    assert code == 0 and merged["ok"] and merged["allow_missing"] is True


# -- merging refuses what would hide a prompt ----------------------------------------


def report(*prompts: str, shard: str | None = None, allow_missing: bool = False) -> Report:
    rows = [{"split": s, "n": 0, "baseline": None, "now": None, "delta": None, "low": None,
             "high": None} for s in ("dev", "test", "dev+test")]
    data = {"ok": True, "shard": shard, "allow_missing": allow_missing,
            "results": [{"prompt": p, "verdict": "pass", "reasons": ["ok"], "rows": rows}
                        for p in prompts]}
    return parse_report(json.dumps(data), Path("r.json"))


def refusal(*reports: tuple[str, Report]) -> list[str]:
    with pytest.raises(SourceError) as info:
        merge([(Path(name), r) for name, r in reports])
    return [str(p) for p in info.value.problems]


def test_merge_sorts_by_path_and_accepts_whole_reports() -> None:
    merged = merge([(Path("a.json"), report("z.prompt", "b/y.prompt")),
                    (Path("b.json"), report("b/x.prompt"))])
    assert [r["prompt"] for r in merged.results] == ["b/x.prompt", "b/y.prompt", "z.prompt"]


def test_merge_refuses_an_incomplete_or_inconsistent_set() -> None:
    one, two, three = (report(f"p{i}.prompt", shard=f"{i}/3") for i in (1, 2, 3))
    assert refusal(("a.json", one), ("c.json", three)) == [
        "a.json:1:1: shard 2/3 missing: without it some prompts were never checked; "
        "merge the reports of every shard"]
    assert refusal(("a.json", one), ("b.json", two), ("c.json", three), ("d.json", one))[0] == (
        "d.json:1:1: shard 1/3 is also a.json")
    assert refusal(("a.json", one), ("b.json", report("q.prompt", shard="2/2"))) == [
        "a.json:1:1: the shards split the prompts differently: a.json is 1/3, b.json is 2/2"]
    assert refusal(("a.json", one), ("w.json", report("q.prompt")))[0] == (
        "w.json:1:1: not a shard report (run without --shard), while a.json is shard 1/3")
    assert refusal(("a.json", report("p.prompt")), ("b.json", report("p.prompt"))) == [
        "b.json:1:1: p.prompt is checked in a.json too"]
    assert refusal(("a.json", report("p.prompt", allow_missing=True)),
                   ("b.json", report("q.prompt"))) == [
        "a.json:1:1: a.json checked with --allow-missing and the others without; "
        "run every shard with the same options"]


@pytest.mark.parametrize(("text", "where", "message"), [
    ('{\n  "results": [\n  oops', "3:3", "report is not valid JSON: Expecting value"),
    ('{"error": "--shard 0/2: bad", "problems": []}', "1:1",
     "the run that wrote this report failed (--shard 0/2: bad)"),
    ("[]", "1:1", "not a `gpo check --json` report: it must be a JSON object"),
    ('{"ok": true}', "1:1", 'not a `gpo check --json` report: it has no "results" list'),
    ('{"results": [{"prompt": "p", "verdict": "fine", "reasons": [], "rows": []}]}', "1:1",
     "results[0]: verdict 'fine' is not one of"),
    ('{"results": [{"prompt": "p", "verdict": "pass", "reasons": [], "rows": [{}]}]}', "1:1",
     'results[0]: "rows" must be a list of objects with baseline, delta'),
    ('{"shard": "4/3", "results": []}', "1:1", '"shard": --shard 4/3: I must be between'),
])
def test_bad_reports_are_errors_at_their_file(text: str, where: str, message: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_report(text, Path("s1.json"))
    assert str(info.value.problems[0]).startswith(f"s1.json:{where}: {message}")


def test_merge_on_the_command_line_reports_bad_input(
    workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    Path("s1.json").write_text('{"error": "boom", "problems": []}')
    code, _, err = gpo(capsys, "--merge", "s1.json")
    assert code == 1 and "s1.json:1:1: the run that wrote this report failed (boom)" in err
    code, _, err = gpo(capsys, "--merge", "gone.json")
    assert code == 1 and "gone.json:1:1: cannot read report" in err
    code, _, err = gpo(capsys, "--merge", "s1.json", "--update", "--shard", "1/2")
    assert code == 2 and "--merge checks nothing, so it takes no --update, --shard" in err
    code, _, err = gpo(capsys, "x.prompt", "--merge", "s1.json")
    assert code == 2 and "takes no PATHS" in err


def test_each_prompt_keeps_its_own_spend_cap(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    # gpt-4o-mini is priced in litellm's local map, so the calls cost real (tiny) dollars.
    files = [write_task(Path(f"p{i}"), tagged(GOOD, i)) for i in range(2)]
    for prompt in files:
        prompt.write_text(prompt.read_text().replace("openai/x", "openai/gpt-4o-mini"))
    _, alone = gpo_json(capsys, "--update", "--cache-dir", "alone", str(files[0]))
    cost = alone["results"][0]["usage"]["cost"]
    assert cost > 0
    cap = f"gpo.max_cost: {1.5 * cost:.10f}"  # one prompt's scoring fits, two would not
    for prompt in files:
        prompt.write_text(prompt.read_text().replace("---\nClassify", f"{cap}\n---\nClassify"))
    code, data = gpo_json(capsys, "--update", "--cache-dir", "together")
    assert code == 0 and [r["verdict"] for r in data["results"]] == ["updated"] * 2
    assert [r["usage"]["cost"] for r in data["results"]] == [pytest.approx(cost)] * 2
