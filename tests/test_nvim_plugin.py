"""The Neovim plugin, loaded in a headless Neovim against a scripted server, on
Debian's 0.7.2 and on the pinned current Neovim (tests/nvim_binaries.py).

Checks ftdetect, the commands, one client per root, initializationOptions
and workspace/configuration for section `gpo`, the apply action through
codeAction/resolve with UTF-16 columns, server commands, and the example
file save notification; that the plugin starts its client with the newest
API the Neovim has, with no deprecated API used; that the README's
Neovim snippet, as the init file, starts `$VIRTUAL_ENV/bin/gpo` on a prompt;
and that without a `gpo` it says how to install one from a clone.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.nvim_binaries import KINDS, neovim, run_headless
from tests.prompt_files import write_prompt

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "editors" / "nvim" / "tests"
SCRIPT = TESTS / "run.lua"
SERVER = ROOT / "tests" / "nvim_fake_server.py"
PROMPT = "---\nmodel: openai/x\n---\nSay 😀 hi to {{name}}.\n"


def isolated_env(base: Path) -> dict[str, str]:
    """The environment of a headless Neovim whose user config, state and logs stay in `base`."""
    return {
        **os.environ,
        "XDG_CONFIG_HOME": str(base / "config"),
        "XDG_DATA_HOME": str(base / "data"),
        "XDG_STATE_HOME": str(base / "state"),  # keep the LSP log out of $HOME
        "XDG_CACHE_HOME": str(base / "cache"),
    }


@pytest.mark.parametrize("kind", KINDS)
def test_plugin_in_headless_neovim(tmp_path: Path, kind: str) -> None:
    nvim = neovim(kind)
    (tmp_path / "root1" / ".git").mkdir(parents=True)
    (tmp_path / "root1" / "sub").mkdir()
    (tmp_path / "root2").mkdir()
    (tmp_path / "root1" / "sub" / "b.prompt").write_text(PROMPT, encoding="utf-8")
    (tmp_path / "root2" / "c.prompt").write_text(PROMPT, encoding="utf-8")
    write_prompt(tmp_path / "root1", "a", PROMPT, [{"name": "x", "expected": "y"}])
    env = {
        **isolated_env(tmp_path),
        "GPO_TEST_DIR": str(tmp_path),
        "GPO_TEST_PYTHON": sys.executable,
        "GPO_FAKE_SERVER": str(SERVER),
        "GPO_EXPECT_API": nvim.api,
    }
    run_headless(nvim, ["-u", "NONE", "-i", "NONE", "-n", "-c", f"luafile {SCRIPT}"],
                 tmp_path, env)


def readme_snippet() -> str:
    """The first Lua block of the README's Neovim section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n##+ ", readme.split("\n### Neovim", 1)[1], maxsplit=1)[0]
    found = re.search(r"```lua\n(.*?)```", section, re.DOTALL)
    assert found, "no lua block in the README's Neovim section"
    return found.group(1)


@pytest.mark.parametrize("kind", KINDS)
def test_readme_snippet_starts_gpo(tmp_path: Path, kind: str) -> None:
    nvim = neovim(kind)
    snippet = readme_snippet()
    assert "/path/to/gpo/editors/nvim" in snippet
    init = tmp_path / "init.lua"
    init.write_text(snippet.replace("/path/to/gpo", str(ROOT)), encoding="utf-8")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    gpo = venv / "bin" / "gpo"
    # `gpo lsp` as the plugin finds it in the active virtualenv: the scripted server.
    gpo.write_text(f'#!/bin/sh\n[ "$1" = lsp ] || exit 2\nexec "{sys.executable}" "{SERVER}"\n',
                   encoding="utf-8")
    gpo.chmod(0o755)
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "x.prompt").write_text(PROMPT, encoding="utf-8")
    env = {
        **isolated_env(tmp_path),
        "VIRTUAL_ENV": str(venv),
        "GPO_TEST_DIR": str(project),
        "GPO_EXPECT_API": nvim.api,
    }
    watch = f"lua dofile('{TESTS / 'helpers.lua'}').watch_deprecations()"
    run_headless(nvim, ["--cmd", watch, "-u", str(init), "-i", "NONE", "-n", "x.prompt",
                        "-c", f"luafile {TESTS / 'readme.lua'}"], project, env)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_gpo_says_how_to_install_it(tmp_path: Path, kind: str) -> None:
    nvim = neovim(kind)
    (tmp_path / "x.prompt").write_text(PROMPT, encoding="utf-8")
    (tmp_path / "empty").mkdir()
    env = {**isolated_env(tmp_path), "GPO_TEST_DIR": str(tmp_path), "GPO_EXPECT_API": nvim.api,
           "PATH": str(tmp_path / "empty")}
    env.pop("VIRTUAL_ENV", None)
    run_headless(nvim, ["-u", "NONE", "-i", "NONE", "-n", "-c",
                        f"luafile {TESTS / 'missing.lua'}"], tmp_path, env)
