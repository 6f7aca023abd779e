"""Exact spend: a capped job killed again and again pays no more than its cap.

The provider's side is the test model server's own count: every chat request
it receives is billed at arrival, at litellm's gpt-4o-mini prices for the
tokens it answers with (the words of the messages and of the answer, as the
server reports them), as a real provider bills a request whose client died.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from model_server import Fault, ModelServer

from gpo_engine import prices, spend
from gpo_engine.errors import ModelCallError, SpendLimitReached
from gpo_engine.llm import LLM
from gpo_engine.usage import ModelUsage, Usage
from tests.scripted_models import ScriptedModels, write_capitals

MODEL = "openai/gpt-4o-mini"  # priced in litellm's local map: the spend is real dollars
CONCURRENCY = 4
STEPS = 12
# The optimizer proposes longer prompts than the file's, each one new (none is
# answered from the cache), so the job's real spend runs past `gpo optimize`'s
# estimate (which prices every task call at the file's own prompt) and the cap,
# set just above that estimate, is what stops it.
_HINTS = (
    "Think about its government, its history and the seat of its parliament first.",
    "Remember that the largest city is not always where the government sits today.",
    "Give the city where the national government and the head of state reside.",
    "Consider the official seat of government as written in the constitution.",
    "Recall the city named on maps with a star, the political centre of the land.",
    "Answer with the city that hosts the ministries, the courts and the embassies.",
    "Leave out the old royal capitals and any city that lost the title long ago.",
)
PROPOSALS = [f"<START>Name the capital city of the country. {a} {b}<END>"
             for a in _HINTS for b in _HINTS if a != b]


class Bill:
    """What the provider charges: every request received, at its answer's tokens."""

    def __init__(self, models: ScriptedModels) -> None:
        self.models = models
        self.dollars = 0.0
        self.requests = 0
        self.largest = 0.0  # the dearest single request

    def charge(self, index: int, body: dict[str, Any]) -> Fault | None:
        messages = body.get("messages", [])
        answer = self.models.answer(messages)  # the answer the server is about to send
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        cost = prices.price(MODEL, prompt_tokens, len(answer.split()))
        assert cost is not None
        self.dollars += cost
        self.requests += 1
        self.largest = max(self.largest, cost)
        return None


