"""`gpo render`: the messages, model and parameters the task call sends for one row."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from gpo_server.commands.common import EXIT_OK, EXIT_USAGE, CommandError


def register(sub: Any) -> None:
    parser = sub.add_parser("render", help="show what the task call sends for one example row")
    parser.add_argument("path", type=Path, help="the .prompt file")
    row = parser.add_mutually_exclusive_group()
    row.add_argument("--row", type=int, default=1, metavar="N",
                     help="the N-th row of the example set (1-based; default 1)")
    row.add_argument("--input", metavar="JSON",
                     help="a row given here instead: its input variables as a JSON object, "
                          "with an optional 'messages' history")
    parser.add_argument("--model", help="task model (any litellm model string)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, err: Console) -> int:
    from gpo_engine.errors import ConfigError
    from gpo_engine.rendering import RowData
    from gpo_engine.task import load_task, render_request, row_data

    task = load_task(args.path, **({"model": args.model} if args.model else {}))
    rows = task.examples.examples
    if args.input is not None:
        try:
            given = json.loads(args.input)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--input is not valid JSON: {exc.msg} (column {exc.colno})") from exc
        if not isinstance(given, dict):
            raise ConfigError("--input must be a JSON object of input variables")
        history = given.pop("messages", None) or []
        if not isinstance(history, list):
            raise ConfigError("--input: 'messages' must be a list of messages")
        row = RowData(input=given, messages=[_message(m) for m in history])
    else:
        if not 1 <= args.row <= len(rows):
            raise CommandError(f"--row {args.row}: {task.examples.path} has rows 1 to "
                               f"{len(rows)}", EXIT_USAGE)
        row = row_data(sorted(rows, key=lambda e: e.line)[args.row - 1])
    request = render_request(task, task.prompt.body, row)
    if args.json:
        print(json.dumps(request, indent=2, ensure_ascii=False))
        return EXIT_OK
    _show(request, Console())
    return EXIT_OK


def _message(message: Any) -> dict[str, Any]:
    """A history message as given; a plain-text content becomes one text part."""
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return {**message, "content": [{"text": message["content"]}]}
    return message  # type: ignore[no-any-return]


def _show(request: dict[str, Any], out: Console) -> None:
    from rich.text import Text

    out.print(Text.assemble(("model ", "bold"), request["model"]))
    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in request["params"].items())
    out.print(Text.assemble(("params ", "bold"), params))
    for note in request["notes"]:
        out.print(Text.assemble(("note ", "yellow"), note))
    for message in request["messages"]:
        out.print(Text(f"--- {message['role']}", style="bold cyan"))
        content = message["content"]
        if isinstance(content, str):
            out.print(Text(content))
            continue
        for part in content:
            if part.get("type") == "text":
                out.print(Text(part["text"]))
            else:
                out.print(Text(f"[{part.get('type')}: {_media_label(part)}]", style="magenta"))


def _media_label(part: dict[str, Any]) -> str:
    body = next((v for k, v in part.items() if k != "type"), {})
    url = str(body.get("url") or body.get("file_data") or body.get("file_id") or body.get("data")
              or "")
    return url if len(url) <= 80 else f"{url[:60]}... ({len(url)} characters)"
