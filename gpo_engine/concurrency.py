"""How many calls a model has in flight, and what part of a call holds a slot.

`AdaptiveLimit` is one model's limit: additive increase, multiplicative
decrease on 429s, Retry-After honoured, waiters served first come first
served.

A call holds its slot in one of two ways:

- around the whole litellm call (`at_request=False`): the embedded model,
  embeddings, and any provider until it has been seen sending through
  `session()`;
- only while its HTTP request is at the provider (`at_request=True`): litellm
  is handed an aiohttp session whose trace hooks take the slot when the
  request goes out and give it back when the answer's headers arrive.

The second way exists for speed. litellm spends about 3 ms of CPU on each
call before and after its request. Held around the whole call, a slot stays
taken through that work; when C answers land together the event loop works
through them one by one and the C next requests go out up to C x 3 ms late,
in every round (bench/throughput.py: 1.30x the ideal wall time at C = 16,
200 ms). Held around the request, the waiting calls have done their work
before a slot frees, and the request goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

MAX_RETRY_WAIT = 60.0  # seconds; a Retry-After beyond this is capped, not obeyed
# A model's concurrency limit, once halved by a 429, grows back by one after
# this many successful calls in a row: slowly, so it settles under the
# provider's real limit instead of bouncing off it.
GROW_AFTER = 16


def retry_after_seconds(
    headers: Mapping[str, Any] | None, now: float | None = None
) -> float | None:
    """Seconds a server asked us to wait, from Retry-After (seconds or HTTP date)
    or OpenAI's retry-after-ms; None when absent or unreadable. Never negative."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 7231 dates are GMT; a naive parse means it said so
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class AdaptiveLimit:
    """How many calls to one model may be in flight: `limit`, between 1 and `ceiling`.

    Additive increase, multiplicative decrease (as TCP does): a 429 halves
    the limit (once per burst: the 429s of calls that started before the
    last halving do not halve it again) and, with a Retry-After, holds new
    calls back until then; GROW_AFTER successes in a row raise it by one,
    never above the configured ceiling.

    A freed slot is handed straight to the longest waiter (no wake-up of
    every waiter to race for it), and `release` never awaits, so a call
    being cancelled can always give its slot back.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self._streak = 0
        self._epoch = 0  # bumped by every halving
        self._resume_at = 0.0  # loop time before which no new call starts (Retry-After)
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch to hand back to `release`."""
        loop = asyncio.get_running_loop()
        if not self._waiters and self.in_flight < self.limit and self._resume_at <= loop.time():
            self.in_flight += 1
            return self._epoch
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiters.append(waiter)
        self._hand_out()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.in_flight -= 1
                self._hand_out()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, epoch: int, rate_limited: bool, ok: bool,
                retry_after: float | None) -> None:
        self.in_flight -= 1
        if rate_limited:
            self._streak = 0
            if epoch == self._epoch:
                self.limit = max(1, self.limit // 2)
                self._epoch += 1
            if retry_after:
                now = asyncio.get_running_loop().time()
                self._resume_at = max(self._resume_at, now + min(retry_after, MAX_RETRY_WAIT))
        elif ok:
            self._streak += 1
            if self.limit < self.ceiling and self._streak >= GROW_AFTER:
                self.limit += 1
                self._streak = 0
        self._hand_out()

    def _hand_out(self) -> None:
        """Give free slots to waiters in arrival order, unless Retry-After holds them."""
        if not self._waiters:
            return
        loop = asyncio.get_running_loop()
        if self._resume_at > loop.time():
            if self._timer is None:
                self._timer = loop.call_at(self._resume_at, self._on_timer)
            return
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while waiting
                continue
            self.in_flight += 1
            waiter.set_result(self._epoch)

    def _on_timer(self) -> None:
        self._timer = None
        self._hand_out()  # sets a new timer if Retry-After was pushed further meanwhile


class Baton:
    """One holder at a time, handed on in arrival order; a waiter that has waited
    `patience` seconds goes on without it.

    Held through the stretches of litellm's CPU work (preparing a request,
    digesting an answer) so that the event loop polls its sockets between two
    of them: an answer that lands while others are queued is noticed after one
    stretch (~2-3 ms), not after all of them. The patience bounds what a holder
    stuck on something slow (litellm refreshing a credential, say) can cost the
    others: ordering, never progress.
    """

    def __init__(self, patience: float = 0.25) -> None:
        self.patience = patience
        self.held = False
        self._waiters: deque[asyncio.Future[bool]] = deque()

    async def take(self) -> bool:
        """True once held; False if the patience ran out first (not held)."""
        if not self.held and not self._waiters:
            self.held = True
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.patience, self._give_up, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.give()  # handed over just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # stays held, by the next in line
                return
        self.held = False

    def _give_up(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            waiter.set_result(False)


_batons: dict[asyncio.AbstractEventLoop, Baton] = {}


def baton() -> Baton:
    """This event loop's baton (asyncio futures belong to one loop)."""
    loop = asyncio.get_running_loop()
    found = _batons.get(loop)
    if found is None:
        found = _batons[loop] = Baton()
    return found


@dataclass
class CallSlot:
    """One model call's hold on its model's limit, and on the loop's baton."""

    limit: AdaptiveLimit
    at_request: bool  # the trace hooks take and give back the slot of each HTTP request
    requests: int = 0  # HTTP requests this call sent through `session()`
    held: list[int] = field(default_factory=list)  # epochs of its requests at the provider
    has_baton: bool = False
    # Raises (the spend cap) when the request may no longer go out; asked once
    # the slot is taken, since spend can grow while a prepared call waits for it.
    may_send: Callable[[], None] | None = None
    refused: BaseException | None = None  # what may_send raised, for the caller
    queued: float = 0.0  # seconds its requests spent waiting for a slot, so far
    queued_since: float | None = None  # loop time a request began waiting, while it waits

    def queued_for(self, now: float) -> float:
        """Seconds spent waiting for a slot up to `now`: not the provider's time,
        so a timeout must not count them."""
        return self.queued + (now - self.queued_since if self.queued_since is not None else 0.0)

    async def take_baton(self) -> None:
        if not self.has_baton:
            self.has_baton = await baton().take()

    def give_baton(self) -> None:
        if self.has_baton:
            self.has_baton = False
            baton().give()

    def release_all(self) -> None:
        """Give back what the call still holds: a request cancelled before its
        trace hooks ran, the baton of a call that failed inside litellm."""
        while self.held:
            self.limit.release(self.held.pop(), rate_limited=False, ok=False, retry_after=None)
        self.give_baton()


# The call the current task is making. Tasks litellm starts inside a call copy
# this context, so its HTTP request finds the same CallSlot.
_current: ContextVar[CallSlot | None] = ContextVar("gpo_call_slot", default=None)


@contextlib.contextmanager
def making(slot: CallSlot) -> Iterator[CallSlot]:
    """Mark `slot` as the call this task is making, for the trace hooks."""
    token = _current.set(slot)
    try:
        yield slot
    finally:
        _current.reset(token)
        slot.release_all()


async def _on_request_start(_session: Any, _ctx: SimpleNamespace, _params: Any) -> None:
    slot = _current.get()
    if slot is None:
        return
    slot.requests += 1
    slot.give_baton()  # litellm has prepared the request
    if slot.at_request:
        loop = asyncio.get_running_loop()
        slot.queued_since = loop.time()
        try:
            epoch = await slot.limit.acquire()
        finally:
            slot.queued += loop.time() - slot.queued_since
            slot.queued_since = None
        if slot.may_send is not None:
            try:
                slot.may_send()
            except Exception as exc:
                # Before any connection is made: nothing reaches the provider.
                slot.limit.release(epoch, rate_limited=False, ok=False, retry_after=None)
                slot.refused = exc
                raise
        slot.held.append(epoch)


async def _on_request_end(_session: Any, _ctx: SimpleNamespace, params: Any) -> None:
    slot = _current.get()
    if slot is None or not slot.held:
        return
    status = params.response.status
    rate_limited = status == 429
    wait = retry_after_seconds(params.response.headers) if rate_limited else None
    slot.limit.release(slot.held.pop(), rate_limited=rate_limited, ok=status < 400,
                       retry_after=wait)
    # Let the call that was just handed the slot send its request before this
    # one goes on to litellm's parsing, pricing and logging of the answer.
    await asyncio.sleep(0)
    if params.response.content.is_eof():
        # Only once the whole body is in: the baton must not wait on the network.
        await slot.take_baton()


async def _on_request_exception(_session: Any, _ctx: SimpleNamespace, _params: Any) -> None:
    slot = _current.get()
    if slot is not None and slot.held:
        slot.limit.release(slot.held.pop(), rate_limited=False, ok=False, retry_after=None)


# One session per event loop (aiohttp sessions belong to the loop they were made in).
_sessions: dict[asyncio.AbstractEventLoop, Any] = {}


async def session() -> Any:
    """The aiohttp session litellm should send this loop's model calls through.

    Closed when the loop shuts down (asyncio.run and aiohttp's run_app close
    every live async generator then), so no caller has to remember to.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    current = _sessions.get(loop)
    if current is not None and not current.closed:
        return current
    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(_on_request_start)
    trace.on_request_end.append(_on_request_end)
    trace.on_request_exception.append(_on_request_exception)
    made = aiohttp.ClientSession(
        trace_configs=[trace],
        # No connection cap of its own: the models' limits are the cap, and
        # aiohttp's default of 100 would quietly lower a higher gpo.concurrency.
        connector=aiohttp.TCPConnector(limit=0),
        # Proxies from the environment only when asked, as litellm's own session does.
        trust_env=os.environ.get("AIOHTTP_TRUST_ENV", "").lower() in ("1", "true", "yes"),
    )
    _sessions[loop] = made
    closer = _close_at_shutdown(loop, made)
    await closer.__anext__()  # registers the generator with this loop's shutdown
    _closers[loop] = closer
    return made


_closers: dict[asyncio.AbstractEventLoop, Any] = {}  # strong refs until the loop closes them


async def _close_at_shutdown(loop: asyncio.AbstractEventLoop, made: Any) -> Any:
    try:
        yield
    finally:
        _sessions.pop(loop, None)
        _closers.pop(loop, None)
        _batons.pop(loop, None)
        await made.close()
