"""A reader that goes away early (`gpo ... --json | head`) gets no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_closed_stdout_is_no_traceback() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before gpo writes a byte
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gpo_server.cli", "render",
             str(ROOT / "examples" / "capitals" / "capitals.prompt"), "--json"],
            stdout=write, stderr=subprocess.PIPE, cwd=ROOT, timeout=120, check=False)
    finally:
        os.close(write)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 1
