"""The shared store on Redis (issue 16, items 1 and 3), against a real redis-server:
namespaced, versioned, compressed-JSON entries; the disk in front (a disk hit never touches
the network); another process with an empty disk served from Redis; a TTL for responses
only; no secret in any key or value; and Redis going away (at start, or mid-run and back)
never losing an entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest

from gpo_engine import redis_store
from gpo_engine.diskstore import DiskStore
from gpo_engine.errors import ConfigError
from gpo_engine.redis_settings import check_url, parse_ttl, redact
from gpo_engine.redis_store import RedisStore, RedisUnavailable
from gpo_engine.shared_store import TieredStore, open_store
from tests.redis_server import RedisServer, free_port, redis_server, require_redis

__all__ = ["redis_server"]  # the fixture, used by name below

ANSWER = {"text": "Paris", "prompt_tokens": 12, "completion_tokens": 1}
LOST = "nothing else"


def _answer(n: int) -> dict[str, Any]:
    return {"text": f"answer {n}", "prompt_tokens": 10 + n, "completion_tokens": 2}


def _valid(key: str, value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("text"), str)


def _responses(folder: Path, url: str) -> TieredStore:
    store = open_store(folder, kind="responses", label="response cache", lost=LOST,
                       valid=_valid, url=url)
    assert isinstance(store, TieredStore)
    return store


def _quick(folder: Path, url: str, *, shared_first: bool = False,
           supersedes: Any = None) -> TieredStore:
    """A tiered store whose Redis is tried again 50 ms after failing (2 s by default)."""
    disk = DiskStore(folder, label="test store", lost=LOST)
    remote = RedisStore(url, namespace="responses", retry_first=0.05, retry_max=0.05)
    return TieredStore(disk, remote, shared_first=shared_first, supersedes=supersedes)


def _stored(server: RedisServer) -> dict[str, Any]:
    """Every key in the Redis database and its decoded value."""
    client: Any = server.client()
    return {name.decode(): redis_store.decode(client.get(name)) for name in client.keys("*")}


def _commands(client: Any) -> int:
    """Commands the server has processed (the INFO that asks counts as one)."""
    return int(client.info("stats")["total_commands_processed"])


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    # "One warning per process" is per Redis URL; every test starts with none given.
    from gpo_engine import shared_store

    monkeypatch.setattr(shared_store, "_warned_down", set())
    for name in ("GPO_CACHE_URL", "GPO_CACHE_TTL"):
        # Set, then deleted: monkeypatch restores what was there before the test (if
        # nothing, nothing), even after use_cache_url writes os.environ directly.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


# -- format --------------------------------------------------------------------


def test_keys_are_namespaced_and_versioned_and_values_compressed_json(
        tmp_path: Path, redis_server: RedisServer) -> None:
    store = _responses(tmp_path / "responses", redis_server.url)
    trajectories = open_store(tmp_path / "trajectories", kind="trajectories",
                              label="trajectory store", lost=LOST, url=redis_server.url)
    long_text = json.dumps({"steps": [{"prompt": "Answer with one word.", "dev": 50.0}] * 40})
    assert store.set("abc123", ANSWER)
    assert trajectories.set_many({"run:k1": long_text, "path:/w/a.prompt": "k1"})
    client: Any = redis_server.client()
    assert sorted(k.decode() for k in client.keys("*")) == [
        "gpo:v1:responses:abc123", "gpo:v1:trajectories:path:/w/a.prompt",
        "gpo:v1:trajectories:run:k1"]
    raw = client.get("gpo:v1:trajectories:run:k1")
    assert json.loads(zlib.decompress(raw)) == long_text  # JSON, never pickle
    assert len(raw) < len(long_text) / 10  # 1,720 bytes of repetitive JSON -> ~100
    assert json.loads(zlib.decompress(client.get("gpo:v1:responses:abc123"))) == ANSWER
    store.close()
    trajectories.close()


def test_a_bad_entry_in_redis_is_a_miss_and_is_deleted(
        tmp_path: Path, redis_server: RedisServer) -> None:
    client: Any = redis_server.client()
    client.set("gpo:v1:responses:garbage", b"\x80\x04 not zlib")
    client.set("gpo:v1:responses:shape", redis_store.encode(["not", "an", "answer"]))
    store = _responses(tmp_path / "responses", redis_server.url)
    assert store.get("garbage") is None and store.get("shape") is None
    assert client.keys("*") == [] and store.remote.dropped == 2
    store.close()


# -- the disk in front -----------------------------------------------------------


def test_a_disk_hit_never_touches_the_network_and_a_redis_hit_is_copied_to_disk(
        tmp_path: Path, redis_server: RedisServer) -> None:
    first = _responses(tmp_path / "a", redis_server.url)
    for n in range(50):
        first.set(f"k{n}", _answer(n))
    counter: Any = redis_server.client()
    before = _commands(counter)
    started = time.perf_counter()
    assert all(first.get(f"k{n}") == _answer(n) for n in range(50))
    disk_hit = (time.perf_counter() - started) / 50
    assert _commands(counter) == before + 1  # only the INFO that counted

    second = _responses(tmp_path / "b", redis_server.url)  # an empty disk
    started = time.perf_counter()
    assert all(second.get(f"k{n}") == _answer(n) for n in range(50))
    redis_hit = (time.perf_counter() - started) / 50
    assert second.remote_hits == 50
    before = _commands(counter)
    assert all(second.get(f"k{n}") == _answer(n) for n in range(50))  # now from its disk
    assert _commands(counter) == before + 1 and second.remote_hits == 50
    # Measured here (2 cores, 1000 keys): a disk hit 0.02 ms; a Redis hit (disk miss, GET,
    # copy to disk) 0.44 ms, of which the GET round trip is 0.12 ms (test below).
    print(f"disk hit {disk_hit * 1e3:.3f} ms, Redis hit with copy {redis_hit * 1e3:.3f} ms")
    first.close()
    second.close()


def test_a_redis_round_trip(tmp_path: Path, redis_server: RedisServer) -> None:
    remote = RedisStore(redis_server.url, namespace="responses")
    remote.set("k", ANSWER)
    rounds = 500
    started = time.perf_counter()
    for _ in range(rounds):
        assert remote.get("k") == ANSWER
    per_get = (time.perf_counter() - started) / rounds
    print(f"Redis GET round trip {per_get * 1e6:.0f} us")
    assert per_get < 0.05  # a local Redis: ~120 us here; 50 ms would be a broken client
    remote.close()


_FILL = """
import sys
from pathlib import Path
from gpo_engine.shared_store import open_store
folder, url, count, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = open_store(folder, kind="responses", label="response cache", lost="", url=url)
if mode == "fill":
    for n in range(count):
        store.set(f"request-{n}", {"text": f"answer {n}", "prompt_tokens": n,
                                   "completion_tokens": 1})
