"""What is wrong with an open `.prompt` document and its example set, found locally.

The language server checks the buffer itself (the daemon only sees files on
disk): the prompt is parsed with gpo_engine.promptfile and its example set
with gpo_engine.examples, neither of which imports the model layer, and the
two are checked against each other (lsp_lint). Every failure becomes located
Problems; nothing here raises, so a broken, binary or huge document gives
diagnostics instead of a crashed server. The parsers pull in dotpromptz,
so they are imported on first use, after `initialize` has been answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpo_engine.errors import GpoError, Problem, SourceError

if TYPE_CHECKING:
    from gpo_engine.examples import Example
    from gpo_engine.promptfile import PromptFile

# Past this many characters a document is not parsed: the template parser takes
# seconds per megabyte, and no model takes a prompt this long with its examples.
MAX_PROMPT_CHARS = 512 * 1024
MAX_EXAMPLE_READ = 16 * 1024 * 1024  # bytes of an example file read to place squiggles


@dataclass(frozen=True)
class Analysis:
    prompt: PromptFile | None  # None when the prompt itself has problems
    problems: tuple[Problem, ...]  # in the prompt and in its example file
    examples_path: Path | None  # the example file it uses (to watch), when known
    sample: Example | None = None  # the example set's first row (hover renders with it)

    @property
    def errors(self) -> tuple[Problem, ...]:
        """The problems that stop a run (warnings, such as an unread column, do not)."""
        return tuple(p for p in self.problems if p.severity != "warning")


def analyze(source: str, path: Path, *, with_examples: bool = True) -> Analysis:
    """Problems of the document `source` stored at `path`, and its example file's."""
    if len(source) > MAX_PROMPT_CHARS:
        message = (f"the document is too large for gpo ({len(source):,} characters; "
                   f"limit {MAX_PROMPT_CHARS:,})")
        return Analysis(None, (Problem(path, 1, 1, message),), None)
    try:
        from gpo_engine.promptfile import parse_prompt  # dotpromptz: loaded on first use

        prompt = parse_prompt(source, path)
    except SourceError as exc:
        return Analysis(None, tuple(exc.problems), _guess_examples(path) if with_examples
                        else None)
    except Exception as exc:  # a parser bug on odd input must not take the server down
        return Analysis(None, (Problem(path, 1, 1, f"gpo could not parse this file: {exc}"),),
                        None)
    if not with_examples:
        return Analysis(prompt, (), None)
    from gpo_engine.examples import find_examples_path

    try:
        examples_path = find_examples_path(path, prompt.settings.examples)
    except SourceError as exc:
        return Analysis(prompt, tuple(exc.problems), None)
    problems, sample = _example_problems(prompt, examples_path)
    return Analysis(prompt, tuple(problems), examples_path, sample)


def _example_problems(prompt: PromptFile, examples_path: Path
                      ) -> tuple[list[Problem], Example | None]:
    """The example set's problems, checked against the prompt, and its first row."""
    from gpo_server.lsp_lint import check_examples, unread_column_problems

    try:
        check = check_examples(prompt, examples_path)
    except (GpoError, OSError, ValueError) as exc:
        return [Problem(examples_path, 1, 1, f"cannot read the example set: {exc}")], None
    problems = list(check.problems)
    examples = check.examples
    if examples is None:
        return problems, None
    if not examples.dev:
        problems.append(Problem(examples_path, 1, 1, "the dev split is empty: add rows "
                                "or pin some with split: dev"))
    problems.extend(unread_column_problems(prompt, examples, read_lossy(examples_path) or ""))
    return problems, examples.examples[0] if examples.examples else None


def _guess_examples(path: Path) -> Path | None:
    """The default sibling example file of a prompt that does not parse (to keep watching)."""
    from gpo_engine.examples import SUFFIXES

    for suffix in SUFFIXES:
        candidate = path.parent / f"{path.stem}.examples{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_lossy(path: Path) -> str | None:
    """A file's text as the engine counts its columns (bad bytes replaced), or None."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_EXAMPLE_READ)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace")
