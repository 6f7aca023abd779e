"""`gpo lsp` end to end: a pytest-lsp client drives the real server process, which starts
the real daemon on demand in a temp runtime dir; the models are the test model server
with the scripted capitals pair. Run under VS Code's and Neovim 0.7's capability sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Union

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from gpo_engine.promptfile import parse_prompt
from gpo_engine.update import word_distance
from gpo_server import runtime
from gpo_server.client import DaemonClient
from gpo_server.lsp import plain
from gpo_server.lsp_progress import end_message, progress_report, score_of
from tests.layering import imported
from tests.lsp_samples import NO_VARIABLES_ROW, many_variables
from tests.model_server import ModelServer
from tests.scripted_models import GOOD, ScriptedModels, write_capitals
from tests.test_lsp_edits import apply

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ("visual-studio-code", "neovim@v0.7.0")
WAIT = 90.0  # seconds; generous for a loaded shared machine, never reached when all is well


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temp folder (the daemon's socket path must fit in 108 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="gpol", dir="/tmp"))
    try:
        yield base
    finally:
        stop_daemon(base / "rt")
        shutil.rmtree(base, ignore_errors=True)


def stop_daemon(directory: Path) -> None:
    status = runtime.read_status(directory)
    if status is None or not runtime.pid_alive(status.pid):
        return
    os.kill(status.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while runtime.pid_alive(status.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def server_env(base: Path, api_base: str | None, without: tuple[str, ...] = (),
               extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "GPO_RUNTIME_DIR": str(base / "rt"), "GPO_CACHE_DIR": str(base / "cache"),
           "OPENAI_API_KEY": "test", "GPO_DAEMON_IDLE_TIMEOUT": "300", **(extra or {})}
    env.pop("GPO_API_BASE", None)
    if api_base:
        env["GPO_API_BASE"] = api_base
    for name in without:
        env.pop(name, None)
    return env


@contextlib.asynccontextmanager
async def session(base: Path, client_name: str, root: Path, *, api_base: str | None = None,
                  init: dict[str, Any] | None = None,
                  configuration: dict[str, Any] | None = None,
                  without: tuple[str, ...] = (), env: dict[str, str] | None = None
                  ) -> AsyncIterator[LanguageClient]:
    """A client connected to `python -m gpo_server.cli lsp`, initialized for `root`;
    `without`: environment variables the server (and the daemon it starts) does not get;
    `env`: ones it gets besides."""
    config = ClientServerConfig(server_command=[sys.executable, "-m", "gpo_server.cli", "lsp"],
                                server_env=server_env(base, api_base, without, env))
    client = await config.start()
    assert isinstance(client, LanguageClient)
    read_actions_exactly(client)
    if configuration is not None:
        client.set_configuration(configuration)
    try:
        result = await client.initialize_session(types.InitializeParams(
            capabilities=client_capabilities(client_name),
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)],
            initialization_options=init,
        ))
        check_capabilities(result.capabilities)
        yield client
    finally:
        # stop() waits for the server to exit: ask it to, and kill it if it will not
        # (a failed test must not hang the suite).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 15)
        server = client._server
        if server is not None and server.returncode is None:
            server.kill()
        await client.stop()


def read_actions_exactly(client: LanguageClient) -> None:
    """The test client's converter reads a code action whose `command` is an object as a
    Command (the union's first type); tell the two apart the way an editor does: a Command's
    `command` is a string."""
    converter = client.protocol._converter

    def structure(obj: Any, _: Any) -> types.Command | types.CodeAction:
        if isinstance(obj.get("command"), str):
            return converter.structure(obj, types.Command)
        return converter.structure(obj, types.CodeAction)

    converter.register_structure_hook(Union[types.Command, types.CodeAction], structure)  # noqa: UP007


def check_capabilities(caps: types.ServerCapabilities) -> None:
    """What both editors rely on, declared statically (neither registers dynamically)."""
    assert isinstance(caps.code_action_provider, types.CodeActionOptions)
    assert caps.code_action_provider.resolve_provider is True
    assert caps.execute_command_provider is not None
    assert {"gpo.optimize", "gpo.stop", "gpo.rescore"} <= set(
        caps.execute_command_provider.commands)
    assert caps.hover_provider
    sync = caps.text_document_sync
    assert isinstance(sync, types.TextDocumentSyncOptions) and sync.open_close and sync.save
    # Positions are UTF-16 whatever the client prefers (Emacs 29 and Neovim 0.11 offer
    # utf-32 / utf-8 first): every column gpo computes is in UTF-16 code units.
    assert caps.position_encoding in (None, types.PositionEncodingKind.Utf16)


async def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def open_doc(client: LanguageClient, path: Path, text: str | None = None) -> str:
    uri = path.as_uri()
    content = path.read_bytes().decode("utf-8", "replace") if text is None else text
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="dotprompt", version=1,
                                             text=content)))
    return uri


def change_doc(client: LanguageClient, uri: str, version: int, text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


async def hover_text(client: LanguageClient, uri: str, line: int) -> str:
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=1)))
    assert hover is not None and isinstance(hover.contents, types.MarkupContent)
    return hover.contents.value


async def actions_of(client: LanguageClient, uri: str) -> list[types.CodeAction]:
    found = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=0, character=0),
                          end=types.Position(line=0, character=0)),
        context=types.CodeActionContext(diagnostics=[])))
    assert found is not None
    return [a for a in found if isinstance(a, types.CodeAction)]


async def actions_after_the_job(client: LanguageClient, uri: str) -> list[types.CodeAction]:
    """The actions once the server has the state after the job's end (its progress ends
    first, and the state is fetched just after)."""
    deadline = time.monotonic() + WAIT
    while True:
        actions = await actions_of(client, uri)
        if "Stop optimizing" not in [a.title for a in actions] or time.monotonic() > deadline:
            return actions
        await asyncio.sleep(0.05)


async def command(client: LanguageClient, name: str, uri: str) -> Any:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=[uri]))


def ended(client: LanguageClient, prefix: str) -> list[types.WorkDoneProgressEnd]:
    # pytest-lsp keeps the progress values (begin/report/end), typed as ProgressParams.
    values: list[Any] = [r for token, reports in client.progress_reports.items()
                         if str(token).startswith(prefix) for r in reports]
    return [r for r in values if isinstance(r, types.WorkDoneProgressEnd)]


@contextlib.asynccontextmanager
async def optimizing(base: Path, client_name: str, *, steps: int, latency: float
                     ) -> AsyncIterator[tuple[LanguageClient, Path, str, str]]:
    """A session on the capitals task in `base/ws` (`steps` steps, 2 candidates), the
    scripted models answering after `latency` s, with the prompt open, diagnosed and a job
    started on it: the client, the prompt, its uri and the job's progress token."""
    ws = base / "ws"
    prompt = write_capitals(ws, steps=steps, candidates=2)
    async with ModelServer(answer=ScriptedModels([GOOD]).answer, latency=latency) as models, \
            session(base, client_name, ws, api_base=models.api_base) as client:
        uri = open_doc(client, prompt)
        await wait_until(lambda: uri in client.diagnostics, "diagnostics")
        started = await command(client, "gpo.optimize", uri)
        yield client, prompt, uri, f"gpo-job-{started['job']}"


