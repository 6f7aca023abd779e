"""A daemon that goes away mid-job, through the real `gpo lsp` and a real daemon process.

The test holds the runtime directory's start lock while the daemon is down, so the
server's reconnection attempts wait (as they would for a daemon slow to start) and
what the user sees meanwhile can be checked; releasing it lets the server start the
daemon again, which resumes the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from gpo_server import runtime
from tests.test_lsp_server import (
    actions_of,
    ended,
    hover_text,
    optimizing,
    progress_says,
    server_env,
    wait_until,
)

BODY_LINE = 8  # 0-based: the capitals template's first line


@contextlib.contextmanager
def holding_start_lock(directory: Path) -> Iterator[None]:
    """No daemon can be started on demand in `directory` meanwhile (runtime.start_lock)."""
    fd = os.open(directory / runtime.START_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def reports(client: LanguageClient, token: str) -> list[object]:
    return list(client.progress_reports.get(token, []))


def said_about_the_daemon(client: LanguageClient) -> list[types.ShowMessageParams]:
    return [m for m in client.messages if "daemon" in m.message]


async def take_the_daemon_away(base: Path, how: str) -> None:
    status = runtime.read_status(base / "rt")
    assert status is not None
    if how == "stop":  # `gpo daemon stop`
        await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "gpo_server.cli", "daemon", "stop",
            "--runtime-dir", str(base / "rt")], env=server_env(base, None), check=True,
            capture_output=True)
    else:
        os.kill(status.pid, signal.SIGKILL)
    await wait_until(lambda: not runtime.pid_alive(status.pid), "the daemon to be gone")


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_a_daemon_that_goes_away_is_told_shown_stale_and_recovered(
        short_dir: Path, how: str) -> None:
    async with optimizing(short_dir, "visual-studio-code", steps=5, latency=0.2) as (
            client, _, uri, first):
        await progress_says(client, first, "step 1/5")
        assert "Stop optimizing" in [a.title for a in await actions_of(client, uri)]
        old = runtime.read_status(short_dir / "rt")
        assert old is not None

        with holding_start_lock(short_dir / "rt"):
            await take_the_daemon_away(short_dir, how)
            # Told once, in a sentence; the progress pauses; the state shows as stale.
            told = await wait_until(lambda: said_about_the_daemon(client), "the warning")
            assert told[0].type == types.MessageType.Warning
            assert told[0].message == (
                "GPO: the gpo daemon stopped while following the job; reconnecting, and "
                "starting it again if needed. Scores and progress pause until it is back.")
            assert "Errno" not in told[0].message and "Connect" not in told[0].message
            await wait_until(lambda: ended(client, first), "the progress to pause")
            end = ended(client, first)[0].message
            assert end is not None and end.startswith("paused: the gpo daemon stopped")
            hover = await hover_text(client, uri, BODY_LINE)
            assert "the gpo daemon is not running: reconnecting" in hover
            assert "optimizing:" not in hover
            titles = [a.title.split(" (")[0] for a in await actions_of(client, uri)]
            assert "Stop optimizing" not in titles  # while down: nothing known to stop
            assert titles[-2:] == ["Optimize this prompt", "Re-score"]
            await asyncio.sleep(1.0)  # reconnection attempts go on meanwhile, silently

        # The server starts the daemon again, which resumes the job; the server follows
        # it under a new progress token, to the end.
        fresh = await wait_until(lambda: [str(t) for t in client.progress_reports
                                          if str(t).startswith(first + "-")], "a new token")
        assert fresh == [f"{first}-2"]
        token = fresh[0]
        await wait_until(lambda: ended(client, token), "the resumed job's progress to end")
        values = reports(client, token)
        assert isinstance(values[0], types.WorkDoneProgressBegin)
        assert any(isinstance(r, types.WorkDoneProgressReport) and r.percentage == 100
                   for r in values)
        last = ended(client, token)[-1].message
        assert last == "finished, best dev 100.0"
        new = runtime.read_status(short_dir / "rt")
        assert new is not None and new.pid != old.pid
        hover = await hover_text(client, uri, BODY_LINE)
        assert "not running" not in hover and "step 5/5" in hover
        assert len(said_about_the_daemon(client)) == 1
        assert any("reconnected to the gpo daemon" in m.message for m in client.log_messages)
