"""`gpo check`: lock files, verdicts, example-set owners, the CLI, --offline, JSON and JUnit.

The model is the test model server (`openai/x`) run in a thread, because the
command under test runs its own event loop. Its answers depend on the rendered
prompt the way a real model's would on a better or worse instruction:
"Classify ... positive or negative" gets every row right, "positive or
negative" alone gets every ninth row wrong, anything else every other row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from model_server import ModelServer

from gpo_engine.check import judge, stale_reasons
from gpo_engine.check_targets import find_targets
from gpo_engine.errors import SourceError
from gpo_engine.lockfile import Lock, SplitRecord, lock_path, parse_lock, prompt_hash
from gpo_engine.offer import Score
from gpo_server.cli import main
from tests.prompt_files import write_prompt

MODEL = "openai/x"
ADJECTIVES = ["great", "awful", "lovely", "terrible", "fine", "broken"]
REVIEWS = {f"Review {i}: the {ADJECTIVES[i % 6]} thing number {i}.":
           (i, "positive" if ADJECTIVES[i % 6] in ("great", "lovely", "fine") else "negative")
           for i in range(36)}
GOOD = "Classify the sentiment. Answer positive or negative.\nReview: {{review}}\nSentiment:\n"
SLIGHTLY_WORSE = "Answer positive or negative.\nReview: {{review}}\nSentiment:\n"
BAD = "What do you think?\nReview: {{review}}\nSentiment:\n"


def fake_model(messages: list[dict[str, str]]) -> str:
    prompt = messages[-1]["content"]
    found = re.search(r"Review: (.*)", prompt)
    index, label = REVIEWS.get(found.group(1).strip() if found else "", (0, "positive"))
    wrong = "negative" if label == "positive" else "positive"
    if "Classify" in prompt and "positive or negative" in prompt:
        return label
    if "positive or negative" in prompt:
        return wrong if index % 9 == 0 else label
    return wrong if index % 2 else label


@contextlib.contextmanager
def server_thread(answer: object = fake_model, **options: Any) -> Iterator[ModelServer]:
    """A ModelServer on its own loop in a thread, for code that calls asyncio.run itself
    (`options`: ModelServer's, such as latency and faults)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ModelServer(answer=answer, **options)  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def frontmatter(*extra: str) -> str:
    return "---\nmodel: openai/x\ngpo.metric: exact\n" + "".join(f"{e}\n" for e in extra) + "---\n"


def write_task(folder: Path, body: str = GOOD, *extra: str, name: str = "senti") -> Path:
    return write_prompt(folder, name, frontmatter(*extra) + body,
                        [{"review": text, "expected": label}
                         for text, (_, label) in REVIEWS.items()])


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelServer]:
    with server_thread() as server:
        monkeypatch.setenv("GPO_API_BASE", server.api_base)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        yield server