async def progress_says(client: LanguageClient, token: str, start: str) -> None:
    """Wait for a progress report under `token` whose message starts with `start`."""
    await wait_until(lambda: any(
        isinstance(r, types.WorkDoneProgressReport) and r.message
        and r.message.startswith(start)
        for r in client.progress_reports.get(token, [])), f"progress '{start}'")


async def daemon_jobs(base: Path) -> list[dict[str, Any]]:
    status = runtime.read_status(base / "rt")
    assert status is not None, "the language server started no daemon"
    async with DaemonClient(status.address) as client:
        return await client.jobs()


# ---------------------------------------------------------------------------
# The whole cycle


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_open_score_optimize_apply_and_watch(short_dir: Path, client_name: str) -> None:
    ws = short_dir / "ws"
    prompt = write_capitals(ws, steps=2, candidates=2)
    (ws / ".git").mkdir()
    original = prompt.read_text(encoding="utf-8")
    frontmatter = parse_prompt(original, prompt).frontmatter
    budget = {"initial": 30, "final": 10, "decay": "cosine"}
    settings = {"autoOptimizeOnSave": False, "models": {"task": None, "optimizer": None},
                "daemon": {"address": None}, "budget": budget}
    # VS Code's run gets the budget through workspace/configuration, Neovim's through
    # initializationOptions: both ways in are exercised.
    vscode = client_name == "visual-studio-code"
    init = {**settings, "budget": {}} if vscode else settings
    configuration = {"gpo": settings} if vscode else None
    async with ModelServer(answer=ScriptedModels([GOOD]).answer) as models, \
            session(short_dir, client_name, ws, api_base=models.api_base, init=init,
                    configuration=configuration) as client:
        uri = open_doc(client, prompt)
        await wait_until(lambda: uri in client.diagnostics, "diagnostics of the prompt")
        assert list(client.diagnostics[uri]) == []
        body_line = 8  # 0-based: the template's first line
        # "**GPO**: not yet scored." before the daemon's state arrives, "*Not yet scored*: ..."
        # after: either way, nothing is scoring it.
        assert "not yet scored" in (await hover_text(client, uri, body_line)).lower()
        titles = [a.title for a in await actions_of(client, uri)]
        assert titles == ["Optimize this prompt", "Re-score"]

        # Re-score: runs in the background under its own progress bar.
        assert await command(client, "gpo.rescore", uri) is None
        await wait_until(lambda: ended(client, "gpo-score-"), "the scoring progress to end")
        assert ended(client, "gpo-score-")[0].message == "dev 0.0"
        # The state fetched just after the scoring counts its tokens.
        assert tokens_in(await hover_until(client, uri, lambda t: tokens_in(t) > 0)) > 0
        text = await hover_text(client, uri, 1)  # the frontmatter hovers too
        assert "- dev: **0.0** (n=8" in text and "- test: **0.0**" in text

        # Optimize: progress while the job runs, then the suggestion as a diagnostic.
        started = await command(client, "gpo.optimize", uri)
        assert started["state"] in ("queued", "running", "finished")
        token = f"gpo-job-{started['job']}"
        await wait_until(lambda: ended(client, token), "the job's progress to end")
        reports = client.progress_reports[token]
        assert isinstance(reports[0], types.WorkDoneProgressBegin)
        assert reports[0].title == "GPO: optimizing capitals.prompt" and reports[0].cancellable
        messages = [r.message for r in reports if isinstance(r, types.WorkDoneProgressReport)]
        assert any(m and m.startswith("step 2/2 done, best dev 100.0") for m in messages)
        assert any(isinstance(r, types.WorkDoneProgressReport) and r.percentage == 100
                   for r in reports)
        assert ended(client, token)[-1].message == "finished, best dev 100.0"
        jobs = await daemon_jobs(short_dir)
        assert jobs[-1]["overrides"] == {"budget": budget}
        assert jobs[-1]["state"] == "finished"

        def note() -> types.Diagnostic | None:
            found = [d for d in client.diagnostics.get(uri, [])
                     if d.severity == types.DiagnosticSeverity.Information]
            return found[0] if found else None

        info = await wait_until(note, "the 'better prompt ready' diagnostic")
        assert info.message.startswith("GPO: +100 pts on dev, ") and info.source == "gpo"
        assert info.range.start.line == body_line

        hover = await hover_text(client, uri, body_line)
        found = re.search(r"step 2/2 · budget (\d+) words", hover)
        assert found is not None, hover
        current_budget = int(found.group(1))
        assert 10 <= current_budget <= 30  # the overridden schedule, not the default 50 -> 10
        assert "- ready: Apply GPO suggestion (+100 pts, " in hover

        # The apply action: listed without an edit, filled in by codeAction/resolve.
        listed = await actions_after_the_job(client, uri)
        assert [a.title.split(" (")[0] for a in listed] == [
            "Apply GPO suggestion", "Optimize this prompt", "Re-score"]
        apply_action = listed[0]
        assert apply_action.edit is None and apply_action.kind == types.CodeActionKind.QuickFix
        words, limit = apply_action.title.split(", ")[1].split(" ")[0].split("/")
        preview = await client.protocol.send_request_async(
            "gpo/suggestion", {"textDocument": {"uri": uri}})
        resolved = await client.code_action_resolve_async(apply_action)
        assert resolved.edit is not None and resolved.edit.changes is not None
        edits = resolved.edit.changes[uri]
        new_text = apply(original, list(edits))
        for edit in edits:
            assert edit.range.start.line >= body_line  # never inside the frontmatter
        assert new_text.encode()[: len(frontmatter.encode())] == frontmatter.encode()
        applied = parse_prompt(new_text, prompt)
        assert applied.frontmatter.encode() == frontmatter.encode()
        assert applied.body.startswith("Name the capital city of the country.\n")
        old_body = parse_prompt(original, prompt).body
        distance = word_distance(old_body, applied.body)
        assert 0 < distance == int(words) <= int(limit) == current_budget
        assert plain(preview) == {"text": new_text, "title": apply_action.title}

        # The editor applies the edit: nothing more to offer, and the hover knows the text.
        change_doc(client, uri, 2, new_text)
        await wait_until(lambda: note() is None, "the suggestion diagnostic to go")
        hover = await hover_text(client, uri, body_line)
        assert "- dev: **100.0**" in hover and "(this text)" in hover
        titles = [a.title for a in await actions_of(client, uri)]
        assert titles == ["Optimize this prompt", "Re-score"]
        again = await client.code_action_resolve_async(apply_action)
        assert again.edit is None and again.disabled is not None

        # Saving the example file (the editor's watcher reports it) re-scores the prompt.
        examples = ws / "capitals.examples.jsonl"
        examples.write_text(examples.read_text() + json.dumps(
            {"country": "Chile", "expected": "Santiago", "split": "dev"}) + "\n")
        before = len(ended(client, "gpo-score-"))
        client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
            types.FileEvent(uri=examples.as_uri(), type=types.FileChangeType.Changed)]))
        await wait_until(lambda: len(ended(client, "gpo-score-")) > before, "a re-score")
        assert ended(client, "gpo-score-")[-1].message == "dev 100.0"
        hover = await hover_text(client, uri, body_line)
        assert "- dev: **100.0** (n=9" in hover


