"""The daemon, driven through gpo_server.client over a real Unix socket in a temp dir.

Models are the fault-injection test server (model `openai/x` at the daemon's
api_base); steps, candidates and example sets are tiny so each test takes
seconds. The daemon runs in the test's event loop (`serve`), except where a
separate process matters (the CLI, start on demand, SIGKILL: see
test_daemon_restart.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from model_server import Fault, ModelServer

from gpo_engine.events import StepFinished
from gpo_engine.llm import LLM
from gpo_engine.task import Task, load_task, open_store
from gpo_engine.trajectory import trajectory_key
from gpo_server import runtime
from gpo_server.client import DaemonClient, DaemonError, event_object
from gpo_server.daemon import DaemonConfig, make_app, serve
from gpo_server.jobs import RetryPolicy, llm_opener
from gpo_server.prompt_state import parse_state
from tests.prompt_files import write_prompt

REVIEWS = [
    ("Loved every minute of it.", "positive", "train"),
    ("Terrible, never again.", "negative", "train"),
    ("Great value, fast shipping.", "positive", "train"),
    ("The food was cold.", "negative", "train"),
    ("Wonderful staff and views.", "positive", "dev"),
    ("Rude waiter, slow service.", "negative", "dev"),
    ("Best purchase this year.", "positive", "dev"),
    ("Broke after one day.", "negative", "dev"),
    ("A delight from start to end.", "positive", "test"),
    ("Awful smell in the room.", "negative", "test"),
    ("Would recommend to friends.", "positive", "test"),
    ("Waste of money.", "negative", "test"),
]
EXPECTED = {review: label for review, label, _ in REVIEWS}


def answer(messages: list[dict[str, Any]]) -> str:
    """Deterministic model: rewrites prompts when asked to, and answers a review
    correctly only when the prompt says "carefully" (so optimizing helps)."""
    content = str(messages[-1]["content"])
    if "<START>" in content:
        tag = hashlib.sha256(content.encode()).hexdigest()[:4]
        return f"<START>Decide carefully ({tag}).\nReview: {{{{review}}}}\nSentiment:<END>"
    found = re.search(r"Review: (.*)", content)
    review = found.group(1).strip() if found else ""
    return EXPECTED.get(review, "positive") if "carefully" in content else "positive"


def write_task(folder: Path, name: str = "sentiment", steps: int = 3, marker: str = "",
               extra: str = "") -> Path:
    return write_prompt(
        folder, name,
        "---\nmodel: openai/x\n"
        f"gpo.steps: {steps}\ngpo.candidates: 2\ngpo.batch_size: 2\ngpo.racing: false\n"
        "gpo.max_tokens: 8\ngpo.budget: {initial: 30, final: 10, decay: cosine}\n"
        f"{extra}---\n{marker}Review: {{{{review}}}}\nSentiment:\n",
        [{"review": r, "expected": e, "split": s} for r, e, s in REVIEWS])


pytestmark = pytest.mark.usefixtures("api_key")


@pytest.fixture
def rt_dir(short_dir: Path) -> Path:
    return short_dir / "rt"


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    async with ModelServer(answer=answer) as server:
        yield server


def config_for(rt_dir: Path, model: ModelServer, **changes: Any) -> DaemonConfig:
    values: dict[str, Any] = {"api_base": model.api_base, "idle_timeout": 0,
                              "retry": RetryPolicy(base=0.1, cap=0.5, attempts=1000)}
    values.update(changes)
    return DaemonConfig(runtime_dir=rt_dir, **values)


def retrying(config: DaemonConfig, retries: int) -> Callable[[Task], LLM]:
    """Opens a task's model layer as the daemon does, with `retries` retries per call."""
    def open_llm(task: Task) -> LLM:
        llm = llm_opener(config.cache_dir, config.api_base)(task)
        llm.max_retries = retries
        return llm
    return open_llm


@contextlib.asynccontextmanager
async def daemon(config: DaemonConfig, roots: tuple[Path, ...] = (),
                 retries: int = 0) -> AsyncIterator[tuple[DaemonClient, Any]]:
    """`serve` in this loop, its model calls retried `retries` times (none: a fault
    is seen at once); yields a connected client and the serving task."""
    ready: asyncio.Future[runtime.Status] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, ready=ready.set_result,
                                     open_llm=retrying(config, retries)))
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what stopped it
    client = DaemonClient.for_status(ready.result(), config.runtime_dir)
    try:
        if roots:
            await client.register_roots(roots)
        yield client, task
    finally:
        if not task.done():
            with contextlib.suppress(DaemonError):
                await client.shutdown()
            await asyncio.wait_for(task, 30)
        await client.close()