else:
    got = [store.get(f"request-{n}") for n in range(count)]
    assert all(g == {"text": f"answer {n}", "prompt_tokens": n, "completion_tokens": 1}
               for n, g in enumerate(got)), got
    print(store.remote_hits)
store.close()
"""


def test_a_second_process_with_an_empty_disk_gets_every_response_from_redis(
        tmp_path: Path, redis_server: RedisServer) -> None:
    def run(folder: Path, mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", _FILL, str(folder), redis_server.url,
                               "200", mode], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    run(tmp_path / "machine-a" / "responses", "fill")
    assert len(_stored(redis_server)) == 200
    assert not (tmp_path / "machine-b").exists()
    assert run(tmp_path / "machine-b" / "responses", "read") == "200"  # all from Redis


def test_no_redis_url_means_the_plain_disk_store_and_no_redis_import(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from gpo_engine.shared_store import "
            "open_store; from gpo_engine.diskstore import DiskStore; "
            f"s = open_store(Path({str(tmp_path / 'r')!r}), kind='responses', label='x', "
            "lost=''); assert type(s) is DiskStore, s; "
            "assert 'redis' not in sys.modules, 'redis imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"},
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr


# -- settings --------------------------------------------------------------------


def test_responses_expire_after_gpo_cache_ttl_and_trajectories_never(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_TTL", "2h")
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    responses = open_store(tmp_path / "r", kind="responses", label="r", lost="")
    trajectories = open_store(tmp_path / "t", kind="trajectories", label="t", lost="")
    responses.set("k", ANSWER)
    trajectories.set("run:k", "{}")
    client: Any = redis_server.client()
    assert 7100 < client.ttl("gpo:v1:responses:k") <= 7200
    assert client.ttl("gpo:v1:trajectories:run:k") == -1  # no expiry
    responses.close()
    trajectories.close()


@pytest.mark.parametrize(("text", "seconds"), [(None, None), ("", None), ("0", None),
                                                ("3600", 3600), ("90s", 90), ("30m", 1800),
                                                ("12h", 43200), (" 7D ", 604800)])
def test_ttl_values(text: str | None, seconds: int | None) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["1.5h", "-5", "soon", "12 hours"])
def test_a_bad_ttl_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="GPO_CACHE_TTL"):
        parse_ttl(text)


@pytest.mark.parametrize(("url", "says"), [
    ("http://cache:6379/0", "not a Redis URL"),
    ("redis://:pw@host:99999/0", "not a valid URL"),
    ("redis:///0", "names no host"),
    ("redis://host:6379/cache", "must be a number"),
])
def test_a_bad_url_names_the_variable_and_hides_the_password(url: str, says: str,
                                                               tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        open_store(tmp_path / "r", kind="responses", label="r", lost="", url=url)
    assert "--cache-url" in str(caught.value) and "pw" not in str(caught.value)


def test_redis_and_rediss_urls(tmp_path: Path) -> None:
    require_redis()
    assert check_url("redis://:secret@cache.internal:6380/2")
    assert redact("rediss://user:secret@cache:6380/2") == "rediss://user:***@cache:6380/2"
    assert redact("redis://:secret@cache:6380/2") == "redis://:***@cache:6380/2"
    remote = RedisStore("rediss://:secret@cache.internal:6380/2", namespace="responses")
    from redis.connection import SSLConnection

    assert remote._pool.connection_class is SSLConnection  # TLS
    assert remote._pool.connection_kwargs["db"] == 2
    assert remote._pool.connection_kwargs["socket_timeout"] == redis_store.TIMEOUT
    remote.close()


def test_a_redis_over_tls(tmp_path: Path) -> None:
    require_redis(tls=True)
    with RedisServer(tmp_path / "redis", password="tls-pass", tls=True) as server:
        assert server.url.startswith("rediss://")
        store = _responses(tmp_path / "r", server.url)
        store.set("k", ANSWER)
        other = _responses(tmp_path / "other", server.url)
        assert other.get("k") == ANSWER and other.remote_hits == 1
        plain = server.url.replace("rediss://", "redis://").split("?")[0]
        with pytest.warns(RuntimeWarning, match="unreachable"):  # no TLS: refused
            _responses(tmp_path / "plain", plain).close()
        store.close()
        other.close()


def test_a_password_protected_redis(tmp_path: Path) -> None:
    require_redis()
    with RedisServer(tmp_path / "redis", password="s3cret-pass") as server:
        wrong = server.url.replace("s3cret-pass", "wrong-pass")
        with pytest.warns(RuntimeWarning, match="unreachable") as caught:
            refused = _responses(tmp_path / "a", wrong)
        assert "wrong-pass" not in str(caught[0].message)
        refused.close()
        store = _responses(tmp_path / "b", server.url)
        store.set("k", ANSWER)
        assert _stored(server) == {"gpo:v1:responses:k": ANSWER}
        store.close()


# -- secrets ---------------------------------------------------------------------


async def test_no_api_key_or_password_is_in_any_redis_key_or_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run of the model layer (completions and embeddings through the test model
    server) and a saved trajectory, with fake secrets everywhere they could come from."""
    require_redis()
    from gpo_engine.llm import LLM
    from gpo_engine.trajectory import Trajectory, TrajectoryStore
    from tests.model_server import ModelServer

    secrets = {"api": "sk-gpo-test-api-key-8f2b", "env": "sk-gpo-test-env-key-51c9",
               "redis": "gpo-test-redis-pass-77d0"}
    monkeypatch.setenv("OPENAI_API_KEY", secrets["env"])
    with RedisServer(tmp_path / "redis", password=secrets["redis"]) as server:
        monkeypatch.setenv("GPO_CACHE_URL", server.url)
        async with ModelServer() as models:
            llm = LLM(cache_dir=tmp_path / "cache", api_base=models.api_base,
                      api_key=secrets["api"])
            # The response cache's store, as open_store makes it once the wiring is in.
            llm._cache._store.close()
            llm._cache._store = _responses(tmp_path / "cache" / "responses", server.url)
            for n in range(5):
                await llm.complete("openai/fake", [{"role": "user", "content": f"q{n}"}])
            await llm.embed("openai/text-embedding-3-small", ["a", "b"])
            llm.close()
        trajectories = TrajectoryStore(tmp_path / "cache" / "trajectories")
        trajectories.close()
        trajectories._store = open_store(tmp_path / "cache" / "trajectories",  # type: ignore[assignment]
                                         kind="trajectories", label="t", lost="")
        trajectories.save(Trajectory("k1", "/w/a.prompt", 3, "Say {{x}}", 40.0, 10))
        trajectories.close()
        client: Any = server.client()
        names = client.keys("*")
        assert len(names) == 5 + 2 + 2  # 5 answers, 2 vectors, a run and its path index
        for name in names:
            shown = name.decode() + json.dumps(redis_store.decode(client.get(name)))
            for secret in secrets.values():
                assert secret not in shown, (name, secret)