async def hover_until(client: LanguageClient, uri: str, wanted: str | Callable[[str], bool]
                      ) -> str:
    """The body's hover once it has `wanted` (or satisfies it), or the last one at WAIT."""
    deadline = time.monotonic() + WAIT
    while True:
        text = await hover_text(client, uri, 8)
        if (wanted(text) if callable(wanted) else wanted in text) or \
                time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.02)


def tokens_in(hover: str) -> int:
    found = re.search(r"- tokens: ([\d,]+) prompt", hover)
    assert found is not None, hover
    return int(found.group(1).replace(",", ""))


async def test_hover_says_scoring_progress_says_t_of_T_and_rescore_counts_tokens(
        short_dir: Path) -> None:
    async with optimizing(short_dir, "neovim@v0.7.0", steps=2, latency=0.3) as (
            client, prompt, uri, token):
        # The job scores the file's text (the buffer) first: "scoring…", not "not yet scored".
        hover = await hover_until(client, uri, "*Scoring…*")
        assert "*Scoring…*: this text is being scored now." in hover
        await wait_until(lambda: ended(client, token), "the job's end")
        steps = [re.search(r"step \d+/(\d+)", r.message or "")
                 for r in client.progress_reports[token]
                 if isinstance(r, types.WorkDoneProgressReport)]
        assert any(found and "candidate" in found.string for found in steps)
        assert {found.group(1) for found in steps if found} == {"2"}  # never "step 1/0"
        hover = await hover_until(client, uri, "step 2/2")
        spent = tokens_in(hover)
        assert spent > 0

        # Re-score an edit: the hover says so from the command's answer on, deterministically
        # (the text is marked before the command returns; its calls take 0.3 s each).
        edited = prompt.read_text().replace("Tell me about the country.", "Name the country.")
        change_doc(client, uri, 2, edited)
        assert await command(client, "gpo.rescore", uri) is None
        hover = await hover_text(client, uri, 8)
        assert "*Scoring…*: this text is being scored now." in hover
        before = len(ended(client, "gpo-score-"))
        await wait_until(lambda: len(ended(client, "gpo-score-")) > before, "the re-score")
        # The state fetched after the re-score counts its tokens.
        hover = await hover_until(client, uri, lambda text: tokens_in(text) > spent)
        assert tokens_in(hover) > spent
        assert "Scoring" not in hover and "- dev: **0.0** (n=8" in hover

        # The server keeps no scores: it asks for the state of the buffer's text. Back to
        # the file's text, its suggestion is offered again; back to the edit, the scores
        # the daemon holds for it are shown again.
        change_doc(client, uri, 3, prompt.read_text())
        assert "- ready: Apply GPO suggestion" in await hover_until(client, uri, "- ready: ")
        change_doc(client, uri, 4, edited)
        assert "- dev: **0.0** (n=8" in await hover_until(client, uri, "- dev: **0.0** (n=8")


