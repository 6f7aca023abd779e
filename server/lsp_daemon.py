"""The language server's link to the daemon, and the prompt states it answered.

`DaemonLink` connects (starting the daemon on demand), registers the
workspace roots, sends each request (once more after a break of a link that
was up), tells the user of an outage once and reconnects in the background
(the pure rules are in lsp_link). It keeps the last prompt state per file,
asked for the buffer's text (POST /v1/prompts with `text`): the daemon holds
every score, measured or recorded, and merges the buffer's into the state,
so hover, diagnostics and code actions answer without a round trip and this
process keeps no scores of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from lsprotocol import types

from gpo_server import runtime
from gpo_server.lsp_link import Link, lost_message, reconnect_delay, stale_view
from gpo_server.lsp_settings import client_address
from gpo_server.prompt_state import PromptState, parse_state, same_prompt
from gpo_server.runtime import DaemonError

if TYPE_CHECKING:
    from gpo_server.client import DaemonClient
    from gpo_server.lsp import GpoServer

T = TypeVar("T")


ELSEWHERE_WAIT = 2.0  # seconds a hover waits for the state of a run elsewhere


def key(path: Path) -> str:
    """How a file is named to the daemon and in the caches: its resolved path."""
    return str(path.resolve())


class DaemonLink:
    """The daemon client, the link's state, and the prompt states answered per file."""

    def __init__(self, server: GpoServer) -> None:
        self.server = server
        self.roots: set[Path] = set()
        self.link: Link = "unknown"  # see lsp_link
        self.states: dict[str, PromptState] = {}  # resolved path -> last state from the daemon
        self._client: DaemonClient | None = None
        self._client_lock: asyncio.Lock | None = None
        self._registered: set[Path] = set()
        self._warned_unreachable = False
        self._reconnector: asyncio.Task[None] | None = None

    # -- the connection ----------------------------------------------------------

    async def connected(self) -> DaemonClient:
        """The daemon client, connecting (and starting the daemon) on first use."""
        if self._client_lock is None:
            self._client_lock = asyncio.Lock()
        async with self._client_lock:
            if self._client is None:
                self._client = await self._connect()
                self._registered = set()
                self._warned_unreachable = False
            client = self._client
            missing = {r for r in self.roots if r not in self._registered and r.is_dir()}
            if missing:
                try:
                    await client.register_roots(sorted(missing))
                except DaemonError as exc:
                    if exc.status == 0:  # gone: the next call connects (and starts) again
                        self._client = None
                        await client.close()
                    raise
                self._registered |= missing
            return client

    async def _connect(self) -> DaemonClient:
        # aiohttp (~0.1 s) is imported here, after `initialize` has been answered.
        from gpo_server.client import DaemonClient, connect

        address = self.server.settings.daemon_address
        runtime_dir = self.server.runtime_dir
        if address:
            full = client_address(address)
            token = runtime.read_token(runtime.ensure_runtime_dir(runtime_dir)) \
                if full.startswith("http://") else None
            return DaemonClient(full, token)
        try:
            return await connect(runtime_dir, daemon_args=self.server.daemon_args)
        except (runtime.RuntimeDirError, OSError) as exc:
            raise DaemonError(0, "unreachable", f"cannot start the gpo daemon: {exc}") from exc

    def address_changed(self) -> None:
        """The settings name another daemon: the next request connects to it."""
        if self._client is not None:
            self.server.spawn(self.drop_client())

    async def drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def forget(self, client: DaemonClient | None) -> None:
        """Drop `client` if it is still the one in use: the next request connects again,
        starting the daemon when none serves."""
        if client is not None and client is self._client:
            await self.drop_client()

    async def call(self, request: Callable[[DaemonClient], Awaitable[T]]) -> T:
        """One daemon request. When a link that was up breaks, the user is told (once) and
        the request is sent once more, to a daemon started again on demand: an action
        after `gpo daemon stop` works instead of failing."""
        for attempt in range(2):
            was = self.link
            client: DaemonClient | None = None
            try:
                client = await self.connected()
                result = await request(client)
            except DaemonError as exc:
                if exc.status != 0:
                    raise
                await self.forget(client)
                self.link_broken(exc)
                if was != "up" or attempt:
                    raise
                continue
            self.link_restored()
            return result
        raise AssertionError("the loop above returns or raises")

    def link_broken(self, exc: DaemonError) -> None:
        """The daemon stopped answering: tell the user once, show the state as stale, and
        reconnect in the background."""
        if self.link != "up":
            self.report_unreachable(exc)
            return
        self.link = "down"
        self.server.tell(types.MessageType.Warning, lost_message(exc.message))
        self.server.docs.publish_all()  # the failed job's warning, if any, is from before
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = self.server.spawn(self._reconnect())

    def link_restored(self) -> None:
        """A request was answered; after an outage, fetch every open file's state again
        (which follows a resumed job under a fresh progress token)."""
        previous, self.link = self.link, "up"
        if previous != "down":
            return
        self._warned_unreachable = False
        self.server.log(types.MessageType.Info, "reconnected to the gpo daemon")
        for path in self.server.docs.open_files():
            self.server.spawn(self.refresh(path))

    async def _reconnect(self) -> None:
        attempt = 0
        while self.link == "down":
            await asyncio.sleep(reconnect_delay(attempt))
            attempt += 1
            with contextlib.suppress(DaemonError):
                await self.call(lambda c: c.health())

    def report_unreachable(self, exc: DaemonError) -> None:
        if not self._warned_unreachable:
            self._warned_unreachable = True
            self.server.log(types.MessageType.Warning, f"{exc.message}; scores and "
                            "suggestions are unavailable until it answers")

    def add_root_for(self, path: Path) -> None:
        """A file opened outside every workspace folder gets its folder registered."""
        if not any(path.is_relative_to(root) for root in self.roots):
            self.roots.add(path.parent)

    # -- prompt states -------------------------------------------------------------

    async def refresh(self, path: Path) -> None:
        """Ask the daemon for the file's state, for the open buffer's text; re-publish, and
        follow an active job."""
        name = key(path)
        body = self.server.docs.body_of(name)
        overrides = self.server.settings.overrides()  # the re-scores' settings: their scores
        try:
            raw = await self.call(lambda c: c.prompt_state(
                name, None if body is None else daemon_text(body), overrides=overrides))
            state = parse_state(raw)
        except DaemonError as exc:
            if exc.status == 0:
                self.report_unreachable(exc)
            elif exc.code != "invalid_source":  # the file's own diagnostics say why
                self.server.log(types.MessageType.Warning,
                                f"no state for {path.name}: {exc.message}")
            return
        except ValueError as exc:
            self.server.log(types.MessageType.Error, f"the daemon's answer for {path.name}: {exc}")
            return
        self.states[name] = state
        for doc in self.server.docs.documents_of(name):
            self.server.docs.publish(doc)
        if state.job is not None and state.job.active:
            self.server.jobs.follow(state.job.id, name)

    def state_for(self, path: Path | None) -> PromptState | None:
        """The last state of the file at `path` (as shown while the link is down)."""
        if path is None:
            return None
        return stale_view(self.states.get(key(path)), self.link)

    async def fresh_state(self, path: Path) -> PromptState | None:
        """state_for, asked again first when it names a run in another process: that run
        sends this server no events, so its steps are read when they are shown (a hover).
        At most ELSEWHERE_WAIT s; past it, the last state."""
        held = self.states.get(key(path))
        if held is not None and held.elsewhere is not None and self.link == "up":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.refresh(path), ELSEWHERE_WAIT)
        return self.state_for(path)

    def buffer_checked(self, path: Path, body: str) -> None:
        """The buffer of the file at `path` now reads `body`: when the state held is for
        another text, ask for this one's (its scores, the suggestion picked against it)."""
        state = self.states.get(key(path))
        if state is not None and self.link == "up" and not same_prompt(state.base, body):
            self.server.spawn(self.refresh(path))


def daemon_text(body: str) -> str:
    """A body as the daemon reads files (universal newlines), so the scores it keeps for
    a re-score and for the state's `text` are kept under the same text."""
    return body.replace("\r\n", "\n").replace("\r", "\n")
