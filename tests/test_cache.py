"""A cache you can trust: keys that cover every sampling parameter, `gpo cache info|clear`,
--no-cache, and a cache that cannot be written degrading to no caching."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpo_engine.llm import LLM
from gpo_server.cli import main
from tests.damaged_stores import key_index_page
from tests.model_server import ModelServer
from tests.scripted_models import ScriptedModels, write_capitals

MODEL = "openai/fake"
HI = [{"role": "user", "content": "hi"}]


pytestmark = pytest.mark.usefixtures("api_key")


# A changed value for every keyword parameter of LLM.complete. A parameter added
# to complete() without an entry here fails the test below: it must be in the key.
CHANGED: dict[str, Any] = {"temperature": 0.7, "max_tokens": 99, "stop": ["\n\n"], "sample": 3,
                           "extra": {"top_p": 0.5}}


async def test_every_sampling_parameter_and_the_sample_index_are_in_the_key(
    tmp_path: Path,
) -> None:
    params = [name for name, p in inspect.signature(LLM.complete).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert sorted(params) == sorted(CHANGED), "a new complete() parameter needs a key test"
    async with ModelServer() as server:
        llm = LLM(cache_dir=tmp_path, api_base=server.api_base, api_key="test")
        await llm.complete(MODEL, HI)
        for name, value in CHANGED.items():
            before = server.requests
            done = await llm.complete(MODEL, HI, **{name: value})
            assert not done.cached and server.requests == before + 1, name
        # Every further parameter's value is in the key too (config's topP, a JSON request).
        for extra in ({"top_p": 0.6}, {"response_format": {"type": "json_object"}}):
            before = server.requests
            assert not (await llm.complete(MODEL, HI, extra=extra)).cached
            assert server.requests == before + 1 and server.bodies[-1]["top_p" if "top_p" in extra
                                                                      else "response_format"]
        # Repeated samples are independent requests; asking again is free.
        texts = [await llm.complete(MODEL, HI, temperature=1.0, sample=i) for i in range(3)]
        sent = server.requests
        again = [await llm.complete(MODEL, HI, temperature=1.0, sample=i) for i in range(3)]
        assert server.requests == sent and all(a.cached for a in again)
        assert [a.text for a in again] == [t.text for t in texts]
        llm.close()


async def _gpo(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def _optimize(prompt: Path, cache: Path, *extra: str) -> int:
    async with ModelServer(answer=ScriptedModels().answer) as server:
        return await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--cache-dir", str(cache), "--json", *extra)


def _info(cache: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    return {p["name"]: p for p in data["parts"]} | {"location": data["location"]}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_info_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    empty = _info(cache, capsys)
    assert empty["location"] == str(cache)
    assert empty["responses"]["exists"] is False and empty["responses"]["entries"] == 0
    assert not cache.exists()  # looking does not create it
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "weights.gguf").write_bytes(b"w" * 100)

    assert await _optimize(write_capitals(tmp_path / "p"), cache) == 0
    full = _info(cache, capsys)
    assert full["responses"]["entries"] > 10 and full["responses"]["bytes"] > 0
    assert full["trajectories"]["entries"] >= 1

    # Without a terminal and without --yes nothing is deleted.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 1
    assert "pass --yes" in capsys.readouterr().err
    # A terminal is asked; "n" keeps everything.
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 1
    assert "nothing deleted" in capsys.readouterr().err
    assert _info(cache, capsys)["responses"]["entries"] == full["responses"]["entries"]
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    err = capsys.readouterr().err
    assert f"delete {full['responses']['entries']} responses" in err
    after = _info(cache, capsys)
    assert after["responses"]["entries"] == 0
    assert after["trajectories"]["entries"] == full["trajectories"]["entries"]  # kept
    assert main(["cache", "clear", "--cache-dir", str(cache), "--trajectories", "--yes"]) == 0
    assert _info(cache, capsys)["trajectories"]["entries"] == 0
    assert (cache / "models" / "weights.gguf").read_bytes() == b"w" * 100  # never touched
    assert main(["cache", "clear", "--cache-dir", str(cache), "--yes"]) == 0
    assert "nothing to clear" in capsys.readouterr().err


async def test_info_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"cache: {tmp_path / 'c'}" in out and "responses" in out and "not created" in out


async def test_no_cache_reads_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    prompt = write_capitals(tmp_path / "p")
    assert await _optimize(prompt, cache, "--no-cache", "--restart") == 0
    first = json.loads(capsys.readouterr().out)
    assert await _optimize(prompt, cache, "--no-cache", "--restart") == 0
    second = json.loads(capsys.readouterr().out)
    assert first["usage"]["cache_hits"] == second["usage"]["cache_hits"] == 0
    assert second["usage"]["calls"] == first["usage"]["calls"] > 0
    assert _info(cache, capsys)["responses"]["entries"] == 0


async def test_unwritable_cache_degrades_to_no_caching_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file where the cache folder should be: like a read-only disk for every user,
    # root included (a chmod does not stop root).
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    prompt = write_capitals(tmp_path / "p")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await _optimize(prompt, blocker) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps_done"] == 2 and out["usage"]["cache_hits"] == 0
    messages = " ".join(str(w.message) for w in caught)
    assert "response cache disabled" in messages
    assert "trajectory store unavailable" in messages
    assert "run lock unavailable" in messages  # and the run goes on, unlocked


async def test_a_plain_request_keeps_the_key_it_had_before_extra_parameters(
    tmp_path: Path,
) -> None:
    # Caches written before `extra` existed must stay valid: a request without
    # extra parameters is keyed exactly as it was.
    from gpo_engine.response_cache import cache_key

    async with ModelServer() as server:
        llm = LLM(cache_dir=tmp_path, api_base=server.api_base, api_key="test")
        await llm.complete(MODEL, HI, max_tokens=7)
        old = cache_key({"kind": "completion", "model": MODEL, "messages": HI,
                         "temperature": 0.0, "max_tokens": 7, "stop": None, "sample": 0,
                         "api_base": server.api_base})
        assert llm._cache.get(old) is not None
        llm.close()


# -- a cache that heals ---------------------------------------------------------------


def _db(cache: Path) -> Path:
    return cache / "responses" / "cache.db"


def _rows(db: Path) -> int:
    """Entries a plain read of the table by rowid can still decode (independent of gpo)."""
    import pickle
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        top = con.execute("SELECT max(rowid) FROM Cache").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        return 0
    readable = 0
    for rowid in range(1, top + 1):
        try:
            row = con.execute("SELECT key, value FROM Cache WHERE rowid = ?", (rowid,)).fetchone()
            if row is not None and isinstance(row[0], str) and pickle.loads(row[1]):
                readable += 1
        except Exception:
            continue
    con.close()
    return readable


def _page(db: Path, number: int) -> None:
    """Overwrite 600 bytes in the middle of page `number` (4 KB pages)."""
    with open(db, "r+b") as f:
        f.seek(number * 4096 + 1000)
        f.write(b"\xff" * 600)


def _worst_table_page(cache: Path, scratch: Path) -> int:
    """The page whose damage loses the most entries, yet not all of them."""
    import shutil

    best, lost_most = 0, 0
    total = _rows(_db(cache))
    for number in range(1, _db(cache).stat().st_size // 4096):
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(cache, scratch)
        _page(_db(scratch), number)
        lost = total - _rows(_db(scratch))
        if lost_most < lost < total:
            best, lost_most = number, lost
    shutil.rmtree(scratch, ignore_errors=True)
    assert lost_most > 0, "no single page holds entries"
    return best


def _garbage_pickle(db: Path) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE Cache SET value = ? WHERE rowid = (SELECT min(rowid) FROM Cache "
                "WHERE mode = 4)", (b"\x80\x04garbage",))
    con.commit()
    con.close()


def _old_empty_answer(db: Path) -> None:
    """What caches written before this change hold: an empty answer as a real one."""
    import pickle
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE Cache SET value = ? WHERE rowid = (SELECT min(rowid) FROM Cache)",
                (pickle.dumps({"text": "", "prompt_tokens": 1, "completion_tokens": 0}),))
    con.commit()
    con.close()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """One model server for the module: the endpoint is part of every cache key."""
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ModelServer(answer=ScriptedModels().answer)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server.api_base
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, endpoint: str) -> tuple[Path, Path]:
    """A prompt and the cache its optimization filled (a rerun costs 0 calls)."""
    root = tmp_path_factory.mktemp("pristine")
    prompt, cache = write_capitals(root / "p"), root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "test")
        assert main(["optimize", str(prompt), "--api-base", endpoint, "--cache-dir", str(cache),
                     "--json"]) == 0
    return prompt, cache


def _copy(pristine: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the pristine cache, `tmp_path/cache`, for one test to damage."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(pristine[1], cache)
    return cache


async def _calls(prompt: Path, cache: Path, capsys: pytest.CaptureFixture[str],
                 endpoint: str) -> tuple[int, list[str]]:
    """Model calls of a --restart run (every answer asked of the cache), and its warnings."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await _gpo("optimize", str(prompt), "--api-base", endpoint, "--cache-dir",
                          str(cache), "--json", "--restart") == 0
    calls: int = json.loads(capsys.readouterr().out)["usage"]["calls"]
    return calls, [str(w.message) for w in caught if "cache" in str(w.message)]


