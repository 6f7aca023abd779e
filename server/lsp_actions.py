"""Code actions offered on a `.prompt` file: titles, cheap listing, and the resolved edit.

Listing runs on every cursor move, so it only reads the cached prompt state;
for a client that resolves edits (VS Code, Neovim 0.7) the apply action
carries no edit until `codeAction/resolve`, where the edit is computed
against the document as it is then. A client that does not say it resolves
`edit` (eglot 1.9 in Emacs 28 never sends the request) gets the edit in the
listing itself, computed against the document as it is at that request.

The other actions are server commands (workspace/executeCommand) with the
document URI as their one argument. Their kind follows the request's
`context.only`: VS Code's light bulb and Ctrl+. leave `source` kinds out,
so they are `refactor.rewrite` there (and when no `only` is sent, as Neovim
and Emacs do), and `source.gpo.*` when the client asks for source actions
(VS Code's "Source Action..." menu); never both, so no menu lists them twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lsprotocol.types import (
    ClientCapabilities,
    CodeAction,
    CodeActionDisabled,
    CodeActionKind,
    Command,
    WorkspaceEdit,
)

from gpo_server.lsp_edits import suggestion_workspace_edit
from gpo_server.prompt_state import PromptState, Suggestion, same_prompt

if TYPE_CHECKING:
    from gpo_engine.promptfile import PromptFile

COMMAND_OPTIMIZE = "gpo.optimize"
COMMAND_STOP = "gpo.stop"
COMMAND_RESCORE = "gpo.rescore"
COMMANDS = (COMMAND_OPTIMIZE, COMMAND_STOP, COMMAND_RESCORE)

OPTIMIZE_TITLE = "Optimize this prompt"
STOP_TITLE = "Stop optimizing"
RESCORE_TITLE = "Re-score"
APPLY_KIND = "gpo.apply"  # the `data.action` tag of the apply action
# The kinds of the command actions when a client asks for source actions.
SOURCE_KINDS = {COMMAND_OPTIMIZE: "source.gpo.optimize", COMMAND_STOP: "source.gpo.stop",
                COMMAND_RESCORE: "source.gpo.rescore"}
# Every kind this server offers, for its codeActionProvider capability.
OFFERED_KINDS = (CodeActionKind.QuickFix, CodeActionKind.RefactorRewrite, CodeActionKind.Source)


def format_gain(points: float) -> str:
    """Signed points with one decimal, '.0' dropped: +7.5, +10, -2.25 -> -2.2."""
    text = f"{points:+.1f}"
    if text in ("+0.0", "-0.0"):
        return "+0"
    return text[:-2] if text.endswith(".0") else text


def apply_title(suggestion: Suggestion, budget: int) -> str:
    """'Apply GPO suggestion (+7.5 pts, 12/31 words)'."""
    return (
        f"Apply GPO suggestion ({format_gain(suggestion.gain)} pts, "
        f"{suggestion.distance}/{budget} words)"
    )


def offered_suggestion(state: PromptState | None, body: str) -> Suggestion | None:
    """The suggestion to offer for a document whose template body is `body`: picked
    against that text and within the budget. The one place the editor decides it; the
    diagnostic, the listing, the resolved edit and `gpo/suggestion` all ask here."""
    suggestion = state.suggestion_for(body) if state is not None else None
    if state is None or suggestion is None or suggestion.distance > state.budget:
        return None
    return suggestion


def list_actions(state: PromptState | None, body: str, uri: str,
                 only: Sequence[str] | None = None) -> list[CodeAction]:
    """The actions for a document whose template body is `body`; the apply edit is left out.

    `only` is the request's `context.only`: the command actions take source
    kinds when it asks for source actions, and every action whose kind it
    does not cover is left out (as the client would drop it anyway).
    """
    source = asks_for_source(only)
    actions: list[CodeAction] = []
    suggestion = offered_suggestion(state, body)
    if state is not None and suggestion is not None:
        actions.append(
            CodeAction(
                title=apply_title(suggestion, state.budget),
                kind=CodeActionKind.QuickFix,
                is_preferred=True,
                data={"action": APPLY_KIND, "uri": uri, "text": suggestion.text},
            )
        )
    running = state is not None and state.job is not None and state.job.active
    if running:
        actions.append(_command_action(STOP_TITLE, COMMAND_STOP, uri, source))
    else:
        actions.append(_command_action(OPTIMIZE_TITLE, COMMAND_OPTIMIZE, uri, source))
    actions.append(_command_action(RESCORE_TITLE, COMMAND_RESCORE, uri, source))
    if only is None:
        return actions
    return [a for a in actions if a.kind is not None and kind_matches(a.kind, only)]


def asks_for_source(only: Sequence[str] | None) -> bool:
    """Whether `context.only` asks for source actions (`source` or a `source.` sub-kind)."""
    return only is not None and any(kind_matches(k, ["source"]) for k in only)


def kind_matches(kind: str, only: Sequence[str]) -> bool:
    """LSP's hierarchy: `refactor.rewrite` is covered by `refactor` and by itself."""
    name = _kind_name(kind)
    return any(name == _kind_name(k) or name.startswith(_kind_name(k) + ".") for k in only)