def gpo(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def gpo_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code, out, _ = gpo(capsys, "--json", *args)
    return code, json.loads(out)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's tmp_path as the working directory, since `gpo check` resolves paths from it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def rewrite(prompt: Path, body: str, *extra: str) -> None:
    """Replace a prompt's text (front matter and body), the edit a check then judges."""
    prompt.write_text(frontmatter(*extra) + body)


def update(capsys: pytest.CaptureFixture[str], *args: str) -> None:
    """Record a baseline with `gpo check --update` and insist it succeeded."""
    assert gpo(capsys, "--update", *args)[0] == 0


def baselined_task(capsys: pytest.CaptureFixture[str], body: str = GOOD, *extra: str) -> Path:
    """A task in the working directory with its baseline already recorded."""
    prompt = write_task(Path("."), body, *extra)
    update(capsys, "senti.prompt")
    return prompt


def update_then_pass(capsys: pytest.CaptureFixture[str], target: str) -> None:
    """Re-record a baseline and see the next check pass: the way out of a failure."""
    update(capsys, target)
    assert gpo(capsys, target)[0] == 0


# -- the lock file -------------------------------------------------------------


def sample_lock(**changes: object) -> Lock:
    values: dict[str, object] = {
        "prompt_hash": "sha256:abc", "examples": "s.examples.jsonl", "examples_hash": "e1",
        "model": MODEL, "metric": {"name": "exact", "pattern": None, "judge": None},
        "dev": SplitRecord(Score(50.0, 2, 9.5, 90.5), {"a": 1.0, "b": 0.0}),
        "test": SplitRecord(Score(100.0, 1, 20.7, 100.0), {"c": 1.0}),
    }
    values.update(changes)
    return Lock(**values)  # type: ignore[arg-type]


def test_lock_round_trips_through_json(tmp_path: Path) -> None:
    lock = sample_lock()
    data = json.loads(lock.to_json())
    assert data["lock_version"] == 1 and data["tool"].startswith("gpo ")
    assert data["dev"]["outcomes"] == {"a": 1.0, "b": 0.0}
    again = parse_lock(lock.to_json(), tmp_path / "s.prompt.lock")
    assert again == lock
    assert again.outcomes() == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert again.combined().value == pytest.approx(200 / 3)


def test_a_lock_score_keeps_its_interval() -> None:
    # The lock file stores low and high for every split: a Score without them has no lock form.
    with pytest.raises(ValueError, match="needs its interval"):
        SplitRecord(Score(50.0, 2), {"a": 1.0, "b": 0.0})
    combined = sample_lock().combined()  # 2 of 3 rows: Wilson's 95% interval is 20.8-93.9
    assert (combined.value, combined.n) == (pytest.approx(200 / 3), 3)
    assert (combined.low, combined.high) == (pytest.approx(20.8, abs=0.1),
                                             pytest.approx(93.9, abs=0.1))


def test_lock_path_and_prompt_hash_ignore_line_endings() -> None:
    assert lock_path(Path("a/b.prompt")) == Path("a/b.prompt.lock")
    assert prompt_hash("x\r\ny\n") == prompt_hash("x\ny\n") != prompt_hash("x\nz\n")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{\n  "lock_version": 1,\n  oops\n}', 3, "lock file is not valid JSON"),
        ("[1, 2]", 1, "lock file must hold a JSON object"),
        ('{"lock_version": 7}', 1, "lock format version 7 is not supported"),
        ('{"lock_version": 1}', 1, "lock file has no 'dev' field"),
    ],
)
def test_bad_lock_files_are_located(text: str, line: int, message: str) -> None:
    path = Path("p/s.prompt.lock")
    with pytest.raises(SourceError) as info:
        parse_lock(text, path)
    problem = info.value.problems[0]
    assert problem.path == path and problem.line == line and message in problem.message


def test_malformed_lock_field_says_how_to_recreate() -> None:
    data = json.loads(sample_lock().to_json())
    data["dev"]["outcomes"] = {"a": "lots"}
    with pytest.raises(SourceError, match=r"malformed field.*gpo check --update p/s\.prompt"):
        parse_lock(json.dumps(data), Path("p/s.prompt.lock"))


# -- verdict logic --------------------------------------------------------------


def stale(lock: Lock, **changes: object) -> list[str]:
    current: dict[str, object] = {
        "examples_hash": "e1", "examples_name": "s.examples.jsonl", "model": MODEL,
        "metric": {"name": "exact", "pattern": None, "judge": None},
        "dev_uids": ["a", "b"], "test_uids": ["c"]}
    current.update(changes)
    return stale_reasons(lock, **current)  # type: ignore[arg-type]


def test_stale_reasons() -> None:
    lock = sample_lock()
    assert stale(lock) == []
    assert stale(lock, examples_hash="e2") == [
        "the example set s.examples.jsonl changed since the baseline"]
    assert stale(lock, dev_uids=["a"], test_uids=["b", "c"]) == [
        "the dev/test rows changed since the baseline (gpo.split?)"]
    assert stale(lock, model="openai/y") == [
        "the model changed: baseline openai/x, now openai/y"]
    assert stale(lock, metric={"name": "regex", "pattern": "x", "judge": None}) == [
        "the metric changed: baseline exact, now regex (pattern=x)"]


