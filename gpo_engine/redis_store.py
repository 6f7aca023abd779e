"""One namespace of the shared store on Redis: keys, values, timeouts, and knowing it is down.

Keys are `gpo:v1:<namespace>:<key>` (`responses`, `trajectories`): another tool
on the same Redis never collides, and a later format moves to `gpo:v2` instead
of misreading this one. Values are compact JSON compressed with zlib (never
pickle: whoever can write a shared Redis must not run code in gpo), and each is
checked when read back like a disk entry; a bad one is a miss, deleted.

The client is redis-py's synchronous one, on a blocking connection pool, with
1 s connect and read timeouts and no retry of its own (redis-py's default, 10
retries with backoff, would stall a run for seconds on every call while Redis
is down; a pooled connection that died with a restarted server is noticed and
replaced by the pool before use, tested).
Synchronous because the two callers are: the response cache is read and
written inline by LLM.complete (`DiskStore.get`/`set`, no await) and the
trajectory store by the optimizer and by plain CLI commands. A round trip to a
local Redis costs 0.12 ms (a GET with its decoding, 2000 in a row; printed by
tests/test_redis_store.py), below the 0.49 ms diskcache spends writing an
answer on the same event loop, and only on a disk miss; a Redis hit copied to
disk costs 0.44 ms, a disk hit 0.02 ms, a write to both 0.54 ms. Moving to
redis.asyncio would change every caller of both stores to await; that belongs
with a store interface that is async end to end.

Down: a call that fails for a network, timeout, authentication or server
reason raises RedisUnavailable and opens a breaker: later calls fail at once,
without touching the network, until a retry is due (2 s, doubling to 60 s).
A refused connection fails in well under 1 ms; a Redis that accepts and never
answers costs one timeout (1 s) per try: 5 s in the first minute, then 1 s a
minute. The caller (gpo_engine.shared_store) keeps the work on disk meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from gpo_engine.errors import ConfigError

KEY_PREFIX = "gpo:v1"
URL_VARIABLE = "GPO_CACHE_URL"
TTL_VARIABLE = "GPO_CACHE_TTL"
TIMEOUT = 1.0  # seconds to connect and to wait for an answer (the URL may set its own)
POOL_SIZE = 16  # connections; a run uses one at a time, the daemon one per thread at most
RETRY_FIRST, RETRY_MAX = 2.0, 60.0  # seconds before trying a down Redis again, doubling
MAX_VALUE = 64 << 20  # bytes of JSON one entry may inflate to (a 300-step trajectory: ~1 MB)
_WATCH_TRIES = 20  # optimistic pushes retried when another writer changes the key meanwhile
_SCHEMES = ("redis", "rediss")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

T = TypeVar("T")
Validator = Callable[[str, Any], bool]


class RedisUnavailable(Exception):
    """Redis could not be reached or refused the command; the text never holds a password."""


def check_url(url: str, *, source: str = URL_VARIABLE) -> str:
    """`url` when it is a Redis URL gpo can use; ConfigError naming `source` otherwise."""
    shown = redact(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number in 0..65535
    except ValueError as error:
        raise ConfigError(f"{source}: {shown!r} is not a valid URL ({error})") from None
    if port == 0:
        raise ConfigError(f"{source}: {shown!r}: port 0 cannot be connected to")
    if parts.scheme not in _SCHEMES:
        raise ConfigError(f"{source}: {shown!r} is not a Redis URL; use "
                          "redis://[:password@]host:port/db, or rediss:// for TLS")
    if not parts.hostname:
        raise ConfigError(f"{source}: {shown!r} names no host")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(f"{source}: {shown!r}: the database after the port must be a "
                          f"number, not {db!r}")
    return url


def redact(url: str) -> str:
    """The URL with its password replaced by `***`, for messages."""
    return re.sub(r"(?<=://)([^:@/]*):[^@/]*@", r"\1:***@", url)


def parse_ttl(text: str | None, *, source: str = TTL_VARIABLE) -> int | None:
    """Seconds from `3600`, `90s`, `30m`, `12h` or `7d`; None for unset, empty or 0."""
    if text is None or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if match is None:
        raise ConfigError(f"{source}: {text!r} is not a duration; use seconds (3600) or a "
                          "number with s, m, h or d (12h, 7d)")
    seconds = int(match.group(1)) * _TTL_UNITS[match.group(2)]
    return seconds or None


def ttl_from_env() -> int | None:
    return parse_ttl(os.environ.get(TTL_VARIABLE))


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


class RedisStore:
    """One namespace on one Redis: get, set, set_many, delete, with a breaker when down.

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
        self.namespace = namespace
        self.ttl = ttl
        self.valid = valid
        self.retry_first, self.retry_max = retry_first, retry_max
        self._delay = retry_first
        self._retry_at = 0.0  # time.monotonic() before which a down Redis is not tried
        self.down = False
        self.last_error = ""  # why the last call failed, for warnings
        self.dropped = 0  # bad entries deleted (wrong format or shape)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._watch_error: type[BaseException] = redis.WatchError
        self._pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
        self._client = redis.Redis(connection_pool=self._pool)

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
        data = encode(value)
        self.run(lambda client: client.set(self.key(key), data, ex=self.ttl))

    def set_many(self, items: Mapping[str, Any]) -> None:
        """Every item in one MULTI/EXEC transaction: all stored, or none."""
        data = {self.key(key): encode(value) for key, value in items.items()}

        def write(client: Any) -> None:
            with client.pipeline(transaction=True) as pipe:
                for key, raw in data.items():
                    pipe.set(key, raw, ex=self.ttl)
                pipe.execute()

        if data:
            self.run(write)

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
        names = self.run(lambda client: list(client.scan_iter(match=_glob(prefix) + "*",
                                                              count=500)))
        return [bytes(name).decode("utf-8")[len(prefix):] for name in names]

    def close(self) -> None:
        self._pool.disconnect()

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
        try:
            result = operation(self._client)
        except self._errors as error:
            self._failed(error)
            raise RedisUnavailable(self.last_error) from None
        self.down, self._delay = False, self.retry_first
        return result

    def _failed(self, error: BaseException) -> None:
        self.last_error = f"{type(error).__name__}: {_short(redact(str(error)))}"
        self.down = True
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.retry_max)

    def _checked(self, key: str, raw: bytes) -> Any:
        """A stored value decoded and valid, else None (and the bad entry deleted)."""
        try:
            value = decode(raw)
        except ValueError:
            value = None
        if value is not None and (self.valid is None or self.valid(key, value)):
            return value
        self.dropped += 1
        with contextlib.suppress(*self._errors):  # gone already, or Redis just went down
            self._client.delete(self.key(key))
        return None


def _glob(text: str) -> str:
    """`text` with Redis glob characters escaped, for SCAN MATCH."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _short(text: str) -> str:
    text = " ".join(text.split()) or "no message"
    return text if len(text) <= 200 else text[:197] + "..."
