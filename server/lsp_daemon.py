"""The language server's link to the daemon, and the prompt states it answered.

`DaemonLink` connects (starting the daemon on demand), registers the
workspace roots, sends each request (once more after a break of a link that
was up), tells the user of an outage once and reconnects in the background
(the pure rules are in lsp_link). It keeps the last prompt state per file,
with the scores the daemon measured for texts the trajectory does not hold,
so hover, diagnostics and code actions answer without a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lsprotocol import types

from gpo_server import runtime
from gpo_server.lsp_link import Link, lost_message, reconnect_delay, stale_view
from gpo_server.lsp_settings import client_address
from gpo_server.prompt_state import PromptState, ScoredPrompt, Summary, normalize, parse_state
from gpo_server.runtime import DaemonError

if TYPE_CHECKING:
    from gpo_server.client import DaemonClient
    from gpo_server.lsp import GpoServer

T = TypeVar("T")


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
        self.current: dict[str, tuple[str, Summary, Summary | None]] = {}  # path -> daemon's
        self.measured: dict[tuple[str, str], tuple[Summary, Summary | None]] = {}  # re-scores
        self.file_texts: dict[str, str] = {}  # resolved path -> the file's body, per daemon
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
        """Ask the daemon for the file's state, re-publish, and follow an active job."""
        name = key(path)
        try:
            raw = await self.call(lambda c: c.prompt_state(name))
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
        if isinstance(raw.get("text"), str):
            self.file_texts[name] = raw["text"]
        current = current_scores(raw)
        if current is not None:
            self.current[name] = current
        for doc in self.server.docs.documents_of(name):
            self.server.docs.publish(doc)
        if state.job is not None and state.job.active:
            self.server.jobs.follow(state.job.id, name)

    def state_for(self, path: Path | None, body: str) -> PromptState | None:
        """The cached state of the file at `path`, with scores measured for `body` added."""
        if path is None:
            return None
        name = key(path)
        state = self.states.get(name)
        if state is None:
            return None
        current = self.current.get(name)
        if current is not None and normalize(current[0]) == normalize(body):
            state = with_scores(state, body, current[1], current[2])
        measured = self.measured.get((name, normalize(body)))
        if measured is not None:
            state = with_scores(state, body, *measured)
        return stale_view(state, self.link)

    def remember_scores(self, path: Path, body: str, out: Mapping[str, Any]) -> Summary | None:
        """Keep the dev and test scores the daemon measured for `body`; the dev one."""
        dev = summary_of(out.get("dev"))
        if dev is not None:
            self.measured[(key(path), normalize(body))] = (dev, summary_of(out.get("test")))
        return dev


def summary_of(value: Any) -> Summary | None:
    """A Summary from the daemon's score object ({score, n, low, high}), None if absent."""
    if not isinstance(value, Mapping) or not isinstance(value.get("score"), int | float):
        return None
    low, high = value.get("low"), value.get("high")
    return Summary(score=float(value["score"]), n=int(value.get("n") or 0),
                   low=float(low) if isinstance(low, int | float) else None,
                   high=float(high) if isinstance(high, int | float) else None)


def current_scores(raw: Mapping[str, Any]) -> tuple[str, Summary, Summary | None] | None:
    """The daemon's measured scores of the file's text (`text` and `current`), if any."""
    current = raw.get("current")
    text = raw.get("text")
    if not isinstance(current, Mapping) or not isinstance(text, str):
        return None
    dev = summary_of(current.get("dev"))
    return None if dev is None else (text, dev, summary_of(current.get("test")))


def with_scores(state: PromptState, text: str, dev: Summary, test: Summary | None
                ) -> PromptState:
    """The state with `text` scored as measured: a re-score of a text outside the trajectory
    (a fresh file, a hand edit) shows in the hover like the evaluated ones, and a re-score
    after the example set changed replaces the trajectory's older numbers."""
    known = state.lookup(text)
    if known is not None:
        fresh = replace(known, dev=dev, test=test if test is not None else known.test)
        return replace(state, scored=tuple(fresh if item is known else item
                                           for item in state.scored))
    return replace(state, scored=(*state.scored, ScoredPrompt(text, state.steps_done, dev, test)))
