"""The `gpo` command.

Each subcommand lives in its own module under `gpo_server.commands` and
registers itself with `register(subparsers)`. Results go to stdout (a table,
or one JSON object with --json); progress and errors go to stderr, so
`gpo optimize --json f.prompt | jq` works.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpo_engine import __version__
from gpo_engine.errors import GpoError, Problem, SourceError
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
        _shared_cache(args)
        code: int = args.run(args, err)
        return code
    except BrokenPipeError:
        # The reader went away (`gpo check --json | head`): nothing more can be said on
        # stdout, and Python's flush at exit would print a traceback; point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL
    except SourceError as exc:
        for problem in exc.problems:
            _say(err or _stderr(), problem.severity, str(problem))
        return _json_error(args, _summary(exc.problems), exc.problems, EXIT_FAIL)
    except GpoError as exc:
        _say(err or _stderr(), "error", str(exc))
        return _json_error(args, str(exc), [], getattr(exc, "exit_code", EXIT_FAIL))
    except OSError as exc:
        # The environment, not a bug (a folder we may not read, a vanished file):
        # one line naming the file, never a traceback.
        from gpo_engine.atomic import os_error_reason

        where = f"{exc.filename}: " if exc.filename else ""
        _say(err or _stderr(), "error", where + os_error_reason(exc))
        return _json_error(args, where + os_error_reason(exc), [], EXIT_FAIL)
    except KeyboardInterrupt:
        message = "interrupted: finished steps are saved; run the same command to resume"
        (err or _stderr()).print(message)
        return _json_error(args, message, [], EXIT_INTERRUPTED)


def _json_error(args: argparse.Namespace, message: str, problems: Sequence[Problem],
                code: int) -> int:
    """With --json, a failure is a JSON object on stdout too, so a caller piping the
    output into a JSON parser reads why instead of choking on nothing."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "problems": [
            {"path": str(p.path), "line": p.line, "column": p.column, "message": p.message,
             "severity": p.severity} for p in problems]}, indent=2))
    return code


def _summary(problems: Sequence[Problem]) -> str:
    if len(problems) == 1:
        return str(problems[0])
    files = ", ".join(dict.fromkeys(str(p.path) for p in problems))
    return f"{len(problems)} problems in {files}"


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _say(console: Console, label: str, message: str) -> None:
    from rich.text import Text

    # Text, not markup: messages quote user input, and "[local]" is not a style.
    console.print(Text.assemble((label, "red"), " ", message), highlight=False, soft_wrap=True)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpo", description="GPO prompt optimization for "
                                     ".prompt files")
    parser.add_argument("--version", action="version", version=f"gpo {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for name in [only] if only else MODULES:
        load(name).register(sub)
    return parser


def _shared_cache(args: argparse.Namespace) -> None:
    """`--cache-url` becomes $GPO_CACHE_URL (for this process and a daemon it starts), and a
    bad URL or TTL is named before any work. Without either, redis is never imported."""
    url = getattr(args, "cache_url", None)
    if not (url or os.environ.get("GPO_CACHE_URL") or os.environ.get("GPO_CACHE_TTL")):
        return
    from gpo_engine.shared_store import check_environment, use_cache_url

    if url:
        use_cache_url(url)
    check_environment()


if __name__ == "__main__":
    sys.exit(main())
