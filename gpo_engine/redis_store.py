"""One namespace of the shared store on Redis: keys, values, timeouts, and knowing it is down.

Keys are `gpo:v1:<namespace>:<key>` (`responses`, `trajectories`): another tool
on the same Redis never collides, and a later format moves to `gpo:v2` instead
of misreading this one. Values are compact JSON compressed with zlib (never
pickle: whoever can write a shared Redis must not run code in gpo), and each is
checked when read back like a disk entry; a bad one is a miss, deleted.

Two clients on one URL, with the same keys, values, TTL, timeouts and breaker:

- redis-py's synchronous one, for the trajectory store, the run lock and the
  plain CLI paths (their callers are synchronous): a blocking connection pool;
- redis.asyncio, for the response cache on the model-call path (`aget_many`,
  `aset_many`, awaited by LLM.complete and LLM.embed): one client and pool per
  event loop (closed with the loop), at most POOL_SIZE commands in flight (a
  semaphore, so waiting for a connection is never taken for Redis being down).
  The lookups the loop's tasks make at the same moment share one MGET (sent on
  the loop's next turn, up to _MGET_BATCH keys each): a check's rows, gathered
  together, wait one round trip between them instead of one each, and never
  block the loop (the synchronous client did, one row after another: 2.2 ms a
  hit on a loaded 2-core box, bench/RESULTS.md section 7).

Both with 1 s connect and read timeouts and no retry of their own (redis-py's
default, 10 retries with backoff, would stall a run for seconds on every call
while Redis is down; a pooled connection that died with a restarted server is
noticed and replaced by the pool before use, tested). A round trip to a local
Redis costs 0.12 ms on an idle machine (a GET with its decoding, printed by
tests/test_redis_store.py).

Down: a call that fails for a network, timeout, authentication or server
reason raises RedisUnavailable and opens a breaker: later calls fail at once,
without touching the network, until a retry is due (2 s, doubling to 60 s).
A refused connection fails in well under 1 ms; a Redis that accepts and never
answers costs one timeout (1 s) per try: 5 s in the first minute, then 1 s a
minute; async calls that were in flight together when it went count as one
try. The caller (gpo_engine.shared_store) keeps the work on disk meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import zlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpo_engine.redis_settings import check_url, redact

KEY_PREFIX = "gpo:v1"
TIMEOUT = 1.0  # seconds to connect and to wait for an answer (the URL may set its own)
POOL_SIZE = 16  # connections per pool; the asyncio one has this many commands out at most
RETRY_FIRST, RETRY_MAX = 2.0, 60.0  # seconds before trying a down Redis again, doubling
MAX_VALUE = 64 << 20  # bytes of JSON one entry may inflate to (a 300-step trajectory: ~1 MB)
_MGET_BATCH = 500  # keys per MGET of the lookups made together
_WATCH_TRIES = 20  # optimistic pushes retried when another writer changes the key meanwhile

T = TypeVar("T")
Validator = Callable[[str, Any], bool]


class RedisUnavailable(Exception):
    """Redis could not be reached or refused the command; the text never holds a password."""


def encode(value: Any) -> bytes:
    """Compact JSON, zlib-compressed (a 300-step trajectory of 3 KB JSON is ~1 KB)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return zlib.compress(text.encode("utf-8"), 6)


def decode(raw: bytes, *, limit: int = MAX_VALUE) -> Any:
    """The value `encode` made; ValueError for anything else, or one that would inflate past
    `limit` bytes (a few KB of zlib can claim gigabytes; a shared Redis is not trusted that
    far)."""
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(raw, limit)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError(f"not a gpo value (truncated, or larger than {limit} bytes)")
        return json.loads(text.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError) as error:
        raise ValueError(f"not a gpo value ({error})") from None


@dataclass
class _LoopClient:
    """The asyncio client of one event loop, and the lookups waiting for its next MGET."""

    client: Any
    pool: Any
    slots: asyncio.Semaphore  # commands in flight at most: the pool's size
    waiting: dict[str, list[asyncio.Future[Any]]] = field(default_factory=dict)
    fetches: set[asyncio.Task[None]] = field(default_factory=set)  # MGETs out (strong refs)
    closer: Any = None  # an async generator the loop's shutdown closes (see _here)
    closing: bool = False  # the store's close asked for it


