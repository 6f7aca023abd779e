"""Code actions: titles, cheap listing without edits, and the resolved minimal edit."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol.types import CodeAction, CodeActionKind
from pytest_lsp import client_capabilities

from gpo_engine.promptfile import parse_prompt
from gpo_server.lsp_actions import (
    COMMAND_OPTIMIZE,
    COMMAND_RESCORE,
    COMMAND_STOP,
    apply_data,
    apply_title,
    format_gain,
    kind_matches,
    list_actions,
    offered_actions,
    offered_suggestion,
    resolve_apply,
    resolves_edits,
)
from gpo_server.prompt_state import parse_state
from tests.lsp_samples import INITIAL, STEP2, state_dict
from tests.test_lsp_edits import apply

URI = "file:///w/sentiment.prompt"
FRONT = "---\nmodel: openai/x\ngpo.steps: 12\n---\n"


@pytest.mark.parametrize(
    ("points", "text"), [(7.5, "+7.5"), (10.0, "+10"), (-2.26, "-2.3"), (0.01, "+0"), (-0.04, "+0")]
)
def test_format_gain(points: float, text: str) -> None:
    assert format_gain(points) == text


def test_apply_title() -> None:
    suggestion = parse_state(state_dict()).suggestion
    assert suggestion is not None
    assert apply_title(suggestion, 31) == "Apply GPO suggestion (+7.5 pts, 12/31 words)"


def test_listing_offers_apply_without_an_edit_then_commands() -> None:
    actions = list_actions(parse_state(state_dict()), INITIAL, URI)
    titles = [a.title for a in actions]
    assert titles == [
        "Apply GPO suggestion (+7.5 pts, 12/31 words)",
        "Optimize this prompt",
        "Re-score",
    ]
    apply_action = actions[0]
    assert apply_action.edit is None and apply_action.kind == CodeActionKind.QuickFix
    assert apply_data(apply_action) == (URI, STEP2)
    assert actions[1].command is not None
    assert (actions[1].command.command, actions[1].command.arguments) == (COMMAND_OPTIMIZE, [URI])
    assert actions[2].command is not None and actions[2].command.command == COMMAND_RESCORE


def kinds(actions: list[CodeAction]) -> list[tuple[str, str | None]]:
    return [(a.title.split(" (")[0], a.kind) for a in actions]


def test_commands_are_rewrites_where_the_light_bulb_looks() -> None:
    # No `only` (Neovim, Emacs, VS Code's light bulb and Ctrl+.): the quick fix first, then
    # refactor.rewrite commands, which VS Code lists (it hides source kinds there).
    state = parse_state(state_dict())
    expected = [("Apply GPO suggestion", CodeActionKind.QuickFix),
                ("Optimize this prompt", CodeActionKind.RefactorRewrite),
                ("Re-score", CodeActionKind.RefactorRewrite)]
    assert kinds(list_actions(state, INITIAL, URI)) == expected
    assert kinds(list_actions(state, INITIAL, URI, ["quickfix", "refactor"])) == expected
    assert kinds(list_actions(state, INITIAL, URI, ["refactor.rewrite"])) == expected[1:]
    assert kinds(list_actions(state, INITIAL, URI, ["quickfix"])) == expected[:1]
    assert list_actions(state, INITIAL, URI, ["refactor.extract"]) == []


def test_source_requests_get_the_commands_as_source_actions_only() -> None:
    # VS Code's "Source Action..." asks `only: ["source"]`: the same commands, once, with
    # source kinds (no rewrite duplicates, no quick fix).
    job = {"id": "j", "status": "running", "step": 0, "total_steps": 12}
    state = parse_state(state_dict(job=job))
    assert kinds(list_actions(state, INITIAL, URI, ["source"])) == [
        ("Stop optimizing", "source.gpo.stop"), ("Re-score", "source.gpo.rescore")]
    assert kinds(list_actions(None, INITIAL, URI, ["source.gpo.optimize"])) == [
        ("Optimize this prompt", "source.gpo.optimize")]
    assert [a.title for a in list_actions(state, INITIAL, URI, ["source", "quickfix"])] == [
        "Apply GPO suggestion (+7.5 pts, 12/31 words)", "Stop optimizing", "Re-score"]


def test_kind_matching_follows_the_kind_hierarchy() -> None:
    assert kind_matches("refactor.rewrite", [CodeActionKind.Refactor])
    assert kind_matches(CodeActionKind.Source, ["source"])
    assert kind_matches("source.gpo.stop", ["source.gpo"])
    assert not kind_matches("sourcery", ["source"])
    assert not kind_matches("refactor", ["refactor.rewrite"])


def test_which_clients_resolve_edits() -> None:
    assert resolves_edits(client_capabilities("visual-studio-code"))
    assert resolves_edits(client_capabilities("neovim@v0.7.0"))
    assert not resolves_edits(client_capabilities("emacs@v29.1"))  # eglot: no resolveSupport


def test_a_client_without_resolve_gets_the_edit_in_the_listing() -> None:
    state = parse_state(state_dict())
    source = FRONT + INITIAL
    prompt = parse_prompt(source, Path("/w/sentiment.prompt"))
    lazy = offered_actions(state, prompt, URI, None, resolves=True)
    assert lazy[0].edit is None
    eager = offered_actions(state, prompt, URI, None, resolves=False)
    assert [a.title for a in eager] == [a.title for a in lazy]
    assert eager[0].edit is not None and eager[0].edit.changes is not None
    assert apply(source, eager[0].edit.changes[URI]) == FRONT + STEP2 + "\n"
    assert all(a.edit is None for a in eager[1:])
    # Nothing to apply (the buffer is the suggestion): nothing is computed.
    applied = parse_prompt(FRONT + STEP2, Path("/w/sentiment.prompt"))
    assert [a.title for a in offered_actions(state, applied, URI, None, resolves=False)] == [
        "Optimize this prompt", "Re-score"]


def test_listing_while_running_offers_stop() -> None:
    job = {"id": "j", "status": "queued", "step": 0, "total_steps": 12}
    titles = [a.title for a in list_actions(parse_state(state_dict(job=job)), INITIAL, URI)]
    assert "Stop optimizing" in titles and "Optimize this prompt" not in titles
    action = list_actions(parse_state(state_dict(job=job)), INITIAL, URI)[1]
    assert action.command is not None and action.command.command == COMMAND_STOP


def test_no_apply_for_edited_text_over_budget_or_without_state() -> None:
    state = parse_state(state_dict())
    titles = [a.title for a in list_actions(state, INITIAL + " extra", URI)]
    assert titles == ["Optimize this prompt", "Re-score"]
    over = state_dict()
    over["suggestion"]["distance"] = 32
    listed = list_actions(parse_state(over), INITIAL, URI)
    assert not any(a.title.startswith("Apply") for a in listed)
    assert [a.title for a in list_actions(None, INITIAL, URI)] == [
        "Optimize this prompt",
        "Re-score",
    ]


def test_resolve_fills_the_minimal_edit_and_keeps_frontmatter() -> None:
    state = parse_state(state_dict())
    source = FRONT + INITIAL
    prompt = parse_prompt(source, Path("/w/sentiment.prompt"))
    listed = list_actions(state, prompt.body, URI)[0]
    resolved = resolve_apply(listed, state, prompt)
    assert resolved.title == listed.title and listed.edit is None
    assert resolved.edit is not None and resolved.edit.changes is not None
    edits = resolved.edit.changes[URI]
    result = apply(source, edits)
    assert result == FRONT + STEP2 + "\n"
    assert all(e.range.start.line >= FRONT.count("\n") for e in edits)


def test_resolve_refuses_when_the_document_changed() -> None:
    state = parse_state(state_dict())
    listed = list_actions(state, INITIAL, URI)[0]
    edited = parse_prompt(FRONT + INITIAL + "Be brief.\n", Path("/w/sentiment.prompt"))
    resolved = resolve_apply(listed, state, edited)
    assert resolved.edit is None
    assert resolved.disabled is not None and "changed" in resolved.disabled.reason


def test_resolve_refuses_a_stale_suggestion_text() -> None:
    state = parse_state(state_dict())
    stale = CodeAction(title="old", data={"action": "gpo.apply", "uri": URI, "text": "other"})
    prompt = parse_prompt(FRONT + INITIAL, Path("/w/sentiment.prompt"))
    assert resolve_apply(stale, state, prompt).disabled is not None


def test_resolve_passes_other_actions_through() -> None:
    other = CodeAction(title="x", data={"action": "else"})
    prompt = parse_prompt(FRONT + INITIAL, Path("/w/sentiment.prompt"))
    assert resolve_apply(other, None, prompt) is other
    assert apply_data(CodeAction(title="y", data=None)) is None
    assert apply_data(CodeAction(title="y", data={"action": "gpo.apply", "uri": 1})) is None


def test_the_offered_suggestion_is_picked_for_this_text_and_within_the_budget() -> None:
    state = parse_state(state_dict())
    offered = offered_suggestion(state, INITIAL)
    assert offered is not None and offered == state.suggestion
    assert offered_suggestion(state, INITIAL + " extra") is None  # picked for other text
    assert offered_suggestion(None, INITIAL) is None
    at_budget = state_dict()
    at_budget["suggestion"]["distance"] = at_budget["budget"]
    assert offered_suggestion(parse_state(at_budget), INITIAL) is not None
    over = state_dict()
    over["suggestion"]["distance"] = over["budget"] + 1
    assert offered_suggestion(parse_state(over), INITIAL) is None
