"""What is wrong with an open `.prompt` document and its example set, found locally.

The language server checks the buffer itself (the daemon only sees files on
disk): the prompt is parsed with gpo_engine.promptfile and its example set
with gpo_engine.examples, neither of which imports the model layer. Every
failure becomes located Problems; nothing here raises, so a broken, binary
or huge document gives diagnostics instead of a crashed server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpo_engine.errors import GpoError, Problem, SourceError
from gpo_engine.examples import SUFFIXES, find_examples_path, load_examples

if TYPE_CHECKING:
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
    try:
        examples_path = find_examples_path(path, prompt.settings.examples)
    except SourceError as exc:
        return Analysis(prompt, tuple(exc.problems), None)
    problems: list[Problem] = []
    try:
        examples = load_examples(examples_path, prompt.variables, prompt.settings.split,
                                 input_schema=prompt.input_schema,
                                 defaults=prompt.input_defaults)
        if not examples.dev:
            problems.append(Problem(examples_path, 1, 1, "the dev split is empty: add rows "
                                    "or pin some with split: dev"))
    except SourceError as exc:
        problems.extend(exc.problems)
    except (GpoError, OSError, ValueError) as exc:
        problems.append(Problem(examples_path, 1, 1, f"cannot read the example set: {exc}"))
    return Analysis(prompt, tuple(problems), examples_path)


def _guess_examples(path: Path) -> Path | None:
    """The default sibling example file of a prompt that does not parse (to keep watching)."""
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
