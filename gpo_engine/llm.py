"""The one layer every model call goes through: chat completions and embeddings.

Each answer comes from the response cache (gpo_engine.response_cache) or from
the provider, sent by gpo_engine.sending (limits, retries, the dollar cap) on
the direct path (gpo_engine.direct) or through litellm, and is counted
(gpo_engine.usage, gpo_engine.spend). litellm is imported lazily
(gpo_engine.models.litellm_module).
"""

from __future__ import annotations

import os

# Without this, litellm downloads its price map from the internet at import time
# (and stalls offline). Set before anything imports litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import concurrency, direct, spend
from .concurrency import AdaptiveLimit
from .errors import ConfigError, ModelCallError
from .failures import BadResponse
from .models import LOCAL_PREFIX, is_base_model, litellm_module
from .response_cache import NotCached, ResponseCache, cache_key
from .sending import Sender
from .usage import ModelUsage

_EMBED_BATCH = 256  # inputs per embedding request; providers cap this (OpenAI: 2048)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float  # dollars; 0.0 when cached or price unknown
    cached: bool


class LLM(Sender):
    """Async model access for one job (or one daemon): retries, cache, accounting."""

    def __init__(
        self,
        *,
        cache_dir: Path | None,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 4,
        max_cost: float | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        backoff_base: float = 1.0,
        offline: bool = False,  # answer from the cache only; a miss raises NotCached
        direct_path: bool | None = None,  # None: on unless GPO_DIRECT=0
        limits: Callable[[int], AdaptiveLimit] = AdaptiveLimit,  # a model's limit, by ceiling
    ) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                         max_cost=max_cost, backoff_base=backoff_base, limits=limits)
        self.api_base = api_base
        self.api_key = api_key
        self.offline = offline
        # OpenAI-compatible endpoints are called directly (gpo_engine.direct);
        # GPO_DIRECT=0 sends every call through litellm, as before it existed.
        self.direct = (os.environ.get("GPO_DIRECT", "1") != "0" if direct_path is None
                       else direct_path)
        self._cache = ResponseCache(cache_dir)
        self._routes: dict[str, direct.Route] = {}  # model -> its path, decided once

    # -- public --------------------------------------------------------------

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        sample: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """One chat completion. `sample` tells apart samples that are otherwise
        the same request (K candidates at temperature 1), in the cache and, for
        the embedded model, as the sampling seed. `extra` holds any further
        litellm parameters (top_p, response_format...): all part of the cache key."""
        payload: dict[str, Any] = {
            "kind": "completion",
            "model": model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "stop": stop,
            "sample": sample,
            # The embedded model never uses the endpoint: its answers are the
            # same whether or not an api_base is configured.
            "api_base": None if is_base_model(model) else self.api_base,
        }
        if extra:  # only when present, so the keys of plain requests stay as they were
            payload["extra"] = dict(extra)
        key = cache_key(payload)
        usage = self.usage.model(model)
        hit = await self._cache.aget(key)  # a disk hit awaits nothing; Redis is asked async
        if isinstance(hit, dict):
            usage.cache_hits += 1
            return Completion(
                text=hit["text"],
                model=model,
                prompt_tokens=hit["prompt_tokens"],
                completion_tokens=hit["completion_tokens"],
                cost=0.0,
                cached=True,
            )
        if self.offline:
            raise NotCached(model, "an answer")
        self._check_spend()
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens,
                                  "stop": stop or None, **(extra or {})}
        held = 0.0 if is_base_model(model) else spend.hold(model, messages, max_tokens)
        try:
            if self._route(model, extra).path == "direct":
                response = await self._direct(model, messages, params, held)
            else:
                response = await self._through_litellm(model, messages, params, sample, held)
            text = response.choices[0].message.content or ""
            prompt_tokens, completion_tokens = _tokens(response)
            cost = self._record(usage, model, response, prompt_tokens, completion_tokens)
        finally:
            self._sync(model)  # the answer's tokens and cost, with its hold released
        await self._cache.aset(
            key,
            {"text": text, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        )
        return Completion(
            text=text,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=cost,
            cached=False,
        )

    def route(self, model: str) -> direct.Route:
        """The path this model's calls took (or would take without extra parameters)."""
        return self._routes.get(model) or direct.route(model, self.api_base)

    async def _direct(self, model: str, messages: list[dict[str, Any]],
                      params: Mapping[str, Any], held: float) -> Any:
        """One chat completion on the direct path (gpo_engine.direct)."""
        try:
            url, headers = direct.endpoint(self.api_base, self.api_key, model)
        except direct.MissingKey as error:
            self.usage.model(model).failures += 1
            raise ModelCallError(model, "auth", str(error)) from error
        payload = direct.body(self._routes[model].name, messages, params)
        session = await concurrency.session()
        send = functools.partial(direct.chat, session, url, headers, payload, model,
                                 self.timeout)
        return await self._call(model, send, _check_choices, http=True, held=held)

    async def _through_litellm(self, model: str, messages: list[dict[str, Any]],
                               params: Mapping[str, Any], sample: int, held: float) -> Any:
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "timeout": self.timeout,
            "num_retries": 0,  # we retry ourselves, with Retry-After and accounting
            **{k: v for k, v in params.items() if v is not None},
        }
        if is_base_model(model):
            await self._prepare_local(model)
            # Only the embedded model gets a seed: not every provider accepts one.
            kwargs["seed"] = sample
        else:
            kwargs.update(self._endpoint())
            # Our session: its trace hooks let a call hold its slot only while its
            # HTTP request is out (gpo_engine.concurrency).
            kwargs["shared_session"] = await concurrency.session()
        litellm = litellm_module()
        return await self._call(
            model, functools.partial(litellm.acompletion, **kwargs), _check_choices,
            http=not is_base_model(model), held=held,
        )

    def _route(self, model: str, extra: Mapping[str, Any] | None) -> direct.Route:
        """Decided once per model (and kept): a call with parameters the direct
        path does not send goes through litellm without changing the model's route."""
        if model not in self._routes:
            chosen = (direct.Route("litellm", "the embedded model is a litellm provider")
                      if is_base_model(model) or not self.direct
                      else direct.route(model, self.api_base))
            self._routes[model] = chosen
            self.usage.model(model).path = chosen.path
        chosen = self._routes[model]
        if chosen.path == "direct" and extra:
            per_call = direct.route(model, self.api_base, extra)
            if per_call.path != "direct":
                return per_call
        return chosen

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per text, cached per text; only uncached texts are sent."""
        if is_base_model(model):
            raise ConfigError(
                f"{model} cannot make embeddings; set gpo.embedding to a litellm embedding "
                "model (e.g. openai/text-embedding-3-small) or leave it unset"
            )
        usage = self.usage.model(model)
        keys = {text: self._embed_key(model, text) for text in texts}
        hits = await self._cache.aget_many(list(keys.values()))  # one Redis lookup for all
        found: dict[str, list[float]] = {}
        for text, key in keys.items():
            hit = hits.get(key)
            if isinstance(hit, list):
                found[text] = hit
                usage.cache_hits += 1
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing and self.offline:
            raise NotCached(model, f"the embedding of {len(missing)} text(s)")
        litellm = litellm_module()
        for start in range(0, len(missing), _EMBED_BATCH):
            batch = missing[start : start + _EMBED_BATCH]
            self._check_spend()
            kwargs: dict[str, Any] = {
                "model": model,
                "input": batch,
                "timeout": self.timeout,
                "num_retries": 0,
                **self._endpoint(),
            }
            try:
                response = await self._call(
                    model, functools.partial(litellm.aembedding, **kwargs),
                    _check_data(len(batch)), held=spend.embedding_hold(model, batch))
                prompt_tokens, _ = _tokens(response)
                self._record(usage, model, response, prompt_tokens, 0)
            finally:
                self._sync(model)
            rows = sorted(response.data, key=lambda row: _field(row, "index"))
            for text, row in zip(batch, rows, strict=True):
                found[text] = [float(x) for x in _field(row, "embedding")]
            await self._cache.aset_many({keys[text]: found[text] for text in batch})
        return [found[t] for t in texts]

    def close(self) -> None:
        self._cache.close()

    # -- internals -----------------------------------------------------------

    def _embed_key(self, model: str, text: str) -> str:
        return cache_key(
            {"kind": "embedding", "model": model, "text": text, "api_base": self.api_base}
        )

    def _endpoint(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.api_base:
            extra["api_base"] = self.api_base
        if self.api_key:
            extra["api_key"] = self.api_key
        return extra

    async def _prepare_local(self, model: str) -> None:
        # Imported here: local_model imports litellm and llama_cpp.
        from . import local_model

        local_model.register()
        # Assembling the GGUF and loading it takes about a second; keep the loop free.
        await asyncio.to_thread(local_model.prepare, model[len(LOCAL_PREFIX) :])

    def _record(
        self,
        usage: ModelUsage,
        model: str,
        response: Any,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> float:
        usage.prompt_tokens += prompt_tokens
        usage.completion_tokens += completion_tokens
        if is_base_model(model):
            return 0.0  # runs on this machine: free, and the price is known
        cost = _price(response, model)
        if cost is None:
            usage.unknown_price = True
            return 0.0
        usage.cost += cost
        return cost


def _check_choices(response: Any) -> None:
    if not getattr(response, "choices", None):
        raise BadResponse("the model answered with no choices")


def _check_data(expected: int) -> Callable[[Any], None]:
    def check(response: Any) -> None:
        data = getattr(response, "data", None)
        if not data or len(data) != expected:
            got = len(data) if data else 0
            raise BadResponse(f"expected {expected} embeddings, got {got}")

    return check


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def _tokens(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(
        getattr(usage, "completion_tokens", 0) or 0
    )


_UNPRICED: set[str] = set()  # models litellm's price map does not know (asked once)


def _price(response: Any, model: str) -> float | None:
    """Dollar cost from litellm's price map; None when it does not know the model."""
    # litellm prices every call in its own post-call logging; reusing that figure
    # spares two more completion_cost() runs per call (~1 ms of CPU each, which
    # at high concurrency holds back the event loop: bench/throughput.py).
    hidden = getattr(response, "_hidden_params", None) or {}
    if isinstance(hidden.get("response_cost"), (int, float)):
        return float(hidden["response_cost"])
    if isinstance(response, direct.Response):
        return None  # priced from the price list already (gpo_engine.prices); not listed
    if model in _UNPRICED:
        return None
    litellm = litellm_module()
    try:
        return float(litellm.completion_cost(completion_response=response))
    except Exception:
        pass
    try:
        # The response may name the model differently (a dated or provider-less
        # id); price it as the model that was asked for.
        return float(litellm.completion_cost(completion_response=response, model=model))
    except Exception:
        _UNPRICED.add(model)
        return None