class RedisStore:
    """One namespace on one Redis: get, set, set_many, delete, with a breaker when down;
    aget_many and aset_many on the asyncio client of the running loop.

    `valid(key, value)` checks what is read back (a bad entry is deleted and is a miss);
    `ttl` (seconds) applies to every write, None for entries that never expire.
    """

    def __init__(self, url: str, *, namespace: str, ttl: int | None = None,
                 valid: Validator | None = None, timeout: float = TIMEOUT,
                 retry_first: float = RETRY_FIRST, retry_max: float = RETRY_MAX) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.shown = redact(check_url(url))
        self.url = url
        self.namespace = namespace
        self.ttl = ttl
        self.valid = valid
        self.retry_first, self.retry_max = retry_first, retry_max
        self._delay = retry_first
        self._retry_at = 0.0  # time.monotonic() before which a down Redis is not tried
        self.down = False
        self.last_error = ""  # why the last call failed, for warnings
        self.dropped = 0  # bad entries deleted (wrong format or shape)
        self._failures = 0  # times the breaker opened (calls failing together count once)
        self._timeout = timeout
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._watch_error: type[BaseException] = redis.WatchError
        self._pool = redis.BlockingConnectionPool.from_url(
            url, retry=Retry(NoBackoff(), 0), **self._pool_options())
        self._client = redis.Redis(connection_pool=self._pool)

    def _pool_options(self) -> dict[str, Any]:
        """Both clients' pools: the size and the timeouts (a retry object each of its own)."""
        return {"max_connections": POOL_SIZE, "timeout": self._timeout,
                "socket_timeout": self._timeout, "socket_connect_timeout": self._timeout}

    # -- keys ------------------------------------------------------------------

    def key(self, key: str) -> str:
        return f"{KEY_PREFIX}:{self.namespace}:{key}"

    # -- entries ---------------------------------------------------------------

    def ping(self) -> None:
        self.run(lambda client: client.ping())

    def get(self, key: str) -> Any:
        """The entry, None when absent or bad (deleted); RedisUnavailable when down."""
        raw = self.run(lambda client: client.get(self.key(key)))
        return None if raw is None else self._checked(key, raw)

    def set(self, key: str, value: Any) -> None:
        self.run(self._write({key: value}))

    def set_many(self, items: Mapping[str, Any]) -> None:
        """Every item in one MULTI/EXEC transaction: all stored, or none."""
        if items:
            self.run(self._write(items))

    def _write(self, items: Mapping[str, Any]) -> Callable[[Any], Any]:
        """The command writing `items` (one SET, or several in one MULTI/EXEC), for either
        client: the synchronous one runs it, the asyncio one returns what to await."""
        data = {self.key(key): encode(value) for key, value in items.items()}
        if len(data) == 1:
            ((name, raw),) = data.items()
            return lambda client: client.set(name, raw, ex=self.ttl)

        def write(client: Any) -> Any:
            pipe = client.pipeline(transaction=True)  # execute() gives its connection back
            for name, raw in data.items():
                pipe.set(name, raw, ex=self.ttl)
            return pipe.execute()

        return write

    def push_unless(self, key: str, value: Any, keep: Callable[[Any], bool]) -> bool:
        """Store `value` unless the stored entry equals it or `keep(stored)` says to keep
        what is there; atomic against other writers (WATCH). True when stored."""
        name, data = self.key(key), encode(value)

        def push(client: Any) -> bool:
            with client.pipeline(transaction=True) as pipe:
                for _ in range(_WATCH_TRIES):
                    try:
                        pipe.watch(name)
                        raw = pipe.get(name)
                        stored = None if raw is None else self._checked(key, raw)
                        if stored is not None and (stored == value or keep(stored)):
                            pipe.unwatch()
                            return False
                        pipe.multi()
                        pipe.set(name, data, ex=self.ttl)
                        pipe.execute()
                        return True
                    except self._watch_error:
                        continue
            raise RedisUnavailable(f"{key} changed {_WATCH_TRIES} times while being pushed")

        return self.run(push)

    def delete(self, key: str) -> None:
        self.run(lambda client: client.delete(self.key(key)))

    def keys(self) -> Iterable[str]:
        """Every key of this namespace, without its prefix (SCAN, never KEYS)."""
        prefix = self.key("")
        names = self.run(lambda client: list(client.scan_iter(match=glob_pattern(prefix) + "*",
                                                              count=500)))
        return [bytes(name).decode("utf-8")[len(prefix):] for name in names]

    def close(self) -> None:
        """Close the synchronous pool, and each loop's asyncio one (at once on a loop that
        runs; a loop that ended closed its own: see _here)."""
        self._pool.disconnect()
        for loop, here in list(self._loops.items()):
            if loop.is_closed():  # closed without shutting down its async generators
                del self._loops[loop]
            elif not here.closing:
                # Kept in _loops until closed: if the loop ends before running the close,
                # its shutdown still finds the generator (a live one) and closes it.
                here.closing = True
                _close_on(loop, _finish(here.closer))

    # -- the asyncio client (the response cache on the model-call path) ----------------

    async def aget_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The entries of `keys` Redis holds (absent and bad ones left out, bad ones
        deleted); RedisUnavailable when down, at once while the breaker is open. What the
        loop's other tasks look up meanwhile goes in the same MGET, sent on its next turn."""
        if not self.due:
            raise RedisUnavailable(self.last_error or "down")
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        here = await self._here()
        loop = asyncio.get_running_loop()
        if not here.waiting:
            loop.call_soon(self._fetch_waiting, here)
        futures: list[asyncio.Future[Any]] = []
        for key in wanted:
            futures.append(loop.create_future())
            here.waiting.setdefault(key, []).append(futures[-1])
        raws = await asyncio.gather(*futures)
        found = {}
        for key, raw in zip(wanted, raws, strict=True):
            if raw is not None and (value := await self._achecked(key, raw)) is not None:
                found[key] = value
        return found

    async def aset_many(self, items: Mapping[str, Any]) -> None:
        """As set_many, on the asyncio client."""
        if items:
            await self.arun(self._write(items))

    async def arun(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        """`await operation(client)` on this loop's asyncio client; RedisUnavailable (at
        once while the breaker is open). At most POOL_SIZE at a time: the others wait their
        turn here, not for a connection, whose wait would be taken for Redis being down."""
        if not self.due:  # before making the loop's client: down at start makes none
            raise RedisUnavailable(self.last_error or "down")
        here = await self._here()
        async with here.slots:
            if not self.due:
                raise RedisUnavailable(self.last_error or "down")
            failures = self._failures
            try:
                result = await operation(here.client)
            except self._errors as error:
                self._failed(error, since=failures)
                raise RedisUnavailable(self.last_error) from None
        self.down, self._delay = False, self.retry_first
        return result

    def _fetch_waiting(self, here: _LoopClient) -> None:
        """Send what the loop's tasks are waiting for: one MGET per _MGET_BATCH keys."""
        waiting, here.waiting = here.waiting, {}
        keys = list(waiting)
        loop = asyncio.get_running_loop()
        for start in range(0, len(keys), _MGET_BATCH):
            task = loop.create_task(self._fetch({k: waiting[k]
                                                 for k in keys[start:start + _MGET_BATCH]}))
            here.fetches.add(task)
            task.add_done_callback(here.fetches.discard)

    async def _fetch(self, waiting: Mapping[str, list[asyncio.Future[Any]]]) -> None:
        names = [self.key(key) for key in waiting]
        undone = [f for futures in waiting.values() for f in futures]
        try:
            raws = await self.arun(lambda client: client.mget(names))
        except asyncio.CancelledError:  # the loop is shutting down
            for future in undone:
                future.cancel()
            raise
        except Exception as error:  # RedisUnavailable, or a bug: each waiter is told
            for future in undone:
                if not future.done():  # a waiter cancelled meanwhile
                    future.set_exception(RedisUnavailable(str(error))
                                         if isinstance(error, RedisUnavailable) else error)
            return
        for futures, raw in zip(waiting.values(), raws, strict=True):
            for future in futures:
                if not future.done():
                    future.set_result(raw)

    async def _achecked(self, key: str, raw: bytes) -> Any:
        value = self._decoded(key, raw)
        if value is None:
            here = await self._here()
            with contextlib.suppress(*self._errors):  # gone already, or Redis just went down
                await here.client.delete(self.key(key))
        return value

    async def _here(self) -> _LoopClient:
        """The running loop's asyncio client, made on first use. Its pool is closed when the
        loop shuts down (asyncio.run closes every live async generator then), so no caller
        has to remember to, or when the store is closed."""
        loop = asyncio.get_running_loop()
        here = self._loops.get(loop)
        if here is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url, retry=Retry(NoBackoff(), 0), **self._pool_options())
            here = _LoopClient(redis.asyncio.Redis(connection_pool=pool), pool,
                               asyncio.Semaphore(POOL_SIZE))
            self._loops[loop] = here
            here.closer = self._closed_with(loop, here)
            await here.closer.__anext__()  # registers the generator with the loop's shutdown
        return here

    async def _closed_with(self, loop: asyncio.AbstractEventLoop,
                           here: _LoopClient) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._loops.get(loop) is here:
                del self._loops[loop]
            try:
                await here.pool.aclose()
            except asyncio.CancelledError:  # the loop ends (asyncio.run cancels what runs)
                await here.pool.aclose()  # its connections closed all the same, then stop
                raise

    # -- being down ----------------------------------------------------------------

    @property
    def due(self) -> bool:
        """Whether a call would reach the network (Redis is up, or a retry is due)."""
        return not self.down or time.monotonic() >= self._retry_at

    def retry_now(self) -> None:
        """Let the next call try the network even if the breaker says to wait."""
        self._retry_at = 0.0

    def run(self, operation: Callable[[Any], T]) -> T:
        """`operation(client)`; RedisUnavailable (at once while the breaker is open)."""
        if not self.due:
            raise RedisUnavailable(self.last_error or "down")
        failures = self._failures
        try:
            result = operation(self._client)
        except self._errors as error:
            self._failed(error, since=failures)
            raise RedisUnavailable(self.last_error) from None
        self.down, self._delay = False, self.retry_first
        return result

    def _failed(self, error: BaseException, *, since: int) -> None:
        """A call that started when the breaker had opened `since` times failed: it opens
        again, unless another call out at the same time already opened it meanwhile."""
        self.last_error = f"{type(error).__name__}: {_short(redact(str(error)))}"
        if since != self._failures:
            return
        self._failures += 1
        self.down = True
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.retry_max)

    def _checked(self, key: str, raw: bytes) -> Any:
        """A stored value decoded and valid, else None (and the bad entry deleted)."""
        value = self._decoded(key, raw)
        if value is None:
            with contextlib.suppress(*self._errors):  # gone already, or Redis just went down
                self._client.delete(self.key(key))
        return value

    def _decoded(self, key: str, raw: bytes) -> Any:
        """A stored value decoded and valid, else None (counted in `dropped`)."""
        try:
            value = decode(raw)
        except ValueError:
            value = None
        if value is not None and (self.valid is None or self.valid(key, value)):
            return value
        self.dropped += 1
        return None


_closing: set[asyncio.Task[None]] = set()  # closes under way on a running loop (strong refs)


async def _finish(generator: Any) -> None:
    await generator.aclose()


def _close_on(loop: asyncio.AbstractEventLoop, closing: Any) -> None:
    """Run the coroutine `closing` on `loop`: a task when it is this thread's running loop,
    submitted when it runs in another thread, at once when it is idle and no loop runs
    here; dropped otherwise (a closed loop's shutdown ran it already)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        task = loop.create_task(closing)
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(closing, loop)
    elif running is None and not loop.is_closed():
        loop.run_until_complete(closing)
    else:  # closed (its shutdown closed the pool), or idle under another running loop
        closing.close()


def glob_pattern(text: str) -> str:
    """`text` with Redis glob characters escaped, for SCAN MATCH."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _short(text: str) -> str:
    text = " ".join(text.split()) or "no message"
    return text if len(text) <= 200 else text[:197] + "..."
