"""The `gpo` command.

Each subcommand lives in its own module under `gpo_server.commands` and
registers itself with `register(subparsers)`. Results go to stdout (a table,
or one JSON object with --json); progress and errors go to stderr, so
`gpo optimize --json f.prompt | jq` works.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpo_engine import __version__
from gpo_engine.errors import GpoError, SourceError
from gpo_server.commands import MODULES, load
from gpo_server.commands.common import EXIT_FAIL, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from rich.console import Console


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the named command's module is imported (see gpo_server.commands).
    only = argv[0] if argv and argv[0] in MODULES else None
    args = build_parser(only).parse_args(argv)
    # rich costs ~80 ms; a command that prints nothing of its own (`gpo lsp`, whose
    # editor waits for `initialize`) sets console=False and gets none.
    err = _stderr() if getattr(args, "console", True) else None
    try:
        code: int = args.run(args, err)
        return code
    except SourceError as exc:
        for problem in exc.problems:
            _say(err or _stderr(), problem.severity, str(problem))
        return EXIT_FAIL
    except GpoError as exc:
        _say(err or _stderr(), "error", str(exc))
        return EXIT_FAIL
    except KeyboardInterrupt:
        (err or _stderr()).print("interrupted: finished steps are saved; "
                                 "run the same command to resume")
        return EXIT_INTERRUPTED


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _say(console: Console, label: str, message: str) -> None:
    from rich.text import Text

    # Text, not markup: messages quote user input, and "[local]" is not a style.
    console.print(Text.assemble((label, "red"), " ", message), highlight=False)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpo", description="GPO prompt optimization for "
                                     ".prompt files")
    parser.add_argument("--version", action="version", version=f"gpo {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for name in [only] if only else MODULES:
        load(name).register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
