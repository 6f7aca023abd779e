"""Arguments and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from gpo_engine.errors import GpoError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# One variable for every command and the daemon, so they share one endpoint (and cache).
API_BASE_ENV = "GPO_API_BASE"


class CommandError(GpoError):
    """A command cannot do what was asked. Raised, not printed, so gpo_server.cli
    reports every failure one way: `error MESSAGE` on stderr, and with --json also
    `{"error": MESSAGE, "problems": []}` on stdout, exiting with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def model_arguments() -> argparse.ArgumentParser:
    """The options every command that calls a model takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("path", type=Path, help="the .prompt file")
    common.add_argument("--model", help="task model (any litellm model string)")
    common.add_argument("--api-base", default=os.environ.get(API_BASE_ENV) or None,
                        help=f"OpenAI-compatible endpoint for the models "
                        f"(default: ${API_BASE_ENV})")
    common.add_argument("--no-cache", action="store_true",
                        help="neither read nor write the response cache")
    common.add_argument("--cache-dir", type=Path, help="default: $GPO_CACHE_DIR or ~/.cache/gpo")
    add_cache_url(common)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    return common


def add_cache_url(parser: argparse.ArgumentParser) -> None:
    """`--cache-url`, which server/cli.py turns into $GPO_CACHE_URL before the command runs."""
    parser.add_argument("--cache-url", help="a team's shared cache on Redis: "
                        "redis://[:password@]host:port/db, rediss:// for TLS "
                        "(default: $GPO_CACHE_URL)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given on the command line, named as in the frontmatter."""
    keys = {"model": "model", "steps": "steps", "candidates": "candidates",
            "optimizer_model": "optimizer", "max_cost": "max_cost"}
    return {dest: getattr(args, src) for src, dest in keys.items()
            if getattr(args, src, None) is not None}


def warn_unsent_config(task: Any, err: Any) -> None:
    """One warning per frontmatter `config` key the task call does not send."""
    from rich.text import Text

    for note in task.sendable.notes:
        err.print(Text.assemble(("warning", "yellow"), f" {task.path}: {note}"), highlight=False)
