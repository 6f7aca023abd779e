"""One module per `gpo` subcommand; each has `register(subparsers)`.

Modules are imported on demand: `gpo lsp` starts an editor's language server
and must answer `initialize` fast, so it should not pay for importing every
other command (the check command alone pulls in the evaluation stack).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Command name -> module under gpo_server.commands, in the order `gpo --help` lists them.
MODULES = {
    "eval": "evaluate",
    "render": "render",
    "optimize": "optimize",
    "check": "check",
    "report": "report",
    "trajectory": "trajectory",
    "daemon": "daemon",
    "cache": "cache",
    "lsp": "lsp",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(f"gpo_server.commands.{MODULES[name]}")
