"""`gpo cache info | clear` with a shared cache: what Redis holds, and `clear --shared`,
against a real redis-server (tests/redis_server.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from gpo_engine import shared_store
from gpo_engine.redis_admin import namespace_usage
from gpo_engine.redis_store import RedisStore
from gpo_engine.shared_store import TieredStore, open_store
from gpo_server.cli import main
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, used by name below

LOST = "nothing else"
PASSWORD = "s3cret-pw"


@pytest.fixture(autouse=True)
def _no_shared_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_store, "_warned_down", set())
    for name in ("GPO_CACHE_URL", "GPO_CACHE_TTL"):
        monkeypatch.setenv(name, "")  # restored after use_cache_url sets it directly
        monkeypatch.delenv(name)


def _store(root: Path, kind: str, url: str) -> TieredStore:
    store = open_store(root / kind, kind=kind, label=kind, lost=LOST, url=url)
    assert isinstance(store, TieredStore)
    return store


def _fill(root: Path, url: str, responses: int, trajectories: int) -> None:
    """One machine's run: responses and trajectories written through the real stores."""
    for kind, count in (("responses", responses), ("trajectories", trajectories)):
        store = _store(root, kind, url)
        store.set_many({f"k{i}": {"text": f"answer {i}" * 20} for i in range(count)})
        store.close()


def _info(capsys: pytest.CaptureFixture[str], cache: Path, url: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(cache), "--json",
                 "--cache-url", url]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_info_on_another_machine_counts_what_redis_holds(
        tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "machine-a", redis_server.url, responses=7, trajectories=2)
    client: Any = redis_server.client()
    client.set("other-tool:x", b"1")
    info = _info(capsys, tmp_path / "machine-b", redis_server.url)
    assert [p["entries"] for p in info["parts"]] == [0, 0]  # nothing on this disk
    shared = info["shared"]
    assert shared["url"] == redis_server.url and shared["reachable"] and not shared["problem"]
    assert shared["namespaces"]["responses"]["entries"] == 7
    assert shared["namespaces"]["trajectories"]["entries"] == 2
    expected = sum(client.memory_usage(k) for k in client.scan_iter("gpo:v1:responses:*"))
    assert shared["namespaces"]["responses"]["bytes"] == expected > 0
    assert all(n["complete"] for n in shared["namespaces"].values())
    assert shared["outbox"] == {"responses": 0, "trajectories": 0}
    # The plain text says the same.
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "machine-b"),
                 "--cache-url", redis_server.url]) == 0
    out = capsys.readouterr().out
    assert f"shared: {redis_server.url}" in out
    assert "responses    7 entries" in out and "trajectories 2 entries" in out


def test_info_hides_the_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.redis_server import require_redis

    require_redis()
    with RedisServer(tmp_path / "redis", password=PASSWORD) as server:
        _fill(tmp_path / "a", server.url, responses=1, trajectories=0)
        info = _info(capsys, tmp_path / "b", server.url)
        assert info["shared"]["url"] == server.url.replace(PASSWORD, "***")
        assert info["shared"]["namespaces"]["responses"]["entries"] == 1
        assert main(["cache", "info", "--cache-dir", str(tmp_path / "b"),
                     "--cache-url", server.url]) == 0
        captured = capsys.readouterr()
        assert PASSWORD not in captured.out + captured.err


def test_usage_stops_at_its_limit(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, namespace="responses")
    store.set_many({f"k{i}": {"n": i} for i in range(5)})
    assert namespace_usage(store, limit=3)[::2] == (3, False)
    assert namespace_usage(store)[::2] == (5, True)
    store.close()


def test_info_with_redis_down_says_unreachable_in_one_line_and_counts_the_outbox(
        tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = redis_server.url
    redis_server.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "unreachable": kept in the outbox
        _fill(tmp_path / "cache", url, responses=3, trajectories=1)
    info = _info(capsys, tmp_path / "cache", url)
    shared = info["shared"]
    assert not shared["reachable"] and "ConnectionError" in shared["problem"]
    assert shared["outbox"] == {"responses": 3, "trajectories": 1}
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "cache"),
                 "--cache-url", url]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if "unreachable" in line]
    assert len(lines) == 1 and lines[0].startswith(f"shared: {url} unreachable (")
    assert "3 responses, 1 trajectories waiting" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_clear_shared_removes_exactly_this_namespaces_keys(
        tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "a", redis_server.url, responses=4, trajectories=2)
    client: Any = redis_server.client()
    client.set("other-tool:x", b"1")
    client.set("gpo:v1:lock:job-1", b"owner")
    _fill(tmp_path / "b", redis_server.url, responses=1, trajectories=0)  # k0 again, on disk
    capsys.readouterr()
    assert main(["cache", "clear", "--shared", "--yes", "--cache-dir", str(tmp_path / "b"),
                 "--cache-url", redis_server.url]) == 0
    err = capsys.readouterr().err
    assert "removed 4 keys from the shared cache" in err and "deleted 1 responses" in err
    left = sorted(k.decode() for k in client.keys("*"))
    assert left == ["gpo:v1:lock:job-1", "gpo:v1:trajectories:k0", "gpo:v1:trajectories:k1",
                    "other-tool:x"]
    assert _info(capsys, tmp_path / "b", redis_server.url)["parts"][0]["entries"] == 0
    # --trajectories: those go too; the lock and the other tool's key still stay.
    assert main(["cache", "clear", "--shared", "--trajectories", "--yes", "--cache-dir",
                 str(tmp_path / "b"), "--cache-url", redis_server.url]) == 0
    assert "removed 2 keys" in capsys.readouterr().err
    assert sorted(k.decode() for k in client.keys("*")) == ["gpo:v1:lock:job-1",
                                                             "other-tool:x"]


