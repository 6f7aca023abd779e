"""What a piece of code imports, asked of a fresh interpreter: the layering tests' one way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported(code: str, *, packages: tuple[str, ...], modules: tuple[str, ...] = ()
             ) -> list[str]:
    """The modules, sorted, that `code` run in a fresh interpreter at the repository root
    leaves loaded and that are in one of `packages` (by top-level name) or in `modules`."""
    script = (f"{code}\nimport sys as _sys\n"
              f"print(','.join(sorted(m for m in _sys.modules if m.split('.')[0] in "
              f"{packages!r} or m in {modules!r})))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    last = out.stdout.splitlines()[-1]  # the line printed above, after any of `code`'s
    return last.split(",") if last else []
