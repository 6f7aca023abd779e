"""`gpo daemon start|stop|status|restart|jobs|run`, and `gpo optimize --daemon`'s client side."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gpo_engine.errors import GpoError
from gpo_server import runtime
from gpo_server.client import DaemonClient, DaemonError, connect, event_object
from gpo_server.commands.common import EXIT_FAIL, EXIT_OK, CommandError, add_cache_url, overrides
from gpo_server.job_states import is_retrying
from gpo_server.runtime import start_args


def register(sub: Any) -> None:
    daemon = sub.add_parser("daemon", help="the background daemon editors and --daemon use")
    actions = daemon.add_subparsers(required=True, metavar="ACTION")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--runtime-dir", type=Path,
                       help="default: $GPO_RUNTIME_DIR, $XDG_RUNTIME_DIR/gpo or /tmp/gpo-UID")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--api-base", help="OpenAI-compatible endpoint for every model "
                        "(default: $GPO_API_BASE)")
    config.add_argument("--cache-dir", type=Path,
                        help="responses and trajectories (default: $GPO_CACHE_DIR or "
                        "~/.cache/gpo)")
    add_cache_url(config)  # the daemon's jobs and states share that cache too
    config.add_argument("--idle-timeout", type=float,
                        help="exit after this many seconds with no job and no request "
                        "(default 1800; 0: never)")
    config.add_argument("--tcp", action="store_true",
                        help="listen on 127.0.0.1 (random port, token file) instead of a socket")
    for name, helptext, run, parents in (
        ("start", "start the daemon in the background", _start, [where, config]),
        ("run", "run the daemon in the foreground", _run, [where, config]),
        ("stop", "stop the daemon (its jobs resume at the next start)", _stop, [where]),
        ("restart", "stop, then start the daemon", _restart, [where, config]),
        ("status", "pid, address, version, uptime, jobs and spend", _status, [where]),
        ("jobs", "list the daemon's jobs", _jobs, [where]),
    ):
        action = actions.add_parser(name, help=helptext, parents=parents)
        if name in ("status", "jobs"):
            action.add_argument("--json", action="store_true", help="print one JSON object")
        action.set_defaults(run=run)


def _directory(args: argparse.Namespace) -> Path:
    try:
        return runtime.ensure_runtime_dir(getattr(args, "runtime_dir", None))
    except runtime.RuntimeDirError as exc:
        raise CommandError(str(exc)) from exc


def _run(args: argparse.Namespace, err: Console) -> int:
    from gpo_server.daemon import DaemonConfig, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    directory = _directory(args)
    config = DaemonConfig.from_env(
        directory, api_base=args.api_base,
        cache_dir=Path(args.cache_dir).absolute() if args.cache_dir else None,
        idle_timeout=args.idle_timeout, tcp=args.tcp)
    try:
        asyncio.run(serve(config, handle_signals=True,
                          ready=lambda s: err.print(f"gpo daemon {s.pid} on {s.address}")))
    except runtime.AlreadyRunning as exc:
        raise CommandError(str(exc)) from exc
    return EXIT_OK


def _start(args: argparse.Namespace, err: Console) -> int:
    directory = _directory(args)
    running = runtime.live_status(directory)
    if running is not None and runtime.can_connect(running):
        err.print(f"already running: pid {running.pid} on {running.address}")
        return EXIT_OK
    try:
        status = runtime.ensure_daemon(directory, start_args(args))
    except runtime.RuntimeDirError as exc:
        raise CommandError(str(exc)) from exc
    err.print(f"started: pid {status.pid} on {status.address}")
    return EXIT_OK


def stop_daemon(directory: Path, timeout: float = 30.0) -> runtime.Status | None:
    """Ask the daemon to shut down (SIGTERM if it does not answer); wait for it to exit."""
    import os
    import signal

    status = runtime.live_status(directory)
    if status is None:
        return None

    async def ask() -> None:
        async with DaemonClient.for_status(status, directory) as client:
            await client.shutdown()

    try:
        asyncio.run(ask())
    except DaemonError:
        os.kill(status.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while runtime.pid_alive(status.pid):
        if time.monotonic() > deadline:
            raise GpoError(f"the daemon (pid {status.pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.05)
    runtime.remove_status(directory, status.pid)
    return status


def _stop(args: argparse.Namespace, err: Console) -> int:
    stopped = stop_daemon(_directory(args))
    err.print(f"stopped pid {stopped.pid}" if stopped else "not running")
    return EXIT_OK


def _restart(args: argparse.Namespace, err: Console) -> int:
    stop_daemon(_directory(args))
    return _start(args, err)


def _with_client(args: argparse.Namespace, call: Callable[[DaemonClient], Any]) -> Any:
    directory = _directory(args)

    async def go() -> Any:
        client = await connect(directory, start=False)
        async with client:
            return await call(client)

    return asyncio.run(go())


def _status(args: argparse.Namespace, err: Console) -> int:
    try:
        health = _with_client(args, lambda c: c.health())
    except DaemonError as exc:
        if args.json:
            print(json.dumps({"running": False, "message": exc.message,
                              "error": f"not running ({exc.message})", "problems": []}))
        else:
            err.print(f"not running ({exc.message})")
        return EXIT_FAIL
    if args.json:
        print(json.dumps({"running": True, **health}, indent=2))
        return EXIT_OK
    print(f"pid      {health['pid']}\naddress  {health['address']}\n"
          f"version  {health['version']}\nuptime   {_duration(health['uptime'])}\n"
          f"jobs     {health['jobs']['active']} running, {health['jobs']['total']} in all\n"
          f"spend    ${health['spend']['cost']:.4f} ({health['spend']['calls']} model calls)")
    return EXIT_OK


def _jobs(args: argparse.Namespace, err: Console) -> int:
    try:
        listed = _with_client(args, lambda c: c.job_list())
    except DaemonError as exc:
        raise CommandError(exc.message) from exc
    if args.json:
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    jobs, elsewhere = listed["jobs"], listed["elsewhere"]
    table = Table()
    for col in ("id", "file", "state", "step", "best dev", "spend", "note"):
        table.add_column(col)
    for job in jobs:
        best = "" if job["best_dev"] is None else f"{job['best_dev']:.1f}%"
        note = job["error"] if is_retrying(job["state"]) or job["state"] == "failed" else ""
        table.add_row(job["id"], job["path"], job["state"],
                      f"{job['step']}/{job['total_steps']}", best,
                      f"${job['spend']['cost']:.4f}", note)
    for run in elsewhere:  # another process holds the run lock (a shared cache)
        pid = f" (pid {run['pid']})" if run.get("pid") is not None else ""
        table.add_row("", run["path"] or f"(trajectory {run['key']})", "elsewhere",
                      f"{run['steps_done']}/{run['total_steps']}", "", "",
                      f"optimizing on {run.get('host') or 'another machine'}{pid}")
    Console().print(table)
    return EXIT_OK


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# ---------------------------------------------------------------- gpo optimize --daemon


def optimize_via_daemon(args: argparse.Namespace, err: Console,
                        on_event: Callable[[Any], None]) -> Any:
    """Run `gpo optimize` as a daemon job (joining the file's running one, if any),
    feeding `on_event` the same typed events an in-process run emits. Returns the
    engine's Result; raises GpoError when the job fails or is cancelled."""
    from gpo_engine.optimizer import Result

    if getattr(args, "no_cache", False):
        err.print("[yellow]--no-cache is ignored with --daemon: the daemon always caches"
                  "[/yellow]")
    path = Path(args.path).absolute()

    async def go() -> dict[str, Any]:
        client = await connect(getattr(args, "runtime_dir", None), daemon_args=start_args(args))
        async with client:
            await client.register_roots([path.parent])
            job, created = await client.create_job(path, overrides(args), args.restart)
            if not created:
                err.print(f"joining job {job['id']}, already optimizing {path.name}")
            async for event in client.events(job["id"]):
                typed = event_object(event)
                if typed is not None:
                    on_event(typed)
                elif event["kind"] == "state" and is_retrying(event["state"]):
                    err.print(f"[yellow]{event['state']}[/yellow]: {event['error']}; "
                              f"retrying in {event.get('retry_in', 0):.0f} s")
            return await client.job(job["id"])

    try:
        job = asyncio.run(go())
    except KeyboardInterrupt:
        err.print("the job goes on in the daemon: `gpo daemon jobs` shows it")
        raise
    except DaemonError as exc:
        raise GpoError(f"daemon: {exc}") from exc
    if job["state"] != "finished" and not job.get("result"):
        why = job["error"] or "no result"
        raise GpoError(f"the daemon's job {job['id']} {job['state']}: {why}")
    return Result.from_dict(job["result"])
