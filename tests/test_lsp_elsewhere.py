"""The editor's hover on a prompt another machine optimizes, through the real `gpo lsp`,
the daemon it starts and a real redis-server holding the other machine's run lock."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gpo_engine.task import load_task
from gpo_engine.trajectory import trajectory_key
from tests.redis_server import RedisServer, redis_server
from tests.scripted_models import write_capitals
from tests.test_lsp_server import hover_until, open_doc, session, short_dir, wait_until
from tests.test_shared_lock import LOCK

__all__ = ["redis_server", "short_dir"]  # fixtures, used by name below


async def test_the_hover_names_the_machine_that_optimizes_it_and_reads_it_afresh(
        short_dir: Path, redis_server: RedisServer) -> None:
    ws = short_dir / "ws"
    prompt = write_capitals(ws, steps=3, candidates=2)
    key = trajectory_key(load_task(prompt).fingerprint())
    lock = redis_server.client()
    lock.set(LOCK + key, json.dumps({"token": "5" * 32, "host": "workstation", "pid": 4242,
                                     "started": time.time()}), px=120_000)
    async with session(short_dir, "visual-studio-code", ws,
                       env={"GPO_CACHE_URL": redis_server.url}) as client:
        uri = open_doc(client, prompt)
        await wait_until(lambda: uri in client.diagnostics, "diagnostics")
        said = "- optimizing on workstation (pid 4242): step 0/3"
        assert said in await hover_until(client, uri, said)
        lock.delete(LOCK + key)  # the workstation's run ended: no event reaches this editor
        text = await hover_until(client, uri, "**GPO**")
        assert "optimizing on" not in text, text  # the next hover asked the daemon again
