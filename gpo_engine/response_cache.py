"""The response cache: model answers kept on disk, so nothing is paid for twice.

A request's identity (model, messages, parameters, sample; never credentials)
hashes to its key; only answers worth keeping are stored. An offline run
answers from here alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import GpoError

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


def cache_key(payload: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a request's identity (never credentials)."""
    text = json.dumps(
        {"v": _CACHE_VERSION, **payload}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
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
            from .shared_store import open_store

            # The disk, with Redis behind it when $GPO_CACHE_URL is set (shared_store).
            self._store = open_store(
                directory / RESPONSES_DIR, kind="responses", label="response cache",
                valid=_cacheable, lost="any other answer is asked for again when needed, once")
        except Exception as exc:
            self._disable(exc)

    def get(self, key: str) -> Any:
        return None if self._store is None else self._store.get(key)

    def set(self, key: str, value: Any) -> None:
        if self._store is not None and _cacheable(key, value):
            self._store.set(key, value)

    # The model-call path (LLM.complete, LLM.embed) awaits these: with Redis behind the
    # disk (a TieredStore, the one kind of store with `aget`), a disk miss asks Redis
    # through redis.asyncio (one MGET for the lookups the event loop's tasks make together)
    # instead of blocking the loop; a disk hit awaits nothing.

    async def aget(self, key: str) -> Any:
        store = self._store
        if hasattr(store, "aget"):
            return await store.aget(key)
        return None if store is None else store.get(key)

    async def aget_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The entries found of `keys` (one lookup of Redis for all the disk misses)."""
        store = self._store
        if hasattr(store, "aget_many"):
            found: dict[str, Any] = await store.aget_many(keys)
            return found
        return {key: value for key in keys if (value := self.get(key)) is not None}

    async def aset(self, key: str, value: Any) -> None:
        store = self._store
        if store is not None and _cacheable(key, value):
            await store.aset(key, value) if hasattr(store, "aset") else store.set(key, value)

    async def aset_many(self, items: Mapping[str, Any]) -> None:
        store = self._store
        keep = {key: value for key, value in items.items() if _cacheable(key, value)}
        if store is not None and keep:
            await store.aset_many(keep) if hasattr(store, "aset_many") else store.set_many(keep)

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
