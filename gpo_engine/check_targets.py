"""Which prompts a list of changed files concerns (`gpo check PATHS`).

A `.prompt` is itself; `x.prompt.lock` is `x.prompt`; an example set is every
prompt that reads it. No paths: every `.prompt` under the root, hidden
folders and virtualenvs skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpo_engine.errors import GpoError
from gpo_engine.examples import SUFFIXES
from gpo_engine.lockfile import LOCK_SUFFIX, prompt_of_lock

# Folders never searched for prompts when no path is given or an example set's owner is sought.
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})
_PARTIAL_TAG = re.compile(r"\{\{>\s*([\w./-]+)")  # `{{> name}}`, read from a prompt's raw text


@dataclass(frozen=True)
class Targets:
    prompts: tuple[Path, ...]  # prompt files to check, each once, in the order first named
    notes: tuple[str, ...]  # files named that concern no prompt (skipped, with why)
    missing: tuple[Path, ...]  # named paths that do not exist


def find_targets(paths: Sequence[Path], root: Path) -> Targets:
    """Map the named files to the prompts to check.

    A `.prompt` is itself; `x.prompt.lock` is `x.prompt`; an example set is
    every prompt that reads it (looked for in its own folder first, then
    under `root`); a partial (`_name.prompt`) is every prompt that reads it,
    in its folder and under `root`. No paths: every `.prompt` under `root`
    but the partials, which are parts of prompts, not prompts.
    """
    if not paths:
        return Targets(tuple(sorted(_all_prompts(root))), (), ())
    prompts: dict[Path, None] = {}
    notes: list[str] = []
    missing: list[Path] = []
    everything: list[Path] | None = None
    for path in paths:
        if path.suffix == ".prompt" and not is_partial(path):
            if path.is_file():
                prompts.setdefault(path, None)
            else:
                missing.append(path)
        elif path.name.endswith(".prompt" + LOCK_SUFFIX):
            prompt = prompt_of_lock(path)
            if prompt.is_file():
                prompts.setdefault(prompt, None)
            else:
                notes.append(f"{path}: its prompt {prompt.name} does not exist; skipped")
        elif not path.exists():
            missing.append(path)
        else:
            reads = _reads_partial if is_partial(path) else _reads
            owners = [p for p in sorted(path.parent.glob("*.prompt"))
                      if not is_partial(p) and reads(p, path)]
            # A partial is often shared across folders (gpo.partials): every reader counts.
            if not owners or is_partial(path):
                if everything is None:
                    everything = sorted(_all_prompts(root))
                owners += [p for p in everything if p not in owners and reads(p, path)]
            if owners:
                for owner in owners:
                    prompts.setdefault(owner, None)
            elif is_partial(path):
                notes.append(f"{path}: no .prompt file reads this partial; skipped")
            elif path.suffix.lower() in SUFFIXES:
                notes.append(f"{path}: no .prompt file reads this example set; skipped")
            else:
                notes.append(f"{path}: not a .prompt, lock or example file; skipped")
    return Targets(tuple(prompts), tuple(notes), tuple(missing))


def _all_prompts(root: Path) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in files:
            if name.endswith(".prompt") and not name.startswith("_"):
                yield Path(folder) / name if folder != "." else Path(name)


def is_partial(path: Path) -> bool:
    """`_name.prompt` is a Dotprompt partial (`{{> name}}`), not a prompt of its own."""
    return path.suffix == ".prompt" and path.name.startswith("_")


def _reads(prompt_path: Path, examples_path: Path) -> bool:
    """Whether the prompt's example set is `examples_path` (a broken prompt: by its
    sibling name only, so its owner is still found and its error reported)."""
    from gpo_engine.examples import find_examples_path
    from gpo_engine.promptfile import load_prompt

    try:
        configured = load_prompt(prompt_path).settings.examples
    except GpoError:
        configured = None
    try:
        found = find_examples_path(prompt_path, configured)
    except GpoError:
        return False
    return _same_file(found, examples_path)


def _reads_partial(prompt_path: Path, partial: Path) -> bool:
    """Whether rendering the prompt reads `partial`. A prompt that does not load (the
    partial may be what breaks it): whether its text names the partial beside it."""
    from gpo_engine.promptfile import load_prompt
    from gpo_engine.rendering import RowData, partial_file

    try:
        prompt = load_prompt(prompt_path)
    except GpoError:
        try:
            text = prompt_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        return any(_same_file(partial_file(name, prompt_path.parent), partial)
                   for name in _PARTIAL_TAG.findall(text))
    renderer = prompt.renderer()
    with contextlib.suppress(GpoError):
        renderer.render_sync(prompt.body, RowData({v: "x" for v in prompt.variables}))
    return any(_same_file(read, partial) for read in renderer.partials_read.values())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False
