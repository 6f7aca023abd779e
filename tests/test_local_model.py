"""The embedded model: prompt rendering, model file handling, and real calls (marked)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from gpo_engine import local_model
from gpo_engine.errors import ConfigError, ModelCallError
from gpo_engine.llm import LLM
from gpo_engine.local_model import (
    MODELS,
    LocalModelSpec,
    model_file,
    register,
    render_prompt,
    require,
    spec_for,
)

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python is not installed")
GEMMA = "local/gemma-3-270m"


# -- rendering ------------------------------------------------------------------


def test_local_model_does_not_import_the_llm_layer_that_loads_it() -> None:
    # llm loads local_model lazily; local_model importing llm back was a cycle.
    import ast

    tree = ast.parse(Path(local_model.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert "llm" not in imported and "gpo_engine.llm" not in imported
    assert "models" in imported  # what it needs (the install command) comes from there


def test_render_user_message_is_the_document_as_written() -> None:
    prompt = "Review: great film\nSentiment:"
    assert render_prompt([{"role": "user", "content": prompt}]) == prompt


def test_render_joins_with_blank_lines_and_no_trailing_separator() -> None:
    messages = [
        {"role": "system", "content": "You improve prompts."},
        {"role": "user", "content": "Current prompt: Classify {{review}}."},
    ]
    assert render_prompt(messages) == "You improve prompts.\n\nCurrent prompt: Classify {{review}}."


def test_render_assistant_prefill_ends_the_document() -> None:
    messages = [
        {"role": "user", "content": "Write the new prompt between <START> and <END>."},
        {"role": "assistant", "content": "<START>"},
    ]
    rendered = render_prompt(messages)
    assert rendered == "Write the new prompt between <START> and <END>.\n\n<START>"
    assert rendered.endswith("<START>")


def test_render_content_parts_and_none() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
    ]
    assert render_prompt(messages) == "ab\n\n"


def test_render_empty() -> None:
    assert render_prompt([]) == ""


# -- model lookup and install hints -----------------------------------------------


def test_unknown_local_model_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown embedded model 'local/tiny'; available: "
        r"local/gemma-3-270m",
    ):
        spec_for("tiny")


def test_missing_llama_cpp_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "llama_cpp" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError) as info:
        require("gemma-3-270m")
    assert "needs llama_cpp" in str(info.value)
    assert "pip install '/path/to/gpo[local]'" in str(info.value)


async def test_llm_reports_missing_llama_cpp_as_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, package=None: None if name == "llama_cpp" else real_find_spec(name, package),
    )
    llm = LLM(cache_dir=None)
    with pytest.raises(ConfigError, match=r"pip install '/path/to/gpo\[local\]'"):
        await llm.complete(GEMMA, [{"role": "user", "content": "x"}])
    assert llm.usage.calls == 0


@pytest.fixture
def fake_package(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A stand-in for the GGUF package, so file handling is tested without 250 MB writes."""
    calls = types.SimpleNamespace(count=0, fail=False)
    module = types.ModuleType("fake_gguf_pkg")
    module.__spec__ = importlib.machinery.ModuleSpec("fake_gguf_pkg", None)

    def assemble(output_path: Path, overwrite: bool = False) -> Path:
        calls.count += 1
        if calls.fail:
            raise OSError(28, "No space left on device")
        Path(output_path).write_bytes(b"GGUF fake model")
        return Path(output_path)

    module.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_gguf_pkg", module)
    monkeypatch.setitem(
        MODELS,  # type: ignore[arg-type]
        "fake",
        LocalModelSpec(name="fake", package="fake_gguf_pkg", filename="fake.gguf"),
    )
    return calls


@needs_llama
def test_model_file_is_assembled_once(tmp_path: Path, fake_package: types.SimpleNamespace) -> None:
    path = model_file("fake", cache_dir=tmp_path)
    assert path == tmp_path / "models" / "fake.gguf"
    assert path.read_bytes() == b"GGUF fake model"
    assert model_file("fake", cache_dir=tmp_path) == path
    assert fake_package.count == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.gguf"]  # no partial left


