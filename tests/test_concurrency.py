"""Where a call holds its model's slot: the adaptive limit's queue, and the HTTP-level gate."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpo_engine import concurrency, sending
from gpo_engine import llm as llm_module
from gpo_engine.concurrency import AdaptiveLimit, Baton
from gpo_engine.errors import ModelCallError, SpendLimitReached
from gpo_engine.llm import LLM
from tests.model_server import Fault, ModelServer
from tests.watched_limits import WatchedLimits

MODEL = "openai/fake"
ROOT = Path(__file__).resolve().parent.parent


def _ask(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i}"}]


async def _gated(server: ModelServer, **settings: Any) -> LLM:
    """An LLM on `server` whose first call is done, so its slots are held per request."""
    llm = LLM(cache_dir=None, api_base=server.api_base, api_key="test", **settings)
    latency, server.latency = server.latency, 0.0
    await llm.complete(MODEL, _ask(-1))
    server.latency = latency
    assert MODEL in llm._per_request
    return llm


def _fresh_interpreter(tmp_path: Path, body: str) -> str:
    """Run `body` in a new Python (after the repository's imports); its stdout.
    For what is process-wide: the garbage collector, sessions closed at exit."""
    script = tmp_path / "fresh.py"
    script.write_text(
        "import asyncio, gc, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from gpo_engine import concurrency\n"
        "from gpo_engine.llm import LLM\n"
        "from tests.model_server import ModelServer\n" + body)
    env = {"OPENAI_API_KEY": "test", "PATH": "/usr/bin:/bin",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-W", "always", str(script)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    # aiohttp prints "Unclosed client session" at garbage collection or exit.
    assert "Unclosed" not in done.stderr, done.stderr
    return done.stdout


# -- the limit's queue ----------------------------------------------------------------


async def test_a_freed_slot_goes_to_the_longest_waiter() -> None:
    limit = AdaptiveLimit(1)
    first = await limit.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        epoch = await limit.acquire()
        order.append(i)
        limit.release(epoch, rate_limited=False, ok=True, retry_after=None)

    waiters = [asyncio.ensure_future(wait(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert limit.in_flight == 1 and order == []
    limit.release(first, rate_limited=False, ok=True, retry_after=None)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3, 4]
    assert limit.in_flight == 0


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    limit = AdaptiveLimit(1)
    held = await limit.acquire()
    doomed = asyncio.ensure_future(limit.acquire())
    later = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    # The slot is handed to `doomed`, which is cancelled before it runs again.
    limit.release(held, rate_limited=False, ok=True, retry_after=None)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await asyncio.wait_for(later, 1.0)  # the slot moved on instead of leaking
    assert limit.in_flight == 1


async def test_retry_after_holds_waiters_then_lets_them_go() -> None:
    limit = AdaptiveLimit(2)
    epoch = await limit.acquire()
    limit.release(epoch, rate_limited=True, ok=False, retry_after=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(limit.acquire(), 2.0)
    assert loop.time() - started >= 0.19
    assert limit.limit == 1


# -- the baton ----------------------------------------------------------------------------


async def test_the_baton_goes_to_waiters_in_arrival_order() -> None:
    baton = Baton(patience=5.0)
    assert await baton.take()
    order: list[int] = []

    async def turn(i: int) -> None:
        assert await baton.take()
        order.append(i)
        await asyncio.sleep(0)  # still held: nobody else runs its turn meanwhile
        order.append(i)
        baton.give()

    turns = [asyncio.ensure_future(turn(i)) for i in range(4)]
    await asyncio.sleep(0)
    baton.give()
    await asyncio.gather(*turns)
    assert order == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not baton.held


async def test_a_waiter_goes_on_without_the_baton_when_its_patience_runs_out() -> None:
    baton = Baton(patience=0.05)
    assert await baton.take()  # a holder that never gives it back (stuck on the network)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(baton.take(), 2.0) is False
    assert 0.04 <= loop.time() - started < 1.0
    baton.give()
    assert not baton.held  # the one that gave up was not in line any more
    assert await baton.take()


async def test_a_waiter_cancelled_as_it_is_handed_the_baton_passes_it_on() -> None:
    baton = Baton(patience=5.0)
    assert await baton.take()
    doomed = asyncio.ensure_future(baton.take())
    later = asyncio.ensure_future(baton.take())
    await asyncio.sleep(0)
    baton.give()
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await asyncio.wait_for(later, 1.0) is True
    baton.give()
    assert not baton.held


# -- the HTTP-level gate ----------------------------------------------------------------


async def test_after_the_first_call_slots_are_held_per_request_and_the_cap_holds() -> None:
    async with ModelServer(latency=0.05, max_concurrency=3) as server:
        limits = WatchedLimits()
        llm = await _gated(server, concurrency=3, limits=limits)
        await asyncio.gather(*(llm.complete(MODEL, _ask(i)) for i in range(24)))
        assert server.max_in_flight <= 3
        assert server.rejected == 0
        limit = limits.last
        assert limit.in_flight == 0
        usage = llm.usage.per_model[MODEL]
        assert (usage.calls, usage.failures, usage.retries) == (25, 0, 0)


async def test_a_transport_that_bypasses_the_gate_falls_back_to_whole_call_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A session without the trace hooks stands in for litellm reusing an HTTP
    # client made elsewhere: the call never shows up at the gate.
    plain: list[aiohttp.ClientSession] = []

    async def untraced() -> aiohttp.ClientSession:
        if not plain:
            plain.append(aiohttp.ClientSession())
        return plain[0]

    async with ModelServer(latency=0.05, max_concurrency=2) as server:
        llm = LLM(cache_dir=None, concurrency=2, api_base=server.api_base, api_key="test")
        llm._per_request.add(MODEL)  # as if an earlier call had gone through the gate
        monkeypatch.setattr(concurrency, "session", untraced)
        try:
            await llm.complete(MODEL, _ask(-1))
            assert MODEL not in llm._per_request  # seen bypassing: back to whole-call slots
            await asyncio.gather(*(llm.complete(MODEL, _ask(i)) for i in range(12)))
        finally:
            await plain[0].close()
        assert server.max_in_flight <= 2 and server.rejected == 0


async def test_a_cancelled_call_at_the_provider_frees_its_slot_and_the_baton() -> None:
    async with ModelServer(latency=5.0) as server:
        limits = WatchedLimits()
        llm = await _gated(server, concurrency=2, limits=limits)
        call = asyncio.ensure_future(llm.complete(MODEL, _ask(0)))
        while server.in_flight == 0:
            await asyncio.sleep(0.01)
        limit = limits.last
        assert limit.in_flight == 1  # held by the request, per request
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert limit.in_flight == 0
        assert not concurrency.baton().held
        server.latency = 0.0
        done = await asyncio.wait_for(llm.complete(MODEL, _ask(1)), 10)
        assert done.text


async def test_a_429_at_the_request_halves_the_limit_and_the_retry_succeeds() -> None:
    async with ModelServer(latency=0.02, max_concurrency=2, overload_retry_after="0.05") as server:
        limits = WatchedLimits()
        llm = await _gated(server, concurrency=6, backoff_base=0.01, limits=limits)
        await asyncio.gather(*(llm.complete(MODEL, _ask(i)) for i in range(30)))
    limit = limits.last
    usage = llm.usage.per_model[MODEL]
    assert server.rejected > 0 and usage.failures == 0
    assert limit.lowest <= 3
    assert usage.rate_limited == server.rejected


def test_the_session_is_closed_when_the_loop_shuts_down(tmp_path: Path) -> None:
    out = _fresh_interpreter(tmp_path, (
        "made = []\n"
        "async def main():\n"
        "    async with ModelServer() as server:\n"
        "        llm = LLM(cache_dir=None, api_base=server.api_base, api_key='test',\n"
        "                  direct_path=False)\n"
        "        for i in range(3):\n"
        "            await llm.complete('openai/fake', [{'role': 'user', 'content': str(i)}])\n"
        "        made.append(await concurrency.session())\n"
        "asyncio.run(main())\n"
        "asyncio.run(main())  # a second loop gets a session of its own\n"
        "gc.collect()\n"
        "assert made[0] is not made[1], 'one session per loop'\n"
        "assert all(s.closed for s in made), 'a session outlived its loop'\n"
        "assert not concurrency._sessions, concurrency._sessions\n"
        "print('ok')\n"))
    assert out.strip() == "ok"


async def test_the_baton_is_held_while_litellm_prepares_and_digests_not_at_the_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, bool]] = []
    start, end = concurrency._on_request_start, concurrency._on_request_end

    async def spy_start(*args: Any) -> None:
        seen.append(("prepared", concurrency.baton().held))
        await start(*args)
        seen.append(("sent", concurrency.baton().held))

    async def spy_end(*args: Any) -> None:
        await end(*args)
        seen.append(("digesting", concurrency.baton().held))

    monkeypatch.setattr(concurrency, "_on_request_start", spy_start)
    monkeypatch.setattr(concurrency, "_on_request_end", spy_end)
    async with ModelServer() as server:
        llm = LLM(cache_dir=None, concurrency=2, api_base=server.api_base, api_key="test")
        await llm.complete(MODEL, _ask(0))  # the first call: whole-call slot, no baton
        assert seen[:2] == [("prepared", False), ("sent", False)]
        seen.clear()
        await llm.complete(MODEL, _ask(1))
        assert seen == [("prepared", True), ("sent", False), ("digesting", True)]
        assert not concurrency.baton().held  # given back when the call returned


async def test_a_concurrency_above_a_hundred_is_not_capped_by_the_http_client() -> None:
    # aiohttp's default connector allows 100 connections: the session must not.
    async with ModelServer(latency=2.0) as server:
        llm = await _gated(server, concurrency=120, timeout=30)
        await asyncio.gather(*(llm.complete(MODEL, _ask(i)) for i in range(120)))
    assert server.max_in_flight > 100


async def test_faults_at_the_provider_give_back_per_request_slots() -> None:
    # After the first call the slot is taken and given back by the trace hooks:
    # a hang (our timeout), a 500, a 429 with Retry-After and a non-JSON body
    # must each give it back, and the retries must then succeed.
    async with ModelServer() as server:
        limits = WatchedLimits()
        llm = await _gated(server, concurrency=2, timeout=1.0, backoff_base=0.01, limits=limits)
        server.push(Fault(hang=True), Fault(status=500), Fault(status=429, retry_after="0.1"),
                    Fault(garbage=True))
        done = await llm.complete(MODEL, _ask(0))
        assert done.text
        limit = limits.last
        assert limit.in_flight == 0
        assert not concurrency.baton().held
        usage = llm.usage.per_model[MODEL]
        assert (usage.calls, usage.retries, usage.rate_limited, usage.failures) == (6, 4, 1, 0)
        # The slots are all back: both can be in flight at once again.
        server.latency = 0.2
        await asyncio.gather(*(llm.complete(MODEL, _ask(i)) for i in (1, 2)))
        assert server.max_in_flight == 2


@pytest.fixture
def no_watchdog_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog gives up at the call's own timeout, not five seconds later."""
    monkeypatch.setattr(sending, "_WATCHDOG_GRACE", 0.0)


@pytest.mark.usefixtures("no_watchdog_grace")
async def test_waiting_for_a_slot_does_not_count_against_the_timeout() -> None:
    # The watchdog is the call's own 0.5 s; a Retry-After of 1.5 s holds the
    # other calls at the gate longer than that.
    async with ModelServer() as server:
        llm = await _gated(server, concurrency=2, timeout=0.5, max_retries=1)
        server.latency = 0.1
        server.push(Fault(status=429, retry_after="1.5"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(llm.complete(MODEL, _ask(i)) for i in range(4)))
        assert loop.time() - started >= 1.5  # they did wait for the Retry-After
    usage = llm.usage.per_model[MODEL]
    # Only the 429 was retried: no call timed out while it waited for a slot.
    assert (usage.retries, usage.rate_limited, usage.failures, usage.calls) == (1, 1, 0, 6)


@pytest.mark.usefixtures("no_watchdog_grace")
async def test_a_provider_slower_than_the_timeout_still_times_out() -> None:
    async with ModelServer() as server:
        limits = WatchedLimits()
        llm = await _gated(server, concurrency=2, timeout=0.3, max_retries=0, limits=limits)
        server.push(Fault(hang=True))
        with pytest.raises(ModelCallError) as caught:
            await asyncio.wait_for(llm.complete(MODEL, _ask(0)), 10)
        assert caught.value.kind == "timeout"
        limit = limits.last
        assert limit.in_flight == 0


async def test_a_prepared_call_is_refused_at_the_gate_once_the_cap_is_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every call costs $1 and the cap is $2.50. With two slots, two calls wait
    # at the gate already prepared; the cap is crossed while one of them waits,
    # so when its slot frees it must not go out.
    monkeypatch.setattr(llm_module, "_price", lambda response, model: 1.0)
    async with ModelServer() as server:
        limits = WatchedLimits()
        llm = await _gated(server, concurrency=2, max_cost=2.5, limits=limits)  # $1 spent
        # Arrival order: a fast one, a slow one, then two at 0.3 s.
        server.push(Fault(delay=0.1), Fault(delay=1.5), Fault(delay=0.3), Fault(delay=0.3))
        results = await asyncio.gather(*(llm.complete(MODEL, _ask(i)) for i in range(6)),
                                       return_exceptions=True)
        answered = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, SpendLimitReached)]
        assert (len(answered), len(refused)) == (4, 2), results
        assert server.requests == 5  # the warm-up and the four answered: none refused got out
        usage = llm.usage.per_model[MODEL]
        assert usage.calls == 5 and usage.failures == 0
        limit = limits.last
        assert limit.in_flight == 0


def test_the_objects_of_litellms_import_are_frozen_out_of_the_gc(tmp_path: Path) -> None:
    # The freeze is process-wide and happens once: hence a fresh interpreter.
    out = _fresh_interpreter(tmp_path, (
        "assert gc.get_freeze_count() == 0\n"
        "async def main():\n"
        "    async with ModelServer() as server:\n"
        "        llm = LLM(cache_dir=None, api_base=server.api_base, api_key='test',\n"
        "                  direct_path=False)\n"
        "        await llm.complete('openai/fake', [{'role': 'user', 'content': 'hi'}])\n"
        "asyncio.run(main())\n"
        "print(gc.get_freeze_count())\n"))
    assert int(out.strip()) > 100_000  # litellm's objects, not a handful
