"""The direct path sends what litellm sends, and leaves litellm unimported.

The equivalence test makes the same calls through both paths against the test
model server and compares the JSON bodies the server received. The fault
tests of tests/test_llm.py run on both paths (its `call_path` fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from model_server import ModelServer

from gpo_engine import direct, prices
from gpo_engine.llm import LLM

HI = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
CALLS: list[dict[str, Any]] = [
    {},
    {"temperature": 0.7, "max_tokens": 9},
    {"stop": ["\n", "###"]},
    {"extra": {"top_p": 0.5, "seed": 3, "presence_penalty": 0.1, "frequency_penalty": 0.2}},
    {"extra": {"response_format": {"type": "json_object"}}},
    {"extra": {"response_format": {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": SCHEMA}}}},
    {"extra": {"n": 2}},
]


async def _bodies(server: ModelServer, *, direct_path: bool, model: str) -> list[dict[str, Any]]:
    llm = LLM(cache_dir=None, api_base=server.api_base, api_key="test", direct_path=direct_path)
    start = len(server.bodies)
    for call in CALLS:
        await llm.complete(model, HI, **call)
    assert llm.usage.model(model).path == ("direct" if direct_path else "litellm")
    return server.bodies[start:]


@pytest.mark.parametrize("model", ["openai/fake-model", "hosted_vllm/some-org/model"])
async def test_the_direct_path_sends_the_bodies_litellm_sends(model: str) -> None:
    async with ModelServer() as server:
        through_litellm = await _bodies(server, direct_path=False, model=model)
        straight = await _bodies(server, direct_path=True, model=model)
    assert len(straight) == len(through_litellm) == len(CALLS)
    for sent, expected in zip(straight, through_litellm, strict=True):
        assert sent == expected


def test_routes() -> None:
    assert direct.route("openai/gpt-4o-mini", None).path == "direct"
    assert direct.route("gpt-4o-mini", None) == direct.Route(
        "direct", "OpenAI-compatible chat completions", "gpt-4o-mini")
    assert direct.route("litellm_proxy/team-model", "http://proxy/v1").name == "team-model"
    assert direct.route("anthropic/claude-3-5-haiku-latest", None).path == "litellm"
    assert direct.route("gemini/gemini-2.5-flash", None).path == "litellm"
    assert direct.route("some-unknown-model", None).path == "litellm"
    # A parameter the direct path does not know is litellm's to translate.
    assert direct.route("openai/x", None, {"logprobs": True}).path == "litellm"
    reasoning = next(name for name, e in prices._table().items()
                     if e.get("litellm_provider") == "openai" and e.get("supports_reasoning")
                     and e.get("mode") == "chat")
    assert direct.route(f"openai/{reasoning}", None).path == "litellm"


def test_prices_come_from_litellms_list_without_importing_it() -> None:
    litellm = pytest.importorskip("litellm")
    for model in ("openai/gpt-4o-mini", "gpt-4o-mini", "gemini/gemini-2.5-flash"):
        ours = prices.price(model, 1000, 500)
        theirs = sum(litellm.cost_per_token(model=model, prompt_tokens=1000,
                                            completion_tokens=500))
        assert ours == pytest.approx(theirs), model
    assert prices.price("openai/not-a-model", 10, 10) is None
    assert prices.supports_response_schema("openai/gpt-4o-mini")


async def test_a_missing_key_for_openai_itself_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpo_engine.errors import ModelCallError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    llm = LLM(cache_dir=None, direct_path=True)
    with pytest.raises(ModelCallError) as info:
        await llm.complete("openai/gpt-4o-mini", HI)
    assert info.value.kind == "auth" and "OPENAI_API_KEY" in str(info.value)
    assert llm.usage.calls == 0


def test_a_direct_run_never_imports_litellm(tmp_path: Path) -> None:
    # gpo eval against an OpenAI-compatible endpoint, priced and cached, in a
    # fresh interpreter: litellm (3 s, 200 MB) stays out of the process.
    script = tmp_path / "run.py"
    script.write_text(
        "import asyncio, json, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from model_server import ModelServer\n"
        "from gpo_engine.llm import LLM\n"
        "async def main():\n"
        "    async with ModelServer() as server:\n"
        f"        llm = LLM(cache_dir={str(tmp_path / 'cache')!r}, api_base=server.api_base,"
        " api_key='test')\n"
        "        await llm.complete('openai/gpt-4o-mini', [{'role': 'user', 'content': 'hi'}],"
        " extra={'response_format': {'type': 'json_object'}})\n"
        "        print(json.dumps({'cost': llm.usage.cost, 'path':"
        " llm.usage.model('openai/gpt-4o-mini').path}))\n"
        "asyncio.run(main())\n"
        "print('litellm' in sys.modules)\n", encoding="utf-8")
    env = {**os.environ, "GPO_DIRECT": "1"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    usage_line, imported = out.stdout.strip().splitlines()
    usage = json.loads(usage_line)
    assert usage["path"] == "direct" and usage["cost"] > 0
    assert imported == "False"


def test_a_litellm_proxy_model_reads_the_proxys_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("LITELLM_PROXY_API_BASE", "http://proxy:4000/")
    monkeypatch.setenv("LITELLM_PROXY_API_KEY", "sk-team")
    url, headers = direct.endpoint(None, None, "litellm_proxy/gpt-4o")
    assert url == "http://proxy:4000/chat/completions"
    assert headers["Authorization"] == "Bearer sk-team"  # never the OpenAI key
    url, headers = direct.endpoint("http://other/v1", None, "litellm_proxy/gpt-4o")
    assert url == "http://other/v1/chat/completions"  # --api-base wins
    _, headers = direct.endpoint(None, None, "openai/gpt-4o")
    assert headers["Authorization"] == "Bearer sk-openai"
    monkeypatch.delenv("LITELLM_PROXY_API_BASE")
    with pytest.raises(direct.MissingKey, match="LITELLM_PROXY_API_BASE"):
        direct.endpoint(None, None, "litellm_proxy/gpt-4o")
