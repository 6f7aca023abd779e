"""A scripted LSP server over stdio for the Neovim plugin test (no pygls, no daemon).

It checks what the plugin must do and reports through diagnostics the test
can read: the initializationOptions, the answer to workspace/configuration,
and the commands it got. It offers one "Apply GPO suggestion" action whose
edit is filled in codeAction/resolve, as the real server does.
"""

from __future__ import annotations

import json
import sys
from typing import Any

_out = sys.stdout.buffer
_in = sys.stdin.buffer
state: dict[str, Any] = {"init": None, "config": None, "commands": [], "uri": None}


def send(message: dict[str, Any]) -> None:
    body = json.dumps({"jsonrpc": "2.0", **message}).encode()
    _out.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    _out.flush()


def read() -> dict[str, Any] | None:
    length = 0
    while True:
        line = _in.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return json.loads(_in.read(length))


def report(uri: str) -> None:
    message = json.dumps(
        {"init": state["init"], "config": state["config"], "commands": state["commands"]},
        sort_keys=True,
    )
    diagnostic = {
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 3}},
        "message": message,
        "severity": 3,
        "source": "gpo",
    }
    send(
        {
            "method": "textDocument/publishDiagnostics",
            "params": {"uri": uri, "diagnostics": [diagnostic]},
        }
    )


def main() -> None:
    while True:
        message = read()
        if message is None:
            return
        method = message.get("method")
        params = message.get("params") or {}
        if method == "initialize":
            state["init"] = params.get("initializationOptions")
            capabilities = {
                "textDocumentSync": 1,
                "codeActionProvider": {"resolveProvider": True},
                "executeCommandProvider": {"commands": ["gpo.optimize", "gpo.stop"]},
            }
            send({"id": message["id"], "result": {"capabilities": capabilities}})
        elif method == "initialized":
            items = [{"section": "gpo"}, {"section": "gpo.models.task"}, {"section": "other"}]
            send({"id": "cfg", "method": "workspace/configuration", "params": {"items": items}})
        elif method is None and message.get("id") == "cfg":
            state["config"] = message.get("result")
            if state["uri"]:
                report(state["uri"])
        elif method == "textDocument/didOpen":
            # Reports go to the first document opened, where the test looks.
            state["uri"] = state["uri"] or params["textDocument"]["uri"]
            report(params["textDocument"]["uri"])
        elif method == "textDocument/codeAction":
            uri = params["textDocument"]["uri"]
            action = {
                "title": "Apply GPO suggestion (+5 pts, 1/10 words)",
                "kind": "quickfix",
                "data": {"action": "gpo.apply", "uri": uri},
            }
            send({"id": message["id"], "result": [action]})
        elif method == "codeAction/resolve":
            uri = params["data"]["uri"]
            # Line 3 is the body "Say 😀 hi to {{name}}."; replace "hi" (UTF-16 units 7..9).
            edit = {
                "range": {"start": {"line": 3, "character": 7}, "end": {"line": 3, "character": 9}},
                "newText": "hello",
            }
            send({"id": message["id"], "result": {**params, "edit": {"changes": {uri: [edit]}}}})
        elif method == "workspace/executeCommand":
            state["commands"].append([params["command"], *params.get("arguments", [])])
            send({"id": message["id"], "result": None})
            report(params["arguments"][0])
        elif method == "workspace/didChangeWatchedFiles":
            state["commands"].append(["watched", *[c["uri"] for c in params["changes"]]])
            if state["uri"]:
                report(state["uri"])
        elif method == "shutdown":
            send({"id": message["id"], "result": None})
        elif method == "exit":
            return
        elif "id" in message and method is not None:
            send({"id": message["id"], "result": None})


if __name__ == "__main__":
    main()
