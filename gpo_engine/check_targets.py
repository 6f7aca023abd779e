"""Which prompts a list of changed files concerns (`gpo check PATHS`).

A `.prompt` is itself; `x.prompt.lock` is `x.prompt`; an example set is every
prompt that reads it. No paths: every `.prompt` under the root, hidden
folders and virtualenvs skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpo_engine.errors import GpoError
from gpo_engine.examples import SUFFIXES
from gpo_engine.lockfile import LOCK_SUFFIX, prompt_of_lock

# Folders never searched for prompts when no path is given or an example set's owner is sought.
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})


@dataclass(frozen=True)
class Targets:
    prompts: tuple[Path, ...]  # prompt files to check, each once, in the order first named
    notes: tuple[str, ...]  # files named that concern no prompt (skipped, with why)
    missing: tuple[Path, ...]  # named paths that do not exist


def find_targets(paths: Sequence[Path], root: Path) -> Targets:
    """Map the named files to the prompts to check.

    A `.prompt` is itself; `x.prompt.lock` is `x.prompt`; an example set is
    every prompt that reads it (looked for in its own folder first, then
    under `root`). No paths: every `.prompt` under `root`.
    """
    if not paths:
        return Targets(tuple(sorted(_all_prompts(root))), (), ())
    prompts: dict[Path, None] = {}
    notes: list[str] = []
    missing: list[Path] = []
    everything: list[Path] | None = None
    for path in paths:
        if path.suffix == ".prompt":
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
            owners = [p for p in sorted(path.parent.glob("*.prompt")) if _reads(p, path)]
            if not owners:
                if everything is None:
                    everything = sorted(_all_prompts(root))
                owners = [p for p in everything if _reads(p, path)]
            if owners:
                for owner in owners:
                    prompts.setdefault(owner, None)
            elif path.suffix.lower() in SUFFIXES:
                notes.append(f"{path}: no .prompt file reads this example set; skipped")
            else:
                notes.append(f"{path}: not a .prompt, lock or example file; skipped")
    return Targets(tuple(prompts), tuple(notes), tuple(missing))


def _all_prompts(root: Path) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in files:
            if name.endswith(".prompt"):
                yield Path(folder) / name if folder != "." else Path(name)


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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False