async def events_until(client: DaemonClient, job_id: str, done: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async for event in client.events(job_id):
        seen.append(event)
        if done(event):
            break
    return seen


# ---------------------------------------------------------------- runtime and safety


async def test_runtime_dir_socket_and_status_file_are_private(
        rt_dir: Path, model: ModelServer) -> None:
    async with daemon(config_for(rt_dir, model)) as (client, _):
        assert stat.S_IMODE(rt_dir.stat().st_mode) == 0o700
        sock = rt_dir / runtime.SOCKET_NAME
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE((rt_dir / runtime.STATUS_NAME).stat().st_mode) == 0o600
        status = runtime.read_status(rt_dir)
        assert status is not None and status.pid == os.getpid()
        assert status.address == f"unix:{sock}"
        health = await client.health()
        assert health["ok"] and health["pid"] == os.getpid()
        assert health["version"] == status.version
        assert health["api_base"] == model.api_base
    # A clean exit removes what would otherwise look like a running daemon.
    assert runtime.read_status(rt_dir) is None and not sock.exists()


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o770])
def test_a_shared_runtime_dir_is_refused_and_never_chmoded(
        tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gpo_server.cli import main

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)  # like /tmp: gpo did not make it
    monkeypatch.setenv("GPO_RUNTIME_DIR", str(shared))
    for argv in (["daemon", "status"], ["daemon", "start"], ["daemon", "jobs"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        words = " ".join(err.split())
        assert "is writable by other users" in words and "set GPO_RUNTIME_DIR" in words
        assert stat.S_IMODE(shared.stat().st_mode) == mode
    with pytest.raises(runtime.RuntimeDirError):
        runtime.ensure_runtime_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == mode


def test_a_daemon_start_failure_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    prompt = write_task(tmp_path / "ws", steps=1)
    env = {**os.environ, "GPO_RUNTIME_DIR": str(shared), "COLUMNS": "400"}
    for argv in (["daemon", "run"], ["optimize", str(prompt), "--daemon", "--yes"]):
        done = subprocess.run([sys.executable, "-m", "gpo_server.cli", *argv], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "RuntimeDirError" not in done.stderr
        assert "is writable by other users" in done.stderr.strip().splitlines()[-1]
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_loose_runtime_dir_is_tightened_to_0700(rt_dir: Path) -> None:
    rt_dir.mkdir(parents=True, mode=0o755)
    os.chmod(rt_dir, 0o755)
    runtime.ensure_runtime_dir(rt_dir)
    assert stat.S_IMODE(rt_dir.stat().st_mode) == 0o700


def test_too_long_runtime_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(runtime.RuntimeDirError, match="too long"):
        runtime.ensure_runtime_dir(tmp_path / ("x" * 120))


def test_stale_status_file_with_dead_pid_is_removed(rt_dir: Path) -> None:
    root = runtime.ensure_runtime_dir(rt_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runtime.write_status(root, runtime.Status(dead.pid, "unix:/nowhere", "0.1.0", 0.0))
    assert runtime.read_status(root) is not None
    assert runtime.live_status(root) is None
    assert not (root / runtime.STATUS_NAME).exists()


async def test_second_daemon_in_the_same_dir_refuses_to_start(
        rt_dir: Path, model: ModelServer) -> None:
    async with daemon(config_for(rt_dir, model)) as (client, _):
        with pytest.raises(runtime.AlreadyRunning):
            await serve(config_for(rt_dir, model))
        assert (await client.health())["ok"]  # the first one is untouched


async def test_origin_header_is_refused(rt_dir: Path, model: ModelServer) -> None:
    async with daemon(config_for(rt_dir, model)) as (client, _):
        with pytest.raises(DaemonError) as caught:
            await client.call("GET", "/v1/health", headers={"Origin": "http://evil.example"})
        assert caught.value.status == 403 and caught.value.code == "origin_refused"


async def test_tcp_mode_needs_the_token_from_a_private_file(
        rt_dir: Path, model: ModelServer) -> None:
    async with daemon(config_for(rt_dir, model, tcp=True)) as (client, _):
        assert client.address.startswith("http://127.0.0.1:")
        token_file = rt_dir / runtime.TOKEN_NAME
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert (await client.health())["ok"]  # for_status read the token
        async with DaemonClient(client.address) as stranger:
            with pytest.raises(DaemonError) as caught:
                await stranger.health()
            assert caught.value.status == 401
        async with DaemonClient(client.address, token="wrong") as guesser:
            with pytest.raises(DaemonError):
                await guesser.health()
    assert not token_file.exists()


async def test_paths_outside_the_workspace_roots_are_refused(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    inside = write_task(tmp_path / "ws")
    outside = write_task(tmp_path / "elsewhere")
    async with daemon(config_for(rt_dir, model)) as (client, _):
        with pytest.raises(DaemonError) as caught:
            await client.create_job(inside)
        assert caught.value.status == 403 and "no workspace root" in caught.value.message
        await client.register_roots([tmp_path / "ws"])
        link = tmp_path / "ws" / "link.prompt"
        link.symlink_to(outside)
        sneaky = write_task(tmp_path / "ws" / "sub", name="sneaky",
                            extra="gpo.examples: ../../elsewhere/sentiment.examples.jsonl\n")
        for path in (outside, link, tmp_path / "ws" / ".." / "elsewhere" / "sentiment.prompt",
                     sneaky):
            for call in (client.create_job(path), client.prompt_state(path),
                         client.evaluate(path)):
                with pytest.raises(DaemonError) as caught:
                    await call
                assert caught.value.status == 403, path
                assert caught.value.code == "outside_roots"
        state = await client.prompt_state(inside)  # inside is fine
        assert state["path"] == str(inside.resolve())
        with pytest.raises(DaemonError) as caught:
            await client.register_roots(["relative/dir"])
        assert caught.value.status == 400


async def test_an_example_set_out_of_the_roots_is_refused_before_it_is_read(
        rt_dir: Path, model: ModelServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gpo_engine.task

    read: list[Path] = []
    real = gpo_engine.task.load_examples

    def recording(path: Path, *args: Any, **kwargs: Any) -> Any:
        read.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(gpo_engine.task, "load_examples", recording)
    secret = tmp_path / "secret" / "shadow"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"review": "x", "expected": "y", "split": "dev"}) + "\n")
    linked = write_task(tmp_path / "ws" / "a", name="c")
    (linked.parent / "c.examples.jsonl").unlink()
    (linked.parent / "c.examples.jsonl").symlink_to(secret)
    named = write_task(tmp_path / "ws" / "b", extra=f"gpo.examples: {secret}\n")
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        for path in (linked, named):
            for call in (client.create_job(path), client.prompt_state(path),
                         client.evaluate(path)):
                with pytest.raises(DaemonError) as caught:
                    await call
                assert (caught.value.status, caught.value.code) == (403, "outside_roots")
                assert "the example set must be inside a registered workspace root" in \
                    caught.value.message
    assert read == []  # refused without reading a byte of it


# ---------------------------------------------------------------- malformed requests


@pytest.mark.parametrize(("method", "route", "body", "status", "code"), [
    ("POST", "/v1/jobs", b"{not json", 400, "bad_json"),
    ("POST", "/v1/jobs", b"\xff\xfe", 400, "bad_json"),
    ("POST", "/v1/jobs", b"[1, 2]", 400, "bad_request"),
    ("POST", "/v1/jobs", b"[" * 5000 + b"]" * 5000, 400, "bad_json"),
    ("POST", "/v1/evaluate", b'{"path": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "bad_json"),
    ("POST", "/v1/jobs", b"{}", 400, "missing_field"),
    ("POST", "/v1/jobs", b'{"path": 42}', 400, "wrong_type"),
    ("POST", "/v1/jobs", b'{"path": "/x.prompt", "restart": "yes"}', 400, "wrong_type"),
    ("POST", "/v1/jobs", b'{"path": "rel.prompt"}', 400, "bad_path"),
    ("POST", "/v1/jobs", b'{"path": "WS", "overrides": [1]}', 400, "wrong_type"),
    ("POST", "/v1/jobs", b'{"path": "WS", "overrides": {"colour": 1}}', 400, "bad_settings"),
    ("POST", "/v1/jobs", b'{"path": "WS", "overrides": {"steps": 0}}', 400, "bad_settings"),
    ("POST", "/v1/jobs", b'{"path": "WS", "overrides": {"steps": true}}', 400, "bad_settings"),
    ("POST", "/v1/jobs", b'{"path": "WSmissing.prompt"}', 404, "file_not_found"),
    ("POST", "/v1/roots", b'{"roots": "/tmp"}', 400, "wrong_type"),
    ("POST", "/v1/roots", b'{"roots": [3]}', 400, "wrong_type"),
    ("POST", "/v1/evaluate", b'{"path": "WS", "splits": ["validation"]}', 400, "bad_request"),
    ("POST", "/v1/evaluate", b'{"path": "WS", "text": 7}', 400, "wrong_type"),
    ("POST", "/v1/evaluate", b'{"path": "WS", "text": "{{#if x}}oops"}', 422, "bad_template"),
    ("GET", "/v1/jobs/nope", None, 404, "unknown_job"),
    ("POST", "/v1/jobs/nope/cancel", None, 404, "unknown_job"),
    ("GET", "/v1/jobs/nope/events", None, 404, "unknown_job"),
    ("GET", "/v1/prompts", None, 400, "missing_field"),
    ("GET", "/v1/nothing-here", None, 404, "not_found"),
    ("DELETE", "/v1/health", None, 405, "method_not_allowed"),
])
async def test_malformed_requests_get_a_4xx_json_error(
        rt_dir: Path, model: ModelServer, tmp_path: Path, method: str, route: str,
        body: bytes | None, status: int, code: str) -> None:
    prompt = write_task(tmp_path / "ws")
    if body is not None:
        body = body.replace(b'"WS', json.dumps(str(prompt))[:-1].encode())
        body = body.replace(b'.promptmissing.prompt"', b'.missing.prompt"')
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        with pytest.raises(DaemonError) as caught:
            await client.call(method, route, raw=body)
        assert (caught.value.status, caught.value.code) == (status, code), caught.value.message
        assert caught.value.message
        assert (await client.health())["ok"]  # and it keeps serving


async def test_huge_body_is_413_and_the_daemon_keeps_serving(
        rt_dir: Path, model: ModelServer) -> None:
    async with daemon(config_for(rt_dir, model, max_body=4096)) as (client, _):
        huge = json.dumps({"path": "/x.prompt", "pad": "x" * 100_000}).encode()
        with pytest.raises(DaemonError) as caught:
            await client.call("POST", "/v1/jobs", raw=huge)
        assert caught.value.status == 413 and caught.value.code == "body_too_large"
        assert (await client.health())["ok"]


async def test_broken_prompt_file_is_422_with_located_problems(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    prompt = write_task(tmp_path / "ws")
    prompt.write_text("---\nmodel: openai/x\ngpo.steps: [oops\n---\nReview: {{review}}\n")
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        with pytest.raises(DaemonError) as caught:
            await client.create_job(prompt)
        assert caught.value.status == 422 and caught.value.code == "invalid_source"
        problems = caught.value.details["problems"]
        assert problems and problems[0]["path"].endswith("sentiment.prompt")
        assert problems[0]["line"] >= 1


# ---------------------------------------------------------------- jobs


async def test_optimize_a_file_watch_its_events_and_read_its_state(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    prompt = write_task(tmp_path / "ws")
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        job, created = await client.create_job(prompt)
        assert created and job["state"] in ("queued", "running")
        events = [e async for e in client.events(job["id"])]
        kinds = [e["kind"] for e in events]
        assert kinds[0] == "state" and kinds[-1] == "end"
        assert kinds.count("step_finished") == 3
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        # Every event says T, the candidates' too (an editor shows "step t/T" from any).
        assert {e["total_steps"] for e in events} == {3}
        assert "candidate_scored" in kinds
        assert isinstance(event_object(next(e for e in events if e["kind"] == "step_finished")),
                          StepFinished)
        done = await client.job(job["id"])
        assert done["state"] == "finished" and done["step"] == 3
        assert done["result"]["best_dev"]["score"] == 100.0
        assert done["spend"]["calls"] == model.requests > 0
        assert [j["id"] for j in await client.jobs()] == [job["id"]]
        # A late subscriber gets the whole history, then the stream ends.
        replay = [e async for e in client.events(job["id"])]
        assert [e["seq"] for e in replay] == [e["seq"] for e in events]

        state = await client.prompt_state(prompt)
        assert state["version"] == 1 and state["steps_done"] == 3 and state["total_steps"] == 3
        assert state["job"]["status"] == "finished" and state["job"]["id"] == job["id"]
        assert state["history"][0] == 0.0 or state["history"][0] == 50.0
        assert state["scored"][0]["text"] == state["text"]
        assert state["current"]["dev"]["n"] == 4
        suggestion = state["suggestion"]
        assert suggestion is not None and "carefully" in suggestion["text"]
        assert suggestion["dev"]["score"] == 100.0 and suggestion["gain"] > 0
        assert suggestion["distance"] <= state["budget"] == suggestion["budget"]
        assert suggestion["diff"].startswith("---") and "+Decide carefully" in suggestion["diff"]
        assert suggestion["test"] == done["result"]["best_test"]
        # Re-optimizing a finished file is a new job that pays nothing: all cached.
        before = model.requests
        again, created = await client.create_job(prompt)
        assert created and again["id"] != job["id"]
        assert (await client.wait(again["id"]))["state"] == "finished"
        assert model.requests == before


async def test_two_clients_optimizing_the_same_file_get_the_same_job(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    prompt = write_task(tmp_path / "ws")
    model.latency = 0.05
    config = config_for(rt_dir, model)
    async with daemon(config, roots=(tmp_path / "ws",)) as (first, _), \
            DaemonClient(first.address) as second:
        (a, made_a), (b, made_b) = await asyncio.gather(first.create_job(prompt),
                                                       second.create_job(prompt))
        assert a["id"] == b["id"]
        assert sorted([made_a, made_b]) == [False, True]
        third, made = await second.create_job(prompt, overrides={"steps": 1})
        assert third["id"] == a["id"] and not made
        assert len(await first.jobs()) == 1
        await first.cancel(a["id"])


async def test_cancel_stops_the_job_and_keeps_finished_steps(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    prompt = write_task(tmp_path / "ws", steps=6)
    model.latency = 0.05
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        job, _ = await client.create_job(prompt)
        await events_until(client, job["id"], lambda e: e["kind"] == "step_finished")
        cancelled = await client.cancel(job["id"])
        assert cancelled["state"] == "cancelled"
        events = [e async for e in client.events(job["id"])]
        assert events[-1]["kind"] == "end" and events[-1]["state"] == "cancelled"
        task = load_task(prompt)
        saved = open_store().load(trajectory_key(task.fingerprint()))
        assert saved is not None and saved.steps_done >= 1
        # The same file can be optimized again right away: it resumes.
        resumed, created = await client.create_job(prompt)
        assert created
        await client.wait(resumed["id"])
        started = [e async for e in client.events(resumed["id"]) if e["kind"] == "job_started"]
        assert started[0]["resumed_at"] == saved.steps_done
        assert (await client.health())["ok"]


async def test_evaluate_a_text_against_the_file_examples(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    prompt = write_task(tmp_path / "ws")
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        plain = await client.evaluate(prompt)
        assert plain["dev"]["score"] == 50.0 and plain["dev"]["n"] == 4
        assert plain["test"]["n"] == 4
        better = await client.evaluate(prompt, text="Decide carefully.\nReview: {{review}}\n",
                                       splits=["test"])
        assert better["test"]["score"] == 100.0 and "dev" not in better
        # The file's own text now has a test score in its state, before any job ran.
        state = await client.prompt_state(prompt)
        assert state["current"]["test"]["score"] == 50.0
        assert state["current"]["dev"]["score"] == 50.0
        assert state["job"] is None and state["suggestion"] is None
        # What scoring spent is the file's spend too, job or not.
        usage = state["usage"]
        assert usage["calls"] == model.requests == 12 and usage["prompt_tokens"] > 0
        assert usage["prompt_tokens"] == plain["usage"]["prompt_tokens"] + \
            better["usage"]["prompt_tokens"]


async def test_jobs_and_scoring_open_their_model_layer_through_the_injected_opener(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    """serve(open_llm=...): one factory for the jobs and the scoring routes."""
    prompt = write_task(tmp_path / "ws", steps=1)
    config = config_for(rt_dir, model)
    opened: list[LLM] = []

    def open_llm(task: Task) -> LLM:
        opened.append(retrying(config, 0)(task))
        return opened[-1]

    ready: asyncio.Future[runtime.Status] = asyncio.get_running_loop().create_future()
    served = asyncio.create_task(serve(config, ready=ready.set_result, open_llm=open_llm))
    await asyncio.wait({served, ready}, return_when=asyncio.FIRST_COMPLETED)
    async with DaemonClient.for_status(ready.result(), config.runtime_dir) as client:
        await client.register_roots([tmp_path / "ws"])
        await client.evaluate(prompt, splits=["dev"])
        assert len(opened) == 1 and opened[0].usage.calls == 4
        job, _ = await client.create_job(prompt)
        assert (await client.wait(job["id"]))["state"] == "finished"
        assert len(opened) == 2 and opened[1].usage.calls > 0
        await client.shutdown()
    await asyncio.wait_for(served, 30)


async def test_the_state_answers_for_the_buffers_text(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    """POST /v1/prompts {path, text, measure}: the buffer's scores (measured once, then
    from the daemon's cache) in `current` and `scored`, the suggestion picked against it."""
    prompt = write_task(tmp_path / "ws", steps=1)
    buffer = "Decide carefully.\r\nReview: {{review}}\r\nSentiment:"
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        unmeasured = await client.prompt_state(prompt, buffer)
        assert model.requests == 0
        assert unmeasured["base"] == buffer
        assert unmeasured["text"] == load_task(prompt).prompt.body  # the file, as before
        assert unmeasured["current"] == {"dev": None, "test": None}
        assert unmeasured["scored"] == []
        state = await client.prompt_state(prompt, buffer, measure=True)
        assert model.requests == 8  # 4 dev rows and 4 test rows
        assert state["current"]["dev"]["score"] == 100.0
        assert (state["current"]["test"]["score"], state["current"]["test"]["n"]) == (100.0, 4)
        assert state["scored"] == [{"text": state["base"], "step": 0,
                                    "dev": state["current"]["dev"],
                                    "test": state["current"]["test"]}]
        assert state["usage"]["calls"] == 8
        # Typed, the buffer's scores are in the state itself: nothing for a client to merge.
        typed = parse_state(state)
        assert typed.base == state["base"] and typed.text == unmeasured["text"]
        assert typed.current.dev is not None and typed.current.dev.value == 100.0
        found = typed.lookup(buffer)
        assert found is not None and found.dev == typed.current.dev
        # Measured once: asking again makes no model call.
        again = await client.prompt_state(prompt, buffer, measure=True)
        assert model.requests == 8 and again["current"] == state["current"]
        # The file's own state is untouched by the buffer's scores.
        assert (await client.prompt_state(prompt))["current"]["dev"] is None

        job, _ = await client.create_job(prompt)
        await client.wait(job["id"])
        edited = "Be terse.\nReview: {{review}}\nSentiment:"
        for_file = await client.prompt_state(prompt)
        for_edit = await client.prompt_state(prompt, edited)
        assert "best" not in for_file and "baseline_dev" not in for_file["suggestion"]
        assert parse_state(for_edit).suggestion_for(edited) is not None
        assert for_file["suggestion"]["base"] == for_file["text"] == for_file["base"]
        # Picked against the buffer: its base and distance are the buffer's.
        assert for_edit["suggestion"] is not None
        assert for_edit["suggestion"]["base"] == edited
        assert for_edit["suggestion"]["distance"] <= for_edit["budget"]
        # The job's held-out verdict is about the file's text, not the buffer's.
        assert for_edit["suggestion"]["guard"]["verdict"] == "untested"
        with pytest.raises(DaemonError) as bad:
            await client.prompt_state(prompt, "{{#if}}", measure=True)
        assert (bad.value.status, bad.value.code) == (422, "bad_template")
        with pytest.raises(DaemonError) as wrong:
            await client.call("POST", "/v1/prompts", raw=json.dumps(
                {"path": str(prompt), "text": 3}).encode())
        assert (wrong.value.status, wrong.value.code) == (400, "wrong_type")


async def test_a_score_measured_with_another_model_is_not_the_files_score(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    prompt = write_task(tmp_path / "ws")
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        other = await client.evaluate(prompt, overrides={"model": "openai/other"})
        assert other["model"] == "openai/other" and other["dev"]["n"] == 4
        # The file's model (openai/x) has not been measured: nothing to show yet.
        state = await client.prompt_state(prompt)
        assert state["task_model"] == "openai/x"
        assert state["current"]["dev"] is None and state["current"]["test"] is None


# ---------------------------------------------------------------- outages


def outage(kind: str) -> Fault:
    return {"500": Fault(status=500), "429": Fault(status=429, retry_after="0"),
            "timeout": Fault(hang=True)}[kind]


@pytest.mark.parametrize(("kind", "state", "reason"), [
    ("500", "failing", "server"),
    ("429", "waiting", "rate_limit"),
    ("timeout", "failing", "timeout"),
])
async def test_model_outage_marks_the_job_and_other_jobs_keep_running(
        rt_dir: Path, model: ModelServer, tmp_path: Path, kind: str, state: str,
        reason: str) -> None:
    down = {"on": True}

    def faults(_index: int, body: dict[str, Any]) -> Fault | None:
        hit = any("ALPHA" in str(m.get("content")) for m in body.get("messages", []))
        return outage(kind) if down["on"] and hit else None

    model._fault_fn = faults
    broken = write_task(tmp_path / "ws", name="broken", steps=2, marker="ALPHA ",
                        extra="gpo.timeout: 1\n")
    fine = write_task(tmp_path / "ws", name="fine", steps=2)
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        a, _ = await client.create_job(broken)
        seen = await events_until(client, a["id"], lambda e: e.get("state") == state)
        assert reason in seen[-1]["error"]
        b, _ = await client.create_job(fine)
        assert (await client.wait(b["id"]))["state"] == "finished"
        # It keeps retrying with backoff (the other job may finish before the first retry).
        for _ in range(200):
            now = await client.job(a["id"])
            if now["attempts"] >= 2:
                break
            await asyncio.sleep(0.05)
        assert now["state"] == state and reason in now["error"]
        assert now["attempts"] >= 2
        listed = await client.prompt_state(broken)
        assert listed["job"]["status"] == "running" and listed["job"]["state"] == state
        assert reason in listed["job"]["message"]
        down["on"] = False  # the provider comes back
        recovered = await client.wait(a["id"])
        assert recovered["state"] == "finished" and recovered["step"] == 2
        assert reason in recovered["error"]  # the record of what happened stays


async def test_auth_error_fails_the_job_without_retrying(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    model._fault_fn = lambda _i, _b: Fault(status=401)
    prompt = write_task(tmp_path / "ws", steps=1)
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        job, _ = await client.create_job(prompt)
        done = await client.wait(job["id"])
        assert done["state"] == "failed" and done["attempts"] == 1
        assert done["error_kind"] == "auth"
        assert (await client.health())["ok"]


@pytest.mark.parametrize("path", ["direct", "litellm"])
async def test_a_missing_api_key_fails_the_job_at_once_saying_what_to_set(
        rt_dir: Path, model: ModelServer, tmp_path: Path, path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenAI's own endpoint and no key: litellm raises a 500 "Missing credentials", the
    # direct path refuses before sending; both are auth, and nothing retries them.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("GPO_DIRECT", "1" if path == "direct" else "0")
    prompt = write_task(tmp_path / "ws", steps=2)
    config = config_for(rt_dir, model, api_base=None)
    async with daemon(config, roots=(tmp_path / "ws",), retries=3) as (client, _):
        job, _ = await client.create_job(prompt, {"model": "openai/gpt-4o-mini"})
        states = [e.get("state") async for e in client.events(job["id"]) if e["kind"] == "state"]
        done = await client.job(job["id"])
        assert done["state"] == "failed" and done["attempts"] == 1
        assert states == ["queued", "running"]  # never "failing ... retrying"
        assert done["error_kind"] == "auth" and "Missing credentials" in done["error"]
        assert "set OPENAI_API_KEY" in done["error"]
        listed = await client.prompt_state(prompt)
        assert listed["job"]["status"] == "failed" and "set OPENAI_API_KEY" in \
            listed["job"]["message"]
    assert model.requests == 0


async def test_an_optimizer_without_access_fails_the_job_at_once(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    # Every optimizer call refused (401) ends the step as a "systemic" failure: still auth.
    def refuse_rewrites(_index: int, body: dict[str, Any]) -> Fault | None:
        asked = any("<START>" in str(m.get("content")) for m in body.get("messages", []))
        return Fault(status=401) if asked else None

    model._fault_fn = refuse_rewrites
    prompt = write_task(tmp_path / "ws", steps=2)
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        job, _ = await client.create_job(prompt)
        done = await client.wait(job["id"])
        assert done["state"] == "failed" and done["attempts"] == 1
        assert done["error_kind"] == "auth" and "check OPENAI_API_KEY" in done["error"]


# ---------------------------------------------------------------- lifecycle


async def test_idle_timeout_stops_the_daemon_and_cleans_up(
        rt_dir: Path, model: ModelServer) -> None:
    async with daemon(config_for(rt_dir, model, idle_timeout=0.3)) as (client, task):
        assert (await client.health())["ok"]
        await asyncio.wait_for(task, 30)
    assert runtime.read_status(rt_dir) is None
    assert not (rt_dir / runtime.SOCKET_NAME).exists()


async def test_idle_timeout_waits_for_running_jobs(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    prompt = write_task(tmp_path / "ws", steps=2)
    model.latency = 0.05
    config = config_for(rt_dir, model, idle_timeout=0.2)
    async with daemon(config, roots=(tmp_path / "ws",)) as (client, task):
        job, _ = await client.create_job(prompt)
        await client.wait(job["id"])
        assert (await client.job(job["id"]))["state"] == "finished"  # not cut short
        await asyncio.wait_for(task, 30)


async def test_a_job_on_a_prompt_another_process_optimizes_fails_and_pays_nothing(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    """The daemon's jobs share `gpo optimize`'s run lock per prompt."""
    from gpo_engine.models import default_cache_dir
    from gpo_engine.runlock import release, try_lock

    prompt = write_task(tmp_path / "ws", steps=1)
    lock = try_lock(default_cache_dir(), trajectory_key(load_task(prompt).fingerprint()))
    assert lock is not None
    try:
        async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
            job, _ = await client.create_job(prompt)
            done = await client.wait(job["id"])
    finally:
        release(lock)
    assert done["state"] == "failed" and done["error_kind"] == "busy"
    assert "is being optimized by" in done["error"]
    assert model.requests == 0


async def test_bad_entries_in_the_daemon_files_are_skipped_and_the_daemon_starts(
        rt_dir: Path, model: ModelServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    import time

    prompt = write_task(tmp_path / "ws", steps=1)
    rt_dir.mkdir(mode=0o700, parents=True)
    good = {"id": "good", "path": str(prompt.resolve()), "created": time.time()}
    entries = [{"id": "bad", "path": str(prompt.resolve()), "created": "abc"}, 5,
               {"id": "neg", "path": str(prompt.resolve()), "calls": -3},
               {"id": "rel", "path": "x.prompt"}, good]
    (rt_dir / runtime.JOBS_NAME).write_text(json.dumps({"jobs": entries}))
    (rt_dir / runtime.ROOTS_NAME).write_text(json.dumps(
        {"roots": [7, "relative", "/nul\u0000byte", str(tmp_path / "ws")]}))
    (rt_dir / runtime.STATUS_NAME).write_text(json.dumps(
        {"pid": 2**40, "address": "x", "version": "0", "started": 0}))
    with caplog.at_level("WARNING", logger="gpo.daemon"):
        async with daemon(config_for(rt_dir, model)) as (client, _):
            assert (await client.health())["roots"] == [str((tmp_path / "ws").resolve())]
            assert [j["id"] for j in await client.jobs()] == ["good"]
            with pytest.raises(DaemonError):
                await client.job("bad")
            done = await client.wait("good")
            assert done["state"] == "finished"
    logged = caplog.text
    assert "skipping job entry 1" in logged and "'created' has the wrong type" in logged
    assert "skipping job entry 2" in logged and "skipping job entry 3" in logged
    assert "skipping job entry 4" in logged and "skipping workspace root 7" in logged


def test_a_status_file_with_a_pid_beyond_the_kernels_is_no_status(rt_dir: Path) -> None:
    rt_dir.mkdir(mode=0o700, parents=True)
    for pid in (2**40, "12", True, -4):
        (rt_dir / runtime.STATUS_NAME).write_text(json.dumps(
            {"pid": pid, "address": "x", "version": "0", "started": 0}))
        assert runtime.read_status(rt_dir) is None
        assert runtime.live_status(rt_dir) is None


async def test_a_finished_job_is_still_listed_after_a_daemon_restart(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    import time

    prompt = write_task(tmp_path / "ws", steps=1)
    config = config_for(rt_dir, model)
    async with daemon(config, roots=(tmp_path / "ws",)) as (client, _):
        job, _ = await client.create_job(prompt)
        before = await client.wait(job["id"])
    assert before["state"] == "finished"
    saved = json.loads((rt_dir / runtime.JOBS_NAME).read_text())
    old = {**saved["jobs"][0], "id": "old", "ended": time.time() - 25 * 3600}
    (rt_dir / runtime.JOBS_NAME).write_text(json.dumps({"jobs": [*saved["jobs"], old]}))
    calls = model.requests
    async with daemon(config) as (client, _):
        after = await client.job(job["id"])
        assert [j["id"] for j in await client.jobs()] == [job["id"]]  # not the 25 h old one
        events = [e async for e in client.events(job["id"])]
    assert events[-1]["kind"] == "end" and events[-1]["state"] == "finished"
    for name in ("state", "step", "total_steps", "best_dev", "result", "created", "ended"):
        assert after[name] == before[name], name
    assert model.requests == calls  # listed, not run again


async def test_clean_shutdown_keeps_the_trajectory_and_the_next_daemon_resumes(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    prompt = write_task(tmp_path / "ws", steps=4)
    model.latency = 0.05
    config = config_for(rt_dir, model)
    async with daemon(config, roots=(tmp_path / "ws",)) as (client, task):
        job, _ = await client.create_job(prompt)
        seen = await events_until(client, job["id"], lambda e: e["kind"] == "step_finished")
        await client.shutdown()
        await asyncio.wait_for(task, 30)
    last_seen = seen[-1]["seq"]
    saved_jobs = json.loads((rt_dir / runtime.JOBS_NAME).read_text())["jobs"]
    assert [j["id"] for j in saved_jobs] == [job["id"]]
    trajectory = open_store().load(trajectory_key(load_task(prompt).fingerprint()))
    assert trajectory is not None and 1 <= trajectory.steps_done < 4
    async with daemon(config) as (client, _):
        # The workspace roots registered before the shutdown still hold.
        assert (await client.health())["roots"] == [str((tmp_path / "ws").resolve())]
        resumed = await client.job(job["id"])  # same id, picked up on startup
        # A client that reconnects with the last event id it saw before the restart
        # gets every event of the new life: their numbers go on rising.
        events = [e async for e in client.events(job["id"], since=last_seen)]
        assert events and all(e["seq"] > last_seen for e in events)
        assert events[-1]["kind"] == "end"
        started = [e for e in events if e["kind"] == "job_started"]
        assert started[0]["resumed_at"] == trajectory.steps_done
        done = await client.job(job["id"])
        assert resumed["path"] == str(prompt.resolve())
        assert done["state"] == "finished" and done["step"] == 4


async def test_a_missing_daemon_and_a_broken_stream_are_plain_sentences(
        rt_dir: Path, model: ModelServer, tmp_path: Path) -> None:
    # Nothing listens: no "[Errno 111] Connect call failed" reaches the user.
    nowhere = f"unix:{tmp_path / 'none.sock'}"
    async with DaemonClient(nowhere) as client:
        with pytest.raises(DaemonError) as info:
            await client.health()
    assert (info.value.status, info.value.code) == (0, "unreachable")
    assert info.value.message == f"the gpo daemon is not running (nothing answers at {nowhere})"
    assert "No such file" in info.value.details["cause"]  # kept for the logs, not shown
    # The daemon stops while a client follows a job: the stream's end is not the job's.
    prompt = write_task(tmp_path / "ws", steps=4)
    model.latency = 0.05
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, task):
        job, _ = await client.create_job(prompt)
        seen = []
        with pytest.raises(DaemonError) as lost:
            async for event in client.events(job["id"]):
                seen.append(event)
                if event["kind"] == "step_finished":
                    async with DaemonClient(client.address) as other:
                        await other.shutdown()
        await asyncio.wait_for(task, 30)
        assert seen and seen[-1]["kind"] != "end"
        assert (lost.value.status, lost.value.code) == (0, "disconnected")
        assert lost.value.message == "the gpo daemon stopped while following the job"
        with pytest.raises(DaemonError) as gone:
            await client.job(job["id"])
        assert gone.value.status == 0 and "Errno" not in gone.value.message


def test_the_readme_route_table_lists_every_route(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    listed = {(method, re.sub(r"\{[^}]*\}", "{}", route.split("?")[0]))
              for method, route in re.findall(r"^\| `(GET|POST) (/v1/[^`]*)`", readme, re.M)}
    app = make_app(DaemonConfig(runtime_dir=tmp_path))
    served = {(r.method, re.sub(r"\{[^}]*\}", "{}", r.resource.canonical))
              for r in app.router.routes() if r.method != "HEAD" and r.resource is not None}
    assert ("POST", "/v1/prompts") in served and len(served) == 12
    assert listed == served


def test_client_module_does_not_import_the_model_layer() -> None:
    code = ("import sys, gpo_server.client, gpo_server.runtime\n"
            "bad = [m for m in ('litellm', 'gpo_engine.task', 'gpo_engine.llm', "
            "'gpo_engine.optimizer') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
