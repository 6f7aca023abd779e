"""Sending a job's requests: one adaptive concurrency limit per model, our own
retries (honouring Retry-After), a watchdog over providers that ignore their
timeout, and the dollar cap, checked as each request goes out and journaled
(gpo_engine.spend) as it goes and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import concurrency, spend
from .concurrency import MAX_RETRY_WAIT, AdaptiveLimit, CallSlot
from .errors import ConfigError, ModelCallError, SpendLimitReached
from .failures import Failure, classify_error
from .usage import Usage

# Extra seconds over `timeout` before our own watchdog gives up on a call whose
# provider ignores the timeout it was given (custom providers, stuck sockets).
_WATCHDOG_GRACE = 5.0


class Sender:
    """A job's requests to its models, within their limits, retried, counted and capped."""

    def __init__(self, *, concurrency: int, timeout: float, max_retries: int,
                 max_cost: float | None, backoff_base: float,
                 limits: Callable[[int], AdaptiveLimit] = AdaptiveLimit) -> None:
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
        self.backoff_base = backoff_base
        # Makes a model's limit from its ceiling (tests pass one that keeps them).
        self._new_limit = limits
        self.usage = Usage()
        # Dollars of the job that `usage` does not hold (its earlier runs, from the
        # spend journal): one cap covers the whole job, however often it was
        # stopped and resumed.
        self.spent_before = 0.0
        # Where each call's usage is written as it goes out and comes back (set
        # for a job by `record_spend`); None: in memory only.
        self.journal: spend.SpendJournal | None = None
        # asyncio primitives belong to one event loop; a new loop gets new semaphores.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limits: dict[str, AdaptiveLimit] = {}
        self._stages: dict[str, asyncio.Semaphore] = {}
        # Models whose calls go through concurrency.session(): their slots are
        # held per HTTP request (learned from the first call; see _learn_transport).
        self._per_request: set[str] = set()

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
            self._limits[model] = self._new_limit(self.concurrency)
        return self._limits[model]

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
