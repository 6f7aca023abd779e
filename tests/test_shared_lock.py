"""One run per prompt across machines: the run lock on a real redis-server.

Each "machine" is a cache dir of its own (its own local flock and disk cache) with the
same GPO_CACHE_URL. The first tests drive gpo_engine.runlock in this process; the last
ones run real `gpo optimize` processes against the test model server.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpo_engine import shared_store
from gpo_engine.errors import ConfigError
from gpo_engine.events import Event, JobStarted
from gpo_engine.redis_lock import DEFAULT_EXPIRY, parse_expiry
from gpo_engine.runlock import Holder, PromptBusy, acquire, try_lock
from gpo_engine.task import load_task, open_store
from gpo_engine.trajectory import trajectory_key
from tests.model_server import Fault, ModelServer
from tests.redis_server import RedisServer, free_port, redis_server
from tests.scripted_models import ScriptedModels, run_task, write_capitals
from tests.test_daemon import config_for, daemon, model, rt_dir, write_task

__all__ = ["model", "redis_server", "rt_dir"]  # fixtures, used by name below

HOST = socket.gethostname()
LOCK = "gpo:v1:lock:"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # "One warning per process" is per Redis URL: every test starts with none given.
    monkeypatch.setattr(shared_store, "_warned_down", set())
    for name in ("GPO_CACHE_URL", "GPO_CACHE_TTL", "GPO_LOCK_TTL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    yield


def _client(server: RedisServer) -> Any:
    return server.client()


# -- the lock itself ---------------------------------------------------------------


def test_the_lock_is_one_expiring_key_naming_its_holder_and_a_second_machine_is_told(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    client = _client(redis_server)
    held = acquire(tmp_path / "laptop", "k1", "p.prompt", expiry=5)
    try:
        value = json.loads(client.get(LOCK + "k1"))
        assert (value["host"], value["pid"]) == (HOST, os.getpid())
        assert len(value["token"]) == 32 and abs(value["started"] - time.time()) < 5
        assert 0 < client.pttl(LOCK + "k1") <= 5000
        with pytest.raises(PromptBusy) as busy:
            acquire(tmp_path / "ci", "k1", "p.prompt")
        assert f"is being optimized by pid {os.getpid()} on {HOST} (started " in str(busy.value)
        assert busy.value.host == HOST and busy.value.pid == os.getpid()
        fd = try_lock(tmp_path / "ci", "k1")  # the refused machine let its local lock go
        assert fd is not None
        os.close(fd)
        acquire(tmp_path / "ci", "k2", "q.prompt").release()  # another prompt is free
    finally:
        held.release()
    assert client.get(LOCK + "k1") is None  # released: deleted, not left to expire
    acquire(tmp_path / "ci", "k1", "p.prompt").release()


def test_a_holder_on_another_machine_is_named_with_a_hint_that_fits(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    redis_server.client().set(LOCK + "k", json.dumps(
        {"token": "3" * 32, "host": "workstation", "pid": 4242, "started": 1.7e9}), px=9000)
    with pytest.raises(PromptBusy) as busy:
        acquire(tmp_path / "laptop", "k", "p.prompt")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1.7e9))
    assert str(busy.value) == (  # this machine's daemon has no job of it to follow
        f"p.prompt is being optimized by pid 4242 on workstation (started {when}); run with "
        "--wait to wait for it and resume from the steps it saves")
    with pytest.raises(PromptBusy, match="daemon's own"):  # a caller's hint stays
        acquire(tmp_path / "laptop", "k", "p.prompt", hint="the daemon's own")


def test_a_held_lock_is_renewed_past_its_expiry(tmp_path: Path, redis_server: RedisServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    client = _client(redis_server)
    held = acquire(tmp_path / "laptop", "k", "p.prompt", expiry=1.0)
    try:
        for _ in range(10):  # 2.5 s: two and a half expiries
            time.sleep(0.25)
            assert client.pttl(LOCK + "k") > 0
        with pytest.raises(PromptBusy):
            acquire(tmp_path / "ci", "k", "p.prompt")
        assert held.lost == ""
    finally:
        held.release()


async def test_a_lock_another_machine_took_is_lost_and_stops_the_run_not_its_lock(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    client = _client(redis_server)
    held = acquire(tmp_path / "laptop", "k", "p.prompt", expiry=1.5)
    cancel = asyncio.Event()
    held.link(cancel)
    other = json.dumps({"token": "0" * 32, "host": "workstation", "pid": 4242,
                        "started": time.time()})
    # What another machine does once this one's key expired (a stalled process).
    client.set(LOCK + "k", other, px=10_000)
    with pytest.warns(RuntimeWarning, match="lost the run lock") as caught:
        await asyncio.wait_for(cancel.wait(), 3)  # the next renewal (0.5 s) sees it
    assert "pid 4242 on workstation" in held.lost and "took it over" in held.lost
    assert "p.prompt: lost the run lock gpo:v1:lock:k" in str(caught[0].message)
    late = asyncio.Event()
    held.link(late)  # linking a lock already lost sets the event at once
    assert late.is_set()
    held.release()
    assert client.get(LOCK + "k").decode() == other  # compare-and-delete kept theirs


async def test_redis_lost_longer_than_the_expiry_loses_the_lock_and_a_blip_does_not(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    held = acquire(tmp_path / "laptop", "k", "p.prompt", expiry=3.0)
    cancel = asyncio.Event()
    held.link(cancel)
    redis_server.stop(save=True)  # a restart for maintenance: the key survives, in time
    redis_server.start()
    await asyncio.sleep(3.5)  # past the expiry: renewed after the restart
    assert held.lost == "" and not cancel.is_set()
    began = time.monotonic()
    redis_server.stop()
    with pytest.warns(RuntimeWarning, match="lost the run lock"):
        await asyncio.wait_for(cancel.wait(), 6)
    # Lost once the key may have expired, 3 s after the last renewal (at most 1 s before the
    # stop), not before.
    assert 1.8 < time.monotonic() - began < 4.5
    assert "could not be reached for 3 s" in held.lost and "ConnectionError" in held.lost
    started = time.monotonic()
    held.release()  # Redis away: nothing to delete, and no wait
    assert time.monotonic() - started < 1.5


def test_redis_down_at_start_runs_with_the_local_lock_and_the_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody there
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        held = acquire(tmp_path / "laptop", "k", "p.prompt")
        try:
            assert held.shared is None and held.fd is not None
            assert try_lock(tmp_path / "laptop", "k") is None  # the local lock is held
            store = open_store(tmp_path / "laptop")  # the trajectory store: no second word
            store.close()
        finally:
            held.release()
    said = [str(w.message) for w in caught]
    assert len(said) == 1, said
    assert "is unreachable" in said[0] and "local disk cache and run locks only" in said[0]


def test_a_waiter_is_told_who_it_waits_for_and_takes_a_dead_holders_lock_after_expiry(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    client = _client(redis_server)
    # A holder killed on another machine: its key stays until it expires, unrenewed.
    client.set(LOCK + "k", json.dumps({"token": "1" * 32, "host": "laptop", "pid": 77,
                                       "started": 1.7e9}), px=1500)
    told: list[Holder] = []
    began = time.monotonic()
    held = acquire(tmp_path / "ci", "k", "p.prompt", wait=True, on_wait=told.append,
                   expiry=2)
    waited = time.monotonic() - began
    try:
        assert told == [Holder(77, 1.7e9, "laptop")]
        assert 1.0 < waited < 2.5  # the 1.5 s expiry, plus at most one 0.5 s poll
        assert json.loads(client.get(LOCK + "k"))["pid"] == os.getpid()
    finally:
        held.release()

    # A live holder that releases: the waiter has it within one poll.
    first = acquire(tmp_path / "laptop", "k", "p.prompt", expiry=5)
    got: list[float] = []

    def wait() -> None:
        acquire(tmp_path / "ci", "k", "p.prompt", wait=True).release()
        got.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.8)
    assert not got
    released = time.monotonic()
    first.release()
    waiter.join(5)
    assert got and got[0] - released < 1.0


def test_the_expiry_setting_is_read_and_checked() -> None:
    assert parse_expiry(None) == parse_expiry(" ") == DEFAULT_EXPIRY == 30
    assert (parse_expiry("2.5"), parse_expiry("90s"), parse_expiry("2m")) == (2.5, 90, 120)
    with pytest.raises(ConfigError, match=r"GPO_LOCK_TTL: '0\.5' is under 1 s"):
        parse_expiry("0.5")
    with pytest.raises(ConfigError, match="GPO_LOCK_TTL: 'soon' is not a duration"):
        parse_expiry("soon")


def test_a_save_from_a_machine_whose_lock_was_taken_over_is_refused(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The laptop stalled past its lock's expiry; the workstation took the lock over and saved
    a step: the laptop's own step (a different one) must not replace it."""
    from gpo_engine.trajectory import StaleTrajectory, StepRecord, Trajectory, TrajectoryStore

    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)

    def steps(*chosen: str) -> Trajectory:
        t = Trajectory("key", "/p.prompt", 5, "A", 50.0, 8)
        t.steps = [StepRecord(i, 10, "A", 50.0, (), c, 60.0) for i, c in enumerate(chosen)]
        return t

    laptop, workstation = (TrajectoryStore(tmp_path / name / "trajectories")
                           for name in ("laptop", "workstation"))
    try:
        laptop.save(steps("B0"))
        resumed = workstation.load("key")  # Redis first: the laptop's step, at once
        assert resumed is not None and [s.chosen for s in resumed.steps] == ["B0"]
        workstation.save(steps("B0", "W1"))
        with pytest.raises(StaleTrajectory, match="another run wrote them"):
            laptop.save(steps("B0", "L1"))
        third = TrajectoryStore(tmp_path / "third" / "trajectories")
        shared = third.load("key")
        third.close()
        assert shared is not None and [s.chosen for s in shared.steps] == ["B0", "W1"]
    finally:
        laptop.close()
        workstation.close()


