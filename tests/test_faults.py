"""Nothing lost: every file gpo writes for a user is written whole or not at all.

A full disk is simulated by failing os.write on gpo's temporary files (after
some bytes went out, as a real full disk does), and, when running as root, is
real: a 64 KB tmpfs filled to the last byte. In every case the user's file
stays byte-identical and the command ends with one line saying what failed
(exit 1, and a JSON error object with --json), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpo_engine import atomic
from gpo_engine.atomic import TMP_SUFFIX, WriteError
from gpo_server import runtime
from gpo_server.cli import main
from tests.model_server import ModelServer
from tests.scripted_models import ScriptedModels, write_capitals

ENOSPC_MESSAGE = "no space left on device writing"
NAMED_BODY = "Name the capital city.\nCountry: {{country}}\n"  # right from the start


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("COLUMNS", "500")  # messages are checked whole


def _is_gpo_temp(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(TMP_SUFFIX)
    except OSError:
        return False


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """`disk_full(n)`: gpo's temporary files take `n` bytes, then os.write raises ENOSPC."""
    real_write = os.write

    def install(room: int = 100) -> None:
        left = [room]

        def write(fd: int, data: Any) -> int:
            if not _is_gpo_temp(fd):
                return real_write(fd, data)
            if left[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = min(len(data), left[0])
            left[0] -= n
            return real_write(fd, bytes(data[:n]))

        monkeypatch.setattr(os, "write", write)

    return install


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX)]


async def _gpo(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


# ------------------------------------------------------------------ the helper


def test_a_write_that_runs_out_of_space_leaves_the_original(
        tmp_path: Path, disk_full: Callable[[int], None]) -> None:
    target = tmp_path / "t.prompt"
    target.write_bytes(b"original\n" * 500)
    disk_full(4096)
    with pytest.raises(WriteError) as info:
        atomic.write_text(target, "new text\n" * 1000)
    assert target.read_bytes() == b"original\n" * 500
    assert str(info.value) == f"no space left on device writing {target}; the file is unchanged"
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert _leftovers(tmp_path) == []


def test_a_killed_writes_leftover_goes_with_the_next_write(tmp_path: Path) -> None:
    """A write killed between creating its temporary file and the rename leaves that
    file behind; the next write of the same file removes it once it is clearly stale,
    and never one that may belong to a write under way in another process."""
    target = tmp_path / "t.prompt"
    target.write_text("v1\n")
    stale = tmp_path / f".t.prompt.0badc0de{TMP_SUFFIX}"
    fresh = tmp_path / f".t.prompt.5eed5eed{TMP_SUFFIX}"
    other = tmp_path / f".other.prompt.0badc0de{TMP_SUFFIX}"
    for leftover in (stale, fresh, other):
        leftover.write_text("half a file")
    old = time.time() - atomic.STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic.write_text(target, "v2\n")
    assert target.read_text() == "v2\n"
    assert not stale.exists()  # this file's leftover, an hour old: gone
    assert fresh.exists() and other.exists()  # under way, or another file's: kept


def test_a_new_file_that_cannot_be_written_is_not_created(
        tmp_path: Path, disk_full: Callable[[int], None]) -> None:
    disk_full(0)
    with pytest.raises(WriteError, match=r"; it was not created$"):
        atomic.write_text(tmp_path / "new.html", "<p>")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("step", ["fsync", "replace", "fchmod"])
def test_every_step_failing_leaves_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                step: str) -> None:
    target = tmp_path / "lock"
    target.write_text("old")
    target.chmod(0o640)  # fchmod runs for an existing file

    def fail(*args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, step, fail)
    with pytest.raises(WriteError, match=f"^input/output error writing {target}; the file is "
                                         "unchanged$"):
        atomic.write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_an_interrupt_mid_write_leaves_the_original(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t.prompt"
    target.write_text("old")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_text(target, "new")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_permissions_are_kept_and_a_symlink_stays_a_link(tmp_path: Path) -> None:
    private = tmp_path / "private.prompt"
    private.write_text("a")
    private.chmod(0o600)
    atomic.write_text(private, "b")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() == "b"

    shared = tmp_path / "shared.prompt"
    shared.write_text("a")
    shared.chmod(0o664)
    atomic.write_text(shared, "b")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664

    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "fresh.html", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh.html").stat().st_mode) == 0o644

    atomic.write_text(shared, "forced", mode=0o600)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600

    link = tmp_path / "link.prompt"
    link.symlink_to(private)
    atomic.write_text(link, "through the link")
    assert link.is_symlink() and private.read_text() == "through the link"


def test_a_file_we_may_not_write_is_refused_not_replaced(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t.prompt"
    target.write_text("read-only")
    target.chmod(0o444)
    real_access = os.access
    # As an ordinary user sees it (root may write anything, so ask os.access to say no).
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == target
                        else real_access(path, mode))
    with pytest.raises(WriteError, match=f"^permission denied writing {target}; the file is "
                                         "unchanged$"):
        atomic.write_text(target, "new")
    assert target.read_text() == "read-only" and _leftovers(tmp_path) == []


def test_a_target_that_cannot_be_looked_at_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"^not a directory writing .*file/r.html"):
        atomic.write_text(tmp_path / "file" / "r.html", "<p>")


