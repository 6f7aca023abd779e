"""One module per `gpo` subcommand; each has `register(subparsers)`."""

from __future__ import annotations

from gpo_server.commands import cache, check, daemon, evaluate, lsp, optimize, report, trajectory

COMMANDS = (evaluate, optimize, check, report, trajectory, daemon, cache, lsp)
