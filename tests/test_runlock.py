"""One run per prompt: a lock per trajectory key across processes, and trajectory saves
that never overwrite steps another run stored."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpo_engine.runlock import PromptBusy, prompt_lock, try_lock
from gpo_engine.trajectory import StaleTrajectory, StepRecord, Trajectory, TrajectoryStore
from tests.model_server import ModelServer
from tests.scripted_models import ScriptedModels, write_capitals

# The `gpo` command as installed beside this interpreter (the venv's console script).
SCRIPT = Path(sys.executable).with_name("gpo")
GPO = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gpo_server.cli"]


def _cmd(prompt: Path, api_base: str, *extra: str) -> list[str]:
    return [*GPO, "optimize", str(prompt), "--api-base", api_base, "--json", *extra]


async def _run(cmd: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _wait_for_first_step(cache: Path, prompt: Path, proc: asyncio.subprocess.Process
                               ) -> None:
    from gpo_engine.task import open_store

    for _ in range(600):  # up to 60 s for the first step to be saved
        await asyncio.sleep(0.1)
        store = open_store(cache)
        saved = store.latest_for(str(prompt.resolve()))
        store.close()
        if (saved is not None and saved.steps_done >= 1) or proc.returncode is not None:
            break
    assert proc.returncode is None, "the first run should still be running"


async def test_a_second_optimize_of_the_same_prompt_refuses_or_waits_and_pays_nothing_twice(
    tmp_path: Path
) -> None:
    prompt = write_capitals(tmp_path / "p", steps=3)
    base = {**os.environ, "OPENAI_API_KEY": "test"}
    async with ModelServer(answer=ScriptedModels().answer, latency=0.05) as server:
        # What one run costs, alone, in its own cache.
        alone = {**base, "GPO_CACHE_DIR": str(tmp_path / "alone")}
        code, _, err = await _run(_cmd(prompt, server.api_base), alone)
        assert code == 0, err
        one_run = server.requests
        assert one_run > 0

        env = {**base, "GPO_CACHE_DIR": str(tmp_path / "cache")}
        first = await asyncio.create_subprocess_exec(
            *_cmd(prompt, server.api_base), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        await _wait_for_first_step(tmp_path / "cache", prompt, first)
        server.latency = 0.5  # the rest of the first run outlasts the second's start

        code, out, err = await _run(_cmd(prompt, server.api_base), env)
        words = " ".join(err.split())
        assert code == 1
        assert f"is being optimized by pid {first.pid} (started " in words
        assert "run with --wait to wait for it, or --daemon to follow the daemon's job" in words
        assert json.loads(out)["error"].startswith(str(prompt))

        code, out, err = await _run(_cmd(prompt, server.api_base, "--wait"), env)
        assert code == 0, err
        assert "waiting for it to end" in err
        # It ran after the first run had saved all its 3 steps: none run again. (The first
        # process may still be exiting: its lock goes once its result is printed.)
        assert "resuming at step 4" in err
        first_out, first_err = await first.communicate()
        assert first.returncode == 0, first_err.decode()
        assert json.loads(out)["best"] == json.loads(first_out)["best"]
        assert server.requests - one_run == one_run


def test_a_lock_held_elsewhere_is_busy_and_a_closed_one_free(tmp_path: Path) -> None:
    fd = try_lock(tmp_path, "k")
    assert fd is not None
    try:
        assert try_lock(tmp_path, "k") is None  # another open file description: busy
        with pytest.raises(PromptBusy, match="being optimized by"), \
                prompt_lock(tmp_path, "k", "x.prompt"):
            pass
        with prompt_lock(tmp_path, "other", "y.prompt"):  # another key is free
            pass
    finally:
        os.close(fd)  # what the kernel does for a dead process
    with prompt_lock(tmp_path, "k", "x.prompt"):
        pass


def test_without_a_shared_cache_the_run_lock_is_local_and_never_imports_redis(
        tmp_path: Path) -> None:
    code = f"""
import asyncio, os, sys
from pathlib import Path
os.environ.pop("GPO_CACHE_URL", None)
from gpo_engine.runlock import prompt_lock
with prompt_lock(Path({str(tmp_path)!r}), "k", "x.prompt") as held:
    assert held.fd is not None and held.shared is None and held.lost == ""
    async def run():
        cancel = asyncio.Event()
        held.link(cancel)  # nothing to lose: never set
        return cancel.is_set()
    assert asyncio.run(run()) is False
assert "redis" not in sys.modules, "redis imported"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "GPO_CACHE_URL": ""})
    assert done.returncode == 0, done.stderr


def _trajectory(steps: int, chosen: str = "B") -> Trajectory:
    t = Trajectory("key", "/p.prompt", 5, "A", 50.0, 8)
    t.steps = [StepRecord(i, 10, "A", 50.0, (), f"{chosen}{i}", 60.0) for i in range(steps)]
    return t


def test_a_stale_trajectory_save_is_refused_and_overwrites_nothing(tmp_path: Path) -> None:
    store = TrajectoryStore(tmp_path / "trajectories")
    try:
        store.save(_trajectory(1))
        store.save(_trajectory(2))  # extends: fine
        store.save(_trajectory(2))  # the same steps (a final save): fine
        with pytest.raises(StaleTrajectory, match="another run wrote them"):
            store.save(_trajectory(1))  # behind
        with pytest.raises(StaleTrajectory):
            store.save(_trajectory(3, chosen="C"))  # diverged
        saved = store.load("key")
        assert saved is not None and [s.chosen for s in saved.steps] == ["B0", "B1"]
        store.save(_trajectory(1, chosen="C"), replace=True)  # an explicit import replaces
        saved = store.load("key")
        assert saved is not None and [s.chosen for s in saved.steps] == ["C0"]
    finally:
        store.close()
