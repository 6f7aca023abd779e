"""The shared half of a prompt's run lock: one Redis key per trajectory, renewed while held.

Machines with the same `GPO_CACHE_URL` that optimize the same prompt text with
the same settings compute the same trajectory key (gpo_engine.trajectory), so
they meet at `gpo:v1:lock:<key>`:

- taken with `SET NX PX`: the value is JSON with a random token (which run
  holds it) and the holder's host, pid and start time (for the busy message);
- renewed by a thread every third of the expiry, with a Lua script that
  extends the key only while it still holds this run's value;
- released with a Lua compare-and-delete, so a run whose lock expired never
  deletes the lock another machine has taken since.

A run killed on one machine (SIGKILL, power off) stops renewing, and another
machine takes the lock over at most one expiry after the last renewal; it then
resumes from the shared trajectory (read Redis-first) and replays the killed
run's answers from the shared response cache. The expiry is `GPO_LOCK_TTL`
seconds (default 30, at least 1; `90s` and `2m` work too): shorter means a
faster take-over after a crash, and a renewal (one round trip, 0.12 ms on a
local Redis) every third of it.

Lost: the renewal finds another machine's value (it took the lock after this
one expired), finds no key (Redis restarted empty, or the key expired), or
cannot reach Redis until the expiry has passed since the last renewal that
did (until then the key is still this run's, so a short Redis blip costs
nothing). A lost lock warns once, with the reason, and sets every event linked
to it: the optimizer takes one as `cancel`, so the run ends at the next step
boundary instead of racing the other machine. A save the other machine has
overtaken meanwhile is refused by the trajectory store (StaleTrajectory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import threading
import time
import warnings
from collections.abc import Callable

from gpo_engine.errors import ConfigError
from gpo_engine.redis_settings import parse_duration
from gpo_engine.redis_store import RedisStore, RedisUnavailable
from gpo_engine.runlock import Holder

NAMESPACE = "lock"  # keys: gpo:v1:lock:<trajectory key>
EXPIRY_VARIABLE = "GPO_LOCK_TTL"
DEFAULT_EXPIRY = 30.0  # seconds
MIN_EXPIRY = 1.0  # seconds: a renewal's timeout (1 s, redis_store.TIMEOUT) fits in a third
WAIT_POLL = 0.5  # seconds between tries of a waiter (a release is seen within this)

# KEYS[1] the lock, ARGV[1] this run's value, ARGV[2] the expiry in ms.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def parse_expiry(text: str | None, *, source: str = EXPIRY_VARIABLE) -> float:
    """Seconds from `30`, `2.5`, `90s` or `2m`; DEFAULT_EXPIRY for unset or empty."""
    seconds = parse_duration(text, source=source, fractional=True)
    if seconds is None:
        return DEFAULT_EXPIRY
    if seconds < MIN_EXPIRY:
        raise ConfigError(f"{source}: {text!r} is under {MIN_EXPIRY:g} s; the lock must "
                          "outlast a renewal's round trip (up to 1 s)")
    return seconds


def expiry_from_env() -> float:
    return parse_expiry(os.environ.get(EXPIRY_VARIABLE))


def holder_from_value(raw: bytes | str | None) -> Holder | None:
    """Who the stored value names; an unreadable one is an unknown holder."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        host, pid, started = data.get("host"), data.get("pid"), data.get("started")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return Holder()
    return Holder(pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                  float(started) if isinstance(started, (int, float))
                  and not isinstance(started, bool) else None,
                  host if isinstance(host, str) and host else None)


