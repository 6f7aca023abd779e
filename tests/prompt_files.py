"""A prompt file and its example set, written the one way every test sets up a task."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def write_prompt(folder: Path, name: str, text: str,
                 rows: Iterable[Mapping[str, Any]] | bytes | None) -> Path:
    """`folder/<name>.prompt` holding `text`, and beside it `<name>.examples.jsonl`: one
    JSON object a line from `rows`, or `rows` as given when they are bytes (a broken file),
    or no example file for None. Makes the folder; returns the prompt's path."""
    folder.mkdir(parents=True, exist_ok=True)
    prompt = folder / f"{name}.prompt"
    prompt.write_text(text, encoding="utf-8")
    examples = folder / f"{name}.examples.jsonl"
    if isinstance(rows, bytes):
        examples.write_bytes(rows)
    elif rows is not None:
        examples.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return prompt
