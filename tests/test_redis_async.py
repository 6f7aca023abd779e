"""The response cache's Redis path on the event loop (issue 16, item 1: redis.asyncio, a pool,
timeouts), against a real redis-server: lookups made together overlap (one MGET, all of them
out at once), nothing on the path uses the blocking client, and Redis down at start or lost
mid-run behaves as on the synchronous path (one warning, the disk carries on, the outbox is
pushed when it is back) at no extra cost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpo_engine.diskstore import DiskStore
from gpo_engine.redis_store import RedisStore
from gpo_engine.shared_store import TieredStore
from tests.redis_server import RedisServer, free_port, redis_server, require_redis
from tests.test_redis_store import _answer, _fresh_warnings, _stored

__all__ = ["_fresh_warnings", "redis_server"]  # fixtures, used by name below

MARK = b"gpo:v1:responses:"  # in every command that names a response's key


class NoSyncClient:
    """Stands in for the blocking client: any use of it on the async path fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the blocking Redis client was used on the event loop ({name})")


def _store(folder: Path, url: str, *, timeout: float = 1.0, retry: float = 0.05,
           retry_max: float | None = None, blocking_client: bool = False) -> TieredStore:
    """A tiered response store whose Redis is tried again `retry` s after failing; its
    blocking client replaced by NoSyncClient once made (its start-up ping is synchronous,
    and so is its close: see _close)."""
    disk = DiskStore(folder, label="response cache", lost="nothing else")
    remote = RedisStore(url, namespace="responses", timeout=timeout, retry_first=retry,
                        retry_max=retry if retry_max is None else retry_max)
    store = TieredStore(disk, remote)
    if not blocking_client:
        remote._client = NoSyncClient()
    return store


def _close(store: TieredStore) -> None:
    """Close, with the blocking client back: a run's end is synchronous (its last push)."""
    import redis

    store.remote._client = redis.Redis(connection_pool=store.remote._pool)
    store.close()


def _clients(server: RedisServer, expected: int) -> int:
    """Connected clients (this one counted), once they are `expected` or after 2 s."""
    client: Any = server.client()
    deadline = time.monotonic() + 2
    while (count := int(client.info("clients")["connected_clients"])) != expected and (
            time.monotonic() < deadline):
        time.sleep(0.01)
    return count


def _command_calls(server: RedisServer) -> dict[str, int]:
    client: Any = server.client()
    stats = client.info("commandstats")
    return {name[len("cmdstat_"):]: int(row["calls"]) for name, row in stats.items()}