def test_a_folder_that_refuses_fsync_does_not_fail_the_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def files_only(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))  # some file systems do
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", files_only)
    atomic.write_text(tmp_path / "t.prompt", "new")
    assert (tmp_path / "t.prompt").read_text() == "new"


def test_text_is_written_byte_for_byte(tmp_path: Path) -> None:
    target = tmp_path / "crlf.prompt"
    atomic.write_text(target, "a\r\nb «naïve»\n")
    assert target.read_bytes() == "a\r\nb «naïve»\n".encode()


def test_a_file_owned_by_someone_else_keeps_its_owner(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    target = tmp_path / "theirs.prompt"
    target.write_text("a")
    os.chown(target, 65534, 65534)
    atomic.write_text(target, "b")
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)


def test_a_file_that_cannot_be_given_back_is_still_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    target = tmp_path / "theirs.prompt"
    target.write_text("a")
    os.chown(target, 65534, 65534)

    def refused(*args: object) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "fchown", refused)  # as for a user who is not root
    atomic.write_text(target, "b")
    assert target.read_text() == "b" and target.stat().st_uid == os.geteuid()


# ------------------------------------------------------------------ each writer


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One optimization run on disk (prompt and cache), for the commands that read it."""
    root = tmp_path_factory.mktemp("faults-run")
    prompt, cache = write_capitals(root / "task"), root / "cache"

    async def run() -> None:
        async with ModelServer(answer=ScriptedModels().answer) as server:
            assert await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                              "--cache-dir", str(cache), "--json") == 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "test")
        asyncio.run(run())
    return {"prompt": prompt, "cache": cache}


async def test_optimize_write_on_a_full_disk_keeps_the_prompt_and_reports_the_result(
        tmp_path: Path, disk_full: Callable[[int], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    prompt = write_capitals(tmp_path / "p")
    before = prompt.read_bytes()
    disk_full(50)
    async with ModelServer(answer=ScriptedModels().answer) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--cache-dir", str(tmp_path / "c"), "--write", "--json")
    captured = capsys.readouterr()
    assert code == 1 and prompt.read_bytes() == before
    out = json.loads(captured.out)
    message = f"{ENOSPC_MESSAGE} {prompt}; the file is unchanged"
    assert out["written"] is False and out["error"] == message
    assert out["best_dev"]["score"] == 100.0  # the paid-for result is still reported
    assert f"error {message}" in captured.err and "Traceback" not in captured.err
    assert _leftovers(prompt.parent) == []


async def test_optimize_write_failure_in_text_mode_shows_the_diff_and_the_error(
        tmp_path: Path, disk_full: Callable[[int], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    prompt = write_capitals(tmp_path / "p")
    disk_full(0)
    async with ModelServer(answer=ScriptedModels().answer) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--cache-dir", str(tmp_path / "c"), "--write")
    captured = capsys.readouterr()
    assert code == 1
    assert "+++ proposed" in captured.out and "written to" not in captured.out
    assert f"{ENOSPC_MESSAGE} {prompt}; the file is unchanged" in captured.err


async def _update_on_a_full_disk(folder: Path, cache: Path, fill: Callable[[], None],
                                 capsys: pytest.CaptureFixture[str], *flags: str
                                 ) -> tuple[Path, bytes, int]:
    """`gpo check --update` on the capitals task in `folder`; then an edit, the output so far
    dropped, `fill()` taking the disk, and `check --update` again with `flags`. The lock,
    its bytes before the second run, and that run's exit code."""
    prompt = write_capitals(folder, body=NAMED_BODY)
    lock = prompt.with_name(prompt.name + ".lock")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        common = ["--api-base", server.api_base, "--cache-dir", str(cache)]
        assert await _gpo("check", "--update", str(prompt), *common) == 0
        before = lock.read_bytes()
        prompt.write_text(prompt.read_text() + "Answer briefly.\n")
        fill()
        capsys.readouterr()
        code = await _gpo("check", "--update", str(prompt), *common, *flags)
    return lock, before, code


