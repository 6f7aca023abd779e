"""Through the real `gpo lsp`: what Dotprompt's linter reports shows at its line, the
example-set checks land in the right file, and the hover counts the rendered messages.

No daemon is needed (none is reachable): all of this is the server's own local work.
"""

from __future__ import annotations

import json
from pathlib import Path

from lsprotocol import types

from tests.test_lsp_server import change_doc, hover_text, open_doc, session, wait_until

FRONT = "---\nmodel: openai/x\n---\n"


async def test_linter_problems_examples_checks_and_messages_hover(short_dir: Path) -> None:
    ws = short_dir / "ws"
    ws.mkdir()
    (ws / "_a.prompt").write_text("{{> b}}", encoding="utf-8")
    (ws / "_b.prompt").write_text("{{> a}}", encoding="utf-8")
    unreachable = {"daemon": {"address": str(short_dir / "nobody.sock")}}
    async with session(short_dir, "visual-studio-code", ws, init=unreachable) as client:
        def seen(uri: str) -> list[tuple[int, int, str, types.DiagnosticSeverity | None]]:
            return [(d.range.start.line, d.range.start.character, d.message, d.severity)
                    for d in client.diagnostics.get(uri, [])]

        async def diagnosed(name: str, text: str) -> list[tuple[int, int, str]]:
            path = ws / name
            path.write_text(text, encoding="utf-8")
            uri = open_doc(client, path, text)
            await wait_until(lambda: uri in client.diagnostics, f"diagnostics of {name}")
            return [found[:3] for found in seen(uri)]

        # Each at its 0-based line and character, with Dotprompt's reason.
        assert await diagnosed("unclosed.prompt", FRONT + "line one\n{{#if country}}yes\n") == [
            (4, 0, "template error: unclosed block")]
        assert await diagnosed("missing.prompt", FRONT + "Hi {{country}}\nSee {{> nope}}\n") == [
            (4, 4, f"partial 'nope' not found: looked for {ws / '_nope.prompt'}")]
        assert await diagnosed("circle.prompt", FRONT + "Hi {{country}}\n\nthen {{> a}}\n") == [
            (5, 5, "circular partials: a -> b -> a")]
        roles = FRONT + '{{role "system"}}Be brief.\n{{role "robot"}}Hi {{country}}\n'
        assert await diagnosed("role.prompt", roles) == [
            (4, 0, "template error: unknown role 'robot'; Dotprompt knows system, user, "
                   "model, tool")]
        assert await diagnosed("yaml.prompt", "---\nmodel: x\nconfig: a: b\n---\nHi\n") == [
            (2, 9, "frontmatter: invalid YAML: mapping values are not allowed here")]

        # Against the example set: a variable no row has, once at its tag in the prompt;
        # a column the template never reads, a warning in the example file.
        examples = ws / "chat.examples.jsonl"
        examples.write_text("".join(json.dumps(row) + "\n" for row in [
            {"question": "Capital of Peru?", "expected": "Lima", "split": "dev"},
            {"question": "Capital of Chile?", "notes": "x", "expected": "Santiago"}]),
            encoding="utf-8")
        chat = FRONT + '{{role "system"}}Answer in one word.\n{{role "user"}}{{question}}\n'
        assert await diagnosed("chat.prompt", chat) == []
        example_uri = examples.as_uri()
        await wait_until(lambda: seen(example_uri), "the example file's warning")
        assert seen(example_uri) == [(1, 34, "example column 'notes' is never read by the "
                                      "template", types.DiagnosticSeverity.Warning)]
        # The hover renders the buffer with the first row: two messages, their roles.
        uri = (ws / "chat.prompt").as_uri()
        assert (await hover_text(client, uri, 3)).endswith("- messages: 2 (system, user)")

        # Typed, not saved: a variable the rows never give is an error at its first tag.
        typo = chat.replace("{{question}}", "{{#if tone}}({{tone}}){{/if}} {{question}}")
        change_doc(client, uri, 2, typo)
        await wait_until(lambda: seen(uri), "the edit's diagnostics")
        assert seen(uri) == [(4, 15, "variable 'tone' is not in the example set "
                              "chat.examples.jsonl", types.DiagnosticSeverity.Error)]