class HoldingProxy:
    """A TCP proxy to a redis-server (a thread of its own) that answers nothing about the
    responses' keys until it has seen `keys` of them asked for: lookups that overlap all get
    their answers, lookups made one after another wait for the first answer forever (and time
    out). What carries no key (the connection's handshake, PING) passes at once."""

    def __init__(self, upstream_port: int, keys: int) -> None:
        self.upstream_port = upstream_port
        self.keys = keys
        self.seen = 0  # response keys the clients have named so far
        self.port = free_port()
        self._opened = threading.Event()  # answers flow: nothing named yet, or all of them
        self._opened.set()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> HoldingProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pumps = [asyncio.ensure_future(self._requests(reader, up_writer)),
                 asyncio.ensure_future(self._answers(up_reader, writer))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:  # one side closed, or the proxy stops
            for pump in pumps:
                pump.cancel()
            for stream in (writer, up_writer):
                stream.close()

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            self.seen += data.count(MARK)
            if 0 < self.seen < self.keys:
                self._opened.clear()
            else:
                self._opened.set()
            up.write(data)
            await up.drain()

    async def _answers(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await up.read(65536):
            while not self._opened.is_set():
                await asyncio.sleep(0.005)
            writer.write(data)
            await writer.drain()


@contextlib.contextmanager
def _hung(server: RedisServer) -> Iterator[None]:
    """The redis-server stopped (SIGSTOP): it accepts and never answers, until the end."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


# -- lookups overlap ---------------------------------------------------------------


async def test_lookups_made_together_are_one_mget_and_never_touch_the_blocking_client(
        tmp_path: Path, redis_server: RedisServer) -> None:
    filler = _store(tmp_path / "a", redis_server.url)
    await filler.aset_many({f"k{n}": _answer(n) for n in range(50)})
    await filler.aset("single", _answer(99))  # one SET, no MULTI
    before = _command_calls(redis_server)
    store = _store(tmp_path / "b", redis_server.url)  # an empty disk
    got = await asyncio.gather(*(store.aget(f"k{n}") for n in range(50)),
                               store.aget("single"), store.aget("absent"))
    assert got == [*(_answer(n) for n in range(50)), _answer(99), None]
    after = _command_calls(redis_server)
    assert after.get("mget", 0) - before.get("mget", 0) == 1  # 52 lookups, one round trip
    assert after.get("get", 0) == before.get("get", 0)
    assert store.remote_hits == 51
    # Now on this disk: read again, no command at all (the INFOs that count aside), and
    # without ever suspending: the coroutine finishes at its first step, the loop not asked.
    counter: Any = redis_server.client()
    before_total = int(counter.info("stats")["total_commands_processed"])
    assert await store.aget_many([f"k{n}" for n in range(50)]) == {
        f"k{n}": _answer(n) for n in range(50)}
    lookup = store.aget("k7")
    with pytest.raises(StopIteration) as finished:
        lookup.send(None)
    assert finished.value.value == _answer(7)
    assert int(counter.info("stats")["total_commands_processed"]) == before_total + 1
    filler.close()
    store.close()


async def test_concurrent_rows_of_the_model_layer_are_looked_up_at_once(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine B (an empty disk) answers N rows from Redis through a proxy that holds every
    answer until all N lookups are out: it only works if they overlap. The same proxy
    starves a lookup made alone (the blocking path's way, one row after another)."""
    from gpo_engine.llm import LLM
    from tests.model_server import ModelServer

    rows = 12
    questions = [[{"role": "user", "content": f"question {n}"}] for n in range(rows)]
    async with ModelServer() as models:
        monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
        machine_a = LLM(cache_dir=tmp_path / "a", api_base=models.api_base, api_key="test")
        answers = [await machine_a.complete("openai/fake", q) for q in questions]
        machine_a.close()
        assert models.requests == rows
        with HoldingProxy(redis_server.port, keys=rows) as proxy:
            monkeypatch.setenv("GPO_CACHE_URL", proxy.url)
            machine_b = LLM(cache_dir=tmp_path / "b", api_base=models.api_base,
                            api_key="test")
            machine_b._cache._store.remote._client = NoSyncClient()
            got = await asyncio.gather(*(machine_b.complete("openai/fake", q)
                                         for q in questions))
            assert [g.text for g in got] == [a.text for a in answers]
            assert all(g.cached for g in got) and models.requests == rows  # no model call
            assert proxy.seen == rows
            machine_b.close()
        with HoldingProxy(redis_server.port, keys=2) as proxy:
            alone = _store(tmp_path / "c", proxy.url, timeout=0.3, retry=60)
            with pytest.warns(RuntimeWarning, match="was lost"):
                assert await alone.aget("anything") is None  # held: timed out, a miss
            alone.close()


async def test_embeddings_are_looked_up_in_one_round_trip(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpo_engine.llm import LLM
    from tests.model_server import ModelServer

    texts = [f"text {n}" for n in range(20)]
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    async with ModelServer() as models:
        machine_a = LLM(cache_dir=tmp_path / "a", api_base=models.api_base, api_key="test")
        vectors = await machine_a.embed("openai/text-embedding-3-small", texts)
        machine_a.close()
        before = _command_calls(redis_server)
        machine_b = LLM(cache_dir=tmp_path / "b", api_base=models.api_base, api_key="test")
        machine_b._cache._store.remote._client = NoSyncClient()
        assert await machine_b.embed("openai/text-embedding-3-small", texts) == vectors
        assert models.embedding_requests == 1
        assert machine_b.usage.model("openai/text-embedding-3-small").cache_hits == 20
        after = _command_calls(redis_server)
        assert after["mget"] - before.get("mget", 0) == 1 and after.get("get") == before.get(
            "get")
        machine_b.close()


async def test_the_async_path_writes_the_same_keys_values_and_ttl(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpo_engine import redis_store
    from gpo_engine.shared_store import open_store

    monkeypatch.setenv("GPO_CACHE_TTL", "2h")
    store = open_store(tmp_path / "r", kind="responses", label="response cache", lost="",
                       url=redis_server.url)
    assert isinstance(store, TieredStore)
    store.remote._client = NoSyncClient()
    await store.aset("one", _answer(1))
    await store.aset_many({"two": _answer(2), "three": _answer(3)})
    client: Any = redis_server.client()
    for key, n in (("one", 1), ("two", 2), ("three", 3)):
        name = f"gpo:v1:responses:{key}"
        assert redis_store.decode(client.get(name)) == _answer(n)
        assert 7100 < client.ttl(name) <= 7200
    assert store.get("two") == _answer(2)  # on the disk too
    _close(store)


async def test_a_bad_entry_is_a_miss_and_is_deleted_on_the_async_path(
        tmp_path: Path, redis_server: RedisServer) -> None:
    from gpo_engine import redis_store

    client: Any = redis_server.client()
    client.set("gpo:v1:responses:garbage", b"\x80\x04 not zlib")
    client.set("gpo:v1:responses:good", redis_store.encode(_answer(1)))
    disk = DiskStore(tmp_path / "r", label="response cache", lost="")
    remote = RedisStore(redis_server.url, namespace="responses",
                        valid=lambda key, value: isinstance(value, dict))
    store = TieredStore(disk, remote)
    remote._client = NoSyncClient()
    assert await store.aget_many(["garbage", "good"]) == {"good": _answer(1)}
    assert client.keys("*") == [b"gpo:v1:responses:good"] and remote.dropped == 1
    store.close()


# -- Redis trouble, on the async path ------------------------------------------------------


async def test_redis_down_at_start_is_one_warning_and_one_try_on_the_async_path(
        tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "redis")  # not started: connections are refused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = _store(tmp_path / "r", server.url, retry=60)
        for n in range(100):
            await store.aset(f"k{n}", _answer(n))
            assert await store.aget(f"k{n}") == _answer(n)  # the disk
            assert await store.aget(f"missing{n}") is None
        await store.aset_many({"x": _answer(1), "y": _answer(2)})
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "unreachable" in messages[0], messages
    # The breaker: one try (the start's ping), then 300 operations without the network.
    assert store.remote._failures == 1 and store.remote._loops == {}  # no client made
    _close(store)
    with server:  # the next run, Redis up: every entry kept meanwhile is pushed
        with pytest.warns(RuntimeWarning, match="pushed 102 entries"):
            _store(tmp_path / "r", server.url, blocking_client=True).close()
        assert len(_stored(server)) == 102


async def test_redis_lost_mid_run_keeps_every_write_and_the_async_path_pushes_it_back(
        tmp_path: Path, redis_server: RedisServer) -> None:
    store = _store(tmp_path / "r", redis_server.url)
    await store.aset("before", _answer(0))
    redis_server.stop()
    with pytest.warns(RuntimeWarning, match="was lost") as caught:
        for n in range(1, 11):
            await store.aset(f"during{n}", _answer(n))
        await store.aset_many({"pair-a": _answer(11), "pair-b": _answer(12)})
        assert await store.aget("never-stored") is None
    assert len(caught) == 1
    assert await store.aget_many(["before", "during5"]) == {"before": _answer(0),
                                                            "during5": _answer(5)}
    redis_server.start()  # same port, empty
    await asyncio.sleep(0.06)  # the 50 ms before trying again
    with pytest.warns(RuntimeWarning, match="pushed 12 entries"):
        await store.aset("after", _answer(13))  # pushed first, on the asyncio client
    stored = _stored(redis_server)
    assert {f"during{n}" for n in range(1, 11)} | {"pair-a", "pair-b", "after"} == {
        name.split(":", 3)[3] for name in stored}
    other = _store(tmp_path / "other", redis_server.url)
    assert await other.aget("during7") == _answer(7) and other.remote_hits == 1
    store.close()
    other.close()


async def test_lookups_and_writes_out_together_when_redis_hangs_cost_one_timeout(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """A hung Redis: the calls in flight together time out together, open the breaker once
    (not once each: 20 failures would push the next try to its 60 s cap at once), and what
    follows fails at once, to the disk and the outbox."""
    store = _store(tmp_path / "r", redis_server.url, timeout=0.3, retry=30, retry_max=600)
    await store.aset("warm", _answer(0))  # the loop's client connected
    with _hung(redis_server), pytest.warns(RuntimeWarning, match="was lost") as caught:
        started = time.perf_counter()
        written = await asyncio.gather(*(store.aset(f"k{n}", _answer(n)) for n in range(20)),
                                       *(store.aget(f"missing{n}") for n in range(20)))
        together = time.perf_counter() - started
        assert all(w is True for w in written[:20]) and written[20:] == [None] * 20
        assert store.remote._failures == 1 and store.remote._delay == 60  # doubled once
        for n in range(20, 40):
            await store.aset(f"k{n}", _answer(n))
    assert len(caught) == 1
    assert together < 3  # 16 at a time on the pool, all within one 0.3 s timeout
    assert await store.aget_many([f"k{n}" for n in range(40)]) == {
        f"k{n}": _answer(n) for n in range(40)}
    store.remote.retry_now()
    with pytest.warns(RuntimeWarning, match="pushed 40 entries"):
        await store.aset("after", _answer(1))
    store.close()


# -- the loop's client ----------------------------------------------------------------


def test_each_loop_gets_its_client_and_it_is_closed_with_the_loop(
        tmp_path: Path, redis_server: RedisServer) -> None:
    store = _store(tmp_path / "r", redis_server.url)

    async def use(n: int) -> Any:
        await store.aset(f"k{n}", _answer(n))
        assert len(store.remote._loops) == 1
        return await store.remote.aget_many([f"k{n}"])

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        for n in range(3):  # a new event loop each time, as the CLI's asyncio.run makes
            assert asyncio.run(use(n)) == {f"k{n}": _answer(n)}
            assert store.remote._loops == {}  # its client closed with its loop
    assert _clients(redis_server, 2) == 2  # the one counting, the store's (blocking) ping
    store.close()


async def test_closing_the_store_on_a_running_loop_closes_that_loops_client(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """The daemon's case: a model layer opened and closed per request on one long loop."""
    connected = _clients(redis_server, 1)
    for n in range(5):
        store = _store(tmp_path / f"r{n}", redis_server.url)
        await store.aset_many({"a": _answer(1), "b": _answer(2)})
        store.close()
        await asyncio.sleep(0.05)  # the close, a task of this loop
        assert store.remote._loops == {}
    assert _clients(redis_server, connected) == connected