async def test_cancelling_the_progress_cancels_the_job(short_dir: Path) -> None:
    async with optimizing(short_dir, "neovim@v0.7.0", steps=6, latency=0.2) as (
            client, _, uri, token):
        await progress_says(client, token, "step 1/6")
        titles = [a.title for a in await actions_of(client, uri)]
        assert "Stop optimizing" in titles  # the state was refreshed while it runs
        client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
        await wait_until(lambda: ended(client, token), "the progress to end")
        assert ended(client, token)[0].message == "cancelled"
        jobs = await daemon_jobs(short_dir)
        assert [j["state"] for j in jobs] == ["cancelled"]
        titles = [a.title for a in await actions_after_the_job(client, uri)]
        assert titles == ["Optimize this prompt", "Re-score"]


async def test_stop_command_and_auto_optimize_on_save(short_dir: Path) -> None:
    ws = short_dir / "ws"
    prompt = write_capitals(ws, steps=6, candidates=2)
    init = {"autoOptimizeOnSave": True, "models": {"task": "openai/other"}}
    async with ModelServer(answer=ScriptedModels([GOOD]).answer, latency=0.2) as models, \
            session(short_dir, "visual-studio-code", ws, api_base=models.api_base,
                    init=init) as client:
        uri = open_doc(client, prompt)
        await wait_until(lambda: uri in client.diagnostics, "diagnostics")
        client.text_document_did_save(types.DidSaveTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        begun = await wait_until(lambda: [t for t in client.progress_reports
                                          if str(t).startswith("gpo-job-")], "a job on save")
        jobs = await daemon_jobs(short_dir)
        assert jobs[0]["overrides"] == {"model": "openai/other"}
        stopped = await command(client, "gpo.stop", uri)
        assert stopped["state"] == "cancelled"
        await wait_until(lambda: ended(client, str(begun[0])), "the progress to end")
        assert await command(client, "gpo.stop", uri) is None  # nothing left to stop


async def test_a_missing_api_key_fails_at_once_and_says_what_to_set(short_dir: Path) -> None:
    ws = short_dir / "ws"
    prompt = write_capitals(ws, steps=2, candidates=2)
    init = {"models": {"task": "openai/gpt-4o-mini"}}
    async with session(short_dir, "visual-studio-code", ws, init=init,
                       without=("OPENAI_API_KEY", "OPENAI_BASE_URL")) as client:
        uri = open_doc(client, prompt)
        await wait_until(lambda: uri in client.diagnostics, "diagnostics")
        started = await command(client, "gpo.optimize", uri)
        token = f"gpo-job-{started['job']}"
        await wait_until(lambda: ended(client, token), "the job's progress to end")
        assert ended(client, token)[0].message is not None
        assert ended(client, token)[0].message.startswith("failed: openai/gpt-4o-mini: auth: ")
        reports = [r.message or "" for r in client.progress_reports[token]
                   if isinstance(r, types.WorkDoneProgressReport)]
        assert not any("retrying" in m for m in reports)
        jobs = await daemon_jobs(short_dir)
        assert [(j["state"], j["attempts"], j["error_kind"]) for j in jobs] == [
            ("failed", 1, "auth")]
        told = await wait_until(lambda: [m for m in client.messages
                                         if "set OPENAI_API_KEY" in m.message], "a message")
        assert told[0].type == types.MessageType.Warning

        def warning() -> list[types.Diagnostic]:
            return [d for d in client.diagnostics.get(uri, [])
                    if d.severity == types.DiagnosticSeverity.Warning]

        found = await wait_until(warning, "the failure's diagnostic")
        assert found[0].message.startswith("GPO: optimizing failed: openai/gpt-4o-mini: auth: ")
        assert "set OPENAI_API_KEY" in found[0].message and found[0].range.start.line == 8
        hover = await hover_text(client, uri, 8)
        assert "- last run failed: openai/gpt-4o-mini: auth: Missing credentials" in hover
        assert "set OPENAI_API_KEY" in hover and "optimizing: running" not in hover


# ---------------------------------------------------------------------------
# Bad documents: diagnostics, never a crash (no daemon needed: none is reachable)


async def test_bad_documents_give_diagnostics_never_a_crash(short_dir: Path) -> None:
    ws = short_dir / "ws"
    good = write_capitals(ws)
    unreachable = {"daemon": {"address": str(short_dir / "nobody.sock")}}
    async with session(short_dir, "visual-studio-code", ws, init=unreachable) as client:
        def lines_of(uri: str) -> list[tuple[int, str]]:
            return [(d.range.start.line, d.message) for d in client.diagnostics.get(uri, [])]

        async def diagnosed(path: Path, text: str) -> list[tuple[int, str]]:
            path.write_bytes(text.encode("utf-8", "surrogateescape"))
            uri = open_doc(client, path, text)
            await wait_until(lambda: uri in client.diagnostics, f"diagnostics of {path.name}")
            return lines_of(uri)

        broken_yaml = await diagnosed(ws / "yaml.prompt",
                                      "---\nmodel: x\ngpo.steps: [1,\n---\nHi {{country}}\n")
        assert broken_yaml and broken_yaml[0][1].startswith("frontmatter:")
        template = await diagnosed(ws / "tpl.prompt",
                                   "---\nmodel: x\n---\nline one\nHi {{#if country}}\n")
        assert template == [(4, template[0][1])] and "template error" in template[0][1]
        setting = await diagnosed(ws / "set.prompt", "---\nmodel: x\ngpo.steps: nope\n---\nHi\n")
        assert setting[0][0] == 2 and "gpo.steps" in setting[0][1]

        garbage = bytes(range(256)).decode("latin-1") * 40
        assert await diagnosed(ws / "bin.prompt", garbage)  # something to say, and alive
        huge = "---\nmodel: x\n---\n" + "Tell me about {{country}}. " * 200_000
        assert len(huge) > 5_000_000
        big = await diagnosed(ws / "big.prompt", huge)
        assert big == [(0, big[0][1])] and "too large" in big[0][1]

        # An example file with invalid UTF-8 gets its own diagnostics, at its lines.
        examples = ws / "utf.examples.jsonl"
        examples.write_bytes(b'{"country": "France", "expected": "Paris", "split": "dev"}\n'
                             b'{"country": "Fr\xffnce", "expected": "Paris"}\n')
        prompt_text = good.read_text().replace("capitals", "utf")
        assert await diagnosed(ws / "utf.prompt", prompt_text) == []
        example_uri = examples.as_uri()
        assert lines_of(example_uri) == [(1, "not valid UTF-8")]
        # A bad row (missing variable) is reported at its line, too; fixing it clears it.
        examples.write_text('{"country": "France", "expected": "Paris", "split": "dev"}\n'
                            '{"expected": "Rome"}\n', encoding="utf-8")
        watched = types.DidChangeWatchedFilesParams(changes=[
            types.FileEvent(uri=example_uri, type=types.FileChangeType.Changed)])
        client.workspace_did_change_watched_files(watched)
        await wait_until(lambda: lines_of(example_uri) and lines_of(example_uri)[0][0] == 1
                         and "country" in lines_of(example_uri)[0][1], "the bad row")
        examples.write_text('{"country": "France", "expected": "Paris", "split": "dev"}\n',
                            encoding="utf-8")
        client.workspace_did_change_watched_files(watched)
        await wait_until(lambda: not lines_of(example_uri), "cleared")

        # Still serving: a good document hovers, and a broken edit is diagnosed as typed.
        uri = open_doc(client, good)
        await wait_until(lambda: uri in client.diagnostics, "the good prompt")
        assert "not yet scored" in await hover_text(client, uri, 5)
        change_doc(client, uri, 2, good.read_text().replace("Answer:", "{{/if}}"))
        await wait_until(lambda: lines_of(uri), "diagnostics of the edit")
        assert lines_of(uri)[0][0] == 10 and "template error" in lines_of(uri)[0][1], lines_of(uri)
        assert await actions_of(client, uri) == []
        with pytest.raises(Exception, match="not an open document"):
            await command(client, "gpo.optimize", (ws / "closed.prompt").as_uri())
        assert any("gpo daemon is not running" in m.message or "cannot start" in m.message
                   for m in client.log_messages)


async def raw_request(client: LanguageClient, method: str, params: Any) -> Any:
    """A request sent as given, past lsprotocol's types (which cannot hold a line of -1)
    and pytest-lsp's checks; its result, or the JsonRpcException of its error."""
    from concurrent.futures import Future

    from pygls.protocol import JsonRPCRequestMessage

    msg_id = f"raw-{time.monotonic_ns()}"
    answer: Future[Any] = Future()
    client.protocol._request_futures[msg_id] = answer
    client.protocol._send_data(JsonRPCRequestMessage(id=msg_id, method=method, params=params,
                                                     jsonrpc="2.0"))
    # No answer within the wait is the bug: a client would wait forever.
    return await asyncio.wait_for(asyncio.wrap_future(answer), 20)


async def test_out_of_range_positions_and_bad_suggestion_params_get_an_answer(
        short_dir: Path) -> None:
    from pygls.exceptions import JsonRpcException

    ws = short_dir / "ws"
    good = write_capitals(ws)
    unreachable = {"daemon": {"address": str(short_dir / "nobody.sock")}}
    async with session(short_dir, "visual-studio-code", ws, init=unreachable) as client:
        uri = open_doc(client, good)
        await wait_until(lambda: uri in client.diagnostics, "the prompt's diagnostics")
        document = {"uri": uri}
        for position in ({"line": -1, "character": 0}, {"line": 2**40, "character": 3},
                         {"line": 3, "character": -5}):
            assert await raw_request(client, "textDocument/hover", {
                "textDocument": document, "position": position}) is None, position
            assert await raw_request(client, "textDocument/codeAction", {
                "textDocument": document, "range": {"start": position, "end": position},
                "context": {"diagnostics": []}}) is None, position
        for params in ({"textDocument": 5}, [1, 2], "x", {"textDocument": {"uri": 7}}, {},
                       None):
            with pytest.raises(JsonRpcException) as caught:
                await raw_request(client, "gpo/suggestion", params)
            assert caught.value.code == -32602, params  # InvalidParams, not InternalError
        # Still serving, and a well-formed request is answered as before.
        assert await raw_request(client, "gpo/suggestion", {"textDocument": document}) is None
        assert "not yet scored" in await hover_text(client, uri, 5)


async def test_a_pathological_document_delays_no_other_and_says_it_took_too_long(
        short_dir: Path) -> None:
    """5,000 variables or 1,000-deep YAML blocked every document for 2-7 s (a code action
    request parsed the unanalysed document in the event loop). Now each document is
    analysed in a worker process: a hover on a normal document and the diagnostics of its
    edit are answered while a 50,000-variable one (33 s to analyse on the loaded 2-core
    test machine) is still being analysed, and that one gets, at the limit (5 s here, by
    GPO_LSP_TIME_LIMIT), one diagnostic saying why."""
    ws = short_dir / "ws"
    good = write_capitals(ws)
    many = ws / "many.prompt"
    many.write_text(many_variables(50_000), encoding="utf-8")
    (ws / "many.examples.jsonl").write_text(NO_VARIABLES_ROW, encoding="utf-8")
    deep = ws / "deep.prompt"
    deep.write_text("---\nmodel: x\nconfig: " + "[" * 1000 + "]" * 1000 + "\n---\nHi\n",
                    encoding="utf-8")
    unreachable = {"daemon": {"address": str(short_dir / "nobody.sock")}}
    async with session(short_dir, "visual-studio-code", ws, init=unreachable,
                       env={"GPO_LSP_TIME_LIMIT": "5"}) as client:
        uri = open_doc(client, good)
        await wait_until(lambda: uri in client.diagnostics, "the normal prompt")
        many_uri, deep_uri = open_doc(client, many), open_doc(client, deep)
        # An editor asks for a document's code actions as soon as it shows it: these wait
        # for the analysis (they were a parse in the event loop, blocking every request).
        heavy_actions = [asyncio.ensure_future(actions_of(client, u))
                         for u in (many_uri, deep_uri)]
        await asyncio.sleep(0)  # sent, before the hover below
        assert "not yet scored" in await hover_text(client, uri, 5)
        assert not heavy_actions[0].done()  # answered while that one is analysed
        assert many_uri not in client.diagnostics
        change_doc(client, uri, 2, good.read_text().replace("Answer:", "{{/if}}"))
        await wait_until(lambda: client.diagnostics.get(uri), "the edit's diagnostics")
        assert many_uri not in client.diagnostics
        assert "template error" in client.diagnostics[uri][0].message

        found = await wait_until(lambda: client.diagnostics.get(many_uri), "the time limit")
        assert [(d.range.start.line, d.message) for d in found] == [(0, (
            "gpo could not analyse this document in 5 s: it is too large or too complex "
            "(nesting, variables); simplify it to get diagnostics, scores and suggestions"))]
        deep_found = await wait_until(lambda: client.diagnostics.get(deep_uri), "deep YAML")
        assert len(deep_found) == 1 and deep_found[0].range.start.line in (0, 2)
        assert [await answer for answer in heavy_actions] == [[], []]
        # Both stay answered from what is held: nothing to hover until they are fixed.
        for heavy in (many_uri, deep_uri):
            assert await client.text_document_hover_async(types.HoverParams(
                text_document=types.TextDocumentIdentifier(uri=heavy),
                position=types.Position(line=3, character=1))) is None


# ---------------------------------------------------------------------------
# The server never loads the model layer, and the pure conversions


def test_the_language_server_never_imports_litellm_or_redis() -> None:
    assert imported("import gpo_server.lsp, gpo_server.cli\n"
                    "from gpo_server.lsp import make_server\nmake_server()",
                    packages=("litellm", "llama_cpp", "openai", "redis"),
                    modules=("gpo_engine.llm", "gpo_engine.task", "gpo_engine.optimizer")) == []


def test_startup_defers_the_parsers_and_the_http_client(tmp_path: Path) -> None:
    """The real `gpo lsp` answers initialize before importing dotpromptz, aiohttp or rich.

    They cost ~0.25 s together; the editor waits for that answer. Checked with
    Python's own import log, up to the moment the answer is read.
    """
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"processId": None, "rootUri": None, "capabilities": {}}})
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "gpo_server.cli", "lsp"], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "GPO_RUNTIME_DIR": str(tmp_path / "rt")})
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    proc.stdin.flush()
    assert proc.stdout.readline().startswith(b"Content-Length")
    proc.kill()
    log = proc.stderr.read().decode()
    proc.wait()
    imported = {line.rsplit("|", 1)[-1].strip() for line in log.splitlines()
                if line.startswith("import time:")}
    assert "lsprotocol.types" in imported  # the log is real
    heavy = sorted(m for m in imported if m.split(".")[0] in ("dotpromptz", "aiohttp", "rich",
                                                               "litellm"))
    assert heavy == []