def outcomes_lock(values: list[float]) -> Lock:
    return sample_lock(dev=SplitRecord(Score(0, len(values), 0, 0),
                                       {f"u{i}": v for i, v in enumerate(values)}),
                       test=SplitRecord(Score(0, 0, 0, 0), {}))


def test_judge_significant_drop() -> None:
    verdict, reasons, paired = judge(outcomes_lock([1] * 10), outcomes_lock([0] * 6 + [1] * 4),
                                     alpha=0.05, tolerance=100)
    assert verdict == "regression" and paired.p_value == pytest.approx(0.03125)
    assert reasons == ["score dropped 60.0 points, significant at alpha=0.05 "
                       "(p=0.0312, 6 examples worse, 0 better, n=10)"]


def test_judge_drop_over_tolerance_but_not_significant() -> None:
    base, now = outcomes_lock([1] * 20), outcomes_lock([0] * 2 + [1] * 18)  # -10 points, p=0.5
    verdict, reasons, _ = judge(base, now, alpha=0.05, tolerance=5)
    assert verdict == "regression" and "more than gpo.check_tolerance=5" in reasons[0]
    verdict, reasons, _ = judge(base, now, alpha=0.05, tolerance=10)
    assert verdict == "pass" and reasons[0].startswith("dropped 10.0 points, within tolerance")


def test_judge_improvement_and_no_change() -> None:
    verdict, reasons, _ = judge(outcomes_lock([0, 1]), outcomes_lock([1, 1]), alpha=0.05,
                                tolerance=5)
    assert verdict == "pass" and reasons[0].startswith("improved 50.0 points")
    assert "gpo check --update" in reasons[0]
    verdict, reasons, _ = judge(outcomes_lock([0, 1]), outcomes_lock([0, 1]), alpha=0.05,
                                tolerance=0)
    assert verdict == "pass" and reasons[0].startswith("same score")


# -- which prompts the named files concern ---------------------------------------


def test_find_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a = write_task(Path("a"), name="one")
    b = write_task(Path("b"), name="two")
    shared = Path("data/shared.examples.jsonl")
    shared.parent.mkdir()
    shared.write_text((Path("a") / "one.examples.jsonl").read_text())
    c = write_task(Path("c"), GOOD, "gpo.examples: ../data/shared.examples.jsonl", name="three")
    Path("c/three.examples.jsonl").unlink()
    stray = Path("b/stray.examples.jsonl")
    stray.write_text("{}\n")
    Path("notes.txt").write_text("hi")
    found = find_targets([a, Path("b/two.prompt.lock"), Path("a/one.examples.jsonl"), shared,
                          stray, Path("notes.txt"), Path("gone.prompt")], Path("."))
    assert found.prompts == (a, b, c)
    assert found.missing == (Path("gone.prompt"),)
    assert found.notes == (
        "b/stray.examples.jsonl: no .prompt file reads this example set; skipped",
        "notes.txt: not a .prompt, lock or example file; skipped",
    )
    assert find_targets([], Path(".")).prompts == (a, b, c)
    hidden = write_task(Path(".venv/x"), name="hidden")
    assert hidden not in find_targets([], Path(".")).prompts


