"""The direct path: OpenAI-compatible chat completions over gpo's own aiohttp session.

litellm reaches every provider, and costs for it: about 3 s and 200 MB to
import and a few milliseconds of CPU per call (bench/RESULTS.md). The common
case, an OpenAI-compatible chat endpoint (OpenAI itself, a LiteLLM proxy,
vLLM, llama.cpp's server, Ollama's OpenAI API, anything behind `--api-base`)
needs none of its per-provider machinery: this module builds the same JSON
body litellm would send, posts it through `concurrency.session()` (so slots
are held per request, as for litellm's calls), and parses the answer.

Everything else in the model layer stays as it is: the response cache, the
retries, the adaptive limits, the spend cap and the accounting are the
`llm.LLM` around it. Whatever this module does not understand goes through
litellm (see `route`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpo_engine import prices

OPENAI_BASE = "https://api.openai.com/v1"
# The variables an endpoint and its key are read from when none is passed, by
# provider, as litellm reads them: a LiteLLM proxy's own (a team sets these for
# `litellm_proxy/` models), else OpenAI's.
_VARIABLES = {"litellm_proxy": ("LITELLM_PROXY_API_BASE", "LITELLM_PROXY_API_KEY")}
_OPENAI_VARIABLES = ("OPENAI_BASE_URL", "OPENAI_API_KEY")
# litellm providers that are plain OpenAI chat completions at their endpoint.
OPENAI_COMPATIBLE = frozenset({"openai", "hosted_vllm", "litellm_proxy", "custom_openai"})
# Request parameters sent as they are; anything else goes through litellm,
# which knows which providers take what.
PARAMETERS = frozenset({
    "temperature", "max_tokens", "stop", "top_p", "n", "seed", "presence_penalty",
    "frequency_penalty", "response_format", "logit_bias", "user",
})


@dataclass(frozen=True)
class Route:
    """How one model is called: `direct` (this module) or `litellm`, and why."""

    path: str  # "direct" | "litellm"
    reason: str
    name: str = ""  # the model name the endpoint knows (the litellm prefix dropped)


def route(model: str, api_base: str | None, params: Mapping[str, Any] | None = None) -> Route:
    """The path a model's calls take, decided from its name and the request's parameters."""
    provider, slash, name = model.partition("/")
    if not slash:
        found = prices.entry(model)
        if found is None or found.get("litellm_provider") != "openai":
            return Route("litellm", f"litellm resolves the provider of '{model}'")
        provider, name = "openai", model
    if provider not in OPENAI_COMPATIBLE:
        return Route("litellm", f"provider '{provider}' is not an OpenAI-compatible endpoint")
    found = prices.entry(model)
    if provider == "openai" and not api_base and found and found.get("supports_reasoning"):
        # OpenAI's reasoning models take max_completion_tokens and no temperature:
        # litellm's translation is kept for them.
        return Route("litellm", f"{model} is a reasoning model; litellm translates its request")
    unknown = sorted(set(params or {}) - PARAMETERS)
    if unknown:
        return Route("litellm", f"parameters {', '.join(unknown)} are litellm's to translate")
    return Route("direct", "OpenAI-compatible chat completions", name)


@dataclass
class HTTPFailure(Exception):
    """A non-2xx answer: the status, the provider's message and the headers (Retry-After)."""

    status_code: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    key_variable: str = "OPENAI_API_KEY"  # where the key sent was read from

    def __str__(self) -> str:
        return f"HTTP {self.status_code}: {self.message}"


class MissingKey(Exception):
    """No API key for an endpoint that needs one (OpenAI's own)."""


class Garbage(Exception):
    """A 2xx answer that is not a chat completion."""


@dataclass(frozen=True)
class Message:
    content: str


@dataclass(frozen=True)
class Choice:
    message: Message


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Response:
    """The few fields of a chat completion the model layer reads (litellm's shape)."""

    choices: list[Choice]
    usage: Usage
    _hidden_params: dict[str, Any]


def body(name: str, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body litellm sends an OpenAI-compatible endpoint for the same call."""
    out: dict[str, Any] = {"model": name, "messages": messages}
    for key, value in params.items():
        if value is not None and not (key == "stop" and not value):
            out[key] = value
    return out


def variables(model: str) -> tuple[str, str]:
    """The variables the endpoint and the key of `model` are read from."""
    provider, slash, _ = model.partition("/")
    return _VARIABLES.get(provider, _OPENAI_VARIABLES) if slash else _OPENAI_VARIABLES


def endpoint(api_base: str | None, api_key: str | None,
             model: str = "") -> tuple[str, dict[str, str]]:
    """The URL and headers of a chat completion. MissingKey for OpenAI's own
    endpoint without a key (litellm's client refuses that too), and for a
    LiteLLM proxy model with no proxy to send it to."""
    base_variable, key_variable = variables(model)
    base = (api_base or os.environ.get(base_variable) or "").rstrip("/")
    if not base and base_variable != _OPENAI_VARIABLES[0]:
        raise MissingKey(f"Missing {base_variable}: set it to the proxy's address "
                         "(or pass --api-base)")
    base = base or OPENAI_BASE
    key = api_key or os.environ.get(key_variable)
    if not key and base == OPENAI_BASE:
        raise MissingKey(f"Missing credentials: set {key_variable} (or pass an API key)")
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return f"{base}/chat/completions", headers


async def chat(session: Any, url: str, headers: Mapping[str, str], payload: Mapping[str, Any],
               model: str, timeout: float) -> Response:
    """POST one chat completion; HTTPFailure / Garbage / aiohttp's errors on failure.

    `timeout` bounds connecting and each wait for the answer's bytes, not the
    whole call: the wait for a concurrency slot happens inside the request
    (concurrency's trace hooks) and must not count against the provider."""
    import aiohttp

    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    limits = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
    async with session.post(url, data=data, headers=dict(headers), timeout=limits) as answer:
        raw = await answer.read()
        if answer.status >= 300:
            raise HTTPFailure(answer.status, _error_message(raw), dict(answer.headers),
                              variables(model)[1])
    return parse(raw, model)


def parse(raw: bytes, model: str) -> Response:
    """A chat completion's text and usage; Garbage when the body is not one."""
    try:
        data = json.loads(raw)
        choices = [Choice(Message(str(c["message"].get("content") or "")))
                   for c in data["choices"]]
        usage = data.get("usage") or {}
        counted = Usage(int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise Garbage(f"not a chat completion: {raw[:200]!r}") from error
    cost = prices.price(model, counted.prompt_tokens, counted.completion_tokens)
    return Response(choices, counted, {"response_cost": cost} if cost is not None else {})


def _error_message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        error = data.get("error", data)
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:500]
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace")[:500] or "no message"
