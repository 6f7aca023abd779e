"""The LSP logic modules together: no litellm, and a whole apply cycle on a real file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gpo_engine.promptfile import parse_prompt
from gpo_engine.update import word_distance
from gpo_server.lsp_actions import list_actions, resolve_apply
from gpo_server.lsp_diagnostics import suggestion_diagnostic
from gpo_server.lsp_hover import hover_markdown
from gpo_server.prompt_state import parse_state
from tests.lsp_samples import state_dict
from tests.test_lsp_edits import apply

ROOT = Path(__file__).resolve().parent.parent
MODULES = (
    "gpo_server.prompt_state",
    "gpo_server.text_positions",
    "gpo_server.lsp_edits",
    "gpo_server.lsp_diagnostics",
    "gpo_server.lsp_hover",
    "gpo_server.lsp_actions",
)


def test_logic_modules_never_import_litellm() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('litellm', 'aiohttp', 'llama_cpp', 'gpo_engine.llm'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_sample_file_round_trip() -> None:
    """Open the sentiment example, offer the suggestion, apply it: frontmatter byte-identical."""
    path = ROOT / "examples" / "sentiment" / "sentiment.prompt"
    source = path.read_text(encoding="utf-8")
    prompt = parse_prompt(source, path)
    suggestion = "Decide if {{review}} is positive or negative. Answer with one word."
    distance = word_distance(prompt.body, suggestion)
    data = state_dict(path=str(path), budget=max(distance, 1))
    data["scored"][0]["text"] = prompt.body
    data["suggestion"].update(text=suggestion, base=prompt.body, distance=distance)
    data["scored"][2]["text"] = suggestion
    state = parse_state(data)
    uri = path.as_uri()

    assert "- dev: **65.0**" in hover_markdown(state, prompt.body)
    note = suggestion_diagnostic(source, len(prompt.frontmatter), state.suggestion)  # type: ignore[arg-type]
    assert note.range.start.line == prompt.body_line - 1 + _leading_lines(prompt.body)
    listed = list_actions(state, prompt.body, uri)[0]
    assert listed.title.startswith("Apply GPO suggestion (+7.5 pts, ")
    resolved = resolve_apply(listed, state, prompt)
    assert resolved.edit is not None and resolved.edit.changes is not None
    result = apply(source, resolved.edit.changes[uri])

    applied = parse_prompt(result, path)
    assert applied.frontmatter.encode() == prompt.frontmatter.encode()
    assert word_distance(prompt.body, applied.body) == distance <= state.budget
    assert applied.body.strip() == suggestion
    # After applying, the hover reads the suggestion's scores and nothing more is offered.
    assert "- dev: **72.5** (n=40)" in hover_markdown(state, applied.body)
    assert list_actions(state, applied.body, uri)[0].title == "Optimize this prompt"


def _leading_lines(body: str) -> int:
    return body[: len(body) - len(body.lstrip())].count("\n")
