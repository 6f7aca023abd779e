"""Looking after a shared cache on Redis (`gpo cache info`, `gpo cache clear --shared`):
how much one namespace holds, and deleting it. SCAN with COUNT, never KEYS, so a
large Redis answers in bounded time; the run locks (`gpo:v1:lock:*`) and other
tools' keys are other prefixes and never match.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from gpo_engine.redis_store import RedisStore, glob_pattern

_SCAN_COUNT = 1000  # keys SCAN looks at per call
USAGE_LIMIT = 1_000_000  # keys namespace_usage counts at most (~1 s on a local Redis)


def namespace_usage(store: RedisStore, *, limit: int = USAGE_LIMIT) -> tuple[int, int, bool]:
    """(entries, bytes Redis uses for them, whether all were counted) of this namespace:
    SCAN with COUNT and one pipelined MEMORY USAGE per batch, stopping after `limit`
    keys so a huge Redis answers in bounded time."""
    def count(client: Any) -> tuple[int, int, bool]:
        entries = size = 0
        for batch in _batches(client.scan_iter(match=glob_pattern(store.key("")) + "*",
                                               count=_SCAN_COUNT)):
            batch = batch[:limit - entries]
            pipe = client.pipeline(transaction=False)
            for name in batch:
                pipe.memory_usage(name)
            size += sum(int(used or 0) for used in pipe.execute())
            entries += len(batch)
            if entries >= limit:
                return entries, size, False
        return entries, size, True

    return store.run(count)


def clear_namespace(store: RedisStore) -> int:
    """Delete every key of this namespace (SCAN, never KEYS; other namespaces and the
    run locks are other prefixes); the number deleted."""
    def delete(client: Any) -> int:
        return sum(int(client.delete(*batch)) for batch in _batches(
            client.scan_iter(match=glob_pattern(store.key("")) + "*", count=_SCAN_COUNT)))

    return store.run(delete)


def _batches(names: Iterable[bytes]) -> Iterator[list[bytes]]:
    """`names` in lists of up to _SCAN_COUNT (SCAN may repeat a key: each is kept once)."""
    seen: set[bytes] = set()
    batch: list[bytes] = []
    for name in names:
        if name not in seen:
            seen.add(name)
            batch.append(name)
        if len(batch) >= _SCAN_COUNT:
            yield batch
            batch = []
    if batch:
        yield batch