# -- a run that loses its lock -------------------------------------------------------


async def test_a_run_whose_lock_is_lost_stops_at_the_step_boundary_and_loses_no_step(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `gpo optimize` and the daemon do with the RunLock: link it to the run's cancel."""
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_capitals(tmp_path / "p", steps=4)
    task = load_task(prompt)
    key = trajectory_key(task.fingerprint())
    laptop = tmp_path / "laptop"

    async with ModelServer(answer=ScriptedModels().answer) as server:

        def outage(event: Event) -> None:
            if event.kind == "step_finished" and getattr(event, "step", None) == 0:
                redis_server.stop()  # lost for good: it comes back empty
                server.latency = 0.8  # step 2 (3 rounds of calls) outlasts the 1 s expiry

        held = acquire(laptop, key, str(prompt), expiry=1.0)
        cancel = asyncio.Event()
        held.link(cancel)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                first = await run_task(task, server.api_base, laptop, fast_retries=True,
                                       on_event=outage, cancel=cancel)
            finally:
                held.release()
        said = [str(w.message) for w in caught]
        assert first.stopped == "cancelled"
        assert first.steps_done == 2  # the step under way when it was lost finished
        assert "could not be reached" in held.lost
        assert any("lost the run lock" in m for m in said), said
        kept = open_store(laptop)  # Redis still down: this machine's disk has every step
        saved = kept.load(key)
        kept.close()
        assert saved is not None and saved.steps_done == first.steps_done

        redis_server.start()  # back, empty: the outbox pushes the steps at the next run
        server.latency = 0.0
        shared_store._warned_down.clear()
        starts: list[JobStarted] = []
        again = acquire(laptop, key, str(prompt), expiry=1.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                second = await run_task(
                    task, server.api_base, laptop, fast_retries=True,
                    on_event=lambda e: starts.append(e) if isinstance(e, JobStarted) else None)
            finally:
                again.release()
    said = [str(w.message) for w in caught]
    # The outbox kept the run record and its path index while Redis was away.
    assert any(m.startswith("trajectory store: pushed 2 entries") for m in said), said
    assert starts[0].resumed_at == first.steps_done  # no finished step ran again
    assert second.steps_done == 4 and second.stopped == ""
    assert redis_server.client().exists(f"gpo:v1:trajectories:run:{key}")


# -- real `gpo optimize` processes ----------------------------------------------------

# The `gpo` command as installed beside this interpreter (the venv's console script).
SCRIPT = Path(sys.executable).with_name("gpo")
GPO = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gpo_server.cli"]


def _env(cache: Path, url: str | None, expiry: str = "1.5") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPO_")}
    env.update({"OPENAI_API_KEY": "test", "GPO_CACHE_DIR": str(cache), "GPO_LOCK_TTL": expiry,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    if url is not None:
        env["GPO_CACHE_URL"] = url
    return env


async def _start(prompt: Path, api_base: str, env: dict[str, str],
                 *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *GPO, "optimize", str(prompt), "--api-base", api_base, "--json", *extra, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _finish(proc: asyncio.subprocess.Process) -> tuple[int, dict[str, Any], str]:
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else {}, " ".join(err.decode().split())


async def _steps_shared(watcher: Path, key: str, proc: asyncio.subprocess.Process,
                        steps: int = 1) -> None:
    """Until `steps` steps of `key` are in Redis, read the way any machine reads them (this
    process, with its own cache dir `watcher` and $GPO_CACHE_URL set)."""
    from gpo_engine.trajectory import TrajectoryStore

    for _ in range(1200):  # up to 120 s
        await asyncio.sleep(0.1)
        assert proc.returncode is None, "the run ended before the test could watch it"
        store = TrajectoryStore(watcher)
        try:
            saved = store.load(key)
        finally:
            store.close()
        if saved is not None and saved.steps_done >= steps:
            return
    raise AssertionError(f"{steps} step(s) never reached Redis")


def _holder_pid(client: Any, key: str) -> int | None:
    raw = client.get(LOCK + key)
    return None if raw is None else int(json.loads(raw)["pid"])


async def _alone(prompt: Path, api_base: str, cache: Path) -> dict[str, Any]:
    """One run on its own (no Redis, its own cache): what a single run asks for."""
    code, result, err = await _finish(await _start(prompt, api_base, _env(cache, None)))
    assert code == 0, err
    return result


async def test_two_machines_on_one_prompt_never_run_a_step_twice(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_capitals(tmp_path / "p", steps=3)
    key = trajectory_key(load_task(prompt).fingerprint())
    async with ModelServer(answer=ScriptedModels().answer, latency=0.05) as server:
        alone = await _alone(prompt, server.api_base, tmp_path / "alone")
        one_run = server.requests

        laptop = await _start(prompt, server.api_base, _env(tmp_path / "laptop", redis_server.url))
        await _steps_shared(tmp_path / "watcher", key, laptop)
        server.latency = 0.5  # the rest of the laptop's run outlasts the workstation's start
        code, refused, err = await _finish(await _start(
            prompt, server.api_base, _env(tmp_path / "workstation", redis_server.url)))
        assert code == 1
        assert f"is being optimized by pid {laptop.pid} on {HOST} (started " in err
        assert refused["error"].startswith(str(prompt))

        code, waited, err = await _finish(await _start(
            prompt, server.api_base, _env(tmp_path / "workstation", redis_server.url), "--wait"))
        assert code == 0, err
        assert laptop.returncode is not None, "--wait returned before the laptop's run ended"
        assert "resuming at step 4" in err  # the laptop's 3 steps, seen in Redis: none again
        code, first, err = await _finish(laptop)
        assert code == 0, err
    assert waited["steps_done"] == first["steps_done"] == 3
    assert waited["best"] == first["best"] == alone["best"]
    assert server.requests - one_run == one_run  # both machines together paid for one run


async def test_a_killed_holder_is_taken_over_after_expiry_with_no_answered_call_repeated(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_capitals(tmp_path / "p", steps=3)
    key = trajectory_key(load_task(prompt).fingerprint())
    hold = {"from": 10**9, "held": 0}

    def faults(index: int, body: dict[str, Any]) -> Fault | None:
        # From `from` on, requests are held unanswered (the kill finds them in flight).
        if index >= hold["from"]:
            hold["held"] += 1
            return Fault(hang=True)
        return None

    async with ModelServer(answer=ScriptedModels().answer, faults=faults) as server:
        alone = await _alone(prompt, server.api_base, tmp_path / "alone")
        one_run = server.requests
        hold["from"] = one_run + one_run // 2  # the laptop stops getting answers half way

        laptop = await _start(prompt, server.api_base, _env(tmp_path / "laptop", redis_server.url))
        await _steps_shared(tmp_path / "watcher", key, laptop)
        workstation = await _start(prompt, server.api_base,
                                   _env(tmp_path / "workstation", redis_server.url), "--wait")
        for _ in range(600):
            if hold["held"]:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # every answered call is in the cache by now
        lock = redis_server.client()
        assert _holder_pid(lock, key) == laptop.pid  # the workstation waits meanwhile
        asked_before = server.requests
        laptop.kill()  # SIGKILL: no release, no renewal
        await laptop.wait()
        killed_at = time.monotonic()
        hold["from"] = 10**9
        while _holder_pid(lock, key) != workstation.pid and time.monotonic() - killed_at < 10:
            await asyncio.sleep(0.05)
        taken_over = time.monotonic() - killed_at
        code, result, err = await _finish(workstation)
        assert code == 0, err
    # The laptop's key had 1.0-1.5 s left (renewed every 0.5 s), then one 0.5 s poll at most.
    assert 0.9 < taken_over < 3.0, taken_over
    assert server.requests > asked_before  # the workstation asked for what was left
    answered = server.requests - hold["held"]
    assert result["steps_done"] == 3 and result["best"] == alone["best"]
    assert "resuming at step" in err and "resuming at step 1;" not in err
    assert answered - one_run == one_run  # the two machines together: one run's calls


async def test_redis_lost_mid_run_stops_gpo_optimize_cleanly_and_the_outbox_keeps_its_steps(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_capitals(tmp_path / "p", steps=4)
    key = trajectory_key(load_task(prompt).fingerprint())
    laptop = _env(tmp_path / "laptop", redis_server.url, expiry="1")
    async with ModelServer(answer=ScriptedModels().answer, latency=0.05) as server:
        alone = await _alone(prompt, server.api_base, tmp_path / "alone")
        first = await _start(prompt, server.api_base, laptop)
        await _steps_shared(tmp_path / "watcher", key, first)
        server.latency = 0.5  # the step under way outlasts the lock's 1 s expiry
        redis_server.stop()  # lost for good: it comes back empty
        code, stopped, err = await _finish(first)
        assert code == 1, err
        assert "lost the run lock gpo:v1:lock:" in err and "could not be reached" in err
        assert stopped["stopped"] == "cancelled" and 1 <= stopped["steps_done"] < 4
        kept = open_store(tmp_path / "laptop")  # Redis still down: the disk has every step
        saved = kept.load(key)
        kept.close()
        assert saved is not None and saved.steps_done == stopped["steps_done"]

        redis_server.start()
        server.latency = 0.0
        code, done, err = await _finish(await _start(prompt, server.api_base, laptop))
        assert code == 0, err
        assert f"resuming at step {stopped['steps_done'] + 1}" in err  # nothing ran twice
        assert "pushed" in err  # the outbox: what was kept while Redis was away
    assert done["steps_done"] == 4 and done["best"] == alone["best"]
    assert redis_server.client().exists(f"gpo:v1:trajectories:run:{key}")


# -- the daemon's jobs ------------------------------------------------------------------


async def test_a_daemon_job_on_a_prompt_another_machine_optimizes_fails_naming_it(
        rt_dir: Path, model: ModelServer, tmp_path: Path, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_task(tmp_path / "ws", steps=1)
    key = trajectory_key(load_task(prompt).fingerprint())
    redis_server.client().set(LOCK + key, json.dumps(
        {"token": "2" * 32, "host": "workstation", "pid": 4242, "started": time.time()}),
        px=60_000)
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        job, _ = await client.create_job(prompt)
        done = await client.wait(job["id"])
    assert done["state"] == "failed" and done["error_kind"] == "busy"
    assert "is being optimized by pid 4242 on workstation (started " in done["error"]
    assert model.requests == 0


async def test_a_daemon_job_that_loses_its_lock_fails_at_the_step_boundary_saying_why(
        rt_dir: Path, model: ModelServer, tmp_path: Path, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    monkeypatch.setenv("GPO_LOCK_TTL", "1")
    # Steps to spare: on a loaded machine the job may be steps further on before the poll
    # below sees its first one.
    prompt = write_task(tmp_path / "ws", steps=8)
    async with daemon(config_for(rt_dir, model), roots=(tmp_path / "ws",)) as (client, _):
        job, _ = await client.create_job(prompt)
        for _ in range(600):
            if (await client.job(job["id"]))["step"] >= 1:
                break
            await asyncio.sleep(0.05)
        model.latency = 0.5  # the step under way outlasts the lock's 1 s expiry
        redis_server.stop()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the shared cache's and the lock's own words
            done = await client.wait(job["id"])
    assert done["state"] == "failed" and done["error_kind"] == "busy"
    assert done["error"].startswith("lost the run lock: Redis could not be reached")
    assert 1 <= done["step"] < 8
