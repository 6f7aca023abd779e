"""Per-model concurrency adapts to 429s: halve, wait for Retry-After, grow back slowly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gpo_engine.concurrency import GROW_AFTER, AdaptiveLimit
from gpo_engine.llm import LLM
from gpo_engine.task import load_task
from tests.model_server import ModelServer
from tests.scripted_models import ScriptedModels, run_task, write_capitals
from tests.watched_limits import WatchedLimit, WatchedLimits

MODEL = "openai/fake"


class CountingServer(ModelServer):
    """The test server, also noting at which request number each 429 went out."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rejected_at: list[int] = []

    def _overloaded(self) -> web.Response:
        self.rejected_at.append(self.requests)
        return super()._overloaded()


pytestmark = pytest.mark.usefixtures("api_key")


# -- the limit on its own ------------------------------------------------------------


async def test_a_429_halves_once_per_burst() -> None:
    limit = WatchedLimit(8)
    epochs = [await limit.acquire() for _ in range(6)]
    assert limit.in_flight == 6
    # Six calls of one burst come back 429: one halving, not six.
    for epoch in epochs:
        limit.release(epoch, rate_limited=True, ok=False, retry_after=None)
    assert (limit.limit, limit.lowest, limit.in_flight) == (4, 4, 0)
    # A call started after the halving that also gets a 429 halves again.
    epoch = await limit.acquire()
    limit.release(epoch, rate_limited=True, ok=False, retry_after=None)
    assert limit.limit == 2
    for _ in range(5):
        limit.release(await limit.acquire(), rate_limited=True, ok=False, retry_after=None)
    assert limit.limit == 1 and limit.lowest == 1  # never below one


async def test_successes_grow_the_limit_by_one_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(3)
    limit.release(await limit.acquire(), rate_limited=True, ok=False, retry_after=None)
    assert limit.limit == 1
    for _ in range(GROW_AFTER - 1):
        limit.release(await limit.acquire(), rate_limited=False, ok=True, retry_after=None)
    assert limit.limit == 1
    limit.release(await limit.acquire(), rate_limited=False, ok=True, retry_after=None)
    assert limit.limit == 2
    # Other failures neither grow nor shrink it, and break no streak of 429s.
    limit.release(await limit.acquire(), rate_limited=False, ok=False, retry_after=None)
    assert limit.limit == 2
    for _ in range(10 * GROW_AFTER):
        limit.release(await limit.acquire(), rate_limited=False, ok=True, retry_after=None)
    assert limit.limit == 3  # the configured ceiling, never above


async def test_retry_after_holds_new_calls_back() -> None:
    limit = AdaptiveLimit(4)
    loop = asyncio.get_running_loop()
    epoch = await limit.acquire()
    limit.release(epoch, rate_limited=True, ok=False, retry_after=30.0)
    assert limit._resume_at >= loop.time() + 29
    waiting = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not waiting.done()  # still held back by Retry-After
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limit.in_flight == 0


async def test_a_cancelled_call_gives_its_slot_back() -> None:
    async with ModelServer(latency=5.0) as server:
        limits = WatchedLimits()
        llm = LLM(cache_dir=None, concurrency=2, api_base=server.api_base, api_key="test",
                  limits=limits)
        call = asyncio.ensure_future(llm.complete(MODEL, [{"role": "user", "content": "x"}]))
        while server.requests == 0:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        limit = limits.last
        assert limit.in_flight == 0 and limit.limit == 2


# -- against the test server --------------------------------------------------------


async def test_llm_settles_under_the_servers_concurrency_threshold() -> None:
    async with CountingServer(latency=0.02, max_concurrency=2) as server:
        limits = WatchedLimits()
        llm = LLM(cache_dir=None, concurrency=8, max_retries=4, backoff_base=0.01,
                  api_base=server.api_base, api_key="test", limits=limits)

        async def burst(tag: str, n: int) -> None:
            await asyncio.gather(*(llm.complete(MODEL, [{"role": "user", "content": f"{tag}{i}"}])
                                   for i in range(n)))

        await burst("warm", 60)
        first = len(server.rejected_at)
        start = server.requests
        await burst("steady", 128)
        later = server.rejected_at[first:]
        steady_requests = server.requests - start
    usage = llm.usage.per_model[MODEL]
    assert usage.failures == 0
    assert first > 0  # the threshold was hit at first...
    limit = limits.last
    assert limit.lowest <= 2 and limit.limit <= 3
    # ...and then probed at most once per GROW_AFTER successes: with a fixed
    # semaphore of 8 every round of requests would get six 429s.
    assert len(later) <= steady_requests // GROW_AFTER + 1, (len(later), steady_requests)
    assert usage.rate_limited == server.rejected == usage.retries


async def test_optimization_rides_out_429s_without_a_failed_evaluation(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p", steps=2, candidates=4, extra="gpo.concurrency: 8\n")
    models = ScriptedModels()
    async with CountingServer(answer=models.answer, latency=0.01, max_concurrency=2) as server:
        result = await run_task(load_task(prompt), server.api_base, tmp_path / "c",
                                backoff=0.01)
        total, rejected = server.requests, server.rejected_at
    assert result.steps_done == 2 and result.stopped == ""
    assert result.usage["failures"] == 0
    assert result.best_dev.value == 100.0  # every row scored, none lost to a 429
    assert rejected, "the run never went over the server's threshold"
    per_model = result.usage["per_model"]["openai/scripted"]
    assert per_model["rate_limited"] == len(rejected)
    assert per_model["concurrency"] <= 3
    # Settled: the second half of the run saw few 429s.
    late = [i for i in rejected if i > total // 2]
    assert len(late) <= (total // 2) // GROW_AFTER + 1, (len(late), total)