def test_partials_are_parts_of_prompts_not_prompts(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Checking a partial as a prompt of its own failed on its missing example set, so
    # `gpo check` failed in any folder with partials, and so did committing an edited one.
    monkeypatch.chdir(tmp_path)
    Path("_rules.prompt").write_text("Answer with one word.")
    user = write_task(Path("."), "{{> rules}}\n" + GOOD, name="user")
    other = write_task(Path("."), GOOD, name="other")
    far = write_task(Path("far"), "{{> rules}}\n" + GOOD, "gpo.partials: ..", name="far")
    broken = write_task(Path("b"), "{{> tone}}\n" + GOOD, name="broken")
    Path("b/_tone.prompt").write_text("{{#if}} unclosed")
    Path("b/_unused.prompt").write_text("Be brief.")
    assert find_targets([], Path(".")).prompts == (broken, far, other, user)
    found = find_targets([Path("_rules.prompt"), Path("b/_tone.prompt"),
                          Path("b/_unused.prompt")], Path("."))
    assert found.prompts == (user, far, broken)  # a partial that breaks its prompt: checked
    assert found.notes == ("b/_unused.prompt: no .prompt file reads this partial; skipped",)


def test_broken_prompt_still_owns_its_sibling_examples(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    prompt = write_task(Path("."), GOOD, "gpo.steps: zero")
    assert find_targets([Path("senti.examples.jsonl")], Path(".")).prompts == (prompt,)


# -- the command, end to end against the test model server -----------------------


def test_missing_then_update_then_unchanged_costs_no_calls(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    prompt = write_task(Path("."))
    code, out, _ = gpo(capsys, "senti.prompt")
    assert code == 1 and "MISSING" in out
    assert "create it with `gpo check --update senti.prompt`" in out
    assert gpo(capsys, "--allow-missing", "senti.prompt")[0] == 0
    assert model.requests == 0

    code, out, _ = gpo(capsys, "--update", "senti.prompt")
    assert code == 0 and "UPDATED" in out and "baseline written to senti.prompt.lock" in out
    lock = json.loads(lock_path(prompt).read_text())
    assert lock["model"] == MODEL and lock["dev"]["score"] == 100.0
    assert lock["dev"]["n"] + lock["test"]["n"] == len(lock["dev"]["outcomes"]) + len(
        lock["test"]["outcomes"])
    assert lock["prompt_hash"] == prompt_hash(prompt.read_text())
    calls = model.requests
    assert calls == lock["dev"]["n"] + lock["test"]["n"]

    code, out, _ = gpo(capsys, "senti.examples.jsonl")  # an example set checks its prompt
    assert code == 0 and "PASS" in out and "unchanged since the baseline" in out
    for column in ("baseline", "now", "delta", "95% interval", "verdict"):
        assert column in out
    assert model.requests == calls  # an unchanged file needs no model, not even a cache


def test_degraded_prompt_is_a_regression_and_improved_passes(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    prompt = write_task(Path("."), SLIGHTLY_WORSE, "gpo.check_tolerance: 50")
    update(capsys)  # no paths: every prompt under the folder

    rewrite(prompt, BAD, "gpo.check_tolerance: 50")
    code, data = gpo_json(capsys, "senti.prompt")
    assert code == 1 and data["ok"] is False
    result = data["results"][0]
    assert result["verdict"] == "regression" and result["scored"]
    assert result["paired_test"]["significant"] and result["paired_test"]["delta"] < 0
    assert "significant at alpha=0.05" in result["reasons"][0]
    assert "accept it with `gpo check --update senti.prompt`" in result["reasons"][-1]
    assert [row["split"] for row in result["rows"]] == ["dev", "test", "dev+test"]

    rewrite(prompt, GOOD, "gpo.check_tolerance: 50")
    code, data = gpo_json(capsys, "senti.prompt")
    result = data["results"][0]
    assert code == 0 and result["verdict"] == "pass" and result["reasons"][0].startswith(
        "improved")
    calls = model.requests
    code, data = gpo_json(capsys, "senti.prompt")  # the same text again: all from the cache
    assert code == 0 and model.requests == calls
    assert data["results"][0]["usage"]["calls"] == 0


def test_small_drop_fails_only_over_the_tolerance(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    prompt = baselined_task(capsys)
    rewrite(prompt, SLIGHTLY_WORSE)  # 3 of the 24 dev+test rows wrong
    code, data = gpo_json(capsys, "senti.prompt")
    reason = data["results"][0]["reasons"][0]
    assert code == 1 and "more than gpo.check_tolerance=5" in reason
    rewrite(prompt, SLIGHTLY_WORSE, "gpo.check_tolerance: 40")
    code, data = gpo_json(capsys, "senti.prompt")
    assert code == 0 and "within tolerance" in data["results"][0]["reasons"][0]


def test_stale_baseline_is_its_own_failure(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    prompt = baselined_task(capsys)
    calls = model.requests
    examples = Path("senti.examples.jsonl")
    examples.write_text(examples.read_text() + '{"review": "new", "expected": "positive"}\n')
    code, out, _ = gpo(capsys, "senti.examples.jsonl")
    assert code == 1 and "STALE" in out
    assert "baseline is stale: the example set senti.examples.jsonl changed" in out
    assert "re-record it with `gpo check --update senti.prompt`" in out
    assert model.requests == calls  # nothing scored against a stale baseline

    prompt.write_text(prompt.read_text().replace("model: openai/x", "model: openai/y"))
    code, data = gpo_json(capsys, "senti.prompt")
    assert code == 1 and data["results"][0]["verdict"] == "stale"
    assert "the model changed: baseline openai/x, now openai/y" in data["results"][0]["reasons"][0]
    update_then_pass(capsys, "senti.prompt")


def test_offline_uses_the_cache_and_refuses_model_calls(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    prompt = write_task(Path("."))
    assert gpo(capsys, "--update", "--offline", "senti.prompt")[0] == 1  # nothing cached yet
    assert model.requests == 0 and not lock_path(prompt).exists()
    update(capsys, "senti.prompt")
    rewrite(prompt, BAD)
    calls = model.requests
    code, out, _ = gpo(capsys, "--offline", "senti.prompt")
    assert code == 1 and "ERROR" in out and "--offline" in out
    assert "not in the response cache" in out and "with model access once" in out
    assert model.requests == calls
    gpo(capsys, "senti.prompt")  # online: scores and caches the new text
    code, data = gpo_json(capsys, "--offline", "senti.prompt")
    assert code == 1 and data["results"][0]["verdict"] == "regression"
    assert model.requests > calls and data["results"][0]["usage"]["calls"] == 0


def test_bad_files_are_errors_with_locations(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    write_task(Path("."), GOOD, "gpo.check_alpha: 2")
    code, out, _ = gpo(capsys, "senti.prompt", "gone.prompt")
    assert code == 1
    assert "senti.prompt:4:1: gpo.check_alpha must be a number between 0 and 1, got 2" in out
    assert "gone.prompt:1:1: file not found" in out
    write_task(Path("."))
    Path("senti.prompt.lock").write_text('{"lock_version": 1,\n  nope}')
    code, out, _ = gpo(capsys, "senti.prompt")
    assert code == 1 and "senti.prompt.lock:2:3: lock file is not valid JSON" in out
    update_then_pass(capsys, "senti.prompt")  # --update replaces a broken lock


def test_junit_xml_report(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    write_task(Path("ok"))
    bad = write_task(Path("bad"))
    write_task(Path("new"))
    update(capsys, "ok/senti.prompt", "bad/senti.prompt")
    rewrite(bad, BAD)
    code, _, _ = gpo(capsys, "--junit-xml", "report.xml", "--allow-missing")
    assert code == 1
    suite = ET.parse("report.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("3", "1", "0", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    failure = cases["bad/senti.prompt"].find("failure")
    assert failure is not None and failure.get("type") == "regression"
    assert cases["new/senti.prompt"].find("skipped") is not None
    assert cases["ok/senti.prompt"].find("failure") is None


def test_an_edited_partial_is_a_change_the_check_measures(
    workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
) -> None:
    # What the model is sent depends on the partial's text too: a baseline of the
    # prompt alone would call an edited partial "unchanged" and skip measuring it.
    (workdir / "_rules.prompt").write_text("Answer with one word.", encoding="utf-8")
    prompt = write_task(Path("."), "{{> rules}}\n" + GOOD)
    update(capsys, "senti.prompt")
    lock = json.loads(lock_path(prompt).read_text())
    assert lock["prompt_hash"] != prompt_hash(prompt.read_text())  # the partial is in it
    code, out, _ = gpo(capsys, "senti.prompt")
    assert code == 0 and "unchanged since the baseline" in out
    calls = model.requests
    (workdir / "_rules.prompt").write_text("Answer in one word, lower case.", encoding="utf-8")
    code, out, _ = gpo(capsys, "senti.prompt")
    assert "unchanged since the baseline" not in out
    assert model.requests > calls  # measured again with the new partial
    # Named itself (the hook passes a staged partial), the partial checks its prompt.
    code, data = gpo_json(capsys, "_rules.prompt")
    assert [r["prompt"] for r in data["results"]] == ["senti.prompt"]
