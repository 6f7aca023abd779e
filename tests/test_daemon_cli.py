"""`gpo daemon ...` and `gpo optimize --daemon` as a person runs them: separate processes,
the daemon started on demand in a temp runtime dir, the test model server as the model."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from model_server import ModelServer
from test_daemon import answer, write_task

from gpo_server import runtime


@pytest.fixture
def daemon_dir(short_dir: Path) -> Iterator[Path]:
    """`short_dir`, and no daemon left running in it after the test."""
    yield short_dir
    status = runtime.read_status(short_dir / "rt")
    if status is not None and runtime.pid_alive(status.pid):
        os.kill(status.pid, 15)  # a test that failed half-way must not leave it running


async def gpo(daemon_dir: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "GPO_RUNTIME_DIR": str(daemon_dir / "rt"),
           "GPO_CACHE_DIR": str(daemon_dir / "cache"), "OPENAI_API_KEY": "test"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpo_server.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_optimize_with_daemon_starts_it_and_daemon_commands_manage_it(
        daemon_dir: Path) -> None:
    prompt = write_task(daemon_dir / "ws", steps=2)
    async with ModelServer(answer=answer) as server:
        code, out, err = await gpo(daemon_dir, "optimize", "--daemon", "--json", str(prompt),
                                   "--api-base", server.api_base)
        assert code == 0, err
        result = json.loads(out)
        assert result["steps_done"] == 2 and "carefully" in result["best"]
        assert "step 2/2" in err  # the same progress bar, fed by the event stream
        calls = server.requests

        code, out, err = await gpo(daemon_dir, "daemon", "status", "--json")
        assert code == 0, err
        status = json.loads(out)
        assert status["running"] and status["api_base"] == server.api_base
        assert status["jobs"] == {"active": 0, "total": 1}
        assert status["spend"]["calls"] == calls
        code, out, _ = await gpo(daemon_dir, "daemon", "status")
        for label in ("pid", "address", "version", "uptime", "jobs", "spend"):
            assert label in out

        code, out, _ = await gpo(daemon_dir, "daemon", "jobs", "--json")
        listed = json.loads(out)
        assert listed["elsewhere"] == []  # no shared cache: no run elsewhere
        jobs = listed["jobs"]
        assert [j["state"] for j in jobs] == ["finished"]
        assert jobs[0]["path"] == str(prompt.resolve())

        # The same run again is a new job in the running daemon, served from the cache.
        code, out, err = await gpo(daemon_dir, "optimize", "--daemon", "--json", str(prompt))
        assert code == 0, err
        assert server.requests == calls

        first = runtime.read_status(daemon_dir / "rt")
        assert first is not None
        code, _, err = await gpo(daemon_dir, "daemon", "restart", "--api-base", server.api_base)
        assert code == 0, err
        second = runtime.read_status(daemon_dir / "rt")
        assert second is not None and second.pid != first.pid
        assert not runtime.pid_alive(first.pid)

        code, _, err = await gpo(daemon_dir, "daemon", "stop")
        assert code == 0 and "stopped" in err
        assert runtime.read_status(daemon_dir / "rt") is None
        assert not runtime.pid_alive(second.pid)
        code, _, err = await gpo(daemon_dir, "daemon", "status")
        assert code == 1 and "not running" in err


async def test_optimize_with_daemon_reports_a_broken_file_with_its_line(
        daemon_dir: Path) -> None:
    prompt = write_task(daemon_dir / "ws")
    prompt.write_text("---\ngpo.steps: nope\n---\nReview: {{review}}\n", encoding="utf-8")
    code, _, err = await gpo(daemon_dir, "optimize", "--daemon", str(prompt))
    assert code == 1 and "sentiment.prompt:2" in err
    assert runtime.read_status(daemon_dir / "rt") is None  # nothing started for a bad file
