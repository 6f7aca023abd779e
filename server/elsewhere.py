"""Runs of a prompt outside this daemon: who holds its shared run lock (issue 16).

With a shared cache (`GPO_CACHE_URL`), every run (`gpo optimize`, a daemon job)
holds its prompt's run lock on Redis (gpo_engine.redis_lock), whose value names
the holder's host, pid and start time. The daemon reads that value, never takes
the lock, and answers with it: the prompt state's `elsewhere` and the
`elsewhere` rows of `GET /v1/jobs`. A run of this daemon's own jobs (the lock
names this process) is not elsewhere; a `gpo optimize` in a terminal of this
machine is (another process holds the prompt).

Redis down or not set: nothing is elsewhere, and reading costs nothing (the
store's breaker answers at once while Redis is down). The language server
never reads Redis: it only shows what the prompt state says.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from gpo_engine.redis_lock import NAMESPACE, holder_from_value
from gpo_engine.redis_store import RedisStore, RedisUnavailable
from gpo_engine.runlock import Holder
from gpo_engine.shared_store import configured_url
from gpo_engine.trajectory import TrajectoryStore


def holder_json(holder: Holder, steps_done: int, total_steps: int) -> dict[str, Any]:
    """The prompt state's `elsewhere` (and a jobs row's fields): who runs it, how far."""
    return {"host": holder.host, "pid": holder.pid, "started": holder.started,
            "steps_done": steps_done, "total_steps": total_steps}


class LockReader:
    """Reads who holds the shared run locks, on the Redis of $GPO_CACHE_URL (none: no one)."""

    def __init__(self, url: str | None) -> None:
        self.remote = RedisStore(url, namespace=NAMESPACE) if url else None

    @classmethod
    def from_env(cls) -> LockReader:
        return cls(configured_url())

    @staticmethod
    def mine(holder: Holder) -> bool:
        """Whether `holder` is this process (one of this daemon's jobs)."""
        return holder.pid == os.getpid() and holder.host == socket.gethostname()

    async def holder(self, key: str) -> Holder | None:
        """Who holds the run lock of trajectory `key`, unless free, this process, or
        unknown (Redis away)."""
        if self.remote is None:
            return None
        name = self.remote.key(key)
        try:
            raw = await self.remote.arun(lambda client: client.get(name))
        except RedisUnavailable:
            return None
        found = holder_from_value(raw)
        return None if found is None or self.mine(found) else found

    async def holders(self) -> dict[str, Holder]:
        """Every run lock held by another process, by trajectory key."""
        if self.remote is None:
            return {}
        prefix = self.remote.key("")

        async def held(client: Any) -> Mapping[bytes, bytes | None]:
            names = [name async for name in client.scan_iter(match=prefix + "*", count=500)]
            return dict(zip(names, await client.mget(names), strict=True)) if names else {}

        try:
            values = await self.remote.arun(held)
        except RedisUnavailable:
            return {}
        out: dict[str, Holder] = {}
        for name, raw in values.items():
            found = holder_from_value(raw)
            if found is not None and not self.mine(found):
                out[bytes(name).decode("utf-8")[len(prefix):]] = found
        return out

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()


async def elsewhere_rows(reader: LockReader, store: TrajectoryStore) -> list[dict[str, Any]]:
    """`GET /v1/jobs`'s `elsewhere`: one row per run another process holds, with the file
    and the steps its shared trajectory has ("" and 0 before its first step is saved)."""
    rows = []
    for key, holder in sorted((await reader.holders()).items()):
        trajectory = store.load(key)
        rows.append({
            "key": key, "path": trajectory.path if trajectory else "", "state": "elsewhere",
            **holder_json(holder, trajectory.steps_done if trajectory else 0,
                          trajectory.total_steps if trajectory else 0)})
    return rows
