"""Steps finished elsewhere, seen from this machine's daemon (issue 16 item 2).

Two "machines" share one real redis-server (GPO_CACHE_URL), each with a cache dir of
its own: on the laptop a real `gpo optimize` runs mid-way against the test model
server; the workstation's daemon answers the prompt state with the laptop's finished
steps and names the laptop's run as `elsewhere`; `gpo daemon jobs --json` lists it,
and the hover says it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from gpo_engine.task import load_task
from gpo_engine.trajectory import trajectory_key
from gpo_server.client import DaemonClient
from gpo_server.daemon import DaemonConfig
from gpo_server.lsp_hover import hover_markdown
from gpo_server.prompt_state import parse_state
from tests.model_server import ModelServer
from tests.redis_server import RedisServer, redis_server
from tests.scripted_models import ScriptedModels, write_capitals
from tests.test_daemon import daemon
from tests.test_shared_lock import (
    GPO,
    HOST,
    LOCK,
    _clean_environment,
    _env,
    _finish,
    _start,
    _steps_shared,
)

# Fixtures, used by name below; _clean_environment is autouse (no warnings given yet, no
# GPO_CACHE_URL but the test's own, an API key).
__all__ = ["_clean_environment", "redis_server"]

STEPS = 6


async def _daemon_jobs(runtime_dir: Path, *extra: str) -> str:
    """`gpo daemon jobs` in a process of its own (this loop serves the daemon)."""
    proc = await asyncio.create_subprocess_exec(
        *GPO, "daemon", "jobs", "--runtime-dir", str(runtime_dir), *extra,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _state_when(client: DaemonClient, prompt: Path, done: Any) -> dict[str, Any]:
    for _ in range(1200):  # up to 120 s
        state = await client.prompt_state(prompt)
        if done(state):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError("the prompt state never showed it")


async def test_a_run_on_another_machine_shows_in_the_state_the_jobs_and_the_hover(
        tmp_path: Path, short_dir: Path, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_capitals(tmp_path / "p", steps=STEPS)
    key = trajectory_key(load_task(prompt).fingerprint())
    async with ModelServer(answer=ScriptedModels().answer, latency=0.05) as server:
        laptop = await _start(prompt, server.api_base, _env(tmp_path / "laptop", redis_server.url))
        await _steps_shared(tmp_path / "watcher", key, laptop)
        server.latency = 1.0  # a step takes seconds: the laptop is mid-run while B looks
        config = DaemonConfig(runtime_dir=short_dir / "rt", api_base=server.api_base,
                              cache_dir=tmp_path / "workstation", idle_timeout=0)
        async with daemon(config, roots=(prompt.parent,)) as (client, _):
            state = await client.prompt_state(prompt)
            assert state["job"] is None  # not this daemon's job
            seen = state["steps_done"]
            assert 1 <= seen < STEPS
            assert len(state["history"]) == seen + 1  # the laptop's steps, from Redis
            assert all(item["step"] <= seen for item in state["scored"])
            elsewhere = state["elsewhere"]
            assert (elsewhere["host"], elsewhere["pid"]) == (HOST, laptop.pid)
            assert (elsewhere["steps_done"], elsewhere["total_steps"]) == (seen, STEPS)
            assert abs(elsewhere["started"] - time.time()) < 120

            listed = json.loads(await _daemon_jobs(config.runtime_dir, "--json"))
            assert listed["jobs"] == []
            [row] = listed["elsewhere"]
            assert row["state"] == "elsewhere" and row["key"] == key
            assert row["path"] == str(prompt.resolve())
            assert (row["host"], row["pid"], row["total_steps"]) == (HOST, laptop.pid, STEPS)
            assert row["steps_done"] >= seen
            table = await _daemon_jobs(config.runtime_dir)
            assert str(prompt.resolve()) in table and " elsewhere " in table
            assert f"optimizing on {HOST} (pid {laptop.pid})" in table

            # Read afresh for each request, not once for the daemon's life.
            later = await _state_when(client, prompt, lambda s: s["steps_done"] > seen)
            assert later["elsewhere"]["steps_done"] == later["steps_done"]
            assert len(later["history"]) == later["steps_done"] + 1

            shown = parse_state(later)
            assert shown.elsewhere is not None and shown.elsewhere.pid == laptop.pid
            hover = hover_markdown(shown, shown.text)
            assert (f"- optimizing on {HOST} (pid {laptop.pid}): "
                    f"step {later['steps_done']}/{STEPS}") in hover

            server.latency = 0.0
            code, result, err = await _finish(laptop)
            assert code == 0, err
            # The laptop's run ended: its steps stay, and nothing runs elsewhere now.
            final = await client.prompt_state(prompt)
            assert final["elsewhere"] is None and final["steps_done"] == STEPS
            assert final["suggestion"] is not None
            assert final["suggestion"]["text"] == result["best"]
            assert (await client.job_list())["elsewhere"] == []
    assert redis_server.client().get(LOCK + key) is None


async def test_this_daemons_own_job_is_not_elsewhere_and_redis_down_is_no_error(
        tmp_path: Path, short_dir: Path, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_capitals(tmp_path / "p", steps=2)
    async with ModelServer(answer=ScriptedModels().answer, latency=0.2) as server:
        config = DaemonConfig(runtime_dir=short_dir / "rt", api_base=server.api_base,
                              cache_dir=tmp_path / "workstation", idle_timeout=0)
        async with daemon(config, roots=(prompt.parent,)) as (client, _):
            job, _ = await client.create_job(prompt)
            key = trajectory_key(load_task(prompt).fingerprint())
            lock = redis_server.client()
            for _ in range(600):  # until the job holds the shared lock
                if lock.get(LOCK + key) is not None:
                    break
                await asyncio.sleep(0.05)
            assert json.loads(lock.get(LOCK + key))["pid"] == os.getpid()
            state = await client.prompt_state(prompt)
            assert state["job"]["id"] == job["id"] and state["elsewhere"] is None
            assert (await client.job_list())["elsewhere"] == []
            await client.wait(job["id"])
            redis_server.stop()
            began = time.monotonic()
            with pytest.warns(RuntimeWarning, match="was lost"):  # the shared cache's one word
                state = await client.prompt_state(prompt)
                listed = await client.job_list()
            assert state["elsewhere"] is None and listed["elsewhere"] == []
            assert time.monotonic() - began < 10


async def test_a_run_elsewhere_of_an_edited_text_counts_its_own_steps(
        tmp_path: Path, short_dir: Path, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's older run (the text before an edit) is still what `scored` shows, but
    the run elsewhere is of the new text: its steps are its own (none saved yet)."""
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_capitals(tmp_path / "p", steps=2)
    async with ModelServer(answer=ScriptedModels().answer) as server:
        config = DaemonConfig(runtime_dir=short_dir / "rt", api_base=server.api_base,
                              cache_dir=tmp_path / "workstation", idle_timeout=0)
        async with daemon(config, roots=(prompt.parent,)) as (client, _):
            job, _ = await client.create_job(prompt)
            assert (await client.wait(job["id"]))["state"] == "finished"
            prompt.write_text(prompt.read_text() + "Answer with the city only.\n")
            key = trajectory_key(load_task(prompt).fingerprint())
            redis_server.client().set(LOCK + key, json.dumps(
                {"token": "6" * 32, "host": "laptop", "pid": 77, "started": 1.7e9}), px=60_000)
            state = await client.prompt_state(prompt)
            assert state["steps_done"] == 2  # the file's latest run: the text before the edit
            assert state["elsewhere"] == {"host": "laptop", "pid": 77, "started": 1.7e9,
                                          "steps_done": 0, "total_steps": 2}
            [row] = (await client.job_list())["elsewhere"]
            assert (row["key"], row["path"], row["steps_done"]) == (key, "", 0)
            table = await _daemon_jobs(config.runtime_dir)
            assert f"(trajectory {key})" in table and "optimizing on laptop (pid 77)" in table