def test_clear_without_shared_leaves_redis_alone(
        tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "a", redis_server.url, responses=2, trajectories=0)
    assert main(["cache", "clear", "--yes", "--cache-dir", str(tmp_path / "a"),
                 "--cache-url", redis_server.url]) == 0
    client: Any = redis_server.client()
    assert len(client.keys("gpo:v1:responses:*")) == 2
    assert "removed" not in capsys.readouterr().err


def test_clear_shared_asks_first(tmp_path: Path, redis_server: RedisServer,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "a", redis_server.url, responses=2, trajectories=0)

    class Terminal:
        def __init__(self, answer: str) -> None:
            self.answer = answer

        def isatty(self) -> bool:
            return True

        def readline(self) -> str:
            return self.answer

    client: Any = redis_server.client()
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    assert main(["cache", "clear", "--shared", "--cache-dir", str(tmp_path / "b"),
                 "--cache-url", redis_server.url]) == 1
    assert f"2 shared responses keys from {redis_server.url}?" in capsys.readouterr().err
    assert len(client.keys("gpo:v1:responses:*")) == 2
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert main(["cache", "clear", "--shared", "--cache-dir", str(tmp_path / "b"),
                 "--cache-url", redis_server.url]) == 0
    assert client.keys("gpo:v1:responses:*") == []


def test_clear_shared_with_redis_down_fails_but_clears_the_disk(
        tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "a", redis_server.url, responses=3, trajectories=0)
    url = redis_server.url
    redis_server.stop()
    capsys.readouterr()
    assert main(["cache", "clear", "--shared", "--yes", "--cache-dir", str(tmp_path / "a"),
                 "--cache-url", url]) == 1
    err = capsys.readouterr().err
    assert "deleted 3 responses" in err
    assert f"shared cache {url} is unreachable (" in err and "nothing deleted there" in err
    assert "Traceback" not in err
    assert _info(capsys, tmp_path / "a", url)["parts"][0]["entries"] == 0


def test_clear_shared_needs_a_shared_cache(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "clear", "--shared", "--yes", "--cache-dir", str(tmp_path)]) == 1
    assert "--shared needs a shared cache" in capsys.readouterr().err


def test_cache_info_without_a_shared_cache_never_imports_redis(tmp_path: Path) -> None:
    code = ("import sys, json, io, contextlib; from gpo_server.cli import main; "
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    assert main(['cache', 'info', '--json', '--cache-dir', {str(tmp_path)!r}]) == 0\n"
            "assert json.loads(out.getvalue())['shared'] is None\n"
            "assert 'redis' not in sys.modules, 'redis imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr


def test_clear_shared_when_redis_goes_away_midway_says_so(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gpo_server.commands import cache

    _fill(tmp_path / "a", redis_server.url, responses=2, trajectories=0)
    counted = cache.inspect_shared

    def then_down(*args: Any) -> Any:
        found = counted(*args)
        redis_server.stop()  # after counting, before deleting
        return found

    monkeypatch.setattr(cache, "inspect_shared", then_down)
    assert main(["cache", "clear", "--shared", "--yes", "--cache-dir", str(tmp_path / "a"),
                 "--cache-url", redis_server.url]) == 1
    err = capsys.readouterr().err
    assert "deleted 2 responses" in err
    assert "failed while clearing (ConnectionError" in err and "0 keys removed there" in err


def test_clear_shared_without_a_terminal_refuses(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "a", redis_server.url, responses=2, trajectories=0)
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))  # noqa: SIM115 (pytest closes it)
    assert main(["cache", "clear", "--shared", "--cache-dir", str(tmp_path / "b"),
                 "--cache-url", redis_server.url]) == 1
    assert "refusing to delete 2 shared responses keys" in capsys.readouterr().err
    client: Any = redis_server.client()
    assert len(client.keys("gpo:v1:responses:*")) == 2
