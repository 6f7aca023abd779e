"""Code actions as each editor asks for them, through the real `gpo lsp` and daemon.

VS Code's light bulb and Ctrl+. leave `source` kinds out, so the commands are
`refactor.rewrite` unless `context.only` asks for source actions; Neovim and
Emacs send no `only`. Emacs's eglot advertises no codeAction resolve support,
so it gets the apply action's edit in the listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from gpo_engine.promptfile import parse_prompt
from tests.model_server import ModelServer
from tests.scripted_models import GOOD, ScriptedModels, write_capitals
from tests.test_lsp_edits import apply
from tests.test_lsp_server import (
    actions_after_the_job,
    command,
    ended,
    open_doc,
    session,
    wait_until,
)

REWRITE = types.CodeActionKind.RefactorRewrite


async def listed(client: LanguageClient, uri: str, only: Sequence[str] | None = None
                 ) -> list[types.CodeAction]:
    found = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=5, character=0),
                          end=types.Position(line=5, character=0)),
        context=types.CodeActionContext(diagnostics=[], only=only)))
    assert found is not None
    return [a for a in found if isinstance(a, types.CodeAction)]


def kinds(actions: list[types.CodeAction]) -> list[tuple[str, str | None]]:
    return [(a.title.split(" (")[0], a.kind) for a in actions]


@pytest.mark.parametrize("client_name", ["visual-studio-code", "neovim@v0.7.0", "emacs@v29.1"])
async def test_actions_where_each_editor_looks_and_an_edit_it_can_apply(
        short_dir: Path, client_name: str) -> None:
    ws = short_dir / "ws"
    prompt = write_capitals(ws, steps=1, candidates=1)
    original = prompt.read_text(encoding="utf-8")
    frontmatter = parse_prompt(original, prompt).frontmatter
    async with ModelServer(answer=ScriptedModels([GOOD]).answer) as models, \
            session(short_dir, client_name, ws, api_base=models.api_base) as client:
        uri = open_doc(client, prompt)
        await wait_until(lambda: uri in client.diagnostics, "diagnostics of the prompt")
        assert kinds(await listed(client, uri)) == [
            ("Optimize this prompt", REWRITE), ("Re-score", REWRITE)]
        started = await command(client, "gpo.optimize", uri)
        await wait_until(lambda: ended(client, f"gpo-job-{started['job']}"), "the job's end")
        await wait_until(lambda: any(d.severity == types.DiagnosticSeverity.Information
                                     for d in client.diagnostics.get(uri, [])),
                         "the suggestion's diagnostic")
        await actions_after_the_job(client, uri)
        actions = await listed(client, uri)
        assert kinds(actions) == [("Apply GPO suggestion", types.CodeActionKind.QuickFix),
                                  ("Optimize this prompt", REWRITE), ("Re-score", REWRITE)]
        # Asked for source actions, the same commands come once, as source actions.
        assert kinds(await listed(client, uri, ["source"])) == [
            ("Optimize this prompt", "source.gpo.optimize"), ("Re-score", "source.gpo.rescore")]
        assert kinds(await listed(client, uri, ["quickfix"])) == kinds(actions)[:1]

        apply_action = actions[0]
        if client_name == "emacs@v29.1":
            edit = apply_action.edit  # no resolve support: the edit comes with the listing
        else:
            assert apply_action.edit is None
            edit = (await client.code_action_resolve_async(apply_action)).edit
        assert edit is not None and edit.changes is not None
        new_text = apply(original, list(edit.changes[uri]))
        applied = parse_prompt(new_text, prompt)
        assert new_text.startswith(frontmatter) and applied.frontmatter == frontmatter
        assert applied.body.startswith("Name the capital city of the country.\n")


@pytest.mark.parametrize("client_name", ["emacs@v29.1", "neovim@v0.11.0"])
async def test_columns_are_utf16_for_clients_that_prefer_another_encoding(
        short_dir: Path, client_name: str) -> None:
    ws = short_dir / "ws"
    prompt = write_capitals(ws, body="\U0001f389 {{#if country}}Name the capital.\n")
    async with session(short_dir, client_name, ws) as client:
        uri = open_doc(client, prompt)
        await wait_until(lambda: client.diagnostics.get(uri), "the unclosed block's diagnostic")
        found = [d for d in client.diagnostics[uri] if "unclosed" in d.message]
    # The emoji is two UTF-16 code units (one in UTF-32): the tag starts at column 3.
    assert found and found[0].range.start.character == 3
