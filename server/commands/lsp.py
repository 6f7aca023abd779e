"""`gpo lsp`: the language server on stdio, for editors (editors/vscode, editors/nvim)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpo_server.commands.common import EXIT_OK

if TYPE_CHECKING:
    from rich.console import Console


def register(sub: Any) -> None:
    lsp = sub.add_parser("lsp", help="the language server for .prompt files (stdio)")
    lsp.add_argument("--runtime-dir", type=Path,
                     help="the daemon's runtime folder (default: $GPO_RUNTIME_DIR, "
                     "$XDG_RUNTIME_DIR/gpo or /tmp/gpo-UID)")
    lsp.add_argument("--api-base", help="OpenAI-compatible endpoint for every model, given to "
                     "a daemon this server starts (default: $GPO_API_BASE)")
    lsp.add_argument("--cache-dir", type=Path,
                     help="responses and trajectories of a daemon this server starts")
    lsp.add_argument("--stdio", action="store_true",
                     help="accepted for editors that pass it; stdio is the only transport")
    lsp.add_argument("--log-level", default="WARNING",
                     choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                     help="logging on stderr (the editor's server log)")
    lsp.set_defaults(run=_run, console=False)


def _run(args: argparse.Namespace, err: Console | None) -> int:
    # Imported here: `gpo --help` and the other commands need none of pygls.
    from gpo_server.lsp import main
    from gpo_server.runtime import start_args

    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main(args.runtime_dir, start_args(args))
    return EXIT_OK
