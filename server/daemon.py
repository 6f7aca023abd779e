"""The local daemon: GPO jobs in the background behind a small JSON API.

One per user, on a Unix socket in a 0700 runtime directory (or, when asked,
127.0.0.1 with a random port and a bearer token from a 0600 file). It owns
the model calls, the response cache and the trajectories; editors and the
CLI reach it only through `gpo_server.client`. `make_app()` builds the
aiohttp application; `serve()` runs it until a shutdown request, a signal
or the idle timeout. The rest is in four modules: daemon_state (config and
shared state), daemon_requests (checks and the error middleware),
daemon_routes (the handlers) and prompt_state_builder (what an editor is told
about a file).

Every error is `{"error": {"code": str, "message": str}}` with a 4xx status
for bad input and 5xx only for model or daemon trouble.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Callable

from aiohttp import web

from gpo_engine import __version__
from gpo_server import runtime
from gpo_server.daemon_requests import guard
from gpo_server.daemon_routes import add_routes
from gpo_server.daemon_state import STATE, DaemonConfig, DaemonState, load_roots
from gpo_server.jobs import JobRegistry, LLMOpener, RunnerConfig
from gpo_server.prompt_state_builder import prompt_state

log = logging.getLogger("gpo.daemon")


def make_app(config: DaemonConfig, token: str | None = None, *,
             open_llm: LLMOpener | None = None) -> web.Application:
    """The daemon's application; jobs saved by an earlier daemon resume on startup.

    open_llm: how a task's model layer is opened, for the jobs and the scoring routes
    (default: with the config's cache directory and endpoint)."""
    state_file = config.runtime_dir / runtime.JOBS_NAME
    registry = JobRegistry(RunnerConfig(
        cache_dir=config.cache_dir, api_base=config.api_base,
        retry=config.retry, max_running=config.max_running, state_file=state_file),
        open_llm=open_llm)
    state = DaemonState(config, registry, registry.open_llm, token=token)
    app = web.Application(middlewares=[guard], client_max_size=config.max_body)
    app[STATE] = state
    add_routes(app)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_close_jobs)
    return app


async def _startup(app: web.Application) -> None:
    state = app[STATE]
    load_roots(state)
    resumed = await state.registry.resume_saved()
    if resumed:
        log.info("resumed %d job(s)", len(resumed))
    # litellm costs seconds to import; do it off the loop so the first job does not stall it.
    state.preload = asyncio.get_running_loop().run_in_executor(None, _preload_model_layer)


def _preload_model_layer() -> None:
    with contextlib.suppress(Exception):
        import litellm  # noqa: F401


async def _close_jobs(app: web.Application) -> None:
    state = app[STATE]
    await state.registry.close()
    if state.locks is not None:
        state.locks.close()


async def serve(config: DaemonConfig, *, handle_signals: bool = False,
                ready: Callable[[runtime.Status], None] | None = None,
                open_llm: LLMOpener | None = None) -> None:
    """Serve until /shutdown, SIGTERM/SIGINT (when handle_signals) or the idle timeout."""
    directory = runtime.ensure_runtime_dir(config.runtime_dir)
    config = dataclasses.replace(config, runtime_dir=directory)
    with runtime.daemon_lock(directory):
        token = runtime.new_token(directory) if config.tcp else None
        app = make_app(config, token, open_llm=open_llm)
        state = app[STATE]
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            if config.tcp:
                site: web.BaseSite = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                state.address = f"http://127.0.0.1:{port}"
            else:
                sock = runtime.socket_path(directory)
                with contextlib.suppress(FileNotFoundError):
                    sock.unlink()  # left by a daemon that died; we hold the lock
                old = os.umask(0o177)  # the socket is born 0600, no window of 0755
                try:
                    site = web.UnixSite(runner, str(sock))
                    await site.start()
                finally:
                    os.umask(old)
                os.chmod(sock, 0o600)
                state.address = f"unix:{sock}"
            status = runtime.Status(os.getpid(), state.address, __version__, state.started)
            runtime.write_status(directory, status)
            if ready is not None:
                ready(status)
            loop = asyncio.get_running_loop()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, state.stop.set)
            await _wait_for_stop(state)
        finally:
            runtime.remove_status(directory, os.getpid())
            await runner.cleanup()
            if config.tcp:
                with contextlib.suppress(FileNotFoundError):
                    (directory / runtime.TOKEN_NAME).unlink()


async def _wait_for_stop(state: DaemonState) -> None:
    timeout = state.config.idle_timeout
    if timeout <= 0:
        await state.stop.wait()
        return
    tick = min(1.0, timeout / 4)
    while not state.stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.stop.wait(), tick)
        if state.idle_for() >= timeout:
            log.info("idle for %.0f s; exiting", timeout)
            state.stop.set()


__all__ = ["DaemonConfig", "make_app", "prompt_state", "serve"]