# -- Redis trouble ----------------------------------------------------------------


def test_redis_down_at_start_is_one_warning_and_the_disk_carries_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://:pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    monkeypatch.setenv("GPO_CACHE_URL", url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        responses = open_store(tmp_path / "r", kind="responses", label="response cache",
                               lost="")
        trajectories = open_store(tmp_path / "t", kind="trajectories",
                                  label="trajectory store", lost="")
        started = time.perf_counter()
        for n in range(200):
            assert responses.set(f"k{n}", _answer(n))
            assert responses.get(f"k{n}") == _answer(n)
        trajectories.set_many({"run:k": "{}", "path:/p": "k"})
        assert trajectories.get("run:k") == "{}"
        elapsed = time.perf_counter() - started
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "unreachable" in messages[0] and "redis://:***@127.0.0.1" in messages[0]
    assert "pw@" not in messages[0]
    # The breaker: 400 operations do not each try the network (refused fast anyway,
    # but a black-holed host would cost the 1 s timeout each time).
    assert elapsed < 5
    responses.close()
    trajectories.close()


def test_entries_kept_while_redis_was_down_are_pushed_at_the_next_run(
        tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "redis")  # not started yet
    with pytest.warns(RuntimeWarning, match="unreachable"):
        offline = _responses(tmp_path / "r", server.url)
    for n in range(30):
        offline.set(f"k{n}", _answer(n))
    offline.close()
    assert (tmp_path / "r.outbox").is_dir()
    with server:
        with pytest.warns(RuntimeWarning, match="pushed 30 entries"):
            later = _responses(tmp_path / "r", server.url)
        assert _stored(server) == {f"gpo:v1:responses:k{n}": _answer(n) for n in range(30)}
        assert later.pushed == 30
        later.close()
        again = _responses(tmp_path / "r", server.url)  # nothing left to push
        assert again.pushed == 0
        again.close()