@pytest.mark.parametrize("damage", ["garbage pickle", "old empty answer", "truncate",
                                    "index page", "table page", "header"])
async def test_a_damaged_cache_heals_on_the_next_run(
        damage: str, pristine: tuple[Path, Path], endpoint: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompt, source = pristine
    cache = _copy(pristine, tmp_path)
    db = _db(cache)
    entries = _rows(db)
    if damage == "garbage pickle":
        _garbage_pickle(db)
    elif damage == "old empty answer":
        _old_empty_answer(db)
    elif damage == "truncate":
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 2)
    elif damage == "index page":
        _page(db, key_index_page(db))
    elif damage == "table page":
        _page(db, _worst_table_page(source, tmp_path / "scratch"))
    else:
        with open(db, "r+b") as f:
            f.write(b"garbage" * 10)
    # A stale empty answer decodes fine; it is damaged by what it says.
    damaged = entries - _rows(db) + (damage == "old empty answer")
    calls, warned = await _calls(prompt, cache, capsys, endpoint)
    # Before: any of these turned the cache off for the whole run, every run
    # (62 calls on this task instead of 0). Now only the damaged entries are
    # asked for again, with one warning, and the run after that is free.
    assert calls <= damaged, (damage, calls, damaged)
    assert len(warned) == 1, warned
    assert "response cache disabled" not in warned[0]
    again, quiet = await _calls(prompt, cache, capsys, endpoint)
    assert again == 0 and quiet == []
    aside = list(cache.glob("responses.corrupt-*"))
    if damage in ("truncate", "index page", "table page", "header"):
        assert "is corrupt" in warned[0] and len(aside) == 1
        assert aside[0].name in warned[0]
    else:
        assert "dropped an unreadable entry" in warned[0] and aside == []