async def _start(cmd: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _kill_once_calling(proc: asyncio.subprocess.Process, server: ModelServer,
                             rng: random.Random) -> bool:
    """SIGKILL `proc` at a random moment once it is calling the model; False if it
    ended first (finished, or stopped at the cap without a call)."""
    seen = server.requests
    for _ in range(1200):  # up to 60 s to start up and send its first request
        if server.requests > seen or proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    if proc.returncode is None:
        await asyncio.sleep(rng.uniform(0.0, 1.0))
    if proc.returncode is not None:
        await proc.communicate()
        return False
    proc.kill()
    await proc.communicate()
    return True


async def test_a_capped_job_killed_again_and_again_pays_no_more_than_its_cap(
        tmp_path: Path) -> None:
    from gpo_engine.cost import estimate
    from gpo_engine.task import load_task, open_store

    settings = f"gpo.max_tokens: 8\ngpo.concurrency: {CONCURRENCY}\n"
    prompt = write_capitals(tmp_path / "p", model=MODEL, steps=STEPS, candidates=3,
                            extra=settings)
    cap = round(estimate(load_task(prompt)).dollars * 1.05, 6)
    prompt = write_capitals(tmp_path / "p", model=MODEL, steps=STEPS, candidates=3,
                            extra=settings + f"gpo.max_cost: {cap}\n")
    cache = tmp_path / "cache"
    env = {**os.environ, "GPO_CACHE_DIR": str(cache), "OPENAI_API_KEY": "test"}
    models = ScriptedModels(PROPOSALS)
    bill = Bill(models)
    rng = random.Random(13)
    kills = 0
    async with ModelServer(answer=models.answer, faults=bill.charge, latency=0.1) as server:
        cmd = [sys.executable, "-m", "gpo_server.cli", "optimize", str(prompt),
               "--api-base", server.api_base, "--json"]
        for _ in range(15):
            if not await _kill_once_calling(await _start(cmd, env), server, rng):
                break
            kills += 1
        last = await _start(cmd, env)
        out, err = await asyncio.wait_for(last.communicate(), 300)
        assert last.returncode == 0, err.decode()
    store = open_store(cache)
    saved = store.latest_for(str(prompt.resolve()))
    store.close()
    assert saved is not None
    recorded = saved.usage
    print(f"\nkills={kills} provider: {bill.requests} requests ${bill.dollars:.6f}; "
          f"recorded: {recorded['calls']} calls ${recorded['cost']:.6f}; cap ${cap}; "
          f"overshoot ${bill.dollars - cap:.6f} "
          f"({(bill.dollars - cap) / bill.largest:.1f} x the dearest request)")
    assert kills >= 10, "the storm should kill the job mid-run again and again"
    assert "spend limit reached" in out.decode(), "the job should end at its cap"
    # Only the calls in flight when the cap is crossed may go past it.
    assert bill.dollars <= cap + CONCURRENCY * bill.largest
    # Every request the provider received is on record (a call journaled as it
    # went out, and killed before it reached the server, is the only slack).
    assert abs(recorded["calls"] - server.requests) <= CONCURRENCY
    assert recorded["cost"] >= bill.dollars - CONCURRENCY * bill.largest


HI = [{"role": "user", "content": "hi there"}]


def _llm(server: ModelServer, cache: Path | None, **options: Any) -> LLM:
    return LLM(cache_dir=cache, api_base=server.api_base, api_key="test", backoff_base=0.01,
               **options)


def _journal(path: Path, llm: LLM, start: Usage | None = None) -> spend.SpendJournal:
    journal = spend.SpendJournal(path, start or Usage(), llm.usage)
    llm.record_spend(journal)
    return journal


async def test_a_failing_calls_usage_is_journaled(tmp_path: Path) -> None:
    path = tmp_path / "spend" / "k.jsonl"
    async with ModelServer(faults=lambda index, body: Fault(status=500)) as server:
        llm = _llm(server, None, max_retries=2)
        _journal(path, llm)
        with pytest.raises(ModelCallError):
            await llm.complete(MODEL, HI)
        # On disk before anyone closes or saves anything: a kill now loses nothing.
        read = spend.read(path)
        llm.stop_recording()
    assert read is not None and server.requests == 3
    usage = read.model(MODEL)
    assert (usage.calls, usage.retries, usage.failures) == (3, 2, 1)
    assert usage.cost == 0.0  # every hold was released: failed requests are not billed


async def test_each_answer_is_journaled_as_it_comes_back_and_a_cached_one_costs_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    async with ModelServer() as server:
        llm = _llm(server, tmp_path / "cache")
        _journal(path, llm)
        first = await llm.complete(MODEL, HI)
        after_one = spend.read(path)
        again = await llm.complete(MODEL, HI)
        llm.stop_recording()
    assert first.cost > 0 and again.cached and again.cost == 0.0
    assert after_one is not None
    assert after_one.model(MODEL).calls == 1
    assert after_one.model(MODEL).cost == pytest.approx(first.cost)
    done = spend.read(path)
    assert done is not None and done.calls == 1 and done.cost == pytest.approx(first.cost)
    assert done.cache_hits == 1  # written with the rest when the journal closes


def test_a_request_whose_process_died_counts_at_its_hold(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    live = Usage()
    journal = spend.SpendJournal(path, Usage(), live)
    live.model(MODEL).calls += 2
    journal.sent(MODEL, 0.25)
    journal.sent(MODEL, 0.5)
    journal.release(MODEL, 0.25)  # one answer came back...
    live.model(MODEL).cost += 0.125
    journal.sync(MODEL)
    # ... and the process was killed with the other still out: no close, no flush.
    read = spend.read(path)
    assert read is not None
    assert read.model(MODEL).calls == 2
    assert read.model(MODEL).cost == pytest.approx(0.125 + 0.5)


def test_reopening_folds_the_journal_into_one_line_per_model(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    live = Usage()
    journal = spend.SpendJournal(path, Usage(), live)
    for _ in range(5):
        live.model(MODEL).calls += 1
        journal.sent(MODEL, 0.1)
    start = spend.starting_usage(path, None)  # killed with five requests out
    assert start.calls == 5 and start.cost == pytest.approx(0.5)
    spend.SpendJournal(path, start, Usage()).close()
    assert len(path.read_text().splitlines()) == 1
    again = spend.read(path)
    assert again is not None and again.calls == 5 and again.cost == pytest.approx(0.5)


def test_a_bad_journal_line_is_skipped_with_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    good = json.dumps({"model": MODEL, "calls": 2, "cost": 0.5})
    path.write_text(f"{good}\n{{torn\n{json.dumps({'model': MODEL, 'cost': 'x'})}\n{good}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = spend.read(path)
    assert read is not None and read.calls == 4 and read.cost == pytest.approx(1.0)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith(f"{path}:2: not a JSON line") for m in messages)
    assert any(m.startswith(f"{path}:3: cost should be a number") for m in messages)


def test_the_saved_trajectory_wins_when_it_counts_more_calls(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    path.write_text(json.dumps({"model": MODEL, "calls": 2, "cost": 0.5}) + "\n")
    more = Usage({MODEL: ModelUsage(calls=9, cost=2.0)})  # imported, or the journal was lost
    assert spend.starting_usage(path, more).calls == 9
    fewer = Usage({MODEL: ModelUsage(calls=1, cost=0.1)})  # saved before the last calls
    assert spend.starting_usage(path, fewer).cost == pytest.approx(0.5)
    assert spend.starting_usage(tmp_path / "none.jsonl", None).calls == 0


async def test_the_cap_counts_the_journaled_spend_of_earlier_runs(tmp_path: Path) -> None:
    async with ModelServer() as server:
        llm = _llm(server, None, max_cost=0.001)
        _journal(tmp_path / "k.jsonl", llm, Usage({MODEL: ModelUsage(calls=7, cost=0.001)}))
        with pytest.raises(SpendLimitReached):
            await llm.complete(MODEL, HI)
        llm.stop_recording()
    assert server.requests == 0


def test_a_journal_that_cannot_be_written_warns_and_counts_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = Usage()
    journal = spend.SpendJournal(tmp_path / "k.jsonl", Usage(), live)

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    live.model(MODEL).calls += 1
    with pytest.warns(RuntimeWarning, match="cannot be written.*No space left"):
        journal.sent(MODEL, 0.1)
    live.model(MODEL).calls += 1
    journal.sent(MODEL, 0.1)  # no second warning, and still counted
    assert journal.total.calls == 2


def test_a_hold_is_at_least_what_the_request_can_cost() -> None:
    messages = [{"role": "user", "content": "What is the capital of France? Answer:"}]
    words = len(messages[0]["content"].split())
    assert spend.hold(MODEL, messages, 16) >= (prices.price(MODEL, words, 16) or 0.0) > 0
    assert spend.hold("openai/no-such-model-anywhere", messages, 16) == 0.0
    # A media part counts at a flat figure, however long its data: URI.
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 90_000}}
    parts = [{"role": "user", "content": [{"type": "text", "text": "Describe:"}, image]}]
    assert spend.hold(MODEL, parts, 0) == pytest.approx(
        prices.price(MODEL, 3 + spend.MEDIA_TOKENS + spend.MESSAGE_OVERHEAD, 0))
    assert spend.embedding_hold(MODEL, ["a b c"]) >= 0.0


def test_a_job_journal_carries_on_or_starts_afresh_with_its_trajectory(tmp_path: Path) -> None:
    live = Usage()
    journal = spend.for_job(tmp_path, "k", None, live)
    assert journal.path == tmp_path / "spend" / "k.jsonl"
    live.model(MODEL).calls += 3
    journal.sent(MODEL, 0.2)  # killed with it out
    resumed = spend.for_job(tmp_path, "k", None, Usage())
    assert resumed.total.calls == 3 and resumed.total.cost == pytest.approx(0.2)
    resumed.close()
    fresh = spend.for_job(tmp_path, "k", Usage({MODEL: ModelUsage(calls=9)}), Usage(),
                          restart=True)
    assert fresh.total.calls == 0
    fresh.close()
    again = spend.read(tmp_path / "spend" / "k.jsonl")
    assert again is not None and again.calls == 0
    assert spend.for_job(None, "k", None, Usage()).path is None  # no store: in memory


async def test_a_failed_run_saves_its_spend_and_a_retry_on_the_same_llm_counts_it_once(
        tmp_path: Path) -> None:
    # As the daemon retries a job: one LLM, optimize_task again after an outage.
    from gpo_engine.optimizer import optimize_task
    from gpo_engine.task import load_task, open_llm, open_store
    from tests.scripted_models import is_meta_prompt

    prompt = write_capitals(tmp_path / "p", model=MODEL, steps=2)
    task = load_task(prompt)
    outage = True

    def faults(index: int, body: dict[str, Any]) -> Fault | None:
        return Fault(status=500) if outage and is_meta_prompt(body["messages"]) else None

    async with ModelServer(answer=ScriptedModels().answer, faults=faults) as server:
        llm = open_llm(task, cache_dir=tmp_path / "c", api_base=server.api_base)
        llm.backoff_base, llm.max_retries = 0.01, 0
        store = open_store(tmp_path / "c")
        try:
            with pytest.raises(ModelCallError):
                await optimize_task(task, llm, store)
            failed = store.latest_for(str(prompt.resolve()))
            assert failed is not None and failed.steps_done == 0
            # The failed step's calls are in the trajectory, not only the initial scoring's.
            assert failed.usage["calls"] == server.requests
            assert failed.usage["failures"] == 3
            outage = False
            await optimize_task(task, llm, store)
            done = store.latest_for(str(prompt.resolve()))
        finally:
            store.close()
            llm.close()
    assert done is not None and done.steps_done == 2
    assert done.usage["calls"] == server.requests  # the first run's calls once, not twice
