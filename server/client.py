"""The one way the CLI and the language server talk to the daemon.

An aiohttp client over the daemon's Unix socket (or its TCP address with the
bearer token), one method per route, errors raised as `DaemonError` with the
daemon's code and message. `connect()` finds the running daemon through the
runtime directory's status file and starts one when none is serving.

This module must stay light: the language server imports it, so it never
imports litellm, nor anything of gpo_engine that does (task, llm, optimizer).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from gpo_server import runtime
from gpo_server.runtime import DaemonError


class DaemonClient:
    """Async client of one daemon; use as `async with DaemonClient(address) as c:`."""

    def __init__(self, address: str, token: str | None = None, timeout: float = 300.0) -> None:
        self.address = address
        self._token = token
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_status(cls, status: runtime.Status, directory: Path) -> DaemonClient:
        token = runtime.read_token(directory) if status.is_tcp else None
        return cls(status.address, token)

    async def __aenter__(self) -> DaemonClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- routes ---------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._json("GET", "/v1/health")

    async def register_roots(self, roots: Sequence[str | Path]) -> list[str]:
        """Workspace folders whose files this client may ask about."""
        out = await self._json("POST", "/v1/roots", {"roots": [str(r) for r in roots]})
        return list(out["roots"])

    async def create_job(self, path: str | Path, overrides: dict[str, Any] | None = None,
                         restart: bool = False) -> tuple[dict[str, Any], bool]:
        """Start optimizing `path`; returns (job, created). An active job of the same
        file is returned instead of starting a second one (created=False)."""
        out = await self._json("POST", "/v1/jobs", {"path": str(Path(path).absolute()),
                                                     "overrides": overrides or {},
                                                     "restart": restart})
        return out["job"], bool(out["created"])

    async def job(self, job_id: str) -> dict[str, Any]:
        return (await self._json("GET", f"/v1/jobs/{job_id}"))["job"]

    async def jobs(self) -> list[dict[str, Any]]:
        return list((await self.job_list())["jobs"])

    async def job_list(self) -> dict[str, Any]:
        """{"jobs": this daemon's jobs, "elsewhere": runs other processes hold (a shared
        cache's run locks; [] from an older daemon)}."""
        listed = await self._json("GET", "/v1/jobs")
        return {"jobs": list(listed["jobs"]), "elsewhere": list(listed.get("elsewhere", []))}

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return (await self._json("POST", f"/v1/jobs/{job_id}/cancel"))["job"]

    async def prompt_state(self, path: str | Path, text: str | None = None, *,
                           measure: bool = False,
                           overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The file's prompt state, for `text` (an editor's buffer) when given: its scores
        and the suggestion picked against it. `measure`: score the text on dev and test
        first, unless the daemon holds its scores already (model calls)."""
        where = str(Path(path).absolute())
        if text is None and not measure and not overrides:
            return await self._json("GET", "/v1/prompts", params={"path": where})
        body: dict[str, Any] = {"path": where, "measure": measure, "overrides": overrides or {}}
        if text is not None:
            body["text"] = text
        return await self._json("POST", "/v1/prompts", body)

    async def evaluate(self, path: str | Path, text: str | None = None,
                       splits: Sequence[str] = ("dev", "test"),
                       overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"path": str(Path(path).absolute()), "splits": list(splits),
                                "overrides": overrides or {}}
        if text is not None:
            body["text"] = text
        return await self._json("POST", "/v1/evaluate", body)

    async def shutdown(self) -> None:
        await self._json("POST", "/v1/shutdown")

    async def events(self, job_id: str, since: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The job's events (earlier ones first), until its `end` event.

        A stream that stops before `end` means the daemon went away (stopped,
        killed, restarted): DaemonError with status 0, code "disconnected"."""
        session = self._open()
        headers = {"Last-Event-ID": str(since)} if since else {}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        ended = False
        try:
            async with session.get(self._url(f"/v1/jobs/{job_id}/events"), headers=headers,
                                   timeout=timeout) as response:
                if response.status >= 400:
                    raise await _error_of(response)
                async for event in _parse_sse(response.content):
                    ended = event.get("kind") == "end"
                    yield event
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise lost(self.address, exc) from exc
        if not ended:
            raise lost(self.address, None)

    async def wait(self, job_id: str) -> dict[str, Any]:
        """Follow the job's events until it ends; returns the job."""
        async for _ in self.events(job_id):
            pass
        return await self.job(job_id)

    # -- plumbing ------------------------------------------------------------

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector: aiohttp.BaseConnector | None = None
            if self.address.startswith("unix:"):
                connector = aiohttp.UnixConnector(path=self.address[len("unix:"):])
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            self._session = aiohttp.ClientSession(
                connector=connector, headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    def _url(self, route: str) -> str:
        if self.address.startswith("unix:"):
            return f"http://gpo-daemon{route}"  # the host is ignored over a Unix socket
        return f"{self.address}{route}"

    async def call(self, method: str, route: str, *, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Send `raw` bytes to any route (for API explorers and tests of bad input)."""
        return await self._json(method, route, raw=raw, headers=headers)

    async def _json(self, method: str, route: str, body: Any = None,
                    params: dict[str, str] | None = None, raw: bytes | None = None,
                    headers: dict[str, str] | None = None) -> dict[str, Any]:
        session = self._open()
        payload: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        try:
            async with session.request(method, self._url(route), params=params,
                                       headers=headers, **payload) as response:
                if response.status >= 400:
                    raise await _error_of(response)
                data: dict[str, Any] = await response.json()
                return data
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise unreachable(self.address, exc) from exc
        except asyncio.TimeoutError as exc:
            raise DaemonError(0, "timeout", f"the gpo daemon did not answer within "
                              f"{self._timeout:.0f} s") from exc


def unreachable(address: str, exc: BaseException) -> DaemonError:
    """A request that got no usable answer, in words (the socket's error stays in `details`:
    the editor shows the message, and "[Errno 111] Connect call failed" helps nobody there)."""
    if isinstance(exc, aiohttp.ClientConnectorError | FileNotFoundError | ConnectionRefusedError):
        message = f"the gpo daemon is not running (nothing answers at {address})"
    elif isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError):
        message = "the gpo daemon sent an answer that is not JSON"
    else:
        message = "the gpo daemon went away before it answered"
    return DaemonError(0, "unreachable", message, {"cause": repr(exc)})


def lost(address: str, exc: BaseException | None) -> DaemonError:
    """A job's event stream that broke or ended before the job did: the daemon went away."""
    if isinstance(exc, aiohttp.ClientConnectorError | FileNotFoundError | ConnectionRefusedError):
        return unreachable(address, exc)
    return DaemonError(0, "disconnected", "the gpo daemon stopped while following the job",
                       {"cause": repr(exc)} if exc is not None else {})


async def _error_of(response: aiohttp.ClientResponse) -> DaemonError:
    try:
        body = await response.json(content_type=None)
        err = body["error"]
        extra = {k: v for k, v in err.items() if k not in ("code", "message")}
        return DaemonError(response.status, str(err["code"]), str(err["message"]), extra)
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        text = (await response.text())[:200]
        return DaemonError(response.status, "http_error", text or response.reason or "error")


async def _parse_sse(stream: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """Events of a text/event-stream; only `data` matters (each is one JSON object)."""
    data: list[str] = []
    async for raw in stream:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield json.loads("\n".join(data))
                data = []
            continue
        if line.startswith(":"):
            continue  # keep-alive comment
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


async def connect(directory: Path | None = None, *, start: bool = True,
                  daemon_args: Sequence[str] = (), timeout: float = 30.0) -> DaemonClient:
    """A client of the user's daemon, starting it (with `daemon_args`) when none serves."""
    root = runtime.ensure_runtime_dir(directory)
    if start:
        # Spawning and waiting for the socket block; keep the caller's loop free meanwhile.
        status = await asyncio.to_thread(runtime.ensure_daemon, root, daemon_args, timeout)
    else:
        found = runtime.live_status(root)
        if found is None:
            raise DaemonError(0, "not_running", f"no gpo daemon is running in {root}")
        status = found
    return DaemonClient.for_status(status, root)


def event_object(data: dict[str, Any]) -> Any:
    """The engine's typed event for a stream event (None for daemon-only kinds like `state`),
    so a consumer written for in-process events (the CLI's progress bar) works unchanged."""
    from gpo_engine.events import Event  # light: no model layer

    return Event.from_dict(data)