def _kind_name(kind: str) -> str:
    # CodeActionKind members are str enums whose str() is "CodeActionKind.Source".
    return kind.value if isinstance(kind, CodeActionKind) else kind


def _command_action(title: str, command: str, uri: str, source: bool) -> CodeAction:
    return CodeAction(
        title=title,
        kind=SOURCE_KINDS[command] if source else CodeActionKind.RefactorRewrite,
        command=Command(title=title, command=command, arguments=[uri]),
    )


def resolves_edits(capabilities: ClientCapabilities) -> bool:
    """Whether the client says it asks `codeAction/resolve` for an action's `edit`."""
    text = capabilities.text_document
    code_action = text.code_action if text is not None else None
    support = code_action.resolve_support if code_action is not None else None
    return support is not None and "edit" in support.properties


def offered_actions(state: PromptState | None, prompt: PromptFile, uri: str,
                    only: Sequence[str] | None, resolves: bool) -> list[CodeAction]:
    """The listing for one request: edits left to resolve when the client `resolves`,
    else the apply action's edit computed now, against the document `prompt` parsed."""
    actions = list_actions(state, prompt.body, uri, only)
    if resolves:
        return actions
    return [resolve_apply(a, state, prompt) if apply_data(a) else a for a in actions]


def apply_data(action: CodeAction) -> tuple[str, str] | None:
    """(uri, suggestion text) of an apply action coming back for resolve, else None."""
    data: Any = action.data
    if not isinstance(data, dict) or data.get("action") != APPLY_KIND:
        return None
    uri, text = data.get("uri"), data.get("text")
    if not isinstance(uri, str) or not isinstance(text, str):
        return None
    return uri, text


def resolve_apply(action: CodeAction, state: PromptState | None, prompt: PromptFile) -> CodeAction:
    """The apply action with its edit filled in against the document `prompt` parsed.

    The suggestion must still be the one offered for this text and within
    the budget: a document edited (or a state updated) between listing and
    resolving gets no edit, and the action's title says why, rather than an
    edit picked for other text.
    """
    found = apply_data(action)
    if found is None:
        return action
    uri, text = found
    current = offered_suggestion(state, prompt.body)
    if current is None or not same_prompt(current.text, text):
        reason = "the document or the suggestion changed; ask for code actions again"
        return _with(action, disabled=CodeActionDisabled(reason=reason))
    return _with(action, edit=suggestion_workspace_edit(uri, prompt, current.text))


def _with(
    action: CodeAction,
    *,
    edit: WorkspaceEdit | None = None,
    disabled: CodeActionDisabled | None = None,
) -> CodeAction:
    """A copy of the action with an edit or a disabled reason; the client's object is kept."""
    return CodeAction(
        title=action.title,
        kind=action.kind,
        diagnostics=action.diagnostics,
        is_preferred=action.is_preferred,
        disabled=disabled if disabled is not None else action.disabled,
        edit=edit if edit is not None else action.edit,
        command=action.command,
        data=action.data,
        tags=action.tags,
    )
