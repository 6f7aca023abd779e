"""editors/nvim against the real `gpo lsp`, on Debian's Neovim (0.7.2 in CI) and on the
pinned current Neovim (tests/nvim_binaries.py).

The plugin starts `python -m gpo_server.cli lsp`, which starts the daemon on demand in a
temp runtime dir; the models are the test model server (scripted capitals pair), served
from this test's event loop while Neovim runs as an asyncio subprocess.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.model_server import ModelServer
from tests.nvim_binaries import KINDS, check_run, neovim
from tests.processes import run_to_end
from tests.scripted_models import GOOD, ScriptedModels, write_capitals
from tests.test_lsp_server import server_env, short_dir  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "editors" / "nvim" / "tests" / "real.lua"


@pytest.mark.parametrize("kind", KINDS)
async def test_neovim_applies_a_real_suggestion(short_dir: Path, kind: str) -> None:  # noqa: F811
    nvim = neovim(kind)
    ws = short_dir / "ws"
    prompt = write_capitals(ws, steps=2, candidates=2)
    (ws / ".git").mkdir()
    (ws / "broken.prompt").write_text("---\nmodel: openai/scripted\n---\nline one\n"
                                      "Hi {{#if country}}\n", encoding="utf-8")
    async with ModelServer(answer=ScriptedModels([GOOD]).answer) as models:
        env = {**server_env(short_dir, models.api_base), "GPO_TEST_DIR": str(short_dir),
               "GPO_TEST_PYTHON": sys.executable,
               "XDG_STATE_HOME": str(short_dir / "state"),  # the LSP log stays out of $HOME
               "XDG_CACHE_HOME": str(short_dir / "xdg-cache"),
               "PYTHONPATH": str(ROOT), "GPO_EXPECT_API": nvim.api}
        run = await run_to_end([nvim.path, "--headless", "-u", "NONE", "-i", "NONE", "-n",
                                "-c", f"luafile {SCRIPT}"], ws, env, 240)
    check_run(*run)
    assert prompt.read_text(encoding="utf-8").startswith("---\nmodel: openai/scripted\n")
    assert models.requests > 0
