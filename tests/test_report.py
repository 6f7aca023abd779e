"""The HTML report: structure, escaping, one chart point per step, and a real browser.

Unit tests render hand-built trajectories. The end-to-end tests run
`gpo optimize` and `gpo report` through the CLI against scripted models behind
the test model server, then open the page in headless Chromium over the
DevTools protocol: it must lay out, show one dev point per step, and log no
console message, exception, CSP violation or failed load.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpo_engine.evaluate import confidence_interval
from gpo_engine.offer import Score, Verdict
from gpo_engine.trajectory import CandidateRecord, StepRecord, Trajectory
from gpo_server.cli import main
from gpo_server.report_html import build_report, render_html
from tests.model_server import ModelServer
from tests.prompt_files import write_prompt

# ------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich wraps stderr at 80 columns; messages are checked whole.
    monkeypatch.setenv("COLUMNS", "500")



class Tags(HTMLParser):
    """Every start tag with its attributes, plus the page's text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, *classes: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags
                if t == tag and set(classes) <= set(a.get("class", "").split())]


def _trajectory(steps: int = 3, total: int = 4, initial: str = "Say {{x}}") -> Trajectory:
    t = Trajectory("k", "/w/p.prompt", total, initial, 25.0, 4,
                   dev_outcomes={initial: {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}})
    current = initial
    for s in range(steps):
        better = f"Step {s} says {{{{x}}}}"
        cands = (CandidateRecord(better, 2, "scored", 50.0 + 10 * s, 4),
                 CandidateRecord(f"worse {s} {{{{x}}}}", 3, "raced_out", 0.0, 2),
                 CandidateRecord("dropped", -1, "lost_variable", detail="lost {{x}}"))
        t.steps.append(StepRecord(s, 30 - 5 * s, current, 50.0, cands, better, 50.0 + 10 * s))
        t.dev_outcomes[better] = {"a": 1.0, "b": 1.0, "c": float(s > 0), "d": 0.0}
        current = better
    return t


def _report(t: Trajectory, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "task_model": "openai/task", "optimizer_model": "openai/opt", "metric": "exact",
        "budgets": [30, 25, 20, 15][: t.total_steps], "dev": {},
        "test": {text: Score(40.0, 10, 20.0, 60.0) for text, _, _ in t.history()},
        "file_text": t.initial, "suggestion": (t.steps[-1].chosen, t.steps[-1].chosen_dev)
        if t.steps else None, "budget_now": 15,
        "spend": [("the run", {"calls": 7, "cache_hits": 2, "failures": 0, "prompt_tokens": 90,
                               "completion_tokens": 12, "cost": 0.0123, "unknown_price": False,
                               "per_model": {"openai/task": {"calls": 7, "cost": 0.0123}}})]}
    args.update(kw)
    if isinstance(args.get("guard"), dict):  # the verdict as `gpo optimize --json` writes it
        args["guard"] = Verdict.from_json(args["guard"])
    return build_report(t, **args)


# ------------------------------------------------------------------ unit tests


def test_chart_has_one_point_per_step_and_the_start() -> None:
    page = Tags(render_html(_report(_trajectory(steps=3, total=4))))
    dev_steps = page.having("circle", "point", "dev", "step")
    assert [a["data-step"] for a in dev_steps] == ["1", "2", "3"]
    assert len(page.having("circle", "point", "dev", "start")) == 1
    assert len(page.having("circle", "point", "test", "step")) == 3
    assert len(page.having("line", "interval", "dev")) == 4  # start + 3 steps
    # The budget curve covers the planned run, not only the steps done.
    assert [a["data-step"] for a in page.having("rect", "budget")] == ["1", "2", "3", "4"]
    # Scored and raced-out candidates are drawn; a dropped one has no score to draw.
    assert len(page.having("circle", "candidate")) == 6


def test_page_lists_every_candidate_with_status_score_and_distance() -> None:
    page = render_html(_report(_trajectory(steps=2)))
    tags = Tags(page)
    rows = tags.having("tr", "candidate")
    assert len(rows) == 6
    assert len(tags.having("tr", "chosen")) == 2
    text = "".join(tags.text)
    for status in ("scored", "raced_out", "lost_variable"):
        assert status in text
    assert "50.0% (n=4)" in text and "0.0% (n=2)" in text
    assert "Candidates by status: lost_variable 2, raced_out 2, scored 2." in text


def test_test_points_only_where_test_is_known() -> None:
    t = _trajectory(steps=2)
    known = {t.initial: Score(10.0, 10, 2.0, 30.0)}
    page = Tags(render_html(_report(t, test=known)))
    assert len(page.having("circle", "point", "test")) == 1
    page = Tags(render_html(_report(t, test={})))
    assert page.having("circle", "point", "test") == []
    assert len(page.having("circle", "point", "dev")) == 3


