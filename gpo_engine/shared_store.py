"""The store a command opens: the local disk store, and Redis behind it when one is set.

`open_store` gives a plain DiskStore unless `GPO_CACHE_URL` (or `url`) names a
Redis; then a TieredStore, with the same methods (get, set, set_many, delete,
close), where the disk stays in front. The response cache, read and written on
the model-call path, uses its awaitable twins instead (aget, aget_many, aset,
aset_many: the same disk, keys, values, TTL and outbox, with Redis reached
through redis.asyncio, so lookups of rows in flight together share one round
trip and never block the event loop); a disk hit awaits nothing.

- responses (immutable: a key is a hash of the request) are read from disk
  first; a disk hit never touches the network; a Redis hit is copied to disk.
  Writes go to both; `GPO_CACHE_TTL` sets their expiry in Redis.
- trajectories (one record per run, extended step by step, possibly on another
  machine) are read from Redis first, so a step finished elsewhere is seen at
  once; the disk keeps a copy for when Redis is away. They never expire.

Redis trouble never loses work. Down at start: one warning per process, and
the run goes on with the disk. Lost mid-run: the same one warning; whatever is
written meanwhile goes to disk and to an outbox beside it (`<name>.outbox`, a
DiskStore of its own), and is pushed as soon as Redis answers again (tried
after 2 s, then 4, 8... up to 60 s: gpo_engine.redis_store), else when the store
is closed at the run's end, else at the next run's start. A pushed trajectory
replaces the shared one only when `supersedes` allows it (it extends what
another machine stored meanwhile); otherwise the shared one is kept, with a
warning, and this machine's steps stay on its disk.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gpo_engine.diskstore import DiskStore, Validator
from gpo_engine.redis_settings import URL_VARIABLE, check_url, ttl_from_env
from gpo_engine.redis_store import RedisStore, RedisUnavailable

OUTBOX_SUFFIX = ".outbox"  # `responses.outbox`: entries kept while Redis was away
_PUSH_BATCH = 500  # entries per MULTI/EXEC when pushing the outbox

T = TypeVar("T")
# supersedes(key, local, shared): whether this machine's value may replace the shared one.
Supersedes = Callable[[str, Any, Any], bool]

_warned_down: set[str] = set()  # Redis URLs (redacted) already warned about in this process


class Store(Protocol):
    """What the response cache and the trajectory store use of their store."""

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any) -> bool: ...
    def set_many(self, items: Mapping[str, Any]) -> bool: ...
    def delete(self, key: str) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Kind:
    namespace: str  # in the Redis key: gpo:v1:<namespace>:<key>
    shared_first: bool  # read Redis before the disk (records another machine extends)
    expires: bool  # whether GPO_CACHE_TTL applies


KINDS = {"responses": Kind("responses", shared_first=False, expires=True),
         "trajectories": Kind("trajectories", shared_first=True, expires=False)}


def configured_url(url: str | None = None) -> str | None:
    """`url`, else $GPO_CACHE_URL; None when neither is set. ConfigError for a bad one."""
    chosen = url if url is not None else os.environ.get(URL_VARIABLE, "")
    chosen = chosen.strip()
    return check_url(chosen, source="--cache-url" if url is not None else URL_VARIABLE) \
        if chosen else None


def use_cache_url(url: str) -> None:
    """`--cache-url`: checked (ConfigError naming the option), then set as $GPO_CACHE_URL,
    so every store this process opens, and a daemon it starts, uses it."""
    os.environ[URL_VARIABLE] = configured_url(url) or ""


def check_environment() -> None:
    """ConfigError now for a bad GPO_CACHE_URL or GPO_CACHE_TTL (a command calls this
    first, so the mistake is named before any work instead of when a store opens)."""
    configured_url()
    ttl_from_env()


def open_store(directory: Path, *, kind: str, label: str, lost: str,
               valid: Validator | None = None, supersedes: Supersedes | None = None,
               url: str | None = None) -> DiskStore | TieredStore:
    """The disk store at `directory`, with Redis behind it when `url` or $GPO_CACHE_URL is
    set. Raises what DiskStore raises for an unusable folder, ConfigError for a bad setting."""
    spec = KINDS[kind]
    shared = configured_url(url)
    ttl = ttl_from_env() if spec.expires and shared else None
    disk = DiskStore(directory, label=label, lost=lost, valid=valid)
    if shared is None:
        return disk
    remote = RedisStore(shared, namespace=spec.namespace, ttl=ttl, valid=valid)
    return TieredStore(disk, remote, shared_first=spec.shared_first, supersedes=supersedes)


def warn_down(remote: RedisStore, *, starting: bool, stacklevel: int = 2) -> None:
    """The one warning per process that the shared cache at `remote` cannot be reached; the
    stores and the run lock (gpo_engine.redis_lock) share it, so a run says it once."""
    if remote.shown in _warned_down:
        return
    _warned_down.add(remote.shown)
    state = "is unreachable" if starting else "was lost"
    warnings.warn(
        f"shared cache {remote.shown} {state} ({remote.last_error}); using the local disk "
        "cache and run locks only, and keeping what is saved meanwhile to push to Redis when "
        "it answers again (in this run or the next)", RuntimeWarning, stacklevel=stacklevel)


class TieredStore:
    """A DiskStore in front of a RedisStore; see the module's docstring."""

    def __init__(self, disk: DiskStore, remote: RedisStore, *, shared_first: bool = False,
                 supersedes: Supersedes | None = None) -> None:
        self.disk = disk
        self.remote = remote
        self.label = disk.label
        self.shared_first = shared_first
        self.supersedes = supersedes
        self.outbox_dir = disk.directory.with_name(disk.directory.name + OUTBOX_SUFFIX)
        self._outbox: DiskStore | None = None
        self._outbox_failed = False
        self._pending = self.outbox_dir.is_dir()  # maybe: the first push looks
        self.remote_hits = 0  # answers Redis had and the disk did not
        self.pushed = 0  # outbox entries pushed to Redis
        self.kept_shared = 0  # outbox entries dropped because Redis held a newer one
        self._reached = False  # whether Redis ever answered this store
        # Pushes what an earlier run kept, if Redis is up; if not, warned: the disk carries on.
        with contextlib.suppress(RedisUnavailable):
            self._remote(remote.ping)

    @property
    def directory(self) -> Path:
        return self.disk.directory

    # -- entries ---------------------------------------------------------------

    def get(self, key: str) -> Any:
        if not self.shared_first:
            value = self.disk.get(key)
            if value is not None:
                return value
        try:
            value = self._remote(lambda: self.remote.get(key))
        except RedisUnavailable:
            return self._unshared(key)
        return self._arrived(key, value)

    def set(self, key: str, value: Any) -> bool:
        stored = self.disk.set(key, value)
        return self._share({key: value}, lambda: self.remote.set(key, value)) or stored

    def set_many(self, items: Mapping[str, Any]) -> bool:
        stored = self.disk.set_many(items)
        return self._share(items, lambda: self.remote.set_many(items)) or stored

    # -- the same, awaitable: Redis through redis.asyncio (the model-call path) ----------

    async def aget(self, key: str) -> Any:
        return (await self.aget_many((key,))).get(key)

    async def aget_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The entries found of `keys`, as `get` finds each; those Redis is asked for go in
        one MGET with whatever the loop's other tasks look up meanwhile."""
        self._no_async_merge()
        found = {} if self.shared_first else {
            key: value for key in keys if (value := self.disk.get(key)) is not None}
        ask = [key for key in dict.fromkeys(keys) if key not in found]
        if not ask:
            return found  # disk hits: no await, no network
        try:
            shared = await self._aremote(lambda: self.remote.aget_many(ask))
        except RedisUnavailable:
            shared = None
        for key in ask:
            value = self._unshared(key) if shared is None else self._arrived(key,
                                                                             shared.get(key))
            if value is not None:
                found[key] = value
        return found

    async def aset(self, key: str, value: Any) -> bool:
        stored = self.disk.set(key, value)  # one item: no transaction (DiskStore.set)
        return await self._ashare({key: value}) or stored

    async def aset_many(self, items: Mapping[str, Any]) -> bool:
        stored = self.disk.set_many(items)
        return await self._ashare(items) or stored

    def delete(self, key: str) -> None:
        self.disk.delete(key)
        outbox = self._open_outbox(create=False)
        if outbox is not None:
            outbox.delete(key)
        # Redis away: not deleted there, and a later read there finds it again.
        with contextlib.suppress(RedisUnavailable):
            self._remote(lambda: self.remote.delete(key))

    def close(self) -> None:
        """Close both; what is still kept for Redis gets one more try first, whatever the
        wait before the next retry (a run's end: otherwise only its next run pushes it)."""
        if self._pending:
            self.remote.retry_now()
            with contextlib.suppress(RedisUnavailable):
                self._remote(lambda: None)
        try:
            self.disk.close()
            if self._outbox is not None:
                self._outbox.close()
        finally:
            self._outbox = None
            self.remote.close()

    # -- Redis, and when it is away --------------------------------------------------

    def _remote(self, operation: Callable[[], T]) -> T:
        """`operation()` on Redis, after pushing what was kept while it was away;
        RedisUnavailable (warned once) when it cannot be reached."""
        try:
            if self._pending and self.remote.due:
                self._push()
            result = operation()
        except RedisUnavailable:
            self._warn_down(starting=not self._reached)
            raise
        self._reached = True
        return result

    async def _aremote(self, operation: Callable[[], Awaitable[T]]) -> T:
        """As _remote, awaited: the outbox pushed first (on the asyncio client too)."""
        try:
            if self._pending and self.remote.due:
                await self._apush()
            result = await operation()
        except RedisUnavailable:
            self._warn_down(starting=not self._reached)
            raise
        self._reached = True
        return result

    def _arrived(self, key: str, value: Any) -> Any:
        """What to answer for `key` when Redis answered `value` (None: not there)."""
        if value is None:  # not shared (yet, or Redis lost it): this machine's copy, if any
            return self._unshared(key)
        if not self.shared_first:
            self.remote_hits += 1
        self.disk.set(key, value)  # the local copy, for the next read and a run without Redis
        return value

    def _unshared(self, key: str) -> Any:
        """The answer for `key` without Redis: a record's copy on this disk (a response was
        read from the disk already)."""
        return self.disk.get(key) if self.shared_first else None

    def _share(self, items: Mapping[str, Any], write: Callable[[], None]) -> bool:
        """Write `items` to Redis, or keep them in the outbox to push later."""
        try:
            self._remote(write)
            return True
        except RedisUnavailable:
            return self._keep(items)

    async def _ashare(self, items: Mapping[str, Any]) -> bool:
        """As _share, awaited."""
        self._no_async_merge()
        try:
            await self._aremote(lambda: self.remote.aset_many(items))
            return True
        except RedisUnavailable:
            return self._keep(items)

    def _keep(self, items: Mapping[str, Any]) -> bool:
        """Keep `items` in the outbox, to push when Redis answers again."""
        outbox = self._open_outbox(create=True)
        kept = outbox is not None and outbox.set_many(items)
        self._pending = self._pending or kept
        return kept

    def _push(self) -> None:
        """Push the outbox to Redis (RedisUnavailable when it goes away again)."""
        outbox = self._open_outbox(create=False)
        if outbox is None:
            self._pending = False
            return
        pushed_before, kept_before = self.pushed, self.kept_shared
        if self.supersedes is None:
            for batch, items in self._outbox_batches(outbox):
                self.remote.set_many(items)
                self._pushed(outbox, batch, items)
        else:
            keys = outbox.keys()
            for k in keys:
                self._push_one(outbox, k, self.supersedes)
        self._pending = False
        self._tell_pushed(self.pushed - pushed_before, self.kept_shared - kept_before)

    async def _apush(self) -> None:
        """As _push, on the asyncio client; other tasks do not push it again meanwhile."""
        self._no_async_merge()
        outbox = self._open_outbox(create=False)
        self._pending = False
        if outbox is None:
            return
        pushed_before = self.pushed
        try:
            for batch, items in self._outbox_batches(outbox):
                await self.remote.aset_many(items)
                self._pushed(outbox, batch, items)
        except BaseException:
            self._pending = True  # the rest: at the next try
            raise
        self._tell_pushed(self.pushed - pushed_before, 0)

    @staticmethod
    def _outbox_batches(outbox: DiskStore) -> Iterator[tuple[list[str], dict[str, Any]]]:
        keys = outbox.keys()
        for start in range(0, len(keys), _PUSH_BATCH):
            batch = keys[start:start + _PUSH_BATCH]
            yield batch, {k: v for k in batch if (v := outbox.get(k)) is not None}

    def _pushed(self, outbox: DiskStore, batch: list[str], items: Mapping[str, Any]) -> None:
        for k in batch:
            outbox.delete(k)
        self.pushed += len(items)

    def _no_async_merge(self) -> None:
        """Records another machine extends (`supersedes`) are pushed with WATCH, on the
        synchronous client only: their store is not used from the event loop."""
        if self.supersedes is not None:
            raise TypeError(f"{self.label}: a store with `supersedes` has no async writes")

    def _push_one(self, outbox: DiskStore, key: str, supersedes: Supersedes) -> None:
        local = outbox.get(key)
        if local is not None:
            if self.remote.push_unless(key, local, lambda shared: not supersedes(key, local,
                                                                                 shared)):
                self.pushed += 1
            else:
                self.kept_shared += 1
        outbox.delete(key)

    def _open_outbox(self, *, create: bool) -> DiskStore | None:
        if self._outbox is None and not self._outbox_failed and (create
                                                                 or self.outbox_dir.is_dir()):
            try:
                self._outbox = DiskStore(self.outbox_dir, label=f"{self.label} outbox",
                                         lost="entries not yet pushed to the shared cache "
                                              "stay on this machine's disk only")
            except (OSError, sqlite3.Error) as error:
                self._outbox_failed = True  # one warning, not one per write
                warnings.warn(f"{self.label}: cannot keep entries for the shared cache at "
                              f"{self.outbox_dir} ({error}); they stay on this disk only",
                              RuntimeWarning, stacklevel=4)
        return self._outbox

    def _warn_down(self, *, starting: bool) -> None:
        warn_down(self.remote, starting=starting, stacklevel=6)

    def _tell_pushed(self, pushed: int, kept: int) -> None:
        if not pushed and not kept:
            return
        _warned_down.discard(self.remote.shown)  # a later loss is worth a warning again
        extra = (f"; kept the shared copy of {kept} that another machine had extended "
                 "(this machine's copies stay on its disk)" if kept else "")
        warnings.warn(f"{self.label}: pushed {pushed} entries kept while the shared cache "
                      f"{self.remote.shown} was away{extra}", RuntimeWarning, stacklevel=5)
