"""Rendering a prompt as Dotprompt does, and the task call made of it.

A few cases of Dotprompt's own spec suite are copied here (roles, partials,
history, media, sections, defaults), so a clone without ../shared still
covers them; tests/test_dotprompt_spec.py runs the whole suite.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from dotpromptz import parse_document

from gpo_engine.callspec import (
    SCHEMA_INSTRUCTION,
    call_spec,
    litellm_model,
    model_problem,
    sendable,
    with_instruction,
)
from gpo_engine.errors import ConfigError
from gpo_engine.evaluate import evaluate
from gpo_engine.examples import Example
from gpo_engine.metrics import get_metric
from gpo_engine.promptfile import dotprompt_meta
from gpo_engine.rendering import PromptRenderer, RowData, run_blocking, to_chat


def _render(source: str, row: RowData | None = None, folder: Path | None = None,
            **files: str) -> list[dict[str, Any]]:
    if folder is not None:
        for name, text in files.items():
            (folder / f"_{name}.prompt").write_text(text, encoding="utf-8")
    meta, problems = dotprompt_meta(parse_document(source))
    assert problems == []
    renderer = PromptRenderer(meta, [folder] if folder else [])
    return [m.to_json() for m in renderer.render_sync(meta.template, row)]


# --- cases from Dotprompt's spec suite ----------------------------------------------


def test_spec_roles_split_messages() -> None:  # helpers/role.yaml::system_role
    got = _render('{{role "system"}}{{a}} from system\n{{role "user"}}{{b}} from user\n',
                  RowData({"a": "hi", "b": "howdy"}))
    assert got == [{"role": "system", "content": [{"text": "hi from system\n"}]},
                   {"role": "user", "content": [{"text": "howdy from user\n"}]}]


def test_spec_partial_with_context(tmp_path: Path) -> None:  # partials.yaml
    got = _render("{{> userGreeting name=username}}", RowData({"username": "Alice"}),
                  tmp_path, userGreeting="Welcome back, {{name}}!")
    assert got == [{"role": "user", "content": [{"text": "Welcome back, Alice!"}]}]


def test_spec_history_goes_after_the_system_prompt() -> None:  # helpers/role.yaml
    history = [{"role": "user", "content": [{"text": "hello"}]}]
    got = _render('{{role "system"}}This is the system prompt\n', RowData(messages=history))
    assert got == [{"role": "system", "content": [{"text": "This is the system prompt\n"}]},
                   {"role": "user", "content": [{"text": "hello"}]}]


def test_spec_history_helper_places_the_conversation() -> None:  # helpers/history.yaml
    history = [{"role": "user", "content": [{"text": "Q1"}]},
               {"role": "model", "content": [{"text": "A1"}]}]
    got = _render('{{role "system"}}S\n{{history}}{{role "user"}}Q2', RowData(messages=history))
    assert [m["role"] for m in got] == ["system", "user", "model", "user"]
    assert got[1]["metadata"] == {"purpose": "history"}


def test_spec_media_and_section_parts() -> None:  # helpers/media.yaml, section.yaml
    got = _render('{{section "intro"}}Look: {{media url=picture}}',
                  RowData({"picture": "https://example.com/a.png"}))
    assert got == [{"role": "user", "content": [
        {"metadata": {"purpose": "intro", "pending": True}},
        {"text": "Look: "},
        {"media": {"url": "https://example.com/a.png"}}]}]


def test_spec_input_default_fills_a_missing_value() -> None:  # variables.yaml
    got = _render("---\ninput:\n  default: {name: User}\n---\nHello, {{name}}!")
    assert got == [{"role": "user", "content": [{"text": "Hello, User!"}]}]


def test_spec_state_from_context() -> None:  # metadata.yaml::metadata_state
    got = _render("Count {{@state.count}}", RowData(context={"state": {"count": 42}}))
    assert got == [{"role": "user", "content": [{"text": "Count 42"}]}]


# --- errors -------------------------------------------------------------------------


def test_missing_and_circular_partials_and_unknown_roles_are_config_errors(
    tmp_path: Path,
) -> None:
    renderer = PromptRenderer(None, [tmp_path])
    with pytest.raises(ConfigError, match=r"partial 'nope' not found: looked for .*_nope\.prompt"):
        renderer.render_sync("{{> nope}}")
    (tmp_path / "_a.prompt").write_text("{{> b}}")
    (tmp_path / "_b.prompt").write_text("{{> a}}")
    with pytest.raises(ConfigError, match="circular partials: a -> b -> a"):
        renderer.render_sync("{{> a}}")
    with pytest.raises(ConfigError, match="unknown role 'robot'"):
        renderer.render_sync('{{role "robot"}}hi')


def test_a_partial_name_cannot_leave_the_partial_folders(tmp_path: Path) -> None:
    (tmp_path / "_secret.prompt").write_text("secret")
    inner = tmp_path / "inner"
    inner.mkdir()
    with pytest.raises(ConfigError, match="not found"):
        PromptRenderer(None, [inner]).render_sync("{{> ../secret}}")


def test_the_log_helper_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # stdout is the language server's channel to the editor.
    assert _render("a{{log x}}b", RowData({"x": 1})) == [
        {"role": "user", "content": [{"text": "ab"}]}]
    assert capsys.readouterr().out == ""


async def test_rendering_works_inside_a_running_event_loop() -> None:
    # Parsing runs inside the daemon's and the language server's loops.
    source = "---\noutput:\n  schema: {name: string}\n---\n{{x}}"
    meta, problems = dotprompt_meta(parse_document(source))
    assert problems == [] and meta.output.schema["required"] == ["name"]
    renderer = PromptRenderer(meta, [])
    assert renderer.render_sync("{{x}}", RowData({"x": "y"}))[0].text == "y"
    assert renderer.metadata()["output"]["schema"]["type"] == "object"
    assert run_blocking(lambda: asyncio.sleep(0, result=5)) == 5


# --- to litellm's messages ----------------------------------------------------------


def test_to_chat_maps_roles_strips_the_trailing_newline_and_sends_media(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(b"\x89PNG")
    (tmp_path / "hi.wav").write_bytes(b"RIFF")
    meta, _ = dotprompt_meta(parse_document(
        '{{role "system"}}S\n{{role "user"}}Look {{media url=img}}{{media url=snd}}\n'
        '{{role "model"}}Sure\n'))
    messages = PromptRenderer(meta, []).render_sync(
        meta.template, RowData({"img": "cat.png", "snd": "hi.wav"}))
    chat = to_chat(messages, tmp_path)
    assert chat[0] == {"role": "system", "content": "S"}
    assert chat[2] == {"role": "assistant", "content": "Sure"}
    parts = chat[1]["content"]
    png = base64.b64encode(b"\x89PNG").decode()
    assert parts[0] == {"type": "text", "text": "Look "}
    assert parts[1] == {"type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{png}", "format": "image/png"}}
    assert parts[2]["type"] == "input_audio"
    assert parts[2]["input_audio"]["data"] == base64.b64encode(b"RIFF").decode()


def test_a_missing_media_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    messages = PromptRenderer(None, []).render_sync("{{media url=f}}", RowData({"f": "gone.png"}))
    with pytest.raises(ConfigError, match=r"media file .*gone\.png"):
        to_chat(messages, tmp_path)


async def test_a_row_that_cannot_render_scores_zero_with_its_reason(tmp_path: Path) -> None:
    renderer = PromptRenderer(None, [])

    async def task(template: str, example: Example) -> str:
        messages = await renderer.render(template, RowData(example.inputs))
        return str(to_chat(messages, tmp_path))

    rows = [Example({"f": "https://x/a.png"}, "yes", "dev", 1, "u1"),
            Example({"f": "missing.png"}, "yes", "dev", 2, "u2")]
    result = await evaluate(task, "{{media url=f}}", rows, get_metric("contains"))
    failed = result.by_uid()["u2"]
    assert failed.reason == "render failed" and "example line 2" in failed.error
    assert "missing.png" in failed.error


# --- the call an application makes --------------------------------------------------


def test_genkit_model_prefixes_map_to_litellm() -> None:
    assert litellm_model("googleai/gemini-2.5-flash") == "gemini/gemini-2.5-flash"
    assert litellm_model("vertexai/gemini-2.5-pro") == "vertex_ai/gemini-2.5-pro"
    for same in ("openai/gpt-4o-mini", "anthropic/claude-3-5-haiku", "ollama/llama3", "gpt-4o"):
        assert litellm_model(same) == same and model_problem(same) is None
    problem = model_problem("acme/model-1")
    assert problem is not None and "unknown model provider 'acme/'" in problem
    assert "googleai/" in problem and "vertexai/" in problem


def test_every_known_prefix_is_a_litellm_provider() -> None:
    litellm = pytest.importorskip("litellm")
    from gpo_engine.callspec import GENKIT_PROVIDERS, LITELLM_PROVIDERS

    providers = {str(p.value) if hasattr(p, "value") else str(p) for p in litellm.provider_list}
    missing = [p for p in (*LITELLM_PROVIDERS, *GENKIT_PROVIDERS.values()) if p not in providers]
    assert missing == []


def test_config_maps_to_litellm_parameters_and_gpo_max_tokens_wins_when_written() -> None:
    config = {"temperature": 0.3, "maxOutputTokens": 99, "topP": 0.9, "topK": 40,
              "stopSequences": ["##"], "apiKey": "sk-secret", "logprobs": True}
    spec = call_spec("googleai/gemini-2.5-flash", config, max_tokens=48,
                     max_tokens_override=False, output=None)
    assert spec.model == "gemini/gemini-2.5-flash"
    assert spec.params == {"temperature": 0.3, "max_tokens": 99, "top_p": 0.9, "top_k": 40,
                           "stop": ["##"], "logprobs": True}
    assert any("API key" in note for note in spec.notes)
    assert "sk-secret" not in str(spec.fingerprint())
    written = call_spec("m", config, max_tokens=48, max_tokens_override=True, output=None)
    assert written.params["max_tokens"] == 48
    plain = call_spec("m", None, max_tokens=48, max_tokens_override=False, output=None)
    assert plain.params == {"temperature": 0.0, "max_tokens": 48} and plain.fingerprint() == {}


def test_parameters_the_provider_does_not_take_are_dropped_with_a_note() -> None:
    spec = call_spec("openai/gpt-4o-mini", {"topK": 40, "topP": 0.5, "stopSequences": ["x"],
                                            "logprobs": True}, max_tokens=48,
                     max_tokens_override=False, output=None)
    send = sendable(spec, frozenset({"temperature", "max_tokens", "top_p", "stop"}), False)
    assert send.params() == {"temperature": 0.0, "max_tokens": 48, "stop": ["x"], "top_p": 0.5}
    assert any("config.topK is not sent" in n for n in send.notes)
    assert any("config.logprobs is not sent" in n for n in send.notes)
    # litellm does not know the model: Genkit's common parameters go, others do not.
    unknown = sendable(spec, None, False)
    assert unknown.extra == {"top_k": 40, "top_p": 0.5}


def test_json_output_asks_for_a_schema_or_appends_genkits_instruction() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    spec = call_spec("m", None, max_tokens=48, max_tokens_override=False,
                     output={"format": "json", "schema": schema})
    held = sendable(spec, frozenset({"response_format"}), True)
    assert held.extra["response_format"]["json_schema"]["schema"] == schema
    assert held.instruction is None
    told = sendable(spec, frozenset({"response_format"}), False)
    assert told.extra["response_format"] == {"type": "json_object"}
    assert told.instruction is not None
    assert told.instruction.startswith(SCHEMA_INSTRUCTION.split("{")[0])
    chat = with_instruction([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                            told.instruction)
    assert chat[1]["content"].startswith("u\n\nOutput should be in JSON format")
    assert chat[0] == {"role": "system", "content": "s"}
