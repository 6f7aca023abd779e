"""Trajectories as JSON lines: round trips, append-friendliness, and every bad line located."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpo_engine import trajectory_io
from gpo_engine.errors import SourceError
from gpo_engine.task import open_store
from gpo_engine.trajectory import CandidateRecord, StepRecord, Trajectory
from gpo_server.cli import main
from tests.test_report import STEPS, real_run  # noqa: F401  (the module-scoped real run)

SRC = Path("run.jsonl")


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich wraps stderr at 80 columns; messages are checked whole.
    monkeypatch.setenv("COLUMNS", "500")



def _trajectory(steps: int = 2) -> Trajectory:
    initial = "Classify {{review}} — «naïve» \"quotes\" <b>\nAnswer:"
    t = Trajectory("key1", "/w/p.prompt", 4, initial, 37.5, 8,
                   dev_outcomes={initial: {"r2": 0.0, "r1": 1.0, "r3": 0.5}})
    current = initial
    for s in range(steps):
        new = f"Step {s}: classify {{{{review}}}}\nAnswer:"
        t.steps.append(StepRecord(s, 30 - s, current, 50.0, (
            CandidateRecord(new, 3, "scored", 62.5, 8),
            CandidateRecord(f"other {s} {{{{review}}}}", 4, "raced_out", 25.0, 4),
            CandidateRecord("no var", -1, "lost_variable", detail="lost {{review}}"),
        ), new, 62.5, message="" if s else "first"))
        t.dev_outcomes[new] = {"r1": 1.0, "r2": 1.0, "r3": 0.0}
        current = new
    return t


def _problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(SourceError) as info:
        trajectory_io.loads(text, SRC)
    assert all(p.path == SRC for p in info.value.problems)
    return [(p.line, p.message) for p in info.value.problems]


def test_round_trip_is_exact() -> None:
    t = _trajectory()
    back = trajectory_io.loads(trajectory_io.dumps(t, {"examples": "h"}), SRC)
    assert back.trajectory == t
    assert back.fingerprint == {"examples": "h"}
    assert trajectory_io.dumps(back.trajectory, {"examples": "h"}) == \
        trajectory_io.dumps(t, {"examples": "h"})


def test_layout_is_a_header_then_lines_in_a_fixed_key_order() -> None:
    lines = trajectory_io.dumps(_trajectory(steps=1)).splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds == ["trajectory", "outcomes", "step", "candidate", "candidate", "candidate",
                     "outcomes"]
    header = json.loads(lines[0])
    assert list(header) == ["kind", "format", "key", "path", "total_steps", "initial",
                            "initial_dev", "dev_n", "usage", "fingerprint"]
    assert list(json.loads(lines[3])) == ["kind", "step", "index", "text", "distance", "status",
                                          "dev", "dev_n", "detail"]
    assert list(json.loads(lines[1])["scores"]) == ["r1", "r2", "r3"]  # sorted row ids
    assert "«naïve»" in lines[0]  # readable in a diff, not \\u-escaped


def test_a_longer_run_only_appends_lines() -> None:
    short = trajectory_io.dumps(_trajectory(steps=1))
    longer = trajectory_io.dumps(_trajectory(steps=2))
    assert longer.startswith(short) and len(longer) > len(short)


def test_outcomes_of_unlisted_prompts_are_kept() -> None:
    t = _trajectory(steps=1)
    t.dev_outcomes["seen only by a paired test"] = {"r9": 1.0}
    assert trajectory_io.loads(trajectory_io.dumps(t), SRC).trajectory == t


def test_write_and_load_a_file(tmp_path: Path) -> None:
    t = _trajectory()
    out = tmp_path / "t.jsonl"
    trajectory_io.write(t, out)
    assert trajectory_io.load(out).trajectory == t
    assert not (tmp_path / "t.jsonl.tmp").exists()


def test_blank_lines_are_ignored() -> None:
    text = trajectory_io.dumps(_trajectory(steps=1)).replace("\n", "\n\n", 2)
    assert trajectory_io.loads(text, SRC).trajectory == _trajectory(steps=1)


def _lines(t: Trajectory | None = None) -> list[dict[str, Any]]:
    return [json.loads(line) for line in trajectory_io.dumps(t or _trajectory()).splitlines()]


def _text(objs: list[Any]) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def test_malformed_lines_are_all_reported_with_their_line_numbers() -> None:
    objs: list[Any] = _lines()
    objs[1] = "{not json"  # outcomes of the initial prompt
    objs[3]["distance"] = "three"  # first candidate of step 0
    del objs[4]["status"]  # second candidate
    objs[5]["colour"] = "red"  # third candidate
    objs.insert(7, ["a", "list"])
    problems = _problems(_text(objs))
    assert [line for line, _ in problems] == [2, 4, 5, 6, 8]
    messages = dict(problems)
    assert messages[2].startswith("not JSON")
    assert messages[4] == "field 'distance' should be an integer, got \"three\""
    assert messages[5] == "missing field 'status'"
    assert messages[6] == "unknown field(s) colour in a CandidateRecord line"
    assert messages[8] == "expected a JSON object, got list"


@pytest.mark.parametrize(("edit", "line", "message"), [
    (lambda o: o.pop(0), 1, "the first line must be the trajectory header"),
    (lambda o: o.insert(2, dict(o[0])), 3, "a second trajectory header"),
    (lambda o: o[0].update(format=99), 1, "unsupported format 99; this gpo reads format 1"),
    (lambda o: o[0].update(fingerprint=[1]), 1, "fingerprint must be an object or null"),
    (lambda o: o[0].update(initial_dev=None), 1,
     "field 'initial_dev' should be a number, got null"),
    (lambda o: o[2].update(kind="stepp"), 3,
     "unknown kind 'stepp'; expected one of trajectory, step, candidate, outcomes"),
    (lambda o: o[2].update(step=1), 3, "step 1 out of order; expected step 0"),
    (lambda o: o[3].update(index=2), 4, "candidate index 2 out of order; expected 0"),
    (lambda o: o[3].update(step=5), 4, "candidate of step 5 does not follow its step line"),
    (lambda o: o[3].update(step="0"), 4, "a candidate needs integer 'step' and 'index'"),
    (lambda o: o[3].update(dev=True), 4, "field 'dev' should be a number or null, got true"),
    (lambda o: o[1].update(scores={"r1": 2}), 2,
     "'scores' must map row ids to numbers from 0 to 1"),
    (lambda o: o[1].update(text=None), 2, "outcomes need a string 'text'"),
    (lambda o: o[1].update(extra=1), 2, "unknown field(s) extra"),
    (lambda o: o.insert(2, dict(o[1])), 3, "outcomes of this prompt were already given"),
    # Values of the right type that no run can have: refused, never the file's latest run.
    (lambda o: o[0].update(initial_dev=1e308), 1,
     "field 'initial_dev' should be a score from 0 to 100, got 1e+308"),
    (lambda o: o[0].update(initial_dev=float("nan")), 1,
     "field 'initial_dev' should be a number, got NaN"),
    (lambda o: o[0].update(dev_n=-1), 1, "field 'dev_n' should be 0 or more, got -1"),
    (lambda o: o[0].update(total_steps=1), 1, "2 steps follow, but total_steps is 1"),
    (lambda o: o[0].update(usage={"per_model": {"m": {"calls": "many"}}}), 1,
     "field 'usage': m calls should be an integer (0 or more), got \"many\""),
    (lambda o: o[0].update(usage={"per_model": {"m": {"cost": float("inf")}}}), 1,
     "field 'usage': m cost should be a number (0 or more), got Infinity"),
    (lambda o: o[0].update(usage={"per_model": ["m"]}), 1,
     "field 'usage': 'per_model' should be an object"),
    (lambda o: o[0].update(usage={"calls": "3"}), 1,
     "field 'usage': calls should be a number (0 or more), got \"3\""),
    (lambda o: o[2].update(chosen_dev=-5.0), 3,
     "field 'chosen_dev' should be a score from 0 to 100, got -5.0"),
    (lambda o: o[2].update(budget=-2), 3, "field 'budget' should be 0 or more, got -2"),
    (lambda o: o[3].update(dev=100.5), 4, "field 'dev' should be a score from 0 to 100, got 100.5"),
    (lambda o: o[3].update(distance=-7), 4,
     "field 'distance' should be 0 or more (or -1: not measured), got -7"),
    (lambda o: o[3].update(text=5), 4, "field 'text' should be a string, got 5"),
    (lambda o: o[1].update(scores={"r1": float("nan")}), 2,
     "'scores' must map row ids to numbers from 0 to 1"),
])
def test_each_bad_line_names_its_line(edit: Any, line: int, message: str) -> None:
    objs = _lines()
    edit(objs)
    problems = _problems(_text(objs))
    assert problems[0] == (line, message)


def test_empty_file_and_bad_encoding(tmp_path: Path) -> None:
    assert _problems("") == [(1, "empty file: no trajectory header")]
    assert _problems("\n\n") == [(1, "empty file: no trajectory header")]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(SourceError, match=r"bad.jsonl:1:1: not UTF-8"):
        trajectory_io.load(bad)


def test_the_message_reads_file_line_column() -> None:
    with pytest.raises(SourceError) as info:
        trajectory_io.loads('{"kind": "trajectory", "format": 1}\n', SRC)
    assert str(info.value.problems[0]) == "run.jsonl:1:1: missing field 'key'"


# ------------------------------------------------------------------ the command


def test_cli_export_import_round_trip(real_run: dict[str, Any], tmp_path: Path,  # noqa: F811
                                      capsys: pytest.CaptureFixture[str]) -> None:
    prompt, cache = real_run["prompt"], real_run["cache"]
    store = open_store(cache)
    original = store.latest_for(str(prompt.resolve()))
    store.close()
    assert original is not None and original.steps_done == STEPS

    # Export to stdout and to a file: the same lines.
    assert main(["trajectory", str(prompt), "--jsonl", "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "run.jsonl"
    assert main(["trajectory", str(prompt), "--jsonl", "-o", str(out),
                 "--cache-dir", str(cache)]) == 0
    assert out.read_text(encoding="utf-8") == printed
    lines = printed.splitlines()
    header = json.loads(lines[0])
    assert header["fingerprint"]["task_model"] == "openai/scripted"
    assert sum(json.loads(line)["kind"] == "step" for line in lines) == STEPS

    # Import into an empty store: the same trajectory, under the key optimize computes,
    # so the report (and a resumed run) find it.
    fresh = tmp_path / "fresh-cache"
    assert main(["trajectory", str(prompt), "--import", str(out),
                 "--cache-dir", str(fresh)]) == 0
    store = open_store(fresh)
    imported = store.latest_for(str(prompt.resolve()))
    assert store.load(original.key) == original
    store.close()
    assert imported == original


def test_cli_import_refuses_a_run_of_other_settings(real_run: dict[str, Any],  # noqa: F811
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    prompt, cache = real_run["prompt"], real_run["cache"]
    out = tmp_path / "run.jsonl"
    assert main(["trajectory", str(prompt), "--jsonl", "-o", str(out),
                 "--cache-dir", str(cache)]) == 0
    capsys.readouterr()
    code = main(["trajectory", str(prompt), "--import", str(out), "--steps", "7",
                 "--model", "openai/other", "--cache-dir", str(tmp_path / "c2")])
    assert code == 1
    err = capsys.readouterr().err
    assert ("run.jsonl:1:1: this run was made with other gpo.model, gpo.steps, optimizer model, "
            "task model than") in err


def test_cli_import_reports_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_report import _write_task

    prompt = _write_task(tmp_path / "p")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "trajectory", "format": 1}\nnot json\n', encoding="utf-8")
    code = main(["trajectory", str(prompt), "--import", str(bad),
                 "--cache-dir", str(tmp_path / "c")])
    assert code == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:1:1: missing field 'key'" in err
    assert "bad.jsonl:2:1: not JSON" in err


def test_cli_export_without_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_report import _write_task

    prompt = _write_task(tmp_path / "p")
    assert main(["trajectory", str(prompt), "--jsonl", "--cache-dir", str(tmp_path / "c")]) == 1
    assert "no optimization run recorded" in capsys.readouterr().err
    assert main(["trajectory", str(prompt), "--import", str(tmp_path / "missing.jsonl"),
                 "--cache-dir", str(tmp_path / "c")]) == 1


def test_cli_import_refuses_an_impossible_score_and_stores_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_report import _write_task

    prompt = _write_task(tmp_path / "p")
    lines = _lines()
    lines[0].update(initial_dev=1e308)
    bad = tmp_path / "run.jsonl"
    bad.write_text(_text(lines), encoding="utf-8")
    code = main(["trajectory", str(prompt), "--import", str(bad),
                 "--cache-dir", str(tmp_path / "c")])
    assert code == 1
    assert (f"{bad}:1:1: field 'initial_dev' should be a score from 0 to 100, got 1e+308"
            in capsys.readouterr().err)
    store = open_store(tmp_path / "c")
    assert store.latest_for(str(prompt.resolve())) is None
    store.close()
