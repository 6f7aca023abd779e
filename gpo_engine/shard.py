"""`gpo check --shard I/N`: a stable 1/N of the prompts, for a CI matrix of N jobs.

A prompt's shard is a hash of its path relative to the folder the check runs
from (`/`-separated), not its place in a listing: adding or removing a prompt
never moves another one to a different shard, and every job of the matrix
(each on its own machine) computes the same assignment. The N shards
partition the prompts exactly: each is in one shard and only one.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    index: int  # 1..count
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, path: Path, root: Path) -> bool:
        return shard_of(path, root, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """`I/N` with 1 <= I <= N; ValueError saying what is wrong with anything else."""
    found = _FORM.fullmatch(text)
    if found is None:
        raise ValueError(f"--shard {text!r}: expected I/N, two whole numbers such as 1/4 "
                         "(this job's part I of N parts)")
    index, count = int(found.group(1)), int(found.group(2))
    if count < 1:
        raise ValueError(f"--shard {text}: N, the number of parts, must be at least 1")
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: I must be between 1 and {count} "
                         "(parts are numbered from 1)")
    return Shard(index, count)


def shard_key(path: Path, root: Path) -> str:
    """The text hashed for `path`: its path relative to `root`, with `/` separators, so
    `./a/x.prompt`, `a/x.prompt` and an absolute path to it agree on every OS."""
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute, os.path.abspath(root))
    except ValueError:  # another drive on Windows: no relative form
        relative = absolute
    return Path(relative).as_posix()


def shard_of(path: Path, root: Path, count: int) -> int:
    """The part (1..count) `path` belongs to."""
    digest = hashlib.sha256(shard_key(path, root).encode("utf-8")).digest()
    return 1 + int.from_bytes(digest[:8], "big") % count


def select(paths: Sequence[Path], shard: Shard | None, root: Path) -> tuple[Path, ...]:
    """The paths of this shard, in their given order (all of them without a shard)."""
    if shard is None:
        return tuple(paths)
    return tuple(p for p in paths if shard.holds(p, root))