def test_redis_lost_mid_run_keeps_every_write_and_pushes_it_when_back(
        tmp_path: Path, redis_server: RedisServer) -> None:
    store = _quick(tmp_path / "r", redis_server.url)
    store.set("before", _answer(0))
    redis_server.stop()
    with pytest.warns(RuntimeWarning, match="was lost") as caught:
        for n in range(1, 11):
            store.set(f"during{n}", _answer(n))
        store.set_many({"pair-a": _answer(11), "pair-b": _answer(12)})
    assert len(caught) == 1
    assert store.get("before") == _answer(0) and store.get("during5") == _answer(5)
    redis_server.start()  # same port, empty: nothing is saved across restarts
    time.sleep(0.06)  # the 50 ms before trying again
    with pytest.warns(RuntimeWarning, match="pushed 12 entries"):
        store.set("after", _answer(13))
    stored = _stored(redis_server)
    assert {f"during{n}" for n in range(1, 11)} | {"pair-a", "pair-b", "after"} == {
        name.split(":", 3)[3] for name in stored}
    assert stored["gpo:v1:responses:pair-b"] == _answer(12)
    # And a second process with an empty disk now gets them from Redis.
    other = _quick(tmp_path / "other", redis_server.url)
    assert other.get("during7") == _answer(7) and other.remote_hits == 1
    store.close()
    other.close()


def test_a_write_while_redis_is_away_replaces_an_older_kept_one(
        tmp_path: Path, redis_server: RedisServer) -> None:
    store = _quick(tmp_path / "r", redis_server.url)
    redis_server.stop()
    with pytest.warns(RuntimeWarning, match="was lost"):
        store.set("k", _answer(1))
    store.set("k", _answer(2))
    redis_server.start()
    time.sleep(0.06)
    with pytest.warns(RuntimeWarning, match="pushed 1 entries"):
        assert store.get("other") is None
    assert _stored(redis_server) == {"gpo:v1:responses:k": _answer(2)}
    store.close()