class SharedLock:
    """The run lock of `key` on the Redis at `url`; see the module's docstring.

    `take` claims it (or says who holds it); while held, a thread renews it; `lost` is ""
    until it is lost, then why; `link(event)` sets an asyncio event when it is lost;
    `release` gives it back.
    """

    def __init__(self, url: str, key: str, path: str, *, expiry: float | None = None) -> None:
        self.path = path
        self.expiry = expiry_from_env() if expiry is None else expiry
        self.remote = RedisStore(url, namespace=NAMESPACE)
        self.name = self.remote.key(key)
        self.value = json.dumps({"token": secrets.token_hex(16), "host": socket.gethostname(),
                                 "pid": os.getpid(), "started": time.time()},
                                separators=(",", ":"))
        self.lost = ""
        self._links: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._links_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deadline = 0.0  # time.monotonic() by which the key expires unless renewed

    @property
    def shown(self) -> str:
        return self.remote.shown

    # -- taking it -------------------------------------------------------------------

    def try_take(self) -> Holder | None:
        """None when taken (and renewing from now on); the holder when another run has it.
        RedisUnavailable when Redis cannot be reached."""
        sent = time.monotonic()
        ms = round(self.expiry * 1000)
        if self.remote.run(lambda client: client.set(self.name, self.value, nx=True, px=ms)):
            self._deadline = sent + self.expiry
            self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                            name=f"gpo-lock-{self.name[-8:]}")
            self._thread.start()
            return None
        raw = self.remote.run(lambda client: client.get(self.name))
        return holder_from_value(raw) if raw is not None else Holder()

    def take(self, *, wait: bool,
             on_wait: Callable[[Holder], None] | None = None) -> Holder | None:
        """try_take; with `wait`, try again every WAIT_POLL s until taken (on_wait is told
        once who is waited for). RedisUnavailable when Redis goes away."""
        told = False
        while True:
            busy = self.try_take()
            if busy is None or not wait:
                return busy
            if not told and on_wait is not None:
                on_wait(busy)
            told = True
            time.sleep(min(WAIT_POLL, self.expiry / 3))

    # -- holding it ------------------------------------------------------------------

    def link(self, cancel: asyncio.Event) -> None:
        """Set `cancel` (on the running loop, from the renewal thread) when the lock is
        lost; at once when it already is. Call it from inside the loop."""
        loop = asyncio.get_running_loop()
        with self._links_lock:
            if not self.lost:
                self._links.append((loop, cancel))
                return
        cancel.set()

    def _renew_loop(self) -> None:
        interval = self.expiry / 3
        while not self._stop.wait(max(0.0, min(interval, self._deadline - time.monotonic()))):
            reason = self._renew()
            if reason:
                self._lose(reason)
                return

    def _renew(self) -> str:
        """"" when renewed (or Redis is away but the key is still this run's); why it is
        lost otherwise."""
        sent = time.monotonic()
        ms = round(self.expiry * 1000)
        self.remote.retry_now()  # every renewal tries the network, whatever the breaker says
        try:
            renewed = self.remote.run(
                lambda client: client.eval(_RENEW, 1, self.name, self.value, ms))
        except RedisUnavailable:
            if time.monotonic() < self._deadline:
                return ""
            return (f"Redis could not be reached for {self.expiry:g} s "
                    f"({self.remote.last_error}), so the lock expired")
        if renewed:
            self._deadline = sent + self.expiry
            return ""
        try:
            raw = self.remote.run(lambda client: client.get(self.name))
        except RedisUnavailable:
            raw = None
        if raw is None:
            return "it expired (Redis restarted, or could not be reached in time)"
        return f"{holder_from_value(raw) or Holder()} took it over after it expired"

    def _lose(self, reason: str) -> None:
        with self._links_lock:
            self.lost = reason
            links, self._links = self._links, []
        warnings.warn(
            f"{self.path}: lost the run lock {self.name} on {self.shown}: {reason}; this run "
            "stops at the end of its current step, so it never races another machine for a "
            "step; the steps it finished are kept (pushed to Redis when it answers), and "
            "running it again resumes from them", RuntimeWarning, stacklevel=2)
        for loop, event in links:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to stop
                loop.call_soon_threadsafe(event.set)

    def release(self) -> None:
        """Stop renewing and delete the key if it is still this run's; Redis being away is
        fine (the key expires on its own)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if not self.lost:
                self.remote.retry_now()
                with contextlib.suppress(RedisUnavailable):
                    self.remote.run(lambda client: client.eval(_RELEASE, 1, self.name,
                                                               self.value))
        self.remote.close()