def test_intervals_come_from_recorded_outcomes() -> None:
    t = _trajectory(steps=1)
    report = _report(t)
    low, high = confidence_interval([1.0, 0.0, 0.0, 0.0])
    assert report.points[0].dev == Score(25.0, 4, low, high)
    # A prompt without recorded outcomes keeps its recorded score as a point interval.
    t.dev_outcomes.clear()
    assert _report(t).points[1].dev == Score(50.0, 4, 50.0, 50.0)
    # Scores the caller computed win over the record.
    given = Score(33.0, 9, 10.0, 60.0)
    assert _report(t, dev={t.initial: given}).points[0].dev == given


def test_every_piece_of_user_text_is_escaped() -> None:
    evil = '<script>alert("x")</script> & <b>"quoted"</b> {{x}}'
    t = _trajectory(steps=1, initial=evil)
    t.path = "/w/<img src=x onerror=alert(1)>.prompt"
    t.steps[0] = StepRecord(0, 30, evil, 50.0, (
        CandidateRecord(evil + " more", 1, "scored", 60.0, 4),
        CandidateRecord("<i>x</i>", -1, "leak<marquee>", detail='copied "<expected>"')),
        evil + " more", 60.0, message="<u>kept</u>")
    t.dev_outcomes[evil + " more"] = {"a": 1.0}
    page = render_html(_report(t, task_model="m<&>", optimizer_model='o"x',
                               metric="<m>", suggestion=(evil + " more", 60.0)))
    for raw in ("<script", '<b>"quoted', "<marquee", "<img", "<i>", "<u>", "<expected>", "<m>",
                "m<&>"):
        assert raw not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'class="status leak&lt;marquee&gt;"' in page
    assert "<title>gpo report: /w/&lt;img" in page
    # Parsing finds only the tags this module writes.
    allowed = {"html", "head", "meta", "link", "title", "style", "body", "main", "h1", "h2",
               "h3", "p", "code", "div", "b", "span", "br", "section", "svg", "line", "text",
               "rect", "polyline", "polygon", "circle", "table", "tr", "th", "td", "pre"}
    assert {tag for tag, _ in Tags(page).tags} <= allowed


def test_page_is_self_contained() -> None:
    page = render_html(_report(_trajectory()))
    urls = re.findall(r"https?://[^\s\"'<>]+", page)
    assert urls == ["http://www.w3.org/2000/svg"]  # a namespace name, never fetched
    assert "<script" not in page and " src=" not in page
    assert "default-src 'none'" in page


def test_suggestion_diff_and_its_absence() -> None:
    t = _trajectory(steps=2)
    tags = Tags(render_html(_report(t)))
    assert [a["class"] for a in tags.having("span", "del")] == ["del"]
    assert [a["class"] for a in tags.having("span", "add")] == ["add"]
    text = "".join(tags.text)
    assert "-Say {{x}}" in text and "+Step 1 says {{x}}" in text
    assert "3 of 15 words changed" in text
    page = render_html(_report(t, suggestion=None))
    assert 'id="no-suggestion"' in page and 'id="diff"' not in page


def test_the_overfitting_guard_verdict_is_shown() -> None:
    t = _trajectory(steps=2)
    worse = {"verdict": "worse", "delta": -30.0, "p_value": 0.012, "n": 10}
    text = "".join(Tags(render_html(_report(t, guard=worse))).text)
    assert ("Overfitting guard: significantly worse than the file's text on held-out test rows: "
            "gpo optimize withholds it (test -30.0 pts, p = 0.012).") in text
    tiny = {"verdict": "ok", "delta": 50.0, "p_value": 0.0}
    assert ("significantly better than the file's text on held-out test rows (test +50.0 pts, "
            "p &lt; 0.001)") in render_html(_report(t, guard=tiny))
    ok = {"verdict": "ok", "delta": 5.0, "p_value": 0.5}
    assert ("not significantly different from the file's text on held-out test rows (test "
            "+5.0 pts") in "".join(Tags(render_html(_report(t, guard=ok))).text)
    untested = {"verdict": "untested", "reason": "no <test> rows"}
    page = render_html(_report(t, guard=untested))
    assert "not checked on test: no &lt;test&gt; rows" in page
    assert 'id="guard"' not in render_html(_report(t))


def test_spend_lists_models_and_total() -> None:
    text = "".join(Tags(render_html(_report(_trajectory()))).text)
    assert "the run" in text and "openai/task" in text and "$0.0123" in text
    assert "No spend recorded" in "".join(Tags(render_html(_report(_trajectory(), spend=[])))
                                          .text)


