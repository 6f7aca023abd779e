"""The Neovim plugin, loaded in a headless Neovim (Debian's 0.7.2 in CI) against a scripted server.

Checks ftdetect, the commands, one client per root, initializationOptions
and workspace/configuration for section `gpo`, the apply action through
codeAction/resolve with UTF-16 columns, server commands, and the example
file save notification.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "editors" / "nvim" / "tests" / "run.lua"
SERVER = ROOT / "tests" / "nvim_fake_server.py"
PROMPT = "---\nmodel: openai/x\n---\nSay 😀 hi to {{name}}.\n"


def nvim() -> str:
    found = shutil.which("nvim")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nvim is missing: CI installs Debian's neovim")
        pytest.skip("nvim is not installed (apt-get install neovim)")
    return found


def test_plugin_in_headless_neovim(tmp_path: Path) -> None:
    binary = nvim()
    (tmp_path / "root1" / ".git").mkdir(parents=True)
    (tmp_path / "root1" / "sub").mkdir()
    (tmp_path / "root2").mkdir()
    (tmp_path / "root1" / "a.prompt").write_text(PROMPT, encoding="utf-8")
    (tmp_path / "root1" / "sub" / "b.prompt").write_text(PROMPT, encoding="utf-8")
    (tmp_path / "root2" / "c.prompt").write_text(PROMPT, encoding="utf-8")
    (tmp_path / "root1" / "a.examples.jsonl").write_text(
        '{"name": "x", "expected": "y"}\n', encoding="utf-8"
    )
    env = {
        **os.environ,
        "GPO_TEST_DIR": str(tmp_path),
        "GPO_TEST_PYTHON": sys.executable,
        "GPO_FAKE_SERVER": str(SERVER),
        "XDG_STATE_HOME": str(tmp_path / "state"),  # keep the LSP log out of $HOME
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [binary, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c", f"luafile {SCRIPT}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "all checks passed" in result.stderr
