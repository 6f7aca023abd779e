"""A daemon process killed with SIGKILL in the middle of a step, then started again.

The job must resume at the last finished step, its trajectory must load, and
no model call that was answered before the kill may be paid for again: the
model calls of the interrupted run are counted against an uninterrupted run
of the same file (the test model server counts requests). The only calls
paid twice are the ones in flight at the moment of the kill, which never
got an answer.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from model_server import Fault, ModelServer
from test_daemon import answer, config_for, daemon, write_task

from gpo_engine.task import load_task, open_store
from gpo_engine.trajectory import trajectory_key
from gpo_server import runtime
from gpo_server.client import DaemonClient

STEPS = 3


pytestmark = pytest.mark.usefixtures("api_key")




async def uninterrupted_calls(short_dir: Path, prompt: Path) -> tuple[int, dict[str, Any]]:
    async with ModelServer(answer=answer) as server:
        config = config_for(short_dir / "rt-a", server, cache_dir=short_dir / "cache-a")
        async with daemon(config, roots=(prompt.parent,)) as (client, _):
            job, _ = await client.create_job(prompt)
            done = await client.wait(job["id"])
        assert done["state"] == "finished"
        return server.requests, done["result"]


def spawn(rt: Path, server: ModelServer, cache: Path) -> Any:
    env = {**os.environ, "GPO_CACHE_DIR": str(cache), "OPENAI_API_KEY": "test"}
    return runtime.spawn_daemon(rt, ["--api-base", server.api_base, "--idle-timeout", "0"],
                                env=env)


async def wait_dead(pid: int) -> None:
    while runtime.pid_alive(pid):
        await asyncio.sleep(0.02)


async def test_sigkill_mid_step_then_restart_resumes_and_pays_nothing_twice(
        short_dir: Path) -> None:
    prompt = write_task(short_dir / "ws", steps=STEPS)
    baseline, baseline_result = await uninterrupted_calls(short_dir, prompt)

    rt, cache = runtime.ensure_runtime_dir(short_dir / "rt-b"), short_dir / "cache-b"
    answered = {"n": 0}
    gate: dict[str, int | None] = {"from": None}

    def counted_answer(messages: list[dict[str, Any]]) -> str:
        answered["n"] += 1
        return answer(messages)

    def faults(index: int, _body: dict[str, Any]) -> Fault | None:
        # After the gate, requests hang: the kill lands while they are in flight.
        start = gate["from"]
        return Fault(delay=120) if start is not None and index >= start else None

    async with ModelServer(answer=counted_answer, faults=faults) as server:
        first = spawn(rt, server, cache)
        status = await asyncio.to_thread(runtime.wait_until_serving, rt, first)
        async with DaemonClient.for_status(status, rt) as client:
            await client.register_roots([prompt.parent])
            job, _ = await client.create_job(prompt)
            async for event in client.events(job["id"]):
                if event["kind"] == "step_started" and event["step"] == 1:
                    gate["from"] = server.requests + 1
                    break
        assert gate["from"] is not None
        while server.requests <= gate["from"]:  # a gated call of step 2 is in flight
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the answered calls reach the daemon and its cache
        answered_before, requests_before = answered["n"], server.requests
        in_flight = requests_before - answered_before
        assert in_flight >= 1
        os.kill(first.pid, signal.SIGKILL)
        await wait_dead(first.pid)
        gate["from"] = None
        # The dead daemon's status file is still there; the next start replaces it.
        stale = runtime.read_status(rt)
        assert stale is not None and stale.pid == first.pid

        second = spawn(rt, server, cache)
        status = await asyncio.to_thread(runtime.wait_until_serving, rt, second)
        assert status.pid == second.pid
        async with DaemonClient.for_status(status, rt) as client:
            resumed = await client.job(job["id"])  # resumed on startup, same id
            assert resumed["path"] == str(prompt.resolve())
            done = await client.wait(job["id"])
            events = [e async for e in client.events(job["id"])]
            await client.shutdown()
        await wait_dead(second.pid)
        resumed_calls = server.requests - requests_before

    assert done["state"] == "finished" and done["step"] == STEPS
    started = [e for e in events if e["kind"] == "job_started"]
    assert started[0]["resumed_at"] == 1  # step 1 was finished, step 2 was cut
    trajectory = open_store(cache).load(trajectory_key(load_task(prompt).fingerprint()))
    assert trajectory is not None and trajectory.steps_done == STEPS
    assert done["result"]["best"] == baseline_result["best"]
    # Every call answered before the kill came from the cache after it...
    assert resumed_calls == baseline - answered_before
    # ...so the whole interrupted job paid only for the calls cut in flight, once more.
    total = requests_before + resumed_calls
    assert total - baseline == in_flight
    print(f"\nmodel calls: uninterrupted {baseline}; interrupted {total} = "
          f"{requests_before} before the kill ({answered_before} answered, {in_flight} in "
          f"flight) + {resumed_calls} after the restart")
