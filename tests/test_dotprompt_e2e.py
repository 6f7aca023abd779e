"""A Genkit-style prompt end to end: what the model server receives is what
the application would send.

The prompt has a system and a user message, a partial from `_policy.prompt`,
`config` (temperature, maxOutputTokens, stopSequences) and a JSON output
schema scored with the `json` metric. `gpo eval`, `gpo optimize` and
`gpo render` run on it as a user runs them; the assertions are made on the
HTTP bodies the test model server received.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gpo_server.cli import main
from tests.model_server import ModelServer
from tests.prompt_files import write_prompt
from tests.scripted_models import is_meta_prompt

POLICY = "Urgent means the customer cannot work at all."
SYSTEM = "You sort support tickets."
PROPOSAL = "<START>You sort support tickets and flag the ones that stop work. {{> policy}}<END>"

PROMPT = f"""---
model: openai/ticket-model
config:
  temperature: 0.2
  maxOutputTokens: 64
  stopSequences: ["###"]
output:
  format: json
  schema:
    category: string, billing or login or other
    urgent: boolean
gpo.metric: json
gpo.steps: 1
gpo.candidates: 2
gpo.batch_size: 4
gpo.race_size: 4
---
{{{{role "system"}}}}
{SYSTEM} {{{{> policy}}}}
{{{{role "user"}}}}
Ticket: {{{{ticket}}}}
"""

TICKETS = [
    ("I was charged twice this month", "billing", False),
    ("I cannot log in and the whole team is blocked", "login", True),
    ("Please change my invoice address", "billing", False),
    ("Password reset mail never arrives, nobody can work", "login", True),
    ("Where can I download the app?", "other", False),
    ("The login page is slow", "login", False),
]


def write_tickets(folder: Path) -> Path:
    (folder / "_policy.prompt").write_text(POLICY, encoding="utf-8")
    splits = ["train", "dev", "test"]
    return write_prompt(folder, "tickets", PROMPT, [
        {"ticket": t, "expected": {"category": c, "urgent": u}, "split": splits[i % 3]}
        for i, (t, c, u) in enumerate(TICKETS * 2)])


def answer(messages: list[dict[str, Any]]) -> str:
    """The optimizer gets PROPOSAL; the task model gets the category right always and
    the urgency right only when the system message asks to flag what stops work."""
    if is_meta_prompt(messages):
        return PROPOSAL
    system = str(messages[0]["content"]) if messages[0]["role"] == "system" else ""
    ticket = _text(messages[-1]).split("Ticket:", 1)[-1].split("\n", 1)[0].strip()
    category, urgent = next((c, u) for t, c, u in TICKETS if t == ticket)
    return json.dumps({"category": category,
                       "urgent": urgent if "stop work" in system else False})


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


pytestmark = pytest.mark.usefixtures("api_key")


async def _gpo(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def _task_bodies(server: ModelServer) -> list[dict[str, Any]]:
    return [b for b in server.bodies if not is_meta_prompt(b["messages"])]


def assert_sent_as_the_application_would(body: dict[str, Any]) -> None:
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    # The system text as Dotprompt renders it (the line break after the role tag
    # included), the partial's text in it; an optimized system text keeps it too.
    assert messages[0]["content"] == f"\n{SYSTEM} {POLICY}" or (
        messages[0]["content"].endswith(POLICY))
    assert _text(messages[1]).startswith("\nTicket: ")  # as Dotprompt renders it
    assert body["temperature"] == 0.2 and body["max_tokens"] == 64
    assert body["stop"] == ["###"]
    asks_json = "response_format" in body or "Output should be in JSON format" in _text(
        messages[-1])
    assert asks_json
    assert not any("<<<dotprompt" in json.dumps(m) for m in messages)


async def test_eval_sends_roles_partial_config_and_json_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_tickets(tmp_path)
    async with ModelServer(answer=answer) as server:
        code = await _gpo("eval", str(prompt), "--api-base", server.api_base, "--json",
                          "--cache-dir", str(tmp_path / "cache"))
    assert code == 0
    bodies = _task_bodies(server)
    assert len(bodies) == 8  # 4 dev + 4 test rows
    for body in bodies:
        assert_sent_as_the_application_would(body)
    tickets = {_text(b["messages"][1]).split("\n")[1] for b in bodies}
    assert "Ticket: I cannot log in and the whole team is blocked" in tickets
    out = json.loads(capsys.readouterr().out)
    # The json metric: category always right, urgency right on the non-urgent rows only.
    dev_rows = [r for i, r in enumerate(TICKETS * 2) if i % 3 == 1]
    expected = 100 * sum(1.0 if not u else 0.5 for _, _, u in dev_rows) / len(dev_rows)
    assert out["dev"]["score"] == pytest.approx(expected)


async def test_optimize_rewrites_the_system_text_and_keeps_the_structure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_tickets(tmp_path)
    original = prompt.read_text(encoding="utf-8")
    async with ModelServer(answer=answer) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base, "--json",
                          "--cache-dir", str(tmp_path / "cache"), "--write")
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["best_dev"]["score"] == 100.0
    for body in _task_bodies(server):
        assert_sent_as_the_application_would(body)
    text = prompt.read_text(encoding="utf-8")
    frontmatter = original[: original.index("---\n", 4) + 4]
    assert text.startswith(frontmatter)  # byte for byte
    body = text[len(frontmatter):]
    assert body == ('{{role "system"}}\nYou sort support tickets and flag the ones that stop '
                    'work. {{> policy}}\n{{role "user"}}\nTicket: {{ticket}}\n') or (
        body.count('{{role "system"}}') == 1 and "{{> policy}}" in body
        and "stop work" in body and body.endswith('{{role "user"}}\nTicket: {{ticket}}\n'))
    assert (tmp_path / "_policy.prompt").read_text(encoding="utf-8") == POLICY


async def test_render_json_shows_what_the_task_call_sends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_tickets(tmp_path)
    assert await _gpo("render", str(prompt), "--json", "--row", "2") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "openai/ticket-model"
    assert [m["role"] for m in out["messages"]] == ["system", "user"]
    assert out["messages"][0]["content"] == f"\n{SYSTEM} {POLICY}"  # as Dotprompt renders it
    assert _text(out["messages"][1]).startswith(f"\nTicket: {TICKETS[1][0]}")
    assert out["params"]["temperature"] == 0.2 and out["params"]["max_tokens"] == 64
    assert out["params"]["stop"] == ["###"]
    assert await _gpo("render", str(prompt), "--json", "--input",
                      '{"ticket": "hello", "messages": [{"role": "user", "content": "hi"}]}') == 0
    given = json.loads(capsys.readouterr().out)
    # History goes where Dotprompt puts it without {{history}}: before the last user message.
    assert [m["role"] for m in given["messages"]] == ["system", "user", "user"]
    assert given["messages"][1]["content"] == "hi"
    assert _text(given["messages"][2]).startswith("\nTicket: hello")


def test_render_refuses_a_row_out_of_range_and_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_tickets(tmp_path)
    assert main(["render", str(prompt), "--row", "99"]) == 2
    assert "has rows 1 to 12" in capsys.readouterr().err
    assert main(["render", str(prompt), "--input", "{nope"]) == 1
    assert "--input is not valid JSON" in capsys.readouterr().err


async def test_a_config_key_the_provider_does_not_take_is_a_warning_and_not_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_tickets(tmp_path)
    text = prompt.read_text(encoding="utf-8")
    prompt.write_text(text.replace("  temperature: 0.2\n", "  temperature: 0.2\n  topK: 40\n"),
                      encoding="utf-8")
    async with ModelServer(answer=answer) as server:
        code = await _gpo("eval", str(prompt), "--api-base", server.api_base, "--json",
                          "--cache-dir", str(tmp_path / "cache"))
    assert code == 0
    assert "config.topK is not sent: openai/ticket-model does not take 'top_k'" in (
        capsys.readouterr().err.replace("\n", " "))
    assert all("top_k" not in body for body in _task_bodies(server))


def test_the_trajectory_key_covers_the_partials_and_the_call(tmp_path: Path) -> None:
    from gpo_engine.task import load_task

    prompt = write_tickets(tmp_path)
    before = load_task(prompt).fingerprint()
    assert before["partials"] == {"policy": POLICY}
    assert before["call"]["temperature"] == 0.2 and before["call"]["max_tokens"] == 64
    (tmp_path / "_policy.prompt").write_text("Urgent means now.", encoding="utf-8")
    assert load_task(prompt).fingerprint() != before  # another trajectory, not a resume