def test_a_run_with_no_finished_step_still_renders() -> None:
    page = Tags(render_html(_report(_trajectory(steps=0))))
    assert page.having("circle", "point", "dev", "step") == []
    assert len(page.having("circle", "point", "dev", "start")) == 1
    assert "No step has finished yet." in "".join(page.text)


def test_report_without_a_run_fails_with_advice(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    prompt = _write_task(tmp_path / "p")
    code = main(["report", str(prompt), "--cache-dir", str(tmp_path / "c"), "--no-test"])
    assert code == 1
    assert "run `gpo optimize" in capsys.readouterr().err


# ------------------------------------------------------------------ a real run

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Egypt": "Cairo",
            "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
            "Spain": "Madrid", "Germany": "Berlin", "Greece": "Athens", "Cuba": "Havana"}
PROPOSALS = ["<START>Name the capital city of the country.<END>",
             '<START>Name the capital <b>city</b> & "nothing" else.<END>',
             "<START><script>alert(1)</script> Country name?<END>"]
STEPS = 3


def _answer(messages: list[dict[str, Any]]) -> str:
    """Optimizer: the proposals in turn. Task model: right only when asked for a capital."""
    prompt = str(messages[-1].get("content", ""))
    if "<START>" in prompt:
        index = sum(ord(ch) for ch in prompt) % len(PROPOSALS)
        return PROPOSALS[index]
    if "capital" not in prompt.lower():
        return "A lovely place."
    return next((city for country, city in CAPITALS.items() if country in prompt), "?")


def _write_task(folder: Path) -> Path:
    splits = ["train", "dev", "test"]
    return write_prompt(
        folder, "capitals",
        f"---\nmodel: openai/scripted\ngpo.metric: contains\ngpo.steps: {STEPS}\n"
        "gpo.candidates: 3\ngpo.batch_size: 4\ngpo.race_size: 2\n---\n"
        "Tell me about {{country}}.\nAnswer:\n",
        [{"country": c, "expected": city, "split": splits[i % 3]}
         for i, (c, city) in enumerate(CAPITALS.items())])


class _ServerThread:
    """The test model server on its own event loop, so the CLI can call asyncio.run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = ModelServer(answer=_answer)

    def __enter__(self) -> ModelServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`gpo optimize` then `gpo report` through the CLI, against the test model server."""
    root = tmp_path_factory.mktemp("real-run")
    prompt, cache, html = _write_task(root / "task"), root / "cache", root / "report.html"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "test")
        mp.setenv("GPO_CACHE_DIR", str(cache))
        with _ServerThread() as server:
            common = ["--api-base", server.api_base, "--cache-dir", str(cache)]
            assert main(["optimize", str(prompt), *common, "--json"]) == 0
            before = server.requests
            assert main(["report", str(prompt), *common, "-o", str(html)]) == 0
            report_requests = server.requests - before
        # The server is gone from here on: later commands live on the response cache.
        yield {"prompt": prompt, "cache": cache, "html": html, "common": common,
               "report_requests": report_requests}


def test_report_of_a_real_run(real_run: dict[str, Any]) -> None:
    page = real_run["html"].read_text(encoding="utf-8")
    tags = Tags(page)
    assert len(tags.having("circle", "point", "dev", "step")) == STEPS
    assert len(tags.having("circle", "point", "test", "step")) == STEPS
    assert "<script" not in page and "<b>city" not in page
    text = "".join(tags.text)
    assert "openai/scripted" in text and "model calls made for this report" in text
    # What the optimization itself spent is recorded in its trajectory and shown too.
    assert "the optimization run" in text
    # The file's text is 0% on dev; a capital-asking candidate is 100%: a diff is offered.
    assert 'id="diff"' in page and "+Name the capital city of the country." in text
    # +100 pts on three test rows is p = 0.125: not a significant difference, and said so.
    assert ("Overfitting guard: not significantly different from the file's text on held-out "
            "test rows (test +100.0 pts, p = 0.125)") in text
    # Test scores of the per-step prompts cost task-model calls; dev comes from the record.
    assert real_run["report_requests"] > 0


