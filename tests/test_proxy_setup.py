"""tests/proxy/setup.sh: which proxy venv counts as installed (without installing one)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

SETUP = Path(__file__).resolve().parent / "proxy" / "setup.sh"
REQUIREMENTS = SETUP.parent / "requirements.txt"


def _check(cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPO_PROXY_CACHE": str(cache)}
    return subprocess.run(["bash", str(SETUP), "--check"], capture_output=True, text=True,
                          env=env, check=False)


def _fake_venv(cache: Path, marker: str) -> Path:
    binary = cache / "litellm-proxy-1.100.0" / "bin" / "litellm"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (cache / "litellm-proxy-1.100.0" / ".gpo-installed").write_text(marker + "\n")
    return binary


def test_check_names_the_versioned_binary_and_fails_when_absent(tmp_path: Path) -> None:
    done = _check(tmp_path)
    assert done.returncode == 1
    assert done.stdout == f"LITELLM_BIN={tmp_path}/litellm-proxy-1.100.0/bin/litellm\n"


def test_a_venv_counts_only_with_the_marker_of_these_pins(tmp_path: Path) -> None:
    pins = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    binary = _fake_venv(tmp_path / "current", pins)
    assert _check(tmp_path / "current").returncode == 0
    assert _check(tmp_path / "current").stdout == f"LITELLM_BIN={binary}\n"
    # An install from other pins (or one cut short before its marker) is redone.
    _fake_venv(tmp_path / "other", "0" * 64)
    assert _check(tmp_path / "other").returncode == 1


def test_the_pins_hold_the_version_the_folder_is_named_after() -> None:
    assert "litellm==1.100.0" in REQUIREMENTS.read_text().splitlines()
    assert "LITELLM_VERSION=1.100.0" in SETUP.read_text().splitlines()