def test_reads_go_to_redis_first_for_records_another_machine_extends(
        tmp_path: Path, redis_server: RedisServer) -> None:
    here = _quick(tmp_path / "here", redis_server.url, shared_first=True)
    there = _quick(tmp_path / "there", redis_server.url, shared_first=True)
    here.set("run:k", "step 1")
    assert there.get("run:k") == "step 1"
    here.set("run:k", "step 2")
    assert there.get("run:k") == "step 2"  # not its stale disk copy
    redis_server.stop()
    with pytest.warns(RuntimeWarning, match="was lost"):
        assert there.get("run:k") == "step 2"  # Redis away: the copy on its disk
    there.close()
    here.close()


def _extends(key: str, local: Any, shared: Any) -> bool:
    return str(local).startswith(str(shared))


def test_a_kept_record_is_pushed_only_when_it_extends_the_shared_one(
        tmp_path: Path, redis_server: RedisServer) -> None:
    here = _quick(tmp_path / "here", redis_server.url, shared_first=True, supersedes=_extends)
    here.set_many({"run:a": "1", "run:b": "1"})
    redis_server.stop()
    with pytest.warns(RuntimeWarning, match="was lost"):
        here.set_many({"run:a": "1,2", "run:b": "1,2"})
    redis_server.start()
    client: Any = redis_server.client()
    # Meanwhile another machine extended b differently (and Redis lost a: no persistence).
    client.set("gpo:v1:responses:run:b", redis_store.encode("1,3,4"))
    time.sleep(0.06)
    with pytest.warns(RuntimeWarning, match="pushed 1 entries.*kept the shared copy of 1"):
        assert here.get("run:b") == "1,3,4"
    assert _stored(redis_server) == {"gpo:v1:responses:run:a": "1,2",
                                     "gpo:v1:responses:run:b": "1,3,4"}
    here.close()


