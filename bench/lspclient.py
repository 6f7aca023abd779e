"""A minimal LSP client over stdio for the benchmarks: JSON-RPC with Content-Length framing.

It answers the server's own requests the way a plain editor does
(workspace/configuration with nulls, progress creation with null), keeps the
notifications it receives, and times each request from the moment it is
written to the moment its response is read.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO


class LspError(Exception):
    pass


class LspClient:
    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(list(command), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, cwd=cwd)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self.notifications: list[tuple[float, dict[str, Any]]] = []
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # -- sending -----------------------------------------------------------

    def _write(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self._write({"method": method, "params": params})

    def request(self, method: str, params: Any, timeout: float = 30.0) -> tuple[Any, float]:
        """(result, seconds) of one request; LspError on an error answer or a timeout."""
        number = next(self._ids)
        done = threading.Event()
        box: list[Any] = []
        self._waiting[number] = (done, box)
        started = time.perf_counter()
        self._write({"id": number, "method": method, "params": params})
        if not done.wait(timeout):
            raise LspError(f"{method}: no answer within {timeout} s")
        elapsed = time.perf_counter() - started
        message = box[0]
        if "error" in message:
            raise LspError(f"{method}: {message['error']}")
        return message.get("result"), elapsed

    # -- receiving ---------------------------------------------------------

    def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        stream: BinaryIO = self.proc.stdout  # type: ignore[assignment]
        while True:
            message = _read_message(stream)
            if message is None:
                for done, box in self._waiting.values():
                    box.append({"error": "server exited"})
                    done.set()
                return
            if "id" in message and "method" in message:
                self._answer(message)
            elif "id" in message:
                waiter = self._waiting.pop(message["id"], None)
                if waiter is not None:
                    waiter[1].append(message)
                    waiter[0].set()
            else:
                self.notifications.append((time.perf_counter(), message))

    def _answer(self, message: dict[str, Any]) -> None:
        result: Any = None
        if message["method"] == "workspace/configuration":
            result = [None for _ in message.get("params", {}).get("items", [])]
        self._write({"id": message["id"], "result": result})

    # -- lifecycle ---------------------------------------------------------

    def initialize(self, root: Path) -> float:
        """Send initialize + initialized; seconds from spawn to the initialize answer."""
        uri = root.resolve().as_uri()
        self.request("initialize", {
            "processId": None, "rootUri": uri,
            "workspaceFolders": [{"uri": uri, "name": root.name}],
            "capabilities": {"window": {"workDoneProgress": True},
                             "workspace": {"configuration": True}},
        })
        elapsed = time.perf_counter() - self.started
        self.notify("initialized", {})
        return elapsed

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.request("shutdown", None, timeout=10)
                self.notify("exit", None)
                self.proc.wait(10)
        except (LspError, OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _read_message(stream: BinaryIO) -> dict[str, Any] | None:
    length = None
    while True:
        line = stream.readline()
        if not line:
            return None
        line = line.strip()
        if not line:
            break
        name, _, value = line.decode("ascii", "replace").partition(":")
        if name.lower() == "content-length":
            length = int(value.strip())
    if length is None:
        return None
    body = stream.read(length)
    if len(body) < length:
        return None
    return json.loads(body)