@needs_llama
def test_model_file_write_failure_is_a_config_error(
    tmp_path: Path, fake_package: types.SimpleNamespace
) -> None:
    fake_package.fail = True
    with pytest.raises(ConfigError, match=r"cannot write the embedded model .*GPO_MODEL_DIR"):
        model_file("fake", cache_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_register_is_idempotent() -> None:
    import litellm

    register()
    register()
    entries = [e for e in litellm.custom_provider_map if e["provider"] == "local"]
    assert len(entries) == 1


# -- the real model ------------------------------------------------------------------


@needs_llama
@pytest.mark.local_model
async def test_real_call_answers_and_is_cached(tmp_path: Path) -> None:
    llm = LLM(cache_dir=tmp_path, timeout=120)
    messages = [{"role": "user", "content": "Q: What is the capital of France?\nA:"}]
    done = await llm.complete(GEMMA, messages, max_tokens=8, stop=["\n"])
    assert "Paris" in done.text
    assert done.prompt_tokens > 5 and 0 < done.completion_tokens <= 8
    assert done.cost == 0.0 and not llm.usage.unknown_price
    again = await llm.complete(GEMMA, messages, max_tokens=8, stop=["\n"])
    assert again.cached and again.text == done.text
    assert llm.usage.calls == 1 and llm.usage.cache_hits == 1


@needs_llama
@pytest.mark.local_model
async def test_real_prefill_continues_after_start() -> None:
    llm = LLM(cache_dir=None, timeout=120)
    messages = [
        {
            "role": "user",
            "content": "Rewrite the instruction to be clearer.\n\nInstruction: Classify the "
            "sentiment of {{review}}. Answer positive or negative.\n\nWrite the new "
            "instruction between <START> and <END>.",
        },
        {"role": "assistant", "content": "<START>"},
    ]
    first = await llm.complete(GEMMA, messages, temperature=1.0, max_tokens=40, sample=1)
    # The answer is the continuation only: the prefill is not echoed back.
    assert not first.text.lstrip().startswith("<START>")
    assert first.completion_tokens > 0
    # The sample index is the seed: the same sample reproduces the same text.
    second = await llm.complete(GEMMA, messages, temperature=1.0, max_tokens=40, sample=1)
    assert second.text == first.text and not second.cached


@needs_llama
@pytest.mark.local_model
async def test_real_prompt_over_context_is_not_retried() -> None:
    llm = LLM(cache_dir=None, timeout=120, backoff_base=0.01)
    with pytest.raises(ModelCallError) as info:
        await llm.complete(GEMMA, [{"role": "user", "content": "word " * 3000}], max_tokens=4)
    assert info.value.kind == "other"
    assert "reads at most 2048" in str(info.value)
    assert llm.usage.calls == 1 and llm.usage.retries == 0


@needs_llama
@pytest.mark.local_model
def test_real_model_file_lives_in_the_cache() -> None:
    path = model_file("gemma-3-270m")
    assert path.name == "gemma-3-270m-q4_k_m.gguf"
    assert path.parent.name == "models"
    assert path.stat().st_size > 200_000_000
    assert local_model.prepare("gemma-3-270m") is local_model.prepare("gemma-3-270m")


@pytest.mark.local_model
async def test_embedded_answers_are_shared_whatever_the_api_base(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    messages = [{"role": "user", "content": "The capital of France is"}]
    plain = LLM(cache_dir=tmp_path)
    await plain.complete(GEMMA, messages, max_tokens=3)
    plain.close()
    proxied = LLM(cache_dir=tmp_path, api_base="http://127.0.0.1:9/v1")
    await proxied.complete(GEMMA, messages, max_tokens=3)
    proxied.close()
    assert proxied.usage.cache_hits == 1 and proxied.usage.calls == 0


# -- conversations with roles ------------------------------------------------------


def test_a_plain_prompt_or_a_prefill_is_not_a_conversation() -> None:
    assert not local_model.is_conversation([{"role": "user", "content": "Q: x\nA:"}])
    assert not local_model.is_conversation([{"role": "user", "content": "q"},
                                            {"role": "assistant", "content": "<START>"}])
    assert local_model.is_conversation([{"role": "system", "content": "s"},
                                        {"role": "user", "content": "u"}])
    assert local_model.is_conversation([{"role": "user", "content": "a"},
                                        {"role": "assistant", "content": "b"},
                                        {"role": "user", "content": "c"}])


def test_chat_document_is_gemmas_turn_format_with_the_system_folded_in() -> None:
    document = local_model.chat_document([
        {"role": "system", "content": "\nBe terse.\n"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
    ])
    assert document == ("<start_of_turn>user\nBe terse.\n\n\nHi<end_of_turn>\n"
                        "<start_of_turn>model\nHello.<end_of_turn>\n"
                        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    # A final model message is a prefill the completion continues.
    assert local_model.chat_document([{"role": "user", "content": "Q"},
                                      {"role": "user", "content": "R"},
                                      {"role": "assistant", "content": "{"}]).endswith(
        "<start_of_turn>model\n{")


@needs_llama
@pytest.mark.local_model
async def test_real_conversation_is_answered_in_one_model_turn(tmp_path: Path) -> None:
    llm = LLM(cache_dir=tmp_path, timeout=120)
    messages = [{"role": "system", "content": "Answer with one word."},
                {"role": "user", "content": "What is the capital of France?"}]
    done = await llm.complete(GEMMA, messages, max_tokens=16)
    # The turn markers are control tokens, not text: a prompt of a few dozen
    # tokens, and the answer stops at the end of the model's turn.
    assert done.prompt_tokens < 40
    assert "<start_of_turn>" not in done.text and "<end_of_turn>" not in done.text