async def test_damaged_table_rows_are_the_only_ones_asked_for_again(
        pristine: tuple[Path, Path], endpoint: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompt, source = pristine
    cache = _copy(pristine, tmp_path)
    entries = _rows(_db(cache))
    _page(_db(cache), _worst_table_page(source, tmp_path / "scratch"))
    damaged = entries - _rows(_db(cache))
    calls, warned = await _calls(prompt, cache, capsys, endpoint)
    assert 0 < calls <= damaged < entries
    assert f"with the {entries - damaged} entries that could still be read" in warned[0]


def test_info_reports_a_corrupt_store_and_clear_removes_it(
        pristine: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = _copy(pristine, tmp_path)
    with open(_db(cache), "r+b") as f:
        f.truncate(_db(cache).stat().st_size // 2)
    info = _info(cache, capsys)
    assert info["responses"]["problem"] == "corrupt: database disk image is malformed"
    assert info["trajectories"]["problem"] is None and info["trajectories"]["entries"] >= 1
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    assert "the next run sets it aside" in capsys.readouterr().out
    # A damaged copy set aside earlier is listed, and cleared with the rest.
    (cache / "responses.corrupt-20240101-000000").mkdir()
    (cache / "responses.corrupt-20240101-000000" / "cache.db").write_bytes(b"x" * 10)
    assert _info(cache, capsys)["responses"]["set_aside_bytes"] == 10
    assert main(["cache", "clear", "--cache-dir", str(cache), "--yes"]) == 0
    assert "a corrupt responses store and 1 set-aside responses store(s)" in \
        capsys.readouterr().err
    after = _info(cache, capsys)
    assert after["responses"]["exists"] is False and after["responses"]["set_aside"] == []
    assert after["trajectories"]["entries"] >= 1  # kept: not asked for


def test_clear_works_when_diskcache_cannot_open_the_store(
        pristine: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    import diskcache

    cache = _copy(pristine, tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(diskcache.Cache, "clear", refuse)
    assert main(["cache", "clear", "--cache-dir", str(cache), "--yes"]) == 0
    assert _info(cache, capsys)["responses"]["exists"] is False


async def test_the_cache_folders_are_private(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import stat

    cache = tmp_path / "cache"
    # An existing, world-readable store from an older gpo is tightened.
    (cache / "responses").mkdir(parents=True, mode=0o755)
    (cache / "responses").chmod(0o755)
    assert await _optimize(write_capitals(tmp_path / "p"), cache) == 0
    for folder in ("responses", "trajectories"):
        assert stat.S_IMODE((cache / folder).stat().st_mode) == 0o700, folder
        for name in os.listdir(cache / folder):
            if name.startswith("cache.db"):
                mode = stat.S_IMODE((cache / folder / name).stat().st_mode)
                assert mode == 0o600, (folder, name, oct(mode))


async def test_a_store_owned_by_another_user_is_never_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("only root can make a folder another user's")
    cache = tmp_path / "cache"
    prompt = write_capitals(tmp_path / "p")
    assert await _optimize(prompt, cache) == 0
    capsys.readouterr()
    os.chown(cache / "responses", 65534, 65534)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await _optimize(prompt, cache, "--restart") == 0
    assert json.loads(capsys.readouterr().out)["usage"]["cache_hits"] == 0
    assert any("owned by another user" in str(w.message) for w in caught)


async def test_unparseable_answers_are_never_cached(tmp_path: Path) -> None:
    from tests.model_server import Fault

    async with ModelServer() as server:
        llm = LLM(cache_dir=tmp_path, api_base=server.api_base, api_key="test",
                  backoff_base=0.0, max_retries=2)
        server.push(Fault(garbage=True), Fault(no_choices=True))
        done = await llm.complete(MODEL, HI)  # retried twice, then a real answer
        assert done.text == "echo: hi" and server.requests == 3
        assert llm.usage.retries == 2
        assert (await llm.complete(MODEL, HI)).cached and server.requests == 3
        llm.close()
        store = __import__("diskcache").Cache(str(tmp_path / "responses"))
        assert len(store) == 1  # the real answer only
        store.close()


async def test_a_full_cache_keeps_serving_what_it_has(tmp_path: Path) -> None:
    import sqlite3

    async with ModelServer() as server:
        llm = LLM(cache_dir=tmp_path, api_base=server.api_base, api_key="test")
        await llm.complete(MODEL, HI)

        def full(*args: object, **kwargs: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        llm._cache._store.cache.set = full
        with pytest.warns(RuntimeWarning, match="cannot be written .*database or disk is full"):
            await llm.complete(MODEL, [{"role": "user", "content": "new"}])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # one warning only
            assert (await llm.complete(MODEL, HI)).cached  # still read
            await llm.complete(MODEL, [{"role": "user", "content": "newer"}])
        assert server.requests == 3
        llm.close()


def test_a_store_another_process_rebuilt_is_reopened_not_set_aside(tmp_path: Path) -> None:
    import shutil
    import sqlite3

    from gpo_engine.diskstore import DiskStore

    folder = tmp_path / "responses"
    mine = DiskStore(folder, label="test store", lost="")
    assert mine.set("k", "mine")
    # Another process found it corrupt first: set it aside and started a fresh one.
    shutil.move(str(folder), str(tmp_path / "responses.corrupt-elsewhere"))
    theirs = DiskStore(folder, label="test store", lost="")
    assert theirs.set("k", "theirs")
    theirs.close()
    mine._heal(sqlite3.DatabaseError("database disk image is malformed"))
    assert mine.get("k") == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["responses",
                                                          "responses.corrupt-elsewhere"]
    mine.close()


def test_a_corrupt_store_that_cannot_be_moved_runs_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from gpo_engine.diskstore import DiskStore

    folder = tmp_path / "responses"
    store = DiskStore(folder, label="test store", lost="")
    store.set("k", "v")
    store.close()
    with open(folder / "cache.db", "r+b") as f:
        f.write(b"garbage" * 10)

    def refused(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refused)
    with pytest.raises(PermissionError):  # at open: the caller runs without a store
        DiskStore(folder, label="test store", lost="")
    assert not list(tmp_path.glob(".responses.healing-*"))  # the half-built copy is removed
    monkeypatch.undo()
    # Found corrupt while in use (not at open): one warning, then no store, no exception.
    healthy = DiskStore(tmp_path / "other", label="test store", lost="")
    healthy.set("k", "v")
    monkeypatch.setattr(os, "rename", refused)
    with pytest.warns(RuntimeWarning, match="could not be replaced"):
        healthy._try_heal(__import__("sqlite3").DatabaseError("database disk image is malformed"))
    assert healthy.get("k") is None and healthy.set("k", "w") is False


def test_a_file_system_without_modes_still_caches(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from gpo_engine.diskstore import DiskStore

    (tmp_path / "store").mkdir(mode=0o755)
    (tmp_path / "store").chmod(0o755)

    def refused(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # vfat, some FUSE mounts

    monkeypatch.setattr(os, "chmod", refused)
    store = DiskStore(tmp_path / "store", label="test store", lost="")
    assert store.set("k", "v") and store.get("k") == "v"
    store.close()


def test_info_finds_a_damaged_page_and_names_an_unreadable_database(
        pristine: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    cache = _copy(pristine, tmp_path)
    # Opens fine; only SQLite's page check sees the damaged index.
    _page(_db(cache), key_index_page(_db(cache)))
    problem = _info(cache, capsys)["responses"]["problem"]
    assert problem.startswith("corrupt: ") and problem != "corrupt: ok"

    def unopenable(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", unopenable)
    assert _info(cache, capsys)["responses"]["problem"] == \
        "unreadable: unable to open database file"


def test_clearing_a_store_someone_else_just_removed(tmp_path: Path) -> None:
    from gpo_server.commands import cache as command

    command._remove(tmp_path / "gone")  # nothing there any more: nothing to do
    assert list(tmp_path.iterdir()) == []