def test_report_default_output_and_rerun_from_cache(real_run: dict[str, Any],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    prompt = real_run["prompt"]
    # No server now: everything the report needs is recorded or in the response cache.
    code = main(["report", str(prompt), *real_run["common"], "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    written = prompt.with_name("capitals.report.html")
    assert out["report"] == str(written) and out["steps_done"] == STEPS
    first, again = real_run["html"].read_text(encoding="utf-8"), written.read_text(encoding="utf-8")
    # The same page, except that this time the report's own calls all came from the cache.
    assert again.split("<h2>Spend</h2>")[0] == first.split("<h2>Spend</h2>")[0]
    total = re.search(r"<b>total</b></td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)",
                      again.split("model calls made for this report")[1])
    assert total is not None and total.group(1) == "0" and int(total.group(2)) > 0


# ------------------------------------------------------------------ headless Chromium

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--remote-debugging-port=0"]
PAGE_PROBE = """JSON.stringify({
  devPoints: document.querySelectorAll('#chart circle.point.dev.step').length,
  startPoints: document.querySelectorAll('#chart circle.point.dev.start').length,
  chartHeight: document.getElementById('chart').getBoundingClientRect().height,
  chartWidth: document.getElementById('chart').getBoundingClientRect().width,
  pointBox: (() => { const c = document.querySelector('#chart circle.point.dev.step');
                     return c ? c.getBBox().width : 0; })(),
  title: document.title,
})"""


async def _open_in_chromium(url: str) -> tuple[dict[str, Any], list[str]]:
    """Load `url` in headless Chromium over the DevTools protocol.

    Returns the page probe's result and every console message, uncaught
    exception and browser log entry (CSP violations, failed loads) seen.
    """
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            return await asyncio.wait_for(_drive(proc, url), 60)
        finally:
            proc.kill()
            await proc.wait()


async def _drive(proc: asyncio.subprocess.Process, url: str) -> tuple[dict[str, Any], list[str]]:
    assert proc.stderr is not None
    port = None
    while port is None:
        line = (await proc.stderr.readline()).decode()
        if not line:
            raise RuntimeError("chromium exited before opening its DevTools port")
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        port = int(found.group(1)) if found else None
    problems: list[str] = []
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with http.ws_connect(page_ws, max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))
            pending: dict[int, asyncio.Future[Any]] = {}
            loaded = asyncio.Event()

            async def reader() -> None:
                async for msg in ws:
                    data = json.loads(msg.data)
                    if "id" in data and data["id"] in pending:
                        pending.pop(data["id"]).set_result(data)
                    method = data.get("method")
                    params = data.get("params", {})
                    if method == "Runtime.consoleAPICalled":
                        args = " ".join(str(a.get("value", a.get("description", "")))
                                        for a in params.get("args", []))
                        problems.append(f"console.{params.get('type')}: {args}")
                    elif method == "Runtime.exceptionThrown":
                        problems.append(f"exception: {params['exceptionDetails']}")
                    elif method == "Log.entryAdded":
                        entry = params["entry"]
                        problems.append(f"log {entry['level']}: {entry['text']}")
                    elif method == "Page.loadEventFired":
                        loaded.set()

            async def call(method: str, **params: Any) -> Any:
                number = next(ids)
                pending[number] = asyncio.get_running_loop().create_future()
                await ws.send_json({"id": number, "method": method, "params": params})
                answer = await pending[number]
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

            task = asyncio.create_task(reader())
            for domain in ("Page", "Runtime", "Log"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            await loaded.wait()
            probe = await call("Runtime.evaluate", expression=PAGE_PROBE, returnByValue=True)
            await asyncio.sleep(0.3)  # late log entries (a blocked fetch) arrive after load
            task.cancel()
    return json.loads(probe["result"]["value"]), problems


@needs_chromium
def test_chromium_renders_the_report_with_no_console_errors(real_run: dict[str, Any]) -> None:
    probe, problems = asyncio.run(_open_in_chromium(real_run["html"].as_uri()))
    assert problems == []
    assert probe["devPoints"] == STEPS and probe["startPoints"] == 1
    assert probe["chartWidth"] > 300 and probe["chartHeight"] > 100
    assert probe["pointBox"] > 0  # the SVG was laid out, not just parsed
    assert probe["title"].startswith("gpo report: ")


@needs_chromium
def test_chromium_probe_does_see_console_errors(tmp_path: Path) -> None:
    """The check above is only worth something if it catches errors: show that it does."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
        "<svg id='chart'><circle class='point dev step' r='3'/></svg>"
        "<img src='data:image/png;base64,AAAA'>"
        "<script>console.error('boom'); nosuchfn();</script></body></html>",
        encoding="utf-8")
    probe, problems = asyncio.run(_open_in_chromium(bad.as_uri()))
    assert probe["devPoints"] == 1
    assert any("console.error: boom" in p for p in problems)
    assert any("exception" in p and "nosuchfn" in p for p in problems)
    assert any("Content Security Policy" in p for p in problems)


def test_chromium_absence_is_a_skip_not_a_pass() -> None:
    # Guards the skip condition itself: CI installs chromium, so there it must run.
    if os.environ.get("CI") == "true":
        assert CHROMIUM is not None, "CI must install Debian's chromium (apt-get install chromium)"