async def test_check_update_on_a_full_disk_keeps_the_lock(
        tmp_path: Path, disk_full: Callable[[int], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    lock, before, code = await _update_on_a_full_disk(
        tmp_path / "p", tmp_path / "c", lambda: disk_full(10), capsys, "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and lock.read_bytes() == before
    assert out["ok"] is False
    [result] = out["results"]
    assert result["verdict"] == "error"
    assert result["reasons"] == [f"{ENOSPC_MESSAGE} {lock}; the file is unchanged"]


async def test_junit_report_on_a_full_disk_is_an_error_after_the_results(
        tmp_path: Path, disk_full: Callable[[int], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    prompt = write_capitals(tmp_path / "p", body=NAMED_BODY)
    junit = tmp_path / "junit.xml"
    junit.write_text("<old/>")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        common = ["--api-base", server.api_base, "--cache-dir", str(tmp_path / "c")]
        assert await _gpo("check", "--update", str(prompt), *common) == 0
        capsys.readouterr()
        disk_full(0)
        code = await _gpo("check", str(prompt), *common, "--junit-xml", str(junit), "--json")
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 1 and junit.read_text() == "<old/>"
    assert out["ok"] is False and out["results"][0]["verdict"] == "pass"
    assert out["error"] == f"{ENOSPC_MESSAGE} {junit}; the file is unchanged"
    assert "Traceback" not in captured.err


def test_report_on_a_full_disk_keeps_the_previous_page(
        finished_run: dict[str, Path], tmp_path: Path, disk_full: Callable[[int], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "r.html"
    page.write_text("<p>the previous report</p>")
    disk_full(1000)
    code = main(["report", str(finished_run["prompt"]), "--cache-dir", str(finished_run["cache"]),
                 "--no-test", "-o", str(page), "--json"])
    captured = capsys.readouterr()
    message = f"{ENOSPC_MESSAGE} {page}; the file is unchanged"
    assert code == 1 and page.read_text() == "<p>the previous report</p>"
    assert json.loads(captured.out) == {"error": message, "problems": []}
    assert f"error {message}" in captured.err and "Traceback" not in captured.err
    # A first report on a full disk leaves no 0-byte page behind.
    assert main(["report", str(finished_run["prompt"]), "--cache-dir",
                 str(finished_run["cache"]), "--no-test", "-o", str(tmp_path / "new.html")]) == 1
    assert not (tmp_path / "new.html").exists() and _leftovers(tmp_path) == []


def test_trajectory_export_on_a_full_disk(finished_run: dict[str, Path], tmp_path: Path,
                                          disk_full: Callable[[int], None],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run.jsonl"
    out.write_text("an older export\n")
    disk_full(200)
    code = main(["trajectory", str(finished_run["prompt"]), "--jsonl", "-o", str(out),
                 "--cache-dir", str(finished_run["cache"])])
    assert code == 1 and out.read_text() == "an older export\n"
    assert f"{ENOSPC_MESSAGE} {out}; the file is unchanged" in capsys.readouterr().err


def test_runtime_files_on_a_full_disk(tmp_path: Path, disk_full: Callable[[int], None]) -> None:
    status = runtime.Status(pid=1, address="unix:/x", version="0", started=0.0)
    runtime.write_status(tmp_path, status)
    before = (tmp_path / runtime.STATUS_NAME).read_bytes()
    disk_full(5)
    with pytest.raises(OSError) as info:  # what jobs.py and daemon.py already catch
        runtime.write_status(tmp_path, runtime.Status(2, "unix:/y", "1", 1.0))
    assert isinstance(info.value, WriteError) and info.value.errno == errno.ENOSPC
    assert (tmp_path / runtime.STATUS_NAME).read_bytes() == before
    assert runtime.read_status(tmp_path) == status
    with pytest.raises(WriteError, match="it was not created"):
        runtime.new_token(tmp_path)
    assert not (tmp_path / runtime.TOKEN_NAME).exists() and _leftovers(tmp_path) == []


def test_runtime_files_are_private_even_over_a_looser_file(tmp_path: Path) -> None:
    (tmp_path / runtime.TOKEN_NAME).write_text("old")
    (tmp_path / runtime.TOKEN_NAME).chmod(0o644)
    token = runtime.new_token(tmp_path)
    assert runtime.read_token(tmp_path) == token
    assert stat.S_IMODE((tmp_path / runtime.TOKEN_NAME).stat().st_mode) == 0o600


# ------------------------------------------------------------------ a real full disk


@contextlib.contextmanager
def _small_tmpfs(folder: Path) -> Iterator[Path]:
    """A 64 KB tmpfs at `folder` (root only); unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _fill(folder: Path) -> None:
    """Take every free byte of the file system holding `folder`."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _padded_capitals(folder: Path, size: int) -> Path:
    """The capitals task with a prompt file of exactly `size` bytes (a frontmatter comment)."""
    prompt = write_capitals(folder)
    text = prompt.read_text()
    prompt.write_text(text.replace("---\n", "---\n# " + "x" * (size - len(text) - 3) + "\n", 1))
    assert prompt.stat().st_size == size
    return prompt


async def test_real_full_disk_optimize_write_keeps_the_prompt(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _small_tmpfs(tmp_path / "disk") as disk:
        # 4090 bytes: the proposal makes it longer than one 4 KB page, so rewriting it
        # in place (what `--write` did) left 4096 bytes, cut mid-line.
        prompt = _padded_capitals(disk / "p", 4090)
        before = prompt.read_bytes()
        _fill(disk)
        async with ModelServer(answer=ScriptedModels().answer) as server:
            code = await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                              "--cache-dir", str(tmp_path / "c"), "--write", "--json")
        captured = capsys.readouterr()
        out = json.loads(captured.out)
        assert code == 1 and prompt.read_bytes() == before
        assert out["written"] is False and out["best"] != out["initial"]
        assert out["error"] == f"{ENOSPC_MESSAGE} {prompt}; the file is unchanged"
        assert _leftovers(prompt.parent) == []


async def test_real_full_disk_check_update_keeps_the_lock(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _small_tmpfs(tmp_path / "disk") as disk:
        lock, before, code = await _update_on_a_full_disk(
            disk / "p", tmp_path / "c", lambda: _fill(disk), capsys)
        captured = capsys.readouterr()
        assert code == 1 and lock.read_bytes() == before
        assert f"{ENOSPC_MESSAGE} {lock}; the file is unchanged" in captured.out
        assert "Traceback" not in captured.err
        assert _leftovers(lock.parent) == []


# ------------------------------------------------------------------ --json failures


def _json_failure(capsys: pytest.CaptureFixture[str], argv: list[str], code: int
                  ) -> dict[str, Any]:
    assert main(argv) == code
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert isinstance(out["error"], str) and out["error"] and isinstance(out["problems"], list)
    return out


def test_json_failures_are_json_objects(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.prompt"
    broken.write_text("---\nmodel: [unclosed\n---\nHi {{x}}\n")
    out = _json_failure(capsys, ["eval", str(broken), "--json"], 1)
    [problem] = out["problems"]
    assert problem["path"] == str(broken) and problem["line"] >= 2
    assert problem["severity"] == "error" and out["error"].startswith(f"{broken}:")

    prompt = write_capitals(tmp_path / "p")
    rows = prompt.with_name("capitals.examples.jsonl")
    good = rows.read_text()
    rows.write_text("not json\n" + good + "{also not json\n")
    out = _json_failure(capsys, ["eval", str(prompt), "--json"], 1)
    assert out["error"] == f"2 problems in {rows}"
    assert [p["line"] for p in out["problems"]] == [1, 26]
    rows.write_text(good)

    out = _json_failure(capsys, ["render", str(prompt), "--row", "99", "--json"], 2)
    assert "has rows 1 to 24" in out["error"] and out["problems"] == []

    out = _json_failure(capsys, ["optimize", str(prompt), "--model", "openai/gpt-4o-mini",
                                 "--max-cost", "0.00001", "--json"], 1)
    assert out["error"].startswith("refusing to start: the estimate")
    out = _json_failure(capsys, ["optimize", str(prompt), "--max-cost", "0", "--json"], 1)
    assert out["error"] == "gpo.max_cost must be a number > 0, got 0.0"

    out = _json_failure(capsys, ["report", str(prompt), "--cache-dir", str(tmp_path / "c"),
                                 "--json"], 1)
    assert out["error"].startswith(f"no optimization run recorded for {prompt}")


def test_daemon_json_failures(short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--runtime-dir", str(short_dir / "rt")]
    out = _json_failure(capsys, ["daemon", "status", *where, "--json"], 1)
    assert out["running"] is False and out["error"].startswith("not running")
    _json_failure(capsys, ["daemon", "jobs", *where, "--json"], 1)
    (short_dir / "file").write_text("x")
    out = _json_failure(capsys, ["daemon", "status", "--runtime-dir", str(short_dir / "file"),
                                 "--json"], 1)
    assert "not a directory" in out["error"] or "exists" in out["error"]


def test_an_os_error_is_one_line_and_a_json_object(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from gpo_server.commands import cache

    def unreadable(*args: object) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/gpo/cache")

    monkeypatch.setattr(cache, "run_info", unreadable)
    assert main(["cache", "info", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": "/srv/gpo/cache: permission denied",
                                        "problems": []}
    assert "error /srv/gpo/cache: permission denied" in captured.err
    assert "Traceback" not in captured.err


def test_an_interrupt_with_json_says_so(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from gpo_server.commands import cache

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "run_info", interrupted)
    assert main(["cache", "info", "--json"]) == 130
    assert json.loads(capsys.readouterr().out)["error"].startswith("interrupted")
