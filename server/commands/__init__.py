"""One module per `gpo` subcommand; each has `register(subparsers)`."""

from __future__ import annotations

from gpo_server.commands import evaluate, optimize

COMMANDS = (evaluate, optimize)