def test_a_redis_that_stops_answering_costs_one_timeout_then_nothing(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """A hung Redis (SIGSTOP): one call waits out the timeout, later ones fail at once."""
    import signal

    disk = DiskStore(tmp_path / "r", label="test store", lost=LOST)
    remote = RedisStore(redis_server.url, namespace="responses", timeout=0.3,
                        retry_first=30, retry_max=30)
    store = TieredStore(disk, remote)
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        with pytest.warns(RuntimeWarning, match="was lost"):
            started = time.perf_counter()
            store.set("k0", _answer(0))
            first = time.perf_counter() - started
        started = time.perf_counter()
        for n in range(1, 50):
            store.set(f"k{n}", _answer(n))
            assert store.get(f"missing{n}") is None
        rest = time.perf_counter() - started
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert 0.3 <= first < 1.0  # the 0.3 s timeout, once (no retry inside redis-py)
    assert rest < 1.0  # 98 operations, no waiting on the network
    assert all(store.get(f"k{n}") == _answer(n) for n in range(50))
    with pytest.warns(RuntimeWarning, match="pushed 50 entries"):  # it answers again
        store.close()


def test_remote_unavailable_is_raised_without_network_while_the_breaker_is_open(
        tmp_path: Path) -> None:
    remote = RedisStore(f"redis://127.0.0.1:{free_port()}/0", namespace="responses",
                        retry_first=60)
    with pytest.raises(RedisUnavailable, match="Connection"):
        remote.get("k")
    assert remote.down and not remote.due
    calls: list[str] = []
    with pytest.raises(RedisUnavailable):
        remote.run(lambda client: calls.append("ran"))
    assert calls == []
    remote.close()


def test_a_restarted_redis_is_reconnected_without_a_warning(
        tmp_path: Path, redis_server: RedisServer) -> None:
    store = _responses(tmp_path / "r", redis_server.url)
    store.set("k", ANSWER)
    redis_server.stop()
    redis_server.start()  # the pooled connection is dead: the pool notices, reconnects
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.set("k2", ANSWER)
        assert store.get("k") == ANSWER  # from disk; Redis lost it (no persistence)
    assert _stored(redis_server) == {"gpo:v1:responses:k2": ANSWER}
    store.close()


def test_cache_url_option_is_checked_and_becomes_the_variable(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpo_engine.shared_store import check_environment, use_cache_url

    with pytest.raises(ConfigError, match="--cache-url: 'memcached://:\\*\\*\\*@h:1'"):
        use_cache_url("memcached://:pw@h:1")
    assert "GPO_CACHE_URL" not in os.environ
    use_cache_url(redis_server.url)
    check_environment()
    store = open_store(tmp_path / "r", kind="responses", label="r", lost="")
    assert isinstance(store, TieredStore)
    store.close()
    monkeypatch.setenv("GPO_CACHE_TTL", "a week")
    with pytest.raises(ConfigError, match="GPO_CACHE_TTL: 'a week' is not a duration"):
        check_environment()
    monkeypatch.setenv("GPO_CACHE_URL", "redis://")
    with pytest.raises(ConfigError, match="GPO_CACHE_URL: 'redis://' names no host"):
        check_environment()


def test_remote_keys_lists_this_namespace_only(redis_server: RedisServer) -> None:
    responses = RedisStore(redis_server.url, namespace="responses")
    others = RedisStore(redis_server.url, namespace="respons*")  # a glob in the name
    responses.set_many({"a": 1, "b:c": 2})
    others.set("x", 3)
    client: Any = redis_server.client()
    client.set("someone-else:responses:z", b"1")
    assert sorted(responses.keys()) == ["a", "b:c"] and list(others.keys()) == ["x"]
    responses.close()
    others.close()


def test_the_variable_does_not_outlive_the_test_that_set_it() -> None:
    # Runs after test_cache_url_option_is_checked_and_becomes_the_variable (file order).
    assert os.environ.get("GPO_CACHE_URL") is None


def test_a_value_that_inflates_past_the_limit_or_is_cut_short_is_refused() -> None:
    big = redis_store.encode("x" * 5000)  # ~30 bytes of zlib
    assert redis_store.decode(big) == "x" * 5000
    with pytest.raises(ValueError, match="larger than 1000 bytes"):
        redis_store.decode(big, limit=1000)
    with pytest.raises(ValueError, match="truncated"):
        redis_store.decode(big[:-6])


def test_an_outbox_that_cannot_be_made_warns_and_the_disk_keeps_the_entry(
        tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "redis")  # not started: every write goes to the outbox
    (tmp_path / "r.outbox").write_text("a file where the outbox folder should be")
    with pytest.warns(RuntimeWarning) as caught:
        store = _responses(tmp_path / "r", server.url)
        assert store.set("k", ANSWER)  # on disk
        assert store.set("k2", ANSWER)
    assert [str(w.message) for w in caught if "cannot keep entries" in str(w.message)] == [
        f"response cache: cannot keep entries for the shared cache at {tmp_path / 'r.outbox'} "
        f"([Errno 17] File exists: '{tmp_path / 'r.outbox'}'); they stay on this disk only"]
    assert store.get("k") == ANSWER
    store.close()


def test_what_is_kept_gets_one_more_try_when_the_store_closes(
        tmp_path: Path, redis_server: RedisServer) -> None:
    disk = DiskStore(tmp_path / "r", label="test store", lost=LOST)
    remote = RedisStore(redis_server.url, namespace="responses", retry_first=600)
    store = TieredStore(disk, remote)
    redis_server.stop()
    with pytest.warns(RuntimeWarning, match="was lost"):
        store.set("k", ANSWER)
    redis_server.start()  # back, but the next try is 10 minutes away
    assert store.get("other") is None and _stored(redis_server) == {}
    with pytest.warns(RuntimeWarning, match="pushed 1 entries"):
        store.close()
    assert _stored(redis_server) == {"gpo:v1:responses:k": ANSWER}


def test_nothing_written_before_during_or_after_an_outage_is_lost_to_another_machine(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """Redis restarted for maintenance (its data saved): a second machine with an empty
    disk then gets every answer, from before, during and after the outage."""
    store = _quick(tmp_path / "a", redis_server.url)
    for n in range(0, 10):
        store.set(f"k{n}", _answer(n))
    redis_server.stop(save=True)
    with pytest.warns(RuntimeWarning, match="was lost"):
        for n in range(10, 20):
            store.set(f"k{n}", _answer(n))
    redis_server.start()
    time.sleep(0.06)
    with pytest.warns(RuntimeWarning, match="pushed 10 entries"):
        for n in range(20, 30):
            store.set(f"k{n}", _answer(n))
    store.close()
    other = _quick(tmp_path / "b", redis_server.url)
    assert [other.get(f"k{n}") for n in range(30)] == [_answer(n) for n in range(30)]
    assert other.remote_hits == 30
    other.close()
