"""An OpenAI-compatible model server with scriptable faults, for tests and benchmarks.

Tests drive the real litellm client against it (model "openai/<anything>",
api_base=server.api_base, api_key="test"), so retries, timeouts and header
handling are exercised end to end instead of through mocks.

    async with ModelServer(answer=lambda messages: "positive") as server:
        server.push(Fault(status=429, retry_after="1"), Fault(status=500))
        ...  # the first request gets a 429, the second a 500, the rest answers

Standalone (for the benchmark):
    python tests/model_server.py --port 8765 --latency 0.2 --max-concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Fault:
    """What one request gets instead of (or before) a normal answer."""

    delay: float = 0.0  # seconds to wait before answering
    status: int | None = None  # answer with this HTTP error status
    retry_after: str | None = None  # Retry-After header value sent with `status`
    empty: bool = False  # 200 with content "" (a valid, empty answer)
    no_choices: bool = False  # 200 with an empty `choices` list
    garbage: bool = False  # 200 with a body that is not JSON
    hang: bool = False  # never answer (until the server closes); the client must time out
    text: str | None = None  # answer with this text instead of the answer function's


FaultSource = Callable[[int, dict[str, Any]], "Fault | None"]


def echo_answer(messages: Messages) -> str:
    """The default answer: deterministic, and tells tests which prompt was received."""
    last = messages[-1]["content"] if messages else ""
    return f"echo: {last}"


def fake_embedding(text: str, dims: int = 8) -> list[float]:
    """A deterministic unit-ish vector derived from the text's hash."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [(digest[i] - 127.5) / 127.5 for i in range(dims)]


class ModelServer:
    """aiohttp server on 127.0.0.1 speaking enough of the OpenAI API for litellm.

    Faults come from a queue (`push`, consumed one per chat request, in order)
    and, when the queue is empty, from `faults(request_index, body)`.
    Above `max_concurrency` simultaneous requests, extra ones get a 429.
    """

    def __init__(
        self,
        *,
        answer: Callable[[Messages], str] = echo_answer,
        faults: FaultSource | Iterable[Fault] | None = None,
        latency: float = 0.0,
        max_concurrency: int | None = None,
        overload_retry_after: str | None = "0",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.answer = answer
        self.latency = latency
        self.max_concurrency = max_concurrency
        self.overload_retry_after = overload_retry_after
        self.host, self.port = host, port  # port 0: a free one, known once started
        self._queue: deque[Fault] = deque()
        self._fault_fn: FaultSource | None = None
        if callable(faults):
            self._fault_fn = faults
        elif faults is not None:
            self._queue.extend(faults)
        # Counters tests assert on.
        self.requests = 0  # chat completion requests received
        self.embedding_requests = 0
        self.rejected = 0  # 429s sent because of max_concurrency
        self.in_flight = 0
        self.max_in_flight = 0  # peak simultaneous requests received (chat + embeddings)
        self.bodies: list[dict[str, Any]] = []  # every JSON request body, in arrival order
        self.arrivals: list[float] = []  # time.monotonic() of each chat request
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # -- scripting ---------------------------------------------------------

    def push(self, *faults: Fault) -> None:
        """Queue faults for the next requests, one each, in order."""
        self._queue.extend(faults)

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle ---------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        return app

    async def start(self) -> ModelServer:
        self._closing = asyncio.Event()
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, shutdown_timeout=0.25)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        # Release hanging handlers first so shutdown does not wait for them.
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ModelServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- handlers ----------------------------------------------------------

    def _next_fault(self, index: int, body: dict[str, Any]) -> Fault | None:
        if self._queue:
            return self._queue.popleft()
        if self._fault_fn is not None:
            return self._fault_fn(index, body)
        return None

    def _enter(self) -> bool:
        """Count a request in; False if it is over the concurrency cap."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.max_concurrency is not None and self.in_flight > self.max_concurrency:
            self.in_flight -= 1
            self.rejected += 1
            return False
        return True

    def _overloaded(self) -> web.Response:
        headers = {}
        if self.overload_retry_after is not None:
            headers["Retry-After"] = self.overload_retry_after
        return _error(429, "too many concurrent requests", headers)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "request body is not JSON", {})
        index = self.requests
        self.requests += 1
        self.bodies.append(body)
        self.arrivals.append(time.monotonic())
        fault = self._next_fault(index, body)
        if not self._enter():
            return self._overloaded()
        try:
            await self._sleep(self.latency + (fault.delay if fault else 0.0))
            if fault is not None and fault.hang:
                await self._closing.wait()
                return _error(503, "server closing", {})
            if fault is not None and fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return _error(fault.status, f"injected status {fault.status}", headers)
            if fault is not None and fault.garbage:
                return web.Response(text="<html>502 oops", content_type="application/json")
            messages: Messages = body.get("messages", [])
            if fault is not None and fault.text is not None:
                text = fault.text
            elif fault is not None and fault.empty:
                text = ""
            else:
                text = self.answer(messages)
            choices = [] if fault is not None and fault.no_choices else [_choice(text)]
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
            completion_tokens = len(text.split())
            return web.json_response(
                {
                    "id": f"chatcmpl-{index}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            )
        finally:
            self.in_flight -= 1

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.embedding_requests += 1
        self.bodies.append(body)
        if not self._enter():
            return self._overloaded()
        try:
            await self._sleep(self.latency)
            inputs = body.get("input", [])
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            tokens = sum(len(t.split()) for t in texts)
            return web.json_response(
                {
                    "object": "list",
                    "model": body.get("model", "fake-embed"),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": fake_embedding(t)}
                        for i, t in enumerate(texts)
                    ],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )
        finally:
            self.in_flight -= 1

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


def _choice(text: str) -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
    }


def _error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "injected", "code": status}},
        status=status,
        headers=headers,
    )


async def _serve(args: argparse.Namespace) -> None:
    server = ModelServer(
        latency=args.latency, max_concurrency=args.max_concurrency, host=args.host, port=args.port
    )
    async with server:
        print(
            f"model server on {server.api_base} (model 'openai/fake', api_key 'test')", flush=True
        )
        # Stop cleanly on SIGTERM/SIGINT (a benchmark terminates it) and print the counters.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            print(
                f"requests={server.requests} rejected={server.rejected} "
                f"max_in_flight={server.max_in_flight}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible fake model server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="answer 429 above this many requests"
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
