"""Running the programs tests start as subprocesses: an editor to its end, and stopping
the services (a LiteLLM proxy, redis-server)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; the exit code."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


async def run_to_end(argv: Sequence[str], cwd: Path, env: Mapping[str, str],
                     timeout: float) -> tuple[int | None, str, str]:
    """`argv` run as an asyncio subprocess with no stdin, so the test's event loop (its model
    server) keeps serving; killed if it outlasts `timeout` seconds. Its exit code, stdout
    and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