def test_progress_messages_follow_the_event_stream() -> None:
    assert progress_report({"kind": "state", "state": "queued"}) == ("queued", None)
    assert progress_report({"kind": "state", "state": "waiting", "error": "429"}) == (
        "waiting: 429; retrying", None)
    assert progress_report({"kind": "state", "state": "finished"}) is None
    assert progress_report({"kind": "job_started", "total_steps": 4, "resumed_at": 1,
                            "initial_dev": 12.5}) == ("step 1/4, dev 12.5", 25)
    assert progress_report({"kind": "step_started", "step": 1, "total_steps": 4,
                            "budget": 20}) == ("step 2/4: writing candidates (budget 20 words)",
                                               25)
    assert progress_report({"kind": "candidate_scored", "step": 0, "index": 2, "score": 50.0,
                            "total_steps": 4}) == ("step 1/4: candidate 3 scored 50.0", None)
    # An event without T (an older daemon's candidates) takes the one known from before.
    assert progress_report({"kind": "candidate_scored", "step": 1, "index": 0, "score": 5.0},
                           4) == ("step 2/4: candidate 1 scored 5.0", None)
    assert progress_report({"kind": "step_finished", "step": 1, "best_dev": 5.0}, 4) == (
        "step 2/4 done, best dev 5.0", 50)
    assert progress_report({"kind": "step_finished", "step": 3, "total_steps": 4,
                            "best_dev": 75.0}) == ("step 4/4 done, best dev 75.0", 100)
    assert progress_report({"kind": "end"}) is None
    assert end_message(None) == "stopped following"
    assert end_message({"kind": "end", "state": "failed", "error": "401"}) == "failed: 401"
    assert end_message({"kind": "end", "state": "cancelled"}) == "cancelled"
    assert end_message({"kind": "end", "state": "finished",
                        "result": {"best_dev": {"score": 80, "n": 8}}}) == \
        "finished, best dev 80.0"


def test_the_score_of_a_daemon_answer() -> None:
    # The buffer's scores are merged into the state by the daemon (POST /v1/prompts with
    # `text`, tests/test_daemon.py::test_the_state_answers_for_the_buffers_text); the
    # server reads only a re-score's and a job's dev score, for their progress messages.
    assert score_of({"score": 1, "n": 2, "low": None, "high": 3}) == 1.0
    assert score_of(None) is None and score_of({"n": 2}) is None
    assert score_of({"score": True}) is None and score_of([1]) is None
