"""A cache you can trust: keys that cover every sampling parameter, `gpo cache info|clear`,
--no-cache, and a cache that cannot be written degrading to no caching."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from gpo_engine.llm import LLM
from gpo_server.cli import main
from tests.model_server import ModelServer
from tests.scripted_models import ScriptedModels, write_capitals

MODEL = "openai/fake"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test")


# A changed value for every keyword parameter of LLM.complete. A parameter added
# to complete() without an entry here fails the test below: it must be in the key.
CHANGED: dict[str, Any] = {"temperature": 0.7, "max_tokens": 99, "stop": ["\n\n"], "sample": 3,
                           "extra": {"top_p": 0.5}}


async def test_every_sampling_parameter_and_the_sample_index_are_in_the_key(
    tmp_path: Path,
) -> None:
    params = [name for name, p in inspect.signature(LLM.complete).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert sorted(params) == sorted(CHANGED), "a new complete() parameter needs a key test"
    async with ModelServer() as server:
        llm = LLM(cache_dir=tmp_path, api_base=server.api_base, api_key="test")
        await llm.complete(MODEL, HI)
        for name, value in CHANGED.items():
            before = server.requests
            done = await llm.complete(MODEL, HI, **{name: value})
            assert not done.cached and server.requests == before + 1, name
        # Every further parameter's value is in the key too (config's topP, a JSON request).
        for extra in ({"top_p": 0.6}, {"response_format": {"type": "json_object"}}):
            before = server.requests
            assert not (await llm.complete(MODEL, HI, extra=extra)).cached
            assert server.requests == before + 1 and server.bodies[-1]["top_p" if "top_p" in extra
                                                                      else "response_format"]
        # Repeated samples are independent requests; asking again is free.
        texts = [await llm.complete(MODEL, HI, temperature=1.0, sample=i) for i in range(3)]
        sent = server.requests
        again = [await llm.complete(MODEL, HI, temperature=1.0, sample=i) for i in range(3)]
        assert server.requests == sent and all(a.cached for a in again)
        assert [a.text for a in again] == [t.text for t in texts]
        llm.close()


async def _gpo(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def _optimize(prompt: Path, cache: Path, *extra: str) -> int:
    async with ModelServer(answer=ScriptedModels().answer) as server:
        return await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--cache-dir", str(cache), "--json", *extra)


def _info(cache: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    return {p["name"]: p for p in data["parts"]} | {"location": data["location"]}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_info_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    empty = _info(cache, capsys)
    assert empty["location"] == str(cache)
    assert empty["responses"]["exists"] is False and empty["responses"]["entries"] == 0
    assert not cache.exists()  # looking does not create it
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "weights.gguf").write_bytes(b"w" * 100)

    assert await _optimize(write_capitals(tmp_path / "p"), cache) == 0
    full = _info(cache, capsys)
    assert full["responses"]["entries"] > 10 and full["responses"]["bytes"] > 0
    assert full["trajectories"]["entries"] >= 1

    # Without a terminal and without --yes nothing is deleted.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 1
    assert "pass --yes" in capsys.readouterr().err
    # A terminal is asked; "n" keeps everything.
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 1
    assert "nothing deleted" in capsys.readouterr().err
    assert _info(cache, capsys)["responses"]["entries"] == full["responses"]["entries"]
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    err = capsys.readouterr().err
    assert f"delete {full['responses']['entries']} responses" in err
    after = _info(cache, capsys)
    assert after["responses"]["entries"] == 0
    assert after["trajectories"]["entries"] == full["trajectories"]["entries"]  # kept
    assert main(["cache", "clear", "--cache-dir", str(cache), "--trajectories", "--yes"]) == 0
    assert _info(cache, capsys)["trajectories"]["entries"] == 0
    assert (cache / "models" / "weights.gguf").read_bytes() == b"w" * 100  # never touched
    assert main(["cache", "clear", "--cache-dir", str(cache), "--yes"]) == 0
    assert "nothing to clear" in capsys.readouterr().err


async def test_info_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"cache: {tmp_path / 'c'}" in out and "responses" in out and "not created" in out


async def test_no_cache_reads_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    prompt = write_capitals(tmp_path / "p")
    assert await _optimize(prompt, cache, "--no-cache", "--restart") == 0
    first = json.loads(capsys.readouterr().out)
    assert await _optimize(prompt, cache, "--no-cache", "--restart") == 0
    second = json.loads(capsys.readouterr().out)
    assert first["usage"]["cache_hits"] == second["usage"]["cache_hits"] == 0
    assert second["usage"]["calls"] == first["usage"]["calls"] > 0
    assert _info(cache, capsys)["responses"]["entries"] == 0


async def test_unwritable_cache_degrades_to_no_caching_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file where the cache folder should be: like a read-only disk for every user,
    # root included (a chmod does not stop root).
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    prompt = write_capitals(tmp_path / "p")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await _optimize(prompt, blocker) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps_done"] == 2 and out["usage"]["cache_hits"] == 0
    messages = " ".join(str(w.message) for w in caught)
    assert "response cache disabled" in messages
    assert "trajectory store unavailable" in messages


async def test_a_plain_request_keeps_the_key_it_had_before_extra_parameters(
    tmp_path: Path,
) -> None:
    # Caches written before `extra` existed must stay valid: a request without
    # extra parameters is keyed exactly as it was.
    from gpo_engine.llm import cache_key

    async with ModelServer() as server:
        llm = LLM(cache_dir=tmp_path, api_base=server.api_base, api_key="test")
        await llm.complete(MODEL, HI, max_tokens=7)
        old = cache_key({"kind": "completion", "model": MODEL, "messages": HI,
                         "temperature": 0.0, "max_tokens": 7, "stop": None, "sample": 0,
                         "api_base": server.api_base})
        assert llm._cache.get(old) is not None
        llm.close()
